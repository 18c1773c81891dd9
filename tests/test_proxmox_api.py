"""The Proxmox adapter against fakepve over HTTPS (proxmoxer's real https backend; nothing mocked).

Each test serves its own fakepve shaped like the lab (four nodes, a cloud-init
template on each) and checks what the adapter did through the requests the fake
saw and the state it holds.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from fakepve import TaskError
from fakepve.certs import make_cert

from homelab_lib import clients, proxmox
from homelab_lib.core.errors import (
    AgentTimeout,
    ProvisionConflict,
    ProvisionFailed,
    ProxmoxAuthError,
    StalePlan,
    TaskFailed,
    TaskTimeout,
)
from homelab_lib.core.secrets import SecretRef
from homelab_lib.inventory.model import Snippets
from homelab_lib.proxmox import At
from tests.test_proxmox_cloudinit import schema_check
from tests.test_proxmox_fixtures import (
    ALL,
    PASSWORD,
    PUBKEY,
    FakeClock,
    Hook,
    PveLab,
    actions,
    converged,
    fields,
)


def test_first_run_creates_every_vm_and_the_second_makes_no_write_calls(pve_lab: PveLab) -> None:
    _, plan = pve_lab.plan()
    assert actions(plan) == dict.fromkeys(ALL, "create")

    mark = pve_lab.mark()
    dry = pve_lab.apply(confirm=False)
    assert not dry.applied
    assert "dry run: nothing changed (4 create)" in dry.summary()
    assert pve_lab.writes(mark) == []

    hook = Hook()
    result = pve_lab.apply(hook=hook)
    assert result.applied
    assert len(result.steps) == 20  # clone, configure, grow, start, the guest agent's IP
    assert dict(result.facts) == {vm.name: vm.address for vm in pve_lab.inv.vms}
    vm = pve_lab.pve.vm(110)
    assert vm.status == "running"
    assert vm.name == "docker-drowzee"
    assert vm.config["tags"] == "docker;homelab-managed"
    assert vm.config["ipconfig0"] == "ip=127.0.0.11/8,gw=127.0.0.1"
    assert vm.config["sshkeys"] == PUBKEY.replace(" ", "%20").replace("@", "%40")
    assert "size=32G" in vm.config["scsi0"]  # recorded by the server's resize task, as PVE does
    assert str(vm.config["memory"]) == "4096"
    assert proxmox.MARKER in vm.config["description"]
    steps = [(m, p.rsplit("/qemu/", 1)[-1]) for m, p in pve_lab.writes(mark) if "/qemu/110" in p or "/9000/" in p]
    assert steps == [
        ("POST", "9000/clone"),
        ("POST", "110/config"),
        ("PUT", "110/resize"),
        ("POST", "110/status/start"),
    ]
    assert "docker-drowzee: done 127.0.0.11" in hook.lines

    mark = pve_lab.mark()
    desired, again = pve_lab.plan()
    assert again.empty
    assert again.summary() == "4 no-op"
    second = pve_lab.apply()
    assert not second.applied
    assert second.summary().startswith("nothing to do")
    assert pve_lab.writes(mark) == []

    report = proxmox.vm_status(pve_lab.client(), desired)
    assert [(r.name, r.node, r.vmid, r.status, r.ip, r.ip_source, r.disk_gib) for r in report] == [
        ("docker-drowzee", "drowzee", 110, "running", "127.0.0.11", "agent", 32),
        ("docker-sleepy", "sleepy", 120, "running", "127.0.0.12", "agent", 32),
        ("docker-hypno", "hypno", 130, "running", "127.0.0.13", "agent", 32),
        ("k3s-nappy", "nappy", 140, "running", "127.0.0.14", "agent", 64),
    ]
    assert not [p for m, p, _ in pve_lab.pve.requests if p.endswith("/access/ticket")]  # the API token only


def test_nodes_are_worked_on_concurrently_within_the_bound(pve_lab: PveLab) -> None:
    active, peak, lock = 0, 0, threading.Lock()
    barrier = threading.Barrier(2, timeout=10)

    def on(vm: str, note: str) -> None:
        nonlocal active, peak
        if note.startswith("cloned"):  # a VM's first step ended: it is in progress
            with lock:
                active += 1
                peak = max(peak, active)
            if vm in ("docker-drowzee", "docker-sleepy"):
                barrier.wait()  # passes only if two nodes are worked on at the same time
            time.sleep(0.05)
        if note == "started":  # its last step
            with lock:
                active -= 1

    pve_lab.use(max_parallel=2)
    pve_lab.apply(hook=Hook(on))
    assert peak == 2  # concurrent, and never more than max_parallel nodes at once
    assert not barrier.broken


def test_update_changes_only_what_differs_and_never_restarts(pve_lab: PveLab) -> None:
    pve_lab.apply()
    vms = [
        vm.model_copy(
            update={
                "cores": 3,
                "memory_mib": 6144,
                "disk_gib": 40,
                "onboot": False,
                "tags": ["arr"],
                "description": "x",
            }
        )
        if vm.name == "docker-sleepy"
        else vm
        for vm in pve_lab.inv.vms
    ]
    pve_lab.use(vms=vms)
    _, plan = pve_lab.plan()
    assert actions(plan) == {**dict.fromkeys(ALL, "no-op"), "docker-sleepy": "update"}
    assert fields(plan, "docker-sleepy") == {"cores", "memory", "disk_gib", "onboot", "tags", "description"}
    mark = pve_lab.mark()
    pve_lab.apply()
    assert [(m, p.rsplit("/qemu/", 1)[-1]) for m, p in pve_lab.writes(mark)] == [
        ("POST", "120/config"),
        ("PUT", "120/resize"),
    ]
    vm = pve_lab.pve.vm(120)
    assert vm.status == "running"
    assert "size=40G" in vm.config["scsi0"]  # grown online: not pending, as PVE does it
    assert str(vm.pending["cores"]) == "3"
    _, after = pve_lab.plan()
    change = next(c for c in after.changes if c.target == "docker-sleepy")
    assert change.action.value == "no-op"
    assert "pending until the VM reboots" in change.reason
    converged(pve_lab)


def test_a_stopped_vm_is_started_and_a_bridge_change_keeps_the_mac(pve_lab: PveLab) -> None:
    pve_lab.apply()
    pve_lab.pve.vm(130).status = "stopped"
    mac = pve_lab.pve.vm(130).config["net0"].split(",")[0]
    pve_lab.use(bridge="vmbr1")
    _, plan = pve_lab.plan()
    assert fields(plan, "docker-hypno") == {"bridge", "status"}
    assert fields(plan, "docker-drowzee") == {"bridge"}
    pve_lab.apply()
    vm = pve_lab.pve.vm(130)
    assert vm.status == "running"
    assert vm.config["net0"] == f"{mac},bridge=vmbr1"
    converged(pve_lab)


def test_decommission_needs_confirm_allow_delete_and_the_tag(pve_lab: PveLab) -> None:
    pve_lab.apply()
    pve_lab.pve.add_vm(300, "nas", node="hypno", status="running", config={"memory": 2048})
    pve_lab.use(vms=[vm for vm in pve_lab.inv.vms if vm.name != "docker-hypno"])
    _, plan = pve_lab.plan()
    assert actions(plan) == {"docker-drowzee": "no-op", "docker-sleepy": "no-op", "k3s-nappy": "no-op",
                             "docker-hypno": "delete"}  # fmt: skip
    mark = pve_lab.mark()
    kept = pve_lab.apply(allow_delete=False)
    assert kept.not_done == ("docker-hypno: delete needs allow_delete=True",)
    assert pve_lab.writes(mark) == []
    assert pve_lab.pve.vm(130) is not None
    assert not pve_lab.apply(confirm=False, allow_delete=True).applied
    assert pve_lab.writes(mark) == []
    pve_lab.apply(allow_delete=True)
    assert pve_lab.writes(mark) == [("POST", "/api2/json/nodes/hypno/qemu/130/status/stop"),
                                    ("DELETE", "/api2/json/nodes/hypno/qemu/130")]  # fmt: skip
    assert pve_lab.pve.vm(130) is None
    assert pve_lab.pve.vm(300).status == "running"  # the unmanaged VM is never touched
    assert not [r for r in pve_lab.pve.requests if "/qemu/300" in r[1]]
    converged(pve_lab)


def test_a_stale_plan_is_refused_before_any_change(pve_lab: PveLab) -> None:
    pve_lab.apply()
    pve_lab.use(vms=[vm.model_copy(update={"cores": 1}) for vm in pve_lab.inv.vms])
    desired, plan = pve_lab.plan()
    pve_lab.pve.vm(110).config["cores"] = 1  # someone changes the cluster after the plan was shown
    mark = pve_lab.mark()
    with pytest.raises(StalePlan, match=r"the cluster changed since the plan was made \(for docker-drowzee\)") as e:
        pve_lab.adapter().apply(desired, plan, confirm=True, progress=Hook())
    assert e.value.moved == (
        "~ vm docker-drowzee (drowzee): was update (cores: 2 -> 1); now no-op",
    )  # what moved, named
    assert pve_lab.writes(mark) == []


def test_linked_clones_and_a_template_on_another_node(pve_lab: PveLab) -> None:
    pve_lab.use(clone="linked", vms=[pve_lab.inv.vm("docker-drowzee")])
    mark = pve_lab.mark()
    pve_lab.apply()
    clone = next(body for m, p, body in pve_lab.pve.requests[mark:] if p.endswith("/clone"))
    assert b"full=0" in clone
    assert b"storage=" not in clone
    assert "vm-110-disk" in pve_lab.pve.vm(110).config["scsi0"]

    pve_lab.pve.vms = [v for v in pve_lab.pve.vms if v.vmid not in (9001, 9002, 9003)]
    pve_lab.use(clone="full", vms=[pve_lab.base.vm("docker-sleepy")])
    _, plan = pve_lab.plan()
    assert "storage 'local-lvm' is not shared" in plan.changes[0].reason  # PVE cannot clone across nodes to it
    pve_lab.pve.storages["nfs-images"] = {
        "type": "nfs", "server": "192.0.2.5", "export": "/images", "path": "/mnt/pve/nfs-images",
        "content": "images", "shared": 1, "active": 1, "files": set(),
    }  # fmt: skip
    pve_lab.use(clone="full", storage="nfs-images", vms=[pve_lab.base.vm("docker-sleepy")])
    mark = pve_lab.mark()
    pve_lab.apply()
    (path, body) = next((p, b) for m, p, b in pve_lab.pve.requests[mark:] if p.endswith("/clone"))
    assert path.endswith("/nodes/drowzee/qemu/9000/clone")
    assert b"target=sleepy" in body
    assert pve_lab.pve.vm(120).node == "sleepy"


def test_role_user_data_is_written_as_a_snippet_and_referenced(pve_lab: PveLab, tmp_path: Path) -> None:
    folder = tmp_path / "snippets"
    pve_lab.use(snippets=Snippets(storage="local", write="local", dir=str(folder)))
    desired, _ = pve_lab.plan()
    pve_lab.apply()
    for vm in desired.vms:
        assert pve_lab.pve.vm(vm.vmid).config["cicustom"] == f"user=local:snippets/{vm.snippet}"
        written = (folder / vm.snippet).read_text()
        assert written == vm.user_data
        schema_check(written, tmp_path / f"check-{vm.name}.yaml")
    converged(pve_lab)
    vms = [vm.model_copy(update={"packages": ["htop"]}) if vm.role == "k3s" else vm for vm in pve_lab.inv.vms]
    pve_lab.use(vms=vms, snippets=Snippets(storage="local", write="local", dir=str(folder)))
    _, plan = pve_lab.plan()
    assert actions(plan)["k3s-nappy"] == "update"
    assert fields(plan, "k3s-nappy") == {"cicustom"}
    converged(pve_lab)
    assert len(list(folder.glob("homelab-k3s-nappy-*.yaml"))) == 2


def test_guest_agent_ip_is_reported_and_a_silent_agent_is_an_error_naming_the_vm(pve_lab: PveLab) -> None:
    pve = pve_lab.pve

    def silence(vm: str, note: str) -> None:
        if vm == "k3s-nappy" and note.startswith("cloned"):
            pve.vm(140).agent_hangs = True  # its agent runs but never answers (fakepve's fault switch)

    pve_lab.use(agent_timeout_s=120)
    clock = FakeClock()
    with pytest.raises(ProvisionFailed) as failed:
        pve_lab.apply(hook=Hook(silence), clock=clock)
    error = failed.value.failures[0]
    assert isinstance(error, AgentTimeout)
    assert str(error).startswith("VM k3s-nappy (140), node nappy: the QEMU guest agent reported no IPv4 address")
    assert clock.slept >= 120  # the fake clock: two minutes of waiting took no time
    assert "docker-hypno: guest agent reports 127.0.0.13" in failed.value.done
    desired, _ = pve_lab.plan()
    report = {r.name: (r.ip, r.ip_source) for r in proxmox.vm_status(pve_lab.client(), desired)}
    assert report == {"docker-drowzee": ("127.0.0.11", "agent"), "docker-sleepy": ("127.0.0.12", "agent"),
                      "docker-hypno": ("127.0.0.13", "agent"), "k3s-nappy": ("-", "-")}  # fmt: skip
    asked = [r for r in pve.requests if r[1].endswith("/agent/network-get-interfaces")]
    assert asked
    assert {m for m, _, _ in asked} == {"GET"}


def test_api_token_auth_and_the_secret_never_shows(pve_lab: PveLab, tmp_path: Path) -> None:
    token = "0f4e9a8b-tok3n-5ec12e7-value"
    pve_lab.pve.apitokens["automation@pve!homelab"] = token
    (tmp_path / "token").write_text(token + "\n")
    ref = SecretRef("file", str(tmp_path / "token"))
    inv = pve_lab.use(user="automation@pve", token_id="homelab", token_secret=ref, password=None)
    client = clients.proxmox_client(inv)
    assert token not in repr(client)
    assert "automation@pve!homelab" in repr(client)
    mark = pve_lab.mark()
    pve_lab.apply(only_vms=("docker-drowzee",))
    assert not [p for m, p, _ in pve_lab.pve.requests[mark:] if p.endswith("/access/ticket")]
    assert pve_lab.pve.vm(110).status == "running"

    (tmp_path / "token").write_text("wrong-token-value\n")
    mark = pve_lab.mark()
    with pytest.raises(ProxmoxAuthError) as refused:
        pve_lab.plan()
    text = _all_text(refused.value)
    assert "refused the credentials of automation@pve!homelab" in text
    assert "token_id" in text
    assert token not in text
    assert "wrong-token-value" not in text
    assert pve_lab.writes(mark) == []


def test_wrong_password_wrong_ca_and_missing_ca_each_fail_before_any_change(pve_lab: PveLab, tmp_path: Path) -> None:
    (tmp_path / "bad-pw").write_text("not-the-password\n")
    pve_lab.use(token_id=None, password=SecretRef("file", str(tmp_path / "bad-pw")))
    with pytest.raises(ProxmoxAuthError, match="refused the login of root@pam") as refused:
        pve_lab.plan()
    assert "not-the-password" not in _all_text(refused.value)
    assert PASSWORD not in _all_text(refused.value)

    other_ca, _, _ = make_cert(str(tmp_path), name="other", hosts=("127.0.0.1",))
    pve_lab.use(ca_file=Path(other_ca))
    with pytest.raises(ProxmoxAuthError, match=r"did not verify against the CA file .*other\.crt") as bad_ca:
        pve_lab.plan()
    assert "proxmox.ca_file" in str(bad_ca.value)

    pve_lab.use(ca_file=tmp_path / "missing.pem")
    with pytest.raises(ProxmoxAuthError, match=r"the CA file .*missing\.pem does not exist"):
        pve_lab.plan()
    assert pve_lab.writes() == []


def test_unknown_template_vmid_clash_and_over_capacity_each_one_error_before_any_change(pve_lab: PveLab) -> None:
    pve_lab.use(template="debian-13-nope")
    with pytest.raises(ProvisionConflict) as unknown:
        pve_lab.apply()
    assert len(unknown.value.conflicts) == 4
    assert "template 'debian-13-nope' not found on any online node" in str(unknown.value)
    assert "templates seen: debian-12-cloudinit (9000, drowzee)" in str(unknown.value)

    pve_lab.use(template="debian-12-cloudinit")
    pve_lab.pve.add_vm(120, "media-server", node="sleepy", status="running", config={"memory": 1024})
    with pytest.raises(ProvisionConflict) as clash:
        pve_lab.apply()
    assert "vm docker-sleepy (sleepy): vmid 120 is held by VM 'media-server'" in str(clash.value)

    pve_lab.pve.vm(120).vmid = 320
    pve_lab.pve.add_vm(321, "big-db", node="drowzee", status="running", config={"memory": 12288, "cores": 2})
    with pytest.raises(ProvisionConflict) as full:
        pve_lab.apply()
    assert "node drowzee (drowzee): over capacity: memory 16384 MiB > 14336 MiB" in str(full.value)
    assert pve_lab.writes() == []


def test_task_waiter_raises_on_task_error_and_on_timeout_never_returns_none(pve_lab: PveLab) -> None:
    pve = pve_lab.pve
    client = pve_lab.client()
    client.get("version")  # log in

    async def failing() -> None:
        raise TaskError("unable to create VM 999 - no space left on device")

    upid = asyncio.run(pve.task("nappy", "qmcreate", 999, "root@pam", failing, log=["starting", "allocating"]))
    at = At("nappy", 999, "scratch")
    with pytest.raises(TaskFailed) as failed:
        proxmox.wait_task(client, upid, at=at, what="create", timeout_s=5, clock=FakeClock())
    assert failed.value.log_tail == (
        "starting",
        "allocating",
        "unable to create VM 999 - no space left on device",
        "TASK ERROR: unable to create VM 999 - no space left on device",
    )
    text = str(failed.value)
    assert text.startswith("VM scratch (999), node nappy: create failed: unable to create VM 999")
    assert "the storage is full" in text
    assert "TASK ERROR:" in text

    async def warns() -> None:
        raise TaskError("WARNINGS: 1")

    upid = asyncio.run(pve.task("nappy", "qmstart", 999, "root@pam", warns))
    assert proxmox.wait_task(client, upid, at=at, what="start", timeout_s=5, clock=FakeClock()).exitstatus.startswith(
        "WARNINGS"
    )

    async def hangs() -> None:
        await asyncio.sleep(60)

    pve.time_scale = 1.0  # the task runs in the background; its loop ends before it does, so it stays running
    running = asyncio.run(pve.task("nappy", "qmstart", 999, "root@pam", hangs))
    pve.time_scale = 0
    assert pve.tasks[running]["status"] == "running"
    clock = FakeClock()
    with pytest.raises(TaskTimeout, match=r"start did not finish within 30 s") as late:
        proxmox.wait_task(client, running, at=at, what="start", timeout_s=30, clock=clock)
    assert late.value.upid == running
    assert "may still be running" in str(late.value)
    assert 30 <= clock.seconds < 32


def _all_text(e: BaseException) -> str:
    """An exception's text with its whole chain (what a traceback would show)."""
    parts = []
    seen: BaseException | None = e
    while seen is not None:
        parts.append(f"{type(seen).__name__}: {seen} {seen!r}")
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)
