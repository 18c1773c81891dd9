"""Per-file checksum manifests: what a copy, a backup or a restore test is judged by.

A :class:`Manifest` lists every regular file and symbolic link under a folder
with its size and SHA-256 (a link: its target). Two manifests taken of the
source and of the copy are equal exactly when the copy has the same files with
the same bytes; :func:`compare` says which paths differ and how.

The manifest is taken where the data is, by one shell command
(:func:`manifest_command`: ``find`` and coreutils' ``sha256sum``, nothing to
install on a Debian host), run over SSH (:func:`remote_manifest`) or here
(:func:`local_manifest`). ``sha256sum`` hashes files in parallel batches
(``xargs -P``), so a manifest costs about what ``sha256sum`` alone costs on
the same files.

The text form (:meth:`Manifest.text`) is one line per entry, sorted by path,
``<sha256> <size> <kind> <path>``, and is what a backup stores beside its data
(``.homelab-manifest``) and what the restore test compares against.
"""

from __future__ import annotations

import hashlib
import shlex
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from homelab_lib.core.errors import ManifestError, SshError
from homelab_lib.hosts.ssh import run_command

if TYPE_CHECKING:
    import paramiko

#: The file a backup stores its manifest in, at the top of the backed-up folder's copy.
MANIFEST_NAME = ".homelab-manifest"

_HASHES = "--homelab-hashes--"
_PARALLEL = 4  # xargs batches hashed at once: sha256sum is CPU-bound, one process per core or so
_BIG_KIB = 1024  # files bigger than this are hashed one per process


@dataclass(frozen=True)
class Entry:
    """One file (kind ``f``) or symbolic link (kind ``l``: its target's hash) of a manifest."""

    path: str
    size: int
    sha256: str
    kind: str = "f"

    def line(self) -> str:
        return f"{self.sha256} {self.size} {self.kind} {_escape(self.path)}"


@dataclass(frozen=True)
class Manifest:
    """Every file under a folder, by path (relative, no leading ``./``)."""

    entries: Mapping[str, Entry] = field(default_factory=dict)

    @property
    def files(self) -> int:
        return sum(1 for e in self.entries.values() if e.kind == "f")

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries.values() if e.kind == "f")

    def text(self) -> str:
        return "".join(self.entries[p].line() + "\n" for p in sorted(self.entries))

    @property
    def sha256(self) -> str:
        """One hash over the whole manifest: equal manifests have equal hashes."""
        return hashlib.sha256(self.text().encode()).hexdigest()

    def without(self, *paths: str) -> Manifest:
        """The manifest less some paths (e.g. the stored manifest file itself)."""
        return Manifest({p: e for p, e in self.entries.items() if p not in paths})

    @classmethod
    def of(cls, entries: Iterable[Entry]) -> Manifest:
        return cls({e.path: e for e in entries})

    @classmethod
    def parse(cls, text: str, *, where: str) -> Manifest:
        """Read the text form back.

        Raises:
            ManifestError: a line is not ``<sha256> <size> <kind> <path>`` (names the line).
        """
        entries: list[Entry] = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line:
                continue
            parts = line.split(" ", 3)
            if len(parts) != 4 or len(parts[0]) != 64 or not parts[1].isdigit() or parts[2] not in ("f", "l"):
                raise ManifestError(
                    f"manifest line {number} is not '<sha256> <size> <kind> <path>'",
                    where=f"{where}:{number}",
                    hint="the manifest was altered or truncated; take a new backup",
                )
            entries.append(Entry(_unescape(parts[3]), int(parts[1]), parts[0], parts[2]))
        return cls.of(entries)


def _escape(path: str) -> str:
    """A path on one line: backslash and newline escaped as sha256sum escapes them."""
    return path.replace("\\", "\\\\").replace("\n", "\\n")


def _unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            out.append("\n" if text[i + 1] == "n" else text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


@dataclass(frozen=True)
class ManifestDiff:
    """How two manifests differ: paths only in the first, only in the second, and changed."""

    missing: tuple[str, ...]
    extra: tuple[str, ...]
    changed: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.changed)

    def summary(self, limit: int = 5) -> str:
        if self.ok:
            return "identical"
        parts = []
        for label, paths in (("missing", self.missing), ("extra", self.extra), ("changed", self.changed)):
            if paths:
                shown = ", ".join(paths[:limit]) + (f" and {len(paths) - limit} more" if len(paths) > limit else "")
                parts.append(f"{len(paths)} {label} ({shown})")
        return "; ".join(parts)


def compare(expected: Manifest, actual: Manifest) -> ManifestDiff:
    """Which paths of ``expected`` are missing from ``actual``, extra in it, or differ."""
    a, b = expected.entries, actual.entries
    return ManifestDiff(
        missing=tuple(sorted(set(a) - set(b))),
        extra=tuple(sorted(set(b) - set(a))),
        changed=tuple(sorted(p for p in set(a) & set(b) if a[p] != b[p])),
    )


