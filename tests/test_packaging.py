"""The packages' metadata: two distributions with true licences, environment.yml agrees, the command exists."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
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
    lab = tomllib.loads((repo / "lab" / "pyproject.toml").read_text())["project"]
    wanted = set(map(normal, project["dependencies"])) | set(map(normal, project["optional-dependencies"]["dev"]))
    wanted |= {normal(s) for s in lab["dependencies"] if normal(s)[0] != project["name"]}
    env = yaml.safe_load((repo / "environment.yml").read_text())
    assert "conda-forge" in env["channels"]
    assert "python=3.11" in env["dependencies"]
    (pip,) = [d for d in env["dependencies"] if isinstance(d, dict)]
    listed = [s for s in pip["pip"] if not s.startswith("-e ")]
    assert set(map(normal, listed)) == wanted
    assert "-e .[dev]" in pip["pip"]
    assert "-e ./lab" in pip["pip"]


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
    lab = tomllib.loads((repo / "lab" / "pyproject.toml").read_text())["project"]
    assert "fakepve" in {normal(s)[0] for s in lab["dependencies"]}
    assert "homelab-runbooks" in {normal(s)[0] for s in lab["dependencies"]}
    assert project["scripts"]["homelab"] == "homelab_lib.cli:main"


def test_fakepve_is_imported_only_by_the_labs_launcher_which_runs_as_its_own_process(repo: Path) -> None:
    launcher = repo / "lab" / "homelab_lab" / "pve_server.py"
    assert "from fakepve import" in launcher.read_text()
    for path in [*(repo / "homelab_lib").rglob("*.py"), *(repo / "lab" / "homelab_lab").rglob("*.py")]:
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


def _wheel(project: Path, out: Path) -> Path:
    """Build the wheel of the distribution in ``project`` from its tracked files alone (a copy: no stale
    ``build/`` of an earlier build can slip into it), with this venv's setuptools (no download)."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=project, capture_output=True, check=True).stdout
    source = out / "source"
    for rel in filter(None, listed.decode().split("\0")):
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(project / rel, source / rel)
    wheels = out / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("*.whl")
    return wheel


def _metadata(wheel: zipfile.ZipFile) -> tuple[list[str], dict[str, list[str]]]:
    names = wheel.namelist()
    (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    msg = Parser().parsestr(wheel.read(meta).decode())
    return names, {k: msg.get_all(k) or [] for k in ("License-Expression", "License-File", "License")}


def test_the_librarys_wheel_holds_no_lab_file_and_an_mit_licence(repo: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(_wheel(repo, tmp_path)) as wheel:
        names, meta = _metadata(wheel)
        licence = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
        assert licence, names
        assert wheel.read(licence[0]).decode().startswith("MIT License")
    assert [n for n in names if "homelab_lab" in n or "lab/" in n.split(".dist-info")[0]] == []
    assert {n.split("/")[0] for n in names if ".dist-info" not in n} == {"homelab_lib"}
    assert not [n for n in names if n.endswith((".go", ".sh", "go.mod"))]
    assert meta["License-Expression"] == ["MIT"]
    assert meta["License-File"] == ["LICENSE"]
    assert "homelab_lib/inventory/catalog.yaml" in names


def test_the_labs_wheel_says_it_holds_an_agpl_part_and_carries_both_licences(repo: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(_wheel(repo / "lab", tmp_path)) as wheel:
        names, meta = _metadata(wheel)
        texts = {n.rsplit("/", 1)[-1]: wheel.read(n).decode() for n in names if "/licenses/" in n}
        launcher = wheel.read("homelab_lab/pve_server.py").decode()
        entry_points = wheel.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert meta["License-Expression"] == ["MIT AND AGPL-3.0-or-later"]
    assert "GNU AFFERO GENERAL PUBLIC LICENSE" in texts["AGPL-3.0-or-later.txt"]
    assert texts["MIT.txt"].startswith("MIT License")
    assert launcher.startswith("# SPDX-License-Identifier: AGPL-3.0-or-later")
    assert {n.split("/")[0] for n in names if ".dist-info" not in n} == {"homelab_lab"}
    for data in ("homelab_lab/k3s-install.sh", "homelab_lab/standin/go.mod", "homelab_lab/standin/main.go"):
        assert data in names
    assert "lab = homelab_lab.commands:register" in entry_points
