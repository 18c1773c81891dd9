"""Run a runbook notebook with papermill and archive it as the audit log.

A run: take the homelab's lock (the local lock, and the run Lease on the homelab's K3s when
the inventory has one: :mod:`homelab_lib.kube.lease`) -> execute with papermill into a private
temporary file (its kernel on the IPC transport, its sockets in a folder only this user can
enter: :func:`ipc_kernel`) -> scan the executed notebook for every resolved secret value ->
write it to the archive -> append a hash-chained record to the index. A failed
notebook is archived too (status ``failed``, with the failing cell); a notebook
in which a secret value appears is not kept (status ``leak``) and the run fails
loudly. Every outcome is recorded.

Reviewed plans: a runbook's plan cells emit its plans (:func:`homelab_lib.core.contract.show_plan`);
the runner finds every one in the executed notebook (the last per adapter) and records
them, under one sha256, with the run (:func:`homelab_lib.core.contract.plan_in_notebook`).
``approve=RUN_ID`` (``homelab run ... --approve RUN_ID``) first checks that
the archive vouches for that run's record (the chain up to it, its notebook, its
stored plan hashing to its ``plan_hash``), then runs the notebook with ``confirm=True``
and ``approved_plan={adapter: sha256}`` of that run's plans: each apply step changes
nothing unless the plan it computes now, and every plan shown before it, is its
adapter's approved one and every approved plan has been shown (so all are applied or
none); on a mismatch the run fails with :class:`~homelab_lib.core.errors.ApprovalRefused`
and the difference. The record of the run names the run it approves (``approves``).
"""

from __future__ import annotations

import ast
import contextlib
import getpass
import json
import logging
import os
import socket
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nbformat
import papermill
from papermill.exceptions import PapermillExecutionError

from homelab_lib.core.clock import SYSTEM, Clock
from homelab_lib.core.contract import approval, plan_in_notebook, recorded_plans
from homelab_lib.core.errors import (
    ApprovalRefused,
    AuditError,
    ConfigError,
    K3sError,
    NotebookFailed,
    Problem,
    RunError,
    SecretLeak,
    UnresolvedSecret,
)
from homelab_lib.core.plan import diff_documents
from homelab_lib.core.secrets import Redactor, find_leaks, literal_secrets, redact_params
from homelab_lib.inventory import load_inventory
from homelab_lib.inventory.load import shown_path
from homelab_lib.runs.archive import Archive, Record
from homelab_lib.runs.runlock import run_lock
from homelab_lib.runs.signing import Signing, signing_of

if TYPE_CHECKING:
    from homelab_lib.kube.lease import RunLease

APPROVED_PLAN = "approved_plan"  # the notebook parameter that carries the approved plans: {adapter: sha256}


def default_lock_dir() -> Path:
    """Where run locks live: one file per homelab, shared by every archive on this machine (only this one)."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return Path(base) / f"homelab-locks-{os.getuid()}"


@dataclass(frozen=True)
class RunResult:
    """The outcome of one run, as recorded in the index."""

    record: Record
    archived: Path | None

    @property
    def ok(self) -> bool:
        return self.record.status == "ok"


def check_parameters(params: Mapping[str, Any]) -> None:
    """Refuse notebook parameters that carry a secret value instead of a reference.

    Raises:
        ConfigError: a secret-looking parameter holds a literal value (the value is not shown).
    """
    for key in literal_secrets(params):
        raise ConfigError(
            [
                Problem(
                    f"-p {key}",
                    0,
                    key,
                    "looks like a secret and holds a value; pass a reference (env:NAME or file:PATH): "
                    "values never go into notebooks",
                )
            ]
        )


def _params_files(nb_path: Path, params: Mapping[str, Any]) -> list[Path]:
    """The homelab parameter files a run will use: ``params_file`` from -p, else the notebook's default.

    Relative paths are taken as the notebook takes them: from its own folder.
    """
    value = params.get("params_file")
    if value is None:
        try:
            declared = papermill.inspect_notebook(str(nb_path)).get("params_file")
            value = ast.literal_eval(declared["default"]) if declared else None
        except (ValueError, SyntaxError, KeyError):
            value = None
    names = [value] if isinstance(value, str) else list(value) if isinstance(value, list | tuple) else []
    return [(nb_path.parent / str(v)).resolve() for v in names]


@dataclass(frozen=True)
class LeaseSettings:
    """Where a run's Lease is taken: the K3s kubeconfig (when the inventory has ``k3s:`` and the file exists)."""

    kubeconfig: Path
    duration_s: int


