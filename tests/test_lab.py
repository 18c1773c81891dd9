"""The rehearsal lab, against its real parts: fakepve over HTTPS, OpenSSH, the Docker Engine.

Nothing is mocked: proxmoxer's https backend, paramiko and the docker SDK talk to
what ``homelab_lib.lab.up`` started (the session's ``lab`` fixture).
"""

from __future__ import annotations

import os
import signal
import socket
import time
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

from homelab_lib import lab as lab_api
from homelab_lib.errors import LabError
from homelab_lib.inventory import Inventory, load_inventory
from homelab_lib.lab import common, images, pve, ssh

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


def test_names_and_refusals_before_anything_starts(repo: Path) -> None:
    assert lab_api.standin_image("plex") == "homelab-lab/plex:standin"
    real = load_inventory(repo / "parameters" / "example.yaml")
    for call in (lab_api.up, lab_api.status, lab_api.down, lab_api.image_map):
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
    assert images._is_static_elf(images.BUSYBOX.read_bytes())
    assert not images._is_static_elf(Path("/bin/ls").read_bytes())
    assert not images._is_static_elf(b"#!/bin/sh\n")


# ---------------------------------------------------------------- Proxmox


@pytest.mark.lab
def test_proxmox_has_the_four_nodes_each_with_the_template(lab: Inventory) -> None:
    api = proxmox(lab, verify=str(pve.ca_path(lab)))
    nodes = {n["node"] for n in api.nodes.get()}
    # fakepve (0.5) always has a node "pve1" of its own, which its command line cannot remove;
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


# ---------------------------------------------------------------- SSH


@pytest.mark.lab
def test_every_vm_endpoint_runs_docker_over_ssh(lab: Inventory, client: Any) -> None:
    engine_version = client.version()["Version"]
    assert {vm.role for vm in lab.vms} == {"docker", "k3s"}
    for vm in lab.vms:
        c = ssh_client(lab, lab.ssh.known_hosts)
        try:
            connect(c, lab, vm.address)
            _, out, _ = c.exec_command("docker version --format '{{.Server.Version}}'", timeout=10)
            assert out.read().decode().strip() == engine_version
            assert out.channel.recv_exit_status() == 0
        finally:
            c.close()


@pytest.mark.lab
def test_a_wrong_or_missing_host_key_is_refused(lab: Inventory, tmp_path: Path) -> None:
    vm = lab.vms[0]
    other = ed25519.Ed25519PrivateKey.generate().public_key()
    line = other.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{ssh.host_pattern(lab, vm)} {line}\n")
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


# ---------------------------------------------------------------- stand-in images


@pytest.mark.lab
def test_image_map_covers_the_placed_services(lab: Inventory) -> None:
    mapping = lab_api.image_map(lab)
    assert sorted(mapping) == sorted(lab.services[s].image for s in SERVICES)
    assert mapping["lscr.io/linuxserver/plex:1.41.3"] == "homelab-lab/plex:lab-rehearsal"


