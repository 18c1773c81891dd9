"""Tables and charts the notebooks and the CLI show.

Functions take the inventory (and results) and return pandas DataFrames or
matplotlib Figures; notebooks display them, the CLI prints them. Rows are in
inventory order so that outputs are deterministic for nbval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from homelab_lib.errors import ConfigError, Problem, SecretError
from homelab_lib.inventory import Inventory, load_inventory, node_loads
from homelab_lib.secrets import UnresolvedSecret


@dataclass(frozen=True)
class Validation:
    """The outcome of validating parameter files: the inventory, or the problems."""

    files: tuple[str, ...]
    inventory: Inventory | None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.inventory is not None and not self.problems

    def table(self) -> pd.DataFrame:
        """One row per problem (file, line, key, message), or one row saying all is well."""
        if self.ok:
            return pd.DataFrame([{"result": "valid", "files": ", ".join(self.files)}])
        return pd.DataFrame(
            [{"file": p.file, "line": p.line, "key": p.path, "problem": p.message} for p in self.problems]
        )

    def inventory_or_raise(self) -> Inventory:
        """The inventory; raises the ConfigError when the files did not validate."""
        if self.inventory is None or self.problems:
            raise ConfigError(self.problems)
        return self.inventory


def validate(files: str | Path | Sequence[str | Path], *, check_secrets: bool = True) -> Validation:
    """Load parameter files and collect problems instead of raising."""
    names = (str(files),) if isinstance(files, str | Path) else tuple(str(f) for f in files)
    try:
        inv = load_inventory(files, check_secrets=check_secrets)
    except SecretError as e:
        inv_without = load_inventory(files, check_secrets=False)
        return Validation(names, inv_without, e.problems)
    except ConfigError as e:
        return Validation(names, None, e.problems)
    return Validation(names, inv)


def nodes_table(inv: Inventory) -> pd.DataFrame:
    """Each node: capacity, what its VMs ask, and the limit the overcommit allows."""
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