def _secret_values(files: Sequence[Path]) -> tuple[Redactor, str, Signing, LeaseSettings | None]:
    """Resolve every secret of the homelab now, for the leak scan; the homelab's name; how HEAD is signed;
    where its run Lease is (None: the local lock only)."""
    redactor = Redactor()
    if not files:
        return redactor, "", Signing(), None
    inv = load_inventory(files)
    for _path, ref in inv.secrets():
        try:
            redactor.add(ref.reveal())
        except UnresolvedSecret:
            continue  # what the runner cannot read, the notebook cannot leak
    lease = None
    if inv.k3s is not None and inv.k3s.kubeconfig is not None and inv.k3s.kubeconfig.is_file():
        lease = LeaseSettings(inv.k3s.kubeconfig, inv.k3s.run_lease_s)
    return redactor, inv.name, signing_of(inv.audit), lease


@contextlib.contextmanager
def run_lease(settings: LeaseSettings | None, homelab: str, run: str, clock: Clock) -> Iterator[RunLease | None]:
    """Hold the homelab's run Lease on its K3s for the block (nothing when settings is None).

    A cluster that does not answer (K3s down, or being installed by runbook 03), or that refuses
    the kubeconfig (stale after a reinstall: runbook 03 is what fetches it again) or the Lease,
    leaves the run to the local lock, with a warning: the Lease serialises runs only while the
    cluster is up and the kubeconfig current.

    Raises:
        LockHeld: another run, from anywhere, holds the Lease.
    """
    if settings is None:
        yield None
        return
    from homelab_lib.kube.lease import open_lease  # the kubernetes client, only for homelabs with K3s

    with contextlib.ExitStack() as stack:
        lease: RunLease | None = None
        try:
            made = open_lease(
                settings.kubeconfig, homelab or "default", run, duration_s=settings.duration_s, clock=clock
            )
            stack.callback(made.kube.api.close)
            stack.enter_context(made.held())
            lease = made
        except K3sError as e:  # never LockHeld: that is a RunError, and it stops the run
            logging.getLogger(__name__).warning("the run Lease is not taken (the local lock is): %s", e)
        yield lease


