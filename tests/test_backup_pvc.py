"""The PVC layer: a claim's folder found through the Kubernetes API (the lab's K3s stand-in on 127.0.22.4),
backed up and restore-tested over SSH (a real sshd on 127.0.22.5 standing for the K3s VM) with real restic."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from homelab_lib.backup import volumes
from homelab_lib.backup.targets import VolumeTarget, k3s_targets, locate_pvc
from homelab_lib.core.clock import SYSTEM
from homelab_lib.core.errors import BackupError, SourceChanged
from homelab_lib.hosts.checksums import local_manifest
from homelab_lib.hosts.docker import DockerHost
from homelab_lib.inventory import load_inventory
from homelab_lib.inventory.model import ServiceBackup
from homelab_lib.inventory.placement import Move, record_move
from homelab_lib.kube import rollout
from homelab_lib.kube.client import Kube
from homelab_lib.kube.objects import Key
from tests.backup_fixtures import docker_vm, new_repository, secret_file
from tests.kube_fixtures import (
    IMAGE,
    TEST_LABEL,
    _build_test_image,
    remove_engine_leftovers,
    start_standin,
    stop_standin,
    wait_for,
)

RUN = uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    import docker

    engine = docker.from_env()
    built_here = False
    try:
        engine.images.get(IMAGE)  # the pods' image: busybox, built locally (no registry)
    except docker.errors.ImageNotFound:
        _build_test_image(engine)
        built_here = True
    data_dir = tmp_path_factory.mktemp("k3s")
    proc, kubeconfig = start_standin(data_dir, "127.0.22.4")
    try:
        yield Kube(kubeconfig, where="K3s stand-in")
    finally:
        stop_standin(proc)
        remove_engine_leftovers(data_dir)
        if built_here and engine.images.get(IMAGE).labels.get(TEST_LABEL) == "1":
            engine.images.remove(IMAGE, force=True)
        engine.close()


@pytest.fixture(scope="module")
def vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerHost]:
    with docker_vm(tmp_path_factory.mktemp("sshd"), "127.0.22.5", "k3s-vm") as host:
        yield host


def test_a_pvc_is_backed_up_from_its_volume_folder_and_restore_tested(
    kube: Kube, vm: DockerHost, tmp_path: Path
) -> None:
    folder = tmp_path / "local-path" / f"pvc-{RUN}_gitlab_data"
    (folder / "git").mkdir(parents=True)
    (folder / "git" / "repo.pack").write_bytes(os.urandom(300_000))
    (folder / "config.rb").write_text("external_url 'https://gitlab'\n")
    ns = f"bk-{RUN}"
    _claim_on(kube, ns, folder)
    kube.apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "unbound", "namespace": ns},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "nothing-binds-this",
                         "resources": {"requests": {"storage": "1Gi"}}}})  # fmt: skip

    target = VolumeTarget("k3s", "k3s-vm", ns, "gitlab", "data", 12.0)
    located = locate_pvc(kube, target)
    assert located.folder == str(folder)
    with pytest.raises(BackupError, match="not bound"):
        locate_pvc(kube, VolumeTarget("k3s", "k3s-vm", ns, "gitlab", "unbound", 12.0))

    restic = new_repository(vm, tmp_path / "repo", secret_file(tmp_path / "pw", "pvc-test"))
    before = local_manifest(folder)
    done = volumes.backup_target(restic, located)
    snap = restic.snapshots({**target.tags, "kind": "data"})[-1]
    assert snap.tags["layer"] == "k3s"
    assert snap.tags["stack"] == ns
    result = volumes.restore_test(restic, located, scratch_root=str(tmp_path / "scratch"))
    assert result.ok, result.detail
    assert result.snapshot == done.snapshot
    assert local_manifest(folder) == before


def _claim_on(kube: Kube, ns: str, folder: Path) -> None:
    """Namespace ns with PVC ``data`` bound to a PV on ``folder`` (as local-path makes them)."""
    pv = f"pvc-{ns}"
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    kube.apply({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
                "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                         "storageClassName": "local-path",
                         "hostPath": {"path": str(folder), "type": "DirectoryOrCreate"}}})  # fmt: skip
    kube.apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data", "namespace": ns},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "local-path", "volumeName": pv,
                         "resources": {"requests": {"storage": "1Gi"}}}})  # fmt: skip


def test_a_pvc_a_pod_writes_to_is_refused_live_and_backed_up_with_its_workload_scaled_to_zero_and_back(
    kube: Kube, vm: DockerHost, tmp_path: Path
) -> None:
    ns, folder = f"stop-{RUN}", tmp_path / "local-path" / "writer-data"
    (folder / "db").mkdir(parents=True)
    (folder / "db" / "base.dat").write_bytes(os.urandom(200_000))
    _claim_on(kube, ns, folder)
    writer = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "writer", "namespace": ns},
              "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "writer"}},
                       "template": {"metadata": {"labels": {"app": "writer"}},
                                    "spec": {"containers": [{"name": "w", "image": IMAGE, "command": [
                                        "sh", "-c", "while true; do date >> /data/log; usleep 20000; done"],
                                        "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                                        "volumes": [{"name": "data",
                                                     "persistentVolumeClaim": {"claimName": "data"}}]}}}}  # fmt: skip
    kube.apply(writer)
    rollout.wait(kube, writer, timeout_s=120, clock=SYSTEM)
    restic = new_repository(vm, tmp_path / "repo", secret_file(tmp_path / "pw", "pvc-stop-test"))

    live = VolumeTarget("k3s", "k3s-vm", ns, "writer", "data", 12.0)
    with pytest.raises(SourceChanged, match="changed while it was backed up"):  # the pod writes all the time
        volumes.backup_target(restic, locate_pvc(kube, live), engine=kube, attempts=1)
    assert restic.snapshots({**live.tags, "kind": "data"}) == []  # the inconsistent snapshot was dropped

    stopped = VolumeTarget("k3s", "k3s-vm", ns, "writer", "data", 12.0, ServiceBackup(hook="stop"))
    done = volumes.backup_target(restic, locate_pvc(kube, stopped), engine=kube)
    assert done.files == 2
    back = kube.get(Key("apps/v1", "Deployment", ns, "writer"))
    assert back is not None
    assert back["spec"]["replicas"] == 1
    rollout.wait(kube, writer, timeout_s=120, clock=SYSTEM)  # ready again
    size = (folder / "log").stat().st_size
    wait_for("the writer to write after the backup", lambda: (folder / "log").stat().st_size > size, 30)
    result = volumes.restore_test(restic, locate_pvc(kube, stopped), scratch_root=str(tmp_path / "scratch"))
    assert result.ok, result.detail


def test_on_k3s_a_service_whose_catalog_names_a_hook_is_backed_up_stopped(kube: Kube, tmp_path: Path) -> None:
    record = tmp_path / "placement.yaml"
    layer = tmp_path / "layer.yaml"
    layer.write_text(f"placement_file: {record}\n")
    record_move(record, Move("prometheus", "k3s", "docker-hypno/monitoring"))  # catalog: hook stop
    inv = load_inventory([Path(__file__).resolve().parent.parent / "parameters" / "lab.yaml", layer])
    for ns in ("prometheus", "gitlab"):
        _claim_on(kube, ns, tmp_path / ns)
    hooks = {t.service: t.backup.hook for t in k3s_targets(inv, kube)}
    assert hooks == {"prometheus": "stop", "gitlab": "none"}
