"""Carry out a Compose plan: copy each changed project to its host, ``compose up``, wait until healthy.

Per stack that the plan changes (hosts in parallel, a host's stacks in order):

1. copy the project folder over SFTP: ``compose.yaml`` and, in a mode 700
   ``secrets/`` folder, each secret's value read from its reference now (files
   are rewritten only when their content differs);
2. pull what is missing, service by service, before touching any container: a
   failed pull names service and image, and the stack keeps what it ran;
3. ``docker compose -p PROJECT up -d --remove-orphans`` on the host (Compose v2;
   ``docker-compose`` v1 only where v2 is absent); Compose recreates exactly the
   services whose definition changed, so an unchanged service keeps its container;
4. wait until every service runs (and is healthy, where it has a healthcheck); on
   timeout the error names the container and shows the last lines of its health
   log and of its own log.

Unchanged stacks are not touched at all. Nothing happens without ``confirm``;
stacks dropped from the inventory are taken down only with ``allow_delete`` too.
A failure in one stack does not stop the others; the error raised at the end
lists each failure and the state of every service involved.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import docker
import pandas as pd
import requests

from homelab_lib.compose.drift import stacks_to_apply, stacks_to_remove
from homelab_lib.compose.observe import Container, HostState, normal_image, observe
from homelab_lib.compose.render import COMPOSE_FILE, SECRETS_DIR, Project, project_name, remote_dir
from homelab_lib.compose.transport import CommandResult, DockerHost
from homelab_lib.errors import (
    ComposeError,
    DeployFailed,
    HomelabError,
    ImagePullFailed,
    PortTaken,
    SshError,
    Unhealthy,
)
from homelab_lib.plan import Action, Plan
from homelab_lib.progress import Progress, auto
from homelab_lib.secrets import Redactor, UnresolvedSecret

HEALTH_TIMEOUT_S = 180.0
UP_TIMEOUT_S = 600.0
PULL_TIMEOUT_S = 900.0
POLL_S = 0.5
LOG_LINES = 10

Clock = Callable[[], float]
Sleep = Callable[[float], None]
States = dict[tuple[str, str, str], str]


@dataclass(frozen=True)
class StackOutcome:
    """What a deploy did to one stack.

    Attributes:
        host, stack, project: which stack.
        result: ``deployed``, ``removed``, ``failed``, ``would deploy``, ``would remove``,
            ``delete not allowed``.
        services: (service, state) for each of its services afterwards.
        seconds: how long it took.
        error: the failure, when it failed.
    """

    host: str
    stack: str
    project: str
    result: str
    services: tuple[tuple[str, str], ...] = ()
    seconds: float = 0.0
    error: str = ""


@dataclass(frozen=True)
class DeployResult:
    """The outcome of :func:`deploy`: one entry per stack the plan changes."""

    confirmed: bool
    outcomes: tuple[StackOutcome, ...]

    @property
    def ok(self) -> bool:
        return all(o.result != "failed" for o in self.outcomes)

    def summary(self) -> str:
        """One line: what was (or would be) done."""
        if not self.outcomes:
            return "nothing to change: every stack runs as rendered"
        counts: dict[str, int] = {}
        for o in self.outcomes:
            counts[o.result] = counts.get(o.result, 0) + 1
        done = ", ".join(f"{n} {result}" for result, n in counts.items())
        return done if self.confirmed else f"dry run, nothing was changed: {done} (set confirm = True to apply)"

    def table(self) -> pd.DataFrame:
        """One row per stack: host, stack, result, each service's state, seconds, error."""
        return pd.DataFrame(
            [
                {
                    "host": o.host,
                    "stack": o.stack,
                    "result": o.result,
                    "services": "; ".join(f"{s}: {state}" for s, state in o.services) or "-",
                    "seconds": round(o.seconds, 1),
                    "error": o.error or "-",
                }
                for o in self.outcomes
            ],
            columns=["host", "stack", "result", "services", "seconds", "error"],
        )


def _state_text(c: Container | None) -> str:
    if c is None:
        return "not deployed"
    if c.state == "running":
        return f"running ({c.health})" if c.health != "none" else "running"
    if c.state == "exited":
        return f"exited (code {c.exit_code})"
    return c.state


