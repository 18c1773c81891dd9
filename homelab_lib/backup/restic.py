"""restic, run over SSH on the host where the data is: the only code that talks to restic.

The host's own ``restic`` runs against ``backups.restic_repository`` (any restic repository
string: a folder every host mounts, ``sftp:``, ``rest:``). The password is a secret reference,
revealed at the moment of the call and handed to restic through the environment: the remote
command is ``IFS= read -r RESTIC_PASSWORD; export RESTIC_PASSWORD; exec restic ...`` and the
password is the first line of its standard input, so it is on no command line (``ps``), in no
log and in no error (stderr is masked as well, for safety).

restic's failures are translated by a table of its messages (:data:`RESTIC_ERRORS`): a wrong
password is :class:`~homelab_lib.core.errors.ResticAuthFailed`, a repository that is not there
:class:`~homelab_lib.core.errors.RepositoryMissing`, anything else
:class:`~homelab_lib.core.errors.ResticError` with the exit code and the last lines.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from homelab_lib.core.errors import RepositoryMissing, ResticAuthFailed, ResticError, UnresolvedSecret
from homelab_lib.core.secrets import Redactor, SecretRef
from homelab_lib.hosts.ssh import CommandResult

RESTIC_TIMEOUT_S = 6 * 3600.0


class Host(Protocol):
    """A host reached over SSH (a :class:`~homelab_lib.hosts.docker.DockerHost` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def where(self) -> str: ...

    def run(self, command: str, timeout: float = ..., stdin: bytes = b"") -> CommandResult: ...


@dataclass(frozen=True)
class Repository:
    """A restic repository: where it is, and the reference of its password.

    Attributes:
        location: the restic repository string (``/mnt/nas/restic``, ``sftp:user@host:/path``, ``rest:...``).
        password: the password's reference (``env:NAME``/``file:PATH``).
    """

    location: str
    password: SecretRef


@dataclass(frozen=True)
class Snapshot:
    """One restic snapshot, as ``restic snapshots --json`` lists it.

    Attributes:
        id: the full id.
        short_id: the first 8 hex digits.
        time: when it was taken (aware).
        tags: its ``key=value`` tags as a mapping (tags without ``=`` map to ``""``).
        paths: the paths it holds.
        hostname: the host it was taken on.
    """

    id: str
    short_id: str
    time: datetime
    tags: Mapping[str, str] = field(default_factory=dict)
    paths: tuple[str, ...] = ()
    hostname: str = ""


@dataclass(frozen=True)
class BackupSummary:
    """What ``restic backup`` reported: the new snapshot and how much it read and added."""

    snapshot_id: str
    files: int
    bytes_processed: int
    data_added: int


def tag_args(tags: Mapping[str, str]) -> list[str]:
    """``--tag k=v`` for each tag (restic's tags hold no commas: ours are inventory names)."""
    out: list[str] = []
    for k, v in sorted(tags.items()):
        if "," in k or "," in v or " " in v:
            raise ValueError(f"tag {k}={v!r} has a comma or a space")
        out += ["--tag", f"{k}={v}"]
    return out


def _parse_time(text: str) -> datetime:
    # restic writes nanoseconds; Python keeps microseconds
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", text)
    if not m:
        return datetime.fromisoformat(text)
    frac = (m.group(2) or ".0")[:7]
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    return datetime.fromisoformat(f"{m.group(1)}{frac}{zone}")


def parse_snapshots(text: str) -> list[Snapshot]:
    """``restic snapshots --json`` -> snapshots, oldest first."""
    out = []
    for item in json.loads(text or "[]") or []:
        tags = {}
        for t in item.get("tags") or []:
            k, _, v = t.partition("=")
            tags[k] = v
        out.append(
            Snapshot(
                id=item["id"],
                short_id=item.get("short_id") or item["id"][:8],
                time=_parse_time(item["time"]),
                tags=tags,
                paths=tuple(item.get("paths") or ()),
                hostname=item.get("hostname", ""),
            )
        )
    return sorted(out, key=lambda s: s.time)


@dataclass(frozen=True)
class _Known:
    pattern: re.Pattern[str]
    error: type[ResticError]
    message: str
    hint: str


#: restic's messages -> our errors (the first that matches wins; else ResticError).
RESTIC_ERRORS: tuple[_Known, ...] = (
    _Known(
        re.compile(r"wrong password or no key found"),
        ResticAuthFailed,
        "the repository refused the password of backups.restic_password",
        "check the secret the reference points at: it must be the repository's password",
    ),
    _Known(
        re.compile(r"Is there a repository at the following location\?|repository does not exist"),
        RepositoryMissing,
        "there is no restic repository at this location",
        "check backups.restic_repository (and that the host mounts it); to create it, run with confirm=True",
    ),
    _Known(
        re.compile(r"restic: (command )?not found|exec: restic: not found|No such file or directory.*restic"),
        ResticError,
        "restic is not installed on the host",
        "add restic to the VM's packages: (packages: [restic]) and provision it, or apt-get install restic",
    ),
)


def shown(location: str) -> str:
    """A repository location for messages: a URL's ``user:password@`` is masked."""
    return re.sub(r"(://)[^/@\s]+@", r"\1***@", location)


#: The one file of a snapshot of an empty folder (restic will not save an empty snapshot of ".").
EMPTY_MARKER = ".homelab-empty"


class Restic:
    """restic on one host, against one repository.

    Args:
        host: where restic runs (the data's host).
        repo: the repository and its password's reference.
        binary: restic's command on the host.
    """

    def __init__(self, host: Host, repo: Repository, *, binary: str = "restic") -> None:
        self.host = host
        self.repo = repo
        self.binary = binary

    def __repr__(self) -> str:
        return f"Restic({self.host.name}, {shown(self.repo.location)})"

    @property
    def where(self) -> str:
        return f"{self.host.where}, restic repository {shown(self.repo.location)}"

    def _password(self) -> str:
        try:
            return self.repo.password.reveal()
        except UnresolvedSecret as e:
            raise ResticAuthFailed(
                f"backups.restic_password does not resolve: {e.message}", where=self.where, hint=e.hint
            ) from None

    def command(self, args: Sequence[str], *, cwd: str = "") -> str:
        """The remote shell command: the password and the repository (a ``rest:`` URL may hold credentials)
        are read from stdin's first two lines into restic's environment, never written here."""
        cd = f"cd -- {shlex.quote(cwd)} && " if cwd else ""
        restic = " ".join(shlex.quote(a) for a in [self.binary, *args])
        return (
            "IFS= read -r RESTIC_PASSWORD && IFS= read -r RESTIC_REPOSITORY && "
            f"export RESTIC_PASSWORD RESTIC_REPOSITORY && {cd}exec {restic}"
        )

    def run(
        self,
        args: Sequence[str],
        *,
        what: str,
        cwd: str = "",
        stdin: bytes = b"",
        timeout: float = RESTIC_TIMEOUT_S,
        check: bool = True,
    ) -> CommandResult:
        """Run ``restic -r REPO ARGS`` on the host.

        Args:
            args: restic's sub-command and arguments.
            what: what it does, for the error (``backing up docker-a/db/postgres/data``).
            cwd: folder to run it in.
            stdin: more standard input after the password line (``backup --stdin``).
            timeout: seconds.
            check: raise on a non-zero exit.

        Raises:
            ResticAuthFailed, RepositoryMissing, ResticError: by :data:`RESTIC_ERRORS`.
            SshError: the host could not be reached.
        """
        password = self._password()
        head = f"{password}\n{self.repo.location}\n".encode()
        result = self.host.run(self.command(args, cwd=cwd), timeout=timeout, stdin=head + stdin)
        if check and not result.ok:
            raise self.error(result, what)
        return result

    def error(self, result: CommandResult, what: str) -> ResticError:
        """Our error for a failed restic command, by :data:`RESTIC_ERRORS`; secrets masked."""
        location = self.repo.location
        redact = Redactor([self._password(), *([location] if shown(location) != location else [])])
        text = redact.redact(result.stderr.strip() or result.stdout.strip())
        tail = " | ".join(text.splitlines()[-4:]) or "(no output)"
        if result.exit_code == 127:
            known = RESTIC_ERRORS[-1]
            return known.error(f"{what}: {known.message}", where=self.where, hint=known.hint)
        for known in RESTIC_ERRORS:
            if known.pattern.search(text):
                return known.error(f"{what}: {known.message} ({tail})", where=self.where, hint=known.hint)
        return ResticError(
            f"{what}: restic failed (exit {result.exit_code}): {tail}",
            where=self.where,
            hint="read restic's message above; `restic check` tells whether the repository is damaged",
        )

    # ---------------------------------------------------------------- sub-commands

    def exists(self) -> bool:
        """Whether the repository is there (and the password opens it).

        Raises:
            ResticAuthFailed: it is there, but refuses the password.
        """
        try:
            self.run(["cat", "config"], what="opening the repository", timeout=300)
        except RepositoryMissing:
            return False
        return True

    def init(self) -> None:
        """``restic init``: create the repository."""
        self.run(["init"], what="creating the repository", timeout=600)

    def snapshots(self, tags: Mapping[str, str] | None = None) -> list[Snapshot]:
        """The snapshots that carry every one of ``tags``, oldest first."""
        args = ["snapshots", "--json"]
        if tags:
            args += ["--tag", ",".join(f"{k}={v}" for k, v in sorted(tags.items()))]
        return parse_snapshots(self.run(args, what="listing snapshots", timeout=600).stdout)

    def backup(self, folder: str, tags: Mapping[str, str], *, what: str) -> BackupSummary:
        """Back up the contents of ``folder`` (stored relative: a restore lands at the target's top)."""
        args = ["backup", "--json", "--host", self.host.name, *tag_args(tags), "."]
        try:
            result = self.run(args, what=what, cwd=folder)
        except ResticError as e:
            if "snapshot is empty" not in str(e):
                raise
            # restic refuses an empty "." (an unused volume, a fresh PVC): the snapshot then holds one
            # empty marker file, which the restore test leaves out of its comparison
            return self.backup_bytes(EMPTY_MARKER, b"", tags, what=what)
        return _summary(result.stdout, what)

    def backup_bytes(self, name: str, data: bytes, tags: Mapping[str, str], *, what: str) -> BackupSummary:
        """Store ``data`` as the file ``/name`` of a snapshot of its own (``backup --stdin``).

        restic 0.14 fails on an empty stdin, so empty data is stored as one newline (a manifest of an
        empty folder reads back empty: blank lines are skipped).
        """
        data = data or b"\n"
        args = ["backup", "--json", "--host", self.host.name, "--stdin", "--stdin-filename", name, *tag_args(tags)]
        return _summary(self.run(args, what=what, stdin=data).stdout, what)

    def dump(self, snapshot: str, path: str, *, what: str) -> str:
        """The text of one file of a snapshot (``restic dump``)."""
        return self.run(["dump", snapshot, path], what=what, timeout=1800).stdout

    def restore(self, snapshot: str, target: str, *, what: str) -> None:
        """``restic restore SNAPSHOT --target TARGET``."""
        self.run(["restore", snapshot, "--target", target], what=what)

    def forget(self, snapshot_ids: Sequence[str], *, what: str) -> None:
        """``restic forget`` the snapshots (no prune: their data goes at the next prune)."""
        if snapshot_ids:
            self.run(["forget", *snapshot_ids], what=what, timeout=600)

    def check(self, read_data_percent: float) -> CommandResult:
        """``restic check --read-data-subset=N%`` (never raises for a failed check: see :attr:`CommandResult.ok`)."""
        args = ["check"]
        if read_data_percent > 0:
            args.append(f"--read-data-subset={read_data_percent:g}%")
        return self.run(args, what="checking the repository", check=False)

    def find_packs(self, packs: Sequence[str]) -> list[str]:
        """The short ids of the snapshots holding data of these packs (``restic find --pack``)."""
        if not packs:
            return []
        result = self.run(["find", "--json", "--pack", *packs], what="finding the snapshots of packs", check=False)
        found: set[str] = set()
        for line in result.stdout.splitlines():
            line = line.strip()
            if not line.startswith(("[", "{")):
                continue
            try:
                data = json.loads(line)
            except ValueError:
                continue
            for item in data if isinstance(data, list) else [data]:
                if isinstance(item, dict) and item.get("snapshot"):
                    found.add(str(item["snapshot"])[:8])
        found.update(m[:8] for m in re.findall(r"snapshot ([0-9a-f]{8,64})", result.stdout))
        return sorted(found)

    def stats(self) -> dict[str, Any]:
        """``restic stats --json --mode raw-data``: the repository's size on disk."""
        out = self.run(["stats", "--json", "--mode", "raw-data"], what="reading the repository's size", timeout=1800)
        data = json.loads(out.stdout.strip().splitlines()[-1]) if out.stdout.strip() else {}
        return dict(data)


def _summary(stdout: str, what: str) -> BackupSummary:
    for line in reversed(stdout.strip().splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("message_type") == "summary":
            return BackupSummary(
                snapshot_id=str(data["snapshot_id"]),
                files=int(data.get("total_files_processed", 0)),
                bytes_processed=int(data.get("total_bytes_processed", 0)),
                data_added=int(data.get("data_added", 0)),
            )
    raise ResticError(f"{what}: restic's output has no summary line", hint="run it by hand and read its output")
