"""What a move finds before it plans: its record, the Compose containers, the volumes, the K3s storage, the PVCs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from homelab_lib.core.errors import mapped
from homelab_lib.hosts.docker import ENGINE_ERRORS, DockerNotFound
from homelab_lib.hosts.labels import COMPOSE_PROJECT, COMPOSE_SERVICE
from homelab_lib.kube.objects import key
from homelab_lib.migrate import copy as copying
from homelab_lib.migrate import state as records
from homelab_lib.migrate.desired import MoveDesired
from homelab_lib.migrate.reach import Reach
from homelab_lib.migrate.state import CHECKPOINTS, MoveState

if TYPE_CHECKING:
    import pandas as pd


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


def observe(reach: Reach, desired: MoveDesired, state_dir: Path) -> MoveObserved:
    """The state record, the K3s API (first: unreachable stops here), the Compose containers, volumes, space.

    Raises:
        K3sUnreachable: the Kubernetes API does not answer; nothing was changed.
        EngineUnreachable, SshError: the Docker VM or the K3s VM cannot be reached.
    """
    st = records.load(state_dir, desired.service)
    claims: dict[str, str] = {}
    for obj in desired.claims:
        now = reach.kube.get(key(obj))
        claims[key(obj).target] = "" if now is None else str((now.get("status") or {}).get("phase", "Pending"))
    engine = reach.engine()
    with mapped(ENGINE_ERRORS, where=reach.docker):
        found = engine.containers.list(
            all=True,
            filters={"label": [f"{COMPOSE_PROJECT}={desired.project}", f"{COMPOSE_SERVICE}={desired.compose_service}"]},
        )
        containers = tuple(sorted((ContainerState(c.id, c.name, c.status) for c in found), key=lambda c: c.name))
        volumes = []
        for v in desired.volumes:
            try:
                mountpoint = str(engine.volumes.get(v.volume).attrs.get("Mountpoint") or "")
            except DockerNotFound:
                mountpoint = ""
            volumes.append(VolumeState(v.volume, mountpoint))
    measure = "copy" not in st.done
    if measure:
        ssh = reach.docker.ssh()
        volumes = [
            VolumeState(v.name, v.mountpoint, copying.folder_bytes(ssh, v.mountpoint, where=reach.where_docker))
            if v.mountpoint
            else v
            for v in volumes
        ]
    free = copying.free_bytes(reach.k3s.ssh(), desired.storage_root, where=reach.where_k3s) if measure else -1
    return MoveObserved(st, containers, tuple(volumes), free, claims)


__all__ = ["ContainerState", "MoveObserved", "VolumeState", "observe"]
