"""The lab's fakepve launcher (homelab_lab.pve_server): what it adds to fakepve, over the real API.

Each test talks HTTPS to a server the launcher built (proxmoxer's real https backend, or plain
requests), with TLS verified against a lab CA, and reads back what the server itself recorded:
no adapter in between, so nothing here can be the library doing the server's work. The last test
runs the launcher as its own process, started exactly as ``homelab lab up`` starts it.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from proxmoxer import ProxmoxAPI
from proxmoxer.core import ResourceException
from ruamel.yaml import YAML

from homelab_lab import common, pve, pve_server
from homelab_lib import clients, proxmox
from homelab_lib.inventory import load_inventory
from homelab_lib.proxmox.apply import ask_agent
from tests.test_proxmox_fixtures import HOST, LAB_FILE, PASSWORD, TOKEN, Hook, PveLab, lab_inventory, token_id

GIB = 1024**3


def api(lab: PveLab, token: str = TOKEN) -> Any:
    """proxmoxer on lab.yaml's API token, TLS verified against the lab CA."""
    return ProxmoxAPI(
        HOST, port=lab.pve.port, user="root@pam", token_name="homelab", token_value=token, verify_ssl=lab.cafile
    )


def finish(client: Any, node: str, upid: str) -> None:
    """Wait for a task to end (at time_scale 0 it has), and check it ended OK."""
    for _ in range(200):
        task = client.nodes(node).tasks(upid).status.get()
        if task["status"] == "stopped":
            assert task["exitstatus"] == "OK", task
            return
        time.sleep(0.05)
    raise AssertionError(f"task {upid} did not end")


def refused(call: Any, *args: Any, **kwargs: Any) -> ResourceException:
    with pytest.raises(ResourceException) as failed:
        call(*args, **kwargs)
    return failed.value


# ---------------------------------------------------------------- disk resize


def test_a_resize_is_recorded_in_the_vm_config_by_the_server_itself(pve_lab: PveLab) -> None:
    client = api(pve_lab)
    node = client.nodes("drowzee")
    finish(client, "drowzee", node.qemu(9000).clone.post(newid=500, name="scratch", full=1))
    vm = node.qemu(500)
    assert "size=2G" in vm.config.get()["scsi0"]  # the template's disk

    upid = vm.resize.put(disk="scsi0", size="10G")
    assert upid.startswith("UPID:drowzee:")
    assert ":resize:500:" in upid  # a task, as PVE 9 answers it
    finish(client, "drowzee", upid)
    line = vm.config.get()["scsi0"]
    assert line.split(",")[0] == "local-lvm:vm-500-disk-0"
    assert "size=10G" in line.split(",")
    assert "discard=on" in line.split(",")  # the rest of the drive line is kept
    assert vm.pending.get() == [r for r in vm.pending.get() if "pending" not in r]  # written, not pending
    volumes = {c["volid"]: c["size"] for c in node.storage("local-lvm").content.get(vmid=500)}
    assert volumes["local-lvm:vm-500-disk-0"] == 10 * GIB

    finish(client, "drowzee", vm.status.start.post())
    finish(client, "drowzee", vm.resize.put(disk="scsi0", size="+2G"))  # online, relative
    assert "size=12G" in vm.config.get()["scsi0"].split(",")

    shrink = refused(vm.resize.put, disk="scsi0", size="4G")
    assert shrink.status_code == 500
    assert "shrinking disks is not supported" in str(shrink)
    assert "you can't resize a cdrom" in str(refused(vm.resize.put, disk="ide2", size="+1G"))
    assert "disk 'scsi5' does not exist" in str(refused(vm.resize.put, disk="scsi5", size="+1G"))
    pve_lab.pve.snapshot_lock(500)
    assert "VM is locked (snapshot)" in str(refused(vm.resize.put, disk="scsi0", size="+1G"))
    pve_lab.pve.unlock(500)
    assert "size=12G" in vm.config.get()["scsi0"].split(",")  # no refused call changed it


# ---------------------------------------------------------------- guest agent


