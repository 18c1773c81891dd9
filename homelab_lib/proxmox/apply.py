"""Carry out a Proxmox plan: clone, configure, resize, start; stop and destroy.

:func:`carry_out` is the Proxmox adapter's part of the runbook contract
(:class:`homelab_lib.proxmox.runbook.ProxmoxAdapter`): the contract has already
checked the approval, ``confirm``, ``allow_delete`` and the conflicts, and has
read the cluster again and found it as the plan says, before anything here runs.

Each VM's steps run in order, each task awaited: **create** = clone from the
template (with the VM's name and a description carrying the managed marker, so
a clone whose configuration never happened is still known as ours) -> write the
role's user-data snippet (when configured) -> configure (cores, memory, net,
tags, onboot, description, cloud-init) -> grow the disk -> start -> wait for the
guest agent and read the IP. **update** runs the steps its field diff needs.
**delete** (decommission) checks the managed tag again, stops, then destroys.

VMs on different nodes are worked on concurrently (``proxmox.max_parallel``
nodes at once), one node's VMs one after the other. After the first failure no
new VM is started; VMs in progress finish their steps; then
:class:`~homelab_lib.core.errors.ProvisionFailed` names every failure and what was
done. Everything done lives in the cluster, so the next plan shows exactly what
is left.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

from homelab_lib.clients.proxmox import At, ProxmoxClient
from homelab_lib.clients.snippets import SnippetStore
from homelab_lib.clients.tasks import is_upid, wait_task
from homelab_lib.core.clock import Clock
from homelab_lib.core.contract import DONE, Carried, Outcome
from homelab_lib.core.errors import (
    AgentTimeout,
    HomelabError,
    ProvisionFailed,
    ProxmoxError,
)
from homelab_lib.core.plan import Action, Change
from homelab_lib.core.progress import Progress, Task
from homelab_lib.proxmox.observe import effective_config
from homelab_lib.proxmox.plan import pick_template
from homelab_lib.proxmox.state import (
    CONFIG_FIELDS,
    GIB,
    Cluster,
    Desired,
    DesiredVm,
    VmState,
    split_tags,
    with_net_option,
)

AGENT_POLL_S = 1.0


def carry_out(
    client: ProxmoxClient,
    desired: Desired,
    cluster: Cluster,
    todo: Sequence[Change],
    *,
    progress: Progress,
    clock: Clock,
    snippets: SnippetStore | None = None,
) -> Carried:
    """Make the plan's changes (creates, updates, allowed deletes) on the cluster.

    Args:
        client: the API.
        desired: what the inventory wants (the plan was made from it).
        cluster: the cluster as read just now (it matches the plan).
        todo: the changes to make, in plan order.
        progress: where progress goes (a task per VM).
        clock: the clock tasks are waited by.
        snippets: where role user-data snippets are written (needed when the inventory sets
            ``proxmox.snippets``).

    Returns:
        An outcome per change (its steps as detail), every step in order, and the IP each
        started VM's guest agent reported (``facts``).

    Raises:
        ProxmoxError: snippets are configured but no writer was given; nothing was changed.
        ProvisionFailed: one or more VMs failed; what was done is recorded in the cluster and listed.
    """
    if any(vm.snippet for vm in desired.vms) and snippets is None:
        raise ProxmoxError(
            "proxmox.snippets is set, but no snippet writer was given to apply",
            hint="make the adapter with proxmox.adapter(inv), which builds it from the inventory",
        )
    run = _Run(client, desired, cluster, clock, snippets)
    for change in todo:  # made here, in the notebook's thread, so that widgets show in its cell
        run.tasks[change.target] = progress.task(change.target, step_count(change, desired))
    groups: dict[str, list[Change]] = {}
    for change in todo:
        groups.setdefault(change.where, []).append(change)
    workers = max(1, min(desired.settings.max_parallel, len(groups)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="proxmox-node") as pool:
        for future in [pool.submit(run.node, changes) for changes in groups.values()]:
            future.result()
    if run.failures:
        raise ProvisionFailed(run.failures, run.steps, run.skipped)
    outcomes = tuple(
        Outcome.of(
            c,
            DONE,
            "; ".join(step.split(": ", 1)[1] for step in run.steps if step.split(": ", 1)[0] == c.target),
            run.seconds.get(c.target, 0.0),
        )
        for c in todo
    )
    return Carried(outcomes, tuple(run.steps), MappingProxyType(dict(run.ips)))


@dataclass
class _Run:
    """One apply: shared state of the node workers."""

    client: ProxmoxClient
    desired: Desired
    cluster: Cluster
    clock: Clock
    snippets: SnippetStore | None
    tasks: dict[str, Task] = field(default_factory=dict)
    steps: list[str] = field(default_factory=list)
    failures: list[HomelabError] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    ips: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    # ------------------------------------------------------------------ workers

    def node(self, changes: list[Change]) -> None:
        """Carry out one node's changes in order; stop after a failure anywhere."""
        for change in changes:
            if self.stop.is_set():
                with self.lock:
                    self.skipped.append(change.target)
                continue
            t0 = self.clock.monotonic()
            try:
                if change.action == Action.CREATE:
                    self.create(self.desired.vm(change.target))
                elif change.action == Action.UPDATE:
                    self.update(self.desired.vm(change.target), change)
                elif change.action == Action.DELETE:
                    self.delete(change)
            except HomelabError as e:  # ProxmoxError, and SshError/HostKeyRejected from writing a snippet
                self.fail(e)
            except Exception as e:  # recorded: the run ends with every failure listed
                self.fail(ProxmoxError(f"unexpected {type(e).__name__}: {e}", node=change.where, vm=change.target))
            with self.lock:
                self.seconds[change.target] = self.clock.monotonic() - t0

    def fail(self, error: HomelabError) -> None:
        with self.lock:
            self.failures.append(error)
        self.stop.set()

    def done(self, vm: str, task: Task, text: str) -> None:
        with self.lock:
            self.steps.append(f"{vm}: {text}")
        task.advance(text)

    # -------------------------------------------------------------------- steps

    def create(self, vm: DesiredVm) -> None:
        s = self.desired.settings
        at = At(vm.node, vm.vmid, vm.name)
        template, why = pick_template(vm, self.cluster, s)
        if template is None:
            raise ProxmoxError(why, node=vm.node, vmid=vm.vmid, vm=vm.name)
        task = self.tasks[vm.name]
        args: dict[str, Any] = {
            "newid": vm.vmid,
            "name": vm.name,
            "description": vm.description,
            "full": 1 if s.clone == "full" else 0,
        }
        if s.clone == "full":
            args["storage"] = s.storage
        if template.node != vm.node:
            args["target"] = vm.node
        self.wait(
            self.client.post(f"nodes/{template.node}/qemu/{template.vmid}/clone", at, **args),
            at,
            f"clone of template {template.vmid}",
        )
        self.done(vm.name, task, f"cloned from template {template.vmid} ({template.node})")
        have = self.read(vm)
        self.write_snippet(vm, task)
        self.configure(vm, have, task, names=None)
        self.resize(vm, have, task)
        self.start(vm, task)
        task.done(self.ips.get(vm.name, vm.address))

    def update(self, vm: DesiredVm, change: Change) -> None:
        names = {f.name for f in change.fields}
        config_names = (names & set(CONFIG_FIELDS)) | ({"bridge"} & names)
        task = self.tasks[vm.name]
        have = self.read(vm)
        if "cicustom" in names:
            self.write_snippet(vm, task)
        if config_names:
            self.configure(vm, have, task, names=config_names)
        if "disk_gib" in names:
            self.resize(vm, have, task)
        if "status" in names:
            self.start(vm, task)
        task.done()

    def delete(self, change: Change) -> None:
        v = next(v for v in self.cluster.vms if v.name == change.target and v.node == change.where)
        at = At(v.node, v.vmid, v.name)
        task = self.tasks[v.name]
        rows = self.client.get(f"nodes/{v.node}/qemu/{v.vmid}/pending", at) or []
        config, _ = effective_config(rows)
        tag = self.desired.settings.managed_tag
        if tag not in split_tags(config.get("tags", "")):
            raise ProxmoxError(
                f"refusing to destroy: the VM no longer carries the tag '{tag}'",
                node=v.node,
                vmid=v.vmid,
                vm=v.name,
                hint="make the plan again",
            )
        status = self.client.get(f"nodes/{v.node}/qemu/{v.vmid}/status/current", at) or {}
        if status.get("status") == "running":
            self.wait(self.client.post(f"nodes/{v.node}/qemu/{v.vmid}/status/stop", at), at, "stop")
        self.done(v.name, task, "stopped")
        self.wait(
            self.client.delete(f"nodes/{v.node}/qemu/{v.vmid}", at, purge=1, **{"destroy-unreferenced-disks": 1}),
            at,
            "destroy",
        )
        self.done(v.name, task, f"destroyed (vmid {v.vmid})")
        task.done()

    # ------------------------------------------------------------ step helpers

    def wait(self, answer: Any, at: At, what: str) -> None:
        """Wait for the task a request started (a request that answers no UPID finished already)."""
        if is_upid(answer):
            wait_task(
                self.client,
                str(answer),
                at=at,
                what=what,
                timeout_s=self.desired.settings.task_timeout_s,
                clock=self.clock,
            )

    def read(self, vm: DesiredVm) -> VmState:
        """The VM's current config (pending values applied)."""
        at = At(vm.node, vm.vmid, vm.name)
        rows = self.client.get(f"nodes/{vm.node}/qemu/{vm.vmid}/pending", at) or []
        config, pending = effective_config(rows)
        return VmState(
            vm.vmid,
            vm.name,
            vm.node,
            "unknown",
            False,
            tuple(split_tags(config.get("tags", ""))),
            config=MappingProxyType(config),
            pending=pending,
            read=True,
        )

    def write_snippet(self, vm: DesiredVm, task: Task) -> None:
        if not vm.snippet or self.snippets is None:
            return
        self.snippets.put(vm.node, vm.snippet, vm.user_data)
        self.done(vm.name, task, f"user-data snippet {vm.snippet} written")

    def configure(self, vm: DesiredVm, have: VmState, task: Task, names: set[str] | None) -> None:
        """Set the config fields that differ (of names, or all)."""
        at = At(vm.node, vm.vmid, vm.name)
        params = config_params(vm, have, names)
        if params:
            self.wait(self.client.post(f"nodes/{vm.node}/qemu/{vm.vmid}/config", at, **params), at, "configure")
        self.done(vm.name, task, "configured: " + (", ".join(sorted(params)) or "nothing to change"))

    def resize(self, vm: DesiredVm, have: VmState, task: Task) -> None:
        """Grow the boot disk to disk_gib (never shrinks: the plan refuses that)."""
        at = At(vm.node, vm.vmid, vm.name)
        disk = have.disk
        if disk is None:
            raise ProxmoxError("the VM has no boot disk to size", node=vm.node, vmid=vm.vmid, vm=vm.name)
        want = vm.disk_gib * GIB
        if disk.size_bytes >= want:
            self.done(vm.name, task, f"disk {disk.key} already {disk.size_bytes / GIB:g} GiB")
            return
        path = f"nodes/{vm.node}/qemu/{vm.vmid}"
        self.wait(self.client.put(f"{path}/resize", at, disk=disk.key, size=f"{vm.disk_gib}G"), at, "disk resize")
        self.done(vm.name, task, f"disk {disk.key} grown to {vm.disk_gib} GiB")

    def start(self, vm: DesiredVm, task: Task) -> None:
        at = At(vm.node, vm.vmid, vm.name)
        self.wait(self.client.post(f"nodes/{vm.node}/qemu/{vm.vmid}/status/start", at), at, "start")
        self.done(vm.name, task, "started")
        if self.desired.settings.wait_agent:
            ip = wait_for_ip(self.client, vm, timeout_s=self.desired.settings.agent_timeout_s, clock=self.clock)
            with self.lock:
                self.ips[vm.name] = ip
            self.done(vm.name, task, f"guest agent reports {ip}")


