"""Cross-field checks of an inventory: what pydantic's per-field types cannot see.

Each check is a named rule (``@rule``, run in the order of :data:`RULES`) that yields Problems
located by the caller's ``locate(loc, message)``, so every message carries the file:line of the
entry at fault. :func:`check` runs them all.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from homelab_lib.core.errors import Problem
from homelab_lib.inventory.model import Inventory

Locate = Callable[[tuple[str | int, ...], str], Problem]


@dataclass(frozen=True)
class NodeLoad:
    """What the VMs of one node ask of it, against what it may give."""

    node: str
    vms: int
    cores: int
    cores_limit: float
    memory_mib: int
    memory_limit_mib: float
    physical_cores: int
    physical_memory_mib: int

    @property
    def over(self) -> bool:
        return self.cores > self.cores_limit or self.memory_mib > self.memory_limit_mib


def node_loads(inv: Inventory) -> list[NodeLoad]:
    """Allocated vs available cores and memory for every node, in inventory order."""
    out = []
    for node in inv.nodes:
        vms = [vm for vm in inv.vms if vm.node == node.name]
        usable = (node.memory_gib - node.reserved_memory_gib) * 1024
        out.append(
            NodeLoad(
                node=node.name,
                vms=len(vms),
                cores=sum(vm.cores for vm in vms),
                cores_limit=node.cores * inv.overcommit.cores,
                memory_mib=sum(vm.memory_mib for vm in vms),
                memory_limit_mib=usable * inv.overcommit.memory,
                physical_cores=node.cores,
                physical_memory_mib=int(node.memory_gib * 1024),
            )
        )
    return out


Rule = Callable[[Inventory, Locate], Iterator[Problem]]

#: The rules :func:`check` runs, in order (the order of the problems it reports).
RULES: list[Rule] = []


def rule(fn: Rule) -> Rule:
    """Add fn to :data:`RULES` (after the ones before it)."""
    RULES.append(fn)
    return fn


def check(inv: Inventory, locate: Locate) -> list[Problem]:
    """Every cross-field problem of inv: the problems of each rule of :data:`RULES`, in order."""
    return [problem for each in RULES for problem in each(inv, locate)]


Loc = tuple[str | int, ...]


def _duplicates(items: list[tuple[str, Loc]], what: str, locate: Locate) -> Iterator[Problem]:
    first: dict[str, Loc] = {}
    for value, loc in items:
        if value in first:
            p0 = locate(first[value], "")
            yield locate(loc, f"duplicate {what} '{value}', also at {p0.file}:{p0.line}; each must be unique")
        else:
            first[value] = loc


@rule
def unique_names(inv: Inventory, locate: Locate) -> Iterator[Problem]:
    """Node names, VM names, vmids and VM addresses are each unique."""
    yield from _duplicates([(n.name, ("nodes", i, "name")) for i, n in enumerate(inv.nodes)], "node name", locate)
    yield from _duplicates([(vm.name, ("vms", i, "name")) for i, vm in enumerate(inv.vms)], "VM name", locate)
    yield from _duplicates([(str(vm.vmid), ("vms", i, "vmid")) for i, vm in enumerate(inv.vms)], "vmid", locate)
    yield from _duplicates([(vm.address, ("vms", i, "ip")) for i, vm in enumerate(inv.vms)], "IP address", locate)


@rule
def vm_fields(inv: Inventory, locate: Locate) -> Iterator[Problem]:
    """Each VM (in order): its node exists, its vmid is not the template's, only a docker VM carries stacks."""
    nodes = {n.name for n in inv.nodes}
    for i, vm in enumerate(inv.vms):
        if vm.node not in nodes:
            yield locate(("vms", i, "node"), f"node '{vm.node}' is not in nodes: ({', '.join(sorted(nodes))})")
        if vm.vmid == inv.proxmox.template_vmid:
            yield locate(("vms", i, "vmid"), f"vmid {vm.vmid} is the template's (proxmox.template_vmid)")
        if vm.role != "docker" and vm.stacks:
            yield locate(("vms", i, "stacks"), f"only docker VMs carry stacks; {vm.name} is {vm.role}")


def _stack_entries(inv: Inventory) -> Iterator[tuple[str, Loc]]:
    for i, vm in enumerate(inv.vms):
        for stack, names in vm.stacks.items():
            for j, svc in enumerate(names):
                yield svc, ("vms", i, "stacks", stack, j)


