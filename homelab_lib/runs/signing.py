"""Signing the audit archive with SSH keys (``ssh-keygen -Y``), and the signer's witness.

With ``audit.signing_key`` in the parameters, two things are signed, in the namespace ``homelab-audit``:

- every record, as it is appended: the statement :meth:`Record.statement
  <homelab_lib.runs.archive.Record.statement>` (``homelab-audit record N``, the run, its start time,
  ``prev`` and ``seal``), so a signature names the record's place in the chain, its time and what it
  says; kept in the record's ``sig``. A record appended by someone without the key has none, and stays
  reported whatever runs after it;
- HEAD (``<sha256> <count>``), into ``HEAD.sig``: a tail cut off shows.

Signatures cannot show a rollback on their own: an older copy of the archive carries its own valid
HEAD, HEAD.sig and record signatures. So the signer keeps a *witness*, a file outside the archive
(``audit.witness``; by default ``$XDG_STATE_HOME/homelab/audit-witness.json``, mode 600): for each
archive it signed, the last head it signed (or accepted with ``homelab audit repair --accept``) and
when. A run refuses, and ``homelab audit verify -f PARAMS`` reports, an archive that no longer holds
that head at its place.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock

from homelab_lib.core.clock import SYSTEM, Clock
from homelab_lib.core.errors import AuditError
from homelab_lib.core.secrets import SecretRef, UnresolvedSecret

if TYPE_CHECKING:
    from homelab_lib.inventory.model import Audit

NAMESPACE = "homelab-audit"  # the ssh-keygen -Y signature namespace
BEGIN = "-----BEGIN SSH SIGNATURE-----"
END = "-----END SSH SIGNATURE-----"
OWN_KEY = "homelab-audit-signer"  # the identity of the signing key's own public half, when no allowed signers are named
PUBLIC_KEY_PREFIXES = ("ssh-", "ecdsa-", "sk-")


def compact(signature: bytes) -> str:
    """An armored SSH signature as one line (its base64 body), for a JSON record."""
    lines = signature.decode().strip().splitlines()
    return "".join(line.strip() for line in lines if line.strip() not in (BEGIN, END))


def armored(body: str) -> bytes:
    """The armored SSH signature of a :func:`compact` body, as ``ssh-keygen -Y verify`` reads it."""
    return ("\n".join([BEGIN, *textwrap.wrap(body, 70), END]) + "\n").encode()


def default_witness() -> Path:
    """Where the signer's witness is unless ``audit.witness`` says: ``$XDG_STATE_HOME/homelab/audit-witness.json``."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "homelab" / "audit-witness.json"


@dataclass(frozen=True)
class Witnessed:
    """What the witness holds for one archive: the head this machine last signed or accepted, and when."""

    hash: str
    count: int
    at: str

    def short(self) -> str:
        return f"record {self.count} ({self.hash[:12]}...), at {self.at}"


