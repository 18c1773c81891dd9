"""Cross-field checks of an inventory: what pydantic's per-field types cannot see.

Each check returns Problems located by the caller's ``locate(loc, message)``,
so every message carries the file:line of the entry at fault.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
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


def check(inv: Inventory, locate: Locate) -> list[Problem]:
    """Every cross-field problem of inv."""
    problems: list[Problem] = []

    def unique(items: list[tuple[str, tuple[str | int, ...]]], what: str) -> None:
        first: dict[str, tuple[str | int, ...]] = {}
        for value, loc in items:
            if value in first:
                p0 = locate(first[value], "")
                problems.append(
                    locate(loc, f"duplicate {what} '{value}', also at {p0.file}:{p0.line}; each must be unique")
                )
            else:
                first[value] = loc

    unique([(n.name, ("nodes", i, "name")) for i, n in enumerate(inv.nodes)], "node name")
    unique([(vm.name, ("vms", i, "name")) for i, vm in enumerate(inv.vms)], "VM name")
    unique([(str(vm.vmid), ("vms", i, "vmid")) for i, vm in enumerate(inv.vms)], "vmid")
    unique([(vm.address, ("vms", i, "ip")) for i, vm in enumerate(inv.vms)], "IP address")

    nodes = {n.name for n in inv.nodes}
    for i, vm in enumerate(inv.vms):
        if vm.node not in nodes:
            problems.append(
                locate(("vms", i, "node"), f"node '{vm.node}' is not in nodes: ({', '.join(sorted(nodes))})")
            )
        if vm.vmid == inv.proxmox.template_vmid:
            problems.append(locate(("vms", i, "vmid"), f"vmid {vm.vmid} is the template's (proxmox.template_vmid)"))
        if vm.role != "docker" and vm.stacks:
            problems.append(locate(("vms", i, "stacks"), f"only docker VMs carry stacks; {vm.name} is {vm.role}"))

    placed: dict[str, list[tuple[str | int, ...]]] = defaultdict(list)
    for i, vm in enumerate(inv.vms):
        for stack, names in vm.stacks.items():
            for j, svc in enumerate(names):
                loc: tuple[str | int, ...] = ("vms", i, "stacks", stack, j)
                placed[svc].append(loc)
                service = inv.services.get(svc)
                if service is None:
                    problems.append(locate(loc, _unknown_service(svc, inv)))
                elif "compose" not in service.platforms:
                    problems.append(locate(loc, f"service '{svc}' cannot run on Docker Compose; place it on k3s"))

    if inv.k3s:
        try:
            k3s_vm = inv.vm(inv.k3s.vm)
            if k3s_vm.role != "k3s":
                problems.append(locate(("k3s", "vm"), f"VM '{inv.k3s.vm}' has role {k3s_vm.role}; it needs role: k3s"))
        except KeyError:
            problems.append(locate(("k3s", "vm"), f"VM '{inv.k3s.vm}' is not in vms:"))
        for j, svc in enumerate(inv.k3s.services):
            kloc: tuple[str | int, ...] = ("k3s", "services", j)
            placed[svc].append(kloc)
            service = inv.services.get(svc)
            if service is None:
                problems.append(locate(kloc, _unknown_service(svc, inv)))
            elif "k3s" not in service.platforms:
                problems.append(locate(kloc, f"service '{svc}' cannot run on K3s; place it in a Compose stack"))
    elif any(vm.role == "k3s" for vm in inv.vms):
        problems.append(locate(("vms",), "a VM has role k3s but there is no k3s: section; add one"))
    problems += _trust(inv, locate)

    for svc, locs in placed.items():
        service = inv.services.get(svc)
        if len(locs) > 1 and service is not None and not service.per_host:
            where = locate(locs[0], "")
            problems.append(
                locate(
                    locs[1],
                    f"service '{svc}' is placed twice (first at {where.file}:{where.line}); "
                    "a service runs in one place (per_host services excepted)",
                )
            )

    for i, load in enumerate(node_loads(inv)):
        if load.cores > load.cores_limit:
            problems.append(
                locate(
                    ("nodes", i, "cores"),
                    f"node {load.node} is over capacity: its VMs ask {load.cores} cores, it may give "
                    f"{load.cores_limit:g} ({load.physical_cores} x overcommit {inv.overcommit.cores:g}); "
                    "move a VM or lower its cores",
                )
            )
        if load.memory_mib > load.memory_limit_mib:
            problems.append(
                locate(
                    ("nodes", i, "memory_gib"),
                    f"node {load.node} is over capacity: its VMs ask {load.memory_mib} MiB of memory, it may "
                    f"give {load.memory_limit_mib:.0f} MiB (after the host's reserve, overcommit "
                    f"{inv.overcommit.memory:g}); move a VM or lower its memory_mib",
                )
            )

    known = set(inv.services) | {vm.name for vm in inv.vms}
    for name in inv.backups.rpo_hours:
        if name not in known:
            problems.append(locate(("backups", "rpo_hours", name), f"'{name}' is neither a service nor a VM"))

    if inv.monitoring:
        hosts = {vm.name for vm in inv.docker_hosts}
        if inv.monitoring.prometheus_host not in hosts:
            problems.append(
                locate(
                    ("monitoring", "prometheus_host"),
                    f"'{inv.monitoring.prometheus_host}' is not a docker VM ({', '.join(sorted(hosts))})",
                )
            )
        mon = inv.monitoring
        nodes = {n.name for n in inv.nodes}
        for node in mon.node_exporters:
            if node not in nodes:
                problems.append(locate(("monitoring", "node_exporters", node), f"'{node}' is not a node"))
        if mon.pve_exporter and mon.pve_exporter.vm not in hosts:
            problems.append(locate(("monitoring", "pve_exporter", "vm"), f"'{mon.pve_exporter.vm}' is not a docker VM"))
        if mon.k3s and inv.k3s is None:
            problems.append(locate(("monitoring", "k3s"), "scraping K3s needs a k3s: section"))
        for svc in mon.k3s_node_ports:  # a service on K3s, or one that may move there (runbook 05)
            service = inv.services.get(svc)
            if inv.k3s is None or service is None or "k3s" not in service.platforms:
                problems.append(
                    locate(("monitoring", "k3s_node_ports", svc), f"'{svc}' is not a service that can run on K3s")
                )

    if inv.profile == "lab" and inv.lab is None:
        problems.append(locate(("profile",), "profile lab needs a lab: section (state_dir)"))
    if inv.profile == "real" and inv.lab is not None:
        problems.append(locate(("lab",), "a lab: section belongs to profile: lab only; remove it"))
    if inv.proxmox.token_id and inv.proxmox.token_secret is None:
        problems.append(locate(("proxmox", "token_id"), "token_id needs token_secret (env:NAME or file:PATH)"))
    if not inv.proxmox.token_id and inv.proxmox.password is None:
        problems.append(locate(("proxmox",), "give token_id + token_secret (preferred) or password"))
    if not inv.proxmox.verify_tls and inv.profile == "real":
        problems.append(
            locate(
                ("proxmox", "verify_tls"),
                "TLS verification is off; give ca_file for a self-signed cluster instead",
            )
        )
    return problems


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
