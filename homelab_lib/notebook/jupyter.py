"""JupyterLab for the walkthrough: started on a loopback address, with a token, for ``homelab jupyter`` and the tests.

The server's kernels get ``HOMELAB_PARAMS_FILE`` (the params-file picker's first choice, see
:mod:`homelab_lib.notebook.widgets`) and ``HOMELAB_ARCHIVE`` (where a run confirmed with the button is
archived), and this Python's folder first on ``PATH`` so the ``python3`` kernel is this environment's.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
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


def command(server: Server) -> list[str]:
    """The ``jupyter lab`` command line for server: loopback, its port and token, no browser, no port retries."""
    return [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        f"--ServerApp.ip={server.ip}",
        f"--ServerApp.port={server.port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={server.token}",
        f"--ServerApp.root_dir={server.root}",
        "--allow-root",
    ]


def environment(
    params_file: Path | None, archive_dir: Path | None, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The server's environment: the walkthrough's parameter file and archive, this Python first on PATH."""
    env = dict(os.environ if base is None else base)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.pop("HOMELAB_HEADLESS", None)  # a person is at the widgets
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
        process = subprocess.Popen(
            command(server),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environment(params_file, archive_dir),
            cwd=str(server.root),
        )
        try:
            wait_ready(server, process)
            yield Server(server.ip, server.port, server.token, server.root, process)
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
    finally:
        if log is not None and not isinstance(out, int):
            out.close()


__all__ = ["Server", "command", "environment", "free_port", "running", "wait_ready"]
