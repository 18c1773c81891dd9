"""A move as the converter and the inventory describe it: the manifests, and where each volume's data goes.

:func:`desired_of` makes a :class:`MoveDesired` from the converter's output (its manifests sealed
and in apply order, a :class:`VolumeMove` per Docker volume); the inventory's change once the move
is done is a :class:`PlacementRecord` (the ``placement_file``) or a :class:`PlacementEdit` (shown,
or written to a parameter file).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from homelab_lib.core.errors import MigrateError
from homelab_lib.core.plan import document_sha256
from homelab_lib.inventory.placement import Move, forget_move, record_move
from homelab_lib.kube.objects import KubeObject, key, ordered, sealed
from homelab_lib.kube.runbook import Probe

if TYPE_CHECKING:
    from homelab_lib.inventory.model import Inventory

RUNBOOK = "migrate"

#: A final backup: called with the desired move before the stop; returns what it made (a snapshot id...).
Backup = Callable[["MoveDesired"], str]


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
        """One hash over the manifests (the plan shows it, the apply checkpoint records it). A Secret counts by
        its config hash, keyed with the homelab's hash key, never by its values: a plain hash over them could
        be tested against guesses offline; a rotated value still changes it."""
        drop = ("data", "stringData")
        shown = [{k: v for k, v in o.items() if o["kind"] != "Secret" or k not in drop} for o in self.manifests]
        return document_sha256({"manifests": shown})

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
    hash_key: bytes | None = None,
    **options: Any,
) -> MoveDesired:
    """A move from the converter's output: its manifests sealed (labels, config hash) and put in apply order.

    ``hash_key`` (the homelab's, :meth:`~homelab_lib.inventory.model.Inventory.hash_key`) keys the config hash
    of each Secret; it is needed when the manifests have one.

    Raises:
        MigrateError: a volume names a PVC the manifests do not have.
        ValueError: a Secret among the manifests, and no hash_key.
    """
    objs = ordered([sealed(dict(o), runbook, hash_key) for o in manifests])
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


def storage_root(inv: Inventory) -> str:
    """The local-path root on the inventory's K3s VM: ``<k3s.data_dir>/storage``."""
    if inv.k3s is None:
        raise MigrateError("the inventory has no k3s section: nowhere to move to", where=inv.name)
    return f"{inv.k3s.data_dir.rstrip('/')}/storage"


__all__ = [
    "RUNBOOK",
    "Backup",
    "MoveDesired",
    "PlacementEdit",
    "PlacementRecord",
    "VolumeMove",
    "desired_of",
    "storage_root",
]
