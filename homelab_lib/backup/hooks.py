"""Consistency hooks, selected by the catalog's ``backup: {hook: ...}`` from a registry.

A hook is a context manager around a target's backup: what is backed up inside it is
consistent. :data:`HOOKS` maps the catalog's name to it (register more with :func:`register`):

- ``none``: nothing; the copy is taken live (and refused if the folder changes meanwhile).
- ``stop``: stop the service's container, and start it again afterwards, always (also when the
  backup fails). For a PVC: scale the Deployments and StatefulSets that mount it to zero, wait
  until their pods are gone, and scale them back (and wait until they are ready) afterwards, always.
- ``pg_dumpall``: ``pg_dumpall`` in the container (docker exec, SDK) into ``.homelab-dump/`` of
  the data volume; only that folder is backed up (:func:`backup_folder`).
- ``redis_bgsave``: ``BGSAVE`` and wait until ``LASTSAVE`` moves.

A hook that fails raises :class:`~homelab_lib.core.errors.HookFailed` naming the target: no
snapshot is taken.
"""

from __future__ import annotations

import contextlib
import posixpath
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from homelab_lib.backup.targets import Located
from homelab_lib.core.clock import Clock
from homelab_lib.core.errors import HomelabError, HookFailed
from homelab_lib.kube import rollout
from homelab_lib.kube.objects import key, mounts_claim

#: The folder of a data volume a dump hook writes into, and the only part of it then backed up.
DUMP_FOLDER = ".homelab-dump"
DUMP_FILE = "dumpall.sql"
HOOK_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class HookContext:
    """What a hook works on: the located target, its client, a clock, where.

    ``engine`` is the host's docker SDK client for a Docker volume, the cluster's
    :class:`~homelab_lib.kube.client.Kube` for a PVC.
    """

    located: Located
    engine: Any
    clock: Clock
    where: str
    timeout_s: float = HOOK_TIMEOUT_S


Hook = Callable[[HookContext], AbstractContextManager[None]]
HOOKS: dict[str, Hook] = {}


def register(name: str) -> Callable[[Hook], Hook]:
    """Register a hook under the catalog's name for it."""

    def add(hook: Hook) -> Hook:
        HOOKS[name] = hook
        return hook

    return add


def hook_for(name: str, *, where: str) -> Hook:
    """The hook the catalog names.

    Raises:
        HookFailed: no hook has that name.
    """
    if name not in HOOKS:
        raise HookFailed(f"no backup hook named {name!r} (there are: {', '.join(sorted(HOOKS))})", where=where)
    return HOOKS[name]


def backup_folder(located: Located) -> str:
    """The folder actually backed up: the dump folder for a dump hook, else the whole volume."""
    if located.target.backup.hook == "pg_dumpall":
        return posixpath.join(located.folder, DUMP_FOLDER)
    return located.folder


def _container(ctx: HookContext, hook: str) -> Any:
    t = ctx.located.target
    if not ctx.located.container:
        raise HookFailed(
            f"target {t.name}: hook {hook} needs the service's running container, and none runs",
            where=ctx.where,
            hint="start the stack (runbook 02); a stopped service can use hook: stop or none",
        )
    return ctx.engine.containers.get(ctx.located.container)


def _exec(ctx: HookContext, container: Any, cmd: list[str], hook: str) -> str:
    t = ctx.located.target
    try:
        code, output = container.exec_run(cmd, demux=False)
    except Exception as e:  # the SDK's errors: the container went away, the engine refused
        raise HookFailed(
            f"target {t.name}: hook {hook}: {' '.join(cmd[:2])} could not run: {e}", where=ctx.where
        ) from e
    text = (output or b"").decode(errors="replace").strip()
    if code != 0:
        last = " | ".join(text.splitlines()[-3:]) or "(no output)"
        raise HookFailed(
            f"target {t.name}: hook {hook}: `{' '.join(cmd)}` exited {code}: {last}",
            where=ctx.where,
            hint="no snapshot was taken; fix the service (is it healthy? its user and database?) and run again",
        )
    return text


@register("none")
@contextlib.contextmanager
def _none(ctx: HookContext) -> Iterator[None]:
    yield


@register("stop")
@contextlib.contextmanager
def _stop(ctx: HookContext) -> Iterator[None]:
    if ctx.located.target.layer == "k3s":
        with _scaled_to_zero(ctx):
            yield
        return
    if not ctx.located.container:  # nothing runs: the data is at rest already
        yield
        return
    container = _container(ctx, "stop")
    try:
        container.stop(timeout=60)
    except Exception as e:
        with contextlib.suppress(Exception):
            container.start()
        raise HookFailed(f"target {ctx.located.target.name}: hook stop: {e}", where=ctx.where) from e
    try:
        yield
    finally:
        try:
            container.start()
        except Exception as e:  # the SDK's: the engine refused to start it again
            raise HookFailed(
                f"target {ctx.located.target.name}: hook stop: the service's container was stopped for the "
                f"backup and could not be started again: {e}",
                where=ctx.where,
                hint="start it by hand now (docker start, or runbook 02), then look at the engine's log",
            ) from e


#: The field manager of the replicas a backup sets (``kubectl get -o yaml --show-managed-fields`` names it).
BACKUP_MANAGER = "homelab-backup"


def _claim_users(ctx: HookContext) -> list[dict[str, Any]]:
    t = ctx.located.target
    users = []
    for kind in ("Deployment", "StatefulSet"):
        for w in ctx.engine.list("apps/v1", kind, namespace=t.stack):
            w.setdefault("apiVersion", "apps/v1")
            w.setdefault("kind", kind)
            if mounts_claim(w, t.volume):
                users.append(w)
    return users


