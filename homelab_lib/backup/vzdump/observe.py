"""Read what the cluster has of backups: jobs, guests, each backup storage's vzdump backups, failed tasks.

Only reads (GET). Backup storages are read on every online node, shared ones once; a storage whose
content cannot be read is recorded (``Observed.unreadable``), not raised. Failed ``vzdump`` tasks are
those of the window (``Desired.window_hours``), each with its log's last lines and the VMs its
``ERROR: Backup of VM ... failed`` lines name.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from types import MappingProxyType

from homelab_lib.backup.vzdump.state import (
    ERROR_LINE,
    BackupJob,
    Desired,
    FailedTask,
    Guest,
    Observed,
    VzdumpBackup,
    flag,
    utc,
)
from homelab_lib.clients.proxmox import At, ProxmoxClient
from homelab_lib.core.errors import HomelabError
from homelab_lib.proxmox.state import split_tags

LOG_TAIL = 8


def observe(client: ProxmoxClient, desired: Desired, *, now: datetime) -> Observed:
    """Read the cluster's backup jobs, guests, backups and failed vzdump tasks (reads only).

    Args:
        client: the API.
        desired: what the inventory wants (the window for failed tasks).
        now: the moment of the reading (ages are counted from it).

    Raises:
        ProxmoxError: a read failed (credentials, TLS, permissions, node...); an unreadable
            storage is recorded in ``unreadable`` instead.
    """
    jobs = tuple(sorted((BackupJob.of(j) for j in client.get("cluster/backup") or []), key=lambda j: j.id))
    guests = tuple(
        Guest(
            vmid=int(r["vmid"]),
            name=str(r.get("name") or ""),
            node=str(r.get("node") or ""),
            status=str(r.get("status") or "unknown"),
            template=flag(r.get("template")),
            tags=tuple(split_tags(str(r.get("tags") or ""))),
        )
        for r in sorted(client.get("cluster/resources", type="vm") or [], key=lambda r: int(r["vmid"]))
    )
    pools: dict[str, frozenset[int]] = {}
    for pool in sorted({j.pool for j in jobs if j.pool}):
        members = (client.get(f"pools/{pool}") or {}).get("members") or []
        pools[pool] = frozenset(int(m["vmid"]) for m in members if str(m.get("vmid", "")).isdigit())
    nodes = sorted(client.get("nodes") or [], key=lambda n: str(n["node"]))
    online = [str(n["node"]) for n in nodes if n.get("status") == "online"]
    offline = tuple(str(n["node"]) for n in nodes if n.get("status") != "online")
    backups: dict[str, VzdumpBackup] = {}
    unreadable: list[str] = []
    stores: set[str] = set()
    shared_read: set[str] = set()
    for node in online:
        at = At(node=node)
        for st in client.get(f"nodes/{node}/storage", at, content="backup", enabled=1) or []:
            sid = str(st["storage"])
            if not flag(st.get("active"), default=True) or (flag(st.get("shared")) and sid in shared_read):
                continue
            stores.add(sid)
            if flag(st.get("shared")):
                shared_read.add(sid)
            try:
                content = client.get(f"nodes/{node}/storage/{sid}/content", at, content="backup") or []
            except HomelabError as e:
                unreadable.append(f"{sid} on {node}: {getattr(e, 'pve_message', '') or e.message}")
                continue
            for item in content:
                backup = VzdumpBackup.of(item, sid, node)
                if backup is not None and backup.volid not in backups:
                    backups[backup.volid] = backup
    since = now - timedelta(hours=desired.window_hours)
    failed = [t for node in online for t in _failed_tasks(client, node, since)]
    return Observed(
        at=now,
        jobs=jobs,
        guests=guests,
        pools=MappingProxyType(pools),
        backups=tuple(sorted(backups.values(), key=lambda b: (b.time, b.volid), reverse=True)),
        failed=tuple(sorted(failed, key=lambda t: (t.start or now, t.upid), reverse=True)),
        offline=offline,
        unreadable=tuple(unreadable),
        backup_storages=tuple(sorted(stores)),
    )


def _failed_tasks(client: ProxmoxClient, node: str, since: datetime) -> list[FailedTask]:
    """The node's vzdump tasks that ended in error since a moment, each with its log's last lines."""
    at = At(node=node)
    out = []
    listing = client.get(
        f"nodes/{node}/tasks", at, typefilter="vzdump", errors=1, since=int(since.timestamp()), limit=500
    )
    for t in listing or []:
        status = str(t.get("status") or "")
        started = utc(t.get("starttime"))
        if t.get("type") != "vzdump" or status in ("", "OK", "running") or status.startswith("WARNINGS"):
            continue
        if started is not None and started < since:
            continue
        upid = str(t["upid"])
        lines = [str(line.get("t", "")) for line in client.get(f"nodes/{node}/tasks/{upid}/log", at, limit=10000) or []]
        reasons: dict[int, str] = {}
        for line in lines:
            found = ERROR_LINE.match(line)
            if found:
                reasons[int(found.group(1))] = found.group(2)
        vmids = set(reasons)
        if str(t.get("id") or "").isdigit():
            vmids.add(int(t["id"]))
        out.append(
            FailedTask(
                upid=upid,
                node=node,
                start=started,
                status=status,
                vmids=tuple(sorted(vmids)),
                reasons=MappingProxyType(reasons),
                log_tail=tuple(lines[-LOG_TAIL:]),
            )
        )
    return out
