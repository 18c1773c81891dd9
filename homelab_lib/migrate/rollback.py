"""A move undone after its stop: what it made on K3s removed, the Compose service back on its unchanged volumes.

Run by :class:`~homelab_lib.migrate.move.MoveAdapter` when a checkpoint after the stop fails (but a
broken copy stream, which resumes), or on demand (:meth:`~homelab_lib.migrate.move.MoveAdapter.rollback`).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from homelab_lib.core.clock import Clock
from homelab_lib.core.errors import HomelabError, MigrateError, RollbackFailed, mapped
from homelab_lib.hosts.checksums import remote_manifest
from homelab_lib.hosts.docker import ENGINE_ERRORS
from homelab_lib.hosts.ssh import run_command
from homelab_lib.kube.objects import Key, key
from homelab_lib.migrate import state as records
from homelab_lib.migrate.checkpoints import POLL_S, binder_name, same_as_at_stop, under
from homelab_lib.migrate.desired import MoveDesired
from homelab_lib.migrate.reach import Reach
from homelab_lib.migrate.state import MoveState

GONE_TIMEOUT_S = 120.0


def rollback(
    reach: Reach, desired: MoveDesired, st: MoveState, *, state_dir: Path, write_placement: bool, clock: Clock
) -> tuple[str, ...]:
    """Undo a stopped move: the placement edit, the K3s objects and PV folders; Compose back on unchanged volumes.

    The volumes are proved equal to their manifests at the stop before the containers start (a
    service writes to its volume as it starts); the record then says the move was rolled back.

    Returns:
        One line per thing done.

    Raises:
        RollbackFailed: the containers were removed already (cleanup done), a step failed, or a volume
            differs from its manifest at the stop.
    """
    lines: list[str] = []
    where = f"{desired.service} (rollback)"
    if "cleanup" in st.done:
        raise RollbackFailed(
            "the Compose containers were already removed (cleanup done): nothing to bring back",
            where=where,
            hint="deploy the stack again with runbook 02 (its volumes were kept)",
        )
    try:
        if "placement" in st.done and write_placement and desired.placement is not None:
            lines.append(desired.placement.undo())
        lines += _undo_k3s(reach, desired, st, clock)
        # proved before the containers start: a service writes to its volume as it starts (logs, locks)
        lines += _prove_unchanged(reach, desired, st, state_dir)
        lines += _restart_compose(reach, desired, st, clock)
    except HomelabError as e:
        raise RollbackFailed(
            f"the rollback stopped: {e}; done so far: {'; '.join(lines) or 'nothing'}",
            where=where,
            hint="finish it by hand: delete the service's objects on K3s, `docker start` its containers",
        ) from e
    records.save(state_dir, MoveState(desired.service, rolled_back=tuple(lines)))
    return tuple(lines)


def _undo_k3s(reach: Reach, desired: MoveDesired, st: MoveState, clock: Clock) -> list[str]:
    lines = []
    made = [o for o in desired.manifests if o["kind"] != "Namespace"]
    binders = {Key("v1", "Pod", ns, binder_name(desired)) for ns in {key(o).namespace for o in desired.claims}}
    for k in sorted(binders) + [key(o) for o in reversed(made)]:
        reach.kube.delete(k)
    lines.append(f"deleted {len(made)} object(s) on K3s")
    deadline = clock.monotonic() + GONE_TIMEOUT_S
    for obj in desired.claims:
        while reach.kube.get(key(obj)) is not None:
            if clock.monotonic() >= deadline:
                raise MigrateError(
                    f"{key(obj)} is still there after {GONE_TIMEOUT_S:.0f} s",
                    where="k3s",
                    hint="a pod still uses it: kubectl get pods",
                )
            clock.sleep(POLL_S)
    ssh = reach.k3s.ssh()
    for v in desired.volumes:
        folder = st.fact("pvcs", f"pvc.{v.claim}.folder")
        if folder and under(folder, desired.storage_root):
            got = run_command(ssh, f"rm -rf -- {shlex.quote(folder)}", timeout=600, where=reach.where_k3s)
            if not got.ok:
                raise MigrateError(f"cannot remove {folder}: {got.stderr.strip()}", where=reach.where_k3s)
            lines.append(f"removed PV folder {folder}")
    return lines


def _restart_compose(reach: Reach, desired: MoveDesired, st: MoveState, clock: Clock) -> list[str]:
    ids = json.loads(st.fact("stop", "containers", "[]"))
    engine = reach.engine()
    with mapped(ENGINE_ERRORS, where=reach.docker):
        for cid in ids:
            engine.containers.get(cid).start()
        deadline = clock.monotonic() + desired.health_timeout_s
        for cid in ids:
            while True:
                c = engine.containers.get(cid)
                state = c.attrs.get("State") or {}
                health = (state.get("Health") or {}).get("Status", "")
                if state.get("Status") == "running" and health in ("", "healthy"):
                    break
                if clock.monotonic() >= deadline:
                    raise MigrateError(
                        f"container {c.name} is {state.get('Status')} ({health or 'no healthcheck'}) "
                        f"after {desired.health_timeout_s:.0f} s",
                        where=reach.where_docker,
                        hint=f"docker logs {c.name}",
                    )
                clock.sleep(POLL_S)
    return [f"started {len(ids)} Compose container(s) again: running, healthy"]


def _prove_unchanged(reach: Reach, desired: MoveDesired, st: MoveState, state_dir: Path) -> list[str]:
    ssh = reach.docker.ssh()
    lines = []
    for v in desired.volumes:
        mountpoint = st.fact("stop", f"volume.{v.volume}.mountpoint")
        if not mountpoint:
            continue
        now = remote_manifest(ssh, mountpoint, where=f"{reach.where_docker} volume {v.volume}")
        same_as_at_stop(
            reach,
            desired,
            st,
            v.volume,
            now,
            state_dir=state_dir,
            what="differs from its manifest at the stop",
            hint="restore it from the final backup",
        )
        lines.append(f"volume {v.volume} unchanged ({now.files} files, manifest {now.sha256[:12]})")
    return lines


__all__ = ["GONE_TIMEOUT_S", "rollback"]