def step_count(change: Change, desired: Desired) -> int:
    """How many progress steps a change takes (for its progress bar)."""
    if change.action == Action.DELETE:
        return 2
    vm = desired.vm(change.target)
    agent = desired.settings.wait_agent
    if change.action == Action.CREATE:
        return 4 + bool(vm.snippet) + agent
    names = {f.name for f in change.fields}
    steps = bool(names & {*CONFIG_FIELDS, "bridge"}) + ("disk_gib" in names) + ("status" in names)
    return steps + ("cicustom" in names and bool(vm.snippet)) + ("status" in names and agent)


def config_params(vm: DesiredVm, have: VmState, names: set[str] | None = None) -> dict[str, Any]:
    """The config request that makes have's config what vm wants (for the fields of names, or all).

    Values are sent as PVE takes them: ``sshkeys`` URL-encoded, booleans as 1/0; ``net0`` keeps
    its model and MAC and gets the new bridge. Fields the inventory leaves alone are not sent.
    """
    old, new = have.fields(), vm.fields()
    params: dict[str, Any] = {}
    for name in CONFIG_FIELDS:
        if (names is not None and name not in names) or new[name] is None or old[name] == new[name]:
            continue
        params[name] = _api_value(vm, name)
    if (names is None or "bridge" in names) and old["bridge"] != new["bridge"]:
        params["net0"] = with_net_option(have.config.get("net0", "virtio"), "bridge", vm.bridge)
    return params


