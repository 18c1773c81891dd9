"""The audit archive: executed notebooks and a hash-chained index of every run.

Layout of an archive folder::

    DIR/YYYY/MM/DD/<HHMMSSZ>-<notebook>-<ok|failed>.ipynb   the executed notebooks
    DIR/index.jsonl                                         one JSON record per run, in order
    DIR/HEAD                                                sha256 of the last record and the count
    DIR/HEAD.sig                                            HEAD signed with the operator's SSH key (optional)

Each record holds the sha256 of its archived notebook and ``prev``, the sha256
of the previous record's line, so altering or removing a notebook or a record
breaks the chain; ``HEAD`` catches records cut from the end. :meth:`Archive.verify`
recomputes it all and names the first thing that does not match.

Anchoring. Whoever can write the archive can rewrite the index and HEAD
consistently; three things catch that:

- a copy of the chain head kept elsewhere (``homelab audit head`` prints it;
  ``homelab audit verify --head VALUE`` checks the archive against it: a cut
  tail shows as missing records, a rewrite as the record where the chain no
  longer holds the anchored head);
- signatures: with ``audit.signing_key`` in the parameters, every run signs its
  record (its number, time, ``prev`` and seal: the record's ``sig``) and HEAD
  (``HEAD.sig``) with ``ssh-keygen -Y sign -n homelab-audit``; ``audit verify``
  checks them against ``audit.allowed_signers`` for ``audit.identity``, and
  reports a record without a signature (see :mod:`homelab_lib.runs.signing`);
- the signer's witness, outside the archive: the last head each machine signed.
  An older copy of the archive put back (its own HEAD and signatures valid)
  no longer holds it.

A run that stops between appending its record and writing HEAD leaves HEAD
one record behind, its last record valid. Without signing that is repaired
(HEAD rewritten) by the next run or by ``homelab audit repair``, and reported
as such, not as tampering. With a signing key, nothing is repaired by itself:
a record that is not the signer's would be signed over. A run refuses an
archive whose end is in doubt, and ``homelab audit repair --accept`` signs it
as it is, once the operator has looked (an unsigned record stays reported).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from homelab_lib.core.errors import AuditError
from homelab_lib.core.plan import document_sha256
from homelab_lib.runs.signing import Checker, Signing, armored, compact

GENESIS = "0" * 64
INDEX = "index.jsonl"
HEAD = "HEAD"
OPTIONAL = ("plan_hash", "plan", "approves", "sig")  # written only when set: older records keep their seals
HEAD_SIG = "HEAD.sig"
ACCEPT_HINT = (
    "look into it with `homelab audit verify -f PARAMS` (and `--head` with a copy kept elsewhere); once you know "
    "why, `homelab audit repair --accept -f PARAMS` signs the index's end as it is (a record without a signature "
    "stays reported)"
)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Record:
    """One run in the audit index.

    Attributes:
        run: the run id, ``YYYYMMDDTHHMMSSZ-<notebook>`` (unique in the archive).
        notebook: the notebook that ran (path as given).
        homelab: the inventory's name, or '' when the run had no parameter file.
        parameter_files: the homelab parameter files the run used.
        parameters: the notebook parameters, secrets masked.
        start: UTC start time, ISO 8601.
        duration_s: wall time of the run.
        status: ``ok``, ``failed`` (a cell raised) or ``leak`` (a secret was found; not archived).
        failed_cell: index of the failing cell, if any.
        error: ``ename: evalue`` of the failure, secrets masked.
        archived: path of the executed notebook relative to the archive, '' for a leak.
        sha256: sha256 of the archived notebook, '' for a leak.
        user: who ran it.
        host: where it ran.
        prev: sha256 of the previous record's line (GENESIS for the first).
        seal: sha256 of this record's own fields (with seal empty), so an edited record is named itself.
        plan_hash: sha256 of the plan the notebook showed (:func:`homelab_lib.core.contract.show_plan`), '' if none.
        plan: that plan's canonical document (changes, summary), None if none.
        approves: the run whose reviewed plan this run applied (``homelab run --approve RUN_ID``), '' if none.
        sig: the signer's SSH signature of :meth:`statement` (base64, see :mod:`homelab_lib.runs.signing`),
            '' when the run was not signed; not covered by the seal (it signs the seal).

    The last four are written only when set, so records made before they existed keep their
    lines and seals.
    """

    run: str
    notebook: str
    homelab: str
    parameter_files: list[str]
    parameters: dict[str, Any]
    start: str
    duration_s: float
    status: str
    failed_cell: int | None
    error: str
    archived: str
    sha256: str
    user: str
    host: str
    prev: str = field(default=GENESIS)
    seal: str = ""
    plan_hash: str = ""
    plan: dict[str, Any] | None = None
    approves: str = ""
    sig: str = ""

    def fields(self) -> dict[str, Any]:
        """The record's fields in order; the optional ones (plan_hash, plan, approves, sig) only when set."""
        return {k: v for k, v in asdict(self).items() if k not in OPTIONAL or v not in (None, "")}

    def expected_seal(self) -> str:
        """The seal this record's fields call for (its signature left out: that signs the seal)."""
        body = {k: v for k, v in self.fields().items() if k != "sig"}
        return sha256_bytes(json.dumps({**body, "seal": ""}, ensure_ascii=False).encode())

    def statement(self, number: int) -> bytes:
        """What the signer signs for this record, the number-th of the index: its place, time, chain and seal."""
        return (
            f"homelab-audit record {number}\nrun {self.run}\nstart {self.start}\nprev {self.prev}\nseal {self.seal}\n"
        ).encode()

    def sealed(self) -> Record:
        return replace(self, seal=self.expected_seal())

    def line(self) -> bytes:
        """The record as written in the index (one JSON line, keys in field order)."""
        return (json.dumps(self.fields(), ensure_ascii=False) + "\n").encode()


