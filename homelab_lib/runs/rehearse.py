"""Rehearse: every runbook notebook in order against the lab, with ``confirm=True``.

The lab is safe to change, so a rehearsal applies every plan. It stops at the
first failure (later runbooks stand on earlier ones) and returns a summary.
``confirm`` goes only to the runbooks that declare it in their cell tagged
``parameters`` (found by its tag, wherever it is, as papermill finds it); a
read-only runbook such as 00 has none.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import papermill

from homelab_lib.core.errors import HomelabError
from homelab_lib.runs.runner import run_notebook

RUNBOOK = re.compile(r"^\d\d_[a-z0-9_]+\.ipynb$")


def runbooks(folder: Path) -> list[Path]:
    """The runbook notebooks of folder (``NN_name.ipynb``), in order."""
    return sorted(p for p in folder.iterdir() if RUNBOOK.match(p.name))


def declared_parameters(notebook: Path) -> set[str]:
    """The names a notebook's cell tagged ``parameters`` defines (empty when it has none)."""
    return set(papermill.inspect_notebook(str(notebook)))


def rehearse(
    folder: Path,
    param_files: Sequence[Path],
    *,
    archive_dir: Path,
    progress_bar: bool = True,
) -> pd.DataFrame:
    """Run every runbook of folder in order; a table of notebook, status, duration, archive or error."""
    rows = []
    failed = False
    for nb in runbooks(folder):
        if failed:
            rows.append(
                {
                    "notebook": nb.name,
                    "status": "skipped",
                    "seconds": 0.0,
                    "archived / error": "an earlier runbook failed",
                }
            )
            continue
        print(f"== {nb.name}", flush=True)
        try:
            result = run_notebook(
                nb,
                param_files=param_files,
                parameters={"confirm": True} if "confirm" in declared_parameters(nb) else {},
                archive_dir=archive_dir,
                progress_bar=progress_bar,
            )
            rows.append(
                {
                    "notebook": nb.name,
                    "status": "ok",
                    "seconds": result.record.duration_s,
                    "archived / error": str(result.archived),
                }
            )
        except HomelabError as e:
            failed = True
            rows.append({"notebook": nb.name, "status": "failed", "seconds": 0.0, "archived / error": str(e)})
    return pd.DataFrame(rows, columns=["notebook", "status", "seconds", "archived / error"])
