"""The walkthrough in a real browser: JupyterLab started here on 127.0.25.1, driven by Playwright and Debian's Chromium.

Each test starts JupyterLab (``homelab_lib.notebook.jupyter.running``: a fresh token, a free port, a temporary root
folder, no browser of its own) and opens a runbook in /usr/bin/chromium (never a downloaded browser),
runs all cells from the Run menu, checks the plan table renders, clicks Confirm and reads the result
under it. Screenshots go to tests/artifacts/browser/<test>/ (git-ignored), kept after the test.

- the toy runbook (tests/widget_notebooks, no lab): the Confirm click really applies, through an archived
  ``homelab run``, and the folder and the archive show it;
- 00_inventory and 01_provision_nodes against the rehearsal lab (``lab`` marker and fixture, as
  tests/test_e2e.py): 00's tables and figure render; 01's plan renders, Confirm applies it and the VM
  table shows every VM. If the lab already matches the inventory, one VM's ``onboot`` is flipped first
  through the Proxmox API, so there is a plan to confirm (the apply sets it back).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from homelab_lib.notebook import jupyter
from homelab_lib.runs.archive import Archive
from tests.contract_fixtures import served_pve, write_params
from tests.widget_fixtures import REPO, add_widget_cells, make_toy

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path("/usr/bin/chromium")
IP = "127.0.25.1"
ARTIFACTS = REPO / "tests" / "artifacts" / "browser"
LONG = 300_000  # ms: a runbook's cells, or a confirmed run, against the lab

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is not installed (apt install chromium)"
)

ALL_RUN = """() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  if (!panel) return false;
  const prompts = [...panel.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
  const failed = panel.querySelector('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]');
  if (failed && failed.textContent.includes('Traceback')) return true;
  return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
}"""


class Walkthrough:
    """One browser page on one JupyterLab server, with screenshots into a folder."""

    def __init__(self, page: object, server: jupyter.Server, shots: Path) -> None:
        self.page: playwright_api.Page = page  # type: ignore[assignment]
        self.server = server
        self.shots = shots
        self.count = 0

    def shot(self, name: str) -> Path:
        self.count += 1
        path = self.shots / f"{self.count:02d}-{name}.png"
        self.page.screenshot(path=str(path))
        return path

    @property
    def panel(self) -> playwright_api.Locator:
        return self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")

    def open(self, notebook: str) -> None:
        """Open a notebook (relative to the server's root) and wait for its kernel to be idle."""
        self.page.goto(self.server.url(notebook))
        name = Path(notebook).name
        self.page.wait_for_function(
            "n => [...document.querySelectorAll('.lm-TabBar-tab.lm-mod-current')].some(t => t.innerText.includes(n))",
            arg=name,
            timeout=60_000,
        )
        self.page.wait_for_selector(".jp-StatusBar-TextItem:has-text('| Idle')", timeout=120_000)

    def run_all(self) -> str:
        """Run > Run All Cells; wait until every code cell ran (or one failed); the panel's text."""
        self.page.click(".lm-MenuBar-item:has-text('Run')")
        self.page.click(".lm-Menu-item:has-text('Run All Cells')")
        try:
            self.page.wait_for_function(ALL_RUN, timeout=LONG)
        finally:
            self.shot("ran-all")
        text = self.panel.text_content() or ""
        assert "Traceback (most recent call last)" not in text, text[-3000:]
        return text

    def plan_table(self) -> playwright_api.Locator:
        """The plan's table (show_plan's HTML: summary with the sha256, then the table)."""
        summary = self.panel.locator(".jp-OutputArea-output:has-text('plan sha256')").last
        summary.wait_for(timeout=LONG)
        table = summary.locator("table")
        assert table.count() == 1
        assert table.locator("th").all_text_contents()[:2] == ["action", "kind"]
        return table

    def confirm(self) -> str:
        """Click Confirm under the plan; wait for the run's summary; the text under the button."""
        button = self.panel.locator("button.homelab-confirm")
        button.wait_for(timeout=60_000)
        assert button.is_enabled(), "the plan has nothing to apply"
        button.scroll_into_view_if_needed()
        self.shot("plan-and-confirm")
        button.click()
        output = self.panel.locator(".homelab-confirm-output")
        output.locator("text=/applied the plan shown|REFUSED|FAILED/").wait_for(timeout=LONG)
        output.scroll_into_view_if_needed()
        self.shot("confirmed")
        return output.text_content() or ""


@pytest.fixture
def browser() -> Iterator[object]:
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"] if os.geteuid() == 0 else [])
        try:
            yield chromium
        finally:
            chromium.close()


def shots_for(request: pytest.FixtureRequest) -> Path:
    folder = ARTIFACTS / re.sub(r"[^\w.-]+", "_", request.node.name)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


@pytest.fixture
def walkthrough_of(browser: object, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    """walkthrough_of(root, params_file=None, archive=...) -> a Walkthrough on JupyterLab serving root."""
    shots = shots_for(request)
    stack: list[object] = []

    def start(root: Path, archive: Path, params_file: Path | None = None) -> Walkthrough:
        server_cm = jupyter.running(
            root, ip=IP, params_file=params_file, archive_dir=archive, log=shots / "jupyterlab.log"
        )
        server = server_cm.__enter__()
        stack.append(server_cm)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})  # type: ignore[attr-defined]
        stack.append(context)
        return Walkthrough(context.new_page(), server, shots)

    yield start
    for item in reversed(stack):
        if hasattr(item, "__exit__"):
            item.__exit__(None, None, None)
        else:
            item.close()  # type: ignore[attr-defined]


