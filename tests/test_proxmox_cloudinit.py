"""Role user-data: every document the runbook can generate passes cloud-init's own schema validator."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from homelab_lib import proxmox
from homelab_lib.inventory import Inventory
from homelab_lib.inventory.model import Snippets
from homelab_lib.proxmox.cloudinit import snippet_name, user_data
from tests.test_proxmox_fixtures import PUBKEY, lab_inventory

CLOUD_INIT = shutil.which("cloud-init")


def schema_check(document: str, path: Path) -> None:
    """Validate with `cloud-init schema --config-file` (Debian package cloud-init, installed by .ci/sysdeps.sh)."""
    if CLOUD_INIT is None:
        pytest.fail("cloud-init is not installed: `apt-get install cloud-init` (make test does it via .ci/sysdeps.sh)")
    path.write_text(document)
    run = subprocess.run(
        [CLOUD_INIT, "schema", "--config-file", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0, f"{path.name} is not valid cloud-config:\n{run.stdout}\n{run.stderr}\n{document}"


def variants(tmp_path: Path) -> dict[str, Inventory]:
    """The lab inventory with root (as the lab has it), and with a sudo user and extra packages."""
    (tmp_path / "id.pub").write_text(PUBKEY + "\nssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC0second second@host\n")
    base = lab_inventory()
    root = base.model_copy(update={"ssh": base.ssh.model_copy(update={"public_key": tmp_path / "id.pub"})})
    vms = [vm.model_copy(update={"packages": ["htop", "qemu-guest-agent"], "tags": ["media"]}) for vm in root.vms]
    debian = root.model_copy(update={"ssh": root.ssh.model_copy(update={"user": "debian"}), "vms": vms})
    nokeys = root.model_copy(update={"ssh": root.ssh.model_copy(update={"public_key": None})})
    return {"root": root, "debian": debian, "nokeys": nokeys}


def test_every_generated_user_data_is_valid_cloud_config(tmp_path: Path) -> None:
    checked = 0
    for label, inv in variants(tmp_path).items():
        desired = proxmox.desired_state(inv)
        for vm in desired.vms:
            schema_check(vm.user_data, tmp_path / f"{label}-{vm.name}.yaml")
            checked += 1
    assert checked == 12  # 3 variants x (3 docker VMs + 1 k3s VM)


def test_user_data_content_per_role(tmp_path: Path) -> None:
    inv = variants(tmp_path)["debian"]
    keys = [PUBKEY]
    docker = yaml.safe_load(user_data(inv, inv.vm("docker-hypno"), keys))
    assert docker["hostname"] == "docker-hypno"
    assert docker["fqdn"] == "docker-hypno.lab.home.arpa"
    assert docker["users"][0]["name"] == "debian"
    assert docker["users"][0]["ssh_authorized_keys"] == keys
    assert "docker" in docker["users"][0]["groups"]
    assert {"qemu-guest-agent", "docker-ce", "docker-compose-plugin", "htop"} <= set(docker["packages"])
    assert docker["packages"].count("qemu-guest-agent") == 1
    assert "docker.list" in docker["apt"]["sources"]
    k3s = yaml.safe_load(user_data(inv, inv.vm("k3s-nappy"), keys))
    assert "docker-ce" not in k3s["packages"]
    files = {f["path"]: f["content"] for f in k3s["write_files"]}
    assert "br_netfilter" in files["/etc/modules-load.d/k3s.conf"]
    assert "net.ipv4.ip_forward = 1" in files["/etc/sysctl.d/90-k3s.conf"]
    assert ["swapoff", "-a"] in k3s["runcmd"]
    root = variants(tmp_path)["root"]
    doc = yaml.safe_load(user_data(root, root.vm("docker-drowzee"), keys))
    assert doc["disable_root"] is False
    assert doc["users"] == [{"name": "root", "ssh_authorized_keys": keys}]


def test_user_data_is_delivered_only_with_a_snippets_storage(tmp_path: Path) -> None:
    inv = variants(tmp_path)["root"]
    plain = proxmox.desired_state(inv).vm("docker-drowzee")
    assert plain.cicustom == ""
    assert plain.snippet == ""
    assert plain.user_data.startswith("#cloud-config\n")
    px = inv.proxmox.model_copy(update={"snippets": Snippets(storage="snip", write="local", dir=str(tmp_path))})
    with_snippets = proxmox.desired_state(inv.model_copy(update={"proxmox": px})).vm("docker-drowzee")
    assert with_snippets.snippet == snippet_name(inv.vm("docker-drowzee"), with_snippets.user_data)
    assert with_snippets.cicustom == f"user=snip:snippets/{with_snippets.snippet}"
    assert with_snippets.snippet.startswith("homelab-docker-drowzee-")
    assert with_snippets.snippet.endswith(".yaml")
    # the name follows the content: another document, another file (and a cicustom diff in the plan)
    vm = inv.vm("docker-drowzee")
    assert snippet_name(vm, "#cloud-config\n{}\n") != snippet_name(vm, "#cloud-config\npackages: [x]\n")
    assert snippet_name(vm, "#cloud-config\n{}\n") == snippet_name(vm, "#cloud-config\n{}\n")
