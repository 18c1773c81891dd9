"""Read what the cluster has: quorum, nodes, VMs and templates with their configs, storages.

Only reads (GET). Configs are read for the VMs a plan may touch: those that
carry the managed tag and those that hold a vmid the inventory wants. A config
is read from ``/pending``, so a change that waits for a reboot counts as made.
VMs on an offline node are listed (from the cluster's resources) but their
configs cannot be read; the plan reports them.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import MappingProxyType
from typing import Any

from homelab_lib.clients.proxmox import At, ProxmoxClient
from homelab_lib.proxmox.state import Cluster, Desired, NodeState, StorageState, VmState, split_tags


def observe(client: ProxmoxClient, desired: Desired) -> Cluster:
    """Read the cluster.

    Args:
        client: the API.
        desired: what the inventory wants (which vmids, which storage).

    Returns:
        The cluster's state.

    Raises:
        ProxmoxError: a read failed (credentials, TLS, permissions...).
    """
    status = client.get("cluster/status") or []
    quorate = all(int(item.get("quorate", 1)) == 1 for item in status if item.get("type") == "cluster")
    nodes = tuple(
        NodeState(
            name=str(n["node"]),
            online=n.get("status") == "online",
            maxcpu=int(n.get("maxcpu") or 0),
            maxmem=int(n.get("maxmem") or 0),
        )
        for n in sorted(client.get("nodes") or [], key=lambda n: str(n["node"]))
    )
    online = {n.name for n in nodes if n.online}
    tag = desired.settings.managed_tag
    wanted = {vm.vmid for vm in desired.vms}
    vms = []
    for item in sorted(client.get("cluster/resources", type="vm") or [], key=lambda r: int(r["vmid"])):
        if item.get("type") != "qemu":
            continue
        vm = VmState(
            vmid=int(item["vmid"]),
            name=str(item.get("name") or ""),
            node=str(item["node"]),
            status=str(item.get("status") or "unknown"),
            template=bool(int(item.get("template") or 0)),
            tags=tuple(split_tags(str(item.get("tags") or ""))),
            lock=str(item.get("lock") or ""),
            maxmem=int(item.get("maxmem") or 0),
            maxcpu=int(item.get("maxcpu") or 0),
        )
        if vm.node in online and not vm.template and (tag in vm.tags or vm.vmid in wanted):
            vm = _with_config(client, vm)
        vms.append(vm)
    storages = []
    for node in sorted(online):
        for st in client.get(f"nodes/{node}/storage", At(node=node)) or []:
            storages.append(
                StorageState(
                    node=node,
                    storage=str(st["storage"]),
                    content=tuple(sorted(c for c in str(st.get("content") or "").split(",") if c)),
                    active=bool(int(st.get("active", 1) or 0)),
                    avail=int(st.get("avail") or 0),
                    shared=bool(int(st.get("shared") or 0)),
                )
            )
    return Cluster(quorate=quorate, nodes=nodes, vms=tuple(vms), storages=tuple(storages))


def _with_config(client: ProxmoxClient, vm: VmState) -> VmState:
    at = At(node=vm.node, vmid=vm.vmid, vm=vm.name)
    rows = client.get(f"nodes/{vm.node}/qemu/{vm.vmid}/pending", at) or []
    config, pending = effective_config(rows)
    lock = vm.lock or config.get("lock", "")
    return VmState(
        vmid=vm.vmid,
        name=vm.name,
        node=vm.node,
        status=vm.status,
        template=vm.template,
        tags=tuple(split_tags(config.get("tags", ""))),
        lock=lock,
        maxmem=vm.maxmem,
        maxcpu=vm.maxcpu,
        config=MappingProxyType(config),
        pending=pending,
        read=True,
    )


def effective_config(rows: Iterable[dict[str, Any]]) -> tuple[dict[str, str], tuple[str, ...]]:
    """The config the VM has after its pending changes, and the keys that are pending.

    Args:
        rows: the answer of ``GET .../pending``: ``{key, value?, pending?, delete?}`` per key.
    """
    config: dict[str, str] = {}
    pending: list[str] = []
    for row in rows:
        key = str(row["key"])
        if int(row.get("delete") or 0):
            pending.append(key)
            continue
        if "pending" in row:
            config[key] = str(row["pending"])
            pending.append(key)
        elif "value" in row:
            config[key] = str(row["value"])
    return config, tuple(sorted(pending))
