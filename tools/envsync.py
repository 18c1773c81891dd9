"""Write environment.yml from pyproject.toml, so the two list the same dependencies.

.venv/bin/python tools/envsync.py      # after changing pyproject.toml's dependencies
"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    lab = tomllib.loads((ROOT / "lab" / "pyproject.toml").read_text())["project"]
    lab_deps = [r for r in lab["dependencies"] if r != project["name"]]
    lines = [
        "# The conda environment: conda-forge's Python 3.11, then this package and its",
        "# dependencies from PyPI. Generated from pyproject.toml by tools/envsync.py;",
        "# tests/test_packaging.py checks that the two agree.",
        "#   conda env create -f environment.yml && conda activate homelab-runbooks",
        "name: homelab-runbooks",
        "channels:",
        "  - conda-forge",
        "dependencies:",
        "  - python=3.11",
        "  - pip",
        "  - pip:",
        "      # runtime",
        *[f'      - "{r}"' for r in project["dependencies"]],
        "      # the rehearsal lab (lab/pyproject.toml, the homelab-lab distribution)",
        *[f'      - "{r}"' for r in lab_deps],
        "      # extra: dev (tests, lint, types)",
        *[f'      - "{r}"' for r in extras["dev"]],
        '      - "-e .[dev]"',
        '      - "-e ./lab"',
    ]
    (ROOT / "environment.yml").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