class _RedactingFilter(logging.Filter):
    """Masks secret values in papermill's log lines (``--log-output`` echoes cell outputs)."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redactor.redact(record.getMessage())
        record.args = ()
        return True


def run_notebook(
    notebook: str | Path,
    *,
    param_files: Sequence[str | Path] = (),
    parameters: Mapping[str, Any] | None = None,
    archive_dir: str | Path = "archive",
    lock_dir: Path | None = None,
    clock: Clock = SYSTEM,
    progress_bar: bool = True,
    log_output: bool = False,
    kernel_name: str | None = None,
    approve: str | None = None,
    on_record: Callable[[Record, Path], None] | None = None,
) -> RunResult:
    """Execute a notebook with papermill, archive it and record the run.

    Args:
        notebook: the notebook to run.
        param_files: homelab parameter files; passed to the notebook as ``params_file``.
        parameters: other notebook parameters (``confirm``, ...); secrets must be references.
        archive_dir: the archive folder.
        lock_dir: where the per-homelab locks live (default: :func:`default_lock_dir`).
        clock: the clock (start time and duration).
        progress_bar: show papermill's progress bar.
        log_output: echo cell outputs to the log (headless runs).
        kernel_name: override the notebook's kernel.
        approve: the id of a dry run whose archived plan this run applies, and only that plan
            (``confirm=True`` and ``approved_plan`` are set for the notebook).
        on_record: called with each run's record and the archive's folder once the record is written,
            before the run's result is returned or raised (``homelab run`` sends alerts from it).

    Returns:
        The run's result (status ``ok``).

    Raises:
        ConfigError: a parameter file does not load; approve names no run that can be approved.
        ApprovalRefused: (approve) the plan computed now is not the approved one; nothing was changed.
        LockHeld: another run against the same homelab is under way: on this machine (the local lock) or,
            when the inventory has ``k3s:`` and its kubeconfig exists, anywhere (the run Lease on K3s).
        LockUnsafe: the lock folder is not private to this user (see :mod:`homelab_lib.runs.runlock`).
        AuditError: the archive's HEAD does not match its index, or (with ``audit.signing_key``) the archive
            is not as the key left it (nothing is run); (approve) the archive does not vouch for the approved
            record: the chain through it, its notebook or its stored plan (nothing is run); or the record
            could not be signed (the run is recorded, unsigned).
        NotebookFailed: a cell raised; the notebook is archived with status ``failed``.
        SecretLeak: a secret value appeared in the executed notebook; it was not archived.
    """
    nb_path = Path(notebook).resolve()
    if not nb_path.is_file():
        raise ConfigError([Problem(str(notebook), 0, "", "no such notebook; the runbooks are in notebooks/")])
    params: dict[str, Any] = dict(parameters or {})
    check_parameters(params)
    files = [Path(f).resolve() for f in param_files]
    if files:
        params["params_file"] = str(files[0]) if len(files) == 1 else [str(f) for f in files]
    else:
        files = _params_files(nb_path, params)  # the homelab the notebook will use: lock it, scan for its secrets
    redactor, homelab, signing, lease = _secret_values(files)
    archive = Archive(Path(archive_dir), signing)

    since = clock.now()
    holder = f"{nb_path.name}, pid {os.getpid()}, since {since.isoformat(timespec='seconds')}"
    run_id = f"{since.strftime('%Y%m%dT%H%M%SZ')}-{nb_path.stem}"
    with (
        run_lock(lock_dir or default_lock_dir(), homelab or "default", holder),
        run_lease(lease, homelab, run_id, clock),
    ):
        repaired = archive.prepare()  # the archive's end checked (and, unsigned, a HEAD one record behind repaired)
        if repaired:
            logging.getLogger(__name__).warning("%s: %s", archive.root, repaired)
        approved = _approved(nb_path, archive, approve, homelab) if approve else None
        if approved is not None:
            params.update(confirm=True, **{APPROVED_PLAN: approval(approved.plan)})
        run = Run(nb_path, files, params, archive, redactor, homelab, clock, approved, on_record)
        return _execute(run, Papermill(progress_bar, log_output, kernel_name))


@dataclass(frozen=True)
class Run:
    """One run, as it goes from papermill to the archive.

    Attributes:
        nb_path: the notebook.
        files: the homelab parameter files it uses.
        params: its notebook parameters (references, never values).
        archive: where it is recorded.
        redactor: every secret value of the homelab, to find and mask.
        homelab: the inventory's name ('' without parameter files).
        clock: the clock.
        approved: the dry run whose plan it applies (``--approve``), if any.
        on_record: called with the record once it is written.
    """

    nb_path: Path
    files: list[Path]
    params: dict[str, Any]
    archive: Archive
    redactor: Redactor
    homelab: str
    clock: Clock
    approved: Record | None = None
    on_record: Callable[[Record, Path], None] | None = None


@dataclass(frozen=True)
class Papermill:
    """How papermill runs the notebook."""

    progress_bar: bool = True
    log_output: bool = False
    kernel_name: str | None = None


@dataclass(frozen=True)
class Executed:
    """What papermill left: the executed notebook (None when it could not run), the failure, and when.

    Attributes:
        notebook: the executed notebook, or None.
        failure: (failing cell, ename, evalue) when a cell raised or the kernel failed; None when it ran through.
        start: when it started.
        seconds: how long it took.
    """

    notebook: Any
    failure: tuple[int | None, str, str] | None
    start: datetime
    seconds: float


def ipc_kernel(folder: Path) -> dict[str, Any]:
    """papermill options that start the kernel on the IPC transport, not TCP: its connection file and sockets
    in folder (made mode 700 here), which only this user can enter; no port any local user could reach."""
    from traitlets.config import Config

    folder.mkdir(mode=0o700, exist_ok=True)
    folder.chmod(0o700)
    config = Config()
    config.KernelManager.transport = "ipc"
    config.KernelManager.connection_file = str(folder / "kernel.json")
    config.KernelManager.ip = str(folder / "kernel")  # the sockets: kernel-1 ... kernel-5
    return {"config": config}


def _papermill(run: Run, how: Papermill) -> Executed:
    """Execute the notebook into a private temporary folder (its kernel on IPC there); secrets masked in the log."""
    os.environ["HOMELAB_HEADLESS"] = "1"  # the kernel inherits it: progress as lines, not widgets
    start = run.clock.now()
    t0 = run.clock.monotonic()
    failure: tuple[int | None, str, str] | None = None  # (cell, ename, evalue)
    log_filter = _RedactingFilter(run.redactor)
    papermill_log = logging.getLogger("papermill")
    papermill_log.addFilter(log_filter)
    try:
        with tempfile.TemporaryDirectory(prefix="homelab-run-") as tmp:
            out = Path(tmp) / run.nb_path.name
            try:
                papermill.execute_notebook(
                    str(run.nb_path),
                    str(out),
                    parameters=run.params,
                    cwd=str(run.nb_path.parent),
                    progress_bar=how.progress_bar,
                    log_output=how.log_output,
                    kernel_name=how.kernel_name,
                    **ipc_kernel(Path(tmp) / "kernel"),
                )
            except PapermillExecutionError as e:
                failure = (e.cell_index, e.ename, e.evalue)
            except Exception as e:  # the kernel died or would not start: record it all the same
                failure = (None, type(e).__name__, str(e))
            nb = nbformat.read(str(out), as_version=4) if out.exists() else None  # type: ignore[no-untyped-call]
    finally:
        papermill_log.removeFilter(log_filter)
    return Executed(nb, failure, start, run.clock.monotonic() - t0)


def _execute(run: Run, how: Papermill) -> RunResult:
    """Run the notebook, then record the outcome: not run, leaked (not kept), failed, refused or ok."""
    done = _papermill(run, how)
    approved = run.approved
    plan = plan_in_notebook(done.notebook) if done.notebook is not None else None
    failure = done.failure
    refused = approved is not None and failure is not None and failure[1] == "PlanNotApproved"
    diff = _diff(approved.plan, plan) if refused and approved is not None and plan else []
    diff = [run.redactor.redact(line) for line in diff]
    error = run.redactor.redact(f"{failure[1]}: {failure[2]}") if failure else ""
    error += "\n" + "\n".join(diff) if diff else ""
    cell = failure[0] if failure else None

    def commit(status: str, note: str, data: bytes | None) -> Record:
        record = _record(run, done, status, cell, note, plan if status != "leak" else None)  # a leak may be in the plan
        written = run.archive.commit(record, data, done.start.strftime("%Y%m%dT%H%M%SZ"), run.nb_path.stem)
        if run.on_record is not None:
            run.on_record(written, run.archive.root)
        return written

    if done.notebook is None:
        commit("failed", error, None)
        raise RunError(f"the notebook could not be run: {error}", where=str(run.nb_path))
    places = find_leaks(done.notebook, run.redactor)
    if places:
        written = commit("leak", f"secret value found in {', '.join(places)}; notebook not archived", None)
        raise SecretLeak(
            f"a secret value appeared in the executed notebook ({', '.join(places)}); it was NOT archived",
            where=str(run.nb_path),
            hint=f"recorded as run {written.run}; make the notebook show references, never values",
        )
    done.notebook.metadata.setdefault("papermill", {})["output_path"] = None  # it was a private temporary file
    data = (json.dumps(done.notebook, indent=1, ensure_ascii=False, sort_keys=True) + "\n").encode()
    written = commit("failed" if failure else "ok", error, data)
    path = run.archive.root / written.archived
    _raise_for(run, failure, refused, diff, written, path)
    return RunResult(written, path)


def _diff(approved: dict[str, Any] | None, shown: dict[str, Any]) -> list[str]:
    """What differs between the approved run's plans and the plans shown now, adapter by adapter."""
    was, now = recorded_plans(approved), recorded_plans(shown)
    several = len(was.keys() | now.keys()) > 1
    lines = []
    for name in sorted(was.keys() | now.keys()):
        lines += [
            f"{name}: {line}" if several else line for line in diff_documents(was.get(name, {}), now.get(name, {}))
        ]
    return lines


