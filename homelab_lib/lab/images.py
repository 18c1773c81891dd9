"""The Docker part of the lab: the engine, and stand-in images for the services.

No image registry is reachable from the lab, so every catalog service placed in
the inventory gets a small stand-in built here: the host's static busybox (in an
image ``FROM scratch``) running ``standin.sh``, which serves the service's ports
and health path and keeps real files in its volumes.

Tags and sharing between labs:

- ``homelab-lab/standin-base:busybox`` is the base; ``homelab-lab/<service>:standin``
  (:func:`standin_image`) is the build of a service's stand-in. Both are shared by
  every lab on the machine and rebuilt only when their inputs change (a hash of
  them is the image label ``homelab.lab.inputs``).
- Each lab also tags what it uses ``homelab-lab/<service>:lab-<inventory name>``
  (:func:`lab_tag`); :func:`image_map` maps catalog images to these, so the
  containers a lab's runbooks create name their lab in their image.
- ``down`` removes the lab's own containers (image ``...:lab-<name>``) and tags.
  The shared images, and stand-in containers that name no lab, go only when no
  other lab's tag is left, so one lab's ``down`` never breaks another running lab.
  Two labs on one machine therefore need different names.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import requests

from homelab_lib.errors import LabError
from homelab_lib.inventory.model import Inventory, Service
from homelab_lib.lab import common
from homelab_lib.lab.common import PartStatus

REPO = "homelab-lab"
BASE_TAG = f"{REPO}/standin-base:busybox"
LABEL = "homelab.lab.standin"
IMAGE_LABEL = "homelab.lab.image"
INPUTS_LABEL = "homelab.lab.inputs"
BUSYBOX = Path("/bin/busybox")
SCRIPT = Path(__file__).with_name("standin.sh")
ENGINE_HINT = (
    "start it (`systemctl start docker`, or `dockerd >/tmp/dockerd.log 2>&1 &` without systemd), "
    "or install it (`apt-get install docker.io`); DOCKER_HOST selects another engine"
)

BASE_DOCKERFILE = f"""\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "sh", "-c", "/bin/busybox --install -s /bin && mkdir -p /www /root /etc /tmp \\
 && chmod 1777 /tmp && echo root:x:0:0:root:/root:/bin/sh >/etc/passwd && echo root:x:0: >/etc/group"]
COPY standin.sh /standin.sh
LABEL {LABEL}="_base"
ENTRYPOINT ["/bin/busybox", "sh", "/standin.sh"]
"""

DockerClient = Any  # docker.DockerClient; the docker SDK has no type hints


def standin_image(service: str) -> str:
    """The tag of a service's stand-in build, shared by every lab on this machine."""
    return f"{REPO}/{service}:standin"


def lab_tag(inv: Inventory, service: str) -> str:
    """The tag by which one lab uses a service's stand-in."""
    return f"{REPO}/{service}:lab-{inv.name}"


def image_map(inv: Inventory) -> dict[str, str]:
    """Catalog image -> the lab's stand-in tag, for every service placed in a lab inventory."""
    common.lab_settings(inv)
    return {inv.services[name].image: lab_tag(inv, name) for name in inv.placed()}


def _is_lab_tag(tag: str, inv: Inventory | None = None) -> bool:
    """True for ``homelab-lab/<service>:lab-<name>`` (of inv's lab, when given)."""
    if not tag.startswith(REPO + "/") or ":" not in tag:
        return False
    suffix = tag.rsplit(":", 1)[1]
    return suffix == f"lab-{inv.name}" if inv is not None else suffix.startswith("lab-")


# ---------------------------------------------------------------- the engine


def engine() -> DockerClient:
    """A docker SDK client for the local engine, after a ping; LabError if it is not reachable."""
    try:
        client = docker.from_env()
        client.ping()
    except (docker.errors.DockerException, requests.RequestException) as e:
        raise LabError(f"the Docker Engine is not reachable ({e})", where="docker engine", hint=ENGINE_HINT) from None
    return client


def engine_status() -> tuple[PartStatus, DockerClient | None]:
    """The engine's status, and a client when it is up."""
    address = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        client = engine()
        version = str(client.version().get("Version", "?"))
    except LabError as e:
        return PartStatus("docker", "engine", address, "down", e.message), None
    return PartStatus("docker", "engine", address, "up", f"Docker Engine {version}"), client


# ---------------------------------------------------------------- build inputs


