"""The checkpoints of a move after its backup, each a function of what the move reaches and its record.

``stop`` (the Compose containers, each volume's checksum manifest kept), ``pvcs`` (applied and
bound, each PV's folder found), ``copy`` (each volume streamed; each one recorded at once, so a
broken stream resumes), ``verify`` (both sides' checksums, and the source as at the stop),
``apply`` (the manifests, the rollout, the Ingress probed), ``placement`` and ``cleanup`` (the
containers removed, the volumes kept). Each returns the facts the state record keeps;
:class:`~homelab_lib.migrate.move.MoveAdapter` runs them in order (:data:`~homelab_lib.migrate.state.CHECKPOINTS`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from homelab_lib.core.clock import Clock
from homelab_lib.core.errors import ChecksumMismatch, MigrateError, mapped
from homelab_lib.core.progress import Progress
from homelab_lib.hosts.checksums import Manifest, compare, remote_manifest
from homelab_lib.hosts.docker import ENGINE_ERRORS, DockerNotFound
from homelab_lib.kube import rollout
from homelab_lib.kube.objects import Key, KubeObject, key, sealed
from homelab_lib.kube.runbook import probe
from homelab_lib.migrate import copy as copying
from homelab_lib.migrate import state as records
from homelab_lib.migrate.desired import RUNBOOK, MoveDesired
from homelab_lib.migrate.observe import MoveObserved
from homelab_lib.migrate.reach import Reach
from homelab_lib.migrate.state import MoveState

BIND_TIMEOUT_S = 120.0
POLL_S = 1.0
PROGRESS_STEP = 64 << 20  # bytes per progress step of a volume's copy


@dataclass(frozen=True)
class Faults:
    """Fault hooks (tests and rehearsals): called at points of the copy; what they raise is the failure.

    Attributes:
        on_chunk: (volume, bytes sent so far) after each chunk of a volume's stream.
        after_copy: (volume, target folder) after a volume's stream completed.
    """

    on_chunk: Callable[[str, int], None] | None = None
    after_copy: Callable[[str, str], None] | None = None


def manifest_file(state_dir: Path, desired: MoveDesired, volume: str) -> Path:
    """Where the stop keeps a volume's checksum manifest: beside the state record."""
    base = records.state_path(state_dir, desired.service)
    return base.with_name(f"{base.stem}.{volume}.manifest")


def stop(reach: Reach, desired: MoveDesired, observed: MoveObserved, state_dir: Path) -> dict[str, str]:
    """Stop the Compose containers; record their ids, and each volume's Mountpoint and checksum manifest."""
    engine = reach.engine()
    ids = [c.id for c in observed.containers]
    with mapped(ENGINE_ERRORS, where=reach.docker):
        for cid in ids:
            engine.containers.get(cid).stop(timeout=30)
    facts = {"containers": json.dumps(ids), "names": ", ".join(c.name for c in observed.containers)}
    ssh = reach.docker.ssh()
    for v in observed.volumes:
        m = remote_manifest(ssh, v.mountpoint, where=f"{reach.where_docker} volume {v.name}")
        path = manifest_file(state_dir, desired, v.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(m.text())
        facts |= {
            f"volume.{v.name}.mountpoint": v.mountpoint,
            f"volume.{v.name}.manifest_sha256": m.sha256,
            f"volume.{v.name}.files": str(m.files),
            f"volume.{v.name}.bytes": str(m.total_bytes),
        }
    return facts


def pvcs(reach: Reach, desired: MoveDesired, clock: Clock) -> dict[str, str]:
    """Apply the PVCs, bind them by a pod that mounts them and runs nothing, and record each PV's folder."""
    for obj in [o for o in desired.manifests if o["kind"] == "Namespace"] + list(desired.claims):
        reach.kube.apply(obj)
    facts: dict[str, str] = {}
    namespaces = sorted({key(o).namespace for o in desired.claims})
    for ns in namespaces:
        claims = [key(o).name for o in desired.claims if key(o).namespace == ns]
        pod = _binder(desired, ns, claims)
        reach.kube.apply(pod)
        try:
            for name in claims:
                facts |= _bound(reach, desired, ns, name, clock)
        finally:
            reach.kube.delete(key(pod))
    return facts


def _binder(desired: MoveDesired, ns: str, claims: Sequence[str]) -> KubeObject:
    pod: KubeObject = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": binder_name(desired), "namespace": ns},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "bind",
                    "image": desired.image(),
                    "command": ["sh", "-c", "exit 0"],
                    "volumeMounts": [{"name": f"v{i}", "mountPath": f"/bind/{i}"} for i in range(len(claims))],
                }
            ],
            "volumes": [{"name": f"v{i}", "persistentVolumeClaim": {"claimName": c}} for i, c in enumerate(claims)],
        },
    }
    return sealed(pod, RUNBOOK)


