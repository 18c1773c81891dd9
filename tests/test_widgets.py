"""homelab_lib.notebook.widgets: the choices and the Confirm button, with real ipywidgets, real runs, a real archive.

The runbook is tests/widget_notebooks/toy_runbook.ipynb, whose toy adapter's world is a folder of files (no
lab). Each test copies it, with a copy of parameters/example.yaml under a homelab name of its own, into tmp.
A click on Confirm (``button.click()``) starts a real ``homelab run`` of that copy with ``confirm`` and the
plan shown as ``approved_plan``; the test then reads the archive and the folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import ipywidgets
import papermill
import pytest

from homelab_lib.core import contract
from homelab_lib.core.errors import NotFound
from homelab_lib.inventory import load_inventory
from homelab_lib.notebook import widgets
from homelab_lib.runs.archive import Archive
from homelab_lib.runs.runner import run_notebook
from tests.widget_fixtures import Toy, make_toy
from tests.widget_notebooks.toy import FilesAdapter

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


@pytest.fixture
def toy(tmp_path: Path) -> Toy:
    return make_toy(tmp_path)


def shown(toy: Toy, **parameters: object) -> tuple[widgets.Runbook, widgets.Confirm, dict[str, str]]:
    """What the notebook's cells do in JupyterLab, up to the plan: the choices, the plan, its Confirm button."""
    contract.forget_shown_plans()  # a fresh kernel: no plan shown before this one
    ui = widgets.runbook(
        toy.notebook,
        params_file=str(toy.params),
        archive_dir=toy.archive,
        interactive=True,
        only_vms=[],
        allow_delete=False,
        world="world",
        **parameters,
    )
    runbook = FilesAdapter(load_inventory(ui.params_file), toy.world, only_vms=ui.value("only_vms"))
    desired = runbook.desired()
    plan = runbook.plan(desired, runbook.observe(desired))
    return ui, ui.confirm(plan), desired


def files(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.iterdir())} if folder.exists() else {}


# ---------------------------------------------------------------- headless: the parameters cell rules


