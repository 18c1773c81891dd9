# Why one file past the 800 lines the other modules keep to: the docstring below draws the whole
# tree, and the classes follow it in the same order (tests/test_errors.py holds them to it), each a
# few lines of docstring and, for some, an __init__ with the fields its message needs. A reader
# checks the drawing against the classes in one place, as in httpx's _exceptions.py. A split would
# not make a smaller concept: every part, the table machinery at the end included (``mapped`` lets
# HomelabError through), stands on HomelabError, so re-exporting the parts from here would import
# back into this module (a cycle tests/test_imports.py refuses), and the drawing would end up in
# one file and the classes it draws in others. A new adapter's errors go here, under AdapterError,
# drawn above in the order they are defined.
"""The one exception tree of homelab_lib.

Every error says what failed, where (file:line, node, VM, service) and what to
do. Errors from outside libraries (proxmoxer, docker, paramiko, kubernetes,
papermill) are translated at the adapter boundary by a table, as httpx's
``map_httpcore_exceptions()`` does: each adapter keeps an :data:`ErrorTable`
(outside exception class -> a function that builds ours) and wraps its calls in
``with mapped(TABLE, where=...)``, which raises ours ``from`` the original; the
most specific class of the table wins, and anything the table does not name
passes through unchanged.

    HomelabError
    ├── ConfigError                 bad parameters: YAML, types, unknown keys, capacity
    │   ├── SecretError             a secret reference that does not resolve (located: file:line)
    │   └── ConvertError            a compose file the converter cannot read: not YAML, not Compose (file:line)
    ├── UnresolvedSecret            a secret reference cannot be read at the moment of use
    ├── HashKeyUnsafe               the homelab's hash key cannot be made or read, or others may read it
    ├── NotFound (also a KeyError)  a name the inventory, a plan or a project does not have
    ├── RunbookError                the runbook contract: plan -> apply -> verify
    │   ├── PlanConflict            the plan has conflicts; nothing was changed
    │   ├── StalePlan               the world changed since the plan was made; nothing was changed
    │   ├── PlanNotApproved         the plan computed now is not the approved one; nothing was changed
    │   └── VerifyFailed            after a confirmed apply, the world is not what the plan promised
    ├── RunError                    the runner: a notebook that failed, a lock held
    │   ├── NotebookFailed          a cell raised; carries the cell index and exception
    │   │   └── ApprovalRefused     `--approve RUN_ID`: the plan differs from the approved one (with the diff)
    │   ├── LockHeld                another run against the same homelab is under way (local lock or K3s Lease)
    │   ├── LockUnsafe              the run-lock folder or a file in it is not private, or is a link
    │   └── SecretLeak              a resolved secret value was found in a notebook
    ├── AuditError                  the audit archive: a record or file altered or removed
    ├── ScheduleError               `homelab schedule`: a unit cannot be written or is not ours
    ├── ManifestError               a checksum manifest could not be taken or read (folder, host, line)
    ├── AlertError                  an alert could not be delivered (the webhook URL is never shown)
    └── AdapterError                an outside system answered with an error
        ├── ProxmoxError            the Proxmox VE API refused or failed (node, vmid, VM, PVE's message)
        │   ├── ProxmoxAuthError    token or password rejected, or TLS not verified against ca_file
        │   ├── PermissionDenied    HTTP 403: the user or token lacks a privilege on a path
        │   ├── NodeUnreachable     a node is offline or unreachable (595) or the API cannot be reached
        │   ├── QuorumLost          the cluster has no quorum: /etc/pve is read-only
        │   ├── TaskFailed          a task ended in TASK ERROR; carries the task log's last lines
        │   ├── TaskTimeout         a task did not end in time (it may still be running)
        │   ├── AgentTimeout        a VM's QEMU guest agent never reported
        │   ├── ProvisionConflict   the plan has conflicts; nothing was changed (also a PlanConflict)
        │   └── ProvisionFailed     apply stopped; carries each failure and what was done
        ├── SshError                SSH to a VM failed: refused, timed out, login refused
        │   └── HostKeyRejected     the VM's host key is not the one known_hosts names (or none is)
        ├── ComposeError            a Compose stack could not be rendered, validated, deployed or verified
        │   ├── ComposeInvalid      `docker compose config` or the schema check rejected a rendered file
        │   ├── EngineUnreachable   the Docker Engine on a host does not answer
        │   ├── ComposeMissing      neither `docker compose` (v2) nor `docker-compose` (v1) on a host
        │   └── DeployFailed        a stack did not come up; carries each service's state
        │       ├── ImagePullFailed an image is not on the host and cannot be pulled
        │       ├── PortTaken       a published port is already in use on the host
        │       └── Unhealthy       a container never became healthy before the timeout
        ├── BackupError             a backup, restore test or restic repository failed (names target, snapshot)
        │   ├── VzdumpFailed        a vzdump task ended in error: VM, task, its log's last lines (also a TaskFailed)
        │   ├── BackupFailed        apply stopped on some vzdump backups; carries each failure and what was done
        │   ├── ResticError         restic refused or failed on a host; carries its exit code and last lines
        │   │   ├── RepositoryMissing   no repository at backups.restic_repository (created only with confirm)
        │   │   └── ResticAuthFailed    the repository refused backups.restic_password
        │   ├── HookFailed          a consistency hook (pg_dumpall, redis_bgsave, stop) failed: no snapshot taken
        │   ├── SourceChanged       the source changed while it was backed up: the snapshot was dropped
        │   ├── RestoreTestFailed   a restore test failed: names the target and snapshot, and why
        │   ├── CheckFailed         `restic check` found damage: names the packs and the snapshots they hold
        │   └── RpoViolated         targets past their RPO or no job covers (and failed restore tests), each named
        ├── K3sError                K3s on its VM could not be installed, configured, reached or verified
        │   ├── K3sInstallFailed    the install script failed; carries its exit code and last lines
        │   ├── K3sUnreachable      the Kubernetes API does not answer (refused, timed out, TLS)
        │   ├── K3sApiError         the Kubernetes API refused a request; carries the HTTP status
        │   │   ├── K3sAuthError    401/403: the kubeconfig's credentials are wrong, expired or lack rights
        │   │   └── K3sFieldConflict 409 on server-side apply: another field manager owns a field
        │   ├── K3sRolloutFailed    a workload, Job or HelmChart did not get ready: names the pod, reason, events
        │   └── K3sNotReady         the API, the node or kube-system did not become ready in time
        ├── MonitoringError         runbook 07: Prometheus/Alertmanager/Grafana config, deploy, reload, queries
        │   ├── MonitoringConfigRejected `promtool check config|rules` (or amtool) rejected a rendered file
        │   ├── PrometheusUnreachable Prometheus's or Alertmanager's HTTP API does not answer (or answers an error)
        │   └── ReloadFailed        POST /-/reload was refused: the server keeps its old config
        └── MigrateError            runbook 05: a service cannot be moved as asked, or failed at a checkpoint
            ├── DependencyCycle     `service=all`: the services' dependencies form a cycle (named)
            ├── MigrateRefused      the plan is refused (not enough space on the K3s VM...); nothing was changed
            ├── CopyFailed          a volume's copy stream broke; a re-run resumes from the copy checkpoint
            ├── ChecksumMismatch    the copy's manifest differs from the source's; names the paths
            ├── RolledBack          a failure after the stop was rolled back: Compose runs again on unchanged data
            └── RollbackFailed      the rollback itself failed; names what is left to do by hand
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar


class HomelabError(Exception):
    """Root of every error homelab_lib raises.

    Args:
        message: what failed, in one sentence.
        where: where it failed (``file:line``, node, VM, service); may be empty.
        hint: what to do about it; may be empty.
    """

    def __init__(self, message: str, *, where: str = "", hint: str = "") -> None:
        self.message = message
        self.where = where
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f" ({self.hint})"
        return text


@dataclass(frozen=True)
class Problem:
    """One problem found in a parameter file.

    Attributes:
        file: the parameter file.
        line: 1-based line of the offending key or value (0 when unknown).
        path: dotted key path, e.g. ``vms[2].memory_mib``.
        message: what is wrong and what to do.
    """

    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(HomelabError):
    """The parameters are wrong; ``problems`` lists each one with its file:line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        lines = "\n".join(str(p) for p in problems)
        super().__init__(f"{len(problems)} problem(s) in the parameters:\n{lines}")

    def __str__(self) -> str:
        return self.message


