"""The inventory's backup policy in Proxmox's terms: the vzdump job and each VM's RPO."""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING

from homelab_lib.backup.vzdump.state import WINDOW_HOURS, Desired, JobSpec, VzdumpTarget
from homelab_lib.core.errors import BackupError

if TYPE_CHECKING:
    from homelab_lib.inventory.model import Inventory


def desired_state(inv: Inventory, *, window_hours: float = WINDOW_HOURS) -> Desired:
    """The backup job and targets the inventory asks for.

    Raises:
        BackupError: the inventory has no ``backups.vzdump``.
    """
    policy = inv.backups.vzdump
    if policy is None:
        raise BackupError(
            "the inventory has no Proxmox backup policy",
            where="backups.vzdump",
            hint="add backups.vzdump with at least `storage:` (a storage with content type backup)",
        )
    rpo = dict(inv.backups.rpo_hours)
    job = JobSpec(
        id=policy.job_id,
        schedule=policy.schedule,
        storage=policy.storage,
        mode=policy.mode,
        prune_backups=f"keep-daily={policy.keep_daily}",
        notes_template=policy.notes_template,
    )
    targets = tuple(VzdumpTarget(vm.name, vm.vmid, float(rpo.get(vm.name, policy.rpo_hours))) for vm in inv.vms)
    return Desired(
        job=job,
        targets=targets,
        managed_tag=inv.proxmox.managed_tag,
        default_rpo_hours=float(policy.rpo_hours),
        rpo_overrides=MappingProxyType(rpo),
        window_hours=window_hours,
        task_timeout_s=inv.proxmox.task_timeout_s,
    )
