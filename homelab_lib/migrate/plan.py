"""A move's plan (pure): a change per checkpoint (a no-op once recorded), refusals as conflicts, volume deletes."""

from __future__ import annotations

from homelab_lib.core.plan import Action, Change, Plan
from homelab_lib.migrate.desired import MoveDesired
from homelab_lib.migrate.observe import MoveObserved
from homelab_lib.migrate.state import CHECKPOINTS


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB"


def plan_move(adapter: str, desired: MoveDesired, observed: MoveObserved, *, backup: bool, write: bool) -> Plan:
    """The move's plan (pure): a change per checkpoint (no-op when recorded), refusals as conflicts, volume deletes."""
    st = observed.state
    changes: list[Change] = []
    containers = len(observed.containers)
    where_c, where_k = desired.docker_host, "k3s"
    words = {
        "backup": (where_c, "final backup" if backup else "no backup function given: recorded as skipped"),
        "stop": (where_c, f"stop {containers} Compose container(s) of {desired.project}/{desired.compose_service}"),
        "pvcs": (where_k, f"apply {len(desired.claims)} PVC(s), bind them, find their folders"),
        "copy": (
            f"{desired.docker_host} -> k3s",
            f"stream {len(desired.volumes)} volume(s) host to host"
            + (
                f" ({len(st.copied)} already copied: skipped; the one cut short: again from scratch)"
                if st.copied
                else ""
            ),
        ),
        "verify": ("both", "file count, total bytes and per-file sha256 on both sides"),
        "apply": (
            where_k,
            f"apply {len(desired.manifests)} manifest(s) (sha256 {desired.manifests_sha256[:12]}), "
            f"wait for the rollout, probe {len(desired.probes)} Ingress host(s)",
        ),
        "placement": (
            "inventory",
            "no placement edit given"
            if desired.placement is None
            else f"{'write' if write else 'show'} the placement edit of {desired.placement.file.name}",
        ),
        "cleanup": (where_c, f"remove the Compose container(s); {len(desired.volumes)} volume(s) kept"),
    }
    for i, cp in enumerate(CHECKPOINTS):
        where, reason = words[cp]
        if cp in st.done:
            changes.append(Change("checkpoint", cp, Action.NOOP, where, reason=f"done {st.done[cp].at}", order=i))
        else:
            changes.append(Change("checkpoint", cp, Action.CREATE, where, reason=reason, order=i))
    if not st.stopped:
        if not observed.containers:
            changes.append(
                Change(
                    "service",
                    f"{desired.project}/{desired.compose_service}",
                    Action.CONFLICT,
                    desired.docker_host,
                    reason="no Compose container of this project and service on the host: nothing to move",
                    order=-1,
                )
            )
        for v in observed.volumes:
            if not v.mountpoint:
                changes.append(
                    Change("volume", v.name, Action.CONFLICT, desired.docker_host, reason="no such volume", order=-1)
                )
    if "copy" not in st.done:
        need = sum(v.bytes for v in observed.volumes if v.bytes > 0 and v.name not in st.copied)
        wanted = int(need * desired.headroom)
        if wanted > observed.free_bytes:
            changes.append(
                Change(
                    "storage",
                    desired.storage_root,
                    Action.CONFLICT,
                    "k3s",
                    reason=f"not enough space: the volumes need {_gib(need)} (+{desired.headroom - 1:.0%} headroom: "
                    f"{_gib(wanted)}), the K3s VM's storage has {_gib(observed.free_bytes)} free",
                    order=-1,
                )
            )
    for v in observed.volumes:
        if v.mountpoint:
            changes.append(
                Change(
                    "volume",
                    v.name,
                    Action.DELETE,
                    desired.docker_host,
                    reason="the Compose volume, once the move is done (kept without allow_delete)",
                    order=len(CHECKPOINTS),
                )
            )
    return Plan.of(changes, adapter=adapter)


__all__ = ["plan_move"]
