"""Moving one service's data and workload from Compose to K3s, as a plan of checkpoints, on the runbook contract.

The move takes the converter's output as its input (:class:`MoveDesired`: the service's
manifests, and per volume the Docker volume and the PVC it goes to) and carries it out in eight
checkpoints (:data:`~homelab_lib.migrate.state.CHECKPOINTS`):

1. ``backup``: the final backup, by the function given (none given: recorded as skipped);
2. ``stop``: the service's Compose containers stopped through the Docker Engine API on its VM;
   their ids, and each volume's Mountpoint and checksum manifest, recorded;
3. ``pvcs``: the PVCs applied (server-side), bound by a short-lived pod that mounts them and
   runs nothing (local-path binds on first consumer), each PV's folder read
   (``spec.hostPath.path`` or ``spec.local.path``; it must lie under the storage root);
4. ``copy``: each volume streamed host to host (:func:`homelab_lib.migrate.copy.stream`); a copy
   that breaks leaves the service stopped and the state recorded: the next run skips the volumes
   already copied and copies the cut one again from scratch;
5. ``verify``: file count, total bytes and per-file sha256 of both sides (and the source still as
   at the stop); a difference fails naming the paths;
6. ``apply``: every manifest by server-side apply, the rollout waited for, health probed through
   the new Ingress (:class:`~homelab_lib.kube.runbook.Probe`);
7. ``placement``: the inventory's edit (:class:`PlacementEdit`) shown, or written when asked;
8. ``cleanup``: the Compose containers removed; the volumes stay (a ``delete`` each, carried out
   only with ``allow_delete``).

Any failure after ``stop`` (but a broken copy stream, which resumes) rolls back
(:meth:`MoveAdapter.rollback`): what was created on K3s is deleted (workload, Service, PVCs, PV
folders), the Compose containers are started again on their original volumes and waited for,
and each volume's manifest is proved equal to the one taken at the stop; then
:class:`~homelab_lib.core.errors.RolledBack` is raised. A failure before the stop (the K3s API does
not answer: observe reads it first) stops nothing.

Every completed checkpoint is written at once to the service's state record
(:mod:`homelab_lib.migrate.state`) and returned in the run's ``ApplyResult.facts``; the plan marks
recorded checkpoints as no-ops, so a later run resumes after the last one completed.

A runbook::

    move = MoveAdapter(desired, docker=hosts["docker-a"], k3s=clients.ssh_target(inv, "k3s-a"),
                       kube=lambda: Kube(kubeconfig, where="k3s"), state_dir=Path("archive"))
    observed = move.observe(desired)
    plan = move.plan(desired, observed)          # done / remaining checkpoints; space refused here
    result = move.apply(desired, plan, confirm=confirm, allow_delete=allow_delete)
    verified = move.verify(desired, result)
"""

from __future__ import annotations

import contextlib
import json
import shlex
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
import paramiko

from homelab_lib.core.clock import SYSTEM, Clock
from homelab_lib.core.contract import (
    DONE,
    FAILED,
    NOT_STARTED,
    Adapter,
    ApplyResult,
    BaseAdapter,
    Carried,
    Check,
    Outcome,
    VerifyResult,
)
from homelab_lib.core.errors import (
    ChecksumMismatch,
    CopyFailed,
    HomelabError,
    MigrateError,
    MigrateRefused,
    RollbackFailed,
    RolledBack,
    mapped,
)
from homelab_lib.core.plan import Action, Change, Plan, document_sha256
from homelab_lib.core.progress import Progress
from homelab_lib.hosts.checksums import Manifest, compare, remote_manifest
from homelab_lib.hosts.docker import ENGINE_ERRORS, DockerHost
from homelab_lib.hosts.ssh import SshTarget, connect, run_command
from homelab_lib.inventory.placement import Move, forget_move, record_move
from homelab_lib.kube import rollout
from homelab_lib.kube.client import Kube
from homelab_lib.kube.objects import Key, KubeObject, key, ordered, sealed
from homelab_lib.kube.runbook import Probe, probe
from homelab_lib.migrate import copy as copying
from homelab_lib.migrate import state as records
from homelab_lib.migrate.state import AFTER_STOP, CHECKPOINTS, MoveState

if TYPE_CHECKING:
    import pandas as pd

    from homelab_lib.hosts.docker import HostPool
    from homelab_lib.inventory.model import Inventory

COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"
RUNBOOK = "migrate"
BIND_TIMEOUT_S = 120.0
GONE_TIMEOUT_S = 120.0
POLL_S = 1.0
PROGRESS_STEP = 64 << 20  # bytes per progress step of a volume's copy

#: A final backup: called with the desired move before the stop; returns what it made (a snapshot id...).
Backup = Callable[["MoveDesired"], str]


# ---------------------------------------------------------------- desired