def _busybox() -> bytes:
    """The host's busybox, which must be a statically linked ELF (it runs in an image with nothing else)."""
    hint = "apt-get install busybox-static"
    try:
        data = BUSYBOX.read_bytes()
    except OSError:
        raise LabError(f"{BUSYBOX} is missing", where="stand-in images", hint=hint) from None
    if not _is_static_elf(data):
        raise LabError(f"{BUSYBOX} is not a statically linked program", where="stand-in images", hint=hint)
    return data


def _is_static_elf(data: bytes) -> bool:
    """True for an ELF executable with no program interpreter (PT_INTERP), i.e. statically linked."""
    if data[:4] != b"\x7fELF" or len(data) < 64:
        return False
    end = "<" if data[5] == 1 else ">"
    if data[4] == 2:  # 64-bit
        (phoff,) = struct.unpack_from(end + "Q", data, 32)
        phentsize, phnum = struct.unpack_from(end + "HH", data, 54)
    else:
        (phoff,) = struct.unpack_from(end + "I", data, 28)
        phentsize, phnum = struct.unpack_from(end + "HH", data, 42)
    for i in range(phnum):
        at = phoff + i * phentsize
        if at + 4 > len(data):
            return False
        (p_type,) = struct.unpack_from(end + "I", data, at)
        if p_type == 3:  # PT_INTERP: needs a dynamic loader
            return False
    return True


def _base_files() -> dict[str, tuple[bytes, int]]:
    return {
        "Dockerfile": (BASE_DOCKERFILE.encode(), 0o644),
        "busybox": (_busybox(), 0o755),
        "standin.sh": (SCRIPT.read_bytes(), 0o755),
    }


def _inputs(files: dict[str, tuple[bytes, int]], *extra: str) -> str:
    return common.digest(*extra, *(part for name in sorted(files) for part in (name, files[name][0])))


def service_dockerfile(name: str, service: Service) -> str:
    """The Dockerfile of one service's stand-in, on the base image."""
    tcp = [str(p.container) for p in service.ports if p.protocol == "tcp"]
    env = {
        "STANDIN_SERVICE": name,
        "STANDIN_PORTS": " ".join(tcp),
        "STANDIN_HEALTH": service.health,
        "STANDIN_VOLUMES": " ".join(service.volumes.values()),
    }
    lines = [
        f"FROM {BASE_TAG}",
        "ENV " + " ".join(f"{k}={json.dumps(v)}" for k, v in env.items()),
        f"LABEL {LABEL}={json.dumps(name)} {IMAGE_LABEL}={json.dumps(service.image)}",
    ]
    if service.ports:
        lines.append("EXPOSE " + " ".join(f"{p.container}/{p.protocol}" for p in service.ports))
    if tcp:
        if service.health == "tcp":
            probe = ["/bin/busybox", "sh", "-c", f"echo | nc -w 2 127.0.0.1 {tcp[0]} >/dev/null"]
        else:
            probe = ["/bin/busybox", "wget", "-q", "-O", "/dev/null", f"http://127.0.0.1:{tcp[0]}{service.health}"]
        lines.append(f"HEALTHCHECK --interval=2s --timeout=3s --retries=3 CMD {json.dumps(probe)}")
    return "\n".join(lines) + "\n"


def _plan(inv: Inventory) -> tuple[tuple[dict[str, tuple[bytes, int]], str], dict[str, tuple[str, str]]]:
    """((base files, base inputs), service -> (Dockerfile, inputs)) for the placed services."""
    base = _base_files()
    base_inputs = _inputs(base)
    services = {}
    for name in inv.placed():
        dockerfile = service_dockerfile(name, inv.services[name])
        services[name] = (dockerfile, common.digest(base_inputs, dockerfile))
    return (base, base_inputs), services


# ---------------------------------------------------------------- build, status, remove


def _short(image: Any) -> str:
    """An image's id as `docker images` shows it: 12 hex digits."""
    return str(image.id).split(":")[-1][:12]


def _get(client: DockerClient, tag: str) -> Any:
    try:
        return client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None


