"""The homelab's hash key: one random key for every hash that covers a secret's value.

A hash of a secret that anyone can recompute is a guessing oracle: whoever reads it (a plan in the
archive, an annotation on the cluster, a container's label) tries candidate passwords offline until
one hashes the same. So every hash that covers a secret (the Compose config hash, the
``homelab.io/secrets-hash`` of a pod template, a Secret's config hash, the monitoring plan's hash of
a file that holds a token) is an HMAC-SHA256 keyed with this key, and rotating a secret still
changes the hash, so the plan still shows it.

The key is 32 random bytes (:func:`secrets.token_bytes`), written as 64 hex digits in :data:`KEY_FILE`
beside the homelab's first parameter file, mode 0600, made at its first use with ``O_CREAT|O_EXCL`` (never over a file
that is there, never through a link). It is never archived, never shown. An existing key that
others may read or write, or that is not a regular file of 64 hex digits, is refused: whoever could read
it could guess again. Deleting it is safe: a new one is made at the next run, and every hash that
covers a secret changes once (those services are redeployed, those objects applied again).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
import time
from pathlib import Path

from homelab_lib.core.errors import HashKeyUnsafe

KEY_FILE = ".homelab-hash-key"
KEY_BYTES = 32
_TEXT = 2 * KEY_BYTES  # the file: the key as hex digits
_SETTLE_S = 2.0  # how long a reader waits for a key another process is writing this moment


def key_path(folder: Path) -> Path:
    """Where the key of the homelab whose parameters are in folder is kept."""
    return folder / KEY_FILE


def _create(path: Path) -> bool:
    """Make the key: exclusive, mode 0600 before its first byte; False when a file (or link) is there."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return False
    except OSError as e:
        if os.path.lexists(path):  # there, in a folder this user may not write (a pod's read-only parameters)
            return False
        raise HashKeyUnsafe(
            f"the hash key cannot be made ({e.strerror})",
            where=str(path),
            hint="the parameters' folder must be writable by this user once, to make the key",
        ) from None
    try:
        os.fchmod(fd, 0o600)  # whatever the umask left
        os.write(fd, secrets.token_bytes(KEY_BYTES).hex().encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def _read(path: Path) -> bytes:
    """The key file as it is now: a regular file, private (a short one may be being written)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise HashKeyUnsafe(
            f"the hash key cannot be read ({e.strerror})",
            where=str(path),
            hint=f"make it readable by this user only (chmod 600 {path}), or delete it to make a new one",
        ) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise HashKeyUnsafe(
                "the hash key is not a regular file",
                where=str(path),
                hint=f"remove {path}; a new key is made at the next run",
            )
        if st.st_mode & 0o077:
            raise HashKeyUnsafe(
                f"the hash key may be read or written by others (mode {stat.S_IMODE(st.st_mode):04o}): whoever "
                "reads it can test guesses of the homelab's secrets against their hashes",
                where=str(path),
                hint=f"chmod 600 {path}; if someone may have copied it, delete it instead (a new key is made at "
                "the next run, and every hash that covers a secret changes once)",
            )
        return os.read(fd, _TEXT + 1)
    finally:
        os.close(fd)


def load_key(folder: Path) -> bytes:
    """The homelab's hash key, kept in ``folder`` (the parameters' folder); made there at its first use.

    Raises:
        HashKeyUnsafe: the key cannot be made or read, others may read or write it, or it is not a
            regular file of 64 hex digits (the message names the file and the fix).
    """
    path = key_path(folder)
    _create(path)
    deadline = time.monotonic() + _SETTLE_S
    while True:
        data = _read(path)
        if len(data) == _TEXT and all(c in b"0123456789abcdef" for c in data):
            return bytes.fromhex(data.decode())
        if len(data) >= _TEXT or time.monotonic() >= deadline:
            raise HashKeyUnsafe(
                f"the hash key is not one this toolkit made ({len(data)} bytes, not {_TEXT} hex digits)",
                where=str(path),
                hint=f"remove {path}; a new key is made at the next run (every hash that covers a secret changes once)",
            )
        time.sleep(0.05)  # another process made it a moment ago and is writing it


def keyed(key: bytes, data: bytes | str) -> str:
    """HMAC-SHA256 (hex) of data under the homelab's key: a hash of a secret nobody without the key can test."""
    raw = data.encode() if isinstance(data, str) else data
    return hmac.new(key, raw, hashlib.sha256).hexdigest()


__all__ = ["KEY_BYTES", "KEY_FILE", "key_path", "keyed", "load_key"]
