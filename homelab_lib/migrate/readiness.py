"""Which Compose services could move to K3s, which should, and in what order.

For every Compose service of the inventory a **verdict** for K3s:

- *maps cleanly*: every key converts as it is;
- *approximated*: it converts, but something behaves differently (the report says what);
- *blocked*: it needs what a pod on the K3s node does not have: host devices, the Docker host's
  network, media folders of the Docker host (bind mounts), the Docker socket, or it is a stateful
  database (moved by dump and restore, not by a volume copy under a live writer); or the catalog
  places it on Compose only.

And a **placement suggestion** from the ADR's selection criteria: stable, simple, rarely changing
services stay on Compose; complex ones, development tools and those that need scaling go to K3s.

:func:`dependency_order` orders services so that each comes after what it depends on
(``service=all``: the ADR's "full K8s migration if desired"); a cycle is a :class:`DependencyCycle`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from homelab_lib.convert import DOCKER_SOCKETS, HOST_PATHS_OF_THE_NODE, convert_inventory_service
from homelab_lib.core.errors import DependencyCycle, NotFound

if TYPE_CHECKING:
    import pandas as pd

    from homelab_lib.convert.source import ComposeFile
    from homelab_lib.inventory.model import Inventory

Verdict = Literal["maps cleanly", "approximated", "blocked"]
Placement = Literal["compose", "k3s"]

#: Images of stateful databases (moved by dump and restore, with their clients stopped, not by a volume copy).
DATABASES = re.compile(r"(^|/)(postgres|postgis|mysql|mariadb|mongo|redis|valkey|influxdb|timescaledb|couchdb|"
                       r"elasticsearch|opensearch|cassandra|clickhouse)[^/]*(:|@|$)")  # fmt: skip
#: Images of development tools (the ADR's "development tools": K3s).
DEV_TOOLS = re.compile(r"(^|/)(gitlab-[a-z]+|gitea|forgejo|harbor-[a-z]+|code-server|jenkins|drone|woodpecker-[a-z]+|"
                       r"sonarqube|nexus3?|registry|jupyter[a-z-]*|coder)(:|@|$)")  # fmt: skip


@dataclass(frozen=True)
class Readiness:
    """One Compose service of the inventory, judged for K3s.

    Attributes:
        service: the service.
        hosts: the Docker VMs that run it.
        stack: its stack (on the first host).
        verdict: maps cleanly, approximated, or blocked.
        reasons: why (blockers, or what is approximated or not mapped), one line each.
        suggested: where the ADR's criteria place it.
        why: the criteria that decided, one line each.
        approximated: how many keys the converter approximates.
        not_mapped: how many keys it cannot map.
    """

    service: str
    hosts: tuple[str, ...]
    stack: str
    verdict: Verdict
    reasons: tuple[str, ...]
    suggested: Placement
    why: tuple[str, ...]
    approximated: int
    not_mapped: int


def _blockers(inv: Inventory, name: str) -> list[str]:
    svc = inv.services[name]
    out = []
    if "k3s" not in svc.platforms:
        out.append("the catalog places it on Compose only (platforms: compose)")
    if svc.devices:
        out.append(f"host devices {', '.join(svc.devices)}: the pod needs the device on the K3s node, privileged")
    if svc.network_mode == "host":
        out.append("host networking: it serves on its Docker host's own addresses")
    if svc.per_host:
        out.append("runs once on every Docker host (per_host): it belongs to the host, not to a cluster")
    for bind in svc.binds:
        if bind.host in DOCKER_SOCKETS:
            out.append(f"the Docker socket {bind.host}: K3s has no Docker Engine")
        elif bind.host.startswith("/var/lib/docker"):
            out.append(f"the Docker Engine's own folder {bind.host}: K3s has none")
        elif bind.host not in HOST_PATHS_OF_THE_NODE and not bind.host.startswith(("/sys", "/proc", "/dev")):
            out.append(f"media bind mount {bind.host} -> {bind.container}: those files stay on the Docker host")
    if DATABASES.search(svc.image):
        out.append(
            f"a stateful database ({svc.image.rsplit('/', 1)[-1]}): move it by dump and restore with its clients "
            "stopped, not by a volume copy"
        )
    return out


def _placement(inv: Inventory, name: str, blocked: bool) -> tuple[Placement, list[str]]:
    svc = inv.services[name]
    if blocked:
        return "compose", ["blocked for K3s: it stays where its host's resources are"]
    why: list[str] = []
    if DEV_TOOLS.search(svc.image) or svc.platforms[:1] == ["k3s"]:
        why.append("a development tool: the ADR puts these on K3s (Helm, rolling upgrades, PVCs)")
    if len(svc.volumes) >= 2 or len(svc.ports) >= 3 or len(svc.secrets) >= 2:
        why.append(f"complex: {len(svc.volumes)} volumes, {len(svc.ports)} ports, {len(svc.secrets)} secrets")
    if why:
        return "k3s", why
    return "compose", [
        f"stable and simple ({len(svc.volumes)} volume(s), {len(svc.ports)} port(s), one container), rarely "
        "changing: the ADR keeps it on Compose, where it is easy to read and repair"
    ]


def _hosts(inv: Inventory) -> dict[str, list[tuple[str, str]]]:
    found: dict[str, list[tuple[str, str]]] = {}
    for vm in inv.docker_hosts:
        for stack, names in vm.stacks.items():
            for name in names:
                found.setdefault(name, []).append((vm.name, stack))
    return found


def readiness(inv: Inventory, services: Sequence[str] = ()) -> list[Readiness]:
    """Judge every Compose service of the inventory (or those named) for K3s, without reading any secret.

    Raises:
        NotFound: a service named that no Docker VM runs.
    """
    placed = _hosts(inv)
    for s in services:
        if s not in placed:
            raise NotFound(s, what="Compose service", known=list(placed), where="vms.stacks")
    out = []
    for name, where in placed.items():
        if services and name not in services:
            continue
        conv = convert_inventory_service(inv, where[0][0], name, name, reveal=False)
        blockers = _blockers(inv, name)
        softer = [f"{r.key}: {r.detail}" for r in conv.report if r.status != "mapped"]
        verdict: Verdict = "blocked" if blockers else ("approximated" if softer else "maps cleanly")
        suggested, why = _placement(inv, name, bool(blockers))
        out.append(
            Readiness(
                service=name,
                hosts=tuple(h for h, _ in where),
                stack=where[0][1],
                verdict=verdict,
                reasons=tuple(blockers + softer),
                suggested=suggested,
                why=tuple(why),
                approximated=len(conv.lines("approximated")),
                not_mapped=len(conv.lines("not mapped")),
            )
        )
    return out


def readiness_frame(inv: Inventory, services: Sequence[str] = ()) -> pd.DataFrame:
    """:func:`readiness` as a table for notebooks 00 and 05: one row per Compose service.

    Columns: service, hosts, stack, verdict, suggested, reasons, why, approximated, not mapped.
    """
    import pandas as pd

    rows = [
        {
            "service": r.service,
            "hosts": ", ".join(r.hosts),
            "stack": r.stack,
            "verdict": r.verdict,
            "suggested": r.suggested,
            "reasons": "; ".join(r.reasons) or "-",
            "why": "; ".join(r.why),
            "approximated": r.approximated,
            "not mapped": r.not_mapped,
        }
        for r in readiness(inv, services)
    ]
    cols = ["service", "hosts", "stack", "verdict", "suggested", "reasons", "why", "approximated", "not mapped"]
    return pd.DataFrame(rows, columns=cols)


# ------------------------------------------------------------------ order by dependency


def dependencies(inv: Inventory) -> dict[str, tuple[str, ...]]:
    """What each placed service depends on, from the inventory.

    A service routed by a reverse proxy (``proxy:``) depends on the proxy of its host; a service whose
    environment or command names another placed service (``DB_HOST: postgres``) depends on it.
    """
    placed = _hosts(inv)
    names = list(placed) + [s for s in inv.placed("k3s") if s not in placed]
    proxies = {
        vm.name: n
        for vm in inv.docker_hosts
        for stack in vm.stacks.values()
        for n in stack
        if inv.services[n].reverse_proxy
    }
    out: dict[str, tuple[str, ...]] = {}
    for name in names:
        svc = inv.services[name]
        deps: list[str] = []
        for host, _stack in placed.get(name, []):
            proxy = proxies.get(host)
            if svc.proxy and proxy and proxy != name and proxy not in deps:
                deps.append(proxy)
        text = " ".join([*svc.environment.values(), *svc.command])
        for other in names:
            if other != name and other not in deps and re.search(rf"(?<![\w.-]){re.escape(other)}(?![\w-])", text):
                deps.append(other)
        out[name] = tuple(deps)
    return out


def order(edges: Mapping[str, Iterable[str]], services: Sequence[str], *, where: str = "") -> list[str]:
    """Services ordered so each comes after those it depends on (among ``services``); ties keep their order.

    Raises:
        DependencyCycle: the dependencies among them form a cycle (named, in order).
    """
    chosen = list(dict.fromkeys(services))
    wanted = set(chosen)
    deps = {s: [d for d in edges.get(s, ()) if d in wanted and d != s] for s in chosen}
    done: list[str] = []
    state: dict[str, int] = {}  # 1: on the path, 2: placed

    def visit(s: str, path: list[str]) -> None:
        if state.get(s) == 2:
            return
        if state.get(s) == 1:
            raise DependencyCycle([*path[path.index(s) :], s], where=where)
        state[s] = 1
        for d in deps[s]:
            visit(d, [*path, s])
        state[s] = 2
        done.append(s)

    for s in chosen:
        visit(s, [])
    return done


def dependency_order(inv: Inventory, services: Sequence[str] = ()) -> list[str]:
    """The inventory's Compose services (or those named) in migration order: dependencies first.

    Args:
        inv: the inventory.
        services: the services to order; empty or ``["all"]``: every Compose service.

    Raises:
        NotFound: a service no Docker VM runs.
        DependencyCycle: their dependencies form a cycle.
    """
    placed = list(_hosts(inv))
    chosen = placed if not services or list(services) == ["all"] else list(services)
    for s in chosen:
        if s not in placed:
            raise NotFound(s, what="Compose service", known=placed, where="vms.stacks")
    return order(dependencies(inv), chosen, where=f"inventory {inv.name}")


def compose_dependency_order(compose: ComposeFile, services: Sequence[str] = ()) -> list[str]:
    """A compose file's services (or those named) ordered by ``depends_on`` and ``links``: dependencies first.

    Raises:
        DependencyCycle: they form a cycle.
    """
    edges: dict[str, list[str]] = {}
    for name, svc in compose.services.items():
        deps = (svc or {}).get("depends_on") or []
        found = [str(d) for d in deps]
        found += [str(link).split(":")[0] for link in (svc or {}).get("links") or []]
        edges[name] = found
    return order(edges, list(services) or list(compose.services), where=compose.shown)
