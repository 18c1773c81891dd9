"""The vzdump adapter on the runbook contract (:mod:`homelab_lib.core.contract`): runbook 06's Proxmox layer.

desired = the inventory's job and VMs with their RPOs (:func:`.desired.desired_state`);
observed = the cluster's backups (:func:`.observe.observe`); plan = :func:`.plan.plan`;
apply = the contract's rules, then :func:`.apply.carry_out`; verify = the job covers every
target and each target has a backup within its RPO (the report, :class:`.report.VzdumpReport`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from homelab_lib.backup.vzdump.apply import carry_out
from homelab_lib.backup.vzdump.desired import desired_state
from homelab_lib.backup.vzdump.observe import observe
from homelab_lib.backup.vzdump.plan import job_change, plan
from homelab_lib.backup.vzdump.report import VzdumpReport, rows
from homelab_lib.backup.vzdump.state import JOB, VZDUMP, WINDOW_HOURS, Desired, Observed, stamp, targets
from homelab_lib.clients.proxmox import ProxmoxClient
from homelab_lib.core.clock import SYSTEM, Clock
from homelab_lib.core.contract import Adapter, ApplyResult, BaseAdapter, Carried, Check, VerifyResult
from homelab_lib.core.plan import Action, Change, Plan
from homelab_lib.core.progress import Progress

if TYPE_CHECKING:
    from homelab_lib.inventory.model import Inventory


class ProxmoxBackupAdapter(BaseAdapter[Desired, Observed, VzdumpReport]):
    """Runbook 06's Proxmox layer against one cluster.

    Args:
        inv: the inventory.
        client: the API client (:func:`homelab_lib.clients.proxmox_client`).
        window_hours: how far back failed vzdump tasks are reported.
        clock: ages are counted from its now; tasks are waited by it.
    """

    name = VZDUMP
    world = "the cluster's backups"
    conflicts_block = False  # a VM not yet provisioned must not keep the others unprotected

    def __init__(
        self, inv: Inventory, client: ProxmoxClient, *, window_hours: float = WINDOW_HOURS, clock: Clock = SYSTEM
    ) -> None:
        self.inv = inv
        self.client = client
        self.window_hours = window_hours
        self.clock = clock

    def __repr__(self) -> str:
        return f"ProxmoxBackupAdapter({self.inv.name}, {self.client!r})"

    def desired(self) -> Desired:
        """The inventory's backup job and its VMs with their RPOs."""
        return desired_state(self.inv, window_hours=self.window_hours)

    def observe(self, desired: Desired) -> Observed:
        """Jobs, guests, backups, failed vzdump tasks; reads only."""
        return observe(self.client, desired, now=self.clock.now())

    def plan(self, desired: Desired, observed: Observed) -> Plan:
        """The job to create or fix, a backup now per VM out of its RPO; a pure function."""
        return plan(desired, observed)

    def carry_out(
        self,
        desired: Desired,
        observed: Observed,
        plan: Plan,
        todo: Sequence[Change],
        *,
        allow_delete: bool,
        progress: Progress,
        clock: Clock,
    ) -> Carried:
        return carry_out(self.client, desired, observed, todo, progress=progress, clock=clock)

    def check(self, desired: Desired, result: ApplyResult) -> VerifyResult[VzdumpReport]:
        """The job covers every target; each target has a backup within its RPO (a row per target)."""
        observed = self.observe(desired)
        report = VzdumpReport(rows(desired, observed), observed.jobs, observed.failed, observed.at)
        checks: list[Check] = []
        job = job_change(desired, observed)
        ok = job.action == Action.NOOP
        detail = job.reason if ok else f"{job.action.value}: " + "; ".join(str(f) for f in job.fields)
        checks.append(Check(JOB, desired.job.id, "cluster", ok, detail))
        for target, row in zip(targets(desired, observed), report.rows, strict=True):
            guest = observed.guest(target.vmid)
            if row.violation:
                detail = row.violation
            else:
                assert row.last_backup is not None
                detail = f"latest backup {stamp(row.last_backup)} ({row.age_hours:.1f} h, RPO {row.rpo_hours:g} h)"
            checks.append(Check(VZDUMP, target.name, guest.node if guest else "", row.violation is None, detail))
        failed = len(observed.failed)
        note = f"{failed} failed vzdump task(s) in the last {desired.window_hours:g} h" if failed else ""
        return VerifyResult(self.name, result.confirmed, tuple(checks), report, note)


if TYPE_CHECKING:  # mypy proves the class offers the contract's steps, names and arguments
    _contract: type[Adapter[Desired, Observed, VzdumpReport]] = ProxmoxBackupAdapter


def adapter(inv: Inventory, *, window_hours: float = WINDOW_HOURS, clock: Clock = SYSTEM) -> ProxmoxBackupAdapter:
    """Runbook 06's Proxmox-layer adapter for an inventory: its API client built from it (nothing sent yet)."""
    from homelab_lib import clients

    return ProxmoxBackupAdapter(inv, clients.proxmox_client(inv), window_hours=window_hours, clock=clock)
