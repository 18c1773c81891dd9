"""The PVC layer: a claim's folder found through the Kubernetes API (the lab's K3s stand-in on 127.0.22.4),
backed up and restore-tested over SSH (a real sshd on 127.0.22.5 standing for the K3s VM) with real restic."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from homelab_lib.backup import volumes
from homelab_lib.backup.targets import Target, locate_pvc
from homelab_lib.checksums import local_manifest
from homelab_lib.compose.transport import DockerHost
from homelab_lib.errors import BackupError
from homelab_lib.kube.client import Kube
from tests.backup_fixtures import docker_vm, new_repository, secret_file
from tests.kube_fixtures import remove_engine_leftovers, start_standin, stop_standin

RUN = uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    data_dir = tmp_path_factory.mktemp("k3s")
    proc, kubeconfig = start_standin(data_dir, "127.0.22.4")
    try:
        yield Kube(kubeconfig, where="K3s stand-in")
    finally:
        stop_standin(proc)
        remove_engine_leftovers(data_dir)


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
    ns, pv = f"bk-{RUN}", f"pvc-{RUN}"
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    kube.apply({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
                "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                         "storageClassName": "local-path",
                         "hostPath": {"path": str(folder), "type": "DirectoryOrCreate"}}})  # fmt: skip
    kube.apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data", "namespace": ns},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "local-path", "volumeName": pv,
                         "resources": {"requests": {"storage": "1Gi"}}}})  # fmt: skip
    kube.apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "unbound", "namespace": ns},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "nothing-binds-this",
                         "resources": {"requests": {"storage": "1Gi"}}}})  # fmt: skip

    target = Target("k3s", "k3s-vm", ns, "gitlab", "data", 12.0)
    located = locate_pvc(kube, target)
    assert located.folder == str(folder)
    with pytest.raises(BackupError, match="not bound"):
        locate_pvc(kube, Target("k3s", "k3s-vm", ns, "gitlab", "unbound", 12.0))

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
