"""The Proxmox adapter on the runbook contract (:mod:`homelab_lib.core.contract`): runbook 01.

desired = the inventory's VMs in Proxmox's terms (:func:`.desired.desired_state`);
observed = the cluster (:func:`.observe.observe`); plan = :func:`.plan.plan`;
apply = the contract's rules, then :func:`.apply.carry_out`; verify = every VM
in scope as the plan promised (the next plan is a no-op for it), every
decommissioned VM gone, and the VMs as they run (the report).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from homelab_lib.clients.proxmox import ProxmoxClient
from homelab_lib.clients.snippets import SnippetStore
from homelab_lib.core.clock import SYSTEM, Clock
from homelab_lib.core.contract import DONE, Adapter, ApplyResult, BaseAdapter, Carried, Check, VerifyResult
from homelab_lib.core.errors import ProvisionConflict
from homelab_lib.core.plan import Action, Change, Plan
from homelab_lib.core.progress import Progress
from homelab_lib.proxmox.apply import carry_out
from homelab_lib.proxmox.desired import desired_state
from homelab_lib.proxmox.observe import observe
from homelab_lib.proxmox.plan import plan as make_plan
from homelab_lib.proxmox.state import Cluster, Desired
from homelab_lib.proxmox.status import VmReport, vm_status

if TYPE_CHECKING:
    from homelab_lib.inventory.model import Inventory

Report = tuple[VmReport, ...]


class ProxmoxAdapter(BaseAdapter[Desired, Cluster, Report]):
    """Runbook 01's steps against one Proxmox VE cluster.

    Args:
        inv: the inventory.
        client: the API client (:func:`homelab_lib.clients.proxmox_client`).
        only_vms: limit the run to these VM names (empty: all).
        snippets: where role user-data snippets go (:func:`homelab_lib.clients.proxmox_snippets`).
        clock: the clock tasks and guest agents are waited by.
    """

    name = "proxmox"
    world = "the cluster"
    conflicts_block = True

    def __init__(
        self,
        inv: Inventory,
        client: ProxmoxClient,
        *,
        only_vms: Sequence[str] = (),
        snippets: SnippetStore | None = None,
        clock: Clock = SYSTEM,
    ) -> None:
        self.inv = inv
        self.client = client
        self.only_vms = tuple(only_vms)
        self.snippets = snippets
        self.clock = clock

    def __repr__(self) -> str:
        return f"ProxmoxAdapter({self.inv.name}, {self.client!r})"

    def desired(self) -> Desired:
        """The inventory's VMs (those of only_vms) in Proxmox's terms."""
        return desired_state(self.inv, only_vms=self.only_vms)

    def observe(self, desired: Desired) -> Cluster:
        """Quorum, nodes, VMs with their configs, storages; reads only."""
        return observe(self.client, desired)

    def plan(self, desired: Desired, observed: Cluster) -> Plan:
        """Create, update (field diff), no-op, delete, conflict per VM; a pure function."""
        return make_plan(desired, observed)

    def refuse_conflicts(self, plan: Plan) -> None:
        raise ProvisionConflict([f"{c.kind} {c.target} ({c.where or '-'}): {c.reason}" for c in plan.conflicts])

    def carry_out(
        self,
        desired: Desired,
        observed: Cluster,
        plan: Plan,
        todo: Sequence[Change],
        *,
        allow_delete: bool,
        progress: Progress,
        clock: Clock,
    ) -> Carried:
        return carry_out(self.client, desired, observed, todo, progress=progress, clock=clock, snippets=self.snippets)

    def check(self, desired: Desired, result: ApplyResult) -> VerifyResult[Report]:
        """Each VM in scope is as the inventory says (running, every field), each destroyed VM is gone."""
        cluster = observe(self.client, desired)
        rows = tuple(vm_status(self.client, desired, ips=result.facts, cluster=cluster))
        by_name = {r.name: r for r in rows}
        again = make_plan(desired, cluster)
        checks: list[Check] = []
        for change in again.changes:
            if change.kind == "vm" and change.action == Action.DELETE:
                continue  # a managed VM left out of the inventory; only a done delete is checked below
            row = by_name.get(change.target)
            if change.action == Action.NOOP and row is not None:
                pending = f"; pending a reboot: {', '.join(row.pending)}" if row.pending else ""
                detail = (
                    f"{row.status}, {row.ip} ({row.ip_source}), {row.cores} cores, {row.memory_mib} MiB, "
                    f"{row.disk_gib:g} GiB{pending}"
                )
                checks.append(Check(change.kind, change.target, change.where, True, detail))
            else:
                fields = "; ".join(str(f) for f in change.fields)
                what = {Action.CREATE: "missing", Action.UPDATE: "differs", Action.CONFLICT: "conflict"}.get(
                    change.action, change.action.value
                )
                detail = f"{what}: {fields or change.reason}"
                checks.append(Check(change.kind, change.target, change.where, False, detail))
        tag = desired.settings.managed_tag
        for o in result.outcomes:
            if o.action == Action.DELETE and o.result == DONE:
                left = [v for v in cluster.vms if v.name == o.target and v.node == o.where and v.managed(tag)]
                detail = "destroyed" if not left else f"still there (vmid {left[0].vmid}, {left[0].status})"
                checks.append(Check("vm", o.target, o.where, not left, detail))
        return VerifyResult(self.name, result.confirmed, tuple(checks), rows)


if TYPE_CHECKING:  # mypy proves the class offers the contract's steps, names and arguments
    _contract: type[Adapter[Desired, Cluster, Report]] = ProxmoxAdapter


def adapter(inv: Inventory, *, only_vms: Sequence[str] = ()) -> ProxmoxAdapter:
    """Runbook 01's adapter for an inventory: its API client and snippet writer built from it (nothing sent yet)."""
    from homelab_lib import clients

    return ProxmoxAdapter(inv, clients.proxmox_client(inv), only_vms=only_vms, snippets=clients.proxmox_snippets(inv))