class SecretError(ConfigError):
    """A secret reference (``env:NAME`` or ``file:PATH``) does not resolve."""


class ConvertError(ConfigError):
    """A compose file the converter cannot read: not YAML, not valid Compose, or a name it does not define.

    Each problem carries the compose file and the line of the offending key (``homelab convert`` exits 2).
    """

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        lines = "\n".join(str(p) for p in problems)
        HomelabError.__init__(self, f"{len(problems)} problem(s) in the compose file:\n{lines}")


class UnresolvedSecret(HomelabError):
    """A secret reference (``env:NAME``, ``file:PATH``) cannot be read now: variable unset, file missing.

    Raised by :meth:`homelab_lib.core.secrets.SecretRef.reveal`; the inventory loader turns it into a
    located :class:`SecretError`, adapters into their own error (``ProxmoxAuthError``, ``DeployFailed``).
    """


class HashKeyUnsafe(HomelabError):
    """The homelab's hash key (:mod:`homelab_lib.core.hashkey`, beside the parameters) cannot be made or
    read, is not a private regular file of 32 bytes, or may be read or written by others."""


class NotFound(HomelabError, KeyError):
    """A name that is not there: a VM or node of the inventory, a VM of a plan, a service of a project.

    Also a :class:`KeyError`, so ``except KeyError`` around a lookup keeps working; but what reaches
    a user says what was looked for, where, and what names there are.

    Attributes:
        name: the name looked for.
    """

    def __init__(self, name: str, *, what: str, known: Sequence[str] = (), where: str = "", hint: str = "") -> None:
        self.name = name
        shown = ", ".join(sorted(known)) or "none"
        super().__init__(
            f"no {what} named {name!r} (there are: {shown})",
            where=where,
            hint=hint or f"use one of the {what} names above, or add it to the parameters",
        )


