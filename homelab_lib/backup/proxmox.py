"""The Proxmox layer of runbook 06: vzdump backup jobs, each managed VM's latest backup, its age against its RPO.

Everything goes through the Proxmox adapter's client (:class:`~homelab_lib.clients.proxmox.ProxmoxClient`,
its error table) and task waiter (:func:`~homelab_lib.clients.tasks.wait_task`):

- **jobs**: ``GET /cluster/backup``; a job covers a VM when it is enabled and selects it (``vmid``
  list, ``all`` minus ``exclude``, or ``pool``; a job's ``node`` limits it to that node);
- **backups**: each backup storage's content (``content=backup``) on every online node, shared
  storages once: time, size, storage, notes, ``protected``, and the ``verification`` state where
  Proxmox Backup Server reports one;
- **failed tasks**: ``vzdump`` tasks that ended in error within a window (``nodes/{node}/tasks``),
  with their log's last lines and the VMs their ``ERROR: Backup of VM ... failed`` lines name;
- **targets**: the inventory's VMs and any other VM carrying ``proxmox.managed_tag``; the RPO of
  each is ``backups.rpo_hours[name]``, else ``backups.vzdump.rpo_hours``.

The plan (pure) has one ``backup-job`` change, to create or fix the inventory's job
(``backups.vzdump``: ``job_id``, ``schedule``, ``storage``, ``mode``, ``keep_daily`` as
``prune-backups``, ``notes_template``) so that it covers every target, and one ``vzdump`` change per
target: ``create`` (a backup now, as a vzdump task waited on) when it has none within its RPO,
else a no-op; a target missing from the cluster or on an offline node is a conflict, reported and
left out while the rest is applied. Times in the plan are the backups' own (never the age, which
moves), so the plan made for the dry run is the one a confirmed apply re-checks.

A runbook::

    from homelab_lib.backup import proxmox as pve_backup
    runbook = pve_backup.adapter(inv)
    desired = runbook.desired()
    observed = runbook.observe(desired)
    plan = runbook.plan(desired, observed)
    contract.show_plan(plan)
    result = runbook.apply(desired, plan, confirm=confirm, approved_plan=approved_plan)
    verified = runbook.verify(desired, result)  # after a confirmed run, a target still out of its RPO raises
    display(verified.report.table())            # one row per VM (this layer's COLUMNS), violations first
    pve_backup.check_rpo(verified.report.rows)  # raises RpoViolated, naming each target
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from homelab_lib.backup.rows import LEADING, BackupRow
from homelab_lib.clients.proxmox import At, ProxmoxClient
from homelab_lib.clients.tasks import wait_task
from homelab_lib.core.clock import SYSTEM, Clock
from homelab_lib.core.contract import (
    DONE,
    FAILED,
    Adapter,
    ApplyResult,
    BaseAdapter,
    Carried,
    Check,
    Outcome,
    VerifyResult,
)
from homelab_lib.core.errors import BackupError, BackupFailed, HomelabError, RpoViolated, TaskFailed, VzdumpFailed
from homelab_lib.core.plan import Action, Change, FieldChange, Plan
from homelab_lib.core.progress import Progress
from homelab_lib.proxmox.state import split_tags

if TYPE_CHECKING:
    import pandas as pd

    from homelab_lib.inventory.model import Inventory

LAYER = "proxmox"
JOB = "backup-job"
VZDUMP = "vzdump"
WINDOW_HOURS = 72.0
"""How far back failed vzdump tasks are looked for, by default."""
LOG_TAIL = 8
ERROR_LINE = re.compile(r"^ERROR: Backup of VM (\d+) failed - (.*)$")
VOLID_VMID = re.compile(r"vzdump-(?:qemu|lxc|openvz)-(\d+)-|backup/(?:vm|ct)/(\d+)/")
#: This layer's own table (:meth:`VzdumpReport.table`): the report's leading columns, then vzdump's.
COLUMNS = (*LEADING, "storage", "protected", "verification", "violation")


# ---------------------------------------------------------------- desired


@dataclass(frozen=True)
class JobSpec:
    """The backup job the inventory wants (``backups.vzdump``), in PVE's option names.

    Attributes:
        id: the job's id (``backups.vzdump.job_id``).
        schedule: a PVE calendar event.
        storage: where the backups go.
        mode: ``snapshot``, ``suspend`` or ``stop``.
        prune_backups: the retention, as PVE spells it (``keep-daily=7``).
        notes_template: each backup's notes (``{{guestname}}``).

    Backups are compressed with zstd, as the GUI's new jobs are.
    """

    id: str
    schedule: str
    storage: str
    mode: str
    prune_backups: str
    notes_template: str

    def options(self) -> dict[str, str]:
        """The job's options besides its selection of guests, as ``cluster/backup`` returns them."""
        return {
            "compress": "zstd",
            "enabled": "1",
            "mode": self.mode,
            "notes-template": self.notes_template,
            "prune-backups": self.prune_backups,
            "schedule": self.schedule,
            "storage": self.storage,
        }


