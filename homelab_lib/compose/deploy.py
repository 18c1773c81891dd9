"""Carry out a Compose plan: copy each changed project to its host, ``compose up``, wait until healthy.

:func:`carry_out` is the Compose adapter's part of the runbook contract
(:class:`homelab_lib.compose.runbook.ComposeAdapter`): the contract has already
checked the approval, ``confirm`` and ``allow_delete``, and has read the hosts
again and found them as the plan says. Per stack that the plan changes (hosts
in parallel, a host's stacks in order):

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

A stack the plan deletes (with ``allow_delete``) is taken down with ``compose down``
(volumes kept) and its project folder removed: the folder Compose recorded on the
containers (``com.docker.compose.project.working_dir``), only if it is an absolute
path ending in the project's own validated name. Unchanged stacks are not touched.
A failure in one stack does not stop the others; the error raised at the end lists
each failure and the state of every service involved.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import requests

from homelab_lib.compose.observe import Container, HostState, normal_image, observe
from homelab_lib.compose.render import COMPOSE_FILE, SECRETS_DIR, Project, project_name
from homelab_lib.core.clock import Clock
from homelab_lib.core.contract import DONE, Carried, Outcome
from homelab_lib.core.errors import (
    ComposeError,
    DeployFailed,
    HomelabError,
    ImagePullFailed,
    PortTaken,
    SshError,
    Unhealthy,
    UnresolvedSecret,
    mapped,
)
from homelab_lib.core.plan import Action, Change, Plan
from homelab_lib.core.progress import Progress
from homelab_lib.core.secrets import Redactor
from homelab_lib.hosts.docker import ENGINE_ERRORS, CommandResult, DockerException, DockerHost
from homelab_lib.hosts.labels import COMPOSE_PROJECT, COMPOSE_WORKING_DIR

HEALTH_TIMEOUT_S = 180.0
UP_TIMEOUT_S = 600.0
PULL_TIMEOUT_S = 900.0
POLL_S = 0.5
LOG_LINES = 10
PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")  # Compose's own rule for project names

States = dict[tuple[str, str, str], str]


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

    def __init__(self, project: Project, host: DockerHost, clock: Clock, health_timeout_s: float) -> None:
        self.project = project
        self.host = host
        self.clock = clock
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
        if self.project.seeds:
            self.host.seed_files({path: text.encode() for path, text in self.project.seeds})
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
        states = _states(self.project, self.observe())
        lowered = output.lower()
        make = next((f for words, f in UP_ERRORS if any(w in lowered for w in words)), _up_failed)
        raise make(self, output, states)

    def wait_healthy(self) -> States:
        deadline = self.clock.monotonic() + self.health_timeout_s
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
            if self.clock.monotonic() >= deadline:
                raise self.unhealthy(pending[0].name, now.get(pending[0].name), state)
            self.clock.sleep(POLL_S)

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
        except (DockerException, requests.RequestException, OSError) as e:
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


UpError = Callable[["_StackRun", str, States], DeployFailed]


def _port_taken(run: _StackRun, output: str, states: States) -> DeployFailed:
    ports = ", ".join(str(p) for s in run.project.services for p in s.ports)
    stuck = [s for (_, _, s), st in states.items() if not st.startswith("running")]
    return PortTaken(
        f"a published port is already in use on the host (service {', '.join(stuck) or '?'}; "
        f"the stack publishes {ports}):\n{output}",
        where=run.where,
        hint="stop what holds the port on the VM, or give the service another port (ports: host:), then run again",
        states=states,
    )


def _no_image(run: _StackRun, output: str, states: States) -> DeployFailed:
    return ImagePullFailed(f"compose up could not get an image:\n{output}", where=run.where, states=states)


def _up_failed(run: _StackRun, output: str, states: States) -> DeployFailed:
    return DeployFailed(
        f"`compose up` failed:\n{output}",
        where=run.where,
        hint="read Compose's message above; the state of each service is below",
        states=states,
    )


#: What a failed ``compose up`` said (lower case, any of the words) -> our error; else DeployFailed.
UP_ERRORS: tuple[tuple[tuple[str, ...], UpError], ...] = (
    (("address already in use", "port is already allocated"), _port_taken),
    (("pull access denied", "manifest unknown", "no such image"), _no_image),
)


def project_folder(host: DockerHost, project: str) -> str | None:
    """The folder a project was deployed from, as Compose recorded it on its containers; None if not one safe folder.

    Safe: the project name is a valid Compose project name, every container records the same
    folder, and it is an absolute, normalised path whose last part is the project's name (so a
    label cannot point an ``rm -rf`` anywhere else).
    """
    if not PROJECT_NAME.match(project):
        return None
    with mapped(ENGINE_ERRORS, where=host):
        found = host.docker().api.containers(all=True, filters={"label": f"{COMPOSE_PROJECT}={project}"})
    folders = {str((c.get("Labels") or {}).get(COMPOSE_WORKING_DIR) or "") for c in found}
    if len(folders) != 1:
        return None
    (folder,) = folders
    ok = folder.startswith("/") and posixpath.normpath(folder) == folder and posixpath.basename(folder) == project
    return folder if ok and folder.count("/") >= 2 else None


def _remove(host: DockerHost, stack: str, project: str) -> str:
    """``compose down`` (volumes kept) and remove the project folder; what was done, in words."""
    folder = project_folder(host, project)
    cmd = " ".join(host.compose())
    done = host.run(f"{cmd} -p {shlex.quote(project)} down --remove-orphans", timeout=UP_TIMEOUT_S)
    if not done.ok:
        raise DeployFailed(
            f"`compose down` failed: {_tail(done.stderr, 4)}",
            where=f"{host.name}/{stack}",
            hint="look at the VM (docker compose -p PROJECT ps), then run again",
        )
    if folder is None:
        return "compose down (volumes kept); no single project folder was recorded, none removed"
    host.remove_folder(folder)
    return f"compose down (volumes kept); {folder} removed"


@dataclass(frozen=True)
class _Stack:
    """One stack's work: up (deploy) or down (remove), and the plan's changes it carries out."""

    host: str
    stack: str
    kind: str
    changes: tuple[Change, ...]


def _stacks(todo: Sequence[Change]) -> list[_Stack]:
    """The stacks the changes touch, in plan order: services' stacks go up, deleted stacks come down."""
    work: dict[tuple[str, str, str], list[Change]] = {}
    for c in todo:
        if c.kind == "service":
            work.setdefault((c.where, c.target.split("/", 1)[0], "up"), []).append(c)
        elif c.kind == "stack" and c.action == Action.DELETE:
            work.setdefault((c.where, c.target, "down"), []).append(c)
    return [_Stack(h, st, kind, tuple(changes)) for (h, st, kind), changes in work.items()]


