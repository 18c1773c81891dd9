"""Volume data streamed host to host through this machine, and checked by checksum manifests on both sides.

:func:`stream` runs ``tar -cf -`` in the source folder on one host and ``tar -xf -`` in the
target folder on the other, over two SSH channels of this machine's paramiko connections, and
pumps the bytes across in chunks (no temporary file anywhere). The target folder is emptied
first, so a copy cut short and started again is redone from scratch, never merged. Owners,
modes and times are kept (``--numeric-owner``, ``-p``; the target's tar runs as the SSH user,
root on a K3s VM). :func:`verify` takes the per-file manifest (:mod:`homelab_lib.hosts.checksums`) of
both folders at once and compares them path by path.

:func:`folder_bytes` and :func:`free_bytes` (``du``/``df`` over SSH) are what the plan's space
check reads.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import paramiko

from homelab_lib.core.errors import CopyFailed, MigrateError
from homelab_lib.hosts.checksums import Manifest, ManifestDiff, compare, remote_manifest
from homelab_lib.hosts.ssh import run_command

CHUNK = 1 << 20  # bytes read from the source channel at a time
WINDOW = 1 << 25  # the SSH channel window: enough in flight to keep both links busy
COPY_TIMEOUT_S = 6 * 3600.0
STALL_S = 300.0

#: Called after each chunk with the bytes sent so far (progress, and the tests' fault hook).
OnChunk = Callable[[int], None]


@dataclass(frozen=True)
class Copied:
    """One volume's completed copy: bytes streamed and seconds taken."""

    bytes: int
    seconds: float


def _tail(data: bytes) -> str:
    lines = data.decode(errors="replace").strip().splitlines()[-3:]
    return " | ".join(lines)


def _open(client: paramiko.SSHClient, command: str, where: str) -> paramiko.Channel:
    try:
        transport = client.get_transport()
        if transport is None or not transport.is_active():
            raise paramiko.SSHException("the SSH connection is closed")
        chan = transport.open_session(window_size=WINDOW, max_packet_size=1 << 15, timeout=30)
        chan.exec_command(command)
    except (paramiko.SSHException, OSError, EOFError) as e:
        raise CopyFailed(f"cannot start {command.split()[0]!r}: {e}", where=where, hint="is the host up?") from e
    return chan


def stream(
    source: paramiko.SSHClient,
    source_folder: str,
    target: paramiko.SSHClient,
    target_folder: str,
    *,
    where: str,
    on_chunk: OnChunk | None = None,
    timeout: float = COPY_TIMEOUT_S,
) -> Copied:
    """Copy the contents of source_folder (on source's host) into target_folder (on target's host), emptied first.

    Args:
        source: a connection to the host that has the data.
        source_folder: the folder whose contents are copied (a Docker volume's Mountpoint).
        target: a connection to the host that receives it.
        target_folder: the folder that receives it (a PV's folder); made if missing, emptied first.
        where: the volume and hosts, for messages.
        on_chunk: called after each chunk with the bytes sent so far; what it raises stops the copy.
        timeout: seconds for the whole copy.

    Returns:
        The bytes streamed (the tar stream's size) and the seconds taken.

    Raises:
        CopyFailed: a channel broke, either tar failed, or the time ran out; the target folder holds
            a partial copy (the next copy of it starts from scratch).
    """
    src_q, dst_q = shlex.quote(source_folder), shlex.quote(target_folder)
    began = time.monotonic()
    deadline = began + timeout
    writer = _open(
        target,
        f"mkdir -p -- {dst_q} && cd -- {dst_q} && find . -mindepth 1 -delete && tar --numeric-owner -xpf -",
        where,
    )
    reader: paramiko.Channel | None = None
    sent = 0
    src_err, dst_err = bytearray(), bytearray()
    try:
        reader = _open(source, f"cd -- {src_q} && tar --numeric-owner -cf - .", where)
        reader.settimeout(STALL_S)  # a side that stops moving for this long breaks the copy (socket.timeout)
        writer.settimeout(STALL_S)
        while True:
            data = reader.recv(CHUNK)
            while reader.recv_stderr_ready():
                src_err.extend(reader.recv_stderr(1 << 16))
            while writer.recv_stderr_ready():
                dst_err.extend(writer.recv_stderr(1 << 16))
            if not data:
                break
            if writer.exit_status_ready():
                raise CopyFailed(
                    f"tar on the target stopped early: {_tail(bytes(dst_err))}",
                    where=where,
                    hint="is the target's disk full, or may the SSH user write there?",
                )
            writer.sendall(data)
            sent += len(data)
            if on_chunk is not None:
                on_chunk(sent)
            if time.monotonic() > deadline:
                raise CopyFailed(f"the copy ran past {timeout:.0f} s", where=where, hint="run again to resume")
        writer.shutdown_write()
        src_code = reader.recv_exit_status()
        src_err.extend(_drain_stderr(reader))
        dst_code = writer.recv_exit_status()
        dst_err.extend(_drain_stderr(writer))
    except CopyFailed:
        raise
    except (paramiko.SSHException, OSError, EOFError) as e:
        raise CopyFailed(
            f"the copy stream broke after {sent} bytes ({e or type(e).__name__})",
            where=where,
            hint="run again: the copy resumes with this volume, from scratch",
        ) from e
    finally:
        for chan in (reader, writer):
            if chan is not None:
                chan.close()
    if src_code != 0:
        raise CopyFailed(
            f"tar on the source ended with exit {src_code} after {sent} bytes: {_tail(bytes(src_err))}",
            where=where,
            hint="was the connection cut? run again: the copy resumes with this volume, from scratch",
        )
    if dst_code != 0:
        raise CopyFailed(
            f"tar on the target ended with exit {dst_code}: {_tail(bytes(dst_err))}",
            where=where,
            hint="is the target's disk full, or may the SSH user write there? then run again",
        )
    return Copied(sent, time.monotonic() - began)


