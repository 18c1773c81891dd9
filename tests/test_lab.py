"""The rehearsal lab, against its real parts: fakepve over HTTPS, OpenSSH, the Docker Engine.

Nothing is mocked: proxmoxer's https backend, paramiko and the docker SDK talk to
what ``homelab_lab.up`` started (the session's ``lab`` fixture).
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import paramiko
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from proxmoxer import ProxmoxAPI
from ruamel.yaml import YAML

import homelab_lab as lab_api
from homelab_lab import common, pve, standin_build, vms
from homelab_lab.errors import LabError
from homelab_lib import compose
from homelab_lib.inventory import Inventory, load_inventory

REPO = Path(__file__).resolve().parent.parent
LAB_FILE = REPO / "parameters" / "lab.yaml"
SERVICES = load_inventory(LAB_FILE).placed()


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    c = docker.from_env()
    yield c
    c.close()


def proxmox(inv: Inventory, verify: bool | str) -> Any:
    host, port = pve.endpoint(inv)
    assert inv.proxmox.password is not None
    return ProxmoxAPI(host, port=port, user=inv.proxmox.user, password=inv.proxmox.password.reveal(), verify_ssl=verify)


def ssh_client(inv: Inventory, known_hosts: Path) -> paramiko.SSHClient:
    c = paramiko.SSHClient()
    c.load_host_keys(str(known_hosts))
    c.set_missing_host_key_policy(paramiko.RejectPolicy())
    return c


def connect(c: paramiko.SSHClient, inv: Inventory, address: str) -> None:
    c.connect(
        address,
        port=inv.ssh.port,
        username=inv.ssh.user,
        key_filename=str(inv.ssh.private_key.path),
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
    )


# ---------------------------------------------------------------- without the lab


def test_refusals_before_anything_starts(repo: Path) -> None:
    real = load_inventory(repo / "parameters" / "example.yaml")
    for call in (lab_api.up, lab_api.status, lab_api.down):
        with pytest.raises(LabError, match="not a rehearsal lab"):
            call(real)


def test_non_loopback_addresses_are_refused(tmp_path: Path) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["vms"][1]["ip"] = "192.168.1.22/24"

    inv = load_inventory(write_lab_copy(tmp_path, edit=edit))
    with pytest.raises(LabError) as e:
        lab_api.up(inv)
    assert e.value.where == "VM docker-sleepy (ip 192.168.1.22/24)"
    assert not (tmp_path / "lab").exists(), "nothing was started or written"

    inv = load_inventory(write_lab_copy(tmp_path, endpoint="https://10.0.0.5:8006"))
    with pytest.raises(LabError, match="not a loopback address"):
        lab_api.up(inv)


def test_static_elf_check() -> None:
    assert standin_build.is_static_elf(standin_build.BUSYBOX.read_bytes())
    assert not standin_build.is_static_elf(Path("/bin/ls").read_bytes())
    assert not standin_build.is_static_elf(b"#!/bin/sh\n")


# ---------------------------------------------------------------- Proxmox


@pytest.mark.lab
def test_proxmox_has_the_four_nodes_each_with_the_template(lab: Inventory) -> None:
    api = proxmox(lab, verify=str(pve.ca_path(lab)))
    nodes = {n["node"] for n in api.nodes.get()}
    # fakepve has a node "pve1" of its own; the lab's launcher drops it unless a guest lives there;
    # the lab leaves it empty. Every other node is one of the inventory's.
    assert nodes - {"pve1"} == {n.name for n in lab.nodes}
    if "pve1" in nodes:
        assert api.nodes("pve1").qemu.get() == []
    for i, node in enumerate(lab.nodes):
        (template,) = [vm for vm in api.nodes(node.name).qemu.get() if vm.get("template")]
        assert template["name"] == lab.proxmox.template
        assert int(template["vmid"]) == lab.proxmox.template_vmid + i
        assert template["status"] == "stopped"
        config = api.nodes(node.name).qemu(template["vmid"]).config.get()
        assert config["scsi0"].startswith(f"{lab.proxmox.storage}:base-")
        assert "cloudinit" in config["ide2"]
        assert f"bridge={lab.proxmox.bridge}" in config["net0"]
        assert (str(config["agent"]), config["serial0"], config["vga"], config["ostype"]) == (
            "1",
            "socket",
            "serial0",
            "l26",
        )


@pytest.mark.lab
def test_proxmox_tls_is_not_trusted_without_the_lab_ca(lab: Inventory) -> None:
    with pytest.raises(requests.exceptions.SSLError):
        proxmox(lab, verify=True)


# ---------------------------------------------------------------- VMs: each its own host


def on_vm(inv: Inventory, vm_name: str, command: str) -> tuple[int, str]:
    """Run a shell command on a lab VM over SSH (host key checked); (exit code, stdout + stderr)."""
    c = ssh_client(inv, inv.ssh.known_hosts)
    try:
        connect(c, inv, inv.vm(vm_name).address)
        _, out, err = c.exec_command(command, timeout=60)
        text = out.read().decode() + err.read().decode()
        return out.channel.recv_exit_status(), text
    finally:
        c.close()


@pytest.mark.lab
def test_every_vm_is_its_own_host_with_its_own_engine(lab: Inventory) -> None:
    assert {vm.role for vm in lab.vms} == {"docker", "k3s"}
    engines = {}
    for vm in lab.vms:
        code, text = on_vm(lab, vm.name, "hostname; docker info --format '{{.ID}} {{.DockerRootDir}}'")
        assert code == 0, text
        hostname, engine = text.strip().splitlines()
        assert hostname == vm.name
        engines[vm.name] = engine.split()[0]
    assert len(set(engines.values())) == len(lab.vms), engines
    try:
        machine = docker.from_env().info()["ID"]
    except docker.errors.DockerException:
        machine = None
    assert machine not in engines.values()


@pytest.mark.lab
def test_what_a_vm_writes_lands_in_its_folder_only(lab: Inventory) -> None:
    state_dir = common.lab_settings(lab).state_dir
    token = os.urandom(6).hex()
    paths = [f"/etc/rancher/k3s/{token}", f"/srv/{token}", f"/opt/{token}", f"/var/lib/rancher/{token}"]
    writer, other = lab.vms[3].name, lab.vms[0].name
    code, text = on_vm(lab, writer, " && ".join(f"mkdir -p {Path(p).parent} && echo {token} > {p}" for p in paths))
    assert code == 0, text
    for p in paths:
        assert (state_dir / "vms" / writer / "fs" / p.lstrip("/")).read_text().strip() == token
        assert not Path(p).exists(), f"{p} leaked onto the machine"
        assert on_vm(lab, other, f"test -e {p}")[0] != 0, f"{p} is visible on {other}"
        assert on_vm(lab, writer, f"cat {p}")[1].strip() == token


@pytest.mark.lab
def test_a_vm_gets_stand_ins_for_devices_the_machine_lacks(lab: Inventory) -> None:
    code, text = on_vm(lab, "docker-drowzee", "ls -l /dev/dri/renderD128")
    assert code == 0, text
    assert text.startswith("c"), text
    assert "226, 128" in text
    if not Path("/dev/dri").exists():
        assert on_vm(lab, "docker-sleepy", "test -e /dev/dri")[0] != 0  # only the VM whose services need it


@pytest.mark.lab
def test_a_vms_packages_come_up_as_its_units_on_its_address(lab: Inventory) -> None:
    """k3s-nappy lists prometheus-node-exporter: its unit is enabled, runs, answers on the VM's address."""
    k3s = lab.vm("k3s-nappy")
    assert "prometheus-node-exporter" in k3s.packages
    code, text = on_vm(
        lab, k3s.name, "systemctl is-enabled prometheus-node-exporter; systemctl is-active prometheus-node-exporter"
    )
    assert code == 0, text
    assert text.split() == ["enabled", "active"]
    metrics = requests.get(f"http://{k3s.address}:9100/metrics", timeout=10).text
    assert "node_filesystem_avail_bytes" in metrics
    assert on_vm(lab, "docker-sleepy", "systemctl is-active prometheus-node-exporter")[0] != 0  # not its package
    assert on_vm(lab, k3s.name, "command -v restic")[0] == 0


