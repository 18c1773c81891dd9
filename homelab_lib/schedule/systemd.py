"""Scheduled runs: a systemd service + timer pair that runs ``homelab run``, or a crontab line.

``homelab schedule NOTEBOOK --every SPEC`` writes ``homelab-<stem>[-<name>].service`` (a oneshot that
runs the venv's ``homelab run`` with absolute paths: notebook, parameter files, archive; its working
folder the repository) and ``homelab-<stem>[-<name>].timer`` (``OnCalendar=`` or, for an interval
that no calendar expresses, ``OnUnitActiveSec=``; ``Persistent=true``; ``RandomizedDelaySec=``)
into the user's unit folder, and gives the crontab line that does the same. Every run so started is
archived and alerts like any other (:mod:`homelab_lib.schedule.alerts`).

SPEC is a systemd calendar expression (``daily``, ``hourly``, ``Mon *-*-* 02:00:00``, checked with
``systemd-analyze calendar`` where it is installed) or an interval shorthand: ``15m`` becomes
``*-*-* *:00/15:00``, ``6h`` becomes ``*-*-* 00/6:00:00``, ``1d`` ``daily``; an interval that does
not divide the hour or the day (``45m``, ``5h``, ``2d``) becomes ``OnBootSec=`` + ``OnUnitActiveSec=``
and has no crontab equivalent.

The units carry a marker line (:data:`MARKER`); :func:`list_schedules` and :func:`remove_schedule`
touch only files that have it.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from homelab_lib.core.errors import ConfigError, NotFound, Problem, ScheduleError
from homelab_lib.core.secrets import literal_secrets

#: The first line of every unit this module writes; only such files are listed or removed.
MARKER = "# Written by `homelab schedule`"
PREFIX = "homelab-"
DEFAULT_DELAY = "5min"
NAMED = {  # systemd's named calendar shorthands -> crontab
    "minutely": "* * * * *",
    "hourly": "0 * * * *",
    "daily": "0 0 * * *",
    "weekly": "0 0 * * 1",
    "monthly": "0 0 1 * *",
    "yearly": "0 0 1 1 *",
    "annually": "0 0 1 1 *",
    "quarterly": "0 0 1 1,4,7,10 *",
    "semiannually": "0 0 1 1,7 *",
}
INTERVAL = re.compile(r"^(\d+)\s*(m|min|h|d)$")
DAILY_AT = re.compile(r"^(?:\*-\*-\* )?(\d{1,2}):(\d{2})(?::00)?$")  # *-*-* 02:00:00 -> 0 2 * * *
UNIT_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class Every:
    """When a schedule fires, as the timer and as cron say it.

    Attributes:
        spec: SPEC as given.
        on_calendar: the timer's ``OnCalendar=`` ('' for an interval timer).
        interval: the timer's ``OnUnitActiveSec=`` (and ``OnBootSec=``) ('' for a calendar timer).
        cron: the five crontab fields ('' when cron cannot say it).
    """

    spec: str
    on_calendar: str = ""
    interval: str = ""
    cron: str = ""


@dataclass(frozen=True)
class Schedule:
    """A schedule as written (or found) in a unit folder.

    Attributes:
        name: the units' name without suffix, ``homelab-<stem>[-<name>]``.
        service: the service unit's path.
        timer: the timer unit's path.
        every: when it fires.
        command: the command the service runs (argv).
        workdir: the service's working folder.
        crontab: the crontab line that does the same ('' when cron cannot say ``every``).
        env_file: a file of ``NAME=value`` lines the service reads (``EnvironmentFile=``), for the
            ``env:`` secret references of the parameters; None when not given.
    """

    name: str
    service: Path
    timer: Path
    every: Every
    command: tuple[str, ...]
    workdir: Path
    crontab: str
    env_file: Path | None = None

    def line(self) -> str:
        """One line for ``--list``: name, when, and the command after ``homelab``."""
        when = self.every.on_calendar or f"OnUnitActiveSec={self.every.interval}"
        return f"{self.name}: every {self.every.spec} ({when}): {shlex.join(self.command[1:])}"

    def enable_hint(self) -> str:
        """The commands that load and start the timer (user units)."""
        return (
            f"systemctl --user daemon-reload && systemctl --user enable --now {self.timer.name}"
            "  (and `loginctl enable-linger` so it runs while you are logged out)"
        )


def parse_every(spec: str, *, check: bool = True) -> Every:
    """SPEC as a timer and a crontab schedule.

    Args:
        spec: a systemd calendar expression or an interval shorthand (``15m``, ``6h``, ``1d``).
        check: check a calendar expression with ``systemd-analyze calendar`` when it is installed.

    Raises:
        ConfigError: SPEC is empty, has a line break, is an interval of zero, or systemd rejects it.
    """
    text = spec.strip()

    def bad(message: str) -> ConfigError:
        return ConfigError([Problem(f"--every {spec!r}", 0, "", message)])

    if not text or any(ord(c) < 32 for c in text):
        raise bad("give a systemd calendar expression (daily, hourly, '*-*-* 02:00:00') or 15m / 6h / 1d")
    m = INTERVAL.match(text)
    if m:
        n, unit = int(m.group(1)), m.group(2)
        if n == 0:
            raise bad("an interval of zero; give 15m, 6h, 1d or a calendar expression")
        minutes = n * {"m": 1, "min": 1, "h": 60, "d": 1440}[unit]
        if minutes < 60 and 60 % minutes == 0:
            return Every(
                spec,
                on_calendar=f"*-*-* *:00/{minutes}:00",
                cron=f"*/{minutes} * * * *" if minutes > 1 else "* * * * *",
            )
        if minutes % 60 == 0 and minutes < 1440 and 24 % (minutes // 60) == 0:
            hours = minutes // 60
            return Every(
                spec, on_calendar=f"*-*-* 00/{hours}:00:00", cron=f"0 */{hours} * * *" if hours > 1 else "0 * * * *"
            )
        if minutes == 1440:
            return Every(spec, on_calendar="daily", cron=NAMED["daily"])
        return Every(spec, interval=_timespan(minutes))
    if check:
        _check_calendar(text, bad)
    return Every(spec, on_calendar=text, cron=_cron_of(text))


def _timespan(minutes: int) -> str:
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    return " ".join(f"{v}{u}" for v, u in ((days, "d"), (hours, "h"), (mins, "min")) if v)


def _cron_of(calendar: str) -> str:
    """The crontab fields of the calendar expressions cron can say; '' for the others."""
    if calendar.lower() in NAMED:
        return NAMED[calendar.lower()]
    m = DAILY_AT.match(calendar)
    if m and int(m.group(1)) < 24 and int(m.group(2)) < 60:
        return f"{int(m.group(2))} {int(m.group(1))} * * *"
    return ""


def _check_calendar(text: str, bad: Any) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return  # systemd checks it when the timer is loaded
    done = subprocess.run([analyze, "calendar", text], capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or ["rejected"])[-1]
        raise bad(f"systemd-analyze calendar: {why}; see `man systemd.time` (CALENDAR EVENTS), or use 15m / 6h / 1d")


def default_unit_dir() -> Path:
    """Where user units live: ``~/.config/systemd/user``."""
    return Path.home() / ".config" / "systemd" / "user"


def homelab_executable() -> Path:
    """The ``homelab`` command of the running environment (the venv's), absolute; its symlinks kept.

    Raises:
        ScheduleError: there is no ``homelab`` beside this Python, nor on PATH.
    """
    beside = Path(sys.executable).absolute().parent / "homelab"
    if beside.is_file():
        return beside
    found = shutil.which("homelab")
    if found:
        return Path(found).absolute()
    raise ScheduleError(
        "no `homelab` command beside this Python or on PATH",
        where=sys.executable,
        hint="install the package in the venv: .venv/bin/pip install -e .",
    )


def repo_root(notebook: Path) -> Path:
    """The repository a notebook belongs to: the nearest folder above it with a pyproject.toml (else its own)."""
    for folder in notebook.resolve().parents:
        if (folder / "pyproject.toml").is_file():
            return folder
    return notebook.resolve().parent


def unit_name(notebook: Path, name: str = "") -> str:
    """``homelab-<notebook stem>[-<name>]``, with characters systemd unit names do not take replaced."""
    base = PREFIX + notebook.stem + (f"-{name}" if name else "")
    return UNIT_SAFE.sub("-", base)


def _exec_arg(arg: str) -> str:
    """One argument as systemd's ExecStart= reads it (quotes, ``%%`` and ``$$`` escaped)."""
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if re.fullmatch(r"[A-Za-z0-9_@%+=:,./$-]+", escaped):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _exec_line(argv: Sequence[str]) -> str:
    return " ".join(_exec_arg(a) for a in argv)


def _param_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def plan_schedule(
    notebook: str | Path,
    every: Every,
    *,
    param_files: Sequence[str | Path] = (),
    parameters: Mapping[str, Any] | None = None,
    name: str = "",
    archive_dir: str | Path | None = None,
    unit_dir: Path | None = None,
    homelab: Path | None = None,
    workdir: Path | None = None,
    env_file: str | Path | None = None,
) -> Schedule:
    """What :func:`write_schedule` writes, without writing it.

    Args:
        notebook: the runbook to run.
        every: when (:func:`parse_every`).
        param_files: homelab parameter files (``-f``), made absolute.
        parameters: notebook parameters (``-p``); secrets must be references.
        name: a suffix for the units' name, to schedule one notebook more than once.
        archive_dir: the archive (default: ``archive/`` in the repository), made absolute.
        unit_dir: the unit folder (default: :func:`default_unit_dir`).
        homelab: the ``homelab`` command (default: :func:`homelab_executable`).
        workdir: the service's working folder (default: :func:`repo_root` of the notebook).
        env_file: ``NAME=value`` lines for the run's ``env:`` references (a timer's service does
            not have your shell's environment); made absolute.

    Raises:
        ConfigError: no such notebook or parameter file, a literal secret in ``parameters``, or
            a value with a line break.
    """
    nb = Path(notebook).resolve()
    problems = []
    if not nb.is_file():
        problems.append(Problem(str(notebook), 0, "", "no such notebook; the runbooks are in notebooks/"))
    files = [Path(f).resolve() for f in param_files]
    problems += [Problem(str(f), 0, "", "no such parameter file") for f in files if not f.is_file()]
    env = Path(env_file).expanduser().resolve() if env_file is not None else None
    if env is not None and not env.is_file():
        problems.append(
            Problem(
                f"--env-file {env_file}",
                0,
                "",
                "no such file; write NAME=value lines (mode 600; quote a value with spaces: systemd and sh read it)",
            )
        )
    params = dict(parameters or {})
    problems += [
        Problem(f"-p {key}", 0, key, "looks like a secret and holds a value; pass a reference (env:NAME or file:PATH)")
        for key in literal_secrets(params)
    ]
    texts = [str(nb), str(env or ""), *map(str, files), *(f"{k} {_param_text(v)}" for k, v in params.items()), name]
    problems += [Problem("homelab schedule", 0, "", f"{t!r} has a line break") for t in texts if "\n" in t or "\r" in t]
    if problems:
        raise ConfigError(problems)
    root = (workdir or repo_root(nb)).resolve()
    archive = Path(archive_dir) if archive_dir is not None else root / "archive"
    archive = archive if archive.is_absolute() else (Path.cwd() / archive).resolve()
    exe = homelab or homelab_executable()
    argv = [str(exe), "run", str(nb)]
    for f in files:
        argv += ["-f", str(f)]
    for key, value in params.items():
        argv += ["-p", str(key), _param_text(value)]
    argv += ["--archive", str(archive), "--log-output", "-q"]
    unit = unit_name(nb, name)
    folder = unit_dir or default_unit_dir()
    crontab = ""
    if every.cron:
        load = f"set -a && . {shlex.quote(str(env))} && set +a && " if env is not None else ""
        crontab = f"{every.cron} {load}cd {shlex.quote(str(root))} && " + " ".join(shlex.quote(a) for a in argv)
        crontab = crontab.replace("%", "\\%")  # cron reads % as a line break
    return Schedule(unit, folder / f"{unit}.service", folder / f"{unit}.timer", every, tuple(argv), root, crontab, env)


def env_references(param_files: Sequence[str | Path]) -> list[str]:
    """The environment variables the parameters' ``env:`` secret references read (names only, sorted).

    Raises:
        ConfigError: a parameter file does not load.
    """
    if not param_files:
        return []
    from homelab_lib.inventory import load_inventory

    inv = load_inventory([Path(f) for f in param_files])
    return sorted({ref.target for _key, ref in inv.secrets() if ref.kind == "env"})


def _described(schedule: Schedule) -> str:
    return Path(schedule.command[2]).stem.replace("%", "%%")


def service_text(schedule: Schedule) -> str:
    """The service unit: a oneshot running ``homelab run`` from the repository."""
    return (
        f"{MARKER}; `homelab schedule --remove {schedule.name}` removes it.\n"
        "[Unit]\n"
        f"Description=homelab runbook {_described(schedule)} (every {schedule.every.spec})\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"WorkingDirectory={_exec_arg(str(schedule.workdir))}\n"
        + (f"EnvironmentFile={_exec_arg(str(schedule.env_file))}\n" if schedule.env_file else "")
        + f"ExecStart={_exec_line(schedule.command)}\n"
    )


def timer_text(schedule: Schedule, *, delay: str = DEFAULT_DELAY) -> str:
    """The timer unit: ``OnCalendar=`` (or an interval), ``Persistent=true``, ``RandomizedDelaySec=``."""
    every = schedule.every
    when = (
        f"OnCalendar={every.on_calendar}\n"
        if every.on_calendar
        else f"OnBootSec={every.interval}\nOnUnitActiveSec={every.interval}\n"
    )
    return (
        f"{MARKER}; `homelab schedule --remove {schedule.name}` removes it.\n"
        "[Unit]\n"
        f"Description=homelab runbook {_described(schedule)}: every {every.spec}\n"
        "\n"
        "[Timer]\n"
        f"{when}"
        "Persistent=true\n"
        f"RandomizedDelaySec={delay}\n"
        f"Unit={schedule.service.name}\n"
        "\n"
        "[Install]\n"
        "WantedBy=timers.target\n"
    )


def write_schedule(schedule: Schedule, *, delay: str = DEFAULT_DELAY) -> Schedule:
    """Write the service and timer units (replacing units of the same name this module wrote).

    Raises:
        ConfigError: ``delay`` is not a systemd time span.
        ScheduleError: a unit of that name exists and was not written by ``homelab schedule``.
    """
    if not re.fullmatch(r"\d+\s*(us|ms|s|sec|m|min|h|hr|d)?( \d+\s*(us|ms|s|sec|m|min|h|hr|d)?)*", delay.strip()):
        raise ConfigError([Problem(f"--delay {delay!r}", 0, "", "a systemd time span: 5min, 30s, 1h")])
    for path in (schedule.service, schedule.timer):
        if path.exists() and not _ours(path):
            raise ScheduleError(
                "a unit of that name exists and was not written by `homelab schedule`",
                where=str(path),
                hint="pick another --name, or move that unit away",
            )
    schedule.service.parent.mkdir(parents=True, exist_ok=True)
    schedule.service.write_text(service_text(schedule))
    schedule.timer.write_text(timer_text(schedule, delay=delay))
    return schedule


def _ours(path: Path) -> bool:
    try:
        with path.open() as f:
            return f.readline().startswith(MARKER)
    except OSError:
        return False


def _setting(text: str, key: str) -> str:
    m = re.search(rf"^{key}=(.*)$", text, re.M)
    return m.group(1).strip() if m else ""


def list_schedules(unit_dir: Path | None = None) -> list[Schedule]:
    """The schedules written by ``homelab schedule`` in the unit folder, by name."""
    folder = unit_dir or default_unit_dir()
    found = []
    for timer in sorted(folder.glob(f"{PREFIX}*.timer")):
        service = timer.with_suffix(".service")
        if not _ours(timer):
            continue
        text = timer.read_text()
        every = Every(
            spec=text.split(": every ", 1)[1].splitlines()[0] if ": every " in text else "",
            on_calendar=_setting(text, "OnCalendar"),
            interval=_setting(text, "OnUnitActiveSec"),
        )
        svc = service.read_text() if service.is_file() else ""
        command = tuple(shlex.split(_setting(svc, "ExecStart").replace("%%", "%").replace("$$", "$")))
        workdir = Path(shlex.split(_setting(svc, "WorkingDirectory") or ".")[0])
        env = _setting(svc, "EnvironmentFile")
        env_file = Path(shlex.split(env.replace("%%", "%"))[0]) if env else None
        found.append(Schedule(timer.stem, service, timer, every, command, workdir, "", env_file))
    return found


def remove_schedule(name: str, unit_dir: Path | None = None) -> Schedule:
    """Remove one schedule's units; NAME with or without the ``homelab-`` prefix.

    Raises:
        NotFound: no schedule of that name in the folder (the names there are listed).
    """
    folder = unit_dir or default_unit_dir()
    wanted = name if name.startswith(PREFIX) else PREFIX + name
    for schedule in list_schedules(folder):
        if schedule.name == wanted:
            for path in (schedule.timer, schedule.service):
                path.unlink(missing_ok=True)
            return schedule
    raise NotFound(
        name,
        what="schedule",
        known=[s.name for s in list_schedules(folder)],
        where=str(folder),
        hint="`homelab schedule --list` shows them",
    )


__all__ = [
    "MARKER",
    "Every",
    "Schedule",
    "default_unit_dir",
    "env_references",
    "homelab_executable",
    "list_schedules",
    "parse_every",
    "plan_schedule",
    "remove_schedule",
    "repo_root",
    "service_text",
    "timer_text",
    "unit_name",
    "write_schedule",
]