def _k3s_entries(inv: Inventory) -> Iterator[tuple[str, Loc]]:
    if inv.k3s:
        for j, svc in enumerate(inv.k3s.services):
            yield svc, ("k3s", "services", j)


@rule
def stack_services(inv: Inventory, locate: Locate) -> Iterator[Problem]:
    """Each service in a stack is known and can run on Docker Compose."""
    for svc, loc in _stack_entries(inv):
        service = inv.services.get(svc)
        if service is None:
            yield locate(loc, _unknown_service(svc, inv))
        elif "compose" not in service.platforms:
            yield locate(loc, f"service '{svc}' cannot run on Docker Compose; place it on k3s")


@rule
def k3s_vm(inv: Inventory, locate: Locate) -> Iterator[Problem]:
    """The k3s: section's VM exists and has role k3s; a VM with role k3s needs a k3s: section."""
    if inv.k3s:
        try:
            k3s_vm = inv.vm(inv.k3s.vm)
            if k3s_vm.role != "k3s":
                yield locate(("k3s", "vm"), f"VM '{inv.k3s.vm}' has role {k3s_vm.role}; it needs role: k3s")
        except KeyError:
            yield locate(("k3s", "vm"), f"VM '{inv.k3s.vm}' is not in vms:")
    elif any(vm.role == "k3s" for vm in inv.vms):
        yield locate(("vms",), "a VM has role k3s but there is no k3s: section; add one")


@rule
def trust(inv: Inventory, locate: Locate) -> Iterator[Problem]:
    """What a real homelab trusts: the K3s install (https, checksums), the K3s scrape's TLS, the runs' image."""
    yield from _trust(inv, locate)


@rule
def k3s_services(inv: Inventory, locate: Locate) -> Iterator[Problem]:
    """Each service placed on K3s is known and can run on K3s."""
    for svc, loc in _k3s_entries(inv):
        service = inv.services.get(svc)
        if service is None:
            yield locate(loc, _unknown_service(svc, inv))
        elif "k3s" not in service.platforms:
            yield locate(loc, f"service '{svc}' cannot run on K3s; place it in a Compose stack")


@rule
def placed_once(inv: Inventory, locate: Locate) -> Iterator[Problem]:
    """A service runs in one place (in a stack or on K3s), unless it is per_host."""
    placed: dict[str, list[Loc]] = defaultdict(list)
    for svc, loc in (*_stack_entries(inv), *_k3s_entries(inv)):
        placed[svc].append(loc)
    for svc, locs in placed.items():
        service = inv.services.get(svc)
        if len(locs) > 1 and service is not None and not service.per_host:
            where = locate(locs[0], "")
            yield locate(
                locs[1],
                f"service '{svc}' is placed twice (first at {where.file}:{where.line}); "
                "a service runs in one place (per_host services excepted)",
            )


@rule
def node_capacity(inv: Inventory, locate: Locate) -> Iterator[Problem]:
    """Each node can give its VMs' cores and memory (after its reserve, with the overcommit)."""
    for i, load in enumerate(node_loads(inv)):
        if load.cores > load.cores_limit:
            yield locate(
                ("nodes", i, "cores"),
                f"node {load.node} is over capacity: its VMs ask {load.cores} cores, it may give "
                f"{load.cores_limit:g} ({load.physical_cores} x overcommit {inv.overcommit.cores:g}); "
                "move a VM or lower its cores",
            )
        if load.memory_mib > load.memory_limit_mib:
            yield locate(
                ("nodes", i, "memory_gib"),
                f"node {load.node} is over capacity: its VMs ask {load.memory_mib} MiB of memory, it may "
                f"give {load.memory_limit_mib:.0f} MiB (after the host's reserve, overcommit "
                f"{inv.overcommit.memory:g}); move a VM or lower its memory_mib",
            )


@rule
def backup_targets(inv: Inventory, locate: Locate) -> Iterator[Problem]:
    """Each backups.rpo_hours key names a service or a VM."""
    known = set(inv.services) | {vm.name for vm in inv.vms}
    for name in inv.backups.rpo_hours:
        if name not in known:
            yield locate(("backups", "rpo_hours", name), f"'{name}' is neither a service nor a VM")