def _raise_for(
    run: Run, failure: tuple[int | None, str, str] | None, refused: bool, diff: list[str], written: Record, path: Path
) -> None:
    """Raise what an archived run that did not deliver ends with: refused, failed, or applied another plan."""
    approved = run.approved
    name = run.nb_path.name
    if failure and refused and approved is not None:
        evalue = run.redactor.redact(failure[2])
        raise ApprovalRefused(name, failure[0], evalue, str(path), approved_run=approved.run, diff=diff)
    if failure:
        raise NotebookFailed(name, failure[0], failure[1], run.redactor.redact(failure[2]), str(path))
    if approved is not None and written.plan_hash != approved.plan_hash:
        raise RunError(
            f"the notebook applied with approve={approved.run}, but the plan it showed "
            f"({written.plan_hash[:12] or 'none'}) is not the approved one ({approved.plan_hash[:12]})",
            where=str(run.nb_path),
            hint="its apply step must be given approved_plan=approved_plan (see notebooks/01); check what it changed",
        )


def _approved(nb_path: Path, archive: Archive, run: str, homelab: str) -> Record:
    """The archived dry run whose plan a run may apply, after checking it can be approved and the archive vouches
    for it: the chain through its record holds, its notebook is unaltered and shows that plan, and its stored
    plan hashes to its ``plan_hash``.

    Raises:
        ConfigError: no such run, or it is not an ok dry run of this notebook and homelab with a plan,
            or the notebook has no ``approved_plan`` parameter to enforce it with.
        AuditError: the archive does not vouch for the record (named, with what is wrong); nothing is run.
    """

    def refuse(message: str) -> ConfigError:
        return ConfigError([Problem(f"--approve {run}", 0, "", message)])

    try:
        record = archive.find(run)
    except AuditError as e:
        raise refuse(f"{e.message} ({e.hint})" if e.hint else e.message) from None
    if record.status != "ok":
        raise refuse(f"run {record.run} ended {record.status}; only a dry run that ended ok can be approved")
    if record.parameters.get("confirm"):
        raise refuse(f"run {record.run} ran with confirm=True; approve a dry run (confirm=False)")
    if Path(record.notebook).name != nb_path.name:
        raise refuse(f"run {record.run} ran {record.notebook}, not {nb_path.name}")
    if record.homelab != homelab:
        raise refuse(f"run {record.run} was against homelab '{record.homelab}', this run is against '{homelab}'")
    if not record.plan_hash or not record.plan:
        raise refuse(f"run {record.run} archived no plan (its notebook shows none with contract.show_plan)")
    declared = papermill.inspect_notebook(str(nb_path))
    if APPROVED_PLAN not in declared:
        raise refuse(
            f"{nb_path.name} has no '{APPROVED_PLAN}' parameter, so it could not refuse another plan; "
            f"add {APPROVED_PLAN} = None to its parameters cell and pass it to every apply"
        )
    _vouch(archive, record)
    return record