def wait_healthy(container: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        container.reload()
        health = container.attrs["State"].get("Health", {}).get("Status")
        if health == "healthy":
            return
        assert container.status == "running", container.logs().decode()
        time.sleep(0.2)
    raise AssertionError(f"{container.name} is not healthy: {container.attrs['State'].get('Health')}")


def exec_text(container: Any, command: str) -> str:
    code, out = container.exec_run(command)
    assert code == 0, out
    return str(out.decode())


@pytest.fixture(scope="module")
def standins(lab: Inventory, client: Any) -> Iterator[dict[str, Any]]:
    """One running container per stand-in, each with a fresh volume per service volume, port on 127.0.0.1."""
    containers: dict[str, Any] = {}
    volumes: list[Any] = []
    try:
        for service in SERVICES:
            svc = lab.services[service]
            mounts = {}
            for path in svc.volumes.values():
                volumes.append(client.volumes.create())
                mounts[volumes[-1].name] = {"bind": path, "mode": "rw"}
            containers[service] = client.containers.run(
                images.lab_tag(lab, service),
                detach=True,
                ports={f"{p.container}/{p.protocol}": ("127.0.0.1", None) for p in svc.ports},
                volumes=mounts,
            )
        for container in containers.values():
            wait_healthy(container)
        yield containers
    finally:
        for container in containers.values():
            container.remove(force=True)
        for volume in volumes:
            volume.remove(force=True)


@pytest.mark.lab
@pytest.mark.parametrize("service", SERVICES)
def test_standin_serves_its_health_path_and_keeps_files(lab: Inventory, standins: dict[str, Any], service: str) -> None:
    svc = lab.services[service]
    container = standins[service]
    assert container.labels[images.LABEL] == service
    assert container.labels[images.IMAGE_LABEL] == svc.image
    port = next(p.container for p in svc.ports if p.protocol == "tcp")
    published = int(container.ports[f"{port}/tcp"][0]["HostPort"])
    path = "/" if svc.health == "tcp" else svc.health
    assert requests.get(f"http://127.0.0.1:{published}{path}", timeout=5).status_code == 200
    socket.create_connection(("127.0.0.1", published), timeout=5).close()

    ids = {p: exec_text(container, f"cat {p}/standin-{service}.id") for p in svc.volumes.values()}
    assert all(len(i) == 32 for i in ids.values()), ids
    container.stop(timeout=10)
    container.reload()
    assert container.attrs["State"]["ExitCode"] != 137, "the stand-in ends on SIGTERM, not killed after the timeout"
    container.start()
    for p, first_id in ids.items():
        assert exec_text(container, f"cat {p}/standin-{service}.id") == first_id
        assert exec_text(container, f"cat {p}/boots.log").count("boot of") == 2


# ---------------------------------------------------------------- status and idempotence


@pytest.mark.lab
def test_status_reports_every_part_up(lab: Inventory) -> None:
    parts = lab_api.status(lab)
    assert [p for p in parts if p.state != "up"] == []
    kinds = [(p.part, p.name) for p in parts]
    assert ("docker", "engine") in kinds
    assert ("proxmox", "fakepve") in kinds
    assert [n for k, n in kinds if k == "ssh"] == [vm.name for vm in lab.vms]
    assert [n for k, n in kinds if k == "image"] == SERVICES


@pytest.mark.lab
def test_a_second_up_reuses_everything(lab: Inventory, client: Any) -> None:
    state_dir = common.lab_settings(lab).state_dir
    before = {k: p.pid for k, p in common.load_state(state_dir).items()}
    image_ids = {s: client.images.get(images.lab_tag(lab, s)).id for s in SERVICES}
    lines: list[str] = []
    parts = lab_api.up(lab, progress=lines.append)
    assert all(p.state == "up" for p in parts)
    assert {k: p.pid for k, p in common.load_state(state_dir).items()} == before
    assert {s: client.images.get(images.lab_tag(lab, s)).id for s in SERVICES} == image_ids
    assert not [line for line in lines if "started" in line or "building" in line], lines


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
    data["ssh"]["port"] = ssh_port
    data["ssh"]["private_key"] = f"file:{state}/ssh/id_ed25519"
    data["ssh"]["public_key"] = str(state / "ssh" / "id_ed25519.pub")
    data["ssh"]["known_hosts"] = str(state / "ssh" / "known_hosts")
    data["k3s"]["kubeconfig"] = str(state / "k3s" / "kubeconfig.yaml")
    for i, vm in enumerate(data["vms"]):
        vm["ip"] = f"127.0.0.{first_ip + i}/8"
    if edit:
        edit(data)
    path = tmp_path / f"{name}.yaml"
    with path.open("w") as f:
        yaml.dump(data, f)
    return path


@pytest.mark.lab
def test_a_second_lab_comes_up_and_goes_down_without_touching_the_first(
    lab: Inventory, client: Any, tmp_path: Path
) -> None:
    two = load_inventory(write_lab_copy(tmp_path))
    state_dir = common.lab_settings(two).state_dir
    try:
        parts = lab_api.up(two, progress=lambda _line: None)
        assert all(p.state == "up" for p in parts)
        assert [p.address for p in parts if p.part == "ssh"] == [f"127.0.0.{21 + i}:2223" for i in range(4)]
        host, port = pve.endpoint(two)
        assert (host, port) == ("127.0.0.3", 8016)
        nodes = {n["node"] for n in proxmox(two, verify=str(pve.ca_path(two))).nodes.get()}
        assert nodes - {"pve1"} == {n.name for n in two.nodes}
        procs = common.load_state(state_dir)
        assert sorted(procs) == ["pve", *sorted(f"sshd/{vm.name}" for vm in two.vms)]

        dead = ["pve", f"sshd/{two.vms[1].name}"]
        for key in dead:
            os.kill(procs[key].pid, signal.SIGKILL)
        assert lab_api.status(two)[1].state == "down"
        lab_api.up(two, progress=lambda _line: None)
        again = common.load_state(state_dir)
        assert [k for k in procs if again[k].pid != procs[k].pid] == dead, "only the dead ones are restarted"
        procs = again

        mine = client.containers.create(images.lab_tag(two, "plex"))
        theirs = client.containers.create(images.lab_tag(lab, "plex"))
    finally:
        lab_api.down(two, progress=lambda _line: None)
    try:
        assert not state_dir.exists()
        assert all(common.cmdline(p.pid) is None for p in procs.values()), "every process of the lab is gone"
        tags = {t for i in client.images.list(filters={"label": images.LABEL}) for t in i.tags}
        assert not [t for t in tags if t.endswith(":lab-rehearsal-two")]
        assert {images.lab_tag(lab, s) for s in SERVICES} <= tags
        assert {images.standin_image(s) for s in SERVICES} <= tags
        with pytest.raises(docker.errors.NotFound):
            client.containers.get(mine.id)
        assert client.containers.get(theirs.id).status == "created"
        assert all(p.state == "up" for p in lab_api.status(lab)), "the session's lab is untouched"
    finally:
        theirs.remove(force=True)
