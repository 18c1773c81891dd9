"""SSH connections with the host key checked: the one place that opens them.

The inventory names the known_hosts file and the private key (a secret
reference); :func:`connect` loads exactly those, rejects any host whose key is
not there (paramiko's ``RejectPolicy``: never accepted unchecked), uses no agent
and searches no keys. Docker hosts (runbook 02), Proxmox nodes (snippets,
runbook 01) and the lab's own check all connect through it.

:func:`run_command` runs one command and reads its stdout and stderr together,
in one loop on the channel: reading one to its end before the other deadlocks
once the other fills the channel's window (a chatty stderr, ~2 MB).
"""

from __future__ import annotations

import contextlib
import io
import select
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from homelab_lib.core.errors import HostKeyRejected, SshError
from homelab_lib.core.secrets import SecretRef

if TYPE_CHECKING:  # paramiko is imported where a connection is made: SshTarget and CommandResult cost nothing
    import paramiko


def known_hosts_pattern(address: str, port: int) -> str:
    """How known_hosts names an SSH endpoint: ``[addr]:port``, or the bare address on port 22."""
    return address if port == 22 else f"[{address}]:{port}"


@dataclass(frozen=True)
class SshTarget:
    """How to reach one VM over SSH; the key is a reference, read at connect time.

    Attributes:
        host: the machine's name (for messages): a VM, or a Proxmox node.
        address: its address.
        port: the SSH port.
        user: the login.
        key: the private key's reference (``file:`` or ``env:``).
        known_hosts: the known_hosts file the host key is checked against.
        timeout: seconds for connect, banner and login.
        role: what the host is, for messages: ``VM`` or ``node``.
    """

    host: str
    address: str
    port: int
    user: str
    key: SecretRef
    known_hosts: Path
    timeout: float = 15.0
    role: str = "VM"

    @property
    def endpoint(self) -> str:
        return f"{self.user}@{self.address}:{self.port}"

    @property
    def pattern(self) -> str:
        """How known_hosts names this endpoint."""
        return known_hosts_pattern(self.address, self.port)


def _fingerprint(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.fingerprint}"


def _load_key(ref: SecretRef) -> dict[str, Any]:
    """paramiko connect() arguments for the key: a file path, or a key object for an env: reference."""
    import paramiko

    if ref.kind == "file":
        return {"key_filename": str(ref.path)}
    text = ref.reveal()
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return {"pkey": cls.from_private_key(io.StringIO(text))}
        except paramiko.SSHException:
            continue
    raise SshError(f"the private key in {ref} is not an ed25519, ECDSA or RSA key", where="ssh.private_key")


def connect(target: SshTarget) -> paramiko.SSHClient:
    """Open an SSH connection; the host key must be the one known_hosts names.

    Raises:
        HostKeyRejected: the host offers another key than known_hosts has, or known_hosts has none.
        SshError: the connection is refused or times out, or the login is refused.
    """
    import paramiko

    where = f"{target.role} {target.host} (ssh {target.endpoint})"
    client = paramiko.SSHClient()
    try:
        client.get_host_keys().load(str(target.known_hosts))
    except OSError as e:
        raise HostKeyRejected(
            f"known_hosts file {target.known_hosts} cannot be read ({e.strerror}); refusing to connect unchecked",
            where=where,
            hint="fix ssh.known_hosts in the parameters (ssh-keyscan the VM from a trusted network, then compare)",
        ) from e
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            target.address,
            port=target.port,
            username=target.user,
            look_for_keys=False,
            allow_agent=False,
            timeout=target.timeout,
            banner_timeout=target.timeout,
            auth_timeout=target.timeout,
            **_load_key(target.key),
        )
    except paramiko.BadHostKeyException as e:
        client.close()
        raise HostKeyRejected(
            f"host key mismatch: the host offers {_fingerprint(e.key)}, but {target.known_hosts} "
            f"has {_fingerprint(e.expected_key)} for {target.pattern}; refused",
            where=where,
            hint=f"if the {target.role} was rebuilt, check its new key out of band, then replace its line "
            f"(ssh-keygen -R '{target.pattern}' -f {target.known_hosts}); otherwise do not connect",
        ) from e
    except paramiko.AuthenticationException as e:
        client.close()
        raise SshError(
            f"login as {target.user} refused ({e})",
            where=where,
            hint=f"is the public key of ssh.private_key in the {target.role}'s authorized_keys?",
        ) from e
    except paramiko.SSHException as e:
        client.close()
        if "known_hosts" in str(e):
            raise HostKeyRejected(
                f"the host is not in {target.known_hosts}; refused (no host key is ever accepted unchecked)",
                where=where,
                hint=f"add its key after checking it out of band: ssh-keyscan -p {target.port} {target.address}",
            ) from e
        raise SshError(f"SSH handshake failed: {e}", where=where, hint=f"is sshd running on the {target.role}?") from e
    except (OSError, EOFError) as e:
        client.close()
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
        raise SshError(
            f"cannot connect: {reason}",
            where=where,
            hint=f"is the {target.role} up and its address and port right?",
        ) from e
    return client


def sftp_makedirs(sftp: paramiko.SFTPClient, folder: str, mode: int = 0o755) -> None:
    """Create folder and its parents over SFTP, like ``mkdir -p``.

    A folder made meanwhile by another connection (SFTP reports that as a bare
    "Failure") is fine: concurrent deploys to hosts that share a filesystem, as the
    lab's VMs do, race here.

    Raises:
        OSError: a part of the path exists and is not a folder, or cannot be made.
    """
    parts = folder.split("/")
    for i in range(1, len(parts) + 1):
        sub = "/".join(parts[:i])
        if not sub:
            continue
        try:
            if stat.S_ISDIR(sftp.stat(sub).st_mode or 0):
                continue
        except OSError:
            try:
                sftp.mkdir(sub, mode)
            except OSError:
                if not stat.S_ISDIR(sftp.stat(sub).st_mode or 0):
                    raise