def _build(client: DockerClient, tag: str, files: dict[str, tuple[bytes, int]], inputs: str) -> Any:
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, (data, mode) in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    try:
        image, _ = client.images.build(
            fileobj=context, custom_context=True, tag=tag, labels={INPUTS_LABEL: inputs}, rm=True, forcerm=True
        )
    except docker.errors.BuildError as e:
        log = "".join(str(step.get("stream") or step.get("error") or "") for step in e.build_log)
        tail = "\n".join(log.splitlines()[-10:])
        raise LabError(f"building {tag} failed: {e.msg}\n{tail}", where=f"image {tag}") from None
    except docker.errors.APIError as e:
        raise LabError(f"building {tag} failed: {e}", where=f"image {tag}") from None
    return image


def ensure(inv: Inventory, client: DockerClient, progress: Callable[[str], None]) -> None:
    """Build what is missing or stale, tag this lab's stand-ins, untag those it no longer places."""
    (base_files, base_inputs), services = _plan(inv)
    current = _get(client, BASE_TAG)
    if current is None or current.labels.get(INPUTS_LABEL) != base_inputs:
        progress(f"images: building {BASE_TAG}")
        _build(client, BASE_TAG, base_files, base_inputs)
    built = 0
    for name, (dockerfile, inputs) in services.items():
        image = _get(client, standin_image(name))
        if image is None or image.labels.get(INPUTS_LABEL) != inputs:
            progress(f"images: building {standin_image(name)}")
            image = _build(client, standin_image(name), {"Dockerfile": (dockerfile.encode(), 0o644)}, inputs)
            built += 1
        repo, tag = lab_tag(inv, name).rsplit(":", 1)
        image.tag(repo, tag)
    wanted = {lab_tag(inv, name) for name in services}
    for image in client.images.list(filters={"label": LABEL}):
        for tag in image.tags:
            if _is_lab_tag(tag, inv) and tag not in wanted:
                client.images.remove(tag)
    # Builds replaced by a rebuild: drop them unless a container still uses them.
    for image in client.images.list(filters={"label": LABEL, "dangling": True}):
        with contextlib.suppress(docker.errors.APIError):
            client.images.remove(image.id)
    progress(f"images: {len(services)} stand-ins ready ({built} built), tagged :lab-{inv.name}")


def status(inv: Inventory, client: DockerClient | None) -> list[PartStatus]:
    """One status per placed service: is the lab's stand-in tagged and up to date?"""
    names = inv.placed()
    if client is None:
        return [PartStatus("image", n, lab_tag(inv, n), "down", "the Docker Engine is not reachable") for n in names]
    try:
        _, services = _plan(inv)
    except LabError as e:
        return [PartStatus("image", n, lab_tag(inv, n), "down", e.message) for n in names]
    out = []
    for name, (_, inputs) in services.items():
        tag = lab_tag(inv, name)
        image = _get(client, tag)
        if image is None:
            out.append(PartStatus("image", name, tag, "missing", "not built"))
        elif image.labels.get(INPUTS_LABEL) != inputs:
            out.append(PartStatus("image", name, tag, "down", f"{_short(image)} is stale; `up` rebuilds it"))
        else:
            stands_for = inv.services[name].image
            out.append(PartStatus("image", name, tag, "up", f"{_short(image)}, stands in for {stands_for}"))
    return out


def remove(inv: Inventory, client: DockerClient, progress: Callable[[str], None]) -> None:
    """Remove this lab's containers and tags; the shared images too when no other lab uses them."""
    images = client.images.list(filters={"label": LABEL})
    others = sorted({t for i in images for t in i.tags if _is_lab_tag(t) and not _is_lab_tag(t, inv)})
    removed = 0
    for container in client.containers.list(all=True, filters={"label": LABEL}):
        ref = str(container.attrs.get("Config", {}).get("Image", ""))
        if _is_lab_tag(ref, inv) or not others:
            container.remove(force=True, v=True)
            removed += 1
    mine = sorted({t for i in images for t in i.tags if _is_lab_tag(t, inv)})
    for tag in mine:
        client.images.remove(tag)
    progress(f"images: removed {removed} stand-in container(s) and {len(mine)} tag(s) :lab-{inv.name}")
    if others:
        users = sorted({t.rsplit(":", 1)[1] for t in others})
        progress(f"images: shared stand-ins kept for the other lab(s) using them: {', '.join(users)}")
        return
    # Children before the base: an image with dependent children cannot be removed.
    leftover = client.images.list(filters={"label": LABEL})
    for image in sorted(leftover, key=lambda i: BASE_TAG in i.tags):
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.remove(image.id, force=True)
    progress(f"images: removed {len(leftover)} shared stand-in image(s)")
