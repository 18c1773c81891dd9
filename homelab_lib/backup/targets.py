"""What is backed up: every Docker volume of the stacks and every PVC of the K3s services.

A :class:`VolumeTarget` is a name and tags; :func:`docker_targets` lists them from the inventory.
:func:`locate_volume` and :func:`locate_pvc` find where each one's data is: a folder on a host
reached by SSH (a Docker volume's ``Mountpoint`` by the engine's API; a PVC's PersistentVolume
``spec.hostPath.path`` or ``spec.local.path`` on the K3s VM, by the Kubernetes API). From there
on, one code path backs up and restore-tests "a host and a folder" (:mod:`.volumes`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from homelab_lib.core.errors import BackupError, ErrorTable, mapped
from homelab_lib.hosts.labels import COMPOSE_PROJECT, COMPOSE_SERVICE
from homelab_lib.inventory.model import Inventory, ServiceBackup

if TYPE_CHECKING:
    from homelab_lib.kube.client import Kube

Layer = Literal["docker", "k3s"]


@dataclass(frozen=True)
class VolumeTarget:
    """One Docker volume or PVC to back up.

    Attributes:
        layer: ``docker`` or ``k3s``.
        host: the VM the data is on.
        stack: the Compose stack, or the Kubernetes namespace.
        service: the service.
        volume: the Compose volume key (``data``), or the PVC's name.
        rpo_hours: how old its last backup may be.
        backup: the service's consistency hook (catalog ``backup:``).
        image: the service's image (the restore test's scratch database runs it).
        mount: where the volume is mounted in the service's container.
        environment: the service's plain environment (``POSTGRES_USER``...).
    """

    layer: Layer
    host: str
    stack: str
    service: str
    volume: str
    rpo_hours: float
    backup: ServiceBackup = field(default_factory=ServiceBackup)
    image: str = ""
    mount: str = ""
    environment: tuple[tuple[str, str], ...] = ()

    @property
    def name(self) -> str:
        """``host/stack/service/volume``: how the report and errors name it."""
        return f"{self.host}/{self.stack}/{self.service}/{self.volume}"

    @property
    def slug(self) -> str:
        """The name as one path segment."""
        return self.name.replace("/", "_")

    @property
    def tags(self) -> dict[str, str]:
        """Tags every snapshot of the target carries: layer, host, stack, service, volume."""
        return {
            "layer": self.layer,
            "host": self.host,
            "stack": self.stack,
            "service": self.service,
            "volume": self.volume,
        }

    @property
    def volume_name(self) -> str:
        """The Docker volume's name as Compose makes it: ``<vm>-<stack>_<service>-<volume>``."""
        return f"{self.host}-{self.stack}_{self.service}-{self.volume}"


@dataclass(frozen=True)
class Located:
    """A target, and where its data is.

    Attributes:
        target: the target.
        folder: the data's folder on the host (a volume's Mountpoint, a PV's path).
        container: the id of the service's running container ('' for none, and for PVCs).
    """

    target: VolumeTarget
    folder: str
    container: str = ""


def rpo_of(inv: Inventory, service: str) -> float:
    """A service's RPO in hours (``backups.rpo_hours``, else ``default_rpo_hours``)."""
    return inv.backups.rpo_hours.get(service, inv.backups.default_rpo_hours)


def docker_targets(inv: Inventory, *, services: Iterable[str] = ()) -> list[VolumeTarget]:
    """Every named volume of every stack's services on every Docker host (or of ``services`` only)."""
    only = set(services)
    out = []
    for vm in inv.docker_hosts:
        for stack, names in vm.stacks.items():
            for svc_name in names:
                if only and svc_name not in only:
                    continue
                svc = inv.services[svc_name]
                for vol, mount in sorted(svc.volumes.items()):
                    out.append(
                        VolumeTarget(
                            "docker",
                            vm.name,
                            stack,
                            svc_name,
                            vol,
                            rpo_of(inv, svc_name),
                            svc.backup,
                            svc.image,
                            mount,
                            tuple(sorted(svc.environment.items())),
                        )
                    )
    return out