class RunbookError(HomelabError):
    """A step of the runbook contract refused or failed: plan, apply, verify (:mod:`.contract`)."""


class PlanConflict(RunbookError):
    """The plan has conflicts (changes only the operator can make); nothing was changed.

    Attributes:
        conflicts: one line per conflict.
    """

    conflicts: list[str]

    @classmethod
    def of(cls, conflicts: list[str]) -> PlanConflict:
        lines = "\n  ".join(conflicts)
        error = cls(
            f"{len(conflicts)} conflict(s) in the plan; nothing was changed:\n  {lines}",
            hint="resolve each one (change the inventory or the system), then run again",
        )
        error.conflicts = conflicts
        return error


class StalePlan(RunbookError):
    """Apply read the world again and it no longer matches the plan; nothing was changed.

    Attributes:
        moved: one line per change that differs (``+`` new, ``-`` gone, ``~`` changed).
    """

    def __init__(self, message: str, *, moved: Sequence[str], where: str = "", hint: str = "") -> None:
        self.moved = tuple(moved)
        super().__init__(message, where=where, hint=hint)

    def __str__(self) -> str:
        return super().__str__() + "".join(f"\n  {line}" for line in self.moved)


class PlanNotApproved(RunbookError):
    """The plan computed now is not the plan that was approved (``approved_plan``); nothing was changed.

    Attributes:
        planned: the sha256 of the plan computed now.
        approved: the sha256 that was approved.
    """

    def __init__(self, *, planned: str, approved: str, where: str = "") -> None:
        self.planned = planned
        self.approved = approved
        super().__init__(
            f"the plan computed now (sha256 {planned[:12]}) is not the approved plan (sha256 {approved[:12]}); "
            "nothing was changed",
            where=where,
            hint="the inventory or the world changed since the review: make a new dry run, review its plan, "
            "and approve that run",
        )