def _drain_stderr(chan: paramiko.Channel) -> bytes:
    out = bytearray()
    while chan.recv_stderr_ready():
        out.extend(chan.recv_stderr(1 << 16))
    return bytes(out)


@dataclass(frozen=True)
class Verified:
    """Both manifests of one volume and how they differ."""

    source: Manifest
    target: Manifest
    diff: ManifestDiff

    @property
    def ok(self) -> bool:
        return self.diff.ok


def verify(
    source: paramiko.SSHClient,
    source_folder: str,
    target: paramiko.SSHClient,
    target_folder: str,
    *,
    where_source: str,
    where_target: str,
) -> Verified:
    """The manifests of both folders, taken at the same time (one per host), and their comparison.

    Raises:
        ManifestError: a folder is missing or a manifest could not be taken.
        SshError: a connection broke.
    """
    with ThreadPoolExecutor(max_workers=2) as pool:
        a = pool.submit(remote_manifest, source, source_folder, where=where_source)
        b = pool.submit(remote_manifest, target, target_folder, where=where_target)
        src, dst = a.result(), b.result()
    return Verified(src, dst, compare(src, dst))


def folder_bytes(client: paramiko.SSHClient, folder: str, *, where: str) -> int:
    """The bytes under a folder (``du -sb``).

    Raises:
        MigrateError: the folder cannot be read.
    """
    got = run_command(client, f"du -sb -- {shlex.quote(folder)}", timeout=600, where=where)
    words = got.stdout.split()
    if got.ok and words and words[0].isdigit():
        return int(words[0])
    raise MigrateError(
        f"cannot measure {folder}: {got.stderr.strip() or got.stdout.strip()}",
        where=where,
        hint="does the volume exist and may the SSH user read it?",
    )


def free_bytes(client: paramiko.SSHClient, folder: str, *, where: str) -> int:
    """The bytes free on the filesystem of folder (or of its nearest existing parent), as ``df`` says.

    Raises:
        MigrateError: df failed.
    """
    q = shlex.quote(folder)
    command = (
        f'p={q}; while [ ! -e "$p" ] && [ "$p" != / ]; do p=$(dirname -- "$p"); done; df -B1 --output=avail -- "$p"'
    )
    got = run_command(client, command, timeout=60, where=where)
    lines = got.stdout.strip().splitlines()
    if got.ok and len(lines) >= 2 and lines[-1].strip().isdigit():
        return int(lines[-1].strip())
    raise MigrateError(
        f"cannot read the free space of {folder}: {got.stderr.strip() or got.stdout.strip()}",
        where=where,
        hint="is the K3s storage root (k3s data_dir + /storage) right?",
    )


__all__ = ["CHUNK", "Copied", "OnChunk", "Verified", "folder_bytes", "free_bytes", "stream", "verify"]
