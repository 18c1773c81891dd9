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


# ---------------------------------------------------------------- the runbooks' widget cells
# What each runbook gets (the integrator applies the same to notebooks/, then refreshes them against the lab):
# its imports cell imports widgets, a cell after it shows the choices, and the plan cell ends with ui.confirm(plan).

UI_CELLS = {
    "00_inventory.ipynb": (
        "from homelab_lib import report",
        """\
ui = widgets.runbook("00_inventory.ipynb", params_file=params_file)
params_file = ui.params_file""",
    ),
    "01_provision_nodes.ipynb": (
        "from homelab_lib import contract, proxmox, report",
        """\
ui = widgets.runbook("01_provision_nodes.ipynb", params_file=params_file, only_vms=only_vms, allow_delete=allow_delete)
params_file, only_vms = ui.params_file, ui.value("only_vms")""",
    ),
    "02_deploy_compose_core.ipynb": (
        "from homelab_lib import compose, contract, report",
        """\
ui = widgets.runbook("02_deploy_compose_core.ipynb", params_file=params_file, stacks=stacks, allow_delete=allow_delete)
params_file, stacks = ui.params_file, ui.value("stacks")""",
    ),
    "03_bootstrap_k3s.ipynb": (
        "from homelab_lib import contract, k3s",
        """\
ui = widgets.runbook("03_bootstrap_k3s.ipynb", params_file=params_file, allow_delete=allow_delete)
params_file = ui.params_file""",
    ),
    "04_deploy_k3s_services.ipynb": (
        "from homelab_lib import contract",
        """\
ui = widgets.runbook(
    "04_deploy_k3s_services.ipynb", params_file=params_file, services=services, allow_delete=allow_delete
)
params_file, services = ui.params_file, ui.value("services")""",
    ),
}
UI_MARKDOWN = (
    "In JupyterLab the next cell shows these choices as widgets (a change applies to the cells run after it), and "
    "the plan below gets a **Confirm** button that applies exactly that plan in an archived `homelab run`. "
    "Run headless (papermill, nbval) it shows nothing: the parameters cell rules."
)


def add_widget_cells(source: Path, dest: Path) -> None:
    """Write source's notebook to dest with the widget cells of UI_CELLS (as the integrator applies them)."""
    import nbformat

    nb = nbformat.read(str(source), as_version=4)  # type: ignore[no-untyped-call]
    if any(c.cell_type == "code" and "widgets.runbook(" in c.source for c in nb.cells):
        nbformat.write(nb, str(dest))  # type: ignore[no-untyped-call]
        return  # the notebook has them already (notebooks/ carries them)
    imports, ui = UI_CELLS[source.name]
    at = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and imports in c.source)
    nb.cells[at].source = nb.cells[at].source.replace(imports, imports + ", widgets", 1)
    new = [nbformat.v4.new_markdown_cell(UI_MARKDOWN), nbformat.v4.new_code_cell(ui)]  # type: ignore[no-untyped-call]
    nb.cells[at + 1 : at + 1] = new
    for cell in nb.cells:
        if cell.cell_type == "code" and "contract.show_plan(plan)" in cell.source:
            cell.source = cell.source.replace("contract.show_plan(plan)", "contract.show_plan(plan)\nui.confirm(plan)")
    nbformat.write(nb, str(dest))  # type: ignore[no-untyped-call]