@dataclass(frozen=True)
class Target:
    """A VM whose backups are checked: its name, vmid and RPO."""

    name: str
    vmid: int
    rpo_hours: float


@dataclass(frozen=True)
class Desired:
    """What runbook 06 wants of Proxmox's backups.

    Attributes:
        job: the backup job.
        targets: the inventory's VMs.
        managed_tag: VMs carrying it are targets too.
        default_rpo_hours: the RPO of a target the inventory does not name.
        rpo_overrides: VM name -> RPO (``backups.rpo_hours``).
        window_hours: how far back failed vzdump tasks are reported.
        task_timeout_s: the longest wait for one vzdump task.
    """

    job: JobSpec
    targets: tuple[Target, ...]
    managed_tag: str
    default_rpo_hours: float
    rpo_overrides: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    window_hours: float = WINDOW_HOURS
    task_timeout_s: float = 900.0


def desired_state(inv: Inventory, *, window_hours: float = WINDOW_HOURS) -> Desired:
    """The backup job and targets the inventory asks for.

    Raises:
        BackupError: the inventory has no ``backups.vzdump``.
    """
    policy = inv.backups.vzdump
    if policy is None:
        raise BackupError(
            "the inventory has no Proxmox backup policy",
            where="backups.vzdump",
            hint="add backups.vzdump with at least `storage:` (a storage with content type backup)",
        )
    rpo = dict(inv.backups.rpo_hours)
    job = JobSpec(
        id=policy.job_id,
        schedule=policy.schedule,
        storage=policy.storage,
        mode=policy.mode,
        prune_backups=f"keep-daily={policy.keep_daily}",
        notes_template=policy.notes_template,
    )
    targets = tuple(Target(vm.name, vm.vmid, float(rpo.get(vm.name, policy.rpo_hours))) for vm in inv.vms)
    return Desired(
        job=job,
        targets=targets,
        managed_tag=inv.proxmox.managed_tag,
        default_rpo_hours=float(policy.rpo_hours),
        rpo_overrides=MappingProxyType(rpo),
        window_hours=window_hours,
        task_timeout_s=inv.proxmox.task_timeout_s,
    )


# ---------------------------------------------------------------- observed


def _ids(text: object) -> tuple[int, ...]:
    return tuple(sorted({int(p) for p in re.split(r"[\s,;]+", str(text or "")) if p.strip().isdigit()}))


def _flag(value: object, default: bool = False) -> bool:
    if value is None or value == "":
        return default
    return str(value).lower() in ("1", "true", "yes", "on")


def _utc(epoch: object) -> datetime | None:
    try:
        return datetime.fromtimestamp(int(str(epoch)), UTC)
    except (TypeError, ValueError, OverflowError):
        return None


@dataclass(frozen=True)
class BackupJob:
    """A vzdump backup job of the cluster (``cluster/backup``).

    Attributes:
        id: its id.
        enabled: it runs on its schedule.
        schedule: its calendar event.
        storage: where it writes.
        mode: snapshot, suspend or stop.
        all: it selects every guest (minus ``exclude``).
        vmids: the guests it selects by id.
        exclude: the guests ``all`` leaves out.
        pool: the pool whose guests it selects.
        node: the node it is limited to ('' for every node).
        prune_backups: its retention (``keep-daily=7``).
        notes_template: its notes template.
        next_run: when it runs next, as PVE computed it.
        options: every option as PVE returned it, stringified (what a plan compares).
    """

    id: str
    enabled: bool
    schedule: str
    storage: str
    mode: str
    all: bool
    vmids: tuple[int, ...]
    exclude: tuple[int, ...]
    pool: str
    node: str
    prune_backups: str
    notes_template: str
    next_run: datetime | None
    options: Mapping[str, str]

    @classmethod
    def of(cls, item: Mapping[str, Any]) -> BackupJob:
        """A job from an item of ``GET /cluster/backup``."""
        prune = item.get("prune-backups")
        if isinstance(prune, Mapping):  # some PVE versions answer the property string decoded
            prune = ",".join(f"{k}={v}" for k, v in sorted(prune.items()))
        options = {
            str(k): ("1" if v is True else "0" if v is False else str(v))
            for k, v in item.items()
            if k not in ("id", "type", "next-run") and v is not None and not isinstance(v, (dict, list))
        }
        if prune is not None:
            options["prune-backups"] = str(prune)
        return cls(
            id=str(item["id"]),
            enabled=_flag(item.get("enabled"), default=True),
            schedule=str(item.get("schedule") or item.get("starttime") or ""),
            storage=str(item.get("storage") or ""),
            mode=str(item.get("mode") or "snapshot"),
            all=_flag(item.get("all")),
            vmids=_ids(item.get("vmid")),
            exclude=_ids(item.get("exclude")),
            pool=str(item.get("pool") or ""),
            node=str(item.get("node") or ""),
            prune_backups=str(prune or ""),
            notes_template=str(item.get("notes-template") or ""),
            next_run=_utc(item.get("next-run")),
            options=MappingProxyType(options),
        )

    def selects(self, vmid: int, node: str, pools: Mapping[str, frozenset[int]]) -> bool:
        """True if the job, enabled or not, backs up this guest (on node)."""
        if self.node and node and self.node != node:
            return False
        if self.vmids:
            return vmid in self.vmids
        if self.pool:
            return vmid in pools.get(self.pool, frozenset())
        return self.all and vmid not in self.exclude

    @property
    def selection(self) -> str:
        """The guests it selects, in words."""
        if self.vmids:
            return "vmid " + ",".join(str(i) for i in self.vmids)
        if self.pool:
            return f"pool {self.pool}"
        if self.all:
            return "all" + (" except " + ",".join(str(i) for i in self.exclude) if self.exclude else "")
        return "nothing"


