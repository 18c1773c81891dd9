"""Tables and charts the notebooks and the CLI show.

Functions take the inventory (and results) and return pandas DataFrames or
matplotlib Figures; notebooks display them (a table with every cell in full by
:func:`homelab_lib.core.tables.show`), the CLI prints them. Rows are in
inventory order so that outputs are deterministic for nbval. pandas and
matplotlib are imported by the functions that use them: a notebook's imports
cell does not wait for them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from homelab_lib.core.errors import ConfigError, Problem, SecretError
from homelab_lib.core.secrets import SecretStatus, UnresolvedSecret
from homelab_lib.inventory import Inventory, load_inventory, node_loads
from homelab_lib.inventory.load import secret_readiness

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from homelab_lib.compose import HostState, ProbeResult, Project, ServiceStatus
    from homelab_lib.proxmox import Desired, VmReport


@dataclass(frozen=True)
class Validation:
    """The outcome of validating parameter files: the inventory or the problems, and each secret's readiness.

    Attributes:
        files: the parameter files, as given.
        inventory: the inventory, or None when the files do not validate.
        problems: every problem, file:line first: structural ones, and secret references that do
            not resolve (those leave ``inventory`` set: everything else can still be shown).
        secrets: one status per secret reference (empty when secrets were not checked).
    """

    files: tuple[str, ...]
    inventory: Inventory | None
    problems: list[Problem] = field(default_factory=list)
    secrets: tuple[SecretStatus, ...] = ()

    @property
    def ok(self) -> bool:
        return self.inventory is not None and not self.problems

    @property
    def unresolved(self) -> list[SecretStatus]:
        """The secret references that do not resolve now."""
        return [s for s in self.secrets if not s.resolves]

    def table(self) -> pd.DataFrame:
        """One row per problem (file, line, key, message) when the files do not validate; else one row
        saying they are valid (and how many secret references do not resolve yet)."""
        import pandas as pd

        if self.inventory is None:
            return pd.DataFrame(
                [{"file": p.file, "line": p.line, "key": p.path, "problem": p.message} for p in self.problems]
            )
        missing = len(self.unresolved)
        result = "valid" if not missing else f"valid; {missing} secret(s) do not resolve (section 6)"
        return pd.DataFrame([{"result": result, "files": ", ".join(self.files)}])

    def inventory_or_raise(self) -> Inventory:
        """The inventory; raises the ConfigError when the files did not validate.

        Secret references that do not resolve do not stop it: the notebook shows them in the readiness
        table and :meth:`require_secrets` fails the run at its end, naming each.
        """
        if self.inventory is None:
            raise ConfigError(self.problems)
        return self.inventory

    def secrets_table(self) -> pd.DataFrame:
        """The readiness table: each secret reference, where it is written, whether it resolves, how to fix it."""
        import pandas as pd

        return pd.DataFrame(
            [
                {
                    "key": s.key,
                    "reference": s.reference,
                    "written at": s.defined_at,
                    "state": "resolves" if s.resolves else f"MISSING: {s.problem}",
                    "how to fix": s.fix or "-",
                }
                for s in self.secrets
            ],
            columns=["key", "reference", "written at", "state", "how to fix"],
        )

    def require_secrets(self) -> None:
        """Fail when a secret reference does not resolve, naming each (file:line, key, reference, fix).

        Raises:
            SecretError: one problem per unresolved reference.
        """
        if self.unresolved:
            raise SecretError([s.as_problem() for s in self.unresolved])


def validate(files: str | Path | Sequence[str | Path], *, check_secrets: bool = True) -> Validation:
    """Load parameter files and collect problems instead of raising.

    Args:
        files: the parameter files, layered in order.
        check_secrets: also try every secret reference (for the readiness table and its problems).
    """
    names = (str(files),) if isinstance(files, str | Path) else tuple(str(f) for f in files)
    try:
        if not check_secrets:
            return Validation(names, load_inventory(files))
        inv, statuses = secret_readiness(files)
    except ConfigError as e:
        return Validation(names, None, e.problems)
    problems = [s.as_problem() for s in statuses if not s.resolves]
    return Validation(names, inv, sorted(problems, key=lambda p: (p.file, p.line, p.path)), tuple(statuses))


def nodes_table(inv: Inventory) -> pd.DataFrame:
    """Each node: capacity, what its VMs ask, and the limit the overcommit allows."""
    import pandas as pd

    rows = []
    for load in node_loads(inv):
        rows.append(
            {
                "node": load.node,
                "VMs": load.vms,
                "cores": load.physical_cores,
                "cores allocated": load.cores,
                "cores limit": round(load.cores_limit, 1),
                "memory GiB": round(load.physical_memory_mib / 1024, 1),
                "memory allocated GiB": round(load.memory_mib / 1024, 1),
                "memory limit GiB": round(load.memory_limit_mib / 1024, 1),
                "fits": "yes" if not load.over else "NO",
            }
        )
    return pd.DataFrame(rows)


def vms_table(inv: Inventory) -> pd.DataFrame:
    """Each VM: where it runs, its size, address and role."""
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "vm": vm.name,
                "node": vm.node,
                "vmid": vm.vmid,
                "role": vm.role,
                "cores": vm.cores,
                "memory MiB": vm.memory_mib,
                "disk GiB": vm.disk_gib,
                "ip": str(vm.ip),
                "stacks": ", ".join(vm.stacks) or "-",
            }
            for vm in inv.vms
        ]
    )


def stacks_table(inv: Inventory) -> pd.DataFrame:
    """Each Compose service: its host, stack, image and published ports."""
    import pandas as pd

    rows = []
    for vm in inv.docker_hosts:
        for stack, names in vm.stacks.items():
            for name in names:
                svc = inv.services[name]
                rows.append(
                    {
                        "host": vm.name,
                        "stack": stack,
                        "service": name,
                        "image": svc.image,
                        "ports": ", ".join(str(p.published) for p in svc.ports) or "-",
                        "health": svc.health,
                    }
                )
    return pd.DataFrame(rows, columns=["host", "stack", "service", "image", "ports", "health"])


def k3s_table(inv: Inventory) -> pd.DataFrame:
    """Each service placed on K3s."""
    import pandas as pd

    rows = []
    if inv.k3s:
        for name in inv.k3s.services:
            svc = inv.services[name]
            rows.append(
                {
                    "vm": inv.k3s.vm,
                    "service": name,
                    "description": svc.description,
                    "image": svc.image,
                    "volumes": ", ".join(svc.volumes) or "-",
                }
            )
    return pd.DataFrame(rows, columns=["vm", "service", "description", "image", "volumes"])


def secrets_table(inv: Inventory) -> pd.DataFrame:
    """Each secret reference and whether it resolves now; never the value."""
    import pandas as pd

    rows = []
    for path, ref in inv.secrets():
        try:
            ref.reveal()
            state = "resolves"
        except UnresolvedSecret as e:
            state = f"MISSING: {e.message}"
        rows.append({"key": path, "reference": str(ref), "state": state})
    return pd.DataFrame(rows, columns=["key", "reference", "state"])


def capacity_figure(inv: Inventory, figsize: tuple[float, float] = (10.0, 3.6)) -> Figure:
    """Allocated vs available memory and cores per node, with the overcommit limit marked.

    Returns:
        The Figure; the caller displays and closes it.
    """
    from matplotlib.figure import Figure

    loads = node_loads(inv)
    names = [load.node for load in loads]
    x = list(range(len(names)))
    fig = Figure(figsize=figsize, layout="constrained")
    mem, cpu = fig.subplots(1, 2)
    w = 0.38
    mem.bar([i - w / 2 for i in x], [load.physical_memory_mib / 1024 for load in loads], w, label="available")
    mem.bar(
        [i + w / 2 for i in x],
        [load.memory_mib / 1024 for load in loads],
        w,
        label="allocated to VMs",
        color=["tab:red" if load.memory_mib > load.memory_limit_mib else "tab:orange" for load in loads],
    )
    mem.scatter(x, [load.memory_limit_mib / 1024 for load in loads], marker="_", s=400, color="k", label="limit")
    mem.set_title("Memory per node (GiB)")
    cpu.bar([i - w / 2 for i in x], [load.physical_cores for load in loads], w, label="physical cores")
    cpu.bar(
        [i + w / 2 for i in x],
        [load.cores for load in loads],
        w,
        label="vCPUs allocated",
        color=["tab:red" if load.cores > load.cores_limit else "tab:orange" for load in loads],
    )
    cpu.scatter(x, [load.cores_limit for load in loads], marker="_", s=400, color="k", label="overcommit limit")
    cpu.set_title(f"Cores per node (overcommit {inv.overcommit.cores:g}x)")
    for ax in (mem, cpu):
        ax.set_xticks(x, names)
        ax.legend(fontsize="small")
    return fig


# ---------------------------------------------------------------- Compose (runbook 02)


def compose_projects_table(projects: Sequence[Project]) -> pd.DataFrame:
    """Each rendered Compose project: host, stack, project name, services, published ports, secrets by reference."""
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "host": p.host,
                "stack": p.stack,
                "project": p.name,
                "services": ", ".join(s.name for s in p.services),
                "ports": ", ".join(f"{port.address}:{port.published}" for s in p.services for port in s.ports) or "-",
                "secrets": ", ".join(f"{f.name} <- {f.ref}" for f in p.secrets) or "-",
                "sha256": p.digest[:12],
            }
            for p in projects
        ],
        columns=["host", "stack", "project", "services", "ports", "secrets", "sha256"],
    )


def _uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def compose_status_table(
    rows: Sequence[ServiceStatus], probes: Sequence[ProbeResult] = (), host: str | None = None
) -> pd.DataFrame:
    """The verify table: one row per service (of one host, or all): image, state, health, ports, uptime,
    restarts, and the answer of its health endpoint through the published port."""
    import pandas as pd

    answers = {(p.host, p.stack, p.service): p for p in probes}
    out = []
    for r in rows:
        if host is not None and r.host != host:
            continue
        answer = answers.get((r.host, r.stack, r.service))
        out.append(
            {
                "host": r.host,
                "stack": r.stack,
                "service": r.service,
                "image": r.image,
                "state": r.state,
                "health": r.health,
                "ports": ", ".join(r.ports) or "-",
                "uptime": _uptime(r.uptime_s),
                "restarts": r.restarts,
                "probe": f"{'ok' if answer.ok else 'FAIL'} {answer.detail}" if answer else "-",
            }
        )
    columns = ["host", "stack", "service", "image", "state", "health", "ports", "uptime", "restarts", "probe"]
    return pd.DataFrame(out, columns=columns)


def compose_health_figure(
    rows: Sequence[ServiceStatus], probes: Sequence[ProbeResult] = (), figsize: tuple[float, float] = (10.0, 3.6)
) -> Figure:
    """Per host: services healthy / not healthy / missing (and probes failed), and container restarts.

    Returns:
        The Figure; the caller displays and closes it.
    """
    from matplotlib.figure import Figure

    hosts = list(dict.fromkeys(r.host for r in rows))
    x = list(range(len(hosts)))
    failed_probe = {(p.host, p.stack, p.service) for p in probes if not p.ok}
    healthy = [
        sum(1 for r in rows if r.host == h and r.ok and (r.host, r.stack, r.service) not in failed_probe) for h in hosts
    ]
    missing = [sum(1 for r in rows if r.host == h and r.state == "missing") for h in hosts]
    bad = [sum(1 for r in rows if r.host == h) - ok - gone for h, ok, gone in zip(hosts, healthy, missing, strict=True)]
    restarts = [sum(r.restarts for r in rows if r.host == h) for h in hosts]
    fig = Figure(figsize=figsize, layout="constrained")
    left, right = fig.subplots(1, 2)
    left.bar(x, healthy, color="tab:green", label="healthy")
    left.bar(x, bad, bottom=healthy, color="tab:red", label="unhealthy / stopped / probe failed")
    left.bar(x, missing, bottom=[a + b for a, b in zip(healthy, bad, strict=True)], color="tab:gray", label="missing")
    left.set_title("Services per host")
    left.set_ylabel("services")
    right.bar(x, restarts, color=["tab:orange" if n else "tab:green" for n in restarts])
    right.set_title("Container restarts per host")
    right.set_ylabel("restarts")
    for ax in (left, right):
        ax.set_xticks(x, hosts)
        ax.yaxis.get_major_locator().set_params(integer=True)
    left.legend(fontsize="small")
    return fig


# ---------------------------------------------------------------- Proxmox (runbook 01)


def proxmox_desired_table(desired: Desired) -> pd.DataFrame:
    """What each VM should be in Proxmox: where, size, tags and its cloud-init settings (no key material)."""
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "vm": vm.name,
                "node": vm.node,
                "vmid": vm.vmid,
                "cores": vm.cores,
                "memory MiB": vm.memory,
                "disk GiB": vm.disk_gib,
                "tags": ", ".join(vm.tags),
                "cloud-init ip": vm.ipconfig0,
                "dns": f"{vm.nameserver or '-'} ({vm.searchdomain})",
                "ssh keys": len(vm.sshkeys.splitlines()),
                "role user-data": f"snippet {vm.cicustom.split('/')[-1]}" if vm.cicustom else "not delivered",
            }
            for vm in desired.vms
        ]
    )


def proxmox_vms_table(vms: Sequence[VmReport]) -> pd.DataFrame:
    """Each inventory VM as the cluster has it: node, vmid, status, IP (and where it comes from), size."""
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "vm": r.name,
                "node": r.node or "-",
                "vmid": r.vmid,
                "status": r.status,
                "ip": r.ip,
                "ip from": r.ip_source,
                "cores": r.cores,
                "memory MiB": r.memory_mib,
                "disk GiB": r.disk_gib,
                "pending reboot": ", ".join(r.pending) or "-",
            }
            for r in vms
        ],
        columns=["vm", "node", "vmid", "status", "ip", "ip from", "cores", "memory MiB", "disk GiB", "pending reboot"],
    )


def allocation_figure(inv: Inventory, vms: Sequence[VmReport], figsize: tuple[float, float] = (10.0, 3.6)) -> Figure:
    """Per node: the memory and cores its VMs have now (one stacked segment per VM), against its limit.

    Args:
        inv: the inventory (nodes, their capacity and overcommit).
        vms: the VMs as the cluster has them (:func:`homelab_lib.proxmox.vm_status`).
        figsize: the figure's size in inches.

    Returns:
        The Figure; the caller displays and closes it.
    """
    from matplotlib.figure import Figure

    loads = node_loads(inv)
    names = [load.node for load in loads]
    x = list(range(len(names)))
    fig = Figure(figsize=figsize, layout="constrained")
    mem, cpu = fig.subplots(1, 2)
    base_mem = [0.0] * len(names)
    base_cpu = [0.0] * len(names)
    colours = {"running": "tab:green", "stopped": "tab:orange"}
    for r in vms:
        if r.node not in names:
            continue
        i = names.index(r.node)
        colour = colours.get(r.status, "tab:gray")
        mem.bar(i, r.memory_mib / 1024, 0.6, bottom=base_mem[i], color=colour, edgecolor="white")
        cpu.bar(i, r.cores, 0.6, bottom=base_cpu[i], color=colour, edgecolor="white")
        mem.text(i, base_mem[i] + r.memory_mib / 2048, r.name, ha="center", va="center", fontsize="x-small")
        base_mem[i] += r.memory_mib / 1024
        base_cpu[i] += r.cores
    mem.scatter(x, [load.memory_limit_mib / 1024 for load in loads], marker="_", s=600, color="k", label="limit")
    cpu.scatter(x, [load.cores_limit for load in loads], marker="_", s=600, color="k", label="limit")
    mem.set_title("Memory of the VMs per node (GiB)")
    cpu.set_title(f"vCPUs per node (limit: cores x {inv.overcommit.cores:g})")
    for ax in (mem, cpu):
        ax.set_xticks(x, names)
        ax.legend(fontsize="small", loc="upper left")
    return fig


def compose_engines_table(observed: Mapping[str, HostState], homelab: str) -> pd.DataFrame:
    """Each Docker VM's engine: version, whether other VMs share it, this homelab's containers on it, others."""
    import pandas as pd

    counts = Counter(state.engine_id for state in observed.values())
    return pd.DataFrame(
        [
            {
                "host": host,
                "engine": state.engine_version,
                "shared with other VMs": "yes" if counts[state.engine_id] > 1 else "no",
                "this homelab's containers": len(state.of(homelab)),
                "stacks": ", ".join(sorted({c.stack for c in state.of(homelab)})) or "-",
                "other containers": len(state.containers) - len(state.of(homelab)),
            }
            for host, state in observed.items()
        ],
        columns=["host", "engine", "shared with other VMs", "this homelab's containers", "stacks", "other containers"],
    )