class VerifyFailed(RunbookError):
    """After a confirmed apply, the world is not what the plan promised.

    Attributes:
        problems: one line per check that failed.
        result: the verify result, for its table (a :class:`homelab_lib.core.contract.VerifyResult`).
    """

    def __init__(
        self, message: str, *, problems: Sequence[str], where: str = "", hint: str = "", result: object = None
    ) -> None:
        self.problems = tuple(problems)
        self.result = result
        super().__init__(message, where=where, hint=hint)

    def __str__(self) -> str:
        return super().__str__() + "".join(f"\n  {line}" for line in self.problems)


class RunError(HomelabError):
    """A runbook run could not start or did not finish."""


class NotebookFailed(RunError):
    """A notebook cell raised.

    Attributes:
        cell: index of the failing cell (execution order, 0-based among all cells).
        ename: the exception's class name.
        evalue: the exception's message (secrets redacted).
    """

    def __init__(self, notebook: str, cell: int | None, ename: str, evalue: str, archived: str) -> None:
        self.cell = cell
        self.ename = ename
        self.evalue = evalue
        self.archived = archived
        at = f"cell {cell}" if cell is not None else "an unknown cell"
        super().__init__(
            f"{ename}: {evalue}",
            where=f"{notebook} {at}",
            hint=f"the executed notebook is archived at {archived}",
        )


class ApprovalRefused(NotebookFailed):
    """``homelab run --approve RUN_ID``: the plan computed now differs from the plan approved in RUN_ID.

    The notebook stopped at its apply step before anything changed; ``diff`` lists the changes
    added (``+``), removed (``-``) and changed (``~``) against the approved plan.

    Attributes:
        approved_run: the run whose plan was approved.
        diff: the readable difference, one line per change.
    """

    def __init__(
        self, notebook: str, cell: int | None, evalue: str, archived: str, *, approved_run: str, diff: Sequence[str]
    ) -> None:
        self.approved_run = approved_run
        self.diff = tuple(diff)
        super().__init__(notebook, cell, "PlanNotApproved", evalue, archived)

    def __str__(self) -> str:
        lines = "".join(f"\n  {line}" for line in self.diff) or "\n  (the plan could not be read from the run)"
        return f"{super().__str__()}\nthe plan now, against the plan approved in run {self.approved_run}:{lines}"


class LockHeld(RunError):
    """Another run against the same homelab holds the lock."""


class LockUnsafe(RunError):
    """The run-lock folder or a file in it is not safe to use: another user's, writable by others, or a link."""


class SecretLeak(RunError):
    """A resolved secret value appeared in an executed notebook; it was not archived."""


class AuditError(HomelabError):
    """The audit archive does not verify: a record or file was altered or removed."""


class ScheduleError(HomelabError):
    """A scheduled run's units could not be written, or a unit of that name is not one ``homelab schedule`` wrote."""


class ManifestError(HomelabError):
    """A checksum manifest could not be taken or read: the folder, the host, the line."""


class AlertError(HomelabError):
    """An alert could not be delivered to the webhook. The message names the reference, never the URL."""


class AdapterError(HomelabError):
    """An outside system (Proxmox, Docker, Kubernetes, SSH) answered with an error."""


class ProxmoxError(AdapterError):
    """The Proxmox VE API refused a request or failed.

    Attributes:
        node: the node the request was about ('' when none).
        vmid: the VM id (None when none).
        vm: the VM's name ('' when unknown).
        status: the HTTP status (0 when there was no answer).
        pve_message: PVE's own message, as it answered.
    """

    def __init__(
        self,
        message: str,
        *,
        node: str = "",
        vmid: int | None = None,
        vm: str = "",
        status: int = 0,
        pve_message: str = "",
        hint: str = "",
    ) -> None:
        self.node = node
        self.vmid = vmid
        self.vm = vm
        self.status = status
        self.pve_message = pve_message
        parts = []
        if vm or vmid is not None:
            parts.append(f"VM {vm} ({vmid})" if vm and vmid is not None else f"VM {vm or vmid}")
        if node:
            parts.append(f"node {node}")
        super().__init__(message, where=", ".join(parts) or "proxmox", hint=hint)