def manifest_command(folder: str) -> str:
    """The shell command that prints the raw manifest of ``folder`` (parsed by :func:`parse_raw`).

    Exit code 3 when the folder does not exist. Runs under ``sh`` with find, xargs and sha256sum
    (coreutils >= 8.32 for ``-z``: names are never escaped), and openssl for big files where present.
    """
    q = shlex.quote(folder)
    # Each parallel batch writes its own file, concatenated at the end: sha256sum's buffered writes
    # to one shared pipe interleave mid-record once the output passes a pipe's atomic size.
    # Files over 1 MiB are hashed one per process, the rest 256 per process: batches of mixed sizes
    # leave the cores idle while one batch that drew the big files hashes them alone. A big file is
    # hashed by openssl where the host has it (its SHA-256 uses the CPU's SHA instructions, about
    # 2.5x coreutils'); it reads the file on stdin, and the record is printed from the file's name as given.
    batch = """'f=$(mktemp "$0/b.XXXXXX") && exec sha256sum -z -- "$@" > "$f"'"""
    one = (
        """'f=$(mktemp "$0/b.XXXXXX") && h=$(openssl dgst -sha256 -r < "$1") && """
        """printf "%s  %s\\000" "${h%% *}" "$1" > "$f"'"""
    )
    return (
        f"cd -- {q} 2>/dev/null || exit 3; "
        "t=$(mktemp -d) || exit 4; trap 'rm -rf -- \"$t\"' EXIT; "
        f"one={batch}; command -v openssl >/dev/null 2>&1 && one={one}; "
        r"find . \( -type f -o -type l \) -printf '%y\0%s\0%P\0%l\0' && "
        f"printf '%s\\0' {_HASHES} && "
        f'find . -type f -size +{_BIG_KIB}k -print0 | xargs -0 -r -n 1 -P {_PARALLEL} sh -c "$one" "$t" && '
        f'find . -type f ! -size +{_BIG_KIB}k -print0 | xargs -0 -r -n 256 -P {_PARALLEL} sh -c {batch} "$t" && '
        'find "$t" -type f -exec cat -- {} +'
    )


def parse_raw(raw: str, *, where: str) -> Manifest:
    """Turn :func:`manifest_command`'s output into a manifest."""
    head, sep, tail = raw.partition(_HASHES + "\0")
    if not sep:
        raise ManifestError("the manifest command's output was cut short", where=where, hint="run it again")
    fields = head.split("\0")
    hashes: dict[str, str] = {}
    for item in tail.split("\0"):
        if item:
            digest, _, name = item.partition("  ")
            hashes[name.removeprefix("./")] = digest
    entries: list[Entry] = []
    for i in range(0, len(fields) - 1, 4):
        kind, size, path, target = fields[i : i + 4]
        if kind == "l":
            entries.append(Entry(path, len(target), hashlib.sha256(target.encode()).hexdigest(), "l"))
        elif path in hashes:
            entries.append(Entry(path, int(size), hashes[path]))
        else:  # removed between the two passes: a folder that is being written to
            raise ManifestError(
                f"{path} changed while the manifest was taken",
                where=where,
                hint="stop whatever writes to the folder (the service) and take it again",
            )
    return Manifest.of(entries)


def remote_manifest(client: paramiko.SSHClient, folder: str, *, where: str, timeout: float = 3600.0) -> Manifest:
    """The manifest of ``folder`` on the host ``client`` is connected to.

    Raises:
        ManifestError: the folder does not exist or the command failed (its stderr, last lines).
        SshError: the connection broke or the command ran past ``timeout``.
    """
    result = run_command(client, manifest_command(folder), timeout=timeout, where=where)
    return _checked(result.exit_code, result.stdout, result.stderr, folder, where)


def local_manifest(folder: Path | str, *, timeout: float = 3600.0) -> Manifest:
    """The manifest of a folder on this machine, by the same command as on a remote host."""
    where = f"{folder} (this machine)"
    try:
        done = subprocess.run(
            ["sh", "-c", manifest_command(str(folder))],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise SshError(f"the manifest of {folder} took longer than {timeout:.0f} s", where=where) from e
    return _checked(
        done.returncode,
        done.stdout.decode(errors="replace"),  # as ssh.run_command decodes: the same names both sides
        done.stderr.decode("utf-8", "replace"),
        str(folder),
        where,
    )


def _checked(code: int, stdout: str, stderr: str, folder: str, where: str) -> Manifest:
    if code == 3:
        raise ManifestError(f"folder {folder} does not exist", where=where, hint="check the path (volume, PVC)")
    if code != 0:
        last = " | ".join(stderr.strip().splitlines()[-3:])
        raise ManifestError(f"taking the manifest of {folder} failed (exit {code}): {last}", where=where)
    return parse_raw(stdout, where=where)