def _bound(reach: Reach, desired: MoveDesired, ns: str, name: str, clock: Clock) -> dict[str, str]:
    where = f"PersistentVolumeClaim {ns}/{name}"
    deadline = clock.monotonic() + BIND_TIMEOUT_S
    while True:
        pvc = reach.kube.get(Key("v1", "PersistentVolumeClaim", ns, name))
        volume = str(((pvc or {}).get("spec") or {}).get("volumeName") or "")
        phase = str(((pvc or {}).get("status") or {}).get("phase") or "")
        if phase == "Bound" and volume:
            break
        if clock.monotonic() >= deadline:
            raise MigrateError(
                f"the PVC did not bind in {BIND_TIMEOUT_S:.0f} s (phase {phase or 'none'})",
                where=where,
                hint="is the local-path provisioner running (kubectl -n kube-system get pods)?",
            )
        clock.sleep(POLL_S)
    pv = reach.kube.get(Key("v1", "PersistentVolume", "", volume)) or {}
    spec = pv.get("spec") or {}
    folder = str((spec.get("hostPath") or {}).get("path") or (spec.get("local") or {}).get("path") or "")
    if not under(folder, desired.storage_root):
        raise MigrateError(
            f"PV {volume}'s folder {folder or '(none)'} is not under the storage root {desired.storage_root}",
            where=where,
            hint="the PVC must be of the local-path class; check storage_root (k3s data_dir + /storage)",
        )
    return {f"pvc.{ns}/{name}.volume": volume, f"pvc.{ns}/{name}.folder": folder}