def k3s_targets(inv: Inventory, kube: Kube) -> list[VolumeTarget]:
    """The PVCs of each K3s service's namespace (the service's name), as the cluster has them now.

    A service whose catalog names a hook is backed up stopped on K3s (``stop``: its workloads that
    mount the claim are scaled to zero, and back): a dump hook would run in the pod, which the toolkit
    does not exec into, and a stopped copy is consistent too. Others are copied live (and refused if the
    folder changes meanwhile).
    """
    if inv.k3s is None:
        return []
    vm = next((v.name for v in inv.vms if v.role == "k3s"), "k3s")
    out = []
    for svc_name in sorted(inv.k3s.services):
        svc = inv.services.get(svc_name)
        hook = ServiceBackup(hook="stop") if svc is not None and svc.backup.hook != "none" else ServiceBackup()
        for pvc in kube.list("v1", "PersistentVolumeClaim", namespace=svc_name):
            name = str(pvc["metadata"]["name"])
            image = svc.image if svc is not None else ""
            out.append(VolumeTarget("k3s", vm, svc_name, svc_name, name, rpo_of(inv, svc_name), hook, image))
    return out


def _engine_error(e: BaseException, where: str) -> BackupError:
    return BackupError(f"the Docker Engine refused: {e}", where=where, hint="is the stack deployed (runbook 02)?")


def _table() -> ErrorTable[str]:
    from homelab_lib.hosts.docker import sdk_errors

    return sdk_errors(_engine_error)


def locate_volume(engine: Any, target: VolumeTarget, *, where: str) -> Located:
    """Where a Docker volume's data is on its host, and the service's running container (docker SDK).

    Args:
        engine: the host's docker SDK client (:meth:`DockerHost.docker`).
        target: a ``docker`` target.
        where: the host, for messages.

    Raises:
        BackupError: the volume does not exist (the stack was never deployed).
    """
    from homelab_lib.hosts.docker import is_not_found

    at = f"{where}, volume {target.volume_name}"
    try:
        with mapped(_table(), where=at):
            volume = engine.volumes.get(target.volume_name)
    except BackupError as e:
        if is_not_found(e.__cause__):
            raise BackupError(
                f"target {target.name}: the volume {target.volume_name} does not exist",
                where=at,
                hint="deploy the stack first (runbook 02), or remove the service from the stack",
            ) from None
        raise
    with mapped(_table(), where=at):
        project = f"{target.host}-{target.stack}"
        containers = engine.containers.list(
            filters={"label": [f"{COMPOSE_PROJECT}={project}", f"{COMPOSE_SERVICE}={target.service}"]}
        )
    return Located(target, str(volume.attrs["Mountpoint"]), containers[0].id if containers else "")


def locate_pvc(kube: Kube, target: VolumeTarget) -> Located:
    """Where a PVC's data is on the K3s VM: its bound PersistentVolume's ``hostPath``/``local`` path.

    Raises:
        BackupError: the PVC is not bound, or its volume is not a local folder.
    """
    from homelab_lib.kube.objects import key

    where = f"PVC {target.stack}/{target.volume}"
    pvc = kube.get(key({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                        "metadata": {"name": target.volume, "namespace": target.stack}}))  # fmt: skip
    pv_name = (pvc or {}).get("spec", {}).get("volumeName", "")
    if not pv_name:
        raise BackupError(
            f"target {target.name}: the claim is not bound to a volume",
            where=where,
            hint="a local-path claim binds when its first pod starts: deploy the service (runbook 04)",
        )
    pv = kube.get(key({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv_name}})) or {}
    spec = pv.get("spec", {})
    path = (spec.get("hostPath") or {}).get("path") or (spec.get("local") or {}).get("path") or ""
    if not path:
        raise BackupError(
            f"target {target.name}: volume {pv_name} is neither hostPath nor local: no folder to back up",
            where=where,
            hint="back it up another way (a CSI snapshot), or move it to the local-path StorageClass",
        )
    return Located(target, str(path))