def private_dirs(path: Path) -> None:
    """Make folder path and its missing parents, each mode 700 (this user's only) whatever the umask."""
    missing = []
    at = path
    while not at.exists():
        missing.append(at)
        at = at.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=0o700)
        folder.chmod(0o700)


def _open_private(path: Path, flags: int) -> int:
    """Open (create) path for writing, mode 600 whatever the umask (an older file made wider is narrowed)."""
    fd = os.open(path, flags | os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    os.fchmod(fd, 0o600)
    return fd


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with os.fdopen(_open_private(tmp, os.O_TRUNC), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass(frozen=True)
class Head:
    """The end of the chain: the sha256 of the last record's line and how many records there are.

    Written to ``HEAD`` as ``<sha256> <count>``; :meth:`parse` also takes ``<sha256>:<count>`` and a
    bare ``<sha256>`` (count then unknown: -1).
    """

    hash: str
    count: int

    def __str__(self) -> str:
        return f"{self.hash} {self.count}"

    def short(self) -> str:
        return f"record {self.count} ({self.hash[:12]}...)" if self.count >= 0 else f"{self.hash[:12]}..."

    @classmethod
    def parse(cls, text: str) -> Head:
        """A head as printed by ``homelab audit head`` (or as written in HEAD).

        Raises:
            AuditError: not ``<sha256> <count>``, ``<sha256>:<count>`` or ``<sha256>``.
        """
        m = re.fullmatch(r"\s*([0-9a-f]{64})(?:[\s:@]+(\d+))?\s*", text)
        if not m:
            raise AuditError(
                f"{text.strip()[:80]!r} is not a chain head",
                hint="give it as `homelab audit head` prints it: <sha256> <count> (or <sha256>:<count>)",
            )
        return cls(m.group(1), int(m.group(2)) if m.group(2) else -1)


GENESIS_HEAD = Head(GENESIS, 0)


@dataclass(frozen=True)
class HeadCheck:
    """HEAD against the index.

    Attributes:
        state: ``ok``; ``behind`` (HEAD is one record behind and that record is valid: a run stopped
            between its index append and its HEAD write; repairable); ``mismatch``; ``unreadable``.
        chain: the head the index has.
        written: what HEAD says (None when missing or unreadable).
        detail: what differs, in words ('' when ok).
    """

    state: str
    chain: Head
    written: Head | None
    detail: str = ""


class Archive:
    """An archive folder: where executed notebooks and the index live."""

    def __init__(self, root: Path, signing: Signing | None = None) -> None:
        self.root = Path(root)
        self.index = self.root / INDEX
        self.head = self.root / HEAD
        self.head_sig = self.root / HEAD_SIG
        self.signing = signing or Signing()
        self._signed = self.signing.key is not None or self.signing.allowed_signers is not None

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        private_dirs(self.root)
        lock = FileLock(str(self.root / ".index.lock"), timeout=60, mode=0o600)
        try:
            lock.acquire()
        except Timeout:
            raise AuditError(
                "the archive's index is locked by another run for over a minute",
                where=str(self.root),
                hint="wait for the other run; if none runs, remove .index.lock",
            ) from None
        try:
            yield
        finally:
            lock.release()

    def path_for(self, start_utc: str, notebook: str, status: str) -> Path:
        """A new, unused path for an executed notebook.

        Args:
            start_utc: compact UTC start, ``YYYYMMDDTHHMMSSZ``.
            notebook: the notebook's stem.
            status: ``ok`` or ``failed``.
        """
        day = self.root / start_utc[0:4] / start_utc[4:6] / start_utc[6:8]
        stem = f"{start_utc[9:]}-{notebook}-{status}"
        candidate = day / f"{stem}.ipynb"
        n = 2
        while candidate.exists():
            candidate = day / f"{stem}-{n}.ipynb"
            n += 1
        return candidate

    def commit(self, record: Record, notebook: bytes | None, start_utc: str, stem: str) -> Record:
        """Archive an executed notebook (if any) and append its record, all under the index lock.

        Args:
            record: the run's record; ``archived``, ``sha256``, ``prev`` and ``seal`` are filled in here.
            notebook: the executed notebook's bytes, or None when it is not kept (a leak, a crash).
            start_utc: compact UTC start, ``YYYYMMDDTHHMMSSZ`` (names the file).
            stem: the notebook's stem.

        Returns:
            The record as written: chained, sealed, signed (with a signing key), with a run id unique in the
            archive.

        Raises:
            AuditError: the signing key could not sign; the record is written all the same, unsigned, and
                HEAD without a signature (``audit verify`` and the next run say so).
        """
        with self._lock():
            if notebook is not None:
                path = self.path_for(start_utc, stem, record.status)
                private_dirs(path.parent)
                _write_atomic(path, notebook)
                record = replace(record, archived=str(path.relative_to(self.root)), sha256=sha256_bytes(notebook))
            last = GENESIS
            count = 0
            runs = set()
            for raw in self._lines():
                last = sha256_bytes(raw)
                count += 1
                with contextlib.suppress(ValueError, KeyError):
                    runs.add(json.loads(raw)["run"])
            run = record.run
            n = 2
            while run in runs:
                run = f"{record.run}-{n}"
                n += 1
            chained = replace(record, run=run, prev=last).sealed()
            unsigned: AuditError | None = None
            if self.signing.key is not None:
                try:
                    statement = chained.statement(count + 1)
                    signature = self.signing.sign(statement, str(self.index), f"record {count + 1}")
                    chained = replace(chained, sig=compact(signature))
                except AuditError as e:
                    unsigned = e  # the run is recorded all the same
            line = chained.line()
            with os.fdopen(_open_private(self.index, os.O_APPEND), "ab") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            self._write_head(Head(sha256_bytes(line), count + 1), sign=unsigned is None)
            if unsigned is not None:
                raise unsigned
            return chained

    def _write_head(self, head: Head, *, sign: bool = True) -> None:
        """Write HEAD; with a signing key, HEAD.sig and the witness too (a signature that fails leaves none).

        Args:
            head: the index's end.
            sign: sign it (with a key); False leaves HEAD unsigned and the witness where it was.
        """
        data = f"{head}\n".encode()
        _write_atomic(self.head, data)
        if self.signing.key is None:
            return
        self.head_sig.unlink(missing_ok=True)  # never leave a signature of an older HEAD beside it
        if not sign:
            return
        _write_atomic(self.head_sig, self.signing.sign(data, str(self.head)))
        if self.signing.witness is not None and head.count:
            self.signing.witness.put(self.root, head.hash, head.count)

    def _lines(self) -> Iterator[bytes]:
        if not self.index.exists():
            return
        with self.index.open("rb") as f:
            yield from f

    def records(self) -> list[Record]:
        """Every record of the index, oldest first.

        Raises:
            AuditError: a line is not a valid record.
        """
        out = []
        for i, raw in enumerate(self._lines(), 1):
            try:
                out.append(Record(**json.loads(raw)))
            except (ValueError, TypeError) as e:
                raise AuditError(
                    f"record {i} is not a valid record ({e})",
                    where=f"{self.index}:{i}",
                    hint="the index was altered; restore it from a backup",
                ) from None
        return out

    def find(self, run: str) -> Record:
        """The record whose run id is run, or starts with it uniquely; or the n-th with ``#n``.

        Raises:
            AuditError: no such run, or the prefix is ambiguous.
        """
        records = self.records()
        if run.startswith("#") and run[1:].isdigit():
            n = int(run[1:])
            if 1 <= n <= len(records):
                return records[n - 1]
        exact = [r for r in records if r.run == run]
        if exact:
            return exact[0]
        matches = [r for r in records if r.run.startswith(run)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise AuditError(f"no run '{run}' in the archive", where=str(self.index), hint="see `homelab audit list`")
        names = ", ".join(r.run for r in matches[:5])
        raise AuditError(f"'{run}' matches {len(matches)} runs ({names}...)", hint="give more of the run id")

    def check_head(self) -> HeadCheck:
        """HEAD against the index (under the index lock)."""
        with self._lock():
            return self._head_check()

    def _head_check(self) -> HeadCheck:
        lines = list(self._lines())
        hashes = [sha256_bytes(raw) for raw in lines]
        n = len(hashes)
        chain = Head(hashes[-1], n) if n else GENESIS_HEAD
        written: Head | None = None
        if self.head.exists():
            try:
                written = Head.parse(self.head.read_text())
            except (OSError, AuditError):
                written = None
            if written is not None and written.count < 0:
                written = None
        elif not n:
            return HeadCheck("ok", chain, None)
        if written == chain:
            return HeadCheck("ok", chain, written)
        before = Head(hashes[-2], n - 1) if n >= 2 else GENESIS_HEAD
        missing = not self.head.exists()  # a first run that stopped before writing HEAD at all
        if n and (written == before or (missing and n == 1)) and self._valid_last(lines, hashes):
            run = _run_of(lines[-1])
            return HeadCheck(
                "behind",
                chain,
                written,
                f"{self.head}: HEAD is one record behind the index: record {n} (run {run}) is valid but HEAD "
                f"was not written after it"
                + (
                    " (a run stopped in between, or someone without the signing key appended it): look into it, "
                    "then `homelab audit repair --accept -f PARAMS` signs it"
                    if self._signed
                    else " (a run stopped in between; this is not tampering): `homelab audit repair`, or the next "
                    "run, brings HEAD up to date"
                ),
            )
        if written is None:
            return HeadCheck(
                "unreadable", chain, None, f"{self.head}: missing or unreadable; the index's end cannot be checked"
            )
        if written.count > n:
            detail = (
                f"{self.index}: the index ends at record {n} but HEAD says {written.count}: records were removed "
                f"from or altered at its end: expected record {written.count} ({written.hash[:12]}...), found the "
                f"index ending at {chain.short()}: {written.count - n} record(s) missing"
            )
        elif written.count < n and written.hash == hashes[written.count - 1 if written.count else 0] and written.count:
            detail = (
                f"{self.index}: the index ends at record {n} but HEAD says {written.count}: records "
                f"{written.count + 1}-{n} were appended after HEAD was written, and not by a run (a run writes HEAD)"
            )
        else:
            found = hashes[written.count - 1] if 0 < written.count <= n else GENESIS
            detail = (
                f"{self.index}: the index ends at record {n} but HEAD says {written.count}: records were removed "
                f"from or altered at its end: expected record {written.count} to hash to {written.hash[:12]}..., "
                f"found {found[:12]}...; the record HEAD names was altered or replaced (or HEAD was)"
            )
        return HeadCheck("mismatch", chain, written, detail)

    def _valid_last(self, lines: list[bytes], hashes: list[str]) -> bool:
        """The last record is sealed, chains to the one before it, and its notebook is there, unaltered."""
        try:
            rec = Record(**json.loads(lines[-1]))
        except (ValueError, TypeError):
            return False
        prev = hashes[-2] if len(hashes) >= 2 else GENESIS
        if rec.seal != rec.expected_seal() or rec.prev != prev:
            return False
        if rec.archived:
            path = self.root / rec.archived
            return path.exists() and sha256_file(path) == rec.sha256
        return True

    def prepare(self) -> str:
        """Before a run appends to the archive: check its end; without a signing key, repair a HEAD one record behind.

        Returns:
            What was repaired ('' when nothing was).

        Raises:
            AuditError: HEAD does not match the index; or, with a signing key, the archive is not as the
                signer left it (HEAD behind or not signed, a record after the witness's head unsigned or not
                verifying, that head gone from the chain). Nothing is run onto a chain whose end is in doubt,
                and nothing is signed over it.
        """
        with self._lock():
            check = self._head_check()
            if self.signing.key is not None:
                doubts = ([check.detail] if check.state != "ok" else []) + self._trust_problems(check)
                if not doubts:
                    return ""
                raise AuditError(
                    "the archive is not as the signing key left it, so nothing was run: " + "; ".join(doubts),
                    where=str(self.root),
                    hint=ACCEPT_HINT,
                )
            if check.state == "ok":
                return ""
            if check.state == "behind":
                self._write_head(check.chain)
                return f"HEAD was one record behind; repaired: {check.chain}"
        raise AuditError(
            f"the archive's HEAD does not match its index, so nothing was run: {check.detail}",
            where=str(self.root),
            hint="look into it with `homelab audit verify` (and `--head` with a copy kept elsewhere); once you "
            "know why, `homelab audit repair --accept` makes HEAD the index's end",
        )

    def repair(self, *, accept: bool = False) -> str:
        """Bring HEAD up to date after a run stopped between its index append and its HEAD write.

        With a signing key nothing is repaired without accept: what looks like a stopped run may be a
        record appended by someone without the key, and repairing would sign it.

        Args:
            accept: also when HEAD does not match for another reason (or, with a signing key, at all): make
                HEAD the index's end, signed, and the witness's head (after looking into it; the message
                says what was accepted). A record without a signature stays reported by ``audit verify``.

        Returns:
            What was done, in words.

        Raises:
            AuditError: HEAD does not match the index for another reason (with a signing key: for any
                reason, or the archive is not as the signer left it), and accept is not given.
        """
        with self._lock():
            check = self._head_check()
            if self.signing.key is not None:
                return self._repair_signed(check, accept)
            if check.state == "ok":
                return f"HEAD matches the index ({check.chain}); nothing to repair"
            if check.state == "behind" or accept:
                self._write_head(check.chain)
                was = str(check.written) if check.written else "nothing"
                why = "it was one record behind" if check.state == "behind" else f"accepted: {check.detail}"
                return f"HEAD said {was}; it now says {check.chain} ({why})"
        raise AuditError(
            f"HEAD does not match the index for another reason than a run that stopped: {check.detail}",
            where=str(self.head),
            hint="look into it (`homelab audit verify`); once you know why, `homelab audit repair --accept` "
            "makes HEAD the index's end",
        )

    def _repair_signed(self, check: HeadCheck, accept: bool) -> str:
        doubts = ([check.detail] if check.state != "ok" else []) + self._trust_problems(check)
        if not doubts:
            return f"HEAD matches the index ({check.chain}) and the signing key vouches for it; nothing to repair"
        if not accept:
            raise AuditError(
                "with a signing key, nothing is repaired without --accept: " + "; ".join(doubts),
                where=str(self.root),
                hint=ACCEPT_HINT,
            )
        self._write_head(check.chain)
        was = str(check.written) if check.written else "nothing"
        return f"HEAD said {was}; it now says {check.chain}, signed (accepted: {'; '.join(doubts)})"

    def _trust_problems(self, check: HeadCheck) -> list[str]:
        """With a signing key: what it does not vouch for. The witness's head gone from the chain, a record
        after it unsigned or not verifying, HEAD.sig missing or not verifying (under the index lock)."""
        lines = list(self._lines())
        problems, vouched = self._witness_problems(lines)
        with self.signing.checker(str(self.index)) as checker:
            problems += self._record_signature_problems(lines, checker, vouched, check_vouched=False)
            problems += self._head_signature_problems(check, checker)
        return problems

    def problems_through(self, run: str) -> list[str]:
        """What is wrong from the first record through the record of run: seals and chain, its notebook, and
        whether its stored plan hashes to its ``plan_hash`` (under the index lock). Empty: the archive
        vouches for that record as far as the chain can."""
        with self._lock():
            prev = GENESIS
            problems: list[str] = []
            for i, raw in enumerate(self._lines(), 1):
                rec, found = self._line_problems(i, raw, prev)
                problems += found
                prev = sha256_bytes(raw)
                if rec is None or rec.run != run:
                    continue
                problems += self._notebook_problems(i, rec)
                if rec.plan is None or document_sha256(rec.plan) != rec.plan_hash:
                    problems.append(
                        f"{self.index}:{i}: record {i} (run {rec.run}): its stored plan does not hash to its "
                        f"plan_hash ({rec.plan_hash[:12]}...): the plan was altered"
                    )
                return problems
        return [*problems, f"{self.index}: no record of run {run}"]

    def verify(self, anchor: Head | None = None) -> list[str]:
        """Recompute every record's seal, the chain, every notebook's hash and HEAD (under the index lock).

        Args:
            anchor: a chain head kept elsewhere (``homelab audit head`` at some earlier time): the chain
                must still hold it, at its place.

        Returns:
            Problems in archive order (empty when all is intact); the first is the first break. Then
            HEAD; with ``signing.allowed_signers``, every record's signature (a record without one is a
            problem, unless it comes before the first signed record) and HEAD's; the witness's head (an
            archive rolled back to an older copy); the anchor.
        """
        with self._lock():
            return self._verify(anchor)

    def _verify(self, anchor: Head | None = None) -> list[str]:
        problems: list[str] = []
        prev = GENESIS
        listed: set[Path] = set()
        lines = list(self._lines())
        for i, raw in enumerate(lines, 1):
            rec, found = self._line_problems(i, raw, prev)
            problems += found
            prev = sha256_bytes(raw)
            if rec is not None and rec.archived:
                listed.add((self.root / rec.archived).resolve())
                problems += self._notebook_problems(i, rec)
        check = self._head_check()
        if check.state != "ok":
            problems.append(check.detail)
        for path in sorted(self.root.rglob("*.ipynb")):
            if path.resolve() not in listed:
                problems.append(f"{path}: a notebook in the archive that no record lists")
        witnessed, vouched = self._witness_problems(lines)
        if self.signing.allowed_signers is not None:
            with self.signing.checker(str(self.index)) as checker:
                problems += self._record_signature_problems(lines, checker, vouched, check_vouched=True)
                problems += self._head_signature_problems(check, checker)
        problems += witnessed
        if anchor is not None:
            problems += self._anchor_problems(
                anchor, [sha256_bytes(raw) for raw in lines], [_run_of(raw) for raw in lines]
            )
        return problems

    def _line_problems(self, i: int, raw: bytes, prev: str) -> tuple[Record | None, list[str]]:
        """The record on line i, and what is wrong with it: not a record, its seal, its link to prev."""
        where = f"{self.index}:{i}"
        try:
            rec = Record(**json.loads(raw))
        except (ValueError, TypeError):
            return None, [f"{where}: record {i} is not a valid record: the index was altered"]
        if rec.seal != rec.expected_seal():
            return rec, [f"{where}: record {i} (run {rec.run}) was altered: its seal does not match"]
        if rec.prev != prev:
            return rec, [
                f"{where}: record {i} (run {rec.run}) does not chain to the record before it: "
                "a record before it was removed or altered"
            ]
        return rec, []

    def _notebook_problems(self, i: int, rec: Record) -> list[str]:
        if not rec.archived:
            return []
        path = self.root / rec.archived
        if not path.exists():
            return [f"{path}: archived notebook of run {rec.run} (record {i}) was removed"]
        if sha256_file(path) != rec.sha256:
            return [f"{path}: archived notebook of run {rec.run} (record {i}) was altered"]
        return []

    def _witness_problems(self, lines: list[bytes]) -> tuple[list[str], int]:
        """The witness's head against the chain: (problems, how many records it vouches for)."""
        witness = self.signing.witness
        seen = witness.get(self.root) if witness is not None else None
        if witness is None or seen is None:
            return [], 0
        n = len(lines)
        said = f"{self.index}: the signer's witness ({witness.path}) says this machine signed {seen.short()}"
        if seen.count > n:
            return [
                f"{said}, but the index ends at record {n}: the archive was rolled back to an older copy, or "
                f"records {n + 1}-{seen.count} were cut from its end"
            ], 0
        found = sha256_bytes(lines[seen.count - 1])
        if found != seen.hash:
            return [
                f"{said}, but record {seen.count} (run {_run_of(lines[seen.count - 1])}) hashes to {found[:12]}...: "
                f"the archive was replaced by another copy, or rewritten at or before record {seen.count}"
            ], 0
        return [], seen.count

    def _record_signature_problems(
        self, lines: list[bytes], checker: Checker, vouched: int, *, check_vouched: bool
    ) -> list[str]:
        """Records without a signature, and signatures that do not verify.

        A record without a signature is reported when a signed record comes before it, or when none is
        signed (records from before signing was set up come before the first signed one). With
        check_vouched False (before a run), records up to vouched (the witness's head: this machine
        signed or accepted them) are not looked at again; with it (``verify``), every record is.
        """
        records: list[tuple[int, Record]] = []
        for i, raw in enumerate(lines, 1):
            with contextlib.suppress(ValueError, TypeError):
                records.append((i, Record(**json.loads(raw))))
        first = next((i for i, rec in records if rec.sig), 0)
        problems = []
        for i, rec in records:
            where = f"{self.index}:{i}: record {i} (run {rec.run})"
            if i <= vouched and not check_vouched:
                continue
            if not rec.sig:
                if not first or i > first:
                    problems.append(
                        f"{where} is not signed: it was appended by someone without the signing key "
                        "(or its run could not sign)"
                    )
                continue
            why = checker.check(rec.statement(i), armored(rec.sig))
            if why is not None:
                problems.append(
                    f"{where}: its signature does not verify for {self.signing.signer}: {why}; the record was "
                    "altered or moved, or signed by another key"
                )
        return problems

    def _head_signature_problems(self, check: HeadCheck, checker: Checker) -> list[str]:
        if not check.chain.count:
            return []
        if not self.head_sig.exists():
            return [
                f"{self.head_sig}: HEAD is not signed, but the parameters name a signing key or allowed signers: "
                "the signature was removed, or runs are made without audit.signing_key"
            ]
        if not self.head.exists():
            return []
        why = checker.check(self.head.read_bytes(), self.head_sig.read_bytes())
        if why is None:
            return []
        return [
            f"{self.head_sig}: HEAD's signature does not verify for {self.signing.signer}: {why}; "
            "HEAD or its signature was altered"
        ]

    def _anchor_problems(self, anchor: Head, hashes: list[str], runs: list[str]) -> list[str]:
        n = len(hashes)
        given = f"the anchored head {anchor.short()}"
        if anchor.hash == GENESIS and anchor.count in (0, -1):
            return []
        if anchor.hash in hashes:
            at = hashes.index(anchor.hash) + 1
            if anchor.count not in (-1, at):
                return [
                    f"{self.index}: {given} is record {at} of the index, not record {anchor.count}: records "
                    "before it were removed or added"
                ]
            return []
        if anchor.count > n:
            return [
                f"{self.index}: {given} is not in the chain, and the index has {n} record(s): "
                f"{anchor.count - n} record(s) are missing: records {n + 1}-{anchor.count} were cut from its end "
                "(and HEAD rewritten to match), or the chain was rewritten"
            ]
        if anchor.count > 0:
            at = anchor.count
            return [
                f"{self.index}:{at}: {given} is not in the chain: record {at} (run {runs[at - 1]}) hashes to "
                f"{hashes[at - 1][:12]}... instead: the chain diverges from the anchored copy at or before "
                f"record {at}"
            ]
        return [f"{self.index}: {given} is not in the chain: records were cut from its end or rewritten"]


def _run_of(raw: bytes) -> str:
    try:
        return str(json.loads(raw).get("run", "?"))
    except (ValueError, AttributeError):
        return "?"
