"""JupyterLab for the walkthrough: started on a loopback address, with a token, for ``homelab jupyter`` and the tests.

The token never sits on a command line (``/proc/<pid>/cmdline`` is readable by every local user, and
the token runs code as the operator, with the SSH key, the Proxmox token and the kubeconfig): the
server reads it from ``JUPYTER_TOKEN_FILE``, a mode-600 file in a mode-700 folder of its own, removed
once the server answers.

The server's kernels get ``HOMELAB_PARAMS_FILE`` (the params-file picker's first choice, see
:mod:`homelab_lib.notebook.widgets`) and ``HOMELAB_ARCHIVE`` (where a run confirmed with the button is
archived), and this Python's folder first on ``PATH`` so the ``python3`` kernel is this environment's.

:func:`serve` is ``homelab jupyter``: it stops the server on SIGINT, SIGTERM or SIGHUP, whatever
signal dispositions it inherited (a background job starts with SIGINT ignored).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from urllib.parse import quote

from homelab_lib.core.errors import RunError
from homelab_lib.notebook.widgets import ARCHIVE_ENV, PARAMS_ENV


def free_port(ip: str) -> int:
    """A TCP port free on ip now (the server is told to take exactly it, without retries)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Server:
    """A JupyterLab server this process started.

    Attributes:
        ip: the loopback address it listens on.
        port: its port.
        token: its token (a fresh random one: never logged by the caller beyond the URL it prints).
        root: the folder it serves.
        process: the server's process (None before it is started).
    """

    ip: str
    port: int
    token: str
    root: Path
    process: subprocess.Popen[bytes] | None = field(default=None, compare=False, repr=False)

    @property
    def base(self) -> str:
        return f"http://{self.ip}:{self.port}"

    def url(self, path: str = "") -> str:
        """The URL of a notebook (relative to root) in JupyterLab, token included."""
        where = f"/lab/tree/{quote(path)}" if path else "/lab"
        return f"{self.base}{where}?token={self.token}"


TOKEN_FILE_ENV = "JUPYTER_TOKEN_FILE"  # jupyter_server's IdentityProvider reads the token from this file
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # what stops `homelab jupyter`
STOP_WAIT_S = 4.0  # how long a stopped server may take to shut its kernels down before it is killed


def command(server: Server) -> list[str]:
    """The ``jupyter lab`` command line for server: loopback, its port, no browser, no port retries; no token
    (that comes from :data:`TOKEN_FILE_ENV`)."""
    return [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        f"--ServerApp.ip={server.ip}",
        f"--ServerApp.port={server.port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={server.root}",
        "--allow-root",
    ]


def environment(
    params_file: Path | None,
    archive_dir: Path | None,
    base: Mapping[str, str] | None = None,
    token_file: Path | None = None,
) -> dict[str, str]:
    """The server's environment: the walkthrough's parameter file and archive, this Python first on PATH, and
    where its token is (never the token itself)."""
    env = dict(os.environ if base is None else base)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.pop("HOMELAB_HEADLESS", None)  # a person is at the widgets
    env.pop("JUPYTER_TOKEN", None)  # it would win over the file
    if token_file is not None:
        env[TOKEN_FILE_ENV] = str(token_file)
    if params_file is not None:
        env[PARAMS_ENV] = str(params_file.resolve())
    if archive_dir is not None:
        env[ARCHIVE_ENV] = str(archive_dir.resolve())
    return env


