"""The audit archive: executed notebooks and a hash-chained index of every run.

Layout of an archive folder::

    DIR/YYYY/MM/DD/<HHMMSSZ>-<notebook>-<ok|failed>.ipynb   the executed notebooks
    DIR/index.jsonl                                         one JSON record per run, in order
    DIR/HEAD                                                sha256 of the last record and the count

Each record holds the sha256 of its archived notebook and ``prev``, the sha256
of the previous record's line, so altering or removing a notebook or a record
breaks the chain; ``HEAD`` catches records cut from the end. :func:`verify`
recomputes it all and names the first thing that does not match.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from homelab_lib.errors import AuditError

GENESIS = "0" * 64
INDEX = "index.jsonl"
HEAD = "HEAD"
OPTIONAL = ("plan_hash", "plan", "approves")  # written only when set: older records keep their seals


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
        plan_hash: sha256 of the plan the notebook showed (:func:`homelab_lib.contract.show_plan`), '' if none.
        plan: that plan's canonical document (changes, summary), None if none.
        approves: the run whose reviewed plan this run applied (``homelab run --approve RUN_ID``), '' if none.

    The last three are written only when set, so records made before they existed keep their
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

    def fields(self) -> dict[str, Any]:
        """The record's fields in order; the optional ones (plan_hash, plan, approves) only when set."""
        return {k: v for k, v in asdict(self).items() if k not in OPTIONAL or v not in (None, "")}

    def expected_seal(self) -> str:
        """The seal this record's fields call for."""
        return sha256_bytes(json.dumps({**self.fields(), "seal": ""}, ensure_ascii=False).encode())

    def sealed(self) -> Record:
        return replace(self, seal=self.expected_seal())

    def line(self) -> bytes:
        """The record as written in the index (one JSON line, keys in field order)."""
        return (json.dumps(self.fields(), ensure_ascii=False) + "\n").encode()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Archive:
    """An archive folder: where executed notebooks and the index live."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.index = self.root / INDEX
        self.head = self.root / HEAD

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.root / ".index.lock"), timeout=60)
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
            The record as written: chained, sealed, with a run id unique in the archive.
        """
        with self._lock():
            if notebook is not None:
                path = self.path_for(start_utc, stem, record.status)
                path.parent.mkdir(parents=True, exist_ok=True)
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
            line = chained.line()
            with self.index.open("ab") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            _write_atomic(self.head, f"{sha256_bytes(line)} {count + 1}\n".encode())
            return chained

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

    def verify(self) -> list[str]:
        """Recompute every record's seal, the chain, every notebook's hash and HEAD (under the index lock).

        Returns:
            Problems in archive order (empty when all is intact); the first is the first break.
        """
        with self._lock():
            return self._verify()

    def _verify(self) -> list[str]:
        problems: list[str] = []
        prev = GENESIS
        count = 0
        listed: set[Path] = set()
        for i, raw in enumerate(self._lines(), 1):
            count = i
            where = f"{self.index}:{i}"
            try:
                rec = Record(**json.loads(raw))
            except (ValueError, TypeError):
                problems.append(f"{where}: record {i} is not a valid record: the index was altered")
                prev = sha256_bytes(raw)
                continue
            if rec.seal != rec.expected_seal():
                problems.append(f"{where}: record {i} (run {rec.run}) was altered: its seal does not match")
            elif rec.prev != prev:
                problems.append(
                    f"{where}: record {i} (run {rec.run}) does not chain to the record before it: "
                    "a record before it was removed or altered"
                )
            prev = sha256_bytes(raw)
            if not rec.archived:
                continue
            path = self.root / rec.archived
            listed.add(path.resolve())
            if not path.exists():
                problems.append(f"{path}: archived notebook of run {rec.run} (record {i}) was removed")
            elif sha256_file(path) != rec.sha256:
                problems.append(f"{path}: archived notebook of run {rec.run} (record {i}) was altered")
        if count or self.head.exists():
            try:
                head_hash, head_count = self.head.read_text().split()
                expected = int(head_count)
            except (OSError, ValueError):
                problems.append(f"{self.head}: missing or unreadable; the index's end cannot be checked")
            else:
                if expected != count or head_hash != prev:
                    problems.append(
                        f"{self.index}: the index ends at record {count} but HEAD says {head_count}: "
                        "records were removed from or altered at its end"
                    )
        for path in sorted(self.root.rglob("*.ipynb")):
            if path.resolve() not in listed:
                problems.append(f"{path}: a notebook in the archive that no record lists")
        return problems