@pytest.mark.fakepve(time_scale=1.0)  # real time: the agent answers agent_boot_secs seconds after the start
def test_a_clones_guest_agent_answers_its_ipconfig0_address_after_its_boot(pve_lab: PveLab) -> None:
    fake = pve_lab.pve
    client = api(pve_lab)
    node = client.nodes("sleepy")
    finish(client, "sleepy", node.qemu(9001).clone.post(newid=501, name="agent-test", full=1))
    vm = node.qemu(501)
    finish(client, "sleepy", vm.config.post(ipconfig0="ip=127.0.8.51/24,gw=127.0.8.1"))
    assert str(vm.config.get()["agent"]) == "1"  # from the template, as a real clone has it

    assert "VM 501 is not running" in str(refused(vm.agent("network-get-interfaces").get))
    finish(client, "sleepy", vm.status.start.post())
    booting = refused(vm.agent("network-get-interfaces").get)  # the guest is still booting
    assert booting.status_code == 500
    assert "QEMU guest agent is not running" in str(booting)

    fake.vm(501).started_at -= fake.agent_boot_secs  # its boot is over (the fake's clock, not a sleep)
    answer = vm.agent("network-get-interfaces").get()
    mac = fake.vm(501).config["net0"].split(",")[0].partition("=")[2].lower()
    assert [i["name"] for i in answer["result"]] == ["lo", "eth0"]
    eth0 = answer["result"][1]
    assert eth0["hardware-address"] == mac
    assert [a for a in eth0["ip-addresses"] if a["ip-address-type"] == "ipv4"] == [
        {"ip-address": "127.0.8.51", "ip-address-type": "ipv4", "prefix": 24}
    ]
    assert vm.agent.ping.post() == {"result": {}}
    assert vm.agent("get-host-name").get() == {"result": {"host-name": "agent-test"}}
    assert ask_agent(pve_lab.client(), "sleepy", 501, "agent-test") == ["127.0.8.51"]

    finish(client, "sleepy", vm.config.post(agent=0))
    assert "No QEMU guest agent configured" in str(refused(vm.agent.ping.post))
    finish(client, "sleepy", vm.status.stop.post())
    assert "VM 501 is not running" in str(refused(vm.agent.ping.post))


def test_a_guest_without_a_static_address_reports_none_and_answers_set_by_hand_win(pve_lab: PveLab) -> None:
    dhcp = pve_server.interfaces({"net0": "virtio=BC:24:11:00:23:28,bridge=vmbr0", "ipconfig0": "ip=dhcp"})
    assert dhcp[1]["hardware-address"] == "bc:24:11:00:23:28"
    assert [a["ip-address-type"] for a in dhcp[1]["ip-addresses"]] == ["ipv6"]  # link-local only: no DHCP here
    assert dhcp[1]["ip-addresses"][0]["ip-address"] == "fe80::be24:11ff:fe00:2328"

    client = api(pve_lab)
    node = client.nodes("hypno")
    finish(client, "hypno", node.qemu(9002).clone.post(newid=502, name="by-hand", full=1))
    finish(client, "hypno", node.qemu(502).status.start.post())
    given = [{"name": "ens18", "ip-addresses": [{"ip-address": "192.0.2.7", "ip-address-type": "ipv4"}]}]
    pve_lab.pve.vm(502).agent = {"interfaces": given}  # fakepve's own switch still works
    assert node.qemu(502).agent("network-get-interfaces").get() == {"result": given}


# ---------------------------------------------------------------- API tokens


def test_the_labs_api_token_authenticates_and_a_wrong_one_is_refused(pve_lab: PveLab) -> None:
    url = f"{pve_lab.pve.url}/api2/json/nodes"

    def get(authorization: str) -> requests.Response:
        return requests.get(url, headers={"Authorization": authorization}, verify=pve_lab.cafile, timeout=10)

    assert token_id(lab_inventory()) == "root@pam!homelab"
    ok = get(f"PVEAPIToken=root@pam!homelab={TOKEN}")
    assert ok.status_code == 200
    assert sorted(n["node"] for n in ok.json()["data"]) == ["drowzee", "hypno", "nappy", "sleepy"]  # no pve1
    for wrong in ("PVEAPIToken=root@pam!homelab=not-the-secret", f"PVEAPIToken=root@pam!other={TOKEN}"):
        refusal = get(wrong)
        assert refusal.status_code == 401
        assert TOKEN not in refusal.text

    assert [n["node"] for n in api(pve_lab).nodes.get()]
    error = refused(api(pve_lab, token="not-the-secret").nodes.get)
    assert error.status_code == 401
    assert not [p for m, p, _ in pve_lab.pve.requests if p.endswith("/access/ticket")]  # no login: a token