@dataclass(frozen=True)
class Guest:
    """A VM of the cluster (``cluster/resources``): id, name, node, status, tags."""

    vmid: int
    name: str
    node: str
    status: str
    template: bool
    tags: tuple[str, ...]


@dataclass(frozen=True)
class VzdumpBackup:
    """One vzdump backup in a storage's content.

    Attributes:
        volid: its volume id (``local:backup/vzdump-qemu-110-2026_11_25-02_00_00.vma.zst``).
        vmid: the guest it is of.
        storage: the storage it is on.
        node: the node it was listed from.
        time: when it was taken (its ``ctime``), UTC.
        size: bytes.
        format: ``vma.zst``, ``pbs-vm``...
        notes: its notes ('' when none).
        protected: pruning and removal leave it.
        verification: PBS's verify state (``ok``, ``failed``), None where none is reported.
        verification_upid: the verify task, where PBS reports one.
    """

    volid: str
    vmid: int
    storage: str
    node: str
    time: datetime
    size: int
    format: str
    notes: str
    protected: bool
    verification: str | None
    verification_upid: str | None

    @classmethod
    def of(cls, item: Mapping[str, Any], storage: str, node: str) -> VzdumpBackup | None:
        """A backup from an item of a storage's content; None when it names no guest."""
        volid = str(item.get("volid") or "")
        vmid: int | None = None
        if str(item.get("vmid") or "").isdigit():
            vmid = int(item["vmid"])
        else:
            found = VOLID_VMID.search(volid)
            if found:
                vmid = int(found.group(1) or found.group(2))
        taken = _utc(item.get("ctime"))
        if vmid is None or taken is None:
            return None
        verify = item.get("verification")
        state = upid = None
        if isinstance(verify, Mapping):
            state = str(verify.get("state")) if verify.get("state") is not None else None
            upid = str(verify.get("upid")) if verify.get("upid") is not None else None
        return cls(
            volid=volid,
            vmid=vmid,
            storage=storage,
            node=node,
            time=taken,
            size=int(item.get("size") or 0),
            format=str(item.get("format") or ""),
            notes=str(item.get("notes") or ""),
            protected=_flag(item.get("protected")),
            verification=state,
            verification_upid=upid,
        )


@dataclass(frozen=True)
class FailedTask:
    """A vzdump task that ended in error.

    Attributes:
        upid: its id.
        node: where it ran.
        start: when it started (UTC).
        status: its exit status (``job errors``, or PVE's message).
        vmids: the guests it failed for (its id, and its log's ``ERROR: Backup of VM ... failed`` lines).
        reasons: vmid -> why, from those lines.
        log_tail: the task log's last lines.
    """

    upid: str
    node: str
    start: datetime | None
    status: str
    vmids: tuple[int, ...]
    reasons: Mapping[int, str]
    log_tail: tuple[str, ...]

    def row(self) -> dict[str, Any]:
        """A row for a table: node, start, status, vmids, why, upid."""
        why = "; ".join(f"{vmid}: {text}" for vmid, text in sorted(self.reasons.items()))
        return {
            "node": self.node,
            "start": self.start,
            "status": self.status,
            "vmids": ",".join(str(i) for i in self.vmids),
            "why": why or (self.log_tail[-1] if self.log_tail else ""),
            "upid": self.upid,
        }