def test_papermill_runs_the_notebook_without_waiting_and_shows_no_widget(
    toy: Toy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HOMELAB_HEADLESS", raising=False)  # papermill's allow_stdin=False alone decides
    out = toy.root / "out.ipynb"
    papermill.execute_notebook(
        str(toy.notebook), str(out), cwd=str(toy.notebook.parent), progress_bar=False, parameters={}
    )
    nb = json.loads(out.read_text())
    mimes = {m for c in nb["cells"] for o in c.get("outputs", []) for m in (o.get("data") or {})}
    assert WIDGET_MIME not in mimes  # nothing for a click to wait on
    assert "application/vnd.homelab.plan+json" in mimes
    text = "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))
    assert "dry run: nothing changed (4 create)" in text
    assert files(toy.world) == {}
    shown_text = json.dumps([o for c in nb["cells"] for o in c.get("outputs", [])])
    assert "homelab_lib.notebook.widgets" not in shown_text  # no object repr of the Confirm either


def test_interactive_choices_start_from_the_parameters_cell(toy: Toy) -> None:
    ui = widgets.runbook(toy.notebook, params_file=str(toy.params), interactive=True, only_vms=["docker-hypno"])
    assert ui.value("only_vms") == ["docker-hypno"]
    assert len(ui.selects["only_vms"].options) == 4


def test_a_one_name_parameter_gets_a_dropdown_of_the_inventorys_names(toy: Toy) -> None:
    ui = widgets.runbook(toy.notebook, params_file=str(toy.params), interactive=True, service="sonarr")
    dropdown = ui.selects["service"]
    assert isinstance(dropdown, ipywidgets.Dropdown)
    assert {"", "plex", "sonarr", "grafana"} <= set(dropdown.options)
    assert ui.value("service") == "sonarr"
    dropdown.value = "plex"
    assert ui.parameters()["service"] == "plex"


def test_headless_the_values_are_the_parameters_and_confirm_shows_nothing(
    toy: Toy, capsys: pytest.CaptureFixture[str]
) -> None:
    ui = widgets.runbook(
        toy.notebook, params_file="../../parameters/example.yaml", interactive=False, only_vms=["docker-hypno"]
    )
    assert ui.params_file == "../../parameters/example.yaml"
    assert ui.value("only_vms") == ["docker-hypno"]
    assert list(ui) == ["../../parameters/example.yaml", ["docker-hypno"]]
    runbook = toy.adapter()
    desired = runbook.desired()
    confirm = ui.confirm(runbook.plan(desired, runbook.observe(desired)))
    assert confirm.button is None
    assert confirm.click() is None
    assert capsys.readouterr().out == ""
    with pytest.raises(NotFound, match="allow_delete"):
        ui.value("allow_delete")


# ---------------------------------------------------------------- the choices


def test_the_choices_come_from_the_inventory_and_the_parameter_folder(toy: Toy) -> None:
    other = toy.params.parent / "small.yaml"
    other.write_text(toy.params.read_text())
    ui, _confirm, _desired = shown(toy)
    assert isinstance(ui.picker, ipywidgets.Dropdown)
    assert [v for _label, v in ui.picker.options] == [str(toy.params), str(other)]
    select = ui.selects["only_vms"]
    assert isinstance(select, ipywidgets.SelectMultiple)
    assert list(select.options) == ["docker-drowzee", "docker-sleepy", "docker-hypno", "k3s-nappy"]
    assert ui.value("only_vms") == []
    select.value = ("k3s-nappy",)
    assert ui.value("only_vms") == ["k3s-nappy"]
    ui.picker.value = str(other)
    assert ui.params_file == str(other)
    assert ui.parameters() == {
        "params_file": str(other),
        "only_vms": ["k3s-nappy"],
        "allow_delete": False,
        "world": "world",
    }


def test_nothing_to_apply_disables_confirm(toy: Toy) -> None:
    runbook = toy.adapter()
    desired = runbook.desired()
    runbook.apply(desired, runbook.plan(desired, runbook.observe(desired)), confirm=True)
    _ui, confirm, _desired = shown(toy)
    assert confirm.button.disabled
    assert confirm.click() is None
    assert not toy.archive.exists()


# ---------------------------------------------------------------- Confirm


def test_confirm_applies_exactly_the_plan_shown_in_an_archived_run(toy: Toy) -> None:
    _ui, confirm, desired = shown(toy)
    assert files(toy.world) == {}
    result = confirm.click()
    assert result is not None, confirm.output.outputs
    assert result.ok, result.lines
    assert files(toy.world) == desired
    record = result.record
    assert record is not None
    assert record.parameters["confirm"] is True
    assert record.parameters["approved_plan"] == confirm.approved == {confirm.plan.adapter: confirm.sha256}
    assert confirm.sha256 == record.plan_hash
    assert record.parameters["world"] == "world"
    assert result.archived is not None
    assert result.archived.is_file()
    assert Archive(toy.archive).verify() == []
    html = json.dumps(result.outputs)
    assert "applied: 4 change(s)" in html
    assert "verified: 4 file(s)" in html
    bar, _label = confirm._bars["files"]
    assert (bar.value, bar.max, bar.bar_style) == (4, 4, "success")
    assert confirm.button.disabled
    assert confirm.button.description == "applied"
    assert confirm.output.outputs  # the summary and the run's tables, under the button
    assert confirm.click() is result  # used once
    assert len(Archive(toy.archive).records()) == 1


def test_confirm_refuses_a_plan_the_world_no_longer_matches_and_changes_nothing(toy: Toy) -> None:
    _ui, confirm, _desired = shown(toy)
    toy.world.mkdir(exist_ok=True)
    (toy.world / "docker-hypno").write_text("cores=1 memory_mib=512")  # changed behind the plan's back
    result = confirm.click()
    assert result is not None
    assert not result.ok
    assert result.refused, result.lines
    assert files(toy.world) == {"docker-hypno": "cores=1 memory_mib=512"}
    assert result.record is not None
    assert result.record.status == "failed"
    assert result.record.error.startswith("PlanNotApproved")
    assert "REFUSED, nothing was changed: PlanNotApproved" in result.summary()
    assert confirm.button.description == "refused"
    printed = "".join(o.get("text", "") for o in confirm.output.outputs)
    assert "not the approved plan" in printed


def test_archived_runs_to_compare_with(toy: Toy) -> None:
    dry = run_notebook(toy.notebook, param_files=[toy.params], archive_dir=toy.archive, progress_bar=False)
    _ui, confirm, _desired = shown(toy)
    assert [v for _label, v in confirm.runs.options] == ["", dry.record.run]
    confirm.runs.value = dry.record.run
    assert f"the same plan as run {dry.record.run}" in confirm.compared.outputs[0]["text"]
    toy.world.mkdir(exist_ok=True)
    (toy.world / "docker-drowzee").write_text("cores=1 memory_mib=512")
    _ui, again, _desired = shown(toy)
    text = widgets.compare_text(toy.archive, dry.record.run, again.plan)
    assert "~ file docker-drowzee" in text


# ---------------------------------------------------------------- the pure parts


def test_progress_lines_parse_into_bars() -> None:
    assert widgets.parse_progress("[vm docker-drowzee] 2/5 clone") == ("vm docker-drowzee", 2, 5, "clone")
    assert widgets.parse_progress("[files] done") == ("files", None, None, "")
    assert widgets.parse_progress("plain output") is None


def test_the_run_command_passes_the_plan_and_typed_parameters(tmp_path: Path) -> None:
    cmd = widgets.run_command(
        tmp_path / "01.ipynb", {"params_file": "/p/a.yaml", "only_vms": ["a"], "confirm": False}, "0123e4", tmp_path
    )
    assert cmd[3:5] == ["run", str(tmp_path / "01.ipynb")]
    pairs = {cmd[i + 1]: cmd[i + 2] for i, a in enumerate(cmd) if a == "-p"}
    assert pairs == {"only_vms": '["a"]', "confirm": "true", "approved_plan": '"0123e4"'}
    assert cmd[cmd.index("-f") + 1] == "/p/a.yaml"


def test_nbval_runs_the_notebook_without_waiting(toy: Toy) -> None:
    """nbval executes every cell (allow_stdin false: no widgets); a cell that waited would hit the timeout."""
    ini = toy.root / "pytest.ini"
    ini.write_text("[pytest]\n")
    env = {k: v for k, v in os.environ.items() if k != "HOMELAB_HEADLESS"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(ini), "-p", "no:cacheprovider", "--nbval-lax",
         "--nbval-cell-timeout=120", "-q", str(toy.notebook)],
        cwd=toy.notebook.parent, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    assert "passed" in done.stdout
    assert files(toy.world) == {}  # a dry run