def test_build_serves_only_the_lab_file_it_understands() -> None:
    inv = lab_inventory()
    built = pve_server.build(pve.guests(inv), password=PASSWORD, host=HOST, port=0)
    assert sorted(built.nodes) == sorted(n.name for n in inv.nodes)
    assert [vm.vmid for vm in built.vms] == [9000, 9001, 9002, 9003]
    with pytest.raises(ValueError, match="unknown sections in the lab file: replication"):
        pve_server.build({**pve.guests(inv), "replication": []}, password=PASSWORD, host=HOST, port=0)
    with pytest.raises(ValueError, match="public default"):
        pve_server.build(pve.guests(inv), password="", host=HOST, port=0)


# ---------------------------------------------------------------- the launcher as its own process


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def lab_copy(tmp_path: Path, endpoint: str) -> Path:
    """parameters/lab.yaml with its state (keys, CA, token) under tmp_path and its Proxmox at endpoint."""
    state = tmp_path / "lab"
    yaml = YAML(typ="rt")
    data = yaml.load(LAB_FILE.read_text())
    data["name"] = "rehearsal-pve"
    data["lab"]["state_dir"] = str(state)
    data["proxmox"]["endpoint"] = endpoint
    data["proxmox"]["token_secret"] = f"file:{state}/pve/token"
    data["proxmox"]["password"] = f"file:{state}/pve/password"
    data["proxmox"]["ca_file"] = str(state / "pve" / "ca.pem")
    data["ssh"]["private_key"] = f"file:{state}/ssh/id_ed25519"
    data["ssh"]["public_key"] = str(tmp_path / "id.pub")
    data["ssh"]["known_hosts"] = str(state / "ssh" / "known_hosts")
    data["k3s"]["kubeconfig"] = str(state / "k3s" / "kubeconfig.yaml")
    (tmp_path / "id.pub").write_text(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILauncherTestKey0000000000000000000000 t@lab\n"
    )
    path = tmp_path / "lab.yaml"
    with path.open("w") as f:
        yaml.dump(data, f)
    return path


def test_the_launcher_process_started_as_the_lab_starts_it_serves_what_the_runbooks_need(tmp_path: Path) -> None:
    host = "127.0.8.2"
    inv = load_inventory(lab_copy(tmp_path, f"https://{host}:{free_port(host)}"))
    folder = pve.pve_dir(inv)
    lines: list[str] = []
    try:
        assert pve.start(inv, lines.append)
        pve.wait(inv)
        proc = common.load_state(common.lab_settings(inv).state_dir)[pve.KEY]
        assert proc.argv[1:3] == ["-m", "homelab_lab.pve_server"]
        token_file = folder / "token"
        assert oct(token_file.stat().st_mode)[-3:] == "600"
        secret = token_file.read_text().strip()
        assert secret not in " ".join(proc.argv)
        assert secret not in (folder / "log").read_text()
        status = pve.status(inv)
        assert (status.state, status.name) == ("up", "fakepve")
        assert "token root@pam!homelab" in status.detail

        url = f"https://{host}:{pve.endpoint(inv)[1]}/api2/json/nodes"
        ca = str(pve.ca_path(inv))
        ok = requests.get(
            url, headers={"Authorization": f"PVEAPIToken=root@pam!homelab={secret}"}, verify=ca, timeout=10
        )
        assert sorted(n["node"] for n in ok.json()["data"]) == sorted(n.name for n in inv.nodes)
        bad = requests.get(url, headers={"Authorization": "PVEAPIToken=root@pam!homelab=x"}, verify=ca, timeout=10)
        assert bad.status_code == 401

        client = clients.proxmox_client(inv)
        assert client.auth == "token"
        runbook = proxmox.ProxmoxAdapter(inv, client, only_vms=("docker-drowzee",))
        desired = runbook.desired()
        result = runbook.apply(desired, runbook.plan(desired, runbook.observe(desired)), confirm=True, progress=Hook())
        assert dict(result.facts) == {"docker-drowzee": "127.0.0.11"}  # the launcher's guest agent answered
        again = runbook.plan(desired, runbook.observe(desired))
        assert again.empty, again.table().to_string()  # the resize was recorded by the server
        assert "size=32G" in str(client.get("nodes/drowzee/qemu/110/config")["scsi0"])

        assert not pve.start(inv, lines.append)  # same inputs, answering: reused
    finally:
        pve.stop(inv, lines.append)
    assert not common.is_running(proc)
    assert any(line.startswith("proxmox: stopped fakepve") for line in lines)
