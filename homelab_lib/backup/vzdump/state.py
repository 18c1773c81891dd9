"""What runbook 06 wants of Proxmox's backups and what the cluster has, as small frozen dataclasses.

:class:`Desired` (the backup job, :class:`JobSpec`, and the VMs to check, :class:`VzdumpTarget`) is
built from the inventory by :func:`homelab_lib.backup.vzdump.desired.desired_state`; :class:`Observed`
(jobs, guests, backups, failed vzdump tasks) is what :func:`homelab_lib.backup.vzdump.observe.observe`
read from the API. :func:`targets` joins the two: the VMs whose backups are checked. The small parsers
here read PVE's spellings (id lists, flags, epoch times) the same way wherever they appear.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

LAYER = "proxmox"
JOB = "backup-job"
VZDUMP = "vzdump"
WINDOW_HOURS = 72.0
"""How far back failed vzdump tasks are looked for, by default."""
ERROR_LINE = re.compile(r"^ERROR: Backup of VM (\d+) failed - (.*)$")
VOLID_VMID = re.compile(r"vzdump-(?:qemu|lxc|openvz)-(\d+)-|backup/(?:vm|ct)/(\d+)/")


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
class VzdumpTarget:
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
    targets: tuple[VzdumpTarget, ...]
    managed_tag: str
    default_rpo_hours: float
    rpo_overrides: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    window_hours: float = WINDOW_HOURS
    task_timeout_s: float = 900.0


def vmids_of(text: object) -> tuple[int, ...]:
    """The vmids of a PVE id list (``"110,120 130"``), sorted, each once."""
    return tuple(sorted({int(p) for p in re.split(r"[\s,;]+", str(text or "")) if p.strip().isdigit()}))


def flag(value: object, default: bool = False) -> bool:
    """A PVE boolean (``1``, ``true``, ``yes``, ``on``); default when absent or empty."""
    if value is None or value == "":
        return default
    return str(value).lower() in ("1", "true", "yes", "on")


def utc(epoch: object) -> datetime | None:
    """A PVE epoch time as a UTC datetime; None when it is not one."""
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
            enabled=flag(item.get("enabled"), default=True),
            schedule=str(item.get("schedule") or item.get("starttime") or ""),
            storage=str(item.get("storage") or ""),
            mode=str(item.get("mode") or "snapshot"),
            all=flag(item.get("all")),
            vmids=vmids_of(item.get("vmid")),
            exclude=vmids_of(item.get("exclude")),
            pool=str(item.get("pool") or ""),
            node=str(item.get("node") or ""),
            prune_backups=str(prune or ""),
            notes_template=str(item.get("notes-template") or ""),
            next_run=utc(item.get("next-run")),
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
        taken = utc(item.get("ctime"))
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
            protected=flag(item.get("protected")),
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


def targets(desired: Desired, observed: Observed) -> tuple[VzdumpTarget, ...]:
    """The inventory's VMs, then any other VM of the cluster that carries the managed tag (by vmid)."""
    known = {t.vmid for t in desired.targets}
    extra = tuple(
        VzdumpTarget(g.name, g.vmid, float(desired.rpo_overrides.get(g.name, desired.default_rpo_hours)))
        for g in observed.guests
        if desired.managed_tag in g.tags and not g.template and g.vmid not in known
    )
    return (*desired.targets, *extra)


def within(backup: VzdumpBackup | None, rpo_hours: float, at: datetime) -> bool:
    """True if there is a backup and, at that moment, it is no older than the RPO."""
    return backup is not None and at - backup.time <= timedelta(hours=rpo_hours)


def stamp(when: datetime) -> str:
    """A backup's time as plans and checks print it (``2026-11-25 02:00:00 UTC``)."""
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")