def _current(project: Project, state: HostState) -> dict[str, Container]:
    names = {s.name for s in project.services}
    return {k: c for k, c in state.services(project.homelab, project.stack).items() if k in names}


def _states(project: Project, state: HostState, *, kept: bool = False) -> States:
    now = _current(project, state)
    out: States = {}
    for svc in project.services:
        c = now.get(svc.name)
        text = _state_text(c)
        if kept and c is not None:
            text = f"previous container kept: {text}"
        out[(project.host, project.stack, svc.name)] = text
    return out


def _tail(text: str, lines: int = LOG_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _files(project: Project, redactor: Redactor) -> dict[str, tuple[bytes, int]]:
    files = {COMPOSE_FILE: (project.text.encode(), 0o644)}
    for secret in project.secrets:
        try:
            value = secret.ref.reveal()
        except UnresolvedSecret as e:
            raise DeployFailed(
                f"secret {secret.name} of service {secret.service} does not resolve: {e.message}",
                where=f"{project.host}/{project.stack}",
                hint=e.hint or "set the reference's variable or file, then run again",
            ) from None
        redactor.add(value)
        # readable inside the container whatever user it runs as; the folder (mode 700) keeps others out
        files[f"{SECRETS_DIR}/{secret.name}"] = (value.encode(), 0o644)
    return files


class _StackRun:
    """Deploys one project on one host (the steps of the module docstring)."""

    def __init__(self, project: Project, host: DockerHost, clock: Clock, sleep: Sleep, health_timeout_s: float) -> None:
        self.project = project
        self.host = host
        self.clock = clock
        self.sleep = sleep
        self.health_timeout_s = health_timeout_s
        self.redactor = Redactor()
        self.where = f"{host.name}/{project.stack}"

    def observe(self) -> HostState:
        return observe(self.host, self.project.homelab)

    def compose(self, args: str, timeout: float) -> CommandResult:
        cmd = " ".join(self.host.compose())
        line = f"cd {shlex.quote(self.project.remote_dir)} && {cmd} -p {shlex.quote(self.project.name)} {args}"
        return self.host.run(line, timeout=timeout)

    def run(self, remove_orphans: bool) -> States:
        files = _files(self.project, self.redactor)
        self.host.put_files(self.project.remote_dir, files, private_dirs=(SECRETS_DIR,) if self.project.secrets else ())
        self.host.compose()
        for network in self.project.networks:
            self.host.ensure_network(network)
        before = self.observe()
        self.pull_missing(before)
        self.up(remove_orphans)
        return self.wait_healthy()

    def pull_missing(self, state: HostState) -> None:
        for svc in self.project.services:
            if normal_image(svc.image) in state.images:
                continue
            done = self.compose(f"pull {shlex.quote(svc.name)}", timeout=PULL_TIMEOUT_S)
            if not done.ok:
                reason = self.redactor.redact(_tail(done.stderr or done.stdout, 3))
                raise ImagePullFailed(
                    f"service {svc.name}: image {svc.image} is not on the host and cannot be pulled: {reason}",
                    where=self.where,
                    hint="check the image name and tag in the catalog or parameters, and that the host reaches "
                    "its registry; nothing of this stack was changed",
                    states=_states(self.project, state, kept=True),
                )

    def up(self, remove_orphans: bool) -> None:
        args = "up -d" + (" --remove-orphans" if remove_orphans else "")
        done = self.compose(args, timeout=UP_TIMEOUT_S)
        if done.ok:
            return
        output = self.redactor.redact(_tail(done.stderr or done.stdout, 6))
        after = self.observe()
        states = _states(self.project, after)
        lowered = output.lower()
        if "address already in use" in lowered or "port is already allocated" in lowered:
            ports = ", ".join(str(p) for s in self.project.services for p in s.ports)
            stuck = [s for (_, _, s), st in states.items() if not st.startswith("running")]
            raise PortTaken(
                f"a published port is already in use on the host (service {', '.join(stuck) or '?'}; "
                f"the stack publishes {ports}):\n{output}",
                where=self.where,
                hint="stop what holds the port on the VM, or give the service another port (ports: host:), "
                "then run again",
                states=states,
            )
        if "pull access denied" in lowered or "manifest unknown" in lowered or "no such image" in lowered:
            raise ImagePullFailed(f"compose up could not get an image:\n{output}", where=self.where, states=states)
        raise DeployFailed(
            f"`compose up` failed:\n{output}",
            where=self.where,
            hint="read Compose's message above; the state of each service is below",
            states=states,
        )

    def wait_healthy(self) -> States:
        deadline = self.clock() + self.health_timeout_s
        while True:
            state = self.observe()
            now = _current(self.project, state)
            pending = [
                s
                for s in self.project.services
                if (c := now.get(s.name)) is None or c.config_hash != s.config_hash or not c.up
            ]
            if not pending:
                return _states(self.project, state)
            if self.clock() >= deadline:
                raise self.unhealthy(pending[0].name, now.get(pending[0].name), state)
            self.sleep(POLL_S)

    def unhealthy(self, service: str, c: Container | None, state: HostState) -> Unhealthy:
        states = _states(self.project, state)
        if c is None:
            return Unhealthy(
                f"service {service} has no container after `compose up`",
                where=self.where,
                states=states,
            )
        logs = ""
        try:
            raw = self.host.docker().api.logs(c.id, tail=LOG_LINES, stdout=True, stderr=True)
            logs = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        except (docker.errors.DockerException, requests.RequestException, OSError) as e:
            logs = f"(logs unavailable: {e})"
        health = "\n".join(c.health_log) or "(no health probe has run)"
        return Unhealthy(
            self.redactor.redact(
                f"container {c.name} of service {service} is not healthy after {self.health_timeout_s:g}s "
                f"(state {c.state}, health {c.health}, {c.restarts} restart(s))\n"
                f"--- health log (last probes) ---\n{health}\n"
                f"--- container log (last {LOG_LINES} lines) ---\n{_tail(logs) or '(empty)'}"
            ),
            where=self.where,
            hint="fix the service (its log above says why), or its healthcheck; the containers are left "
            "running for you to look at (docker logs / docker inspect on the VM)",
            states=states,
        )


def _remove(host: DockerHost, stack: str, project: str, folder: str) -> None:
    cmd = " ".join(host.compose())
    done = host.run(f"{cmd} -p {shlex.quote(project)} down --remove-orphans", timeout=UP_TIMEOUT_S)
    if not done.ok:
        raise DeployFailed(
            f"`compose down` failed: {_tail(done.stderr, 4)}",
            where=f"{host.name}/{stack}",
            hint="look at the VM (docker compose -p PROJECT ps), then run again",
        )
    host.remove_folder(folder)


def deploy(
    plan: Plan,
    projects: Sequence[Project],
    hosts: Mapping[str, DockerHost],
    *,
    confirm: bool = False,
    allow_delete: bool = False,
    clock: Clock = time.monotonic,
    sleep: Sleep = time.sleep,
    health_timeout_s: float = HEALTH_TIMEOUT_S,
    progress: Progress | None = None,
) -> DeployResult:
    """Apply the plan: deploy every stack it changes, take down those it deletes (with allow_delete).

    Args:
        plan: from :func:`homelab_lib.compose.drift.plan` of the same projects.
        projects: the rendered (and validated) projects.
        hosts: an open :class:`DockerHost` per host of the projects.
        confirm: without it nothing changes and the result says what would.
        allow_delete: also take down stacks the inventory no longer lists, and remove services
            dropped from a stack (otherwise Compose leaves them as orphans).
        clock: monotonic seconds (for the health timeout).
        sleep: waits between health polls.
        health_timeout_s: how long a stack may take to become healthy.
        progress: where progress goes (default :func:`homelab_lib.progress.auto`).

    Returns:
        One outcome per stack the plan changes.

    Raises:
        DeployFailed (or ImagePullFailed, PortTaken, Unhealthy): one or more stacks failed; every stack
            was still attempted, and ``states`` has the state of each of their services.
        SshError, ComposeError: a host could not be used at all (its stacks are recorded as failed).
    """
    by_key = {(p.host, p.stack): p for p in projects}
    to_apply = stacks_to_apply(plan, allow_delete=allow_delete)
    to_remove = stacks_to_remove(plan)
    if not confirm:
        outcomes = [StackOutcome(h, s, by_key[(h, s)].name, "would deploy") for h, s in to_apply]
        outcomes += [
            StackOutcome(h, s, project_name(h, s), "would remove" if allow_delete else "delete not allowed")
            for h, s in to_remove
        ]
        return DeployResult(False, tuple(outcomes))

    if not to_apply and not to_remove:
        return DeployResult(True, ())
    orphans = {
        (c.where, c.target.split("/", 1)[0]) for c in plan.changes if c.kind == "service" and c.action == Action.DELETE
    }
    per_host: dict[str, list[tuple[str, tuple[str, str]]]] = {}
    for key in to_apply:
        per_host.setdefault(key[0], []).append(("up", key))
    for key in to_remove:
        per_host.setdefault(key[0], []).append(("down" if allow_delete else "keep", key))
    task = (progress or auto()).task("deploy", sum(len(v) for v in per_host.values()))

    def work(host_name: str) -> list[tuple[StackOutcome, HomelabError | None]]:
        results: list[tuple[StackOutcome, HomelabError | None]] = []
        host = hosts[host_name]
        for kind, (h, stack) in per_host[host_name]:
            t0 = clock()
            if kind == "keep":
                results.append((StackOutcome(h, stack, project_name(h, stack), "delete not allowed"), None))
                task.advance(f"{h}/{stack}: kept (deletes need allow_delete)")
                continue
            try:
                if kind == "down":
                    name = project_name(h, stack)
                    _remove(host, stack, name, remote_dir(name))
                    results.append((StackOutcome(h, stack, name, "removed", seconds=clock() - t0), None))
                    task.advance(f"{h}/{stack}: removed")
                    continue
                project = by_key[(h, stack)]
                run = _StackRun(project, host, clock, sleep, health_timeout_s)
                states = run.run(remove_orphans=allow_delete or (h, stack) not in orphans)
                services = tuple((svc, st) for (_, _, svc), st in states.items())
                results.append((StackOutcome(h, stack, project.name, "deployed", services, clock() - t0), None))
                task.advance(f"{h}/{stack}: deployed, healthy")
            except (ComposeError, SshError) as e:
                states = e.states if isinstance(e, DeployFailed) else {}
                services = tuple((svc, st) for (_, _, svc), st in states.items())
                name = by_key[(h, stack)].name if (h, stack) in by_key else project_name(h, stack)
                results.append((StackOutcome(h, stack, name, "failed", services, clock() - t0, e.message), e))
                task.advance(f"{h}/{stack}: FAILED")
        return results

    with ThreadPoolExecutor(max_workers=max(1, len(per_host))) as pool:
        gathered = list(pool.map(work, list(per_host)))
    outcomes = [o for results in gathered for o, _ in results]
    failures = [e for results in gathered for _, e in results if e is not None]
    result = DeployResult(True, tuple(outcomes))
    if failures:
        task.done(f"{len(failures)} stack(s) failed")
        raise _combined(failures, result)
    task.done(f"{len(outcomes)} stack(s) changed")
    return result


def _combined(failures: list[HomelabError], result: DeployResult) -> HomelabError:
    """One error for all failed stacks: the first failure's class, every failure's message and all states."""
    first = failures[0]
    if len(failures) == 1 and not isinstance(first, DeployFailed):
        return first
    states: States = {}
    for o in result.outcomes:
        for svc, st in o.services:
            states[(o.host, o.stack, svc)] = st
    for e in failures:
        if isinstance(e, DeployFailed):
            states.update(e.states)
    cls = type(first) if isinstance(first, DeployFailed) else DeployFailed
    if len(failures) == 1:
        assert isinstance(first, DeployFailed)
        return cls(first.message, where=first.where, hint=first.hint, states=states)
    lines = "\n".join(f"- {e.where}: {e.message}" for e in failures)
    done = [f"{o.host}/{o.stack}" for o in result.outcomes if o.result in ("deployed", "removed")]
    return cls(
        f"{len(failures)} stack(s) failed; {len(done)} deployed ({', '.join(done) or 'none'}):\n{lines}",
        where=", ".join(e.where for e in failures),
        hint=first.hint,
        states=states,
    )
