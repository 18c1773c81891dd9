# SPDX-License-Identifier: AGPL-3.0-or-later
# This one file extends fakepve (AGPL-3.0-or-later) through its Python API, so it is under fakepve's
# licence; it runs only as its own process and nothing else in homelab_lib imports it (tests/test_packaging.py).
"""The lab's Proxmox VE server: fakepve, built through its Python API, with what fakepve 0.5 lacks.

Run as its own process by :mod:`homelab_lab.pve`::

    python -m homelab_lab.pve_server guests.json --host 127.0.0.2 --port 8006 \\
        --cert cert.pem --key key.pem --time-scale 0 --run-schedules --token root@pam!homelab --token-file token

(``PVE_USER`` and ``PVE_PASS`` in the environment give the password login, as for fakepve's own
command line.) The tests build the same server in their own process with :func:`build`.

What the lab adds to fakepve, so that the library needs nothing a real PVE does not:

- **Disk resize** (:class:`DiskResize`): ``PUT /nodes/{node}/qemu/{vmid}/resize`` is a ``resize``
  task that grows the volume and writes the new size into the drive's line of the VM config, as
  qemu-server does (fakepve 0.5 answers the call and changes nothing).
- **A guest agent in every VM that enables one** (:class:`GuestAgent`): fakepve answers agent
  calls only for VMs given agent answers by hand, so its clones have none. Here a running VM
  whose config has ``agent`` enabled answers ``agent_boot_secs`` PVE seconds after its start
  (its boot, on the fake's time scale), ``network-get-interfaces`` reporting ``lo`` and ``eth0``
  with the MAC of ``net0`` and the addresses of ``ipconfig0`` (a guest configured by cloud-init;
  ``ip=dhcp`` gets no IPv4 address: the lab has no DHCP server). fakepve's own switches still
  work: ``vm.agent`` set by hand wins, ``vm.agent_hangs`` makes it time out.
- **API tokens** (:func:`build`'s ``tokens``): fakepve checks tokens but its command line cannot
  make one; the launcher registers ``--token`` with the secret in ``--token-file`` (made, mode
  600, with a fresh secret when missing). Like a token without privilege separation, it has its
  user's rights.
- **Only the lab's nodes**: fakepve's own node ``pve1`` is dropped unless a guest lives there.
- **Backups** (:class:`Backups`): fakepve 0.5 answers ``cluster/backup`` and ``nodes/{node}/vzdump``
  from the schema and stores nothing. Here backup jobs are kept (``jobs.cfg``: list, read, create,
  update with ``delete``, remove, with PVE's refusals), ``POST /nodes/{node}/vzdump`` is a
  ``vzdump`` task that backs up the node's guests of the request (skipping guests of other
  nodes, as PVE does), writes a ``backup/vzdump-qemu-<vmid>-<YYYY_MM_DD-HH_MM_SS>.vma.zst``
  volume (``ctime``, ``size``, ``notes`` from ``notes-template``, ``protected``) into the
  storage's content, prunes by ``prune-backups`` (PVE's keep-last/hourly/daily/weekly/monthly/
  yearly marking; protected backups stay), and logs as vzdump does. A guest that fails ends the
  task with ``job errors`` after an ``ERROR: Backup of VM <vmid> failed - <why>`` line; the fault
  switch is :attr:`Backups.vzdump_errors` (vmid -> message), besides fakepve's own ``fail()``.
  ``nodes/{node}/tasks`` honours ``typefilter``, ``errors``, ``since``, ``until``,
  ``statusfilter`` and ``source`` (fakepve 0.5 only ``vmid``), and a backup volume may carry a
  PBS ``verification`` ({state, upid}) that the content list shows. With ``--run-schedules`` (the lab
  launcher's) each enabled job runs at its schedule, as pvescheduler runs it
  (:meth:`Backups.run_backup_job`: a vzdump task per node with guests it selects).

The lab file (``guests.json``) has sections, each loaded by an entry of :data:`SECTIONS`:
``nodes`` (node names), ``guests`` (as fakepve's guests file), ``backup_jobs`` (jobs as ``POST
/cluster/backup`` takes them) and ``backups`` (vzdump volumes: ``storage``, ``node``, ``vmid``,
``age_hours`` before the server's start, ``size``, ``notes``, ``protected``, ``verification``). A
new area of behaviour is a mixin here (fakepve registers every ``_routes_<area>`` method's routes
in front of its generic answers; see ``fakepve/routing.py``) plus, when the lab must seed it, a
section loader.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import ipaddress
import json
import os
import re
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fakepve import FakePve, PveError, TaskError

from homelab_lab import common
from homelab_lab.pve import token_secret
from homelab_lib.core.errors import HomelabError
from homelab_lib.inventory.model import CALENDAR_EVENT

AGENT_BOOT_SECS = 15.0
"""PVE seconds from a VM's start until its guest agent answers (the guest's boot)."""

SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
SIZE = re.compile(r"^(\+)?(\d+(?:\.\d+)?)([KMGT])?$")
RESIZE_PATH = "/nodes/{node}/qemu/{vmid}/resize"


# ---------------------------------------------------------------- property strings


def split_drive(value: str) -> tuple[str, list[tuple[str, str]]]:
    """(volume, [(option, value), ...]) of a drive line such as ``local-lvm:vm-110-disk-0,size=2G``."""
    volume, options = "", []
    for n, part in enumerate(str(value).split(",")):
        key, eq, val = part.partition("=")
        if not eq and n == 0:
            volume = part
        elif key == "file" and not volume:
            volume = val
        elif eq:
            options.append((key, val))
    return volume, options


def join_drive(volume: str, options: list[tuple[str, str]]) -> str:
    return ",".join([volume, *(f"{k}={v}" for k, v in options)])


def parse_bytes(text: str) -> int | None:
    """Bytes of a size such as ``32G`` or ``512M`` (no unit: bytes), or None."""
    found = SIZE.match(text.strip())
    if not found or found.group(1):
        return None
    return int(float(found.group(2)) * SIZE_UNITS[found.group(3) or ""])


def format_size(size: int) -> str:
    """PVE's spelling of a size in bytes: the largest unit that divides it (``32G``, ``2560M``)."""
    for unit in "TGMK":
        if size and size % SIZE_UNITS[unit] == 0:
            return f"{size // SIZE_UNITS[unit]}{unit}"
    return str(size)