@pytest.mark.lab
def test_each_engine_holds_its_services_images_under_their_real_names(lab: Inventory) -> None:
    for vm in lab.docker_hosts:
        wanted = sorted({lab.services[s].image for stack in vm.stacks.values() for s in stack})
        code, text = on_vm(lab, vm.name, "docker image ls --format '{{.Repository}}:{{.Tag}}'")
        assert code == 0, text
        held = {compose.normal_image(line) for line in text.split()}
        assert {compose.normal_image(i) for i in wanted} <= held, (vm.name, wanted, held)
    code, text = on_vm(lab, "docker-sleepy", "docker image inspect docker.io/library/postgres:16.6")
    assert code != 0  # postgres runs on hypno: sleepy's engine never got it


@pytest.mark.lab
def test_a_wrong_or_missing_host_key_is_refused(lab: Inventory, tmp_path: Path) -> None:
    vm = lab.vms[0]
    other = ed25519.Ed25519PrivateKey.generate().public_key()
    line = other.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{vms.host_pattern(lab, vm)} {line}\n")
    c = ssh_client(lab, wrong)
    with pytest.raises(paramiko.BadHostKeyException):
        connect(c, lab, vm.address)
    c.close()

    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    c = ssh_client(lab, empty)
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        connect(c, lab, vm.address)
    c.close()