class ProxmoxAuthError(ProxmoxError):
    """The API token or password was rejected, or the server's certificate did not verify."""


class PermissionDenied(ProxmoxError):
    """HTTP 403: the user or API token lacks a privilege on a path."""


class NodeUnreachable(ProxmoxError):
    """A node is offline or unreachable (HTTP 595), or the API endpoint cannot be reached."""


class QuorumLost(ProxmoxError):
    """The cluster has no quorum: configuration is read-only, nothing can be created or changed."""


class TaskFailed(ProxmoxError):
    """A Proxmox task ended in ``TASK ERROR``.

    Attributes:
        upid: the task's id.
        log_tail: the last lines of the task log.
    """

    def __init__(
        self,
        message: str,
        *,
        upid: str,
        log_tail: tuple[str, ...] = (),
        node: str = "",
        vmid: int | None = None,
        vm: str = "",
        pve_message: str = "",
        hint: str = "",
    ) -> None:
        self.upid = upid
        self.log_tail = log_tail
        super().__init__(message, node=node, vmid=vmid, vm=vm, pve_message=pve_message, hint=hint)

    def __str__(self) -> str:
        text = super().__str__()
        if self.log_tail:
            text += "\n  task log (last lines):\n    " + "\n    ".join(self.log_tail)
        return text


class TaskTimeout(ProxmoxError):
    """A Proxmox task did not end within the timeout; it may still be running.

    Attributes:
        upid: the task's id.
    """

    def __init__(
        self, message: str, *, upid: str, node: str = "", vmid: int | None = None, vm: str = "", hint: str = ""
    ) -> None:
        self.upid = upid
        super().__init__(message, node=node, vmid=vmid, vm=vm, hint=hint)


class AgentTimeout(ProxmoxError):
    """A VM's QEMU guest agent did not report its network interfaces in time."""


class ProvisionConflict(ProxmoxError, PlanConflict):
    """The plan has conflicts (vmid clash, disk shrink, node change, capacity...); nothing was changed.

    Attributes:
        conflicts: one line per conflict.
    """

    def __init__(self, conflicts: list[str]) -> None:
        self.conflicts = conflicts
        lines = "\n  ".join(conflicts)
        super().__init__(
            f"{len(conflicts)} conflict(s) in the plan; nothing was changed:\n  {lines}",
            hint="resolve each one (change the inventory or the cluster), then run again",
        )


class ProvisionFailed(ProxmoxError):
    """Apply stopped on one or more VMs; what was done is in ``done``, the failures in ``failures``.

    Attributes:
        failures: the error of each VM that failed.
        done: one line per step that completed.
        skipped: the VMs not started because of the failure.
    """

    def __init__(self, failures: list[HomelabError], done: list[str], skipped: list[str] | None = None) -> None:
        self.failures = failures
        self.done = done
        self.skipped = skipped or []
        lines = "\n  ".join(str(f) for f in failures)
        later = f"\n  not started, after the failure: {', '.join(self.skipped)}" if self.skipped else ""
        super().__init__(
            f"{len(failures)} VM(s) failed; {len(done)} step(s) were done:\n  {lines}{later}",
            hint="fix the cause, then run again: the next plan shows exactly what is left",
        )


class SshError(AdapterError):
    """SSH to a VM failed: connection refused or timed out, login refused, a command's channel broke."""


class HostKeyRejected(SshError):
    """The VM's host key does not match the known_hosts the inventory names, or is not in it: refused."""


class ComposeError(AdapterError):
    """A Compose stack could not be rendered, validated, deployed or verified."""


class ComposeInvalid(ComposeError):
    """A rendered compose file was rejected by ``docker compose config`` or by the Compose schema."""


class EngineUnreachable(ComposeError):
    """The Docker Engine of a host does not answer (the daemon is stopped, or the user may not use it)."""


class ComposeMissing(ComposeError):
    """A host has neither Compose v2 (``docker compose``) nor v1 (``docker-compose``)."""