@dataclass(frozen=True)
class Observed:
    """What the cluster has of backups, read at one moment.

    Attributes:
        at: when it was read (the clock's now): ages are counted from here.
        jobs: the backup jobs.
        guests: the VMs (templates too).
        pools: pool -> its guests' vmids (only pools a job selects).
        backups: every vzdump backup found, newest first.
        failed: vzdump tasks that failed within the window, newest first.
        offline: nodes that are offline (their storages and tasks were not read).
        unreadable: storages whose content could not be read, with PVE's message.
        backup_storages: the storages (enabled, active) that hold backups.
    """

    at: datetime
    jobs: tuple[BackupJob, ...]
    guests: tuple[Guest, ...]
    pools: Mapping[str, frozenset[int]]
    backups: tuple[VzdumpBackup, ...]
    failed: tuple[FailedTask, ...]
    offline: tuple[str, ...] = ()
    unreadable: tuple[str, ...] = ()
    backup_storages: tuple[str, ...] = ()

    def job(self, job_id: str) -> BackupJob | None:
        return next((j for j in self.jobs if j.id == job_id), None)

    def guest(self, vmid: int) -> Guest | None:
        return next((g for g in self.guests if g.vmid == vmid), None)

    def latest(self, vmid: int) -> VzdumpBackup | None:
        """The newest backup of vmid on any storage, or None."""
        return next((b for b in self.backups if b.vmid == vmid), None)

    def covering(self, vmid: int, node: str) -> tuple[BackupJob, ...]:
        """The jobs (enabled or not) that select this guest."""
        return tuple(j for j in self.jobs if j.selects(vmid, node, self.pools))


def observe(client: ProxmoxClient, desired: Desired, *, now: datetime) -> Observed:
    """Read the cluster's backup jobs, guests, backups and failed vzdump tasks (reads only).

    Args:
        client: the API.
        desired: what the inventory wants (the window for failed tasks).
        now: the moment of the reading (ages are counted from it).

    Raises:
        ProxmoxError: a read failed (credentials, TLS, permissions, node...); an unreadable
            storage is recorded in ``unreadable`` instead.
    """
    jobs = tuple(sorted((BackupJob.of(j) for j in client.get("cluster/backup") or []), key=lambda j: j.id))
    guests = tuple(
        Guest(
            vmid=int(r["vmid"]),
            name=str(r.get("name") or ""),
            node=str(r.get("node") or ""),
            status=str(r.get("status") or "unknown"),
            template=_flag(r.get("template")),
            tags=tuple(split_tags(str(r.get("tags") or ""))),
        )
        for r in sorted(client.get("cluster/resources", type="vm") or [], key=lambda r: int(r["vmid"]))
    )
    pools: dict[str, frozenset[int]] = {}
    for pool in sorted({j.pool for j in jobs if j.pool}):
        members = (client.get(f"pools/{pool}") or {}).get("members") or []
        pools[pool] = frozenset(int(m["vmid"]) for m in members if str(m.get("vmid", "")).isdigit())
    nodes = sorted(client.get("nodes") or [], key=lambda n: str(n["node"]))
    online = [str(n["node"]) for n in nodes if n.get("status") == "online"]
    offline = tuple(str(n["node"]) for n in nodes if n.get("status") != "online")
    backups: dict[str, VzdumpBackup] = {}
    unreadable: list[str] = []
    stores: set[str] = set()
    shared_read: set[str] = set()
    for node in online:
        at = At(node=node)
        for st in client.get(f"nodes/{node}/storage", at, content="backup", enabled=1) or []:
            sid = str(st["storage"])
            if not _flag(st.get("active"), default=True) or (_flag(st.get("shared")) and sid in shared_read):
                continue
            stores.add(sid)
            if _flag(st.get("shared")):
                shared_read.add(sid)
            try:
                content = client.get(f"nodes/{node}/storage/{sid}/content", at, content="backup") or []
            except HomelabError as e:
                unreadable.append(f"{sid} on {node}: {getattr(e, 'pve_message', '') or e.message}")
                continue
            for item in content:
                backup = VzdumpBackup.of(item, sid, node)
                if backup is not None and backup.volid not in backups:
                    backups[backup.volid] = backup
    since = now - timedelta(hours=desired.window_hours)
    failed = [t for node in online for t in _failed_tasks(client, node, since)]
    return Observed(
        at=now,
        jobs=jobs,
        guests=guests,
        pools=MappingProxyType(pools),
        backups=tuple(sorted(backups.values(), key=lambda b: (b.time, b.volid), reverse=True)),
        failed=tuple(sorted(failed, key=lambda t: (t.start or now, t.upid), reverse=True)),
        offline=offline,
        unreadable=tuple(unreadable),
        backup_storages=tuple(sorted(stores)),
    )