def copy(
    reach: Reach, desired: MoveDesired, st: MoveState, progress: Progress, *, state_dir: Path, faults: Faults
) -> tuple[dict[str, str], MoveState]:
    """Stream each volume not copied yet to its PV folder; each one is recorded as copied at once (a resume point).

    Raises:
        MigrateError: a PV folder the state record names is not strictly under the storage root (the copy
            empties it first); nothing was deleted or copied.
    """
    for v in desired.volumes:
        folder = st.fact("pvcs", f"pvc.{v.claim}.folder")
        if v.volume not in st.copied and not under(folder, desired.storage_root):
            raise MigrateError(
                f"the PV folder {folder or '(none)'} of {v.claim} is not under the storage root "
                f"{desired.storage_root}; nothing was deleted or copied",
                where=f"volume {v.volume}",
                hint=f"the move's state record {records.state_path(state_dir, desired.service)} names it: compare "
                f"it with the PV of {v.claim} (kubectl get pv), which must lie under the storage root",
            )
    src, dst = reach.docker.ssh(), reach.k3s.ssh()
    facts: dict[str, str] = {}
    for v in desired.volumes:
        if v.volume in st.copied:
            facts[f"volume.{v.volume}"] = "copied by an earlier run: skipped"
            continue
        mountpoint = st.fact("stop", f"volume.{v.volume}.mountpoint")
        folder = st.fact("pvcs", f"pvc.{v.claim}.folder")
        size = int(st.fact("stop", f"volume.{v.volume}.bytes", "0") or 0)
        task = progress.task(f"copy {v.volume} -> {v.claim}", max(1, -(-size // PROGRESS_STEP)))
        marks = [0]

        def chunk(sent: int, name: str = v.volume, task: Any = task, marks: list[int] = marks) -> None:
            while sent >= (marks[0] + 1) * PROGRESS_STEP:
                marks[0] += 1
                task.advance(f"{marks[0] * PROGRESS_STEP >> 20} MiB")
            if faults.on_chunk is not None:
                faults.on_chunk(name, sent)

        where = f"volume {v.volume} ({desired.docker_host}:{mountpoint} -> k3s:{folder})"
        done = copying.stream(src, mountpoint, dst, folder, where=where, on_chunk=chunk)
        task.done(f"{done.bytes >> 20} MiB in {done.seconds:.1f} s")
        if faults.after_copy is not None:
            faults.after_copy(v.volume, folder)
        st = st.with_copied(v.volume)
        records.save(state_dir, st)
        facts[f"volume.{v.volume}"] = f"{done.bytes} bytes streamed in {done.seconds:.1f} s"
    return facts, st


def verify(reach: Reach, desired: MoveDesired, st: MoveState, state_dir: Path) -> dict[str, str]:
    """Each volume and its copy: the same files, bytes and checksums, and the source as it was at the stop."""
    src, dst = reach.docker.ssh(), reach.k3s.ssh()
    facts: dict[str, str] = {}
    for v in desired.volumes:
        mountpoint = st.fact("stop", f"volume.{v.volume}.mountpoint")
        folder = st.fact("pvcs", f"pvc.{v.claim}.folder")
        got = copying.verify(
            src,
            mountpoint,
            dst,
            folder,
            where_source=f"{reach.where_docker} volume {v.volume}",
            where_target=f"{reach.where_k3s} {folder}",
        )
        same_as_at_stop(
            reach,
            desired,
            st,
            v.volume,
            got.source,
            state_dir=state_dir,
            what="changed since the stop",
            hint="something writes to the volume while the service is stopped: find it, then run again",
        )
        if not got.ok:
            raise ChecksumMismatch(
                f"the copy of volume {v.volume} differs from it: {got.diff.summary()}",
                volume=v.volume,
                missing=got.diff.missing,
                extra=got.diff.extra,
                changed=got.diff.changed,
                where=f"{reach.where_k3s} {folder}",
                hint="is something writing to the PV folder? the move was rolled back; run again",
            )
        facts |= {
            f"volume.{v.volume}.files": str(got.target.files),
            f"volume.{v.volume}.bytes": str(got.target.total_bytes),
            f"volume.{v.volume}.copy_sha256": got.target.sha256,
        }
    return facts


def same_as_at_stop(
    reach: Reach,
    desired: MoveDesired,
    st: MoveState,
    volume: str,
    now: Manifest,
    *,
    state_dir: Path,
    what: str,
    hint: str,
) -> None:
    """Raise ChecksumMismatch (``volume <volume> <what>: <diff>``) unless now is the manifest stored at the stop."""
    if now.sha256 == st.fact("stop", f"volume.{volume}.manifest_sha256"):
        return
    diff = compare(_stored_manifest(state_dir, desired, volume), now)
    raise ChecksumMismatch(
        f"volume {volume} {what}: {diff.summary()}",
        volume=volume,
        missing=diff.missing,
        extra=diff.extra,
        changed=diff.changed,
        where=f"{reach.where_docker} volume {volume}",
        hint=hint,
    )


def _stored_manifest(state_dir: Path, desired: MoveDesired, volume: str) -> Manifest:
    path = manifest_file(state_dir, desired, volume)
    return Manifest.parse(path.read_text(), where=str(path))


def apply(reach: Reach, desired: MoveDesired, clock: Clock) -> dict[str, str]:
    """Apply every manifest, wait for the rollouts, and probe the new Ingress until it answers 200."""
    for obj in desired.manifests:
        reach.kube.apply(obj)
    facts = {"manifests_sha256": desired.manifests_sha256, "objects": str(len(desired.manifests))}
    for w in desired.workloads:
        facts[f"rollout.{key(w).target}"] = rollout.wait(
            reach.kube, w, timeout_s=desired.rollout_timeout_s, clock=clock
        )
    for p in desired.probes:
        deadline = clock.monotonic() + desired.health_timeout_s
        while not (answer := probe(p)).startswith("200"):
            if clock.monotonic() >= deadline:
                raise MigrateError(
                    f"GET http://{p.host}{p.path} answers {answer!r} after {desired.health_timeout_s:.0f} s",
                    where=f"Ingress {p.host} ({p.address}:{p.port})",
                    hint="check the Service's port and the Ingress rule the converter made",
                )
            clock.sleep(POLL_S)
        facts[f"probe.{p.host}{p.path}"] = answer
    return facts


def placement(desired: MoveDesired, *, write: bool) -> dict[str, str]:
    """The inventory's placement change: shown, or written when asked."""
    edit = desired.placement
    if edit is None:
        return {"placement": "no edit given"}
    if not write:
        return {"placement": "shown", "edit": edit.show()}
    return {"placement": edit.write(), "edit": edit.show()}


def cleanup(reach: Reach, st: MoveState) -> dict[str, str]:
    """Remove the Compose containers stopped at the stop; their volumes stay."""
    ids = json.loads(st.fact("stop", "containers", "[]"))
    engine = reach.engine()
    removed = []
    with mapped(ENGINE_ERRORS, where=reach.docker):
        for cid in ids:
            with contextlib.suppress(DockerNotFound):  # removed already (a re-run)
                engine.containers.get(cid).remove()
            removed.append(cid[:12])
    return {"removed": ", ".join(removed), "volumes": "kept (allow_delete removes them)"}


def binder_name(desired: MoveDesired) -> str:
    """The name of the pod that binds the PVCs (one per namespace)."""
    slug = "".join(ch if ch.isalnum() else "-" for ch in desired.compose_service.lower()).strip("-")[:40]
    return f"homelab-migrate-bind-{slug or 'service'}"


def under(folder: str, root: str) -> bool:
    """Whether folder lies strictly under root: ``<root>/<name>[/<name>...]``, no part empty, ``.`` or ``..``:
    a PV folder the move may fill (``find -delete`` first) or remove (``rm -rf``). The root itself is not,
    however it is written (``<root>/``, ``<root>//``, ``<root>/.``), nor anything outside it."""
    prefix = root.rstrip("/") + "/"
    if not folder.startswith(prefix):
        return False
    return all(part not in ("", ".", "..") for part in folder[len(prefix) :].split("/"))


def summary(cp: str, facts: Mapping[str, str]) -> str:
    """A checkpoint's facts in a line, for its outcome."""
    if cp == "stop":
        return f"stopped: {facts.get('names', '')}"
    if cp == "apply":
        return f"manifests sha256 {facts.get('manifests_sha256', '')[:12]}"
    shown = "; ".join(f"{k}: {v}" for k, v in facts.items() if k not in ("edit",) and len(v) < 100)
    return shown[:300]


__all__ = [
    "BIND_TIMEOUT_S",
    "POLL_S",
    "PROGRESS_STEP",
    "Faults",
    "apply",
    "binder_name",
    "cleanup",
    "copy",
    "manifest_file",
    "placement",
    "pvcs",
    "same_as_at_stop",
    "stop",
    "summary",
    "under",
    "verify",
]