@rule
def monitoring_targets(inv: Inventory, locate: Locate) -> Iterator[Problem]:
    """The monitoring: section names docker VMs, nodes and K3s services that are there."""
    mon = inv.monitoring
    if not mon:
        return
    hosts = {vm.name for vm in inv.docker_hosts}
    if mon.prometheus_host not in hosts:
        yield locate(
            ("monitoring", "prometheus_host"),
            f"'{mon.prometheus_host}' is not a docker VM ({', '.join(sorted(hosts))})",
        )
    nodes = {n.name for n in inv.nodes}
    for node in mon.node_exporters:
        if node not in nodes:
            yield locate(("monitoring", "node_exporters", node), f"'{node}' is not a node")
    if mon.pve_exporter and mon.pve_exporter.vm not in hosts:
        yield locate(("monitoring", "pve_exporter", "vm"), f"'{mon.pve_exporter.vm}' is not a docker VM")
    if mon.k3s and inv.k3s is None:
        yield locate(("monitoring", "k3s"), "scraping K3s needs a k3s: section")
    for svc in mon.k3s_node_ports:  # a service on K3s, or one that may move there (runbook 05)
        service = inv.services.get(svc)
        if inv.k3s is None or service is None or "k3s" not in service.platforms:
            yield locate(("monitoring", "k3s_node_ports", svc), f"'{svc}' is not a service that can run on K3s")


@rule
def profile_sections(inv: Inventory, locate: Locate) -> Iterator[Problem]:
    """Profile lab has a lab: section; profile real has none."""
    if inv.profile == "lab" and inv.lab is None:
        yield locate(("profile",), "profile lab needs a lab: section (state_dir)")
    if inv.profile == "real" and inv.lab is not None:
        yield locate(("lab",), "a lab: section belongs to profile: lab only; remove it")


@rule
def proxmox_access(inv: Inventory, locate: Locate) -> Iterator[Problem]:
    """Proxmox is reached with a token (and its secret) or a password; a real homelab verifies TLS."""
    if inv.proxmox.token_id and inv.proxmox.token_secret is None:
        yield locate(("proxmox", "token_id"), "token_id needs token_secret (env:NAME or file:PATH)")
    if not inv.proxmox.token_id and inv.proxmox.password is None:
        yield locate(("proxmox",), "give token_id + token_secret (preferred) or password")
    if not inv.proxmox.verify_tls and inv.profile == "real":
        yield locate(
            ("proxmox", "verify_tls"), "TLS verification is off; give ca_file for a self-signed cluster instead"
        )


def _trust(inv: Inventory, locate: Locate) -> list[Problem]:
    """What a real homelab trusts is checked: the K3s install (https, checksums), the K3s scrape's TLS, the
    scheduled runs' image (by digest)."""
    problems = []
    scrape = inv.monitoring.k3s if inv.monitoring else None
    if scrape is not None and scrape.ca_file is None and inv.profile == "real":
        problems.append(
            locate(
                ("monitoring", "k3s", "ca_file"),
                "the K3s scrape sends a bearer token, and without ca_file TLS would not be verified "
                "(insecure_skip_verify): whoever sits between Prometheus and the VM takes the token; give "
                "ca_file, the cluster's CA (/var/lib/rancher/k3s/server/tls/server-ca.crt on the K3s VM)",
            )
        )
    k = inv.k3s
    if k is None:
        return problems
    if inv.profile == "real" and not k.install_url.startswith("https://"):
        problems.append(
            locate(
                ("k3s", "install_url"),
                "the install script runs as root on the VM, and over http:// anyone on the way can change it; "
                "give an https:// URL (and k3s.install_sha256 to pin the script)",
            )
        )
    if k.airgap is not None and k.install_sha256 is None:
        problems.append(
            locate(
                ("k3s", "airgap"),
                "an air-gapped install checks its script too: give k3s.install_sha256 (sha256sum of "
                "airgap.install_script, once you have read it)",
            )
        )
    if inv.profile == "real" and k.run_image is not None and "@sha256:" not in k.run_image:
        problems.append(
            locate(
                ("k3s", "run_image"),
                f"'{k.run_image}' is named by tag only: whoever can push that tag chooses what the scheduled runs "
                "(which hold the parameters' secrets) execute; name it by digest, NAME:TAG@sha256:<64 hex> "
                "(docker buildx imagetools inspect NAME:TAG prints it)",
            )
        )
    return problems


def _unknown_service(name: str, inv: Inventory) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(inv.services), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else "; define it under services:"
    return f"unknown service '{name}'{hint}"