def _failed_tasks(client: ProxmoxClient, node: str, since: datetime) -> list[FailedTask]:
    """The node's vzdump tasks that ended in error since a moment, each with its log's last lines."""
    at = At(node=node)
    out = []
    listing = client.get(
        f"nodes/{node}/tasks", at, typefilter="vzdump", errors=1, since=int(since.timestamp()), limit=500
    )
    for t in listing or []:
        status = str(t.get("status") or "")
        started = _utc(t.get("starttime"))
        if t.get("type") != "vzdump" or status in ("", "OK", "running") or status.startswith("WARNINGS"):
            continue
        if started is not None and started < since:
            continue
        upid = str(t["upid"])
        lines = [str(line.get("t", "")) for line in client.get(f"nodes/{node}/tasks/{upid}/log", at, limit=10000) or []]
        reasons: dict[int, str] = {}
        for line in lines:
            found = ERROR_LINE.match(line)
            if found:
                reasons[int(found.group(1))] = found.group(2)
        vmids = set(reasons)
        if str(t.get("id") or "").isdigit():
            vmids.add(int(t["id"]))
        out.append(
            FailedTask(
                upid=upid,
                node=node,
                start=started,
                status=status,
                vmids=tuple(sorted(vmids)),
                reasons=MappingProxyType(reasons),
                log_tail=tuple(lines[-LOG_TAIL:]),
            )
        )
    return out


# ---------------------------------------------------------------- the report's rows


def targets(desired: Desired, observed: Observed) -> tuple[Target, ...]:
    """The inventory's VMs, then any other VM of the cluster that carries the managed tag (by vmid)."""
    known = {t.vmid for t in desired.targets}
    extra = tuple(
        Target(g.name, g.vmid, float(desired.rpo_overrides.get(g.name, desired.default_rpo_hours)))
        for g in observed.guests
        if desired.managed_tag in g.tags and not g.template and g.vmid not in known
    )
    return (*desired.targets, *extra)


def _within(backup: VzdumpBackup | None, rpo_hours: float, at: datetime) -> bool:
    return backup is not None and at - backup.time <= timedelta(hours=rpo_hours)


def _coverage_problem(target: Target, observed: Observed) -> str | None:
    guest = observed.guest(target.vmid)
    jobs = observed.covering(target.vmid, guest.node if guest else "")
    if any(j.enabled for j in jobs):
        return None
    if jobs:
        return f"only disabled backup job(s) cover it: {', '.join(j.id for j in jobs)}"
    return "no backup job covers it"


def rows(desired: Desired, observed: Observed) -> tuple[BackupRow, ...]:
    """One row per target, in target order: its latest backup, age, RPO and what is wrong (a pure function).

    The rows are the report's (:class:`~homelab_lib.backup.rows.BackupRow`), with this layer's storage,
    ``protected`` and verification; they have no restore test.
    """
    out = []
    for target in targets(desired, observed):
        latest = observed.latest(target.vmid)
        problems = []
        guest = observed.guest(target.vmid)
        if guest is None:
            problems.append(f"VM {target.vmid} is not in the cluster")
        coverage = _coverage_problem(target, observed)
        if coverage:
            problems.append(coverage)
        age = round((observed.at - latest.time).total_seconds() / 3600, 2) if latest else None
        if latest is None:
            problems.append("no backup")
        elif not _within(latest, target.rpo_hours, observed.at):
            problems.append(f"latest backup is {age:.1f} h old, over its RPO of {target.rpo_hours:g} h")
        out.append(
            BackupRow(
                layer=LAYER,
                target=target.name,
                last_backup=latest.time if latest else None,
                age_hours=age,
                rpo_hours=target.rpo_hours,
                size_bytes=latest.size if latest else None,
                storage=latest.storage if latest else None,
                protected=latest.protected if latest else None,
                verification=latest.verification if latest else None,
                violation="; ".join(problems) or None,
            )
        )
    return tuple(out)


def check_rpo(report_rows: Iterable[BackupRow]) -> None:
    """Raise when any row has a violation (so that papermill fails and a scheduled run alerts).

    Raises:
        RpoViolated: naming each target and what is wrong with it.
    """
    bad = [f"{r.layer} {r.target}: {r.violation}" for r in report_rows if r.violation]
    if bad:
        raise RpoViolated(
            f"{len(bad)} target(s) violate their RPO",
            where=", ".join(sorted({v.split(":")[0] for v in bad})),
            hint="run the backups runbook with confirm=True to cover and back them up, then check again",
            problems=bad,
        )