class DeployFailed(ComposeError):
    """A stack did not come up healthy.

    Attributes:
        states: ``(host, stack, service) -> state`` for every service of every stack the deploy
            touched or meant to touch (``running (healthy)``, ``created``, ``not deployed``...),
            so nothing is left half-done unrecorded.
    """

    def __init__(
        self,
        message: str,
        *,
        where: str = "",
        hint: str = "",
        states: dict[tuple[str, str, str], str] | None = None,
    ) -> None:
        self.states = dict(states or {})
        super().__init__(message, where=where, hint=hint)

    def __str__(self) -> str:
        text = super().__str__()
        if self.states:
            lines = [f"  {h} {st}/{sv}: {state}" for (h, st, sv), state in sorted(self.states.items())]
            text += "\nstate of each service:\n" + "\n".join(lines)
        return text


class ImagePullFailed(DeployFailed):
    """An image is not on the host and could not be pulled; the stack's containers were left as they were."""


class PortTaken(DeployFailed):
    """A published port is already in use on the host."""


class Unhealthy(DeployFailed):
    """A container did not become healthy (or stopped) before the timeout."""


class BackupError(AdapterError):
    """A backup, a restore test or the restic repository failed; the message names the target and snapshot.

    Attributes:
        problems: one line per failure, when there are several (the report's violations).
    """

    def __init__(self, message: str, *, where: str = "", hint: str = "", problems: Sequence[str] = ()) -> None:
        self.problems = tuple(problems)
        super().__init__(message, where=where, hint=hint)

    def __str__(self) -> str:
        return super().__str__() + "".join(f"\n  {line}" for line in self.problems)


class VzdumpFailed(TaskFailed, BackupError):
    """A vzdump task ended in error (``job errors``, or PVE's own message).

    Also a :class:`TaskFailed`: ``upid``, ``log_tail`` (the task log's last lines, with vzdump's
    ``ERROR: Backup of VM ... failed - ...``), ``node``, ``vmid``, ``vm``.
    """


class BackupFailed(BackupError):
    """Apply stopped on one or more backups; what was done is in ``done``, the failures in ``failures``.

    Attributes:
        failures: the error of each target that failed.
        done: one line per step that completed.
    """

    def __init__(self, failures: list[HomelabError], done: list[str], *, where: str = "backups") -> None:
        self.failures = failures
        self.done = done
        lines = "\n  ".join(str(f) for f in failures)
        super().__init__(
            f"{len(failures)} backup(s) failed; {len(done)} step(s) were done:\n  {lines}",
            where=where,
            hint="fix the cause in the task log above, then run again: the next plan shows exactly what is left",
        )


class ResticError(BackupError):
    """restic refused or failed on a host (exit code and its last lines of stderr, secrets masked)."""


class RepositoryMissing(ResticError):
    """There is no restic repository at ``backups.restic_repository``; it is created only with ``confirm``."""


class ResticAuthFailed(ResticError):
    """The repository refused ``backups.restic_password`` (the password itself is never shown)."""


class HookFailed(BackupError):
    """A consistency hook (a dump, a BGSAVE, a stop) failed for a target: no snapshot was taken or claimed."""


class SourceChanged(BackupError):
    """The source folder changed while it was being backed up; the snapshot was dropped (forgotten)."""


class RestoreTestFailed(BackupError):
    """A restore test failed: the restore itself, the manifest comparison or the database check.

    Raised per target (naming target and snapshot) and, after a whole report is written, for every
    failed restore test at once (``problems``).
    """


class CheckFailed(BackupError):
    """``restic check`` found damage in the repository; the message names the packs and the snapshots they hold."""


class RpoViolated(BackupError):
    """Raised after the whole report is written: targets whose last backup is older than their RPO
    (or that have none, or no backup job covers them), and any failed restore tests, one line each
    in ``problems`` (``layer target: what is wrong``)."""

    @property
    def violations(self) -> tuple[str, ...]:
        return self.problems


class K3sError(AdapterError):
    """K3s on its VM could not be installed, configured, reached or verified."""


