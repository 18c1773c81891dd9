"""End to end against the lab: `homelab run` of a real runbook, the archive, `audit verify`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from homelab_lib.inventory import Inventory

pytestmark = pytest.mark.lab


def homelab(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "homelab_lib.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_run_00_inventory_archive_verify_and_tamper(lab: Inventory, repo: Path, tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path / "rt")}
    done = homelab(
        "run",
        "notebooks/00_inventory.ipynb",
        "-f",
        "parameters/lab.yaml",
        "--archive",
        str(archive),
        "-q",
        cwd=repo,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    (archived,) = archive.rglob("*-00_inventory-ok.ipynb")
    text = archived.read_text()
    assert "valid" in text
    assert "docker-drowzee" in text
    assert "image/png" in text  # the allocation chart

    secrets = [ref.reveal() for _key, ref in lab.secrets()]
    assert secrets, "the lab has secrets to look for"
    for path in archive.rglob("*"):
        if path.is_file():
            data = path.read_text(errors="replace")
            for value in secrets:
                assert value not in data, f"a secret value is in {path}"

    assert homelab("audit", "verify", "--archive", str(archive), cwd=repo, env=env).returncode == 0
    listed = homelab("audit", "list", "--archive", str(archive), cwd=repo, env=env)
    assert "00_inventory" in listed.stdout
    assert "rehearsal" in listed.stdout

    data = bytearray(archived.read_bytes())
    data[len(data) // 3] ^= 0x20
    archived.write_bytes(bytes(data))
    broken = homelab("audit", "verify", "--archive", str(archive), cwd=repo, env=env)
    assert broken.returncode == 1
    assert str(archived) in broken.stderr.splitlines()[0]


def test_run_with_a_broken_parameter_file_fails_before_running(lab: Inventory, repo: Path, tmp_path: Path) -> None:
    bad = tmp_path / "lab-broken.yaml"
    bad.write_text((repo / "parameters" / "lab.yaml").read_text().replace("cores: 2\n", "cores: two\n", 1))
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path / "rt")}
    done = homelab(
        "run", "notebooks/00_inventory.ipynb", "-f", str(bad), "--archive", str(tmp_path / "a"), "-q", cwd=repo, env=env
    )
    assert done.returncode == 2
    assert done.stderr.startswith(f"{bad}:")
    assert "vms[0].cores" in done.stderr


def test_lab_status_command(lab: Inventory, repo: Path) -> None:
    done = homelab("lab", "status", cwd=repo, env=dict(os.environ))
    assert done.returncode == 0, done.stdout + done.stderr
    for vm in lab.vms:
        assert vm.address in done.stdout


def _machine_view() -> dict[str, object]:
    """What the lab must never touch on the machine itself (its VMs write into their own folders)."""
    import docker

    listing = {d: sorted(p.name for p in Path(d).iterdir()) if Path(d).is_dir() else None for d in ("/srv", "/opt")}
    view: dict[str, object] = {**listing, "/etc/rancher": Path("/etc/rancher").exists()}
    try:
        engine = docker.from_env()
        engine.ping()
    except docker.errors.DockerException:
        return view  # no engine on the machine: nothing of the lab can be in it
    view["containers"] = sorted(c.name for c in engine.containers.list(all=True, filters={"label": "homelab.homelab"}))
    view["images"] = sorted(t for i in engine.images.list() for t in i.tags if "homelab-lab/" in t)
    engine.close()
    return view


def test_runbooks_01_and_02_touch_nothing_outside_the_lab(lab: Inventory, repo: Path, tmp_path: Path) -> None:
    from homelab_lab import vms
    from homelab_lib import compose

    before = _machine_view()
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path / "rt")}
    archive = tmp_path / "archive"
    for nb in ("01_provision_nodes", "02_deploy_compose_core"):
        done = homelab(
            "run", f"notebooks/{nb}.ipynb", "-f", "parameters/lab.yaml", "-p", "confirm", "true",
            "--archive", str(archive), "-q", cwd=repo, env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    after = _machine_view()
    assert after == before, "the runbooks changed the machine itself, not only the lab's VMs"
    assert after.get("containers", []) == []
    # what 02 wrote on each Docker VM is in that VM's folder of the lab's state dir
    for vm in lab.docker_hosts:
        for stack in vm.stacks:
            folder = vms.vm_dir(lab, vm.name) / "fs" / "root" / compose.remote_dir(compose.project_name(vm.name, stack))
            assert (folder / "compose.yaml").is_file(), folder
    # every chart an archived runbook shows is an image (a Figure's repr is not a chart)
    for archived in archive.rglob("*.ipynb"):
        text = archived.read_text()
        assert "<Figure size" not in text or "image/png" in text, archived
    assert "image/png" in next(archive.rglob("*-02_deploy_compose_core-ok.ipynb")).read_text()
