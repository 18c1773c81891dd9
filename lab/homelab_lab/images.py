"""Stand-in images: each lab VM's engine holds its services' images under their real names.

No image registry is reachable from the lab, so every catalog service a VM runs gets
a small stand-in built in *that VM's own engine*, tagged with the catalog's real
reference (``lscr.io/linuxserver/sonarr:4.0.11``, ``docker.io/library/postgres:16.6``),
exactly as a ``docker pull`` on a real VM would leave it. The Compose files the
runbooks render name those references and carry the catalog's real healthchecks.

A stand-in is ``FROM scratch``: the machine's static busybox (a shell, ``wget``)
and the stand-in program (:mod:`homelab_lab.standin_build`), which serves the
service's ports, its health path and Prometheus ``/metrics``, keeps real files in
its volumes, speaks enough of PostgreSQL and Redis for their healthchecks and dump
hooks, routes by Host like traefik's Docker provider, and answers the real
healthcheck commands (``curl``, ``pg_isready``, ``redis-cli``, ``traefik
healthcheck``) as the real images' tools do.

Prometheus, Alertmanager and node-exporter are not stand-ins: their images hold the machine's real
Debian programs (:mod:`homelab_lab.realbin`), under the catalog's names, with the upstream
images' entrypoints.

Which images a VM gets: the services of its stacks (Docker VMs); the K3s VM gets
the services K3s runs and every placed service that may move to K3s (migration).
Each image carries the label ``homelab.lab.inputs`` (a hash of what built it), so
``up`` rebuilds only what changed.
"""

from __future__ import annotations

import contextlib
import io
import tarfile
from collections.abc import Callable
from typing import Any

import docker

from homelab_lab import common, realbin, standin_build, vms
from homelab_lab.common import PartStatus
from homelab_lab.errors import LabError
from homelab_lib.inventory.model import Inventory, Service, Vm

BASE_TAG = "homelab-lab/standin-base:latest"
LABEL = "homelab.lab.standin"
INPUTS_LABEL = "homelab.lab.inputs"
DockerClient = Any  # docker.DockerClient; the docker SDK has no type hints


def _base_files(inv: Inventory) -> dict[str, tuple[bytes, int]]:
    return standin_build.image_files(common.lab_settings(inv).state_dir / "build")


def _inputs(files: dict[str, tuple[bytes, int]], *extra: str) -> str:
    return common.digest(*extra, *(part for name in sorted(files) for part in (name, files[name][0])))


def service_dockerfile(name: str, service: Service) -> str:
    """The Dockerfile of one service's stand-in, on the base image (tagged with the service's real image)."""
    return standin_build.service_dockerfile(BASE_TAG, name, service, labels={LABEL: name})


def services_of(inv: Inventory, vm: Vm) -> list[str]:
    """The services whose images a VM's engine holds (see the module docstring)."""
    if vm.role == "docker":
        return sorted({s for services in vm.stacks.values() for s in services})
    wanted = set(inv.k3s.services) if inv.k3s else set()
    wanted |= {s for s in inv.placed("compose") if "k3s" in inv.services[s].platforms}
    return sorted(wanted)


# ---------------------------------------------------------------- build, status


def _get(client: DockerClient, tag: str) -> Any:
    try:
        return client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None


def build_context(files: dict[str, tuple[bytes, int]]) -> io.BytesIO:
    """A build context (tar, in memory) of ``files``: name -> (bytes, mode), a Dockerfile among them."""
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, (data, mode) in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    return context


def _build(client: DockerClient, tag: str, files: dict[str, tuple[bytes, int]], inputs: str, where: str) -> Any:
    context = build_context(files)
    try:
        image, _ = client.images.build(
            fileobj=context, custom_context=True, tag=tag, labels={INPUTS_LABEL: inputs}, rm=True, forcerm=True
        )
    except docker.errors.BuildError as e:
        log = "".join(str(step.get("stream") or step.get("error") or "") for step in e.build_log)
        tail = "\n".join(log.splitlines()[-10:])
        raise LabError(f"building {tag} failed: {e.msg}\n{tail}", where=where) from None
    except docker.errors.APIError as e:
        raise LabError(f"building {tag} failed: {e}", where=where) from None
    return image


Files = dict[str, tuple[bytes, int]]


def _plan(inv: Inventory) -> tuple[Files, str, dict[str, tuple[Files, str]]]:
    """(base files, base inputs, service -> (build context, inputs)) for every service some VM holds.

    A stand-in's context is its Dockerfile on the base; a real program's (:mod:`.realbin`) is its own.
    """
    base = _base_files(inv)
    base_inputs = _inputs(base)
    names = sorted({s for vm in inv.vms for s in services_of(inv, vm)})
    services: dict[str, tuple[Files, str]] = {}
    for name in names:
        if name in realbin.PROGRAMS:
            files = realbin.image_files(name, labels={LABEL: name})
            services[name] = (files, _inputs(files))
            continue
        dockerfile = service_dockerfile(name, inv.services[name])
        services[name] = ({"Dockerfile": (dockerfile.encode(), 0o644)}, common.digest(base_inputs, dockerfile))
    return base, base_inputs, services


def ensure(inv: Inventory, progress: Callable[[str], None]) -> None:
    """Build, in each VM's own engine, the stand-ins it lacks or holds stale, under their real names."""
    base_files, base_inputs, services = _plan(inv)
    for vm in inv.vms:
        client = vms.engine(inv, vm)
        where = f"VM {vm.name} engine"
        try:
            current = _get(client, BASE_TAG)
            if current is None or current.labels.get(INPUTS_LABEL) != base_inputs:
                progress(f"images: {vm.name}: building the stand-in base")
                _build(client, BASE_TAG, base_files, base_inputs, where)
            built = 0
            wanted = services_of(inv, vm)
            for name in wanted:
                context, inputs = services[name]
                tag = inv.services[name].image
                image = _get(client, tag)
                if image is None or image.labels.get(INPUTS_LABEL) != inputs:
                    _build(client, tag, context, inputs, where)
                    built += 1
            for image in client.images.list(filters={"label": LABEL, "dangling": True}):
                with contextlib.suppress(docker.errors.APIError):
                    client.images.remove(image.id)
            progress(f"images: {vm.name}: {len(wanted)} stand-in image(s) under their real names ({built} built)")
        finally:
            client.close()


def status(inv: Inventory) -> list[PartStatus]:
    """One status per (VM, service): is the stand-in there under its real name, and current?"""
    try:
        _, _, services = _plan(inv)
    except LabError as e:
        return [PartStatus("image", vm.name, "-", "down", e.message) for vm in inv.vms]
    out = []
    for vm in inv.vms:
        names = services_of(inv, vm)
        try:
            client = vms.engine(inv, vm)
        except LabError as e:
            out += [PartStatus("image", f"{vm.name}/{n}", inv.services[n].image, "down", e.message) for n in names]
            continue
        try:
            for name in names:
                tag = inv.services[name].image
                image = _get(client, tag)
                if image is None:
                    out.append(PartStatus("image", f"{vm.name}/{name}", tag, "missing", "not built"))
                elif image.labels.get(INPUTS_LABEL) != services[name][1]:
                    out.append(PartStatus("image", f"{vm.name}/{name}", tag, "down", "stale; `up` rebuilds it"))
                else:
                    short = str(image.id).split(":")[-1][:12]
                    what = f"real {realbin.PROGRAMS[name].source}" if name in realbin.PROGRAMS else "a stand-in"
                    out.append(PartStatus("image", f"{vm.name}/{name}", tag, "up", f"{short}, {what}"))
        finally:
            client.close()
    return out
