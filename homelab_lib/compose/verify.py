"""Verify what runs: a row per service from the docker SDK, and a probe of its health endpoint.

The probe goes where a user goes: to the published port on the VM's address,
over HTTP for a health path (a 2xx or 3xx answer passes) or as a TCP connect
for services whose health is ``tcp``; and, for a service the host's reverse proxy
routes to, through the proxy by its Host name too. :func:`checks` turns both into
the contract's checks (:class:`homelab_lib.core.contract.Check`), one per service.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

import requests

from homelab_lib.compose.observe import HostState
from homelab_lib.compose.render import DesiredService, Project
from homelab_lib.core.clock import SYSTEM, Clock
from homelab_lib.core.contract import Check

PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ServiceStatus:
    """One service as it runs (or does not).

    Attributes:
        host, stack, service: which one.
        image: the image its container runs (the desired one when nothing runs).
        state: ``running``, ``exited``... or ``missing``.
        health: ``healthy``, ``unhealthy``, ``starting``, ``none`` or ``-``.
        ports: its published ports.
        uptime_s: seconds since it started (None when not running).
        restarts: the engine's restart count.
        container: its short id ("" when missing).
        current: its config hash is the rendered one.
    """

    host: str
    stack: str
    service: str
    image: str
    state: str
    health: str
    ports: tuple[str, ...]
    uptime_s: float | None
    restarts: int
    container: str
    current: bool

    @property
    def ok(self) -> bool:
        return self.state == "running" and self.health in ("healthy", "none") and self.current


@dataclass(frozen=True)
class ProbeResult:
    """The answer of a service's health endpoint through its published port."""

    host: str
    stack: str
    service: str
    url: str
    ok: bool
    detail: str
    ms: float


def status(projects: Sequence[Project], observed: Mapping[str, HostState], now: datetime) -> list[ServiceStatus]:
    """A status per desired service, in inventory order.

    Args:
        projects: the rendered projects.
        observed: what runs, by host.
        now: the current time (aware, UTC), for uptimes.
    """
    rows = []
    for project in projects:
        state = observed[project.host]
        mine = state.services(project.homelab, project.stack)
        for svc in project.services:
            c = mine.get(svc.name)
            if c is None:
                rows.append(
                    ServiceStatus(
                        project.host, project.stack, svc.name, svc.image, "missing", "-", (), None, 0, "", False
                    )
                )
                continue
            uptime = (now - c.started_at).total_seconds() if c.started_at and c.state == "running" else None
            rows.append(
                ServiceStatus(
                    project.host,
                    project.stack,
                    svc.name,
                    c.image,
                    c.state,
                    c.health,
                    c.ports,
                    uptime,
                    c.restarts,
                    c.short_id,
                    c.config_hash == svc.config_hash,
                )
            )
    return rows


def _probe_one(
    project: Project, svc: DesiredService, session: requests.Session, timeout: float, clock: Clock
) -> list[ProbeResult]:
    out = []
    direct = _probe_port(project, svc, session, timeout, clock)
    if direct is not None:
        out.append(direct)
    if svc.proxy_host and svc.health != "tcp":
        out.append(_probe_proxy(project, svc, session, timeout, clock))
    return out


def _http(
    session: requests.Session, url: str, timeout: float, headers: Mapping[str, str] | None = None
) -> tuple[bool, str]:
    """GET url: (a 2xx or 3xx answer, what came back)."""
    try:
        response = session.get(url, timeout=timeout, allow_redirects=False, headers=dict(headers or {}))
    except requests.RequestException as e:
        return False, f"no answer: {type(e).__name__}"
    return response.status_code < 400, f"HTTP {response.status_code}"


def _probe_proxy(
    project: Project, svc: DesiredService, session: requests.Session, timeout: float, clock: Clock
) -> ProbeResult:
    """The health path through the host's reverse proxy, by the service's Host name (as a browser gets there)."""
    url = f"http://{project.address}:{svc.proxy_port}{svc.health}"
    t0 = clock.monotonic()
    ok, detail = _http(session, url, timeout, {"Host": svc.proxy_host})
    ms = round((clock.monotonic() - t0) * 1000, 1)
    return ProbeResult(project.host, project.stack, svc.name, f"{url} (Host: {svc.proxy_host})", ok, detail, ms)


def _probe_port(
    project: Project, svc: DesiredService, session: requests.Session, timeout: float, clock: Clock
) -> ProbeResult | None:
    tcp = [p for p in svc.ports if p.protocol == "tcp"]
    if not tcp:
        return None
    port = tcp[0]
    t0 = clock.monotonic()
    if svc.health == "tcp":
        url = f"tcp://{port.address}:{port.published}"
        try:
            with socket.create_connection((port.address, port.published), timeout=timeout):
                ok, detail = True, "connected"
        except OSError as e:
            ok, detail = False, f"connect failed: {e.strerror or e}"
    else:
        url = f"http://{port.address}:{port.published}{svc.health}"
        ok, detail = _http(session, url, timeout)
    return ProbeResult(
        project.host, project.stack, svc.name, url, ok, detail, round((clock.monotonic() - t0) * 1000, 1)
    )


def probe(
    projects: Sequence[Project],
    *,
    timeout: float = PROBE_TIMEOUT_S,
    clock: Clock = SYSTEM,
    session: requests.Session | None = None,
) -> list[ProbeResult]:
    """Probe each service's health endpoint through its first published TCP port (in parallel).

    Args:
        projects: the rendered projects (they know each port's address).
        timeout: seconds per probe.
        clock: the clock, for the probe's duration.
        session: the HTTP session (default: a new one that ignores proxy variables).
    """
    own = session is None
    http = session or requests.Session()
    if own:
        http.trust_env = False  # a probe of a VM's address never goes through a proxy
    try:
        jobs = [(p, s) for p in projects for s in p.services]
        with ThreadPoolExecutor(max_workers=8) as pool:
            found = list(pool.map(lambda job: _probe_one(job[0], job[1], http, timeout, clock), jobs))
    finally:
        if own:
            http.close()
    return [r for results in found for r in results]


@dataclass(frozen=True)
class ComposeReport:
    """What verify read, for the notebook's tables and chart: a status per service and the probes."""

    rows: tuple[ServiceStatus, ...]
    probes: tuple[ProbeResult, ...]


def checks(rows: Sequence[ServiceStatus], probes: Sequence[ProbeResult]) -> list[Check]:
    """A check per service: it runs healthy as rendered, and its health endpoint answers (where it has one)."""
    by_service: dict[tuple[str, str, str], list[ProbeResult]] = {}
    for p in probes:
        by_service.setdefault((p.host, p.stack, p.service), []).append(p)
    out = []
    for r in rows:
        found = by_service.get((r.host, r.stack, r.service), [])
        state = f"{r.state} ({r.health})" if r.health != "-" else r.state
        parts = [state if r.current or r.state == "missing" else f"{state}, not as rendered (another config hash)"]
        if r.container:
            parts.append(f"container {r.container}")
        parts += [f"{p.url} {p.detail}" for p in found]
        ok = r.ok and all(p.ok for p in found)
        out.append(Check("service", f"{r.stack}/{r.service}", r.host, ok, ", ".join(parts)))
    return out