@dataclass(frozen=True)
class Witness:
    """The signer's witness file: archive folder -> :class:`Witnessed` (JSON, mode 600, in a 700 folder)."""

    path: Path

    def get(self, root: Path) -> Witnessed | None:
        """What the witness holds for the archive at root (None: it never signed that archive here).

        Raises:
            AuditError: the witness file is there but unreadable.
        """
        entry = self._read().get(str(root.resolve()))
        if entry is None:
            return None
        try:
            return Witnessed(str(entry["hash"]), int(entry["count"]), str(entry["at"]))
        except (KeyError, TypeError, ValueError):
            raise AuditError(
                f"the witness's entry for {root} is not valid", where=str(self.path), hint="restore it from a backup"
            ) from None

    def put(self, root: Path, hash_: str, count: int, clock: Clock = SYSTEM) -> None:
        """Record that the archive at root now ends, as this machine signed it, at record count (hash_)."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with FileLock(str(self.path) + ".lock", timeout=60):
            data = self._read()
            at = clock.now().isoformat(timespec="seconds")
            data[str(root.resolve())] = {"hash": hash_, "count": count, "at": at}
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.partial")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise AuditError(
                f"the signer's witness cannot be read ({e})", where=str(self.path), hint="restore it from a backup"
            ) from None
        if not isinstance(data, dict):
            raise AuditError("the signer's witness is not a JSON object", where=str(self.path))
        return data


@dataclass(frozen=True)
class Signing:
    """How the archive is signed and checked with SSH keys (``ssh-keygen -Y``), from the parameters' ``audit:``.

    Attributes:
        key: the signing key (a reference; ``file:`` a private key without passphrase, or a public key
            whose private half is in ssh-agent); None: runs do not sign.
        allowed_signers: the allowed-signers file (``identity keytype key`` lines); None: signatures are
            checked with the signing key's own public half, if there is a key.
        identity: the signer's identity in that file.
        witness: the signer's witness (None: no rollback check).
    """

    key: SecretRef | None = None
    allowed_signers: Path | None = None
    identity: str = ""
    witness: Witness | None = None

    def sign(self, data: bytes, where: str, what: str = "HEAD") -> bytes:
        """The SSH signature of data (namespace ``homelab-audit``); what names data in an error.

        Raises:
            AuditError: the key does not resolve or ssh-keygen refuses it.
        """
        assert self.key is not None
        with tempfile.TemporaryDirectory(prefix="homelab-sign-") as tmp:
            key_path = self._key_file(Path(tmp), where)
            done = _ssh_keygen(["-Y", "sign", "-f", str(key_path), "-n", NAMESPACE], data, where)
        if done.returncode != 0 or not done.stdout.startswith(BEGIN.encode()):
            why = _last_line(done.stderr)
            raise AuditError(f"ssh-keygen could not sign {what} with {self.key}: {why}", where=where, hint=_KEY_HINT)
        return done.stdout

    def _key_file(self, tmp: Path, where: str) -> Path:
        """A file ssh-keygen can take with -f for the key (the key's own file for ``file:``)."""
        assert self.key is not None
        try:
            if self.key.kind == "file":
                self.key.reveal()  # exists and is readable, or a clear error
                return self.key.path
            key_path = tmp / "key"
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(self.key.reveal().rstrip("\n") + "\n")
            return key_path
        except UnresolvedSecret as e:
            raise AuditError(
                f"the signing key {self.key} does not resolve: {e.message}", where=where, hint=_KEY_HINT
            ) from None

    def public_key(self, where: str) -> str:
        """The signing key's public half (``keytype base64``).

        Raises:
            AuditError: the key does not resolve, or ssh-keygen cannot read it.
        """
        assert self.key is not None
        with tempfile.TemporaryDirectory(prefix="homelab-sign-") as tmp:
            key_path = self._key_file(Path(tmp), where)
            text = key_path.read_text(errors="replace").strip()
            if text.startswith(PUBLIC_KEY_PREFIXES):
                return " ".join(text.split()[:2])
            done = _ssh_keygen(["-y", "-f", str(key_path)], b"", where)
        if done.returncode != 0:
            raise AuditError(
                f"ssh-keygen could not read the public half of {self.key}: {_last_line(done.stderr)}",
                where=where,
                hint=_KEY_HINT,
            )
        return " ".join(done.stdout.decode().split()[:2])

    @property
    def checks(self) -> bool:
        """Signatures can be checked: allowed signers are named, or there is a key to check with."""
        return self.allowed_signers is not None or self.key is not None

    @property
    def signer(self) -> str:
        """Whose signatures are checked, in words."""
        if self.allowed_signers is not None:
            return f"{self.identity} (allowed signers {self.allowed_signers})"
        return f"the signing key {self.key}"

    @contextlib.contextmanager
    def checker(self, where: str) -> Iterator[Checker]:
        """A checker of signatures: by ``identity`` in the allowed signers, or else by the key's own public half.

        Raises:
            AuditError: there is neither; or the key's public half cannot be read.
        """
        if self.allowed_signers is not None:
            yield Checker(self.allowed_signers, self.identity)
            return
        if self.key is None:
            raise AuditError("nothing to check signatures with", where=where, hint="name audit.allowed_signers")
        line = f"{OWN_KEY} {self.public_key(where)}\n"
        with tempfile.TemporaryDirectory(prefix="homelab-verify-") as tmp:
            allowed = Path(tmp) / "allowed_signers"
            allowed.write_text(line)
            yield Checker(allowed, OWN_KEY)


_KEY_HINT = (
    "audit.signing_key must name an SSH private key without passphrase (mode 600), or the public "
    "key of one loaded in ssh-agent"
)


@dataclass(frozen=True)
class Checker:
    """Checks signatures against one allowed-signers file and identity."""

    allowed_signers: Path
    identity: str

    def check(self, data: bytes, signature: bytes) -> str | None:
        """None when signature (armored) is a good signature of data by identity; else what is wrong."""
        with tempfile.TemporaryDirectory(prefix="homelab-verify-") as tmp:
            sig = Path(tmp) / "sig"
            sig.write_bytes(signature)
            argv = ["-Y", "verify", "-f", str(self.allowed_signers), "-I", self.identity, "-n", NAMESPACE]
            done = _ssh_keygen([*argv, "-s", str(sig)], data, str(self.allowed_signers))
        if done.returncode == 0:
            return None
        return _last_line(done.stderr) or f"ssh-keygen -Y verify exited {done.returncode}"


def signing_of(audit: Audit | None) -> Signing:
    """The signing settings of an inventory's ``audit:`` section (none: no signing, no check, no witness)."""
    if audit is None:
        return Signing()
    witness = Witness(audit.witness or default_witness()) if audit.signing_key or audit.allowed_signers else None
    return Signing(audit.signing_key, audit.allowed_signers, audit.identity or "", witness)


def _ssh_keygen(args: list[str], data: bytes, where: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(  # its own session: a key that wants a passphrase fails instead of prompting
            ["ssh-keygen", *args], input=data, capture_output=True, timeout=60, start_new_session=True, check=False
        )
    except FileNotFoundError:
        raise AuditError(
            "ssh-keygen is not installed", where=where, hint="install openssh-client (ssh-keygen signs the archive)"
        ) from None
    except subprocess.TimeoutExpired:
        raise AuditError("ssh-keygen did not answer within 60 s", where=where, hint="is ssh-agent stuck?") from None


def _last_line(text: bytes) -> str:
    lines = [line for line in text.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


__all__ = [
    "NAMESPACE",
    "Checker",
    "Signing",
    "Witness",
    "Witnessed",
    "armored",
    "compact",
    "default_witness",
    "signing_of",
]