@pytest.mark.lab
def test_status_reports_every_part_up(lab: Inventory) -> None:
    parts = lab_api.status(lab)
    assert [p for p in parts if p.state != "up"] == []
    kinds = [(p.part, p.name) for p in parts]
    assert ("proxmox", "fakepve") in kinds
    assert [n for k, n in kinds if k == "vm"] == [vm.name for vm in lab.vms]
    assert {n.split("/")[1] for k, n in kinds if k == "image"} == set(SERVICES)


@pytest.mark.lab
def test_a_second_up_reuses_everything(lab: Inventory) -> None:
    state_dir = common.lab_settings(lab).state_dir
    before = {k: p.pid for k, p in common.load_state(state_dir).items()}
    lines: list[str] = []
    parts = lab_api.up(lab, progress=lines.append)
    assert all(p.state == "up" for p in parts)
    assert {k: p.pid for k, p in common.load_state(state_dir).items()} == before
    assert not [line for line in lines if "booted" in line or "building" in line], lines
    assert all("(0 built)" in line for line in lines if line.startswith("images:")), lines


# ---------------------------------------------------------------- a second lab beside the session's


def write_lab_copy(
    tmp_path: Path,
    *,
    name: str = "rehearsal-two",
    endpoint: str = "https://127.0.0.3:8016",
    ssh_port: int = 2223,
    first_ip: int = 21,
    edit: Any = None,
) -> Path:
    """parameters/lab.yaml with its own name, addresses, ports and a state dir under tmp_path."""
    state = tmp_path / "lab"
    yaml = YAML(typ="rt")
    data = yaml.load(LAB_FILE.read_text())
    data["name"] = name
    data["lab"]["state_dir"] = str(state)
    data["proxmox"]["endpoint"] = endpoint
    data["proxmox"]["password"] = f"file:{state}/pve/password"
    data["proxmox"]["ca_file"] = str(state / "pve" / "ca.pem")
    data["proxmox"]["token_secret"] = f"file:{state}/pve/token"
    data["ssh"]["port"] = ssh_port
    data["ssh"]["private_key"] = f"file:{state}/ssh/id_ed25519"
    data["ssh"]["public_key"] = str(state / "ssh" / "id_ed25519.pub")
    data["ssh"]["known_hosts"] = str(state / "ssh" / "known_hosts")
    data["k3s"]["kubeconfig"] = str(state / "k3s" / "kubeconfig.yaml")
    data["services"]["postgres"]["secrets"]["postgres_password"]["ref"] = f"file:{state}/secrets/postgres_password"
    data["monitoring"]["grafana_admin_password"] = f"file:{state}/secrets/grafana_admin_password"
    for i, vm in enumerate(data["vms"]):
        vm["ip"] = f"127.0.0.{first_ip + i}/8"
    if edit:
        edit(data)
    path = tmp_path / f"{name}.yaml"
    with path.open("w") as f:
        yaml.dump(data, f)
    return path