@dataclass(frozen=True)
class VolumeMove:
    """One Docker volume and the PVC its data goes to.

    Attributes:
        volume: the Docker volume's name on the Docker VM (``docker volume ls``).
        namespace: the PVC's namespace.
        pvc: the PVC's name (one of the manifests).
        container_path: where the service mounts it (for the report).
    """

    volume: str
    namespace: str
    pvc: str
    container_path: str = ""

    @property
    def claim(self) -> str:
        return f"{self.namespace}/{self.pvc}"


@dataclass(frozen=True)
class PlacementEdit:
    """The inventory's placement change: in file, old text becomes new (exactly one occurrence)."""

    file: Path
    old: str
    new: str

    def show(self) -> str:
        """The edit as a unified-diff-like text for people."""
        minus = "".join(f"-{line}\n" for line in self.old.splitlines())
        plus = "".join(f"+{line}\n" for line in self.new.splitlines())
        return f"--- {self.file}\n+++ {self.file}\n{minus}{plus}"

    def write(self) -> str:
        """Make the edit (once); what was done.

        Raises:
            MigrateError: the old text is not found exactly once (and the new one is not there).
        """
        text = self.file.read_text()
        if text.count(self.old) == 1:
            self.file.write_text(text.replace(self.old, self.new))
            return f"written to {self.file}"
        if self.old not in text and self.new in text:
            return f"already in {self.file}"
        raise MigrateError(
            f"the placement edit's old text is found {text.count(self.old)} time(s), not once",
            where=str(self.file),
            hint="make the edit by hand (shown in the plan), then run again",
        )

    def undo(self) -> str:
        text = self.file.read_text()
        if text.count(self.new) == 1:
            self.file.write_text(text.replace(self.new, self.old))
            return f"placement edit undone in {self.file}"
        return f"placement edit not found in {self.file}: undo it by hand"


@dataclass(frozen=True)
class PlacementRecord:
    """The move recorded in the inventory's ``placement_file`` (:mod:`homelab_lib.inventory.placement`):
    every later load of the inventory places the service on K3s; the operator's files are not touched."""

    file: Path
    move: Move

    def show(self) -> str:
        return f"{self.file}: moved.{self.move.service}: to {self.move.to}, from {self.move.origin}"

    def write(self) -> str:
        record_move(self.file, self.move)
        return f"recorded in {self.file}"

    def undo(self) -> str:
        forget_move(self.file, self.move.service)
        return f"move forgotten in {self.file}: {self.move.service} is in {self.move.origin} again"


@dataclass(frozen=True)
class MoveDesired:
    """One service's move, as the converter and the inventory describe it.

    Attributes:
        service: the service, ``stack/service`` (names the state record).
        docker_host: the Docker VM it runs on (for messages).
        project: its Compose project (``com.docker.compose.project``).
        compose_service: its Compose service (``com.docker.compose.service``).
        manifests: the Kubernetes objects, sealed and in apply order.
        volumes: what each volume's data moves into.
        storage_root: the local-path root on the K3s VM (``<k3s data_dir>/storage``); free space is
            read there, and PV folders must lie under it.
        probes: HTTP checks of the new Ingress after the rollout.
        placement: the inventory's edit, or None.
        headroom: the free space wanted, as a multiple of the volumes' bytes.
        rollout_timeout_s: how long the rollout may take.
        health_timeout_s: how long the probes (and, on rollback, the Compose containers) may take.
        binder_image: the image of the pod that binds the PVCs (default: the workload's first);
            its container runs ``sh -c 'exit 0'`` and never the service.
    """

    service: str
    docker_host: str
    project: str
    compose_service: str
    manifests: tuple[KubeObject, ...]
    volumes: tuple[VolumeMove, ...]
    storage_root: str
    probes: tuple[Probe, ...] = ()
    placement: PlacementEdit | PlacementRecord | None = None
    headroom: float = 1.1
    rollout_timeout_s: float = 300.0
    health_timeout_s: float = 120.0
    binder_image: str = ""

    @property
    def manifests_sha256(self) -> str:
        """One hash over the manifests (recorded by the apply checkpoint)."""
        return document_sha256({"manifests": list(self.manifests)})

    @property
    def claims(self) -> tuple[KubeObject, ...]:
        return tuple(o for o in self.manifests if o["kind"] == "PersistentVolumeClaim")

    @property
    def workloads(self) -> tuple[KubeObject, ...]:
        return tuple(o for o in self.manifests if o["kind"] in ("Deployment", "StatefulSet"))

    def image(self) -> str:
        if self.binder_image:
            return self.binder_image
        for w in self.workloads:
            containers = w["spec"]["template"]["spec"].get("containers") or []
            if containers:
                return str(containers[0]["image"])
        raise MigrateError(
            "the manifests have no Deployment or StatefulSet to take the binding pod's image from",
            where=self.service,
            hint="give binder_image",
        )


