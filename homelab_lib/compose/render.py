"""Render the inventory's Compose stacks: one project per (Docker host, stack), byte-for-byte stable.

A rendered :class:`Project` carries the ``compose.yaml`` text (sorted keys, stable
order: re-rendering an unchanged inventory gives the same bytes), the services it
declares with their config hashes, and the secrets it needs *by reference*: the
text names ``./secrets/<name>`` files, whose values are written on the Docker host
at deploy time and never into the rendered text that is shown or archived.

Design points:

- **Project names** are ``<host>-<stack>``: unique per homelab, so a stack name
  (``exporters``) may repeat across hosts and the audit log names one project each.
- **Published ports** bind to the VM's own address (``vm.address``), never 0.0.0.0.
- **Labels** ``homelab.homelab``, ``homelab.host``, ``homelab.stack``,
  ``homelab.service`` and ``homelab.config-hash`` (named in :mod:`homelab_lib.hosts.labels`)
  mark every container, so drift is scoped to its host and a change is found by
  comparing hashes with what runs. The hash covers each secret's current value
  (an HMAC under the homelab's own hash key, :mod:`homelab_lib.core.hashkey`: never the
  value, and nothing a reader of the label can test guesses against), so a rotated secret
  redeploys the services that use it.
- **Shared proxy network**: on a host that runs the reverse proxy (a catalog service
  with ``reverse_proxy: true``, traefik), the proxy and every service of that host
  with a ``proxy:`` sub-domain join the external network ``homelab-proxy``, which
  the deploy step creates; Docker isolates each project's own network, so without
  it the proxy could not reach them.

Rendering does the same for every homelab: the catalog's images, healthchecks,
devices and host networking, and real host paths. A rehearsal lab makes its VMs
look like real ones; nothing here knows about it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from homelab_lib.core.errors import ConfigError, NotFound, Problem
from homelab_lib.core.hashkey import keyed
from homelab_lib.core.secrets import SecretRef, UnresolvedSecret
from homelab_lib.hosts.labels import HASH_LABEL, HOMELAB_LABEL, HOST_LABEL, SERVICE_LABEL, STACK_LABEL
from homelab_lib.inventory.model import Healthcheck, Inventory, Vm

REMOTE_ROOT = "homelab/compose"  # on a real host: relative to the SSH user's home
COMPOSE_FILE = "compose.yaml"
SECRETS_DIR = "secrets"
PROXY_NETWORK = "homelab-proxy"


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
        image: the image to run (the catalog's reference, as written).
        config_hash: hash of the service's rendered definition (the ``homelab.config-hash`` label).
        environment: its plain environment (no secrets ever).
        ports: published ports.
        health: HTTP path probed through the first published port, or ``tcp``.
        has_healthcheck: the rendered service has a healthcheck (deploy waits for ``healthy``).
        proxy_host: the Host name the reverse proxy on this VM routes to it ("" when none does).
        proxy_port: the reverse proxy's published HTTP port on the VM (0 when none routes to it).
    """

    name: str
    image: str
    config_hash: str
    environment: Mapping[str, str]
    ports: tuple[PublishedPort, ...]
    health: str
    has_healthcheck: bool
    proxy_host: str = ""
    proxy_port: int = 0


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
        remote_dir: the project folder on the host (relative to the SSH user's home).
        networks: external networks the project joins (created by the deploy when missing).
        seeds: (absolute host path, text) of bind folders' first files, written only when missing
            (the catalog's ``binds: seed:``); never part of a config hash.
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
    networks: tuple[str, ...] = ()
    seeds: tuple[tuple[str, str], ...] = ()

    def service(self, name: str) -> DesiredService:
        """The service of this project by name.

        Raises:
            NotFound: the project has no such service (also a KeyError).
        """
        for svc in self.services:
            if svc.name == name:
                return svc
        raise NotFound(name, what="service", known=[s.name for s in self.services], where=f"{self.host}/{self.stack}")

    @property
    def digest(self) -> str:
        """sha256 of the rendered text."""
        return hashlib.sha256(self.text.encode()).hexdigest()

    def document(self) -> dict[str, Any]:
        """The rendered text parsed back (for the schema check)."""
        data = yaml.safe_load(self.text)
        assert isinstance(data, dict)
        return data


def remote_dir(project: str) -> str:
    """A project's folder on its Docker host, relative to the SSH user's home."""
    return f"{REMOTE_ROOT}/{project}"


def project_name(host: str, stack: str) -> str:
    """The Compose project name of a stack on a host: unique across the homelab's hosts."""
    return f"{host}-{stack}"


def _source(inv: Inventory) -> str:
    return str(inv.source_files[0]) if inv.source_files else inv.name


def _escape(value: str) -> str:
    """Compose interpolates ``$``; values are literal, so every ``$`` is doubled."""
    return value.replace("$", "$$")


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _healthcheck(hc: Healthcheck, address: str) -> dict[str, Any]:
    return {
        "test": [_escape(part.replace("{address}", address)) for part in hc.test],
        "interval": _seconds(hc.interval_s),
        "timeout": _seconds(hc.timeout_s),
        "retries": hc.retries,
        "start_period": _seconds(hc.start_period_s),
    }


def config_hash(definition: Mapping[str, Any]) -> str:
    """A short, stable hash of a service's rendered definition."""
    canonical = json.dumps(definition, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _secret_digest(key: bytes, ref: SecretRef) -> str:
    """A keyed hash of a secret's current value (never the value), so a rotation changes the config hash.

    The key is the homelab's hash key (:mod:`homelab_lib.core.hashkey`), kept beside the parameters: a hash
    keyed with public names could be tested against guesses offline by whoever reads the label.
    An unresolvable reference hashes as such: the deploy then stops on it, naming the secret.
    """
    try:
        value = ref.reveal()
    except UnresolvedSecret:
        return f"unresolved:{ref}"
    return keyed(key, value)[:16]


def proxy_hosts(inv: Inventory) -> dict[str, int]:
    """The Docker hosts that run a reverse proxy (``reverse_proxy: true``), with its published HTTP port."""
    found: dict[str, int] = {}
    for vm in inv.docker_hosts:
        for services in vm.stacks.values():
            for name in services:
                svc = inv.services[name]
                if svc.reverse_proxy and svc.ports:
                    found.setdefault(vm.name, svc.ports[0].published)
    return found


def _publish(out: dict[str, Any], inv: Inventory, vm: Vm, name: str) -> tuple[PublishedPort, ...]:
    """The service's published ports, bound to the VM's address (or its host networking)."""
    svc = inv.services[name]
    ports = tuple(
        PublishedPort(vm.address, p.published, p.container, p.protocol)
        for p in sorted(svc.ports, key=lambda p: (p.container, p.protocol))
        if p.publish
    )
    if svc.network_mode == "host":
        out["network_mode"] = "host"
        # the service listens on the VM's addresses itself: what it serves is reached at its container port
        ports = tuple(PublishedPort(vm.address, p.container, p.container, p.protocol) for p in ports)
    elif ports:
        out["ports"] = [f"{p.address}:{p.published}:{p.container}/{p.protocol}" for p in ports]
    return ports


def _environment(
    out: dict[str, Any], inv: Inventory, vm: Vm, stack: str, name: str, problems: list[Problem]
) -> list[SecretFile]:
    """The plain environment, and each secret as a file whose path is in ``<NAME>_FILE`` (by reference)."""
    svc = inv.services[name]
    env = {k: _escape(v) for k, v in sorted(svc.environment.items())}
    secret_files: list[SecretFile] = []
    for sname, spec in sorted(svc.secrets.items()):
        ref = spec.ref
        if ref is None and name == "grafana" and sname == "grafana_admin_password" and inv.monitoring:
            ref = inv.monitoring.grafana_admin_password
        if ref is None:
            if spec.required:
                problems.append(
                    Problem(
                        _source(inv),
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
    return secret_files


def _volumes(out: dict[str, Any], inv: Inventory, name: str) -> None:
    """Named volumes (``<service>-<volume>``) and bind mounts (host folders created when missing)."""
    svc = inv.services[name]
    volumes: list[dict[str, Any]] = [
        {"type": "volume", "source": f"{name}-{vol}", "target": target} for vol, target in sorted(svc.volumes.items())
    ]
    for bind in sorted(svc.binds, key=lambda b: b.container):
        entry: dict[str, Any] = {
            "type": "bind",
            "source": bind.host,
            "target": bind.container,
            "bind": {"create_host_path": True},
        }
        if bind.read_only:
            entry["read_only"] = True
        volumes.append(entry)
    if volumes:
        out["volumes"] = volumes


def _limits(out: dict[str, Any], inv: Inventory, vm: Vm, stack: str, name: str, problems: list[Problem]) -> None:
    """Memory and cpu limits; a service asking more cpus than its VM has is a problem."""
    svc = inv.services[name]
    limits: dict[str, Any] = {}
    if svc.resources.memory_mib:
        limits["memory"] = f"{svc.resources.memory_mib}M"
    if svc.resources.cpus:
        if svc.resources.cpus > vm.cores:
            problems.append(
                Problem(
                    _source(inv),
                    0,
                    f"services.{name}.resources.cpus (stack {stack} on {vm.name})",
                    f"service {name} asks {svc.resources.cpus:g} cpus but VM {vm.name} has {vm.cores} cores; "
                    "lower resources.cpus or give the VM more cores",
                )
            )
        limits["cpus"] = f"{svc.resources.cpus:g}"
    if limits:
        out["deploy"] = {"resources": {"limits": limits}}


def _labels(inv: Inventory, vm: Vm, stack: str, name: str, networks: tuple[str, ...]) -> dict[str, str]:
    """The service's own labels, traefik's router when it has a ``proxy:`` sub-domain, and ours (no hash yet)."""
    svc = inv.services[name]
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
        if networks:
            labels["traefik.docker.network"] = PROXY_NETWORK
    labels.update(
        {
            HOMELAB_LABEL: inv.name,
            HOST_LABEL: vm.name,
            STACK_LABEL: stack,
            SERVICE_LABEL: name,
        }
    )
    return labels


def _service(
    inv: Inventory, vm: Vm, stack: str, name: str, proxy_port: int | None, problems: list[Problem]
) -> tuple[dict[str, Any], DesiredService, list[SecretFile], tuple[str, ...]]:
    """One service: its Compose definition, what the plan compares, the secrets it needs, the networks it joins.

    The definition is built step by step (ports, networks, environment and secrets, healthcheck,
    volumes, devices, limits, labels), then hashed with its secrets' digests into its config hash.
    """
    svc = inv.services[name]
    out: dict[str, Any] = {"image": svc.image, "restart": svc.restart}
    if svc.command:
        out["command"] = [_escape(part.replace("{address}", vm.address)) for part in svc.command]
    ports = _publish(out, inv, vm, name)

    networks: tuple[str, ...] = ()
    behind_proxy = proxy_port is not None and (svc.reverse_proxy or bool(svc.proxy and svc.ports))
    if behind_proxy and svc.network_mode != "host":
        networks = (PROXY_NETWORK,)
        out["networks"] = ["default", PROXY_NETWORK]

    secret_files = _environment(out, inv, vm, stack, name, problems)
    hc = svc.healthcheck
    if hc is not None:
        out["healthcheck"] = _healthcheck(hc, vm.address)
    _volumes(out, inv, name)
    if svc.devices:
        out["devices"] = [f"{d}:{d}" for d in sorted(svc.devices)]
    _limits(out, inv, vm, stack, name, problems)

    labels = _labels(inv, vm, stack, name, networks)
    key = inv.hash_key() if secret_files else b""
    secret_digests = {s.name: _secret_digest(key, s.ref) for s in secret_files}
    digest = config_hash({**out, "labels": labels, "secrets": secret_digests})
    labels[HASH_LABEL] = digest
    out["labels"] = dict(sorted(labels.items()))

    desired = DesiredService(
        name=name,
        image=svc.image,
        config_hash=digest,
        environment={k: v for k, v in svc.environment.items()},
        ports=ports,
        health=svc.health,
        has_healthcheck=hc is not None and hc.test[0] != "NONE",
        proxy_host=f"{svc.proxy}.{inv.network.domain}" if behind_proxy and svc.proxy else "",
        proxy_port=proxy_port or 0 if behind_proxy and svc.proxy else 0,
    )
    return out, desired, secret_files, networks


def render_stack(inv: Inventory, vm: Vm, stack: str, problems: list[Problem]) -> Project:
    """Render one stack of one host (problems are appended, not raised)."""
    name = project_name(vm.name, stack)
    services: dict[str, Any] = {}
    desired: list[DesiredService] = []
    secret_files: list[SecretFile] = []
    volumes: dict[str, Any] = {}
    networks: dict[str, None] = {}
    proxy_port = proxy_hosts(inv).get(vm.name)  # the reverse proxy's HTTP port on this VM, if one runs there
    seeds: list[tuple[str, str]] = []
    for svc_name in vm.stacks[stack]:
        for bind in sorted(inv.services[svc_name].binds, key=lambda b: b.container):
            seeds.extend((f"{bind.host.rstrip('/')}/{name}", text) for name, text in sorted(bind.seed.items()))
        definition, want, files, joined = _service(inv, vm, stack, svc_name, proxy_port, problems)
        services[svc_name] = definition
        desired.append(want)
        secret_files.extend(files)
        networks.update(dict.fromkeys(joined))
        for vol in inv.services[svc_name].volumes:
            volumes[f"{svc_name}-{vol}"] = {"labels": {HOST_LABEL: vm.name, STACK_LABEL: stack}}
    doc: dict[str, Any] = {"name": name, "services": services}
    if volumes:
        doc["volumes"] = volumes
    if secret_files:
        doc["secrets"] = {s.name: {"file": f"./{s.path}"} for s in secret_files}
    if networks:
        doc["networks"] = {n: {"external": True, "name": n} for n in networks}
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
        remote_dir=remote_dir(name),
        networks=tuple(networks),
        seeds=tuple(seeds),
    )


def render(inv: Inventory, stacks: Sequence[str] = ()) -> list[Project]:
    """Render every Compose stack of the inventory (or those named), host by host in inventory order.

    Args:
        inv: the inventory.
        stacks: stack names to render; empty for all. A name may also be ``host/stack``. A name no
            host has renders nothing (it may name a stack to take down; the plan says which).

    Returns:
        One project per (host, stack).

    Raises:
        ConfigError: a required secret without a reference, a service asking more cpus than its VM has.
    """
    wanted = set(stacks)
    problems: list[Problem] = []
    projects = []
    for vm in inv.docker_hosts:
        for stack in vm.stacks:
            if wanted and stack not in wanted and f"{vm.name}/{stack}" not in wanted:
                continue
            projects.append(render_stack(inv, vm, stack, problems))
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