def _mounts() -> str:
    return Path("/proc/self/mountinfo").read_text()


@pytest.mark.lab
def test_a_second_lab_comes_up_and_its_down_leaves_nothing_behind(lab: Inventory, tmp_path: Path) -> None:
    """A smaller lab beside the session's: processes restarted when dead, and `down` removes every trace."""

    def edit(data: dict[str, Any]) -> None:
        data["vms"] = [data["vms"][0]]  # one Docker VM is enough here
        data.pop("k3s")
        data["monitoring"]["prometheus_host"] = data["vms"][0]["name"]
        data["monitoring"].pop("k3s_node_ports", None)  # no K3s here
        data.pop("placement_file", None)

    two = load_inventory(write_lab_copy(tmp_path, edit=edit))
    state_dir = common.lab_settings(two).state_dir
    vm = two.vms[0]
    bridge = vms.bridge_name(two, vm.name)
    try:
        parts = lab_api.up(two, progress=lambda _line: None)
        assert all(p.state == "up" for p in parts)
        assert [p.address for p in parts if p.part == "vm"] == ["127.0.0.21:2223"]
        assert pve.endpoint(two) == ("127.0.0.3", 8016)
        nodes = {n["node"] for n in proxmox(two, verify=str(pve.ca_path(two))).nodes.get()}
        assert nodes - {"pve1"} == {n.name for n in two.nodes}
        procs = common.load_state(state_dir)
        assert sorted(procs) == ["dockerd/docker-drowzee", "pve", "vm/docker-drowzee"]
        assert Path(f"/sys/class/net/{bridge}").exists()

        os.kill(procs["pve"].pid, signal.SIGKILL)
        assert lab_api.status(two)[0].state == "down"
        lab_api.up(two, progress=lambda _line: None)
        again = common.load_state(state_dir)
        assert [k for k in procs if again[k].pid != procs[k].pid] == ["pve"], "only the dead one is restarted"
        procs = again
        image = two.services["plex"].image
        code, text = on_vm(two, vm.name, f"docker run -d --entrypoint /bin/sleep {image} 1000")
        assert code == 0, text
        container = text.strip().splitlines()[-1]
        # a service of the VM's own (as K3s is, once installed): it must stop with the VM
        unit = "[Service]\nExecStart=/bin/sleep 1001\n"
        code, text = on_vm(
            two, vm.name, f"printf '{unit}' >/etc/systemd/system/lab-test.service && systemctl start lab-test"
        )
        assert code == 0, text
    finally:
        lab_api.down(two, progress=lambda _line: None)
    assert not state_dir.exists()
    assert all(common.cmdline(p.pid) is None for p in procs.values()), "every process of the lab is gone"
    leftovers = [
        pid
        for pid in os.listdir("/proc")
        if pid.isdigit() and str(tmp_path) in " ".join(common.cmdline(int(pid)) or [])
    ]
    assert leftovers == [], "no process refers to the lab's folder"
    shims = [
        pid for pid in os.listdir("/proc") if pid.isdigit() and container in " ".join(common.cmdline(int(pid)) or [])
    ]
    assert shims == [], "the VM's containers stopped with its engine"
    services = [
        p for p in os.listdir("/proc") if p.isdigit() and (common.cmdline(int(p)) or []) == ["/bin/sleep", "1001"]
    ]
    assert services == [], "the VM's own services stopped with it"
    assert not Path(f"/sys/class/net/{bridge}").exists(), "the VM's bridge is removed"
    rules = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True, check=False).stdout
    assert bridge not in rules, "the VM's forwarding rules are removed"
    assert str(tmp_path) not in _mounts(), "no mount of the lab is left"
    assert all(p.state == "up" for p in lab_api.status(lab)), "the session's lab is untouched"