def _api_value(vm: DesiredVm, name: str) -> Any:
    values: dict[str, Callable[[], Any]] = {
        "name": lambda: vm.name,
        "cores": lambda: vm.cores,
        "memory": lambda: vm.memory,
        "onboot": lambda: 1 if vm.onboot else 0,
        "agent": lambda: 1,
        "tags": lambda: ";".join(vm.tags),
        "description": lambda: vm.description,
        "ciuser": lambda: vm.ciuser,
        "sshkeys": lambda: quote(vm.sshkeys, safe=""),
        "ipconfig0": lambda: vm.ipconfig0,
        "nameserver": lambda: vm.nameserver,
        "searchdomain": lambda: vm.searchdomain,
        "cicustom": lambda: vm.cicustom,
    }
    return values[name]()


# ----------------------------------------------------------------- guest agent


def agent_addresses(answer: Any) -> list[str]:
    """IPv4 addresses of an agent's ``network-get-interfaces`` answer, loopback interface left out."""
    result = answer.get("result", answer) if isinstance(answer, dict) else answer
    out = []
    for iface in result or []:
        if iface.get("name") == "lo":
            continue
        for addr in iface.get("ip-addresses") or []:
            if addr.get("ip-address-type") == "ipv4":
                out.append(str(addr["ip-address"]))
    return out


