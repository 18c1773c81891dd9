"""The Proxmox plan: a pure function of (desired, observed).

Rules, per VM of the inventory (identified by its vmid):

- no VM holds the vmid: **create** (clone from the template on the VM's node, else
  from one on another node with a full clone to a shared storage), if the node is
  online, a template and the storage are there;
- a VM the homelab manages (managed tag, or the marker a clone gets before its
  configuration) holds it on the same node: **update** with a field diff (cores,
  memory, disk growth, bridge, cloud-init user/keys/IP/DNS, tags, onboot,
  description, user-data, start), or **no-op**;
- **conflict** (never applied; apply refuses a plan with any): the vmid is held by a
  VM the homelab does not manage, or by a template; the VM is on another node (a
  node change); the disk would shrink; a managed VM of the same name has another
  vmid; the node is offline or unknown; no template or storage for a create; the
  node would be over capacity with the VMs already on it; the cluster has no quorum.

Managed VMs (with the tag) that the inventory no longer has are **delete**\\ s
(decommission: stop, then destroy), applied only with ``allow_delete``. Changes are
ordered by vmid; cluster and node conflicts come first, deletes last.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from homelab_lib.core.errors import ConfigError, Problem
from homelab_lib.core.plan import Action, Change, FieldChange, Plan
from homelab_lib.proxmox.state import FIELDS, GIB, Cluster, Desired, DesiredVm, Settings, VmState

MIB = 1024**2


def pick_template(vm: DesiredVm, cluster: Cluster, settings: Settings) -> tuple[VmState | None, str]:
    """The template to clone vm from, or None and why not.

    The template on the VM's own node is preferred; with full clones, one on another online
    node is used (cloned with ``target``).
    """
    found = cluster.templates(settings.template)
    online = {n.name for n in cluster.nodes if n.online}
    here = [t for t in found if t.node == vm.node]
    if here:
        return here[0], ""
    elsewhere = [t for t in found if t.node in online]
    if elsewhere and settings.clone == "linked":
        return None, (
            f"template '{settings.template}' is on node {elsewhere[0].node}, not on {vm.node}; a linked clone "
            "must stay on the template's node: set proxmox.clone: full, or make the template on each node"
        )
    if elsewhere:
        store = cluster.storage(vm.node, settings.storage)
        if store is not None and store.shared:
            return elsewhere[0], ""
        return None, (
            f"template '{settings.template}' is on node {elsewhere[0].node}, not on {vm.node}, and storage "
            f"'{settings.storage}' is not shared, so Proxmox cannot clone across nodes to it: make the template "
            "on each node (see this notebook's introduction), or use a shared storage"
        )
    seen = sorted({f"{t.name} ({t.vmid}, {t.node})" for t in cluster.vms if t.template})
    return None, (
        f"template '{settings.template}' not found on any online node (templates seen: "
        f"{', '.join(seen) or 'none'}); make it (see this notebook's introduction) or fix proxmox.template"
    )


def plan(desired: Desired, observed: Cluster) -> Plan:
    """Compare the inventory with the cluster.

    Args:
        desired: what the inventory wants (see :func:`homelab_lib.proxmox.desired_state`).
        observed: what the cluster has (see :func:`homelab_lib.proxmox.observe`).

    Returns:
        The plan, in dependency order.

    Raises:
        ConfigError: ``only_vms`` names a VM that is neither in the inventory nor a managed VM.
    """
    s = desired.settings
    tag = s.managed_tag
    wanted = {vm.vmid for vm in desired.vms}
    names = {vm.name for vm in desired.vms}
    managed = [v for v in observed.vms if not v.template and v.managed(tag)]
    if desired.only:
        known = names | {v.name for v in managed}
        unknown = [n for n in desired.only if n not in known]
        if unknown:
            raise ConfigError(
                [
                    Problem(
                        "parameters",
                        0,
                        "only_vms",
                        f"no VM named {', '.join(unknown)} in the inventory or the cluster "
                        f"(known: {', '.join(sorted(known))})",
                    )
                ]
            )
    changes: list[Change] = []
    for vm in desired.vms:
        changes.append(_vm_change(vm, observed, s))
    for v in managed:
        if v.vmid in wanted or (desired.only and v.name not in desired.only):
            continue
        if v.name in names:
            continue  # reported as a conflict on the inventory's VM of that name
        where = v.node
        if tag in v.tags:
            changes.append(
                Change(
                    "vm",
                    v.name,
                    Action.DELETE,
                    where,
                    reason=f"vmid {v.vmid} is not in the inventory: stop and destroy (needs allow_delete)",
                    order=v.vmid,
                )
            )
        else:
            changes.append(
                Change(
                    "vm",
                    v.name,
                    Action.CONFLICT,
                    where,
                    reason=f"vmid {v.vmid} was made by the runbooks (description) but never configured and is not "
                    f"in the inventory; delete it by hand (qm destroy {v.vmid}) or add the tag '{tag}'",
                    order=v.vmid,
                )
            )
    work = [c for c in changes if c.action in (Action.CREATE, Action.UPDATE, Action.DELETE)]
    changes += _capacity(desired, observed, work)
    if work and not observed.quorate:
        changes.append(
            Change(
                "cluster",
                "quorum",
                Action.CONFLICT,
                reason="the cluster has no quorum: /etc/pve is read-only and nothing can change; bring enough "
                "nodes back (pvecm status), then run again",
            )
        )
    return Plan.of(changes, adapter="proxmox")


def _vm_change(vm: DesiredVm, observed: Cluster, s: Settings) -> Change:
    tag = s.managed_tag

    def conflict(reason: str) -> Change:
        return Change("vm", vm.name, Action.CONFLICT, vm.node, reason=reason, order=vm.vmid)

    node = observed.node(vm.node)
    if node is None:
        known = ", ".join(n.name for n in observed.nodes)
        return conflict(f"node {vm.node} is not in the cluster (nodes: {known}); fix the VM's node")
    twin = next(
        (v for v in observed.vms if v.name == vm.name and v.vmid != vm.vmid and not v.template and v.managed(tag)),
        None,
    )
    if twin is not None:
        return conflict(
            f"a managed VM named {vm.name} already exists as vmid {twin.vmid} on {twin.node}; the inventory says "
            f"vmid {vm.vmid}: fix the inventory's vmid, or destroy the old VM by hand"
        )
    have = observed.by_vmid(vm.vmid)
    if have is None:
        if not node.online:
            return conflict(f"node {vm.node} is offline; bring it back to create the VM")
        template, why = pick_template(vm, observed, s)
        if template is None:
            return conflict(why)
        if s.clone == "full" or template.node != vm.node:
            store = observed.storage(vm.node, s.storage)
            if store is None or "images" not in store.content or not store.active:
                return conflict(
                    f"storage '{s.storage}' for VM disks is not available on node {vm.node}; fix proxmox.storage"
                )
        how = f"{s.clone} clone of template {template.vmid} ({template.name} on {template.node})"
        return Change(
            "vm",
            vm.name,
            Action.CREATE,
            vm.node,
            reason=f"{how}; {vm.cores} cores, {vm.memory} MiB, {vm.disk_gib} GiB, {vm.address}; start",
            order=vm.vmid,
        )
    if have.template:
        return conflict(f"vmid {vm.vmid} is the template '{have.name}' on {have.node}; pick another vmid")
    if not have.managed(tag) and have.read:
        return conflict(
            f"vmid {vm.vmid} is held by VM '{have.name}' on {have.node}, which the homelab does not manage "
            f"(no tag '{tag}'); pick another vmid, or tag that VM by hand if it is this one"
        )
    if have.node != vm.node:
        return conflict(
            f"node change: the VM is on {have.node}, the inventory says {vm.node}; migrate it yourself "
            f"(qm migrate {vm.vmid} {vm.node}) or change the inventory"
        )
    if not have.read:
        return conflict(f"node {vm.node} is offline: VM {vm.vmid} cannot be read; bring the node back")
    disk = have.disk
    if disk is None:
        return conflict(f"VM {vm.vmid} has no boot disk that the runbook can size; check its hardware")
    if disk.size_bytes > vm.disk_gib * GIB:
        return conflict(
            f"disk shrink: {disk.key} is {disk.size_bytes / GIB:g} GiB, the inventory says {vm.disk_gib} GiB; "
            "Proxmox cannot shrink a disk: raise disk_gib, or rebuild the VM"
        )
    old, new = have.fields(), vm.fields()
    diffs = tuple(
        FieldChange(k, _show(k, old[k]), _show(k, new[k])) for k in FIELDS if new[k] is not None and old[k] != new[k]
    )
    notes = []
    if have.lock:
        notes.append(f"locked ({have.lock}): changes wait until the lock is gone")
    if have.pending:
        notes.append(f"pending until the VM reboots: {', '.join(have.pending)}")
    if diffs:
        return Change("vm", vm.name, Action.UPDATE, vm.node, fields=diffs, reason="; ".join(notes), order=vm.vmid)
    return Change(
        "vm", vm.name, Action.NOOP, vm.node, reason="; ".join(notes) or "as the inventory says", order=vm.vmid
    )


def _capacity(desired: Desired, observed: Cluster, work: Sequence[Change]) -> list[Change]:
    """A conflict per node whose VMs (the inventory's plus the others already there) exceed its limits."""
    busy = {c.where for c in work if c.action != Action.DELETE}
    ours = {vm.vmid for vm in desired.vms}
    out = []
    for limit in desired.nodes:
        if limit.name not in busy:
            continue
        vms = [vm for vm in desired.vms if vm.node == limit.name]
        others = [v for v in observed.vms if v.node == limit.name and not v.template and v.vmid not in ours]
        memory = sum(vm.memory for vm in vms) + sum(v.maxmem // MIB for v in others)
        cores = sum(vm.cores for vm in vms) + sum(v.maxcpu for v in others)
        reasons = []
        if memory > limit.memory_limit_mib:
            reasons.append(f"memory {memory} MiB > {limit.memory_limit_mib:.0f} MiB")
        if cores > limit.cores_limit:
            reasons.append(f"cores {cores} > {limit.cores_limit:g}")
        if reasons:
            also = f" ({len(others)} VM(s) not in the inventory already use part of it)" if others else ""
            out.append(
                Change(
                    "node",
                    limit.name,
                    Action.CONFLICT,
                    limit.name,
                    reason=f"over capacity: {', '.join(reasons)}{also}; move or shrink a VM",
                )
            )
    return out


def _show(name: str, value: Any) -> Any:
    """A short form of a field's value for the plan's table."""
    if name == "sshkeys":
        keys = [k for k in str(value).splitlines() if k]
        return f"{len(keys)} key(s): " + ", ".join(k.split()[-1][-24:] for k in keys) if keys else "none"
    if name == "description":
        text = str(value)
        if len(text) <= 60 and "\n" not in text:
            return text
        digest = hashlib.sha256(text.encode()).hexdigest()[:6]
        return f"{text.splitlines()[0][:40]}... (#{digest})"
    return value
