"""Proxmox tasks: wait for a UPID to end, raise on ``TASK ERROR`` and on timeout.

proxmoxer's own helper returns None on timeout; this one never does: a task
either ended OK (or with warnings), or the waiter raises :class:`TaskFailed`
with the last lines of the task log, or :class:`TaskTimeout` naming the task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from homelab_lib.clients.proxmox import At, ProxmoxClient
from homelab_lib.core.clock import Clock
from homelab_lib.core.errors import TaskFailed, TaskTimeout

LOG_TAIL = 8


@dataclass(frozen=True)
class Upid:
    """The parts of a task id ``UPID:node:pid:pstart:starttime:type:id:user:``."""

    upid: str
    node: str
    type: str
    id: str

    @classmethod
    def parse(cls, text: str) -> Upid:
        """Decode a UPID.

        Raises:
            ValueError: text is not a UPID.
        """
        parts = text.split(":")
        if len(parts) < 9 or parts[0] != "UPID":
            raise ValueError(f"not a task id (UPID): {text!r}")
        return cls(text, parts[1], parts[5], parts[6])


@dataclass(frozen=True)
class TaskResult:
    """A task that ended well.

    Attributes:
        upid: its id.
        node: where it ran.
        type: its kind (``qmclone``, ``qmstart``...).
        exitstatus: ``OK`` or ``WARNINGS: n``.
        seconds: how long the wait took.
    """

    upid: str
    node: str
    type: str
    exitstatus: str
    seconds: float


def is_upid(value: Any) -> bool:
    """True if an API answer is a task id."""
    return isinstance(value, str) and value.startswith("UPID:")


def wait_task(
    client: ProxmoxClient,
    upid: str,
    *,
    at: At,
    what: str,
    timeout_s: float,
    clock: Clock,
    first_poll_s: float = 0.02,
    max_poll_s: float = 1.0,
) -> TaskResult:
    """Poll a task until it ends.

    Args:
        client: the API.
        upid: the task's id, as the request that started it answered.
        at: the node, vmid and VM the task is about (for errors).
        what: the step in words, e.g. ``clone from template 9000``.
        timeout_s: how long to wait.
        clock: the clock to wait by.
        first_poll_s: the first pause between polls; it grows by half each poll up to max_poll_s.
        max_poll_s: the longest pause.

    Returns:
        The task's result (exit status ``OK`` or ``WARNINGS: n``).

    Raises:
        TaskFailed: the task ended with an error; carries the task log's last lines.
        TaskTimeout: the task had not ended after timeout_s; it may still be running.
        ProxmoxError: the status could not be read.
    """
    task = Upid.parse(upid)
    start = clock.monotonic()
    pause = first_poll_s
    path = f"nodes/{task.node}/tasks/{upid}"
    while True:
        status = client.get(f"{path}/status", at)
        if status.get("status") == "stopped":
            exit_status = str(status.get("exitstatus") or "")
            seconds = clock.monotonic() - start
            if exit_status == "OK" or exit_status.startswith("WARNINGS"):
                return TaskResult(upid, task.node, task.type, exit_status, seconds)
            lines = client.get(f"{path}/log", at, start=0, limit=10000) or []
            tail = tuple(str(line.get("t", "")) for line in lines[-LOG_TAIL:])
            raise TaskFailed(
                f"{what} failed: {exit_status or 'unknown error'}",
                upid=upid,
                log_tail=tail,
                node=at.node or task.node,
                vmid=at.vmid,
                vm=at.vm,
                pve_message=exit_status,
                hint=_hint(exit_status),
            )
        waited = clock.monotonic() - start
        if waited >= timeout_s:
            raise TaskTimeout(
                f"{what} did not finish within {timeout_s:g} s (task {upid})",
                upid=upid,
                node=at.node or task.node,
                vmid=at.vmid,
                vm=at.vm,
                hint="it may still be running: see the node's Tasks panel; run again once it has ended "
                "(raise proxmox.task_timeout_s for slow storage)",
            )
        clock.sleep(min(pause, max(timeout_s - waited, 0.0)))
        pause = min(pause * 1.5, max_poll_s)


def _hint(exit_status: str) -> str:
    low = exit_status.lower()
    if "locked" in low or "can't lock" in low:
        return "another task holds the VM (backup, snapshot, clone); wait for it, or `qm unlock VMID` if stale"
    if "no space" in low:
        return "the storage is full; free space or choose another proxmox.storage"
    return "read the task log above (also in the node's Tasks panel), fix the cause, then run again"
