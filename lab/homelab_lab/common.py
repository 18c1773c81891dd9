"""What the parts of the rehearsal lab share: the status record, the state file, processes.

The lab keeps everything in ``inv.lab.state_dir``. ``lab.json`` there records
each process the lab started (its pid, its exact argv, a hash of its inputs),
so a later ``up`` can reuse it, ``status`` can check it and ``down`` can stop it
after checking ``/proc/PID/cmdline`` still shows the same argv.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from homelab_lab.errors import LabError
from homelab_lib.inventory.model import Inventory, Lab

STATE_FILE = "lab.json"
LOCK_FILE = "lab.lock"
State = Literal["up", "down", "missing"]

# Popen objects of the processes this Python process started, by pid: kept so they
# can be reaped (no zombies) and do not warn when garbage-collected.
_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class PartStatus:
    """The state of one part of the lab.

    Attributes:
        part: ``proxmox``, ``ssh``, ``docker`` or ``image``.
        name: which one: ``fakepve``, a VM name, ``engine``, a service name.
        address: where it is reached: a URL, ``addr:port``, the Docker socket, an image tag.
        state: ``up`` (running and answering), ``down`` (started or built, but not answering
            or stale) or ``missing`` (never started or built).
        detail: a short explanation: version, pid, or why it is down.
    """

    part: str
    name: str
    address: str
    state: State
    detail: str


@dataclass(frozen=True)
class Proc:
    """A process the lab started, as recorded in the state file."""

    pid: int
    argv: list[str]
    inputs: str


def lab_settings(inv: Inventory) -> Lab:
    """The inventory's lab section, or a LabError if this is not a lab inventory."""
    if inv.profile != "lab" or inv.lab is None:
        raise LabError(
            f"inventory '{inv.name}' is not a rehearsal lab (profile: {inv.profile})",
            where=", ".join(str(p) for p in inv.source_files) or inv.name,
            hint="the lab commands need a parameter file with profile: lab and a lab: section, "
            "e.g. parameters/lab.yaml",
        )
    return inv.lab


def require_loopback(address: str, what: str) -> None:
    """Raise LabError unless address is an IPv4 address in 127.0.0.0/8."""
    try:
        ok = ipaddress.ip_address(address) in ipaddress.ip_network("127.0.0.0/8")
    except ValueError:
        ok = False
    if not ok:
        raise LabError(
            f"address '{address}' is not a loopback address",
            where=what,
            hint="the lab serves on this machine only; give a 127.x.y.z address",
        )


def digest(*parts: str | bytes) -> str:
    """A sha256 hex digest over the parts, each length-prefixed."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()


def write_private(path: Path, data: str | bytes) -> None:
    """Write a file readable by its owner only (mode 600), creating its folder (mode 700)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    raw = data.encode() if isinstance(data, str) else data
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), 0o600)
        out.write(raw)


def log_tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file (empty if there is none)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# ---------------------------------------------------------------- state file


def load_state(state_dir: Path) -> dict[str, Proc]:
    """The processes recorded in the state file, by key (``pve``, ``sshd/<vm>``)."""
    try:
        data = json.loads((state_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    procs = data.get("processes", {}) if isinstance(data, dict) else {}
    return {key: Proc(int(p["pid"]), [str(a) for a in p["argv"]], str(p["inputs"])) for key, p in procs.items()}


def save_state(state_dir: Path, procs: dict[str, Proc]) -> None:
    """Record the processes in the state file (written atomically)."""
    tmp = state_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps({"processes": {k: asdict(p) for k, p in sorted(procs.items())}}, indent=2) + "\n")
    tmp.replace(state_dir / STATE_FILE)


def record(state_dir: Path, key: str, proc: Proc | None) -> None:
    """Add, replace (or with None, drop) one process in the state file."""
    procs = load_state(state_dir)
    if proc is None:
        procs.pop(key, None)
    else:
        procs[key] = proc
    save_state(state_dir, procs)


# ---------------------------------------------------------------- processes


def cmdline(pid: int) -> list[str] | None:
    """The argv of a live process, or None if there is none (a zombie counts as none)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    if not raw:
        return None
    return [part.decode(errors="replace") for part in raw.rstrip(b"\0").split(b"\0")]


def is_alive(pid: int) -> bool:
    """True if the pid runs (a zombie counts as dead)."""
    _reap(pid)
    return cmdline(pid) is not None


def is_running(proc: Proc | None) -> bool:
    """True if the recorded process is alive and still runs the recorded argv.

    A process may rewrite its title (sshd shows ``sshd: /usr/sbin/sshd -D ... [listener] ...``),
    so the argv, joined by spaces, may also appear inside the title.
    """
    if proc is None:
        return False
    _reap(proc.pid)
    child = _children.get(proc.pid)
    if child is not None and child.args == proc.argv:
        # Our own live child: right after Popen returns, its execve may not have set up its
        # arguments yet, and /proc/PID/cmdline reads empty for a moment.
        return True
    seen = cmdline(proc.pid)
    if seen is None:
        return False
    return seen == proc.argv or " ".join(proc.argv) in " ".join(seen)


def spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> int:
    """Start a process in its own session (it outlives this one), output to log; returns its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    _children[child.pid] = child
    return child.pid


def stop(proc: Proc | None, timeout: float = 5.0) -> bool:
    """Stop a recorded process if it still runs its argv: SIGTERM, then SIGKILL after timeout.

    Returns:
        True if a process was stopped (or died meanwhile), False if none ran the argv.
    """
    if proc is None or not is_running(proc):
        return False
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not is_running(proc):
                return True
            time.sleep(0.05)
    return True


def _reap(pid: int) -> None:
    """Collect the exit status of a child of ours that has ended, so it leaves no zombie."""
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        del _children[pid]


def wait_until(
    what: str,
    check: Callable[[], str | None],
    timeout: float,
    where: str,
    log: Path | None = None,
    redact: Callable[[str], str] = str,
) -> None:
    """Call check until it returns None (ready), or raise LabError with its last answer and the log tail.

    Args:
        what: what is awaited, for the message ("fakepve to answer").
        check: returns None when ready, else a short reason; raising LabError stops the wait at once.
        timeout: seconds to wait.
        where: the part, for the error.
        log: the process's log, whose tail the error shows.
        redact: applied to the log tail (to mask a secret the process knows).
    """
    deadline = time.monotonic() + timeout
    delay = 0.05
    while (reason := check()) is not None and time.monotonic() < deadline:
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
    if reason is None:
        return
    tail = redact(log_tail(log)) if log else ""
    raise LabError(
        f"timed out after {timeout:g}s waiting for {what}: {reason}"
        + (f"\n--- {log} (tail) ---\n{tail}" if tail else ""),
        where=where,
        hint="look at the log above; `homelab lab down` then `homelab lab up` starts afresh",
    )
