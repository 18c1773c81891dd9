"""The package's metadata: environment.yml agrees with pyproject.toml; the command exists."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from homelab_lib.cli import build_parser


def normal(spec: str) -> tuple[str, str, str]:
    r = Requirement(spec)
    return (r.name.lower().replace("_", "-").replace(".", "-"), ",".join(sorted(r.extras)), str(r.specifier))


def test_environment_yml_lists_the_same_dependencies_as_pyproject(repo: Path) -> None:
    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    wanted = set(map(normal, project["dependencies"]))
    for extra in ("lab", "dev"):
        wanted |= set(map(normal, project["optional-dependencies"][extra]))
    env = yaml.safe_load((repo / "environment.yml").read_text())
    assert "conda-forge" in env["channels"]
    assert "python=3.11" in env["dependencies"]
    (pip,) = [d for d in env["dependencies"] if isinstance(d, dict)]
    listed = [s for s in pip["pip"] if not s.startswith("-e ")]
    assert set(map(normal, listed)) == wanted
    assert "-e .[lab,dev]" in pip["pip"]


def test_named_dependencies_are_declared(repo: Path) -> None:
    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    names = {normal(s)[0] for s in project["dependencies"]}
    for name in (
        "jupyterlab",
        "papermill",
        "ipywidgets",
        "proxmoxer",
        "docker",
        "kubernetes",
        "pandas",
        "matplotlib",
        "nbval",
        "pydantic",
        "ruamel-yaml",
    ):
        assert name in names, name
    assert "fakepve" in {normal(s)[0] for s in project["optional-dependencies"]["lab"]}
    assert project["scripts"]["homelab"] == "homelab_lib.cli:main"


def test_fakepve_is_imported_only_by_the_labs_launcher_which_runs_as_its_own_process(repo: Path) -> None:
    launcher = repo / "homelab_lib" / "lab" / "pve_server.py"
    assert "from fakepve import" in launcher.read_text()
    for path in (repo / "homelab_lib").rglob("*.py"):
        if path == launcher:
            continue
        text = path.read_text()
        assert "import fakepve" not in text, path
        assert "from fakepve" not in text, path
        assert "import pve_server" not in text, path  # `python -m homelab_lab.pve_server`, never imported
        assert "lab.pve_server import" not in text, path


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["validate"],
        ["run"],
        ["audit"],
        ["audit", "list"],
        ["audit", "show"],
        ["audit", "verify"],
        ["lab"],
        ["rehearse"],
    ],
)
def test_every_command_has_help(argv: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "homelab_lib.cli", *argv, "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("usage: homelab")


def test_console_script_is_installed() -> None:
    exe = Path(sys.executable).with_name("homelab")
    assert exe.exists(), "pip install -e . creates the homelab command"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True).stdout
    assert "validate" in out
    assert "rehearse" in out
    assert build_parser().prog == "homelab"