def ask_agent(client: ProxmoxClient, node: str, vmid: int, name: str) -> list[str] | None:
    """The VM's IPv4 addresses from its guest agent, or None while the agent does not answer.

    Raises:
        ProxmoxError: an error other than the agent not (yet) running.
    """
    at = At(node, vmid, name)
    try:
        answer = client.get(f"nodes/{node}/qemu/{vmid}/agent/network-get-interfaces", at)
    except ProxmoxError as e:
        if e.status == 500 and ("agent" in e.pve_message.lower() or "timeout" in e.pve_message.lower()):
            return None
        raise
    return agent_addresses(answer)


def wait_for_ip(client: ProxmoxClient, vm: DesiredVm, *, timeout_s: float, clock: Clock) -> str:
    """Wait until the VM's guest agent reports an IPv4 address; prefer the inventory's.

    Raises:
        AgentTimeout: the agent did not report an address within timeout_s.
    """
    start = clock.monotonic()
    while True:
        found = ask_agent(client, vm.node, vm.vmid, vm.name)
        if found:
            return vm.address if vm.address in found else found[0]
        if clock.monotonic() - start >= timeout_s:
            raise AgentTimeout(
                f"the QEMU guest agent reported no IPv4 address within {timeout_s:g} s",
                node=vm.node,
                vmid=vm.vmid,
                vm=vm.name,
                hint="is qemu-guest-agent installed in the template and agent=1 set? check the VM's console "
                "(cloud-init may have failed); raise proxmox.agent_timeout_s for slow first boots",
            )
        clock.sleep(AGENT_POLL_S)


def ipconfig_address(value: str) -> str:
    """The address of an ``ipconfig0`` value (``ip=10.0.0.5/24,gw=...``), '' for none or dhcp."""
    for part in value.split(","):
        key, _, val = part.partition("=")
        if key == "ip" and val not in ("", "dhcp"):
            try:
                return str(ipaddress.ip_interface(val).ip)
            except ValueError:
                return ""
    return ""
