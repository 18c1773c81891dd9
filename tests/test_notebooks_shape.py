"""The shape every runbook notebook keeps: a tagged parameters cell, confirm where it changes anything,
nbval markers as tags; and `rehearse` finding the parameters cell by its tag, not its position."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import nbformat
import papermill
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from homelab_lib.runs.archive import Archive
from homelab_lib.runs.rehearse import declared_parameters, rehearse, runbooks

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
# Runbooks that only read and show: they take no confirm. Every other runbook changes the homelab
# (or could: a restore test, a migration) and must take confirm, defaulting to False.
READ_ONLY = {"00_inventory"}


def test_there_are_runbooks() -> None:
    assert [p.name for p in NOTEBOOKS] == [p.name for p in runbooks(REPO / "notebooks")]
    assert "00_inventory.ipynb" in [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_one_tagged_parameters_cell_defines_params_file(path: Path) -> None:
    nb = nbformat.read(str(path), as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: {len(tagged)} cells tagged 'parameters'; there must be one"
    (cell,) = tagged
    assert cell.cell_type == "code"
    names = {t.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign) for t in node.targets}
    assert "params_file" in names, f"{path.name}: its parameters cell does not define params_file"
    assert set(declared_parameters(path)) == names  # what papermill and rehearse see


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_confirm_where_the_runbook_changes_anything(path: Path) -> None:
    params = papermill.inspect_notebook(str(path))
    if path.stem in READ_ONLY:
        assert "confirm" not in params, f"{path.name} changes nothing: it takes no confirm"
    else:
        assert "confirm" in params, f"{path.name} changes the homelab: it needs a confirm parameter"
        assert params["confirm"]["default"] == "False", "dry run first: confirm defaults to False"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_nbval_markers_are_tags_not_comments(path: Path) -> None:
    nb = nbformat.read(str(path), as_version=4)
    marked = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "# NBVAL_" in c.source]
    assert marked == [], (
        f"{path.name}: cells {marked} carry '# NBVAL_...' comments; "
        f"`python tools/nbtool.py clean {path.relative_to(REPO)}` turns them into tags"
    )


def _write(path: Path, *cells: nbformat.NotebookNode) -> Path:
    kernel = {"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}}
    nbformat.write(new_notebook(cells=list(cells), metadata=kernel), str(path))
    return path


def test_rehearse_finds_the_parameters_cell_by_its_tag(
    tmp_path: Path, make_params: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "rt"))
    folder = tmp_path / "runbooks"
    folder.mkdir()
    _write(
        folder / "00_look.ipynb",
        new_code_cell('params_file = "x.yaml"', metadata={"tags": ["parameters"]}),
        new_code_cell("print('looked')"),
    )
    _write(  # its parameters cell is the fourth cell, after a markdown and two code cells
        folder / "01_change.ipynb",
        new_markdown_cell("# a runbook that changes things"),
        new_code_cell("import sys"),
        new_code_cell("confirm = 'not the parameters cell'"),
        new_code_cell('params_file = "x.yaml"\nconfirm = False', metadata={"tags": ["parameters"]}),
        new_code_cell("assert confirm is True, confirm\nprint('changed')"),
    )
    archive = tmp_path / "archive"
    summary = rehearse(folder, [make_params()], archive_dir=archive, progress_bar=False)
    assert list(summary["status"]) == ["ok", "ok"], summary.to_string()
    look, change = Archive(archive).records()
    assert "confirm" not in look.parameters  # 00 declares none: it gets none (papermill would warn)
    assert change.parameters["confirm"] is True
