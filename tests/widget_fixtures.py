"""The toy runbook (tests/widget_notebooks) copied into a folder of its own, for the widget and browser tests."""

from __future__ import annotations

import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from homelab_lib.inventory import load_inventory
from tests.widget_notebooks.toy import FilesAdapter

REPO = Path(__file__).resolve().parent.parent
TOY = REPO / "tests" / "widget_notebooks"


@dataclass
class Toy:
    root: Path
    notebook: Path
    params: Path
    world: Path
    archive: Path

    def adapter(self) -> FilesAdapter:
        return FilesAdapter(load_inventory(self.params), self.world)


def make_toy(root: Path) -> Toy:
    """The toy runbook and a parameter file in root, laid out as in the repository."""
    folder = root / "tests" / "widget_notebooks"
    folder.mkdir(parents=True)
    for name in ("toy_runbook.ipynb", "toy.py"):
        shutil.copy(TOY / name, folder / name)
    (root / "parameters").mkdir()
    text = (REPO / "parameters" / "example.yaml").read_text()
    params = root / "parameters" / "example.yaml"
    params.write_text(text.replace("name: dreamland", f"name: widgets-{secrets.token_hex(3)}", 1))
    return Toy(root, folder / "toy_runbook.ipynb", params, folder / "world", root / "archive")


def add_widget_cells(source: Path, dest: Path) -> None:
    """Copy a runbook to dest, checking it carries its widget cells (a `widgets.runbook(...)` cell)."""
    import nbformat

    nb = nbformat.read(str(source), as_version=4)  # type: ignore[no-untyped-call]
    assert any(c.cell_type == "code" and "widgets.runbook(" in c.source for c in nb.cells), source
    nbformat.write(nb, str(dest))  # type: ignore[no-untyped-call]