def carry_out(
    projects: Sequence[Project],
    hosts: Mapping[str, DockerHost],
    plan: Plan,
    todo: Sequence[Change],
    *,
    allow_delete: bool,
    progress: Progress,
    clock: Clock,
    health_timeout_s: float = HEALTH_TIMEOUT_S,
) -> Carried:
    """Deploy every stack the changes touch; take down the stacks they delete.

    Args:
        projects: the rendered (and validated) projects.
        hosts: an open :class:`DockerHost` per host of the changes.
        plan: the whole plan (a stack with a service dropped, whose delete is not allowed, keeps it:
            no ``--remove-orphans`` for it).
        todo: the plan's changes to make (service creates/updates, and with allow_delete service
            and stack deletes).
        allow_delete: services dropped from a stack go too (``--remove-orphans``); otherwise
            Compose leaves them running as orphans.
        progress: where progress goes (one task, a step per stack).
        clock: the clock health waits go by.
        health_timeout_s: how long a stack may take to become healthy.

    Returns:
        An outcome per change (its service's state afterwards), a step per stack.

    Raises:
        DeployFailed (or ImagePullFailed, PortTaken, Unhealthy): one or more stacks failed; every stack
            was still attempted, and ``states`` has the state of each of their services.
        SshError, ComposeError: a host could not be used at all.
    """
    by_key = {(p.host, p.stack): p for p in projects}
    orphans = {
        (c.where, c.target.split("/", 1)[0]) for c in plan.changes if c.kind == "service" and c.action == Action.DELETE
    }
    stacks = _stacks(todo)
    per_host: dict[str, list[_Stack]] = {}
    for st in stacks:
        per_host.setdefault(st.host, []).append(st)
    task = progress.task("deploy", len(stacks))

    def work(host_name: str) -> list[tuple[_Stack, States, str, float, HomelabError | None]]:
        results: list[tuple[_Stack, States, str, float, HomelabError | None]] = []
        host = hosts[host_name]
        for st in per_host[host_name]:
            t0 = clock.monotonic()
            try:
                if st.kind == "down":
                    note = _remove(host, st.stack, project_name(st.host, st.stack))
                    results.append((st, {}, note, clock.monotonic() - t0, None))
                    task.advance(f"{st.host}/{st.stack}: removed")
                    continue
                project = by_key[(st.host, st.stack)]
                run = _StackRun(project, host, clock, health_timeout_s)
                states = run.run(remove_orphans=allow_delete or (st.host, st.stack) not in orphans)
                results.append((st, states, "deployed, healthy", clock.monotonic() - t0, None))
                task.advance(f"{st.host}/{st.stack}: deployed, healthy")
            except (ComposeError, SshError) as e:
                states = e.states if isinstance(e, DeployFailed) else {}
                results.append((st, states, e.message, clock.monotonic() - t0, e))
                task.advance(f"{st.host}/{st.stack}: FAILED")
        return results

    with ThreadPoolExecutor(max_workers=max(1, len(per_host))) as pool:
        gathered = [r for results in pool.map(work, list(per_host)) for r in results]
    failures = [e for *_, e in gathered if e is not None]
    if failures:
        task.done(f"{len(failures)} stack(s) failed")
        raise _combined(failures, gathered)
    task.done(f"{len(gathered)} stack(s) changed")
    done: dict[tuple[str, str, str], tuple[str, float]] = {}  # (kind, target, where) -> (detail, seconds)
    steps: list[str] = []
    for st, states, note, seconds, _ in gathered:
        steps.append(f"{st.host}/{st.stack}: {note}")
        for c in st.changes:
            state = states.get((st.host, st.stack, c.target.split("/", 1)[-1]))
            detail = note if c.kind == "stack" else (state or "removed (--remove-orphans)")
            done[(c.kind, c.target, c.where)] = (detail, seconds)
    outcomes = tuple(Outcome.of(c, DONE, *done[(c.kind, c.target, c.where)]) for c in todo)
    return Carried(outcomes, tuple(steps))


def _combined(
    failures: list[HomelabError], gathered: Sequence[tuple[_Stack, States, str, float, HomelabError | None]]
) -> HomelabError:
    """One error for all failed stacks: the first failure's class, every failure's message and all states."""
    first = failures[0]
    if len(failures) == 1 and not isinstance(first, DeployFailed):
        return first
    states: States = {}
    for _, st_states, *_ in gathered:
        states.update(st_states)
    for e in failures:
        if isinstance(e, DeployFailed):
            states.update(e.states)
    cls = type(first) if isinstance(first, DeployFailed) else DeployFailed
    if len(failures) == 1:
        assert isinstance(first, DeployFailed)
        return cls(first.message, where=first.where, hint=first.hint, states=states)
    lines = "\n".join(f"- {e.where}: {e.message}" for e in failures)
    done = [f"{st.host}/{st.stack}" for st, *_, e in gathered if e is None]
    return cls(
        f"{len(failures)} stack(s) failed; {len(done)} deployed or removed ({', '.join(done) or 'none'}):\n{lines}",
        where=", ".join(e.where for e in failures),
        hint=first.hint,
        states=states,
    )
