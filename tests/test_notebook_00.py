"""Runbook 00 run with papermill against parameter files made from example.yaml (it needs no lab)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import nbformat
import papermill
import pytest
from papermill.exceptions import PapermillExecutionError

from homelab_lib.core.errors import SecretError
from homelab_lib.notebook.report import validate

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "notebooks" / "00_inventory.ipynb"


def run_00(tmp_path: Path, params: Path) -> tuple[nbformat.NotebookNode, PapermillExecutionError | None]:
    out = tmp_path / "00-out.ipynb"
    error = None
    try:
        papermill.execute_notebook(
            str(NOTEBOOK),
            str(out),
            parameters={"params_file": str(params)},
            cwd=str(NOTEBOOK.parent),
            kernel_name="python3",
            progress_bar=False,
        )
    except PapermillExecutionError as e:
        error = e
    return nbformat.read(str(out), as_version=4), error


def text_of(cell: nbformat.NotebookNode) -> str:
    parts = []
    for out in cell.get("outputs", []):
        parts.append(out.get("text", ""))
        parts.append(out.get("data", {}).get("text/html", ""))
    return "".join(parts)


def unresolved(make_params: Callable[..., Path]) -> Path:
    def edit(d: dict) -> None:
        d["proxmox"]["token_secret"] = "env:PVE_TOKEN_UNSET_FOR_THIS_TEST"
        d["ssh"]["private_key"] = "file:secrets/no-such-key"

    return make_params(edit=edit)


def test_unresolved_secrets_show_in_a_table_and_fail_the_run_at_its_end(
    tmp_path: Path, make_params: Callable[..., Path], clean_env: None
) -> None:
    params = unresolved(make_params)
    nb, error = run_00(tmp_path, params)
    assert error is not None
    code = [c for c in nbformat.read(str(NOTEBOOK), as_version=4).cells if c.cell_type == "code"]
    assert error.exec_count == len(code) + 1, f"failed in cell {error.exec_count} (1 = the injected parameters)"
    assert "require_secrets()" in code[-1].source  # the last cell, after every table and chart
    assert error.ename == "SecretError"
    assert "2 problem(s)" in error.evalue
    assert "proxmox.token_secret: secret env:PVE_TOKEN_UNSET_FOR_THIS_TEST does not resolve" in error.evalue
    assert "ssh.private_key: secret file:secrets/no-such-key does not resolve" in error.evalue

    table = next(text_of(c) for c in nb.cells if "secrets_table()" in c.source)
    assert "MISSING: environment variable PVE_TOKEN_UNSET_FOR_THIS_TEST is not set" in table
    assert "export PVE_TOKEN_UNSET_FOR_THIS_TEST=" in table
    assert "resolves" in table  # the others
    assert f"{params}:" in table or "params.yaml:" in table  # where each is written
    assert any("image/png" in out.get("data", {}) for c in nb.cells for out in c.get("outputs", []))
    text = json.dumps(nb)
    for value in (tmp_path / "secrets").iterdir():
        assert value.read_text().strip() not in text


def test_all_secrets_resolve_the_run_ends_ready(tmp_path: Path, make_params: Callable[..., Path]) -> None:
    nb, error = run_00(tmp_path, make_params())
    assert error is None, error
    assert "secret references resolve: ready for 01_provision_nodes" in text_of(nb.cells[-2])
    assert "confirm" not in nb.cells[2].source  # 00 changes nothing: no confirm parameter


def test_readiness_in_the_library(make_params: Callable[..., Path], clean_env: None) -> None:
    params = unresolved(make_params)
    validation = validate(params)
    inv = validation.inventory_or_raise()  # unresolved secrets do not stop the walkthrough
    assert inv.name == "dreamland"
    table = validation.secrets_table()
    assert list(table.columns) == ["key", "reference", "written at", "state", "how to fix"]
    assert len(table) == len(inv.secrets())
    row = table[table.key == "ssh.private_key"].iloc[0]
    assert row["state"].startswith("MISSING: secret file ")
    assert row["written at"] == f"{params}:{line_of(params, 'no-such-key')}"
    with pytest.raises(SecretError) as e:
        validation.require_secrets()
    assert [p.path for p in e.value.problems] == ["proxmox.token_secret", "ssh.private_key"]


def line_of(path: Path, needle: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if needle in line)