def _wait_gone(ctx: HookContext, workload: dict[str, Any]) -> None:
    """Until no pod of the workload is left (a terminating pod still holds the files open)."""
    meta = workload["metadata"]
    labels = ((workload.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    deadline = ctx.clock.monotonic() + ctx.timeout_s
    while True:
        pods = [p["metadata"]["name"] for p in ctx.engine.list("v1", "Pod", namespace=meta["namespace"],
                                                                label_selector=selector)]  # fmt: skip
        if not pods:
            return
        if ctx.clock.monotonic() > deadline:
            raise HookFailed(
                f"target {ctx.located.target.name}: hook stop: {workload['kind']} {meta['namespace']}/{meta['name']} "
                f"was scaled to 0 but its pods ({', '.join(pods)}) did not stop within {ctx.timeout_s:g}s",
                where=ctx.where,
                hint=f"look at them: kubectl -n {meta['namespace']} describe pod {pods[0]}",
            )
        ctx.clock.sleep(1.0)


@contextlib.contextmanager
def _scaled_to_zero(ctx: HookContext) -> Iterator[None]:
    """A PVC's ``stop``: every workload that mounts it at 0 replicas for the backup, then back, always."""
    t = ctx.located.target
    scaled: list[tuple[dict[str, Any], int]] = []
    try:
        for w in _claim_users(ctx):
            replicas = int((w.get("spec") or {}).get("replicas", 1) or 0)
            if replicas:
                ctx.engine.scale(key(w), 0, field_manager=BACKUP_MANAGER)
                scaled.append((w, replicas))
        for w, _ in scaled:
            _wait_gone(ctx, w)
    except HomelabError as e:
        _scale_back(ctx, scaled)
        raise HookFailed(f"target {t.name}: hook stop: {e}", where=ctx.where) from e
    try:
        yield
    finally:
        _scale_back(ctx, scaled)


def _scale_back(ctx: HookContext, scaled: list[tuple[dict[str, Any], int]]) -> None:
    """Each workload to its replicas again, and ready; what fails is named with the command to do it by hand."""
    problems: list[str] = []
    back: list[dict[str, Any]] = []
    for w, replicas in scaled:
        meta = w["metadata"]
        try:
            ctx.engine.scale(key(w), replicas, field_manager=BACKUP_MANAGER)
            back.append(w)
        except HomelabError as e:
            problems.append(
                f"{w['kind']} {meta['namespace']}/{meta['name']} stays at 0 ({e.message}): "
                f"kubectl -n {meta['namespace']} scale {w['kind'].lower()}/{meta['name']} --replicas={replicas}"
            )
    for w in back:
        try:
            rollout.wait(ctx.engine, w, timeout_s=ctx.timeout_s, clock=ctx.clock)
        except HomelabError as e:
            problems.append(f"{w['kind']} {w['metadata']['namespace']}/{w['metadata']['name']}: {e.message}")
    if problems:
        raise HookFailed(
            f"target {ctx.located.target.name}: hook stop: scaled to 0 for the backup, not running again: "
            + "; ".join(problems),
            where=ctx.where,
            hint="start it by hand now (the command above, or runbook 04), then look at its pods' events",
        )


@register("pg_dumpall")
@contextlib.contextmanager
def _pg_dumpall(ctx: HookContext) -> Iterator[None]:
    t = ctx.located.target
    container = _container(ctx, "pg_dumpall")
    user = dict(t.environment).get("POSTGRES_USER", "postgres")
    folder = posixpath.join(t.mount, DUMP_FOLDER)
    _exec(ctx, container, ["mkdir", "-p", folder], "pg_dumpall")
    tmp = posixpath.join(folder, DUMP_FILE + ".tmp")
    _exec(ctx, container, ["pg_dumpall", "-U", user, "-f", tmp], "pg_dumpall")
    _exec(ctx, container, ["mv", "-f", tmp, posixpath.join(folder, DUMP_FILE)], "pg_dumpall")
    yield


def _lastsave(ctx: HookContext, container: Any) -> int:
    text = _exec(ctx, container, ["redis-cli", "LASTSAVE"], "redis_bgsave")
    digits = "".join(ch for ch in text.splitlines()[-1] if ch.isdigit()) if text else ""
    if not digits:
        raise HookFailed(f"target {ctx.located.target.name}: hook redis_bgsave: LASTSAVE answered {text!r}")
    return int(digits)


@register("redis_bgsave")
@contextlib.contextmanager
def _redis_bgsave(ctx: HookContext) -> Iterator[None]:
    container = _container(ctx, "redis_bgsave")
    before = _lastsave(ctx, container)
    # LASTSAVE counts seconds: a BGSAVE in the same second as the last save would not move it
    while int(ctx.clock.now().timestamp()) <= before:
        ctx.clock.sleep(0.2)
    _exec(ctx, container, ["redis-cli", "BGSAVE"], "redis_bgsave")
    deadline = ctx.clock.monotonic() + ctx.timeout_s
    while _lastsave(ctx, container) == before:
        if ctx.clock.monotonic() > deadline:
            raise HookFailed(
                f"target {ctx.located.target.name}: hook redis_bgsave: LASTSAVE did not move within "
                f"{ctx.timeout_s:g}s of BGSAVE",
                where=ctx.where,
                hint="look at the server's log (a failed fork, a full disk)",
            )
        ctx.clock.sleep(0.2)
    yield