def desired_of(
    service: str,
    *,
    docker_host: str,
    project: str,
    compose_service: str,
    manifests: Sequence[KubeObject],
    volumes: Sequence[VolumeMove],
    storage_root: str,
    probes: Sequence[Probe] = (),
    placement: PlacementEdit | PlacementRecord | None = None,
    runbook: str = RUNBOOK,
    **options: Any,
) -> MoveDesired:
    """A move from the converter's output: its manifests sealed (labels, config hash) and put in apply order.

    Raises:
        MigrateError: a volume names a PVC the manifests do not have.
    """
    objs = ordered([sealed(dict(o), runbook) for o in manifests])
    claims = {key(o).target for o in objs if o["kind"] == "PersistentVolumeClaim"}
    for v in volumes:
        if v.claim not in claims:
            raise MigrateError(
                f"volume {v.volume} goes to PVC {v.claim}, which the manifests do not have",
                where=service,
                hint="give the converter's manifests and volume plan of the same service",
            )
    return MoveDesired(
        service,
        docker_host,
        project,
        compose_service,
        tuple(objs),
        tuple(volumes),
        storage_root.rstrip("/") or "/",
        tuple(probes),
        placement,
        **options,
    )


# ---------------------------------------------------------------- observed


@dataclass(frozen=True)
class ContainerState:
    """A Compose container of the service: id, name, status (``running``, ``exited``...)."""

    id: str
    name: str
    status: str


@dataclass(frozen=True)
class VolumeState:
    """A Docker volume: its Mountpoint ('' when the volume is missing) and its bytes (-1 when not measured)."""

    name: str
    mountpoint: str
    bytes: int = -1


@dataclass(frozen=True)
class MoveObserved:
    """What the move found: its record, the Compose containers, the volumes, the K3s storage, the PVCs."""

    state: MoveState
    containers: tuple[ContainerState, ...]
    volumes: tuple[VolumeState, ...]
    free_bytes: int
    claims: Mapping[str, str] = field(default_factory=dict)

    def table(self) -> pd.DataFrame:
        """One row per checkpoint: done (when) or remaining."""
        import pandas as pd

        return pd.DataFrame(
            [
                {"checkpoint": c, "state": "done" if c in self.state.done else "remaining",
                 "at": self.state.done[c].at if c in self.state.done else "-"}
                for c in CHECKPOINTS
            ],
            columns=["checkpoint", "state", "at"],
        )  # fmt: skip


@dataclass(frozen=True)
class Faults:
    """Fault hooks (tests and rehearsals): called at points of the copy; what they raise is the failure.

    Attributes:
        on_chunk: (volume, bytes sent so far) after each chunk of a volume's stream.
        after_copy: (volume, target folder) after a volume's stream completed.
    """

    on_chunk: Callable[[str, int], None] | None = None
    after_copy: Callable[[str, str], None] | None = None


