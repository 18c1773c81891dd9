"""Faults mid-run, each from a fakepve fault switch: the run stops with an error naming the VM, the
node and the cause; nothing already made is forgotten; the next plan shows exactly what is left,
and a clean re-run converges (its next plan all no-ops, with no write calls).

Faults are injected at a known step through the progress hook (the step just reported done).
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from fakepve import FakePve

from homelab_lib.core.errors import (
    NodeUnreachable,
    PermissionDenied,
    ProvisionConflict,
    ProvisionFailed,
    QuorumLost,
    TaskFailed,
    TaskTimeout,
)
from tests.test_proxmox_fixtures import (
    ALL,
    FakeClock,
    Hook,
    PveLab,
    actions,
    converged,
    fields,
)

# What a fresh clone of the lab's template still lacks for docker-sleepy: everything after "clone".
AFTER_CLONE = {
    "memory", "disk_gib", "onboot", "tags", "ciuser", "sshkeys", "ipconfig0", "nameserver", "searchdomain", "status",
}  # fmt: skip


def cloned(failure: ProvisionFailed) -> set[str]:
    return {line.split(":")[0] for line in failure.done if ": cloned from template" in line}


def test_locked_vm(pve_lab: PveLab) -> None:
    pve_lab.apply()
    pve_lab.use(vms=[vm.model_copy(update={"cores": 3}) for vm in pve_lab.inv.vms])
    pve_lab.pve.snapshot_lock(120)  # an interrupted snapshot left docker-sleepy locked
    _, plan = pve_lab.plan()
    assert "locked (snapshot)" in next(c.reason for c in plan.changes if c.target == "docker-sleepy")
    with pytest.raises(ProvisionFailed) as failed:
        pve_lab.apply()
    (error,) = failed.value.failures
    assert isinstance(error, TaskFailed)
    assert str(error).startswith("VM docker-sleepy (120), node sleepy: configure failed: VM is locked (snapshot)")
    assert "qm unlock" in str(error)
    assert "TASK ERROR: VM is locked (snapshot)" in error.log_tail
    _, left = pve_lab.plan()
    assert actions(left)["docker-sleepy"] == "update"
    assert fields(left, "docker-sleepy") == {"cores"}
    pve_lab.pve.unlock(120)
    converged(pve_lab)


def test_task_error_on_start(pve_lab: PveLab) -> None:
    pve_lab.pve.fail("POST", "/nodes/hypno/qemu/130/status/start", error="start_failed", times=1)
    with pytest.raises(ProvisionFailed) as failed:
        pve_lab.apply()
    (error,) = failed.value.failures
    assert isinstance(error, TaskFailed)
    assert error.upid.startswith("UPID:hypno:")
    assert str(error).startswith("VM docker-hypno (130), node hypno: start failed: start failed: unexpected error")
    assert error.log_tail[-1] == "TASK ERROR: start failed: unexpected error"
    _, left = pve_lab.plan()  # everything else was done: only the start is left
    assert actions(left) == {**dict.fromkeys(ALL, "no-op"), "docker-hypno": "update"}
    assert fields(left, "docker-hypno") == {"status"}
    converged(pve_lab)


def test_offline_node_mid_run(pve_lab: PveLab) -> None:
    def unplug(vm: str, note: str) -> None:
        if vm == "docker-sleepy" and note.startswith("cloned"):
            pve_lab.pve.set_node_offline("sleepy")

    pve_lab.use(max_parallel=1)  # one node after the other: the steps before the fault are known
    with pytest.raises(ProvisionFailed) as failed:
        pve_lab.apply(hook=Hook(unplug))
    (error,) = failed.value.failures
    assert isinstance(error, NodeUnreachable)
    assert str(error).startswith("VM docker-sleepy (120), node sleepy: GET /nodes/sleepy/qemu/120/pending failed")
    assert "No route to host" in str(error)
    assert "offline or unreachable" in str(error)
    assert failed.value.skipped == ["docker-hypno", "k3s-nappy"]
    _, waiting = pve_lab.plan()  # while it is down, the plan says so, and apply changes nothing
    assert "node sleepy is offline" in next(c.reason for c in waiting.changes if c.target == "docker-sleepy")
    mark = pve_lab.mark()
    with pytest.raises(ProvisionConflict):
        pve_lab.apply()
    assert pve_lab.writes(mark) == []
    pve_lab.pve.set_node_offline("sleepy", False)
    _, left = pve_lab.plan()
    assert actions(left) == {"docker-drowzee": "no-op", "docker-sleepy": "update", "docker-hypno": "create",
                             "k3s-nappy": "create"}  # fmt: skip
    assert fields(left, "docker-sleepy") == AFTER_CLONE  # the clone is known as ours (its description)
    converged(pve_lab)


def test_lost_quorum_mid_run_and_before_a_run(pve_lab: PveLab) -> None:
    def split_brain(vm: str, note: str) -> None:
        if vm == "docker-hypno" and note.startswith("configured"):
            pve_lab.pve.lose_quorum()

    with pytest.raises(ProvisionFailed) as failed:
        pve_lab.apply(hook=Hook(split_brain))
    errors = failed.value.failures
    assert errors
    assert all(isinstance(e, QuorumLost) for e in errors)
    assert any(str(e).startswith("VM docker-hypno (130), node hypno: ") for e in errors)
    assert "cluster not ready - no quorum?" in str(failed.value)
    assert "pvecm status" in str(failed.value)
    made = cloned(failed.value)
    assert "docker-hypno" in made

    mark = pve_lab.mark()
    with pytest.raises(ProvisionConflict, match="the cluster has no quorum"):
        pve_lab.apply()  # before a run: one clear error, nothing sent
    assert pve_lab.writes(mark) == []
    pve_lab.pve.regain_quorum()
    _, left = pve_lab.plan()
    for vm in ALL:  # nothing made is forgotten: what was cloned is updated, never cloned again
        assert actions(left)[vm] in (("update", "no-op") if vm in made else ("create",))
    assert "status" in fields(left, "docker-hypno")
    converged(pve_lab)


HELD = 424_242  # start_secs that marks the start held until the test opens the gate


def hold_marked_starts(pve: FakePve, gate: threading.Event) -> None:
    """Make a start whose start_secs is HELD last until gate is set (not a time: the test decides)."""
    pause = pve.pause

    async def held(secs: float) -> None:
        while secs == HELD and not gate.is_set():
            await asyncio.sleep(0.01)
        if secs != HELD:
            await pause(secs)

    pve.pause = held


@pytest.mark.fakepve(time_scale=0.01)  # tasks run in the background (0 would finish them inside the request)
def test_slow_task_times_out_then_converges(pve_lab: PveLab) -> None:
    gate = threading.Event()
    hold_marked_starts(pve_lab.pve, gate)

    def slow_boot(vm: str, note: str) -> None:
        if vm == "k3s-nappy" and note.startswith("cloned"):
            pve_lab.pve.vm(140).start_secs = HELD

    # The waits run on a FakeClock: each poll's pause moves its time on at once, so the 1 s timeout is
    # reached after ten polls, while the held start cannot end, however loaded the machine is; the
    # other tasks take no PVE time and have ended by their first poll.
    clock = FakeClock()
    pve_lab.use(task_timeout_s=1.0)
    with pytest.raises(ProvisionFailed) as failed:
        pve_lab.apply(hook=Hook(slow_boot), clock=clock)
    (error,) = failed.value.failures
    assert isinstance(error, TaskTimeout)
    assert ":qmstart:140:" in error.upid
    assert str(error).startswith("VM k3s-nappy (140), node nappy: start did not finish within 1 s")
    assert "it may still be running" in str(error)
    assert clock.slept >= 1.0
    assert pve_lab.pve.tasks[error.upid]["status"] == "running"
    gate.set()  # the start ends, late
    deadline = time.monotonic() + 60
    while pve_lab.pve.tasks[error.upid]["status"] != "stopped":
        assert time.monotonic() < deadline, "the held start never ended"
        time.sleep(0.02)
    assert pve_lab.pve.tasks[error.upid]["exitstatus"] == "OK"
    _, left = pve_lab.plan()  # the start did finish: nothing is left
    assert left.empty
    converged(pve_lab)


def test_expired_ticket_is_renewed_once(pve_lab: PveLab) -> None:
    def expire(vm: str, note: str) -> None:
        if vm == "docker-drowzee" and note.startswith("cloned"):
            pve_lab.pve.revoke_tickets()  # as after PVE's two hours, or a restarted pveproxy

    pve_lab.use(max_parallel=1, token_id=None)  # the password login: tickets
    mark = pve_lab.mark()
    pve_lab.apply(hook=Hook(expire))
    logins = [p for m, p, _ in pve_lab.pve.requests[mark:] if p.endswith("/access/ticket")]
    assert len(logins) == 2  # one client for plan and apply (as the notebook has), and one renewal
    unauthorised = [r for r in pve_lab.pve.requests[mark:] if "/qemu/110/pending" in r[1]]
    assert len(unauthorised) >= 2  # refused once, then sent again with the new ticket
    converged(pve_lab)


def test_forbidden_path(pve_lab: PveLab) -> None:
    pve_lab.pve.fail("POST", "/nodes/nappy/qemu/140/status/start", error="permission_denied")
    with pytest.raises(ProvisionFailed) as failed:
        pve_lab.apply()
    (error,) = failed.value.failures
    assert isinstance(error, PermissionDenied)
    assert error.status == 403
    assert str(error).startswith(
        "VM k3s-nappy (140), node nappy: POST /nodes/nappy/qemu/140/status/start was refused: "
        "Permission check failed (/vms/140, VM.PowerMgmt)"
    )
    assert "grant root@pam!homelab the privilege named above" in str(error)  # lab.yaml's API token
    _, left = pve_lab.plan()
    assert actions(left) == {**dict.fromkeys(ALL, "no-op"), "k3s-nappy": "update"}
    assert fields(left, "k3s-nappy") == {"status"}
    pve_lab.pve.failures.clear()
    converged(pve_lab)