def wait_ready(server: Server, process: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    """Wait until the server answers /api/status with its token.

    Raises:
        RunError: it exited, or did not answer within timeout_s.
    """
    deadline = time.monotonic() + timeout_s
    request = urllib.request.Request(f"{server.base}/api/status", headers={"Authorization": f"token {server.token}"})
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RunError(
                f"JupyterLab exited with code {process.returncode} before it answered",
                where=server.base,
                hint="run the command by hand to see why: " + " ".join(command(server)[:4]),
            )
        try:
            with urllib.request.urlopen(request, timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RunError(f"JupyterLab did not answer within {timeout_s:.0f}s", where=server.base, hint="is the port taken?")


@contextmanager
def token_file(token: str) -> Iterator[Path]:
    """A mode-600 file holding token, in a mode-700 folder of its own; removed with the folder on exit."""
    folder = Path(tempfile.mkdtemp(prefix="homelab-jupyter-"))  # mode 700
    try:
        path = folder / "token"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token)
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def running(
    root: Path,
    *,
    ip: str = "127.0.0.1",
    port: int | None = None,
    params_file: Path | None = None,
    archive_dir: Path | None = None,
    log: Path | None = None,
) -> Iterator[Server]:
    """JupyterLab serving root on ip (loopback), with a fresh token; stopped (and its kernels) on exit.

    The token reaches the server in a file (:func:`token_file`), removed once the server answers: it is
    on no command line and in no environment.

    Args:
        root: the folder it serves.
        ip: the address to bind: loopback only (the token is the only guard).
        port: its port (default: one free now).
        params_file: the params-file picker's first choice in the runbooks.
        archive_dir: where runs confirmed with the button are archived.
        log: where the server's output goes (default: discarded).

    Raises:
        RunError: ip is not a loopback address; the server exited or did not answer.
    """
    if not ipaddress.ip_address(ip).is_loopback:
        raise RunError(
            f"JupyterLab would listen on {ip}, which is not a loopback address",
            where="homelab jupyter",
            hint="give --ip 127.0.0.1 (or another 127.x address); reach it from elsewhere through an SSH tunnel",
        )
    server = Server(ip, port or free_port(ip), secrets.token_hex(24), root.resolve())
    out = log.open("wb") if log is not None else subprocess.DEVNULL
    try:
        with token_file(server.token) as token:
            process = subprocess.Popen(
                command(server),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=environment(params_file, archive_dir, token_file=token),
                cwd=str(server.root),
            )
            try:
                wait_ready(server, process)
            except BaseException:
                stop(process)
                raise
        try:
            yield Server(server.ip, server.port, server.token, server.root, process)
        finally:
            stop(process)
    finally:
        if log is not None and not isinstance(out, int):
            out.close()


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server: SIGTERM (it shuts its kernels down), then SIGKILL after :data:`STOP_WAIT_S`."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


class Stopped(Exception):
    """This process was asked to stop by a signal."""


@contextmanager
def stop_on_signals(
    signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP),
) -> Iterator[None]:
    """In the block, the first of signals raises :class:`Stopped`; later ones are ignored, so the cleanup it
    starts runs to its end. Set whatever this process inherited: a job started in the background by a shell
    without job control starts with SIGINT ignored, and Python then never turns it into KeyboardInterrupt."""
    stopping = False

    def handle(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        raise Stopped(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handle) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve(
    root: Path,
    *,
    ip: str = "127.0.0.1",
    port: int | None = None,
    params_file: Path | None = None,
    archive_dir: Path | None = None,
    on_ready: Callable[[Server], None] = lambda server: None,
) -> int:
    """``homelab jupyter``: serve root until the server exits, or this process gets SIGINT, SIGTERM or SIGHUP
    (whatever it inherited); then stop the server and its kernels.

    Args:
        root: the folder it serves.
        ip: the loopback address to bind.
        port: its port (default: one free now).
        params_file: the params-file picker's first choice in the runbooks.
        archive_dir: where runs confirmed with the button are archived.
        on_ready: called once the server answers (``homelab jupyter`` prints the URL).

    Returns:
        0 when stopped by a signal, else the server's exit code.

    Raises:
        RunError: ip is not a loopback address; the server exited or did not answer.
    """
    try:
        with (
            stop_on_signals(),
            running(root, ip=ip, port=port, params_file=params_file, archive_dir=archive_dir) as server,
        ):
            on_ready(server)
            assert server.process is not None
            return server.process.wait()
    except Stopped:
        return 0


__all__ = [
    "Server",
    "Stopped",
    "command",
    "environment",
    "free_port",
    "running",
    "serve",
    "stop",
    "stop_on_signals",
    "token_file",
    "wait_ready",
]