def _vouch(archive: Archive, record: Record) -> None:
    """Refuse a record the archive does not vouch for: the chain through it, its notebook, its plan.

    Raises:
        AuditError: naming the record and what is wrong.
    """
    problems = archive.problems_through(record.run)
    if not problems and record.archived:
        with (archive.root / record.archived).open() as f:
            shown = plan_in_notebook(json.load(f))
        if shown is None or shown["sha256"] != record.plan_hash:
            problems.append(
                f"{archive.root / record.archived}: the notebook of run {record.run} shows "
                f"{'no plan' if shown is None else 'plan ' + str(shown['sha256'])[:12]}, not its record's plan "
                f"{record.plan_hash[:12]}"
            )
    if problems:
        raise AuditError(
            f"--approve {record.run}: the archive does not vouch for that run's record, so nothing was run: "
            + "; ".join(problems),
            where=str(archive.index),
            hint="look into it with `homelab audit verify`; make a new dry run and approve that one",
        )


def _record(run: Run, done: Executed, status: str, cell: int | None, error: str, plan: dict[str, Any] | None) -> Record:
    return Record(
        run=f"{done.start.strftime('%Y%m%dT%H%M%SZ')}-{run.nb_path.stem}",
        notebook=shown_path(run.nb_path),
        homelab=run.homelab,
        parameter_files=[shown_path(f) for f in run.files],
        parameters=redact_params(run.params),
        start=done.start.isoformat(timespec="seconds"),
        duration_s=round(done.seconds, 3),
        status=status,
        failed_cell=cell,
        error=error,
        archived="",
        sha256="",
        user=getpass.getuser(),
        host=socket.gethostname(),
        plan_hash=str(plan["sha256"]) if plan else "",
        plan=plan,
        approves=run.approved.run if run.approved is not None else "",
    )


__all__ = [
    "ConfigError",
    "LeaseSettings",
    "RunResult",
    "check_parameters",
    "default_lock_dir",
    "run_lease",
    "run_notebook",
]