@dataclass(frozen=True)
class VzdumpReport:
    """What verify reports: a row per target, the jobs, the failed vzdump tasks, the moment of reading."""

    rows: tuple[BackupRow, ...]
    jobs: tuple[BackupJob, ...]
    failed_tasks: tuple[FailedTask, ...]
    at: datetime

    @property
    def violations(self) -> tuple[BackupRow, ...]:
        return tuple(r for r in self.rows if r.violation)

    def table(self) -> pd.DataFrame:
        """One row per target (:data:`COLUMNS`), violations first, then by target."""
        import pandas as pd

        ordered = sorted(self.rows, key=lambda r: (r.violation is None, r.target))
        return pd.DataFrame([r.row(COLUMNS) for r in ordered], columns=list(COLUMNS))

    def jobs_table(self) -> pd.DataFrame:
        """One row per backup job: id, enabled, schedule, storage, mode, selection, retention, next run."""
        import pandas as pd

        return pd.DataFrame(
            [
                {"id": j.id, "enabled": j.enabled, "schedule": j.schedule, "storage": j.storage, "mode": j.mode,
                 "selects": j.selection, "prune-backups": j.prune_backups, "next_run": j.next_run}
                for j in self.jobs
            ],
            columns=["id", "enabled", "schedule", "storage", "mode", "selects", "prune-backups", "next_run"],
        )  # fmt: skip

    def tasks_table(self) -> pd.DataFrame:
        """One row per failed vzdump task in the window: node, start, status, vmids, why, upid."""
        import pandas as pd

        return pd.DataFrame(
            [t.row() for t in self.failed_tasks], columns=["node", "start", "status", "vmids", "why", "upid"]
        )


# ---------------------------------------------------------------- plan


def wanted_job(desired: Desired, observed: Observed) -> dict[str, str | None]:
    """The inventory's job as it must be: its options, and a selection that covers every target.

    A job that selects ``all`` keeps doing so (minus no target); otherwise its ``vmid`` list is
    what it had plus every target. None for an option means it must go (``delete``).
    """
    spec = desired.job
    existing = observed.job(spec.id)
    want: dict[str, str | None] = dict(spec.options())
    vmids = {t.vmid for t in targets(desired, observed)}
    if existing is not None and existing.all and not existing.vmids and not existing.pool:
        want["all"] = "1"
        left = sorted(set(existing.exclude) - vmids)
        want["exclude"] = ",".join(str(i) for i in left) or None
    else:
        have = set(existing.vmids) if existing is not None and not existing.pool else set()
        want["vmid"] = ",".join(str(i) for i in sorted(have | vmids))
        if existing is not None and existing.pool:
            want["pool"] = None
    if existing is not None and existing.node:
        want["node"] = None
    if existing is None:
        want = {k: v for k, v in want.items() if v is not None}
    return want


def _job_change(desired: Desired, observed: Observed) -> Change:
    spec = desired.job
    existing = observed.job(spec.id)
    want = wanted_job(desired, observed)
    if existing is None:
        fields = tuple(FieldChange(k, None, v) for k, v in sorted(want.items()))
        return Change(JOB, spec.id, Action.CREATE, "cluster", fields, "cover every managed VM", order=0)
    changed = []
    for key, value in sorted(want.items()):
        old = existing.options.get(key)
        if key == "vmid" and value is not None and old is not None and _ids(old) == _ids(value):
            continue
        if (old or None) != value:
            changed.append(FieldChange(key, old, value))
    if changed:
        return Change(JOB, spec.id, Action.UPDATE, "cluster", tuple(changed), "cover every managed VM", order=0)
    return Change(JOB, spec.id, Action.NOOP, "cluster", reason=f"covers {len(targets(desired, observed))} VM(s)")


def _stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def _vzdump_change(desired: Desired, observed: Observed, target: Target) -> Change:
    guest = observed.guest(target.vmid)
    latest = observed.latest(target.vmid)
    if guest is None:
        return Change(
            VZDUMP,
            target.name,
            Action.CONFLICT,
            "",
            reason=f"VM {target.vmid} is not in the cluster: provision it first (runbook 01)",
            order=1,
        )
    if guest.node in observed.offline:
        return Change(VZDUMP, target.name, Action.CONFLICT, guest.node, reason=f"node {guest.node} is offline", order=1)
    if _within(latest, target.rpo_hours, observed.at):
        assert latest is not None
        return Change(
            VZDUMP,
            target.name,
            Action.NOOP,
            guest.node,
            reason=f"latest backup {_stamp(latest.time)} on {latest.storage}, within its RPO of {target.rpo_hours:g} h",
            order=1,
        )
    why = (
        f"latest backup {_stamp(latest.time)} is older than its RPO of {target.rpo_hours:g} h"
        if latest
        else "no backup on any storage"
    )
    fields = (
        FieldChange("vmid", None, target.vmid),
        FieldChange("storage", None, desired.job.storage),
        FieldChange("mode", None, desired.job.mode),
    )
    return Change(VZDUMP, target.name, Action.CREATE, guest.node, fields, f"back up now: {why}", order=1)


