"""Carry out a vzdump plan: create or fix the backup job, then take each missing backup.

:func:`carry_out` is the vzdump adapter's part of the runbook contract
(:class:`homelab_lib.backup.vzdump.runbook.ProxmoxBackupAdapter`): the contract has already checked
the approval and ``confirm``, and has read the cluster again and found it as the plan says. Backups
are taken one vzdump task at a time, each waited on; a failed backup does not stop the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType

from homelab_lib.backup.vzdump.state import ERROR_LINE, JOB, Desired, Observed
from homelab_lib.clients.proxmox import At, ProxmoxClient
from homelab_lib.clients.tasks import wait_task
from homelab_lib.core.clock import Clock
from homelab_lib.core.contract import DONE, FAILED, Carried, Outcome
from homelab_lib.core.errors import BackupFailed, HomelabError, TaskFailed, VzdumpFailed
from homelab_lib.core.plan import Action, Change
from homelab_lib.core.progress import Progress


def _apply_job(client: ProxmoxClient, change: Change) -> str:
    values = {f.name: f.new for f in change.fields}
    if change.action == Action.CREATE:
        client.post("cluster/backup", id=change.target, **{k: v for k, v in values.items() if v is not None})
        return f"backup job {change.target} created ({values.get('vmid') or 'all'})"
    sets = {k: v for k, v in values.items() if v is not None}
    deletes = sorted(k for k, v in values.items() if v is None)
    if deletes:
        sets["delete"] = ",".join(deletes)
    client.put(f"cluster/backup/{change.target}", **sets)
    return f"backup job {change.target} updated: " + "; ".join(str(f) for f in change.fields)


def vzdump(
    client: ProxmoxClient,
    desired: Desired,
    *,
    vm: str,
    vmid: int,
    node: str,
    clock: Clock,
) -> str:
    """Back up one VM now (a vzdump task on its node, to the job's storage), and wait for it.

    Returns:
        The task's UPID.

    Raises:
        VzdumpFailed: the task ended in error; carries its log's last lines.
        TaskTimeout: it did not end within ``proxmox.task_timeout_s``.
        ProxmoxError: the request was refused.
    """
    spec = desired.job
    at = At(node=node, vmid=vmid, vm=vm)
    upid = str(
        client.post(
            f"nodes/{node}/vzdump",
            at,
            vmid=str(vmid),
            storage=spec.storage,
            mode=spec.mode,
            compress="zstd",
            **{"notes-template": spec.notes_template, "prune-backups": spec.prune_backups},
        )
    )
    try:
        wait_task(client, upid, at=at, what=f"vzdump of VM {vmid}", timeout_s=desired.task_timeout_s, clock=clock)
    except TaskFailed as e:
        errors = [line for line in e.log_tail if ERROR_LINE.match(line)]
        raise VzdumpFailed(
            f"the backup of VM {vmid} to {spec.storage} failed: {e.pve_message or 'unknown error'}",
            upid=e.upid,
            log_tail=e.log_tail,
            node=node,
            vmid=vmid,
            vm=vm,
            pve_message=(ERROR_LINE.sub(r"\2", errors[-1]) if errors else e.pve_message),
            hint="read the task log above (also in the node's Tasks panel): storage full or offline, VM locked; "
            "fix it, then run again",
        ) from e
    return upid


def carry_out(
    client: ProxmoxClient,
    desired: Desired,
    observed: Observed,
    todo: Sequence[Change],
    *,
    progress: Progress,
    clock: Clock,
) -> Carried:
    """Create or fix the job, then take each missing backup, one vzdump task at a time.

    A failed backup does not stop the others.

    Raises:
        BackupFailed: one or more changes failed; carries each error and what was done.
    """
    outcomes: list[Outcome] = []
    steps: list[str] = []
    failures: list[HomelabError] = []
    facts: dict[str, str] = {}
    bar = progress.task("backups (vzdump)", len(todo))
    for change in sorted(todo, key=lambda c: c.order):
        start = clock.monotonic()
        try:
            if change.kind == JOB:
                steps.append(_apply_job(client, change))
            else:
                guest = observed.guest(int(next(f.new for f in change.fields if f.name == "vmid")))
                assert guest is not None  # the plan makes a vzdump change only for a VM in the cluster
                upid = vzdump(client, desired, vm=change.target, vmid=guest.vmid, node=guest.node, clock=clock)
                facts[change.target] = upid
                steps.append(f"{change.target}: backed up to {desired.job.storage} ({upid})")
        except HomelabError as e:
            failures.append(e)
            outcomes.append(Outcome.of(change, FAILED, str(e).splitlines()[0], clock.monotonic() - start))
            bar.advance(f"{change.target}: FAILED")
            continue
        outcomes.append(Outcome.of(change, DONE, seconds=clock.monotonic() - start))
        bar.advance(change.target)
    bar.done()
    if failures:
        raise BackupFailed(failures, steps, where="proxmox backups")
    return Carried(tuple(outcomes), tuple(steps), MappingProxyType(facts))
