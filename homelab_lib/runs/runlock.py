"""The run lock: one run at a time against one homelab, on this machine.

The lock is an ``flock`` on ``<folder>/<homelab>.lock``; ``<folder>/<homelab>.holder``
says who holds it (notebook, pid, since when), for the message a second run gets.
Its scope is one machine: two machines running against the same homelab do not
see each other's locks.

The folder is private: made mode 700 (``$XDG_RUNTIME_DIR/homelab-locks-<uid>``, or
under the temporary folder). A folder that is not this user's, that others may
write to, or that is a symbolic link is refused, and neither the lock nor the
holder file is ever opened through a symbolic link: in a shared ``/tmp`` another
user could otherwise pre-make the folder and point the files at something of
yours to overwrite.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import pwd
import stat
from collections.abc import Iterator
from pathlib import Path

from homelab_lib.core.errors import LockHeld, LockUnsafe

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _owner(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def private_folder(folder: Path) -> Path:
    """Make folder (mode 700) or check that the one there is private to this user.

    Raises:
        LockUnsafe: it is a symbolic link or not a folder, belongs to another user, or others may write to it.
    """
    with contextlib.suppress(FileExistsError):
        folder.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(folder, 0o700)
    info = os.lstat(folder)
    fix = f"remove it (rm -r {folder}) and run again: it is made anew, mode 700"
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        what = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a folder"
        raise LockUnsafe(f"the run-lock folder is {what}; refusing to use it", where=str(folder), hint=fix)
    if info.st_uid != os.getuid():
        raise LockUnsafe(
            f"the run-lock folder belongs to {_owner(info.st_uid)}, not to you ({_owner(os.getuid())}); "
            "refusing to use it",
            where=str(folder),
            hint=f"someone else made it: check who, then {fix}",
        )
    if info.st_mode & 0o022:
        raise LockUnsafe(
            f"others may write to the run-lock folder (mode {stat.S_IMODE(info.st_mode):04o}); refusing to use it",
            where=str(folder),
            hint=f"chmod 700 {folder}, or {fix}",
        )
    return folder


def _refuse_link(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISLNK(os.lstat(path).st_mode):
            raise LockUnsafe(
                f"{path.name} in the run-lock folder is a symbolic link; refusing to write through it",
                where=str(path),
                hint=f"remove it (rm {path}) after checking where it points ({os.readlink(path)})",
            )


def _write_holder(path: Path, text: str) -> None:
    """Write the holder file atomically, never through a link: a new file (O_EXCL, O_NOFOLLOW), then rename."""
    _refuse_link(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


@contextlib.contextmanager
def run_lock(folder: Path, name: str, holder: str) -> Iterator[None]:
    """Hold the lock of one homelab for the duration of the block.

    Args:
        folder: the lock folder (made private, or checked to be).
        name: the homelab's name (one lock per homelab).
        holder: who holds it, in words (shown to a run that finds it taken).

    Raises:
        LockHeld: another run holds it.
        LockUnsafe: the folder or a file in it is not safe to use.
    """
    private_folder(folder)
    lock_path = folder / f"{name}.lock"
    holder_path = folder / f"{name}.holder"
    _refuse_link(lock_path)
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | NOFOLLOW, 0o600)
    except OSError as e:
        if e.errno == errno.ELOOP:
            _refuse_link(lock_path)
        raise LockUnsafe(f"cannot open the lock file ({e.strerror})", where=str(lock_path), hint="") from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                _refuse_link(holder_path)
                who = holder_path.read_text().strip() or "another run"
            except FileNotFoundError:
                who = "another run"
            raise LockHeld(
                f"another run against homelab '{name}' is under way ({who})",
                where=f"this machine ({lock_path})",
                hint="wait for it to finish; runs against one homelab never overlap",
            ) from None
        try:
            _write_holder(holder_path, holder)
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                if not stat.S_ISLNK(os.lstat(holder_path).st_mode):
                    os.unlink(holder_path)
    finally:
        os.close(fd)  # releases the flock


__all__ = ["private_folder", "run_lock"]