def plan(desired: Desired, observed: Observed) -> Plan:
    """The backup job to create or fix, and a backup now for each target out of its RPO (a pure function)."""
    changes = [_job_change(desired, observed)]
    changes += [_vzdump_change(desired, observed, t) for t in targets(desired, observed)]
    return Plan.of(changes, adapter=VZDUMP)


# ---------------------------------------------------------------- apply


def _apply_job(client: ProxmoxClient, change: Change) -> str:
    values = {f.name: f.new for f in change.fields}
    if change.action == Action.CREATE:
        client.post("cluster/backup", id=change.target, **{k: v for k, v in values.items() if v is not None})
        return f"backup job {change.target} created ({values.get('vmid') or 'all'})"
    sets = {k: v for k, v in values.items() if v is not None}
    deletes = sorted(k for k, v in values.items() if v is None)
    if deletes:
        sets["delete"] = ",".join(deletes)
    client.put(f"cluster/backup/{change.target}", **sets)
    return f"backup job {change.target} updated: " + "; ".join(str(f) for f in change.fields)


def vzdump(
    client: ProxmoxClient,
    desired: Desired,
    *,
    vm: str,
    vmid: int,
    node: str,
    clock: Clock,
) -> str:
    """Back up one VM now (a vzdump task on its node, to the job's storage), and wait for it.

    Returns:
        The task's UPID.

    Raises:
        VzdumpFailed: the task ended in error; carries its log's last lines.
        TaskTimeout: it did not end within ``proxmox.task_timeout_s``.
        ProxmoxError: the request was refused.
    """
    spec = desired.job
    at = At(node=node, vmid=vmid, vm=vm)
    upid = str(
        client.post(
            f"nodes/{node}/vzdump",
            at,
            vmid=str(vmid),
            storage=spec.storage,
            mode=spec.mode,
            compress="zstd",
            **{"notes-template": spec.notes_template, "prune-backups": spec.prune_backups},
        )
    )
    try:
        wait_task(client, upid, at=at, what=f"vzdump of VM {vmid}", timeout_s=desired.task_timeout_s, clock=clock)
    except TaskFailed as e:
        errors = [line for line in e.log_tail if ERROR_LINE.match(line)]
        raise VzdumpFailed(
            f"the backup of VM {vmid} to {spec.storage} failed: {e.pve_message or 'unknown error'}",
            upid=e.upid,
            log_tail=e.log_tail,
            node=node,
            vmid=vmid,
            vm=vm,
            pve_message=(ERROR_LINE.sub(r"\2", errors[-1]) if errors else e.pve_message),
            hint="read the task log above (also in the node's Tasks panel): storage full or offline, VM locked; "
            "fix it, then run again",
        ) from e
    return upid


def carry_out(
    client: ProxmoxClient,
    desired: Desired,
    observed: Observed,
    todo: Sequence[Change],
    *,
    progress: Progress,
    clock: Clock,
) -> Carried:
    """Create or fix the job, then take each missing backup, one vzdump task at a time.

    A failed backup does not stop the others.

    Raises:
        BackupFailed: one or more changes failed; carries each error and what was done.
    """
    outcomes: list[Outcome] = []
    steps: list[str] = []
    failures: list[HomelabError] = []
    facts: dict[str, str] = {}
    bar = progress.task("backups (vzdump)", len(todo))
    for change in sorted(todo, key=lambda c: c.order):
        start = clock.monotonic()
        try:
            if change.kind == JOB:
                steps.append(_apply_job(client, change))
            else:
                guest = observed.guest(int(next(f.new for f in change.fields if f.name == "vmid")))
                assert guest is not None  # the plan makes a vzdump change only for a VM in the cluster
                upid = vzdump(client, desired, vm=change.target, vmid=guest.vmid, node=guest.node, clock=clock)
                facts[change.target] = upid
                steps.append(f"{change.target}: backed up to {desired.job.storage} ({upid})")
        except HomelabError as e:
            failures.append(e)
            outcomes.append(Outcome.of(change, FAILED, str(e).splitlines()[0], clock.monotonic() - start))
            bar.advance(f"{change.target}: FAILED")
            continue
        outcomes.append(Outcome.of(change, DONE, seconds=clock.monotonic() - start))
        bar.advance(change.target)
    bar.done()
    if failures:
        raise BackupFailed(failures, steps, where="proxmox backups")
    return Carried(tuple(outcomes), tuple(steps), MappingProxyType(facts))