# ---------------------------------------------------------------- the toy runbook: no lab


def test_toy_runbook_plan_confirm_result_in_chromium(walkthrough_of: object, tmp_path: Path) -> None:
    toy = make_toy(tmp_path / "root")
    ui: Walkthrough = walkthrough_of(toy.root, toy.archive)  # type: ignore[operator]
    ui.open("tests/widget_notebooks/toy_runbook.ipynb")
    text = ui.run_all()
    assert "dry run: nothing changed (4 create)" in text
    choices = ui.panel.locator(".widget-select-multiple select option")
    assert choices.all_text_contents() == ["docker-drowzee", "docker-sleepy", "docker-hypno", "k3s-nappy"]
    picker = ui.panel.locator(".widget-dropdown:has-text('params file') select")
    assert picker.input_value() == "../../parameters/example.yaml"  # the option shown: relative to the notebook
    picker.scroll_into_view_if_needed()
    ui.shot("choices")
    table = ui.plan_table()
    assert sorted(table.locator("tbody tr td:nth-child(3)").all_text_contents()) == [
        "docker-drowzee",
        "docker-hypno",
        "docker-sleepy",
        "k3s-nappy",
    ]
    assert not toy.world.exists() or not any(toy.world.iterdir())

    result = ui.confirm()
    assert "applied the plan shown" in result, result
    assert "verified: 4 file(s) as the plan promised" in result
    results = ui.panel.locator(".homelab-confirm-output table").first
    assert results.locator("tbody tr").count() == 4
    assert set(results.locator("tbody tr td:nth-child(6)").all_text_contents()) == {"done"}  # result column
    assert sorted(p.name for p in toy.world.iterdir()) == [
        "docker-drowzee",
        "docker-hypno",
        "docker-sleepy",
        "k3s-nappy",
    ]
    (record,) = Archive(toy.archive).records()
    assert record.status == "ok"
    assert record.parameters["confirm"] is True
    assert list(record.parameters["approved_plan"].values()) == [record.plan_hash]  # {adapter: sha256}
    assert record.plan_hash[:12] in (ui.panel.locator(".homelab-confirm-output").text_content() or "")
    assert ui.panel.locator("button.homelab-confirm").is_disabled()


# ---------------------------------------------------------------- runbook 01 (with its widget cells) on a fakepve