@dataclass(frozen=True)
class MoveReport:
    """What verify read: each checkpoint's state, and each volume's checksums on both sides."""

    checkpoints: tuple[tuple[str, str, str], ...]
    volumes: tuple[tuple[str, str, str, str, str, str], ...] = ()

    def table(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(list(self.checkpoints), columns=["checkpoint", "state", "at"])

    def checksums(self) -> pd.DataFrame:
        """Per volume: PVC, files, bytes, the manifest sha256 at the source and at the copy."""
        import pandas as pd

        return pd.DataFrame(
            list(self.volumes), columns=["volume", "pvc", "files", "bytes", "source sha256", "copy sha256"]
        )


# ---------------------------------------------------------------- the adapter


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


class MoveAdapter(BaseAdapter[MoveDesired, MoveObserved, MoveReport]):
    """Move one service from Compose to K3s with its data, by the contract's rules; rolls back after the stop.

    Args:
        desired: the move (see :func:`desired_of`), or a function that makes it.
        docker: the service's Docker VM (engine API over SSH); its target is also connected for the copy.
        k3s: how to reach the K3s VM over SSH (PV folders, df).
        kube: opens the cluster client (called at the first observe).
        state_dir: the run archive's folder; the state record is ``<state_dir>/migrate/<service>.json``.
        backup: the final backup (None: the backup checkpoint is recorded as skipped).
        write_placement: write the placement edit back to the inventory (else it is shown).
        faults: fault hooks (tests).
        clock: the clock waits go by.
    """

    name = "migrate"
    world = "the Compose service and the cluster"
    conflicts_block = True

    def __init__(
        self,
        desired: MoveDesired | Callable[[], MoveDesired],
        *,
        docker: DockerHost,
        k3s: SshTarget,
        kube: Callable[[], Kube],
        state_dir: Path,
        backup: Backup | None = None,
        write_placement: bool = False,
        faults: Faults | None = None,
        clock: Clock = SYSTEM,
    ) -> None:
        self._make = desired if callable(desired) else (lambda: desired)
        self.docker = docker
        self.k3s_target = k3s
        self._open_kube = kube
        self._kube: Kube | None = None
        self.state_dir = state_dir
        self.backup = backup
        self.write_placement = write_placement
        self.faults = faults or Faults()
        self.clock = clock
        self._ssh: dict[str, paramiko.SSHClient] = {}
        self._lock = threading.Lock()
        self.owned: HostPool | None = None  # the Docker VM's connection, when :func:`adapter` opened it

    # --------------------------------------------------------- connections

    @property
    def kube(self) -> Kube:
        if self._kube is None:
            self._kube = self._open_kube()
        return self._kube

    def _client(self, which: str) -> paramiko.SSHClient:
        with self._lock:
            got = self._ssh.get(which)
            transport = got.get_transport() if got is not None else None
            if got is None or transport is None or not transport.is_active():
                if got is not None:
                    got.close()
                got = connect(self.docker.target if which == "docker" else self.k3s_target)
                self._ssh[which] = got
            return got

    @property
    def where_docker(self) -> str:
        return self.docker.where

    @property
    def where_k3s(self) -> str:
        t = self.k3s_target
        return f"{t.role} {t.host} (ssh {t.endpoint})"

    def _engine(self) -> Any:
        return self.docker.docker()

    # --------------------------------------------------------- the contract's steps

    def desired(self) -> MoveDesired:
        return self._make()

    def observe(self, desired: MoveDesired) -> MoveObserved:
        """The state record, the K3s API (first: unreachable stops here), the Compose containers, volumes, space.

        Raises:
            K3sUnreachable: the Kubernetes API does not answer; nothing was changed.
            EngineUnreachable, SshError: the Docker VM or the K3s VM cannot be reached.
        """
        st = records.load(self.state_dir, desired.service)
        claims: dict[str, str] = {}
        for obj in desired.claims:
            now = self.kube.get(key(obj))
            claims[key(obj).target] = "" if now is None else str((now.get("status") or {}).get("phase", "Pending"))
        engine = self._engine()
        with mapped(ENGINE_ERRORS, where=self.docker):
            found = engine.containers.list(
                all=True,
                filters={
                    "label": [f"{COMPOSE_PROJECT}={desired.project}", f"{COMPOSE_SERVICE}={desired.compose_service}"]
                },
            )
            containers = tuple(sorted((ContainerState(c.id, c.name, c.status) for c in found), key=lambda c: c.name))
            volumes = []
            for v in desired.volumes:
                try:
                    mountpoint = str(engine.volumes.get(v.volume).attrs.get("Mountpoint") or "")
                except docker.errors.NotFound:
                    mountpoint = ""
                volumes.append(VolumeState(v.volume, mountpoint))
        measure = "copy" not in st.done
        if measure:
            ssh = self._client("docker")
            volumes = [
                VolumeState(v.name, v.mountpoint, copying.folder_bytes(ssh, v.mountpoint, where=self.where_docker))
                if v.mountpoint
                else v
                for v in volumes
            ]
        free = copying.free_bytes(self._client("k3s"), desired.storage_root, where=self.where_k3s) if measure else -1
        return MoveObserved(st, containers, tuple(volumes), free, claims)

    def plan(self, desired: MoveDesired, observed: MoveObserved) -> Plan:
        """The checkpoints done (no-ops) and remaining, refusals (space, nothing to move), volume deletes."""
        return plan_move(self.name, desired, observed, backup=self.backup is not None, write=self.write_placement)

    def refuse_conflicts(self, plan: Plan) -> None:
        raise MigrateRefused([f"{c.kind} {c.target} ({c.where or '-'}): {c.reason}" for c in plan.conflicts])

    def carry_out(
        self,
        desired: MoveDesired,
        observed: MoveObserved,
        plan: Plan,
        todo: Sequence[Change],
        *,
        allow_delete: bool,
        progress: Progress,
        clock: Clock,
    ) -> Carried:
        st = observed.state
        outcomes: list[Outcome] = []
        steps: list[str] = []
        facts: dict[str, str] = {}
        checkpoints = [c for c in todo if c.kind == "checkpoint"]
        task = progress.task(f"migrate {desired.service}", len(checkpoints))
        for n, change in enumerate(checkpoints):
            cp = change.target
            began = clock.monotonic()
            try:
                got, st = self._checkpoint(cp, desired, observed, st, progress, clock)
            except CopyFailed as e:  # no rollback: the record (saved per volume by the copy) lets a re-run resume
                e.hint = (
                    f"run again to resume: {len(st.copied)} volume(s) copied are kept, the one cut short is "
                    "copied again from scratch; or run with rollback=True to bring the Compose service back"
                )
                raise
            except Exception as e:
                if not st.stopped or cp not in AFTER_STOP:
                    raise
                try:
                    undone = self._rollback(desired, st, clock)
                except RollbackFailed as failed:
                    failed.message = f"{cp} failed ({e}); {failed.message}"
                    raise
                outcomes.append(Outcome.of(change, FAILED, str(e), clock.monotonic() - began))
                outcomes += [Outcome.of(c, NOT_STARTED) for c in checkpoints[n + 1 :]]
                raise RolledBack(
                    f"checkpoint {cp} failed ({e}); rolled back: the Compose service runs again "
                    "on its unchanged volumes",
                    checkpoint=cp,
                    cause=e,
                    undone=undone,
                    where=f"{desired.service} ({cp})",
                    hint="fix the cause, then plan again: the move starts over from its backup",
                ) from e
            st = st.with_done(cp, clock.now().isoformat(timespec="seconds"), got)
            records.save(self.state_dir, st)
            facts.update({f"{cp}.{k}": v for k, v in got.items()})
            steps.append(f"{cp}: done")
            outcomes.append(Outcome.of(change, DONE, _summary(cp, got), clock.monotonic() - began))
            task.advance(cp)
        task.done()
        for change in todo:
            if change.kind == "volume" and change.action == Action.DELETE and allow_delete:
                began = clock.monotonic()
                with mapped(ENGINE_ERRORS, where=self.docker):
                    self._engine().volumes.get(change.target).remove()
                steps.append(f"volume {change.target}: removed")
                outcomes.append(Outcome.of(change, DONE, "removed", clock.monotonic() - began))
        facts["state"] = str(records.state_path(self.state_dir, desired.service))
        facts["last_checkpoint"] = st.last
        return Carried(tuple(outcomes), tuple(steps), facts)

    def check(self, desired: MoveDesired, result: ApplyResult) -> VerifyResult[MoveReport]:
        """Every checkpoint recorded; workloads ready; each volume's checksums equal on both sides; probes answer."""
        st = records.load(self.state_dir, desired.service)
        checks = [
            Check("checkpoint", c, desired.service, c in st.done, "done" if c in st.done else "remaining")
            for c in CHECKPOINTS
        ]
        rows = tuple(
            (c, "done" if c in st.done else "remaining", st.done[c].at if c in st.done else "-") for c in CHECKPOINTS
        )
        vols = []
        for v in desired.volumes:
            src = st.fact("stop", f"volume.{v.volume}.manifest_sha256", "-")
            dst = st.fact("verify", f"volume.{v.volume}.copy_sha256", "-")
            vols.append(
                (
                    v.volume,
                    v.claim,
                    st.fact("verify", f"volume.{v.volume}.files", "-"),
                    st.fact("verify", f"volume.{v.volume}.bytes", "-"),
                    src,
                    dst,
                )
            )
            if "verify" in st.done:
                checks.append(
                    Check("volume", v.volume, v.claim, src == dst, f"manifest {dst[:12]} (source {src[:12]})")
                )
        if "apply" in st.done:
            for w in desired.workloads:
                now = self.kube.get(key(w))
                ok, seen = rollout.workload_ready(now) if now is not None else (False, "missing")
                checks.append(Check(w["kind"], key(w).target, "k3s", ok, seen))
            for p in desired.probes:
                answer = probe(p)
                checks.append(Check("ingress", p.host, p.address, answer.startswith("200"), f"GET {p.path}: {answer}"))
        note = f"{len(st.done)} of {len(CHECKPOINTS)} checkpoint(s) done" + (
            f"; next: {st.remaining[0]}" if st.remaining else ""
        )
        return VerifyResult(self.name, result.confirmed, tuple(checks), MoveReport(rows, tuple(vols)), note)

    def close(self) -> None:
        for client in self._ssh.values():
            client.close()
        self._ssh.clear()
        if self._kube is not None:
            self._kube.api.close()  # type: ignore[no-untyped-call]
            self._kube = None
        if self.owned is not None:
            self.owned.close()
            self.owned = None

    # --------------------------------------------------------- checkpoints

    def _checkpoint(
        self, cp: str, desired: MoveDesired, observed: MoveObserved, st: MoveState, progress: Progress, clock: Clock
    ) -> tuple[dict[str, str], MoveState]:
        if cp == "backup":
            made = self.backup(desired) if self.backup is not None else ""
            return {"backup": made or "skipped: no backup function given"}, st
        if cp == "stop":
            return self._stop(desired, observed, st), st
        if cp == "pvcs":
            return self._pvcs(desired, clock), st
        if cp == "copy":
            return self._copy(desired, st, progress)
        if cp == "verify":
            return self._verify(desired, st), st
        if cp == "apply":
            return self._apply(desired, clock), st
        if cp == "placement":
            return self._placement(desired), st
        if cp == "cleanup":
            return self._cleanup(desired, st), st
        raise MigrateError(f"unknown checkpoint {cp!r}", where=desired.service)

    def _manifest_file(self, desired: MoveDesired, volume: str) -> Path:
        base = records.state_path(self.state_dir, desired.service)
        return base.with_name(f"{base.stem}.{volume}.manifest")

    def _stop(self, desired: MoveDesired, observed: MoveObserved, st: MoveState) -> dict[str, str]:
        engine = self._engine()
        ids = [c.id for c in observed.containers]
        with mapped(ENGINE_ERRORS, where=self.docker):
            for cid in ids:
                engine.containers.get(cid).stop(timeout=30)
        facts = {"containers": json.dumps(ids), "names": ", ".join(c.name for c in observed.containers)}
        ssh = self._client("docker")
        for v in observed.volumes:
            m = remote_manifest(ssh, v.mountpoint, where=f"{self.where_docker} volume {v.name}")
            path = self._manifest_file(desired, v.name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(m.text())
            facts |= {
                f"volume.{v.name}.mountpoint": v.mountpoint,
                f"volume.{v.name}.manifest_sha256": m.sha256,
                f"volume.{v.name}.files": str(m.files),
                f"volume.{v.name}.bytes": str(m.total_bytes),
            }
        return facts

    def _pvcs(self, desired: MoveDesired, clock: Clock) -> dict[str, str]:
        for obj in [o for o in desired.manifests if o["kind"] == "Namespace"] + list(desired.claims):
            self.kube.apply(obj)
        facts: dict[str, str] = {}
        namespaces = sorted({key(o).namespace for o in desired.claims})
        for ns in namespaces:
            claims = [key(o).name for o in desired.claims if key(o).namespace == ns]
            pod = self._binder(desired, ns, claims)
            self.kube.apply(pod)
            try:
                for name in claims:
                    facts |= self._bound(desired, ns, name, clock)
            finally:
                self.kube.delete(key(pod))
        return facts

    def _binder(self, desired: MoveDesired, ns: str, claims: Sequence[str]) -> KubeObject:
        pod: KubeObject = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": _binder_name(desired), "namespace": ns},
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

    def _bound(self, desired: MoveDesired, ns: str, name: str, clock: Clock) -> dict[str, str]:
        where = f"PersistentVolumeClaim {ns}/{name}"
        deadline = clock.monotonic() + BIND_TIMEOUT_S
        while True:
            pvc = self.kube.get(Key("v1", "PersistentVolumeClaim", ns, name))
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
        pv = self.kube.get(Key("v1", "PersistentVolume", "", volume)) or {}
        spec = pv.get("spec") or {}
        folder = str((spec.get("hostPath") or {}).get("path") or (spec.get("local") or {}).get("path") or "")
        if not _under(folder, desired.storage_root):
            raise MigrateError(
                f"PV {volume}'s folder {folder or '(none)'} is not under the storage root {desired.storage_root}",
                where=where,
                hint="the PVC must be of the local-path class; check storage_root (k3s data_dir + /storage)",
            )
        return {f"pvc.{ns}/{name}.volume": volume, f"pvc.{ns}/{name}.folder": folder}

    def _copy(self, desired: MoveDesired, st: MoveState, progress: Progress) -> tuple[dict[str, str], MoveState]:
        src, dst = self._client("docker"), self._client("k3s")
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
                if self.faults.on_chunk is not None:
                    self.faults.on_chunk(name, sent)

            where = f"volume {v.volume} ({desired.docker_host}:{mountpoint} -> k3s:{folder})"
            done = copying.stream(src, mountpoint, dst, folder, where=where, on_chunk=chunk)
            task.done(f"{done.bytes >> 20} MiB in {done.seconds:.1f} s")
            if self.faults.after_copy is not None:
                self.faults.after_copy(v.volume, folder)
            st = st.with_copied(v.volume)
            records.save(self.state_dir, st)
            facts[f"volume.{v.volume}"] = f"{done.bytes} bytes streamed in {done.seconds:.1f} s"
        return facts, st

    def _verify(self, desired: MoveDesired, st: MoveState) -> dict[str, str]:
        src, dst = self._client("docker"), self._client("k3s")
        facts: dict[str, str] = {}
        for v in desired.volumes:
            mountpoint = st.fact("stop", f"volume.{v.volume}.mountpoint")
            folder = st.fact("pvcs", f"pvc.{v.claim}.folder")
            got = copying.verify(
                src,
                mountpoint,
                dst,
                folder,
                where_source=f"{self.where_docker} volume {v.volume}",
                where_target=f"{self.where_k3s} {folder}",
            )
            self._same_as_at_stop(
                desired,
                st,
                v.volume,
                got.source,
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
                    where=f"{self.where_k3s} {folder}",
                    hint="is something writing to the PV folder? the move was rolled back; run again",
                )
            facts |= {
                f"volume.{v.volume}.files": str(got.target.files),
                f"volume.{v.volume}.bytes": str(got.target.total_bytes),
                f"volume.{v.volume}.copy_sha256": got.target.sha256,
            }
        return facts

    def _same_as_at_stop(
        self, desired: MoveDesired, st: MoveState, volume: str, now: Manifest, *, what: str, hint: str
    ) -> None:
        """Raise ChecksumMismatch (``volume <volume> <what>: <diff>``) unless now is the manifest stored at the stop."""
        if now.sha256 == st.fact("stop", f"volume.{volume}.manifest_sha256"):
            return
        diff = compare(self._stored_manifest(desired, volume), now)
        raise ChecksumMismatch(
            f"volume {volume} {what}: {diff.summary()}",
            volume=volume,
            missing=diff.missing,
            extra=diff.extra,
            changed=diff.changed,
            where=f"{self.where_docker} volume {volume}",
            hint=hint,
        )

    def _stored_manifest(self, desired: MoveDesired, volume: str) -> Manifest:
        path = self._manifest_file(desired, volume)
        return Manifest.parse(path.read_text(), where=str(path))

    def _apply(self, desired: MoveDesired, clock: Clock) -> dict[str, str]:
        for obj in desired.manifests:
            self.kube.apply(obj)
        facts = {"manifests_sha256": desired.manifests_sha256, "objects": str(len(desired.manifests))}
        for w in desired.workloads:
            facts[f"rollout.{key(w).target}"] = rollout.wait(
                self.kube, w, timeout_s=desired.rollout_timeout_s, clock=clock
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

    def _placement(self, desired: MoveDesired) -> dict[str, str]:
        edit = desired.placement
        if edit is None:
            return {"placement": "no edit given"}
        if not self.write_placement:
            return {"placement": "shown", "edit": edit.show()}
        return {"placement": edit.write(), "edit": edit.show()}

    def _cleanup(self, desired: MoveDesired, st: MoveState) -> dict[str, str]:
        ids = json.loads(st.fact("stop", "containers", "[]"))
        engine = self._engine()
        removed = []
        with mapped(ENGINE_ERRORS, where=self.docker):
            for cid in ids:
                with contextlib.suppress(docker.errors.NotFound):  # removed already (a re-run)
                    engine.containers.get(cid).remove()
                removed.append(cid[:12])
        return {"removed": ", ".join(removed), "volumes": "kept (allow_delete removes them)"}

    # --------------------------------------------------------- rollback

    def rollback(self, desired: MoveDesired, clock: Clock | None = None) -> tuple[str, ...]:
        """Undo a stopped move now: K3s objects and PV folders removed, Compose back on unchanged volumes.

        Returns:
            One line per thing done (nothing when the service was never stopped by a move).

        Raises:
            RollbackFailed: a step failed, or a volume differs from its manifest at the stop.
        """
        st = records.load(self.state_dir, desired.service)
        if not st.stopped:
            return ()
        return self._rollback(desired, st, clock or self.clock)

    def _rollback(self, desired: MoveDesired, st: MoveState, clock: Clock) -> tuple[str, ...]:
        lines: list[str] = []
        where = f"{desired.service} (rollback)"
        if "cleanup" in st.done:
            raise RollbackFailed(
                "the Compose containers were already removed (cleanup done): nothing to bring back",
                where=where,
                hint="deploy the stack again with runbook 02 (its volumes were kept)",
            )
        try:
            if "placement" in st.done and self.write_placement and desired.placement is not None:
                lines.append(desired.placement.undo())
            lines += self._undo_k3s(desired, st, clock)
            # proved before the containers start: a service writes to its volume as it starts (logs, locks)
            lines += self._prove_unchanged(desired, st)
            lines += self._restart_compose(desired, st, clock)
        except HomelabError as e:
            raise RollbackFailed(
                f"the rollback stopped: {e}; done so far: {'; '.join(lines) or 'nothing'}",
                where=where,
                hint="finish it by hand: delete the service's objects on K3s, `docker start` its containers",
            ) from e
        records.save(self.state_dir, MoveState(desired.service, rolled_back=tuple(lines)))
        return tuple(lines)

    def _undo_k3s(self, desired: MoveDesired, st: MoveState, clock: Clock) -> list[str]:
        lines = []
        made = [o for o in desired.manifests if o["kind"] != "Namespace"]
        binders = {Key("v1", "Pod", ns, _binder_name(desired)) for ns in {key(o).namespace for o in desired.claims}}
        for k in sorted(binders) + [key(o) for o in reversed(made)]:
            self.kube.delete(k)
        lines.append(f"deleted {len(made)} object(s) on K3s")
        deadline = clock.monotonic() + GONE_TIMEOUT_S
        for obj in desired.claims:
            while self.kube.get(key(obj)) is not None:
                if clock.monotonic() >= deadline:
                    raise MigrateError(
                        f"{key(obj)} is still there after {GONE_TIMEOUT_S:.0f} s",
                        where="k3s",
                        hint="a pod still uses it: kubectl get pods",
                    )
                clock.sleep(POLL_S)
        ssh = self._client("k3s")
        for v in desired.volumes:
            folder = st.fact("pvcs", f"pvc.{v.claim}.folder")
            if folder and _under(folder, desired.storage_root):
                got = run_command(ssh, f"rm -rf -- {shlex.quote(folder)}", timeout=600, where=self.where_k3s)
                if not got.ok:
                    raise MigrateError(f"cannot remove {folder}: {got.stderr.strip()}", where=self.where_k3s)
                lines.append(f"removed PV folder {folder}")
        return lines

    def _restart_compose(self, desired: MoveDesired, st: MoveState, clock: Clock) -> list[str]:
        ids = json.loads(st.fact("stop", "containers", "[]"))
        engine = self._engine()
        with mapped(ENGINE_ERRORS, where=self.docker):
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
                            where=self.where_docker,
                            hint=f"docker logs {c.name}",
                        )
                    clock.sleep(POLL_S)
        return [f"started {len(ids)} Compose container(s) again: running, healthy"]

    def _prove_unchanged(self, desired: MoveDesired, st: MoveState) -> list[str]:
        ssh = self._client("docker")
        lines = []
        for v in desired.volumes:
            mountpoint = st.fact("stop", f"volume.{v.volume}.mountpoint")
            if not mountpoint:
                continue
            now = remote_manifest(ssh, mountpoint, where=f"{self.where_docker} volume {v.volume}")
            self._same_as_at_stop(
                desired,
                st,
                v.volume,
                now,
                what="differs from its manifest at the stop",
                hint="restore it from the final backup",
            )
            lines.append(f"volume {v.volume} unchanged ({now.files} files, manifest {now.sha256[:12]})")
        return lines


def _binder_name(desired: MoveDesired) -> str:
    slug = "".join(ch if ch.isalnum() else "-" for ch in desired.compose_service.lower()).strip("-")[:40]
    return f"homelab-migrate-bind-{slug or 'service'}"


def _under(folder: str, root: str) -> bool:
    parts = folder.split("/")
    return bool(folder) and folder.startswith(root.rstrip("/") + "/") and ".." not in parts and "." not in parts


def _summary(cp: str, facts: Mapping[str, str]) -> str:
    if cp == "stop":
        return f"stopped: {facts.get('names', '')}"
    if cp == "apply":
        return f"manifests sha256 {facts.get('manifests_sha256', '')[:12]}"
    shown = "; ".join(f"{k}: {v}" for k, v in facts.items() if k not in ("edit",) and len(v) < 100)
    return shown[:300]


def storage_root(inv: Inventory) -> str:
    """The local-path root on the inventory's K3s VM: ``<k3s.data_dir>/storage``."""
    if inv.k3s is None:
        raise MigrateError("the inventory has no k3s section: nowhere to move to", where=inv.name)
    return f"{inv.k3s.data_dir.rstrip('/')}/storage"


def adapter(
    inv: Inventory,
    desired: MoveDesired,
    *,
    state_dir: Path,
    backup: Backup | None = None,
    write_placement: bool = False,
    clock: Clock = SYSTEM,
) -> MoveAdapter:
    """Runbook 05's move for an inventory: its Docker VM and K3s VM over SSH, the kubeconfig runbook 03 fetched.

    The Docker VM's connection is opened now and closed by :meth:`MoveAdapter.close`.

    Raises:
        MigrateError: the inventory has no K3s section.
        HostKeyRejected, SshError: the Docker VM cannot be reached.
    """
    from homelab_lib import clients

    k3s = inv.k3s
    if k3s is None:
        raise MigrateError("the inventory has no k3s section: nowhere to move to", where=inv.name)

    pool = clients.docker_hosts(inv, [desired.docker_host])
    move = MoveAdapter(
        desired,
        docker=pool[desired.docker_host],
        k3s=clients.ssh_target(inv, k3s.vm),
        kube=lambda: clients.k3s_kube(inv),
        state_dir=state_dir,
        backup=backup,
        write_placement=write_placement,
        clock=clock,
    )
    move.owned = pool
    return move


if TYPE_CHECKING:  # mypy proves the class offers the contract's steps, names and arguments
    _contract: type[Adapter[MoveDesired, MoveObserved, MoveReport]] = MoveAdapter


__all__ = [
    "Backup",
    "ContainerState",
    "Faults",
    "MoveAdapter",
    "MoveDesired",
    "MoveObserved",
    "MoveReport",
    "PlacementEdit",
    "VolumeMove",
    "VolumeState",
    "adapter",
    "desired_of",
    "plan_move",
    "storage_root",
]