class K3sInstallFailed(K3sError):
    """The K3s install script (or a restart of the service) failed on the VM.

    Attributes:
        exit_code: the command's exit code.
        tail: its last lines of output (secrets redacted).
    """

    def __init__(
        self, message: str, *, exit_code: int, tail: Sequence[str] = (), where: str = "", hint: str = ""
    ) -> None:
        self.exit_code = exit_code
        self.tail = tuple(tail)
        super().__init__(message, where=where, hint=hint)

    def __str__(self) -> str:
        text = super().__str__()
        if self.tail:
            text += "\n  last lines:\n    " + "\n    ".join(self.tail)
        return text


class K3sUnreachable(K3sError):
    """The Kubernetes API of the K3s VM does not answer: refused, timed out, or its certificate did not verify."""


class K3sApiError(K3sError):
    """The Kubernetes API refused a request.

    Attributes:
        status: the HTTP status (0 when unknown).
    """

    def __init__(self, message: str, *, status: int = 0, where: str = "", hint: str = "") -> None:
        self.status = status
        super().__init__(message, where=where, hint=hint)


class K3sAuthError(K3sApiError):
    """HTTP 401 or 403: the kubeconfig's credentials are wrong or expired, or lack a right."""


class K3sFieldConflict(K3sApiError):
    """HTTP 409 on a server-side apply: another field manager owns a field the homelab sets (named in the message)."""


class K3sRolloutFailed(K3sError):
    """A Deployment, StatefulSet, Job or HelmChart install did not get ready (or failed) before the timeout.

    Attributes:
        pod: the pod that is not ready ('' when none was found).
        reason: its container's state reason (``ImagePullBackOff``, ``CrashLoopBackOff``...), or the Job's.
        events: the last events about it, oldest first.
    """

    def __init__(
        self,
        message: str,
        *,
        pod: str = "",
        reason: str = "",
        events: Sequence[str] = (),
        where: str = "",
        hint: str = "",
    ) -> None:
        self.pod = pod
        self.reason = reason
        self.events = tuple(events)
        super().__init__(message, where=where, hint=hint)

    def __str__(self) -> str:
        text = super().__str__()
        if self.events:
            text += "\n  last events:\n    " + "\n    ".join(self.events)
        return text


class K3sNotReady(K3sError):
    """The API (/readyz), the node or a kube-system component did not become ready before the timeout."""


class MonitoringError(AdapterError):
    """Runbook 07 failed: the monitoring config could not be rendered, checked, deployed or reloaded."""


class MonitoringConfigRejected(MonitoringError):
    """``promtool check config``/``check rules`` (or ``amtool check-config``) rejected a rendered file.

    Attributes:
        output: what the checker printed (secrets never: the files it checks hold references' values only
            in files it does not print).
    """

    def __init__(self, message: str, *, output: str = "", where: str = "", hint: str = "") -> None:
        self.output = output
        super().__init__(message, where=where, hint=hint)

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text}\n  {self.output.strip()}" if self.output.strip() else text


class PrometheusUnreachable(MonitoringError):
    """Prometheus's (or Alertmanager's) HTTP API does not answer, or answers an error."""


class ReloadFailed(MonitoringError):
    """``POST /-/reload`` failed: the server keeps running its previous configuration."""


class MigrateError(AdapterError):
    """Runbook 05 cannot move a service as asked (unknown, blocked), or a move failed at a checkpoint
    (``where`` names the service and the checkpoint)."""


class DependencyCycle(MigrateError):
    """The services' dependencies form a cycle, so no migration order exists.

    Attributes:
        cycle: the services of the cycle, in order, the first repeated at the end.
    """

    def __init__(self, cycle: Sequence[str], *, where: str = "") -> None:
        self.cycle = tuple(cycle)
        super().__init__(
            f"the services depend on each other in a cycle: {' -> '.join(self.cycle)}",
            where=where,
            hint="break the cycle (drop one depends_on, or migrate these services together by hand)",
        )