def agent_enabled(value: object) -> bool:
    """Whether an ``agent`` config value (``1``, ``enabled=1,fstrim_cloned_disks=1``) enables the agent."""
    first = str(value or "").split(",")[0]
    key, eq, val = first.partition("=")
    return (val if eq and key == "enabled" else first) in ("1", "true", "yes", "on")


def _options(value: str) -> dict[str, str]:
    out = {}
    for part in str(value).split(","):
        key, eq, val = part.partition("=")
        if eq:
            out[key] = val
    return out


def _mac(net: str) -> str:
    """The MAC of a ``net0`` value (``virtio=BC:24:11:..,bridge=vmbr0``), lower case as the guest shows it."""
    for part in str(net).split(","):
        key, eq, val = part.partition("=")
        if eq and (key == "macaddr" or re.fullmatch(r"(?:[0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}", val)):
            return val.lower()
    return "00:00:00:00:00:00"


def _link_local(mac: str) -> str:
    """The guest's IPv6 link-local address (EUI-64 from the MAC), as every Linux guest has one."""
    raw = bytearray(int(b, 16) for b in mac.split(":"))
    raw[0] ^= 0x02
    eui = bytes(raw[:3]) + b"\xff\xfe" + bytes(raw[3:])
    return str(ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + eui))


