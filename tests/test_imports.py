"""One direction of imports: the library never knows the lab; no import cycles between modules.

Read from the source with ``ast`` (every import, at module level or inside a function),
so a late import cannot hide a dependency.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "homelab_lib"
# The lab, and the commands that start it, may use it; nothing else may.
MAY_USE_THE_LAB = {"homelab_lib/cli.py", "homelab_lib/rehearse.py"}
# The inventory's schema has a `lab:` section (the lab's own settings) and checks its shape; it acts on nothing.
SCHEMA = {"homelab_lib/inventory/model.py", "homelab_lib/inventory/checks.py"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(path: Path) -> set[str]:
    """The homelab_lib modules a file imports (``from pkg import mod`` counts as pkg.mod)."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("homelab_lib"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("homelab_lib"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
    return found


def test_only_the_lab_and_its_commands_import_the_lab() -> None:
    offenders = []
    for name, path in sorted(MODULES.items()):
        rel = str(path.relative_to(ROOT))
        if name.startswith("homelab_lib.lab") or rel in MAY_USE_THE_LAB:
            continue
        used = sorted(m for m in imports(path) if m == "homelab_lib.lab" or m.startswith("homelab_lib.lab."))
        if used:
            offenders.append(f"{rel} imports {', '.join(used)}")
    assert offenders == []


def test_no_lab_branches_in_the_library() -> None:
    pattern = re.compile(r"profile\.lab|homelab_lib\.lab|lab_healthcheck|\.profile == .lab.|inv\.lab\b")
    offenders = []
    for name, path in sorted(MODULES.items()):
        rel = str(path.relative_to(ROOT))
        if name.startswith("homelab_lib.lab") or rel in MAY_USE_THE_LAB | SCHEMA:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{rel}:{number}: {line.strip()}")
    assert offenders == []


def _cycles() -> list[list[str]]:
    """Import cycles between plain modules (a package's __init__ re-exporting its modules is not one)."""
    plain = {n for n, p in MODULES.items() if p.name != "__init__.py"}
    graph = {n: sorted(m for m in imports(MODULES[n]) if m in plain and m != n) for n in plain}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
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


def test_no_import_cycles_between_modules() -> None:
    assert _cycles() == []


@pytest.mark.parametrize("module", ["homelab_lib.compose.transport", "homelab_lib.compose.deploy"])
def test_the_walker_sees_late_imports(module: str) -> None:
    """The walker finds imports inside functions too (the old transport <-> deploy cycle was one)."""
    code = "def f():\n    from homelab_lib.compose.deploy import deploy\n"
    tree_imports = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and node.module:
            tree_imports.add(node.module)
    assert tree_imports == {"homelab_lib.compose.deploy"}
    assert module in MODULES
