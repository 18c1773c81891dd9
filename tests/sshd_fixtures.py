"""A real OpenSSH server of a test's own on a loopback address (not the lab's): start_sshd."""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from homelab_lib.core.errors import SshError
from homelab_lib.core.secrets import SecretRef
from homelab_lib.hosts.ssh import SshTarget, connect

SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


@contextmanager
def start_sshd(
    d: Path, address: str, host: str = "testvm", *, user: str = "", sftp_log: Path | None = None
) -> Iterator[SshTarget]:
    """An sshd on ``address`` (a free port) logging in ``user`` (default: this one) with a key made in ``d``;
    its target.

    With ``sftp_log``, SFTP is OpenSSH's sftp-server logging every request at INFO there (``open "PATH"
    flags WRITE,CREATE,EXCL mode 0600``, ``set "PATH" mode 0644``...): what a client asked, in the order
    it asked it. It runs through the user's shell; without it, SFTP is sshd's internal-sftp (any user).
    """
    user = user or getpass.getuser()
    sftp = f"{SFTP_SERVER} -e -l INFO 2>>{sftp_log}" if sftp_log is not None else "internal-sftp"
    if not Path(SSHD).exists():
        pytest.fail("openssh-server is not installed: `make test` installs it (.ci/sysdeps.sh)")
    d.mkdir(parents=True, exist_ok=True)
    for name in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    (d / "authorized_keys").write_text((d / "client.pub").read_text())
    port = free_port(address)
    host_key = " ".join((d / "host.pub").read_text().split()[:2])
    (d / "known_hosts").write_text(f"[{address}]:{port} {host_key}\n")
    (d / "sshd_config").write_text(
        "\n".join(
            [
                f"ListenAddress {address}:{port}",
                f"HostKey {d / 'host'}",
                f"PidFile {d / 'sshd.pid'}",
                f"AuthorizedKeysFile {d / 'authorized_keys'}",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                f"AllowUsers {user}",
                "PermitRootLogin prohibit-password",
                "UseDNS no",
                f"Subsystem sftp {sftp}",
                "",
            ]
        )
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    with (d / "log").open("wb") as log:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stdout=log, stderr=log)
    target = SshTarget(
        host=host,
        address=address,
        port=port,
        user=user,
        key=SecretRef("file", str(d / "client")),
        known_hosts=d / "known_hosts",
        timeout=10,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (d / "log").read_text()
            try:
                connect(target).close()
                break
            except SshError:
                assert time.monotonic() < deadline, (d / "log").read_text()
                time.sleep(0.1)
        yield target
    finally:
        proc.terminate()
        proc.wait(10)