def interfaces(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """What ``guest-network-get-interfaces`` reports in a guest that cloud-init configured from ``ipconfig0``."""
    mac = _mac(str(config.get("net0", "")))
    addresses: list[dict[str, Any]] = []
    ipconfig = _options(str(config.get("ipconfig0", "")))
    for key, kind in (("ip", "ipv4"), ("ip6", "ipv6")):
        value = ipconfig.get(key, "")
        if value in ("", "dhcp", "auto", "manual"):
            continue
        try:
            iface = ipaddress.ip_interface(value)
        except ValueError:
            continue
        addresses.append({"ip-address": str(iface.ip), "ip-address-type": kind, "prefix": iface.network.prefixlen})
    addresses.append({"ip-address": _link_local(mac), "ip-address-type": "ipv6", "prefix": 64})
    return [
        {
            "name": "lo",
            "hardware-address": "00:00:00:00:00:00",
            "ip-addresses": [
                {"ip-address": "127.0.0.1", "ip-address-type": "ipv4", "prefix": 8},
                {"ip-address": "::1", "ip-address-type": "ipv6", "prefix": 128},
            ],
        },
        {"name": "eth0", "hardware-address": mac, "ip-addresses": addresses},
    ]


# ---------------------------------------------------------------- behaviour fakepve 0.5 lacks


class DiskResize(FakePve):  # type: ignore[misc]  # fakepve has no type hints
    """``PUT /nodes/{node}/qemu/{vmid}/resize`` as qemu-server does it (``PVE/API2/Qemu.pm``, resize_vm).

    The checks answer at once (as fakepve's error catalogue lists them); the growth itself is a
    ``resize`` task holding the VM's config lock, which sets the volume's size on its storage and
    writes ``size=`` into the drive's config line (for a running VM too: PVE resizes online).
    """

    def _routes_resize(self) -> list[tuple[str, str, Callable[..., Any]]]:
        return [("PUT", RESIZE_PATH, self._lab_resize)]

    def _lab_volume(self, volume: str) -> dict[str, Any] | None:
        sid, _, name = volume.partition(":")
        store = self.storages.get(sid) if name else None
        found = (store or {}).get("volumes", {}).get(name)
        return found if isinstance(found, dict) else None

    async def _lab_resize(self, v: dict[str, Any], user: str) -> str:
        vm = self.find(v["node"], v["vmid"])
        disk, wanted = str(v["disk"]), str(v["size"])
        if v.get("skiplock") and user != "root@pam":
            raise PveError(400, "Parameter verification failed.", {"skiplock": "Only root may use this option."})
        self.need_quorum()
        if v.get("digest") and v["digest"] != vm.digest():
            raise PveError(500, "checksum mismatch (file change by other user?)")
        if vm.lock and not v.get("skiplock"):
            raise PveError(500, f"VM is locked ({vm.lock})")
        line = vm.config.get(disk)
        if not line:
            raise PveError(500, f"disk '{disk}' does not exist")
        volume, options = split_drive(str(line))
        if not volume or volume == "none":
            raise PveError(500, f"disk '{disk}' has no associated volume")
        if volume == "cdrom" or ("media", "cdrom") in options:
            raise PveError(500, "you can't resize a cdrom")
        sid = volume.partition(":")[0]
        self.require(user, f"/storage/{sid}", "Datastore.AllocateSpace")
        held = self._lab_volume(volume)
        size = int(held["size"]) if held and held.get("size") else parse_bytes(dict(options).get("size", ""))
        if not size:
            raise PveError(500, f"Could not determine current size of volume '{volume}'")
        found = SIZE.match(wanted)
        if found is None:
            raise PveError(500, "internal error")
        new = int(float(found.group(2)) * SIZE_UNITS[found.group(3) or ""]) + (size if found.group(1) else 0)
        if new < size:
            raise PveError(500, "shrinking disks is not supported")

        async def body() -> None:
            await self.ceph_io(vm, [disk])
            if new == size:
                return
            store = self.storages.get(sid, {})
            if "avail" in store and held is not None:
                if new - size > store["avail"]:
                    raise TaskError(f"unable to write to storage '{sid}': No space left on device")
                store["avail"] -= new - size
            if held is not None:
                held["size"] = new
            _, current = split_drive(str(vm.config.get(disk, line)))  # as it is now, after any wait for the lock
            now = [(k, format_size(new) if k == "size" else val) for k, val in current]
            if "size" not in dict(current):
                now.append(("size", format_size(new)))
            vm.config[disk] = join_drive(volume, now)

        upid: str = await self.task(vm.node, "resize", vm.vmid, user, body, vm=vm)
        return upid


class GuestAgent(FakePve):  # type: ignore[misc]  # fakepve has no type hints
    """A QEMU guest agent in every running VM whose config enables one, after its boot.

    PVE's own order of refusals (``PVE::QemuServer::Agent``): the VM is not running, no agent is
    configured, the agent does not answer (yet).
    """

    agent_boot_secs: float = AGENT_BOOT_SECS

    def _lab_booted(self, vm: Any) -> bool:
        started = float(vm.started_at or 0.0)
        return time.time() - started >= self.agent_boot_secs * float(self.time_scale)

    async def _agent_call(self, match: Any, values: dict[str, Any]) -> Any:
        vm = self.find(values["node"], values["vmid"])
        if vm.agent is None or vm.agent is getattr(vm, "lab_agent", None):
            # The lab's agent, not answers a test gave by hand: it reports what the guest has now.
            if vm.status != "running":
                raise PveError(500, f"VM {vm.vmid} is not running")
            if not agent_enabled(vm.config.get("agent")):
                raise PveError(500, "No QEMU guest agent configured")
            if not self._lab_booted(vm):
                raise PveError(500, "QEMU guest agent is not running")
            vm.agent = vm.lab_agent = {"interfaces": interfaces(vm.config)}
        return await super()._agent_call(match, values)


# ---------------------------------------------------------------- backups


JOB_KEYS_BOOL = ("all", "enabled", "protected", "remove", "quiet", "stdexcludes", "stop", "pigz", "repeat-missed")
BACKUP_NAME = "backup/vzdump-qemu-{vmid}-{stamp}.{ext}"
BACKUP_STAMP = "%Y_%m_%d-%H_%M_%S"
PRUNE_KEYS = ("keep-last", "keep-hourly", "keep-daily", "keep-weekly", "keep-monthly", "keep-yearly")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SCHEDULE_TICK = 30.0
"""Real seconds between the lab's checks of the backup jobs' schedules."""
BACKUP_SECS = 5.0
"""PVE seconds a guest's backup takes (on the fake's time scale)."""
DRIVE = re.compile(r"^(ide|sata|scsi|virtio|efidisk|tpmstate)\d+$")


def split_ids(text: object) -> list[int]:
    """The vmids of a ``pve-vmid-list`` (``110,120`` or ``110 120;130``)."""
    return [int(part) for part in re.split(r"[\s,;]+", str(text or "")) if part.strip().isdigit()]


def parse_retention(text: object) -> dict[str, int]:
    """``keep-daily=7,keep-last=2`` -> {'keep-daily': 7, 'keep-last': 2}; ``keep-all=1`` -> {}."""
    out: dict[str, int] = {}
    for part in str(text or "").split(","):
        key, eq, val = part.strip().partition("=")
        if eq and key in PRUNE_KEYS and val.strip().isdigit() and int(val) > 0:
            out[key] = int(val)
    return out


def prune_marks(backups: list[tuple[str, int, bool]], keep: Mapping[str, int]) -> dict[str, str]:
    """PVE::Storage::prune_mark_backup_group: volname -> keep, remove or protected.

    backups: (volname, ctime, protected). Newest first, each ``keep-*`` option keeps the newest
    backup of that many periods (hours, days, ...) not yet kept by an earlier option; the rest go.
    """
    entries = sorted(backups, key=lambda b: -b[1])
    marks = {name: "protected" for name, _, protected in entries if protected}
    if not keep:
        return {name: marks.get(name, "keep") for name, _, _ in entries}
    periods: dict[str, str] = {
        "keep-hourly": "%Y/%m/%d/%H",
        "keep-daily": "%Y/%m/%d",
        "keep-weekly": "%G/%V",
        "keep-monthly": "%Y/%m",
        "keep-yearly": "%Y",
    }

    def period(option: str, name: str, ctime: int) -> str:
        return name if option == "keep-last" else _utc(ctime).strftime(periods[option])

    for option in PRUNE_KEYS:
        count = keep.get(option, 0)
        if not count:
            continue
        seen = {period(option, n, c) for n, c, _ in entries if marks.get(n) == "keep"}
        chosen: set[str] = set()
        for name, ctime, _ in entries:
            key = period(option, name, ctime)
            if name in marks or key in seen:
                continue
            if key in chosen:
                marks[name] = "remove"
                continue
            if len(chosen) >= count:
                break
            chosen.add(key)
            marks[name] = "keep"
    return {name: marks.get(name, "remove") for name, _, _ in entries}


def _utc(ctime: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ctime, datetime.UTC)


def next_run(schedule: str, now: float) -> int | None:
    """The next start of a simple calendar event (``HH:MM``, ``daily HH:MM``, ``mon,fri HH:MM``, ``mon..fri HH:MM``).

    None for forms this lab does not compute (PVE's full calendar-event syntax).
    """
    parts = {"daily": ["00:00"], "weekly": ["mon", "00:00"]}.get(schedule.strip(), schedule.split())
    days = list(range(7))
    if len(parts) == 2 and parts[0] != "daily":
        days = []
        for item in parts[0].split(","):
            first, dots, last = item.partition("..")
            if first not in DAYS or (dots and last not in DAYS):
                return None
            a, b = DAYS.index(first), DAYS.index(last or first)
            days += list(range(a, b + 1)) if a <= b else [*range(a, 7), *range(0, b + 1)]
    elif len(parts) != 1 and not (len(parts) == 2 and parts[0] == "daily"):
        return None
    found = re.fullmatch(r"(\d{1,2}):(\d{2})", parts[-1])
    if not found or int(found.group(1)) > 23 or int(found.group(2)) > 59:
        return None
    base = _utc(int(now)).replace(hour=int(found.group(1)), minute=int(found.group(2)), second=0)
    for ahead in range(8):
        at = base + datetime.timedelta(days=ahead)
        if at.weekday() in days and at.timestamp() > now:
            return int(at.timestamp())
    return None


def due(schedule: str, since: float, now: float) -> bool:
    """True if a job on this schedule starts in (since, now] (pvescheduler's check, for the forms next_run knows)."""
    at = next_run(schedule, since)
    return at is not None and at <= now


def _pve_time(ctime: float) -> str:
    return _utc(int(ctime)).strftime("%Y-%m-%d %H:%M:%S")


def _human(size: int) -> str:
    """vzdump's ``archive file size`` spelling (``1.60GB``)."""
    for unit, scale in (("TB", 1024**4), ("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if size >= scale:
            return f"{size / scale:.2f}{unit}"
    return f"{size}B"


class Backups(FakePve):  # type: ignore[misc]  # fakepve has no type hints
    """Backup jobs (``/cluster/backup``), vzdump runs (``POST /nodes/{node}/vzdump``) and their volumes.

    As pve-manager's ``PVE/API2/Backup.pm`` and ``PVE/API2/VZDump.pm`` and ``PVE/VZDump.pm`` do it,
    for QEMU guests on directory storages (see the module docstring). Fault switch:
    :attr:`vzdump_errors` (vmid -> the message the guest's backup fails with).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.backup_jobs: dict[str, dict[str, Any]] = {}
        self.vzdump_errors: dict[int, str] = {}
        self.backup_secs = BACKUP_SECS
        self.run_schedules = False
        self.schedule_tick = SCHEDULE_TICK
        self._lab_cron: asyncio.Future[None] | None = None

    # ------------------------------------------------------------ pvescheduler

    async def start(self, certfile: str, keyfile: str) -> None:
        await super().start(certfile, keyfile)
        if self.run_schedules:
            self._lab_cron = asyncio.ensure_future(self._lab_scheduler())

    async def stop(self) -> None:
        if self._lab_cron is not None:
            self._lab_cron.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lab_cron
            self._lab_cron = None
        await super().stop()

    async def _lab_scheduler(self) -> None:
        """pvescheduler: every enabled job starts at its schedule (checked every schedule_tick real seconds)."""
        last = time.time()
        while True:
            await asyncio.sleep(self.schedule_tick)
            now = time.time()
            for job_id, job in sorted(self.backup_jobs.items()):
                if int(job.get("enabled", 1)) and due(str(job.get("schedule") or ""), last, now):
                    with contextlib.suppress(PveError):  # pvescheduler logs a job it cannot start, and goes on
                        await self.run_backup_job(job_id)
            last = now

    async def run_backup_job(self, job_id: str, user: str = "root@pam") -> list[str]:
        """Run a backup job now, as pvescheduler does at its time: a vzdump task per node with guests it selects.

        Returns the tasks' UPIDs.
        """
        job = self.backup_jobs[job_id]
        skip = ("enabled", "schedule", "comment", "repeat-missed", "starttime", "dow", "type", "next-run")
        nodes = sorted({vm.node for vmid in self._lab_selected(job) if (vm := self.vm(vmid)) is not None})
        upids = []
        for node in nodes:
            values = {k: v for k, v in job.items() if k not in skip}
            upids.append(await self._lab_vzdump({**values, "node": node, "job-id": job_id}, user))
        return upids

    def _routes_backup(self) -> list[tuple[str, str, Callable[..., Any]]]:
        job = "/cluster/backup/{id}"
        return [
            ("GET", "/cluster/backup", self._lab_jobs),
            ("POST", "/cluster/backup", self._lab_job_create),
            ("GET", job, self._lab_job_read),
            ("PUT", job, self._lab_job_update),
            ("DELETE", job, self._lab_job_delete),
            ("GET", "/cluster/backup-info/not-backed-up", self._lab_not_backed_up),
            ("POST", "/nodes/{node}/vzdump", self._lab_vzdump),
        ]

    # ------------------------------------------------------------ jobs (jobs.cfg)

    @staticmethod
    def _lab_job_view(job_id: str, job: Mapping[str, Any]) -> dict[str, Any]:
        out = {"id": job_id, "type": "vzdump", **job}
        if int(job.get("enabled", 1)) and job.get("schedule"):
            at = next_run(str(job["schedule"]), time.time())
            if at is not None:
                out["next-run"] = at
        return out

    def _lab_job(self, job_id: str) -> dict[str, Any]:
        job = self.backup_jobs.get(job_id)
        if job is None:
            raise PveError(400, "Parameter verification failed.", {"id": f"No such job '{job_id}'"})
        return job

    @staticmethod
    def _lab_check_selection(job: Mapping[str, Any]) -> None:
        """PVE::VZDump::verify_vzdump_parameters: all, vmid and pool exclude each other; one is needed."""
        if job.get("all") and job.get("vmid"):
            raise PveError(400, "Parameter verification failed.", {"all": "option conflicts with option 'vmid'"})
        if job.get("exclude") and job.get("vmid"):
            raise PveError(400, "Parameter verification failed.", {"exclude": "option conflicts with option 'vmid'"})
        if job.get("pool") and job.get("vmid"):
            raise PveError(400, "Parameter verification failed.", {"pool": "option conflicts with option 'vmid'"})
        if not job.get("all") and not job.get("vmid") and not job.get("pool"):
            raise PveError(400, "Parameter verification failed.", {"vmid": "property is missing"})

    @staticmethod
    def _lab_schedule(job: dict[str, Any]) -> None:
        """PVE/API2/Backup.pm: a legacy ``starttime`` (with ``dow``) becomes a ``schedule``."""
        if job.get("starttime") and job.get("schedule"):
            raise PveError(
                400, "Parameter verification failed.", {"starttime": "'starttime' and 'schedule' cannot both be set"}
            )
        if job.get("starttime"):
            dow = job.pop("dow", "mon,tue,wed,thu,fri,sat,sun")
            job["schedule"] = f"{dow} {job.pop('starttime')}"
        if not job.get("schedule"):
            raise PveError(
                400, "Parameter verification failed.", {"schedule": "neither 'starttime' nor 'schedule' were set"}
            )
        if not CALENDAR_EVENT.match(str(job["schedule"])):
            text = f"invalid format - invalid calendar event '{job['schedule']}'"
            raise PveError(400, "Parameter verification failed.", {"schedule": text})

    async def _lab_jobs(self, v: dict[str, Any], user: str) -> list[dict[str, Any]]:
        return [self._lab_job_view(k, job) for k, job in sorted(self.backup_jobs.items())]

    async def _lab_job_read(self, v: dict[str, Any], user: str) -> dict[str, Any]:
        return self._lab_job_view(v["id"], self._lab_job(v["id"]))

    async def _lab_job_create(self, v: dict[str, Any], user: str) -> None:
        self.need_quorum()
        job = {k: val for k, val in v.items() if k != "id"}
        job_id = str(v.get("id") or f"backup-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:4]}")
        self._lab_schedule(job)
        self._lab_check_selection(job)
        if job_id in self.backup_jobs:
            raise PveError(500, f"Job '{job_id}' already exists")
        job.setdefault("enabled", 1)
        self.backup_jobs[job_id] = job

    async def _lab_job_update(self, v: dict[str, Any], user: str) -> None:
        self.need_quorum()
        job_id = v["id"]
        changes = {k: val for k, val in v.items() if k not in ("id", "delete")}
        deletes = [d for d in re.split(r"[\s,;]+", str(v.get("delete") or "")) if d]
        if not changes and not deletes:
            raise PveError(500, "no options specified")
        if job_id not in self.backup_jobs:
            raise PveError(500, "no such vzdump job")
        job = dict(self.backup_jobs[job_id])
        for key in deletes:
            job.pop(key, None)
        if "vmid" in changes:  # a selection replaces the other ways of selecting
            for key in ("all", "exclude", "pool"):
                job.pop(key, None)
        elif changes.get("all"):
            job.pop("vmid", None)
            job.pop("pool", None)
        elif changes.get("pool"):
            job.pop("vmid", None)
            job.pop("all", None)
        job.update(changes)
        self._lab_schedule(job)
        self._lab_check_selection(job)
        self.backup_jobs[job_id] = job

    async def _lab_job_delete(self, v: dict[str, Any], user: str) -> None:
        self.need_quorum()
        self._lab_job(v["id"])
        del self.backup_jobs[v["id"]]

    def _lab_selected(self, job: Mapping[str, Any]) -> list[int]:
        """PVE::VZDump::get_included_guests for one job: the vmids it backs up (every node)."""
        guests = [vm for vm in self.vms if not vm.template]
        if job.get("vmid"):
            return split_ids(job["vmid"])
        if job.get("pool"):
            return sorted(self.pools.get(str(job["pool"]), set()))
        if job.get("all"):
            excluded = set(split_ids(job.get("exclude")))
            nodes = {str(job["node"])} if job.get("node") else None
            return sorted(vm.vmid for vm in guests if vm.vmid not in excluded and (nodes is None or vm.node in nodes))
        return []

    async def _lab_not_backed_up(self, v: dict[str, Any], user: str) -> list[dict[str, Any]]:
        covered = {vmid for job in self.backup_jobs.values() for vmid in self._lab_selected(job)}
        return [
            {"vmid": vm.vmid, "name": vm.name, "type": "qemu"}
            for vm in sorted(self.vms, key=lambda g: g.vmid)
            if not vm.template and vm.vmid not in covered
        ]

    # ------------------------------------------------------------ vzdump

    def _lab_disks(self, vm: Any) -> list[tuple[str, str, int]]:
        """(key, volume, bytes) of each disk of the VM's config (no CD-ROMs, no cloud-init drive)."""
        out = []
        for key in sorted(vm.config):
            if not DRIVE.match(key):
                continue
            volume, options = split_drive(str(vm.config[key]))
            if not volume or volume == "none" or ("media", "cdrom") in options or "cloudinit" in volume:
                continue
            held = self._lab_volume(volume) if hasattr(self, "_lab_volume") else None
            size = int(held["size"]) if held and held.get("size") else parse_bytes(dict(options).get("size", "")) or 0
            out.append((key, volume, size))
        return out

    def _lab_backup_name(self, store: dict[str, Any], vmid: int, ctime: int, ext: str) -> tuple[str, int]:
        volumes = store.setdefault("volumes", {})
        while True:
            name = BACKUP_NAME.format(vmid=vmid, stamp=_utc(ctime).strftime(BACKUP_STAMP), ext=ext)
            if name not in volumes:
                return name, ctime
            ctime += 1

    def add_backup(
        self,
        storage: str,
        vmid: int,
        ctime: int,
        size: int,
        *,
        notes: str | None = None,
        protected: bool = False,
        verification: Mapping[str, str] | None = None,
        ext: str = "vma.zst",
        node: str | None = None,
    ) -> str:
        """Put a vzdump archive of vmid into a storage's content (as a finished backup leaves it); returns its volid.

        On a storage that is not shared the archive is on one node's disk: ``node`` (default: the
        VM's node, else every node sees it).
        """
        store = self.storages[storage]
        name, ctime = self._lab_backup_name(store, vmid, ctime, ext)
        vol: dict[str, Any] = {"content": "backup", "format": ext, "size": int(size), "ctime": int(ctime), "vmid": vmid}
        vol["subtype"] = "qemu"
        vm = self.vm(vmid)
        if node or vm is not None:
            vol["lab_node"] = node or vm.node
        if notes:
            vol["notes"] = notes
        if protected:
            vol["protected"] = True
        if verification:
            vol["verification"] = dict(verification)
        store.setdefault("volumes", {})[name] = vol
        if "avail" in store:
            store["avail"] -= int(size)
        return f"{storage}:{name}"

    async def _content_list(self, v: dict[str, Any], user: str) -> list[dict[str, Any]]:
        """A node's view of a storage: a backup on a storage that is not shared is on one node's disk only."""
        items: list[dict[str, Any]] = await super()._content_list(v, user)
        store = self.storages.get(v["storage"], {})
        if store.get("shared"):
            return items
        elsewhere = {
            f"{v['storage']}:{name}"
            for name, vol in store.get("volumes", {}).items()
            if vol.get("lab_node") not in (None, v["node"])
        }
        return [item for item in items if item["volid"] not in elsewhere]

    def _item(self, name: str, volname: str, vol: Mapping[str, Any]) -> dict[str, Any]:
        item: dict[str, Any] = super()._item(name, volname, vol)
        for key in ("subtype", "verification"):
            if vol.get(key) is not None:
                item[key] = vol[key]
        return item

    def _lab_prune(self, storage: str, vmid: int, keep: Mapping[str, int], lines: list[str]) -> None:
        store = self.storages[storage]
        volumes = store.get("volumes", {})
        group = [
            (n, int(vol.get("ctime") or 0), bool(vol.get("protected")))
            for n, vol in volumes.items()
            if vol.get("content") == "backup" and vol.get("vmid") == vmid
        ]
        marks = prune_marks(group, keep)
        removed = [n for n, mark in marks.items() if mark == "remove"]
        text = ",".join(f"{k}={n}" for k, n in keep.items())
        lines.append(f"INFO: prune older backups with retention: {text}")
        for name in removed:
            lines.append(f"INFO: removing backup '{storage}:{name}'")
            gone = volumes.pop(name)
            if "avail" in store:
                store["avail"] += int(gone.get("size") or 0)
        lines.append(f"INFO: pruned {len(removed)} backup(s) not covered by keep-retention policy")

    def _lab_notes(self, template: str, vm: Any) -> str:
        cluster = str(getattr(self, "cluster_name", "") or "")
        text = template.replace("\\n", "\n")
        for key, value in (("cluster", cluster), ("guestname", vm.name), ("node", vm.node), ("vmid", str(vm.vmid))):
            text = text.replace("{{" + key + "}}", value)
        return text

    def _lab_command(self, v: Mapping[str, Any]) -> str:
        """The ``vzdump ...`` command line the task log starts with."""
        ids = " ".join(str(i) for i in split_ids(v.get("vmid"))) or ("--all 1" if v.get("all") else "")
        opts = [f"--{k} {v[k]!r}" if isinstance(v[k], str) and " " in v[k] else f"--{k} {v[k]}" for k in sorted(v)
                if k not in ("vmid", "all", "node")]  # fmt: skip
        return " ".join(["vzdump", ids, *opts, "--node", str(v["node"])]).replace("  ", " ")

    async def _lab_vzdump(self, v: dict[str, Any], user: str) -> str:
        node = v["node"]
        if v.get("stdout"):
            raise PveError(
                400,
                "Parameter verification failed.",
                {"stdout": "option is only allowed on the command line interface."},
            )
        self._lab_check_selection(v)
        if v.get("pool") and str(v["pool"]) not in self.pools:
            raise PveError(500, f"pool '{v['pool']}' does not exist")
        selected = self._lab_selected(v)
        for vmid in selected:
            self.require(user, f"/vms/{vmid}", "VM.Backup")
        local = [i for i in selected if (self.vm(i) is None) or self.vm(i).node == node]
        external = [i for i in selected if i not in local]
        storage = str(v.get("storage") or "local")
        if storage in self.storages:
            self.require(user, f"/storage/{storage}", "Datastore.AllocateSpace")
        task_id = str(local[0]) if len(local) == 1 else ""
        box: dict[str, Any] = {}

        async def body() -> None:
            record = box.get("record") or self.tasklog[-1]
            lines: list[str] = record["log"]
            if external:
                lines.append(f"INFO: skip external VMs: {', '.join(str(i) for i in external)}")
            store = self.storages.get(storage)
            if store is None:
                raise TaskError(f"storage '{storage}' does not exist")
            if "backup" not in str(store.get("content", "")).split(","):
                raise TaskError(f"storage '{storage}' does not support backups")
            failed = 0
            for vmid in local:
                why = await self._lab_backup_one(v, vmid, storage, lines)
                if why:
                    failed += 1
            if failed:
                lines.append("INFO: Backup job finished with errors")
                raise TaskError("job errors")
            lines.append("INFO: Backup job finished successfully")

        log = [f"INFO: starting new backup job: {self._lab_command(v)}"]
        upid: str = await self.task(node, "vzdump", task_id, user, body, lock=False, log=log)
        record = box["record"] = self.tasks[upid]
        if record["status"] == "stopped" and record["log"][-2:-1] == [record["exitstatus"]] != ["OK"]:
            del record["log"][-2]  # fakepve logs a TaskError's text before TASK ERROR; vzdump does not
        return upid

    async def _lab_backup_one(self, v: Mapping[str, Any], vmid: int, storage: str, lines: list[str]) -> str:
        """Back up one guest into storage, logging as vzdump does; returns why it failed ('' when it did not)."""
        started = time.time()
        vm = self.vm(vmid)
        lines.append(f"INFO: Starting Backup of VM {vmid} ({'qemu' if vm is not None else 'unknown'})")
        lines.append(f"INFO: Backup started at {_pve_time(started)}")

        def fail(why: str) -> str:
            lines.append(f"ERROR: Backup of VM {vmid} failed - {why}")
            lines.append(f"INFO: Failed at {_pve_time(time.time())}")
            return why

        if vm is None:
            return fail(f"unable to find VM '{vmid}'")
        if vm.lock:
            return fail(f"VM is locked ({vm.lock})")
        running = vm.status == "running"
        mode = str(v.get("mode") or "snapshot") if running else "stop"  # a stopped guest is backed up as in stop mode
        lines.append(f"INFO: status = {vm.status}")
        lines.append(f"INFO: VM Name: {vm.name}")
        disks = self._lab_disks(vm)
        for key, volume, size in disks:
            lines.append(f"INFO: include disk '{key}' '{volume}' {format_size(size)}")
        lines.append(f"INFO: backup mode: {mode}")
        lines.append("INFO: ionice priority: 7")
        vm.lock = "backup"
        vm.config["lock"] = "backup"
        try:
            await self.pause(self.backup_secs)
            store = self.storages[storage]
            compress = str(v.get("compress") or "0")  # vzdump's default: no compression
            ext = {"0": "vma", "gzip": "vma.gz", "1": "vma.lzo", "lzo": "vma.lzo"}.get(compress, "vma.zst")
            name, ctime = self._lab_backup_name(store, vmid, int(started), ext)
            path = f"{self._base_path(storage)}/dump/{name.partition('/')[2]}"
            lines.append(f"INFO: creating vzdump archive '{path}'")
            if not running:
                lines.append("INFO: starting kvm to execute backup task")
            lines.append(f"INFO: started backup task '{uuid.uuid4()}'")
            why = self.vzdump_errors.get(vmid)
            total = sum(size for _, _, size in disks)
            size = max(total // 16, 1024**2)
            if not why and size > store.get("avail", float("inf")):
                why = "vma_queue_write: write error - No space left on device"
            if why:
                return fail(why)
            lines.append(f"INFO: transferred {total / 1024**3:.2f} GiB in {int(self.backup_secs)} seconds")
            lines.append(f"INFO: archive file size: {_human(size)}")
            notes = self._lab_notes(str(v["notes-template"]), vm) if v.get("notes-template") else None
            if notes:
                lines.append("INFO: adding notes to backup")
            if v.get("protected"):
                lines.append("INFO: marking backup as protected")
            protected = bool(v.get("protected"))
            self.add_backup(storage, vmid, ctime, size, notes=notes, protected=protected, ext=ext, node=vm.node)
            retention = v.get("prune-backups") or store.get("prune-backups")
            if int(v.get("remove", 1)) and retention:
                keep = parse_retention(retention)
                if keep:
                    self._lab_prune(storage, vmid, keep, lines)
        finally:
            vm.lock = None
            vm.config.pop("lock", None)
        spent = int(time.time() - started)
        lines.append(
            f"INFO: Finished Backup of VM {vmid} ({spent // 3600:02d}:{spent // 60 % 60:02d}:{spent % 60:02d})"
        )
        lines.append(f"INFO: Backup finished at {_pve_time(time.time())}")
        return ""

    # ------------------------------------------------------------ the task list's filters

    async def _task_list(self, request: Any) -> Any:
        """``GET /nodes/{node}/tasks`` with PVE's filters (``PVE/API2/Tasks.pm``)."""
        from fakepve.routing import ok
        from fakepve.server import USER, params

        node = request.match_info["node"]
        user = request[USER]
        p = self._verify(request, await params(request))
        audit = self.allowed(user, "/nodes/" + node, "Sys.Audit")
        source = p.get("source", "all")  # PVE's default is archive; fakepve has always listed running ones too
        types = p.get("typefilter")
        statuses = {s for s in re.split(r"[\s,;]+", str(p.get("statusfilter") or "")) if s}
        out = []
        for t in self.tasklog:
            if t["node"] != node or not (audit or self._task_owner(user, t)):
                continue
            running = t["status"] == "running"
            if (source == "archive" and running) or (source == "active" and not running):
                continue
            if p.get("vmid") is not None and t["id"] != str(p["vmid"]):
                continue
            if types and t["type"] != types:
                continue
            if p.get("userfilter") and str(p["userfilter"]) not in t["user"]:
                continue
            if p.get("since") and t["starttime"] < int(p["since"]):
                continue
            if p.get("until") and t["starttime"] > int(p["until"]):
                continue
            exit_status = str(t.get("exitstatus") or "")
            if p.get("errors") and (running or exit_status == "OK"):
                continue
            if statuses:
                kind = "ok" if exit_status == "OK" else "warning" if exit_status.startswith("WARNINGS") else "error"
                if kind not in statuses:
                    continue
            out.append(self._task_view(t, True))
        out.sort(key=lambda t: -t["starttime"])
        start = p.get("start", 0)
        return ok(out[start : start + p.get("limit", 50)])


class LabPve(DiskResize, GuestAgent, Backups):
    """fakepve as the lab serves it; build one with :func:`build`."""


# ---------------------------------------------------------------- building it


def _load_nodes(pve: LabPve, names: Any) -> None:
    for name in names:
        pve.add_node(str(name))


QEMU_KEYS = ("shutdown_secs", "start_secs", "stop_secs", "start_error", "ha_state", "acpi")


def _load_guests(pve: LabPve, guests: Any) -> None:
    """VMs as fakepve's own guests file gives them (the lab has QEMU guests only)."""
    for g in guests:
        if g.get("type", "qemu") != "qemu":
            raise ValueError(f"guest {g.get('vmid')}: the lab serves QEMU guests only, not {g.get('type')}")
        vm = pve.add_vm(
            int(g["vmid"]),
            g["name"],
            node=g.get("node", "pve1"),
            status=g.get("status", "stopped"),
            qmpstatus=g.get("qmpstatus"),
            config=g.get("config", {}),
            template=bool(g.get("template", False)),
            lock=g.get("lock"),
        )
        for key in QEMU_KEYS:
            if key in g:
                setattr(vm, key, g[key])


def _load_backup_jobs(pve: LabPve, jobs: Any) -> None:
    """Backup jobs as ``POST /cluster/backup`` takes them (``id`` and the job's options)."""
    for job in jobs:
        options = {k: (1 if v is True else 0 if v is False else v) for k, v in job.items() if k != "id"}
        options.setdefault("enabled", 1)
        pve.backup_jobs[str(job["id"])] = options


def _load_backups(pve: LabPve, backups: Any) -> None:
    """vzdump archives already on a storage, dated ``age_hours`` before now."""
    now = time.time()
    for b in backups:
        pve.add_backup(
            str(b.get("storage", "local")),
            int(b["vmid"]),
            int(now - float(b.get("age_hours", 0)) * 3600),
            int(b.get("size", 1024**3)),
            notes=b.get("notes"),
            protected=bool(b.get("protected", False)),
            verification=b.get("verification"),
            node=b.get("node"),
        )


SECTIONS: dict[str, Callable[[LabPve, Any], None]] = {
    "nodes": _load_nodes,
    "guests": _load_guests,
    "backup_jobs": _load_backup_jobs,
    "backups": _load_backups,
}
"""Loaders of the lab file's sections, in the order they run."""


def build(
    lab: Mapping[str, Any],
    *,
    password: str,
    user: str = "root@pam",
    host: str = "127.0.0.2",
    port: int = 8006,
    time_scale: float = 0.0,
    tokens: Mapping[str, str] | None = None,
    agent_boot_secs: float = AGENT_BOOT_SECS,
    run_schedules: bool = False,
) -> LabPve:
    """The lab's fakepve, not yet started (``await pve.start(certfile, keyfile)`` serves it).

    Args:
        lab: the lab file's data: ``{"nodes": [...], "guests": [...]}`` (see :data:`SECTIONS`).
        password: the password of ``user`` (never fakepve's public default).
        user: the password login.
        host: the address to listen on (loopback).
        port: the port (0: the system picks one; ``pve.port`` tells it once started).
        time_scale: real seconds per PVE second (0: every task ends before its request returns).
        tokens: API tokens, ``user@realm!name`` -> secret.
        agent_boot_secs: PVE seconds from a VM's start until its guest agent answers.
        run_schedules: run each enabled backup job at its schedule, as pvescheduler does (the lab's
            launcher does; tests leave it off so that no backup starts on its own).

    Raises:
        ValueError: a section this launcher does not know, or a guest it cannot serve.
    """
    unknown = sorted(set(lab) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown sections in the lab file: {', '.join(unknown)} (known: {', '.join(SECTIONS)})")
    if not password:
        raise ValueError("no password: the lab's fakepve never runs with fakepve's public default")
    pve = LabPve(user=user, password=password, host=host, port=port)
    pve.time_scale = time_scale
    pve.agent_boot_secs = agent_boot_secs
    pve.run_schedules = run_schedules
    for key, load in SECTIONS.items():
        if key in lab:
            load(pve, lab[key])
    if not any(vm.node == "pve1" for vm in pve.vms) and "pve1" not in lab.get("nodes", []):
        pve.nodes.pop("pve1", None)
    for token_id, secret in (tokens or {}).items():
        pve.apitokens[token_id] = secret
    return pve


# ---------------------------------------------------------------- the program


async def _serve(args: argparse.Namespace) -> None:
    lab = json.loads(Path(args.lab_file).read_text())
    tokens = {args.token: token_secret(Path(args.token_file))} if args.token else {}
    pve = build(
        lab,
        user=os.environ.get("PVE_USER", "root@pam"),
        password=os.environ.get("PVE_PASS", ""),
        host=args.host,
        port=args.port,
        time_scale=args.time_scale,
        tokens=tokens,
        agent_boot_secs=args.agent_boot_secs,
        run_schedules=args.run_schedules,
    )
    await pve.start(args.cert, args.key)
    print(f"lab fakepve listening on {pve.url} with {len(pve.nodes)} nodes, {len(pve.vms)} guests", flush=True)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m homelab_lab.pve_server", description=__doc__.splitlines()[0])
    parser.add_argument("lab_file", help="JSON: {'nodes': [...], 'guests': [...]}")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=8006)
    parser.add_argument("--cert", required=True, help="PEM server certificate")
    parser.add_argument("--key", required=True, help="PEM key of --cert")
    parser.add_argument("--time-scale", type=float, default=0.0, help="real seconds per PVE second")
    parser.add_argument("--agent-boot-secs", type=float, default=AGENT_BOOT_SECS)
    parser.add_argument("--run-schedules", action="store_true", help="run the backup jobs at their schedules")
    parser.add_argument("--token", help="an API token to serve, USER@REALM!NAME")
    parser.add_argument("--token-file", help="the token's secret (made, mode 600, when missing)")
    args = parser.parse_args(argv)
    if bool(args.token) != bool(args.token_file):
        parser.error("--token and --token-file go together")
    try:
        common.require_loopback(args.host, "--host")
        asyncio.run(_serve(args))
    except KeyboardInterrupt:
        pass
    except (OSError, ValueError, HomelabError) as e:
        print(f"lab fakepve: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
