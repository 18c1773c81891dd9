"""What the Docker-volume backup tests (and the stand-in and kube tests) share, once.

The machine's Docker Engine, cleaned at the end of what a run left (:func:`labelled_engine`); images
built from files in memory (:func:`build`), busybox ones FROM scratch among them (:func:`busybox_files`);
a "VM" that is a real sshd on a loopback address logging in to this machine (:func:`docker_vm`); a
restic repository made for a test (:func:`secret_file`, :func:`new_repository`). Each test module
keeps its own label, run id and address, and wraps these in its own module fixtures.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker

from homelab_lab.images import build_context
from homelab_lib.backup import volumes
from homelab_lib.backup.restic import Repository, Restic
from homelab_lib.core.secrets import SecretRef
from homelab_lib.hosts.docker import DockerHost
from tests.sshd_fixtures import start_sshd

Files = dict[str, tuple[bytes, int]]  # a build context: name -> (content, mode)
RESTORE_TEST_LABEL = "homelab.restore-test"  # on the scratch containers the database restore tests start


# ---------------------------------------------------------------- the engine and its images


@contextmanager
def labelled_engine(label: str, run: str, scratch: Sequence[str] = ()) -> Iterator[Any]:
    """The machine's Docker Engine; at the end, removes what the run left on the machine.

    That is what carries ``label=run``: its containers (with their anonymous volumes), networks,
    volumes, and images, those built on others first; the restore tests' scratch containers whose
    name holds ``run``; and ``scratch``, the restore tests' scratch roots on the "VM" (this machine).
    """
    client = docker.from_env()
    try:
        yield client
    finally:
        for root in scratch:
            shutil.rmtree(root, ignore_errors=True)
        mine = {"label": f"{label}={run}"}
        for container in client.containers.list(all=True, filters=mine):
            container.remove(force=True, v=True)
        for container in client.containers.list(all=True, filters={"label": RESTORE_TEST_LABEL}):
            if run in container.name:
                container.remove(force=True, v=True)
        for network in client.networks.list(filters=mine):
            network.remove()
        for volume in client.volumes.list(filters=mine):
            volume.remove(force=True)
        _remove_images(client, mine)
        client.close()


def _remove_images(client: Any, filters: dict[str, str]) -> None:
    """Remove every image ``filters`` lists: an image others are built on is refused until they are gone."""
    while images := client.images.list(filters=filters):
        refused: list[docker.errors.APIError] = []
        for image in images:
            try:
                client.images.remove(image.id, force=True)
            except docker.errors.ImageNotFound:
                pass  # went with one removed before it
            except docker.errors.APIError as e:
                refused.append(e)
        if len(refused) == len(images):
            raise refused[0]


def build(engine: Any, tag: str, files: Files, labels: Mapping[str, str] | None = None) -> Any:
    """Build ``files`` (a Dockerfile among them) as ``tag``, labelled, without a network; the image."""
    image, _ = engine.images.build(
        fileobj=build_context(dict(files)),
        custom_context=True,
        tag=tag,
        labels=dict(labels or {}),
        rm=True,
        forcerm=True,
        network_mode="none",  # the build needs no network (and the engine's bridge may be missing)
    )
    return image


def busybox_files(setup: str, cmd: Sequence[str]) -> Files:
    """The context of an image FROM scratch holding the machine's static busybox (installed as /bin's commands).

    Args:
        setup: shell run once at build time after the install (``mkdir -p /tmp /data``).
        cmd: the image's CMD.
    """
    dockerfile = (
        "FROM scratch\nCOPY busybox /bin/busybox\n"
        f"RUN {json.dumps(['/bin/busybox', 'sh', '-c', f'/bin/busybox --install -s /bin && {setup}'])}\n"
        f"CMD {json.dumps(list(cmd))}\n"
    )
    return {"Dockerfile": (dockerfile.encode(), 0o644), "busybox": (Path("/bin/busybox").read_bytes(), 0o755)}


# ---------------------------------------------------------------- the "VM" and restic


@contextmanager
def docker_vm(folder: Path, address: str, name: str) -> Iterator[DockerHost]:
    """VM ``name``: a real sshd on ``address`` (keys and config in ``folder``) into this machine, opened."""
    with start_sshd(folder, address, host=name) as target, DockerHost.open(target) as host:
        yield host


def secret_file(path: Path, value: str) -> SecretRef:
    """``value`` written to ``path`` (mode 0600), and the reference to it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value + "\n")
    path.chmod(0o600)
    return SecretRef("file", str(path))


def new_repository(host: DockerHost, location: Path, password: SecretRef) -> Restic:
    """A restic repository created at ``location`` on ``host`` (which must not hold one yet)."""
    r = Restic(host, Repository(str(location), password))
    assert volumes.ensure_repository(r, confirm=True)
    return r