# ---------------------------------------------------------------- the adapter


class ProxmoxBackupAdapter(BaseAdapter[Desired, Observed, VzdumpReport]):
    """Runbook 06's Proxmox layer against one cluster.

    Args:
        inv: the inventory.
        client: the API client (:func:`homelab_lib.clients.proxmox_client`).
        window_hours: how far back failed vzdump tasks are reported.
        clock: ages are counted from its now; tasks are waited by it.
    """

    name = VZDUMP
    world = "the cluster's backups"
    conflicts_block = False  # a VM not yet provisioned must not keep the others unprotected

    def __init__(
        self, inv: Inventory, client: ProxmoxClient, *, window_hours: float = WINDOW_HOURS, clock: Clock = SYSTEM
    ) -> None:
        self.inv = inv
        self.client = client
        self.window_hours = window_hours
        self.clock = clock

    def __repr__(self) -> str:
        return f"ProxmoxBackupAdapter({self.inv.name}, {self.client!r})"

    def desired(self) -> Desired:
        """The inventory's backup job and its VMs with their RPOs."""
        return desired_state(self.inv, window_hours=self.window_hours)

    def observe(self, desired: Desired) -> Observed:
        """Jobs, guests, backups, failed vzdump tasks; reads only."""
        return observe(self.client, desired, now=self.clock.now())

    def plan(self, desired: Desired, observed: Observed) -> Plan:
        """The job to create or fix, a backup now per VM out of its RPO; a pure function."""
        return plan(desired, observed)

    def carry_out(
        self,
        desired: Desired,
        observed: Observed,
        plan: Plan,
        todo: Sequence[Change],
        *,
        allow_delete: bool,
        progress: Progress,
        clock: Clock,
    ) -> Carried:
        return carry_out(self.client, desired, observed, todo, progress=progress, clock=clock)

    def check(self, desired: Desired, result: ApplyResult) -> VerifyResult[VzdumpReport]:
        """The job covers every target; each target has a backup within its RPO (a row per target)."""
        observed = self.observe(desired)
        report = VzdumpReport(rows(desired, observed), observed.jobs, observed.failed, observed.at)
        checks: list[Check] = []
        job = _job_change(desired, observed)
        ok = job.action == Action.NOOP
        detail = job.reason if ok else f"{job.action.value}: " + "; ".join(str(f) for f in job.fields)
        checks.append(Check(JOB, desired.job.id, "cluster", ok, detail))
        for target, row in zip(targets(desired, observed), report.rows, strict=True):
            guest = observed.guest(target.vmid)
            if row.violation:
                detail = row.violation
            else:
                assert row.last_backup is not None
                detail = f"latest backup {_stamp(row.last_backup)} ({row.age_hours:.1f} h, RPO {row.rpo_hours:g} h)"
            checks.append(Check(VZDUMP, target.name, guest.node if guest else "", row.violation is None, detail))
        failed = len(observed.failed)
        note = f"{failed} failed vzdump task(s) in the last {desired.window_hours:g} h" if failed else ""
        return VerifyResult(self.name, result.confirmed, tuple(checks), report, note)


if TYPE_CHECKING:  # mypy proves the class offers the contract's steps, names and arguments
    _contract: type[Adapter[Desired, Observed, VzdumpReport]] = ProxmoxBackupAdapter


def adapter(inv: Inventory, *, window_hours: float = WINDOW_HOURS, clock: Clock = SYSTEM) -> ProxmoxBackupAdapter:
    """Runbook 06's Proxmox-layer adapter for an inventory: its API client built from it (nothing sent yet)."""
    from homelab_lib import clients

    return ProxmoxBackupAdapter(inv, clients.proxmox_client(inv), window_hours=window_hours, clock=clock)


__all__ = [
    "COLUMNS",
    "LAYER",
    "BackupJob",
    "BackupRow",
    "Desired",
    "FailedTask",
    "Guest",
    "JobSpec",
    "Observed",
    "ProxmoxBackupAdapter",
    "Target",
    "VzdumpBackup",
    "VzdumpReport",
    "adapter",
    "carry_out",
    "check_rpo",
    "desired_state",
    "observe",
    "plan",
    "rows",
    "targets",
    "vzdump",
    "wanted_job",
]