def sftp_create(sftp: paramiko.SFTPClient, path: str, mode: int) -> paramiko.SFTPFile:
    """Create a file over SFTP for writing: exclusive (``O_CREAT|O_EXCL``: never over a file or through a
    link that is there) and with ``mode`` given in the open itself, so it has its final mode (or, under the
    server's umask, a stricter one) before its first byte is written, never the server's default 0644.

    paramiko's ``open()`` sends no attributes with the open, so the request is made here as it makes it,
    with the permissions attribute set (SSH_FXF_WRITE|CREAT|EXCL, SSH_FILEXFER_ATTR_PERMISSIONS).

    Raises:
        OSError: the file is there already (``x``), or cannot be made.
    """
    import paramiko
    from paramiko.sftp import CMD_HANDLE, CMD_OPEN, SFTP_FLAG_CREATE, SFTP_FLAG_EXCL, SFTP_FLAG_WRITE

    attrs = paramiko.SFTPAttributes()
    attrs.st_mode = stat.S_IMODE(mode)
    request = sftp._request  # type: ignore[attr-defined]  # the one way to send attributes with an open
    where = sftp._adjust_cwd(path)  # type: ignore[attr-defined]  # as open() resolves a relative path
    kind, msg = request(CMD_OPEN, where, SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_EXCL, attrs)
    if kind != CMD_HANDLE:
        raise paramiko.SFTPError("Expected handle")
    return paramiko.SFTPFile(sftp, msg.get_binary(), "wb")


def sftp_replace(sftp: paramiko.SFTPClient, path: str, data: bytes, mode: int) -> None:
    """Write path over SFTP atomically: a temp file beside it, made exclusive with its final mode before any
    byte (:func:`sftp_create`), written, then renamed over path.

    A temp file an interrupted write left is removed first (a link there is removed, never followed). When
    the server's umask took bits of ``mode`` from the new file, they are given back by its handle once it is
    written (the file is never looser than ``mode``).

    Raises:
        OSError: the folder cannot be written, or the file renamed.
    """
    tmp = f"{path}.homelab-tmp"
    with contextlib.suppress(FileNotFoundError):
        sftp.remove(tmp)
    with sftp_create(sftp, tmp, mode) as f:
        f.write(data)
        if stat.S_IMODE(f.stat().st_mode or 0) != stat.S_IMODE(mode):
            f.chmod(stat.S_IMODE(mode))
    sftp.posix_rename(tmp, path)


@dataclass(frozen=True)
class CommandResult:
    """The outcome of one remote command."""

    command: str
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


CHUNK = 1 << 15


def run_command(
    client: paramiko.SSHClient, command: str, *, timeout: float, where: str, stdin: bytes = b""
) -> CommandResult:
    """Run a command over an open connection; its exit code, stdout and stderr (kept apart).

    Both streams are drained as they arrive (one select loop on the channel), so neither can
    fill the channel's window and stall the command. Never raises for a non-zero exit.

    Args:
        client: a connection from :func:`connect`.
        command: the shell command line.
        timeout: seconds for the whole command, output included.
        where: the host, for messages (``VM docker-a (ssh user@addr:22)``).
        stdin: bytes fed to the command's standard input, then end of file; the way to hand a
            command a secret (``IFS= read -r VAR``) without it reaching a command line.

    Raises:
        SshError: the channel could not be opened or broke, or the command ran past timeout
            (the channel is closed; the remote command gets SIGHUP with it).
    """
    import paramiko

    name = command.split()[0] if command.split() else "(empty)"
    deadline = time.monotonic() + timeout
    out: list[bytes] = []
    err: list[bytes] = []
    try:
        transport = client.get_transport()
        if transport is None or not transport.is_active():
            raise paramiko.SSHException("the SSH connection is closed")
        chan = transport.open_session(timeout=timeout)
    except (paramiko.SSHException, OSError, EOFError) as e:
        raise SshError(f"command {name!r} failed: cannot open a channel ({e})", where=where) from e
    try:
        chan.settimeout(0.0)
        chan.exec_command(command)
        pending = memoryview(stdin)
        if not pending:
            chan.shutdown_write()  # no stdin: a command that reads it sees end of file, not a hang
        while True:
            drained = False
            while pending and chan.send_ready():
                sent = chan.send(bytes(pending[:CHUNK]))
                pending = pending[sent:]
                drained = True
                if not pending:
                    chan.shutdown_write()
            while chan.recv_ready():
                out.append(chan.recv(CHUNK))
                drained = True
            while chan.recv_stderr_ready():
                err.append(chan.recv_stderr(CHUNK))
                drained = True
            if chan.eof_received and not chan.recv_ready() and not chan.recv_stderr_ready():
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            if not drained:
                select.select([chan], [], [], min(left, 0.01 if pending else 1.0))
        while not chan.exit_status_ready():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            chan.status_event.wait(min(left, 1.0))
        code = chan.recv_exit_status()
    except TimeoutError:  # socket.timeout is TimeoutError
        raise SshError(
            f"command {name!r} timed out",
            where=where,
            hint=f"the limit is {timeout:g}s; is the host overloaded or the network down?",
        ) from None
    except (paramiko.SSHException, OSError, EOFError) as e:
        raise SshError(f"command {name!r} failed ({e})", where=where) from e
    finally:
        chan.close()
    return CommandResult(command, code, b"".join(out).decode(errors="replace"), b"".join(err).decode(errors="replace"))
