"""What runs on a Docker host, read with the docker SDK into small frozen records.

Nothing here changes anything. One :func:`observe` per host lists its containers
(one API call), inspects those that carry this homelab's labels for this host
(restart count, health and its log), and lists the images (to see whether an
image tag now points at another image than the container runs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from homelab_lib.compose.render import Project
from homelab_lib.core.errors import EngineUnreachable, mapped
from homelab_lib.hosts.docker import ENGINE_ERRORS, DockerClient, DockerHost, DockerNotFound
from homelab_lib.hosts.labels import (
    COMPOSE_PROJECT,
    HASH_LABEL,
    HOMELAB_LABEL,
    HOST_LABEL,
    SERVICE_LABEL,
    STACK_LABEL,
)

DEFAULT_REGISTRY = "docker.io"


def normal_image(ref: str) -> str:
    """An image reference in one normal form, as Docker resolves it.

    ``postgres:16.6``, ``library/postgres:16.6`` and ``docker.io/library/postgres:16.6`` are
    one image; so are ``x`` and ``x:latest``. A digest (``@sha256:...``) is kept as given.

    >>> normal_image("postgres:16.6")
    'docker.io/library/postgres:16.6'
    >>> normal_image("lscr.io/linuxserver/sonarr:4.0.11")
    'lscr.io/linuxserver/sonarr:4.0.11'
    """
    name, at, digest = ref.partition("@")
    first, slash, rest = name.partition("/")
    if not slash or ("." not in first and ":" not in first and first != "localhost"):
        domain, path = DEFAULT_REGISTRY, name  # no registry host in front: Docker Hub
    else:
        domain, path = first, rest
    if domain in ("index.docker.io", "registry-1.docker.io"):
        domain = DEFAULT_REGISTRY
    if domain == DEFAULT_REGISTRY and "/" not in path:
        path = f"library/{path}"
    if not at and ":" not in path.rsplit("/", 1)[-1]:
        path += ":latest"
    return f"{domain}/{path}" + (f"@{digest}" if at else "")


@dataclass(frozen=True)
class Container:
    """One container as the engine reports it.

    Attributes:
        id: full container id.
        name: container name.
        homelab, host, stack, service: its ``homelab.*`` labels ("" when absent).
        project: its Compose project label ("" when not made by Compose).
        config_hash: its ``homelab.config-hash`` label.
        image: the image reference it was created from.
        image_id: the image it runs.
        state: ``running``, ``exited``, ``created``, ``restarting``...
        health: ``healthy``, ``unhealthy``, ``starting``, or ``none`` (no healthcheck).
        restarts: the engine's restart count (inspected containers only; else 0).
        started_at: when it last started (inspected containers only).
        ports: published ports, ``addr:port->port/proto``.
        env: its environment (inspected containers only; values never secrets by construction).
        health_log: the last health probe outputs (inspected containers only).
        exit_code: its last exit code.
    """

    id: str
    name: str
    homelab: str
    host: str
    stack: str
    service: str
    project: str
    config_hash: str
    image: str
    image_id: str
    state: str
    health: str
    restarts: int = 0
    started_at: datetime | None = None
    ports: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    health_log: tuple[str, ...] = ()
    exit_code: int = 0

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def up(self) -> bool:
        """Running, and healthy if it has a healthcheck."""
        return self.state == "running" and self.health in ("healthy", "none")


@dataclass(frozen=True)
class HostState:
    """What runs on one Docker host.

    Attributes:
        host: the VM's name.
        engine_id: the engine's ID.
        engine_version: the engine's version.
        containers: every container on the engine (inspected in detail where they are this host's).
        images: image reference in normal form (:func:`normal_image`) -> image id, for the images present.
    """

    host: str
    engine_id: str
    engine_version: str
    containers: tuple[Container, ...]
    images: Mapping[str, str]

    def of(self, homelab: str) -> list[Container]:
        """The containers labelled as this homelab's, on this host."""
        return [c for c in self.containers if c.homelab == homelab and c.host == self.host]

    def services(self, homelab: str, stack: str) -> dict[str, Container]:
        """The container that stands for each service of a stack: a running one first, then by name."""
        found: dict[str, Container] = {}
        for c in sorted(self.of(homelab), key=lambda c: (c.state != "running", c.name)):
            if c.stack == stack:
                found.setdefault(c.service, c)
        return found


def _health(attrs: Mapping[str, Any]) -> tuple[str, tuple[str, ...]]:
    health = attrs.get("State", {}).get("Health") or {}
    status = str(health.get("Status") or "none")
    log = tuple(
        f"exit {entry.get('ExitCode')}: {str(entry.get('Output', '')).strip()}"
        for entry in (health.get("Log") or [])[-3:]
    )
    return status, log


def _summary_health(status: str) -> str:
    for word in ("unhealthy", "healthy", "health: starting"):
        if f"({word})" in status:
            return "starting" if word == "health: starting" else word
    return "none"


def _ports(ports: Any) -> tuple[str, ...]:
    out = set()
    if isinstance(ports, list):  # summary form
        for p in ports:
            if p.get("PublicPort"):
                out.add(f"{p.get('IP', '')}:{p['PublicPort']}->{p['PrivatePort']}/{p.get('Type', 'tcp')}")
    elif isinstance(ports, dict):  # inspect form: NetworkSettings.Ports
        for spec, binds in ports.items():
            for b in binds or []:
                out.add(f"{b.get('HostIp', '')}:{b.get('HostPort')}->{spec}")
    return tuple(sorted(out))


def _parse_time(text: str | None) -> datetime | None:
    if not text or text.startswith("0001-"):
        return None
    main, _, rest = text.partition(".")
    frac = rest.rstrip("Z")[:6]
    zone = "+00:00" if text.endswith("Z") else ""
    try:
        return datetime.fromisoformat(f"{main}.{frac or '0'}{zone}" if frac else f"{main}{zone}")
    except ValueError:
        return None


def _container(summary: Mapping[str, Any], attrs: Mapping[str, Any] | None) -> Container:
    labels = summary.get("Labels") or {}
    names = summary.get("Names") or ["?"]
    base = dict(
        id=str(summary["Id"]),
        name=str(names[0]).lstrip("/"),
        homelab=labels.get(HOMELAB_LABEL, ""),
        host=labels.get(HOST_LABEL, ""),
        stack=labels.get(STACK_LABEL, ""),
        service=labels.get(SERVICE_LABEL, ""),
        project=labels.get(COMPOSE_PROJECT, ""),
        config_hash=labels.get(HASH_LABEL, ""),
        image=str(summary.get("Image", "")),
        image_id=str(summary.get("ImageID", "")),
        state=str(summary.get("State", "")),
        health=_summary_health(str(summary.get("Status", ""))),
        ports=_ports(summary.get("Ports")),
    )
    if attrs is None:
        return Container(**base)
    state = attrs.get("State", {})
    health, log = _health(attrs)
    env = {}
    for item in attrs.get("Config", {}).get("Env") or []:
        key, _, value = str(item).partition("=")
        env[key] = value
    base.update(
        image=str(attrs.get("Config", {}).get("Image", base["image"])),
        image_id=str(attrs.get("Image", base["image_id"])),
        state=str(state.get("Status", base["state"])),
        health=health,
        ports=_ports(attrs.get("NetworkSettings", {}).get("Ports") or {}) or base["ports"],
    )
    return Container(
        **base,
        restarts=int(attrs.get("RestartCount", 0)),
        started_at=_parse_time(state.get("StartedAt")),
        env=env,
        health_log=log,
        exit_code=int(state.get("ExitCode", 0) or 0),
    )


def observe_client(host: str, client: DockerClient, homelab: str) -> HostState:
    """Read what runs, with a docker SDK client (see :func:`observe`)."""
    api = client.api
    info = api.info()
    summaries = api.containers(all=True)
    containers = []
    for s in summaries:
        labels = s.get("Labels") or {}
        mine = labels.get(HOMELAB_LABEL) == homelab and labels.get(HOST_LABEL) == host
        attrs = None
        if mine:
            try:
                attrs = api.inspect_container(s["Id"])
            except DockerNotFound:
                continue  # removed between list and inspect
        containers.append(_container(s, attrs))
    images: dict[str, str] = {}
    for image in api.images():
        for tag in image.get("RepoTags") or []:
            images[normal_image(tag)] = str(image["Id"])
    return HostState(
        host=host,
        engine_id=str(info.get("ID", "")),
        engine_version=str(info.get("ServerVersion", "")),
        containers=tuple(sorted(containers, key=lambda c: c.name)),
        images=images,
    )


def observe(host: DockerHost, homelab: str) -> HostState:
    """What runs on one Docker host (over its SSH connection).

    Raises:
        EngineUnreachable: the engine does not answer.
    """
    client = host.docker()
    with mapped(ENGINE_ERRORS, where=host):
        return observe_client(host.name, client, homelab)


def observe_all(hosts: Mapping[str, DockerHost], homelab: str) -> dict[str, HostState]:
    """:func:`observe` every host, in parallel; by host name."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        futures = {name: pool.submit(observe, h, homelab) for name, h in hosts.items()}
        return {name: f.result() for name, f in futures.items()}


def hosts_of(projects: Sequence[Project]) -> list[str]:
    """The hosts the projects go to, in order."""
    seen: dict[str, None] = {}
    for p in projects:
        seen.setdefault(p.host)
    return list(seen)


__all__ = [
    "Container",
    "EngineUnreachable",
    "HostState",
    "hosts_of",
    "normal_image",
    "observe",
    "observe_all",
    "observe_client",
]