class MigrateRefused(MigrateError, PlanConflict):
    """The migration's plan is refused (not enough free space on the K3s VM's storage...); nothing was changed.

    Attributes:
        conflicts: one line per reason.
    """

    def __init__(self, conflicts: list[str], *, where: str = "") -> None:
        self.conflicts = conflicts
        lines = "\n  ".join(conflicts)
        super().__init__(
            f"the migration is refused; nothing was changed:\n  {lines}",
            where=where,
            hint="free space on the K3s VM's storage (or shrink what moves), then plan again",
        )


class CopyFailed(MigrateError):
    """A volume's copy stream broke (SSH channel, tar on either side).

    The Compose service stays stopped: a re-run resumes at the copy checkpoint (volumes already
    copied are skipped, the one cut short is copied again from scratch), or ``rollback=True``
    brings the Compose service back.
    """


class ChecksumMismatch(MigrateError):
    """The copy's checksum manifest differs from the source's.

    Attributes:
        volume: the volume.
        missing: paths of the source not in the copy.
        extra: paths in the copy not in the source.
        changed: paths whose size or sha256 differ.
    """

    def __init__(
        self,
        message: str,
        *,
        volume: str,
        missing: Sequence[str] = (),
        extra: Sequence[str] = (),
        changed: Sequence[str] = (),
        where: str = "",
        hint: str = "",
    ) -> None:
        self.volume = volume
        self.missing = tuple(missing)
        self.extra = tuple(extra)
        self.changed = tuple(changed)
        super().__init__(message, where=where, hint=hint)


class RolledBack(MigrateError):
    """A failure after the Compose service was stopped, rolled back.

    Attributes:
        checkpoint: the checkpoint that failed.
        cause: the failure (also ``__cause__``).
        undone: one line per thing the rollback did (K3s objects deleted, containers started, volumes checked).
    """

    def __init__(
        self,
        message: str,
        *,
        checkpoint: str,
        cause: BaseException,
        undone: Sequence[str] = (),
        where: str = "",
        hint: str = "",
    ) -> None:
        self.checkpoint = checkpoint
        self.cause = cause
        self.undone = tuple(undone)
        super().__init__(message, where=where, hint=hint)

    def __str__(self) -> str:
        text = super().__str__()
        if self.undone:
            text += "\n  rolled back:\n    " + "\n    ".join(self.undone)
        return text


class RollbackFailed(MigrateError):
    """The rollback after a failure did not complete; the message names what is left to do by hand."""


# ---------------------------------------------------------------- translating outside errors

W = TypeVar("W")
Translate = Callable[[Any, W], HomelabError]
#: An adapter's table: outside exception class -> a function (exception, where) -> our error.
ErrorTable = Mapping[type[BaseException], Translate[W]]


def to(cls: type[HomelabError], *, hint: str = "", message: str = "") -> Translate[str]:
    """A table entry that makes ``cls(f"{message}{exception}", where=where, hint=hint)``.

    Args:
        cls: our error class.
        hint: what to do.
        message: text put before the outside exception's own message.
    """

    def make(e: BaseException, where: str) -> HomelabError:
        text = str(e) or type(e).__name__
        return cls(f"{message}{text}", where=where, hint=hint)

    return make


def translate(table: ErrorTable[W], error: BaseException, where: W) -> HomelabError | None:
    """Our error for an outside one: the table's entry for the first class of the error's MRO it names.

    So the most specific class wins (``SSLError`` before ``ConnectionError`` before ``OSError``),
    and for a class with two bases the first base does. None when the table names none of them.
    """
    for cls in type(error).__mro__:
        if cls in table:
            return table[cls](error, where)
    return None


@contextlib.contextmanager
def mapped(table: ErrorTable[W], *, where: W) -> Iterator[None]:
    """Translate outside errors raised in the block by table (``raise ours from theirs``).

    Our own errors (:class:`HomelabError`) pass through untouched, and so does anything the
    table does not name.

    Args:
        table: the adapter's table.
        where: what the block is about, handed to the table's function (a string for most
            adapters; Proxmox hands the request).
    """
    try:
        yield
    except HomelabError:
        raise
    except Exception as e:
        ours = translate(table, e, where)
        if ours is None:
            raise
        raise ours from e