def test_runbook_01_with_its_widget_cells_on_a_served_fakepve(walkthrough_of: object, tmp_path: Path) -> None:
    """Runbook 01 with its widget cells, against a fakepve served
    here over HTTPS on 127.0.25.3 (no lab): the picker takes `homelab jupyter`'s parameter file, the plan
    creates the four VMs, Confirm creates them through an archived run, and verify's VM table shows them."""
    with served_pve(tmp_path, host="127.0.25.3") as pve:
        params = write_params(tmp_path, pve, f"browser-{secrets.token_hex(3)}")
        root = tmp_path / "root"
        (root / "notebooks").mkdir(parents=True)
        add_widget_cells(
            REPO / "notebooks" / "01_provision_nodes.ipynb", root / "notebooks" / "01_provision_nodes.ipynb"
        )
        archive = tmp_path / "archive"
        ui: Walkthrough = walkthrough_of(root, archive, params)  # type: ignore[operator]
        ui.open("notebooks/01_provision_nodes.ipynb")
        ui.run_all()
        table = ui.plan_table()
        rows = table.locator("tbody tr")
        assert rows.count() == 4
        assert set(table.locator("tbody tr td:nth-child(1)").all_text_contents()) == {"create"}
        assert [v for v in pve.pve.vms if not v.template] == []
        result = ui.confirm()
        assert "applied the plan shown" in result, result
        vms = sorted(v.name for v in pve.pve.vms if not v.template)
        assert vms == ["docker-drowzee", "docker-hypno", "docker-sleepy", "k3s-nappy"]
        assert {v.status for v in pve.pve.vms if not v.template} == {"running"}
        for vm in vms:
            assert vm in result  # apply's table and verify's VM table, under the button
        (record,) = Archive(archive).records()
        assert record.status == "ok"
        assert record.parameters["params_file"] == str(params)
        assert list(record.parameters["approved_plan"].values()) == [record.plan_hash]  # {adapter: sha256}


# ---------------------------------------------------------------- 00 and 01 against the rehearsal lab


@pytest.fixture
def lab_root(tmp_path: Path) -> Path:
    """A root folder with copies of runbooks 00 and 01 (autosave must not touch notebooks/), beside the
    repository's parameters/ and .lab/ (linked, so ../parameters/lab.yaml and its ../.lab references hold)."""
    root = tmp_path / "root"
    (root / "notebooks").mkdir(parents=True)
    for name in ("00_inventory.ipynb", "01_provision_nodes.ipynb"):
        source = REPO / "notebooks" / name
        if "widgets.runbook(" in source.read_text():
            shutil.copy(source, root / "notebooks" / name)
        else:  # not refreshed with its widget cells yet: add them as the integrator will
            add_widget_cells(source, root / "notebooks" / name)
    for name in ("parameters", ".lab"):
        (root / name).symlink_to(REPO / name, target_is_directory=True)
    return root


def something_to_apply(lab: object) -> None:
    """If the lab's VMs already match the inventory, flip one VM's onboot through the Proxmox API."""
    from homelab_lib import proxmox
    from homelab_lib.clients.proxmox import NOWHERE
    from homelab_lib.clients.tasks import is_upid, wait_task
    from homelab_lib.core.clock import SYSTEM

    runbook = proxmox.adapter(lab)  # type: ignore[arg-type]
    try:
        desired = runbook.desired()
        if runbook.plan(desired, runbook.observe(desired)).applicable():
            return
        vm = lab.vms[0]  # type: ignore[attr-defined]
        answer = runbook.client.post(f"nodes/{vm.node}/qemu/{vm.vmid}/config", onboot=0 if vm.onboot else 1)
        if is_upid(answer):
            wait_task(runbook.client, str(answer), at=NOWHERE, what="onboot", timeout_s=60, clock=SYSTEM)
        assert runbook.plan(desired, runbook.observe(desired)).applicable()
    finally:
        runbook.close()


@pytest.mark.lab
def test_lab_00_and_01_plan_confirm_vm_table_in_chromium(
    lab: object, lab_root: Path, walkthrough_of: object, tmp_path: Path
) -> None:
    archive = tmp_path / "archive"
    ui: Walkthrough = walkthrough_of(lab_root, archive, REPO / "parameters" / "lab.yaml")  # type: ignore[operator]

    ui.open("notebooks/00_inventory.ipynb")
    text = ui.run_all()
    for node in lab.nodes:  # type: ignore[attr-defined]
        assert node.name in text
    for vm in lab.vms:  # type: ignore[attr-defined]
        assert vm.name in text
    assert ui.panel.locator(".jp-OutputArea-output img").count() >= 1  # the capacity figure
    ui.shot("00-inventory")

    something_to_apply(lab)
    ui.open("notebooks/01_provision_nodes.ipynb")
    ui.run_all()
    table = ui.plan_table()
    assert table.locator("tbody tr").count() >= len(lab.vms)  # type: ignore[attr-defined]
    result = ui.confirm()
    assert "applied the plan shown" in result, result
    for vm in lab.vms:  # type: ignore[attr-defined]
        assert vm.name in result  # the VM table of verify, under the button
    (record,) = [r for r in Archive(archive).records() if r.notebook.endswith("01_provision_nodes.ipynb")]
    assert record.status == "ok"
    assert list(record.parameters["approved_plan"].values()) == [record.plan_hash]  # {adapter: sha256}
