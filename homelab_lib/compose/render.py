"""Render the inventory's Compose stacks: one project per (Docker host, stack), byte-for-byte stable.

A rendered :class:`Project` carries the ``compose.yaml`` text (sorted keys, stable
order: re-rendering an unchanged inventory gives the same bytes), the services it
declares with their config hashes, and the secrets it needs *by reference*: the
text names ``./secrets/<name>`` files, whose values are written on the Docker host
at deploy time and never into the rendered text that is shown or archived.

Three design points, settled here for real homelabs and the rehearsal lab alike:

- **Project names** are ``<host>-<stack>``: unique per homelab, so stacks of the
  same name on two hosts never collide when hosts share one engine (the lab).
- **Published ports** bind to the VM's own address (``vm.address``), never 0.0.0.0.
- **Labels** ``homelab.homelab``, ``homelab.host``, ``homelab.stack``,
  ``homelab.service`` and ``homelab.config-hash`` mark every container, so drift is
  scoped to its host and a change is found by comparing hashes with what runs.

The *profile* decides what differs in the lab (:func:`profile_for`): stand-in
images from :func:`homelab_lib.lab.image_map`, busybox healthchecks, bind mounts
and project folders under the lab's state folder, no host devices or host
networking. A real profile changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import secrets as pysecrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from homelab_lib.errors import ConfigError, Problem
from homelab_lib.inventory.model import Healthcheck, Inventory, Service, Vm
from homelab_lib.secrets import SecretRef

LABEL = "homelab"
HASH_LABEL = f"{LABEL}.config-hash"
REMOTE_ROOT = "homelab/compose"  # on a real host: relative to the SSH user's home
COMPOSE_FILE = "compose.yaml"
SECRETS_DIR = "secrets"


@dataclass(frozen=True)
class Profile:
    """What the rendering substitutes for a kind of homelab. The real profile substitutes nothing.

    Attributes:
        name: ``real`` or ``lab``.
        images: catalog image -> image to run instead (the lab's stand-ins).
        state_dir: the lab's state folder; VM folders (projects, bind mounts) live under it.
        lab_secrets: ``service.secret`` -> generated reference, for required secrets the lab
            inventory does not give.
    """

    name: str = "real"
    images: Mapping[str, str] = field(default_factory=dict)
    state_dir: Path | None = None
    lab_secrets: Mapping[str, SecretRef] = field(default_factory=dict)

    @property
    def lab(self) -> bool:
        return self.name == "lab"

    def vm_root(self, vm: str) -> Path:
        """Where a lab VM's own files live (it shares this machine with the other lab VMs)."""
        assert self.state_dir is not None
        return self.state_dir / "vms" / vm

    def remote_dir(self, vm: str, project: str) -> str:
        """The project folder on the Docker host."""
        if self.lab:
            return str(self.vm_root(vm) / "compose" / project)
        return f"{REMOTE_ROOT}/{project}"

    def host_path(self, vm: str, path: str) -> str:
        """A bind mount's source on the Docker host (moved under the lab VM's folder in the lab)."""
        if self.lab:
            return str(self.vm_root(vm) / "fs" / path.lstrip("/"))
        return path


@dataclass(frozen=True)
class PublishedPort:
    """A port published on the Docker host."""

    address: str
    published: int
    container: int
    protocol: str

    def __str__(self) -> str:
        return f"{self.address}:{self.published}->{self.container}/{self.protocol}"


@dataclass(frozen=True)
class DesiredService:
    """One service as rendered: what the plan compares with what runs.

    Attributes:
        name: the service (Compose service name).
        image: the image to run (after the profile's substitution).
        source_image: the catalog's image (the same as image, except where the lab stands in).
        config_hash: hash of the service's rendered definition (the ``homelab.config-hash`` label).
        environment: its plain environment (no secrets ever).
        ports: published ports.
        health: HTTP path probed through the first published port, or ``tcp``.
        has_healthcheck: the rendered service has a healthcheck (deploy waits for ``healthy``).
    """

    name: str
    image: str
    source_image: str
    config_hash: str
    environment: Mapping[str, str]
    ports: tuple[PublishedPort, ...]
    health: str
    has_healthcheck: bool


@dataclass(frozen=True)
class SecretFile:
    """A secret the project needs on the host: its value is read from ``ref`` at deploy time."""

    name: str
    service: str
    ref: SecretRef
    path: str  # relative to the project folder

    def __repr__(self) -> str:
        return f"SecretFile({self.name!r}, ref={self.ref})"


@dataclass(frozen=True)
class Project:
    """One Compose project: a stack on a Docker host.

    Attributes:
        homelab: the inventory's name.
        host: the Docker VM's name.
        address: the VM's address (published ports bind to it; SSH reaches it).
        stack: the stack's name in the inventory.
        name: the Compose project name (``<host>-<stack>``).
        text: the rendered ``compose.yaml``.
        services: the services, in inventory order.
        secrets: the secrets it needs, by reference.
        remote_dir: the project folder on the host.
        profile: ``real`` or ``lab``.
    """

    homelab: str
    host: str
    address: str
    stack: str
    name: str
    text: str
    services: tuple[DesiredService, ...]
    secrets: tuple[SecretFile, ...]
    remote_dir: str
    profile: str = "real"

    def service(self, name: str) -> DesiredService:
        for svc in self.services:
            if svc.name == name:
                return svc
        raise KeyError(name)

    @property
    def digest(self) -> str:
        """sha256 of the rendered text."""
        return hashlib.sha256(self.text.encode()).hexdigest()

    def document(self) -> dict[str, Any]:
        """The rendered text parsed back (for the schema check)."""
        data = yaml.safe_load(self.text)
        assert isinstance(data, dict)
        return data


def project_name(host: str, stack: str) -> str:
    """The Compose project name of a stack on a host: unique across the homelab's hosts."""
    return f"{host}-{stack}"


def profile_for(inv: Inventory) -> Profile:
    """The profile of an inventory: real (no substitution) or the lab's.

    For the lab, required secrets that the lab inventory does not give are generated once
    into ``<state_dir>/secrets/<service>.<secret>`` (mode 600), so the lab deploys the same
    ``secrets:`` shape as a real homelab.
    """
    if inv.profile != "lab":
        return Profile()
    from homelab_lib.lab import image_map  # the lab extra; a real homelab never imports it here

    assert inv.lab is not None
    state_dir = inv.lab.state_dir
    generated: dict[str, SecretRef] = {}
    for name in inv.placed("compose"):
        for sname, spec in inv.services[name].secrets.items():
            if spec.ref is None and spec.required:
                path = state_dir / "secrets" / f"{name}.{sname}"
                if not path.exists():
                    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                    path.touch(mode=0o600)
                    path.write_text(pysecrets.token_urlsafe(24) + "\n")
                generated[f"{name}.{sname}"] = SecretRef("file", str(path))
    return Profile("lab", image_map(inv), state_dir, generated)


def _source(inv: Inventory) -> str:
    return str(inv.source_files[0]) if inv.source_files else inv.name


def _escape(value: str) -> str:
    """Compose interpolates ``$``; values are literal, so every ``$`` is doubled."""
    return value.replace("$", "$$")


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _healthcheck(hc: Healthcheck) -> dict[str, Any]:
    return {
        "test": [_escape(part) for part in hc.test],
        "interval": _seconds(hc.interval_s),
        "timeout": _seconds(hc.timeout_s),
        "retries": hc.retries,
        "start_period": _seconds(hc.start_period_s),
    }


def lab_healthcheck(service: Service) -> Healthcheck | None:
    """The busybox probe the lab's stand-ins answer: the health path over HTTP, or a TCP connect."""
    tcp = [p.container for p in service.ports if p.protocol == "tcp"]
    if not tcp:
        return None
    if service.health == "tcp":
        test = ["CMD", "/bin/busybox", "sh", "-c", f"echo | nc -w 2 127.0.0.1 {tcp[0]} >/dev/null"]
    else:
        test = ["CMD", "/bin/busybox", "wget", "-q", "-O", "/dev/null", f"http://127.0.0.1:{tcp[0]}{service.health}"]
    return Healthcheck(test=test, interval_s=1, timeout_s=3, retries=3, start_period_s=0)


def config_hash(definition: Mapping[str, Any]) -> str:
    """A short, stable hash of a service's rendered definition."""
    canonical = json.dumps(definition, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _service(
    inv: Inventory, vm: Vm, stack: str, name: str, profile: Profile, problems: list[Problem]
) -> tuple[dict[str, Any], DesiredService, list[SecretFile]]:
    svc = inv.services[name]
    where = _source(inv)
    image = profile.images.get(svc.image, svc.image)
    out: dict[str, Any] = {"image": image, "restart": svc.restart}

    network_mode = "bridge" if profile.lab else svc.network_mode
    ports = tuple(
        PublishedPort(vm.address, p.published, p.container, p.protocol)
        for p in sorted(svc.ports, key=lambda p: (p.container, p.protocol))
        if p.publish
    )
    if network_mode == "host":
        out["network_mode"] = "host"
        # the service listens on the VM's addresses itself: what it serves is reached at its container port
        ports = tuple(PublishedPort(vm.address, p.container, p.container, p.protocol) for p in ports)
    elif ports:
        out["ports"] = [f"{p.address}:{p.published}:{p.container}/{p.protocol}" for p in ports]

    env = {k: _escape(v) for k, v in sorted(svc.environment.items())}
    secret_files: list[SecretFile] = []
    for sname, spec in sorted(svc.secrets.items()):
        ref = spec.ref
        if ref is None and name == "grafana" and sname == "grafana_admin_password" and inv.monitoring:
            ref = inv.monitoring.grafana_admin_password
        if ref is None:
            ref = profile.lab_secrets.get(f"{name}.{sname}")
        if ref is None:
            if spec.required:
                problems.append(
                    Problem(
                        where,
                        0,
                        f"services.{name}.secrets.{sname}.ref (stack {stack} on {vm.name})",
                        f"service {name} needs secret {sname}; give a reference in the parameters "
                        f"(services: {name}: secrets: {sname}: {{ref: env:NAME or file:PATH}})",
                    )
                )
            continue
        secret_files.append(SecretFile(sname, name, ref, f"{SECRETS_DIR}/{sname}"))
        env[spec.env or f"{sname.upper()}_FILE"] = f"/run/secrets/{sname}"
    if env:
        out["environment"] = env
    if secret_files:
        out["secrets"] = [s.name for s in secret_files]

    hc = lab_healthcheck(svc) if profile.lab else svc.healthcheck
    if hc is not None:
        out["healthcheck"] = _healthcheck(hc)

    volumes: list[dict[str, Any]] = [
        {"type": "volume", "source": f"{name}-{vol}", "target": target} for vol, target in sorted(svc.volumes.items())
    ]
    for bind in sorted(svc.binds, key=lambda b: b.container):
        entry: dict[str, Any] = {
            "type": "bind",
            "source": profile.host_path(vm.name, bind.host),
            "target": bind.container,
            "bind": {"create_host_path": True},
        }
        if bind.read_only:
            entry["read_only"] = True
        volumes.append(entry)
    if volumes:
        out["volumes"] = volumes

    if svc.devices and not profile.lab:  # the lab's one machine has no /dev/dri to give each VM
        out["devices"] = [f"{d}:{d}" for d in sorted(svc.devices)]

    limits: dict[str, Any] = {}
    if svc.resources.memory_mib:
        limits["memory"] = f"{svc.resources.memory_mib}M"
    if svc.resources.cpus:
        if svc.resources.cpus > vm.cores:
            problems.append(
                Problem(
                    where,
                    0,
                    f"services.{name}.resources.cpus (stack {stack} on {vm.name})",
                    f"service {name} asks {svc.resources.cpus:g} cpus but VM {vm.name} has {vm.cores} cores; "
                    "lower resources.cpus or give the VM more cores",
                )
            )
        limits["cpus"] = f"{svc.resources.cpus:g}"
    if limits:
        out["deploy"] = {"resources": {"limits": limits}}

    labels = {k: _escape(v) for k, v in svc.labels.items()}
    if svc.proxy and svc.ports:
        router = f"{vm.name}-{name}"
        labels.update(
            {
                "traefik.enable": "true",
                f"traefik.http.routers.{router}.rule": f"Host(`{svc.proxy}.{inv.network.domain}`)",
                f"traefik.http.routers.{router}.entrypoints": "web",
                f"traefik.http.services.{router}.loadbalancer.server.port": str(svc.ports[0].container),
            }
        )
    labels.update(
        {
            f"{LABEL}.homelab": inv.name,
            f"{LABEL}.host": vm.name,
            f"{LABEL}.stack": stack,
            f"{LABEL}.service": name,
        }
    )
    digest = config_hash({**out, "labels": labels, "secret_refs": [str(s.ref) for s in secret_files]})
    labels[HASH_LABEL] = digest
    out["labels"] = dict(sorted(labels.items()))

    desired = DesiredService(
        name=name,
        image=image,
        source_image=svc.image,
        config_hash=digest,
        environment={k: v for k, v in svc.environment.items()},
        ports=ports,
        health=svc.health,
        has_healthcheck=hc is not None and hc.test[0] != "NONE",
    )
    return out, desired, secret_files


def render_stack(inv: Inventory, vm: Vm, stack: str, profile: Profile, problems: list[Problem]) -> Project:
    """Render one stack of one host (problems are appended, not raised)."""
    name = project_name(vm.name, stack)
    services: dict[str, Any] = {}
    desired: list[DesiredService] = []
    secret_files: list[SecretFile] = []
    volumes: dict[str, Any] = {}
    for svc_name in vm.stacks[stack]:
        definition, want, files = _service(inv, vm, stack, svc_name, profile, problems)
        services[svc_name] = definition
        desired.append(want)
        secret_files.extend(files)
        for vol in inv.services[svc_name].volumes:
            volumes[f"{svc_name}-{vol}"] = {"labels": {f"{LABEL}.host": vm.name, f"{LABEL}.stack": stack}}
    doc: dict[str, Any] = {"name": name, "services": services}
    if volumes:
        doc["volumes"] = volumes
    if secret_files:
        doc["secrets"] = {s.name: {"file": f"./{s.path}"} for s in secret_files}
    header = (
        f"# Compose project {name}: stack '{stack}' on {vm.name} ({vm.address}) of homelab '{inv.name}'.\n"
        "# Rendered by homelab_lib.compose (runbook 02); edits here are overwritten.\n"
        "# Secrets are files under ./secrets/ on the host, never values in this file.\n"
    )
    text = header + yaml.safe_dump(doc, sort_keys=True, default_flow_style=False, width=1000, allow_unicode=True)
    return Project(
        homelab=inv.name,
        host=vm.name,
        address=vm.address,
        stack=stack,
        name=name,
        text=text,
        services=tuple(desired),
        secrets=tuple(secret_files),
        remote_dir=profile.remote_dir(vm.name, name),
        profile=profile.name,
    )


def render(inv: Inventory, stacks: Sequence[str] = (), profile: Profile | None = None) -> list[Project]:
    """Render every Compose stack of the inventory (or those named), host by host in inventory order.

    Args:
        inv: the inventory.
        stacks: stack names to render; empty for all. A name may also be ``host/stack``. A name no
            host has renders nothing (it may name a stack to take down; the plan says which).
        profile: what to substitute; default :func:`profile_for` the inventory.

    Returns:
        One project per (host, stack).

    Raises:
        ConfigError: a required secret without a reference, a service asking more cpus than its VM has.
    """
    profile = profile if profile is not None else profile_for(inv)
    wanted = set(stacks)
    problems: list[Problem] = []
    projects = []
    for vm in inv.docker_hosts:
        for stack in vm.stacks:
            if wanted and stack not in wanted and f"{vm.name}/{stack}" not in wanted:
                continue
            projects.append(render_stack(inv, vm, stack, profile, problems))
    if problems:
        raise ConfigError(problems)
    return projects


def write(projects: Sequence[Project], folder: Path) -> list[Path]:
    """Write each project's compose.yaml under ``folder/<project>/`` (no secret values); returns the files."""
    out = []
    for project in projects:
        path = folder / project.name / COMPOSE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(project.text)
        out.append(path)
    return out
