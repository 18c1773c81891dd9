"""One direction of imports: the library never knows the lab; no cycles between its packages or modules.

Read from the source with ``ast`` (every import, at module level or inside a function), so a
late import cannot hide a dependency.

And imports cost only what a runbook uses: a notebook's imports cell loads no client library
(those load where a runbook first needs them), and a package that re-exports lazily
(:mod:`homelab_lib.core.lazy`) exports exactly what its ``TYPE_CHECKING`` imports declare.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from homelab_lib.core.lazy import TABLE, declared

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "homelab_lib"
# The inventory's schema has a `lab:` section (the lab's own settings) and checks its shape; it acts on nothing.
SCHEMA = {"homelab_lib/inventory/model.py", "homelab_lib/inventory/checks.py"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(path: Path, prefix: str = "homelab_lib") -> set[str]:
    """The modules under ``prefix`` a file imports (``from pkg import mod`` counts as pkg.mod)."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == prefix)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == prefix:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
    return found


def test_the_library_never_imports_the_lab() -> None:
    offenders = sorted(
        f"{path.relative_to(ROOT)} imports {', '.join(sorted(used))}"
        for path in MODULES.values()
        if (used := imports(path, "homelab_lab"))
    )
    assert offenders == []


def test_no_lab_branches_in_the_library() -> None:
    pattern = re.compile(r"profile\.lab|homelab_lab|lab_healthcheck|\.profile == .lab.|inv\.lab\b|homelab lab ")
    offenders = []
    for path in sorted(MODULES.values()):
        rel = str(path.relative_to(ROOT))
        if rel in SCHEMA:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{rel}:{number}: {line.strip()}")
    assert offenders == []


def _cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Every back edge of a depth-first walk, as the cycle it closes (empty: the graph is acyclic)."""
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def top_level(module: str) -> str:
    """The top-level unit of homelab_lib a module belongs to: ``homelab_lib.k3s.api`` -> ``k3s``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def package_graph() -> dict[str, set[str]]:
    """Which top-level package of homelab_lib imports which (homelab_lib's own __init__ is not a package here)."""
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        unit = top_level(name)
        if not unit:
            continue
        used = {top_level(m) for m in imports(path)}
        graph.setdefault(unit, set()).update(u for u in used if u and u != unit)
    return graph


def module_graph() -> dict[str, set[str]]:
    """Imports between plain modules (a package's __init__ re-exporting its modules is not a cycle)."""
    plain = {n for n, p in MODULES.items() if p.name != "__init__.py"}
    return {n: {m for m in imports(MODULES[n]) if m in plain and m != n} for n in plain}


def test_no_import_cycles_between_the_top_level_packages() -> None:
    assert _cycles(package_graph()) == []


def test_no_import_cycles_between_modules() -> None:
    assert _cycles(module_graph()) == []


def test_a_planted_cycle_is_found(tmp_path: Path) -> None:
    """The check fails on a cycle: kube (generic) importing k3s (its consumer) closes one."""
    graph = package_graph()
    assert "kube" in graph["k3s"], "k3s stands on kube"
    planted = {**graph, "kube": graph["kube"] | {"k3s"}}
    assert ["kube", "k3s", "kube"] in _cycles(planted)
    # and the walker reads late imports (inside a function) from the source
    late = tmp_path / "late.py"
    late.write_text("def f():\n    from homelab_lib.k3s.runbook import adapter\n")
    assert imports(late) == {"homelab_lib.k3s.runbook"}


def test_the_generic_kubernetes_package_imports_no_consumer() -> None:
    """kube/ is the floor under k3s/, migrate/, backup/ and the schedules: it imports none of them."""
    assert package_graph()["kube"] <= {"core"}


# ---------------------------------------------------------------- imports cost only what is used

LAZY = sorted(n for n, p in MODULES.items() if p.name == "__init__.py" and "lazy_exports(" in p.read_text())
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
# What an imports cell must not load: each is loaded where a runbook first needs it.
CLIENT_LIBRARIES = (
    "pandas", "matplotlib", "numpy", "kubernetes", "kubernetes_validate", "jsonschema", "docker", "paramiko",
    "grafanalib", "ipywidgets", "papermill", "nbformat",
)  # fmt: skip
# A cell run as a kernel runs it (magics included; `%matplotlib inline` asks for no GUI loop), then what it loaded.
CELL_PROBE = """\
import sys
from IPython.core.interactiveshell import InteractiveShell
class Shell(InteractiveShell):
    def enable_gui(self, gui=None):
        pass
Shell.instance().run_cell(sys.stdin.read(), silent=True).raise_error()
print(" ".join(m for m in sys.argv[1:] if m in sys.modules))
"""


def test_the_adapter_packages_export_lazily() -> None:
    assert {"homelab_lib.compose", "homelab_lib.k3s", "homelab_lib.kube", "homelab_lib.monitoring"} <= set(LAZY)


@pytest.mark.parametrize("package", LAZY)
def test_a_lazy_package_exports_what_it_declares(package: str) -> None:
    module = importlib.import_module(package)
    table = vars(module)[TABLE]
    assert table == declared(MODULES[package].read_text())
    assert sorted(module.__all__) == sorted(table)
    for name, where in table.items():
        assert getattr(module, name) is getattr(importlib.import_module(where), name), name
    assert set(table) <= set(dir(module))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        module.nope  # noqa: B018


def test_a_name_spelt_as_one_of_its_packages_modules_keeps_what_the_package_exports() -> None:
    """``compose.render`` is the function of compose/render.py, also when that module was loaded first;
    a module the package does not export is there by its name, as the eager imports left it."""
    code = (
        "import importlib\n"
        "render = importlib.import_module('homelab_lib.compose.render')\n"
        "from homelab_lib import compose\n"
        "assert compose.render is render.render, compose.render\n"
        "from homelab_lib.proxmox import plan\n"
        "assert plan is importlib.import_module('homelab_lib.proxmox.plan').plan, plan\n"
        "from homelab_lib import monitoring\n"
        "assert monitoring.targets.__name__ == 'homelab_lib.monitoring.targets'\n"  # a module, by its name
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def imports_cell(path: Path) -> str:
    """A runbook's imports cell: the first code cell after the one tagged ``parameters``."""
    cells = json.loads(path.read_text())["cells"]
    (at,) = [i for i, c in enumerate(cells) if "parameters" in c["metadata"].get("tags", [])]
    return next("".join(c["source"]) for c in cells[at + 1 :] if c["cell_type"] == "code")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_runbooks_imports_cell_loads_no_client_library(path: Path) -> None:
    """The reader gets the widgets without waiting for pandas, matplotlib or a client (benchmarks/imports.py)."""
    done = subprocess.run(
        [sys.executable, "-c", CELL_PROBE, *CLIENT_LIBRARIES],
        input=imports_cell(path),
        capture_output=True,
        text=True,
        cwd=path.parent,
        check=True,
    )
    assert done.stdout.split() == []
