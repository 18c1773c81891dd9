"""Back up a folder on a host with restic, restore-test it, check the repository: one code path.

Every Docker volume and every PVC is "a host reached by SSH and a folder" (:class:`.Located`).

Backup (:func:`backup_target`), inside the service's hook (:mod:`.hooks`):

1. the checksum manifest of the folder is taken (:func:`homelab_lib.hosts.checksums.remote_manifest`);
2. ``restic backup`` of the folder (read only: restic opens the files for reading), tagged
   layer, host, stack, service, volume and ``kind=data``;
3. the manifest is taken again. If it differs, the service wrote during the backup: the
   snapshot is not what either manifest says, so it is forgotten and
   :class:`~homelab_lib.core.errors.SourceChanged` names the paths. Equal manifests before and
   after mean every file was the same from before restic opened it to after it closed it,
   so the manifest *is* the snapshot's content;
4. the manifest is stored in the repository as a snapshot of its own
   (``backup --stdin --stdin-filename .homelab-manifest``) tagged ``kind=manifest`` and
   ``of=<data snapshot id>``.

Restore test (:func:`restore_test`): the latest data snapshot is restored into a scratch
folder on the same host (refused inside the source), its manifest taken and compared with the
stored one; for a ``pg_dumpall`` target the dump is loaded into a scratch database container
of the service's image and a query runs; the scratch folder is removed.
"""

from __future__ import annotations

import contextlib
import posixpath
import re
import shlex
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from homelab_lib.backup.hooks import DUMP_FILE, DUMP_FOLDER, HookContext, backup_folder, hook_for
from homelab_lib.backup.restic import EMPTY_MARKER, Restic, Snapshot
from homelab_lib.backup.targets import Located, VolumeTarget
from homelab_lib.core.clock import SYSTEM, Clock
from homelab_lib.core.errors import (
    BackupError,
    CheckFailed,
    ManifestError,
    RepositoryMissing,
    RestoreTestFailed,
    SourceChanged,
)
from homelab_lib.hosts.checksums import MANIFEST_NAME, Manifest, compare, manifest_command, parse_raw
from homelab_lib.hosts.labels import RESTORE_TEST_LABEL

MANIFEST_TIMEOUT_S = 3 * 3600.0


@dataclass(frozen=True)
class BackupResult:
    """One target backed up.

    Attributes:
        target: the target.
        snapshot: the data snapshot's short id.
        manifest_snapshot: the short id of the snapshot holding its manifest.
        time: when the backup ended.
        files: files backed up.
        size_bytes: their bytes.
        data_added: bytes restic added to the repository (after deduplication).
        manifest_sha256: the hash of the stored manifest's text.
    """

    target: VolumeTarget
    snapshot: str
    manifest_snapshot: str
    time: datetime
    files: int
    size_bytes: int
    data_added: int
    manifest_sha256: str


@dataclass(frozen=True)
class DbCheck:
    """The dump loaded into a scratch database, and a query run there.

    Attributes:
        ok: the load and the query both worked.
        query: the query.
        answer: its answer (or why it did not run).
    """

    ok: bool
    query: str
    answer: str


@dataclass(frozen=True)
class RestoreResult:
    """One restore test.

    Attributes:
        target: the target.
        snapshot: the short id of the snapshot restored.
        time: when the test ended.
        ok: the restored files equal the stored manifest (and the database check passed).
        files: files restored.
        size_bytes: their bytes.
        detail: ``identical``, or what differs / why it failed.
        db: the database check (None when the target has none).
    """

    target: VolumeTarget
    snapshot: str
    time: datetime
    ok: bool
    files: int
    size_bytes: int
    detail: str
    db: DbCheck | None = None


def _where(restic: Restic, target: VolumeTarget) -> str:
    return f"{restic.host.where}, target {target.name}"


def _manifest(restic: Restic, folder: str, where: str) -> Manifest:
    result = restic.host.run(manifest_command(folder), timeout=MANIFEST_TIMEOUT_S)
    if result.exit_code == 3:
        raise ManifestError(f"folder {folder} does not exist", where=where, hint="check the volume or PVC")
    if not result.ok:
        last = " | ".join(result.stderr.strip().splitlines()[-3:])
        raise ManifestError(f"taking the manifest of {folder} failed (exit {result.exit_code}): {last}", where=where)
    return parse_raw(result.stdout, where=where)


def ensure_repository(restic: Restic, *, confirm: bool) -> bool:
    """Make sure the repository is there; create it (``restic init``) only with ``confirm``.

    Returns:
        True when it was created now.

    Raises:
        RepositoryMissing: it is not there and ``confirm`` is not set (nothing was created).
        ResticAuthFailed: it is there, but refuses the password.
    """
    if restic.exists():
        return False
    if not confirm:
        raise RepositoryMissing(
            "there is no restic repository at backups.restic_repository; nothing was created",
            where=restic.where,
            hint="check the location (is the NAS folder mounted on the host?); to create a new repository "
            "there, run with confirm=True",
        )
    restic.init()
    return True


def backup_target(
    restic: Restic, located: Located, *, engine: Any = None, clock: Clock = SYSTEM, attempts: int = 2
) -> BackupResult:
    """Back up one target now (module docstring: hook, manifest, backup, manifest again, manifest stored).

    Args:
        restic: restic on the target's host.
        located: the target and its folder.
        engine: the client hooks act through: the host's docker SDK client (a volume), the cluster's Kube (a PVC).
        clock: the clock hooks wait by and results are stamped with.
        attempts: how often a copy that changed meanwhile is tried again before giving up.

    Raises:
        HookFailed: the hook failed; no snapshot was taken.
        SourceChanged: the folder kept changing during the backup; the snapshots were forgotten.
        ResticError (and its kinds), ManifestError, SshError.
    """
    t = located.target
    where = _where(restic, t)
    folder = backup_folder(located)
    tags = {**t.tags, "kind": "data"}
    hook = hook_for(t.backup.hook, where=where)
    last: SourceChanged | None = None
    for _ in range(max(1, attempts)):
        with hook(HookContext(located, engine, clock, where)):
            before = _manifest(restic, folder, where)
            summary = restic.backup(folder, tags, what=f"backing up {t.name}")
            after = _manifest(restic, folder, where)
        if before == after:
            break
        restic.forget([summary.snapshot_id], what=f"dropping the inconsistent snapshot of {t.name}")
        diff = compare(before, after)
        last = SourceChanged(
            f"target {t.name}: {folder} changed while it was backed up ({diff.summary()}); "
            f"snapshot {summary.snapshot_id[:8]} was dropped",
            where=where,
            hint="the service writes while it runs: set its catalog entry's backup hook to stop "
            "(or a dump hook), or back it up when it is idle",
        )
    else:
        assert last is not None
        raise last
    text = before.text()
    stored = restic.backup_bytes(
        MANIFEST_NAME,
        text.encode(),
        {**t.tags, "kind": "manifest", "of": summary.snapshot_id[:8]},
        what=f"storing the manifest of {t.name}",
    )
    return BackupResult(
        t,
        summary.snapshot_id[:8],
        stored.snapshot_id[:8],
        clock.now(),
        before.files,
        before.total_bytes,
        summary.data_added,
        before.sha256,
    )


def latest(restic: Restic, target: VolumeTarget) -> Snapshot | None:
    """The target's latest data snapshot (None when it has none)."""
    snaps = restic.snapshots({**target.tags, "kind": "data"})
    return snaps[-1] if snaps else None


def latest_by_target(restic: Restic) -> dict[tuple[str, str, str, str, str], Snapshot]:
    """The latest data snapshot of every target in the repository (one listing), by its tags' values."""
    out: dict[tuple[str, str, str, str, str], Snapshot] = {}
    for snap in restic.snapshots({"kind": "data"}):
        t = snap.tags
        out[(t.get("layer", ""), t.get("host", ""), t.get("stack", ""), t.get("service", ""), t.get("volume", ""))] = (
            snap
        )
    return out


def stored_manifest(restic: Restic, target: VolumeTarget, snapshot: Snapshot | str) -> Manifest:
    """The manifest stored with a data snapshot (found and read by one ``restic dump --tag ... latest``).

    Raises:
        RestoreTestFailed: none is stored (the backup did not finish) or it cannot be read.
    """
    where = _where(restic, target)
    short = snapshot if isinstance(snapshot, str) else snapshot.short_id
    tags = {**target.tags, "kind": "manifest", "of": short}
    args = ["dump", "--tag", _tag_list(tags), "latest", "/" + MANIFEST_NAME]
    result = restic.run(args, what=f"reading the manifest of snapshot {short}", check=False)
    if result.ok:
        return Manifest.parse(result.stdout, where=f"manifest of snapshot {short}")
    if "no snapshot found" in result.stderr:
        raise RestoreTestFailed(
            f"target {target.name}: snapshot {short} has no stored manifest",
            where=where,
            hint="the backup did not finish; take a new one",
        )
    e = restic.error(result, f"reading the manifest of snapshot {short}")
    raise RestoreTestFailed(
        f"target {target.name}: the manifest of snapshot {short} cannot be read: {e.message}",
        where=where,
        hint="run restic check; the repository may be damaged",
    ) from e


def _inside(inner: str, outer: str) -> bool:
    inner, outer = inner.rstrip("/") or "/", outer.rstrip("/") or "/"
    return inner == outer or inner.startswith(outer + "/") or outer == "/"


def _realpath(restic: Restic, path: str) -> str:
    result = restic.host.run(f"realpath -m -- {shlex.quote(path)}", timeout=60)
    return result.stdout.strip() if result.ok and result.stdout.strip() else posixpath.normpath(path)


def scratch_folder(restic: Restic, located: Located, scratch_root: str, snapshot: str) -> str:
    """The scratch folder a restore test of ``snapshot`` uses under ``scratch_root``.

    Raises:
        RestoreTestFailed: it would be inside the source (or hold it); nothing is restored.
    """
    t = located.target
    scratch = posixpath.join(scratch_root, f"{t.slug}-{snapshot}-{uuid.uuid4().hex[:6]}")
    real_scratch, real_source = _realpath(restic, scratch), _realpath(restic, located.folder)
    if _inside(real_scratch, real_source) or _inside(real_source, real_scratch):
        raise RestoreTestFailed(
            f"target {t.name}: the scratch folder {real_scratch} is inside the source {real_source} "
            "(or holds it); refusing to restore there",
            where=_where(restic, t),
            hint="set backups.restore_scratch to a folder outside every volume",
        )
    return real_scratch


def restore_test(
    restic: Restic,
    located: Located,
    *,
    scratch_root: str,
    engine: Any = None,
    clock: Clock = SYSTEM,
    snapshot: Snapshot | None = None,
    db_timeout_s: float = 120.0,
) -> RestoreResult:
    """Restore the target's latest snapshot into scratch on its host and compare with the stored manifest.

    Never writes the source. The scratch folder is removed afterwards.

    Args:
        restic: restic on the target's host.
        located: the target and its folder.
        scratch_root: where scratch folders are made (``backups.restore_scratch``).
        engine: the host's docker SDK client (the database check of a ``pg_dumpall`` target).
        clock: stamps and waits.
        snapshot: restore this one instead of the latest.
        db_timeout_s: how long the scratch database may take to start.

    Raises:
        RestoreTestFailed: no snapshot, no stored manifest, the restore failed (the snapshot is
            named with restic's message), the files differ, or the database check failed.
    """
    t = located.target
    where = _where(restic, t)
    scratch = scratch_folder(restic, located, scratch_root, snapshot.short_id if snapshot else "latest")
    made = restic.host.run(f"mkdir -p -- {shlex.quote(scratch)}", timeout=60)
    if not made.ok:
        raise RestoreTestFailed(
            f"target {t.name}: cannot make the scratch folder {scratch}: {made.stderr.strip()}",
            where=where,
            hint="check backups.restore_scratch on the host",
        )
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        # the stored manifest is read on a channel of its own while restic restores (a known snapshot)
        # or while the restored files are hashed (the latest: restic names it as it restores)
        reading = pool.submit(stored_manifest, restic, t, snapshot) if snapshot else None
        # `restore latest --tag ...` finds and restores in one restic call; it names the snapshot it restores
        which = [snapshot.id] if snapshot else ["latest", "--tag", _tag_list({**t.tags, "kind": "data"})]
        done = restic.run(["restore", *which, "--target", scratch], what=f"restoring {t.name}", check=False)
        named = RESTORING.search(done.stdout)
        short = snapshot.short_id if snapshot else (named.group(1) if named else "?")
        if not done.ok:
            if "no snapshot found" in done.stderr:
                raise RestoreTestFailed(
                    f"target {t.name} has no snapshot to restore", where=where, hint="back it up first"
                )
            e = restic.error(done, f"restoring snapshot {short} of {t.name}")
            full = "no space left on device" in e.message.lower()
            raise RestoreTestFailed(
                f"target {t.name}: restoring snapshot {short} failed: {e.message}",
                where=where,
                hint=f"the scratch disk {scratch_root} is full: free space or point backups.restore_scratch "
                "at a bigger disk"
                if full
                else "run restic check --read-data to find damaged packs; the snapshot may be unrestorable",
            ) from e
        if reading is None:
            reading = pool.submit(stored_manifest, restic, t, short)
        got = _manifest(restic, scratch, where).without(EMPTY_MARKER)
        diff = compare(reading.result(), got)
        db = None
        if diff.ok and t.backup.hook == "pg_dumpall" and engine is not None:
            db = database_check(engine, t, posixpath.join(scratch, DUMP_FILE), timeout_s=db_timeout_s, clock=clock)
        ok = diff.ok and (db is None or db.ok)
        detail = diff.summary() if not diff.ok else ("identical" if db is None or db.ok else f"database: {db.answer}")
        return RestoreResult(t, short, clock.now(), ok, got.files, got.total_bytes, detail, db)
    finally:
        pool.shutdown(wait=True)
        restic.host.run(f"rm -rf -- {shlex.quote(scratch)}", timeout=3600)


#: How ``restic restore`` names the snapshot it restores: ``restoring <Snapshot 70ad3cdb of [...] ...``.
RESTORING = re.compile(r"restoring <Snapshot ([0-9a-f]{8})")


def _tag_list(tags: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(tags.items()))


def database_check(engine: Any, target: VolumeTarget, dump: str, *, timeout_s: float, clock: Clock = SYSTEM) -> DbCheck:
    """Load a restored ``pg_dumpall`` into a scratch container of the service's image; run the catalog's query.

    The scratch container has no network, mounts the dump read-only, runs with local trust
    authentication (it holds restored data only), and is removed afterwards.
    """
    user = dict(target.environment).get("POSTGRES_USER", "postgres")
    name = f"homelab-restoretest-{target.slug}-{uuid.uuid4().hex[:6]}"
    query = target.backup.query
    container = None
    try:
        container = engine.containers.run(
            target.image,
            detach=True,
            name=name,
            environment={"POSTGRES_HOST_AUTH_METHOD": "trust", "POSTGRES_USER": user},
            volumes={posixpath.dirname(dump): {"bind": "/restore", "mode": "ro"}},
            labels={RESTORE_TEST_LABEL: target.name},
            network_mode="none",  # restored data only: reachable by nobody
        )
        deadline = clock.monotonic() + timeout_s
        while True:
            code, _ = container.exec_run(["pg_isready", "-U", user])
            if code == 0:
                break
            if clock.monotonic() > deadline:
                return DbCheck(False, query, f"the scratch database did not start within {timeout_s:g}s")
            clock.sleep(0.5)
        loaded = container.exec_run(["psql", "-U", user, "-d", "postgres", "-q", "-f", f"/restore/{DUMP_FILE}"])
        if loaded[0] != 0:
            return DbCheck(False, query, "loading the dump failed: " + _tail(loaded[1]))
        answer = container.exec_run(["psql", "-U", user, "-d", "postgres", "-tA", "-c", query])
        if answer[0] != 0:
            return DbCheck(False, query, "the query failed: " + _tail(answer[1]))
        return DbCheck(True, query, _tail(answer[1]))
    except Exception as e:  # the SDK's: the image is missing, psql is not in it
        return DbCheck(False, query, f"the scratch database could not run: {e}")
    finally:
        if container is not None:
            with contextlib.suppress(Exception):  # best effort; it is labelled homelab.restore-test
                container.remove(force=True, v=True)


def _tail(data: bytes | None) -> str:
    return " | ".join((data or b"").decode(errors="replace").strip().splitlines()[-3:])


#: How restic check names a damaged pack: "Pack ID does not match, want <id>", "pack <id>: ...".
PACK = re.compile(r"(?:want|[Pp]ack) ([0-9a-f]{64})")


@dataclass(frozen=True)
class CheckResult:
    """``restic check --read-data-subset``: whether it passed, and which packs and snapshots are damaged."""

    ok: bool
    percent: float
    packs: tuple[str, ...]
    snapshots: tuple[str, ...]
    detail: str


def check_repository(restic: Restic, *, read_data_percent: float, raise_on_error: bool = False) -> CheckResult:
    """``restic check --read-data-subset=N%``; the damaged packs and the snapshots that hold them.

    Raises:
        CheckFailed: with ``raise_on_error``, when the check fails.
    """
    result = restic.check(read_data_percent)
    text = result.stdout + "\n" + result.stderr
    if result.ok:
        return CheckResult(True, read_data_percent, (), (), "no errors")
    packs = tuple(sorted(set(PACK.findall(text))))
    snaps = tuple(restic.find_packs(packs))
    lines = [ln for ln in text.splitlines() if "error" in ln.lower() or "fatal" in ln.lower()]
    detail = f"{len(packs)} damaged pack(s), in snapshot(s) {', '.join(snaps) or 'unknown'}: " + " | ".join(lines[-3:])
    found = CheckResult(False, read_data_percent, packs, snaps, detail)
    if raise_on_error:
        raise CheckFailed(
            f"restic check failed: {detail}",
            where=restic.where,
            hint="forget the named snapshots and take new backups, then `restic prune`; "
            "`restic repair` (restic >= 0.16) can salvage the rest",
        )
    return found


def restore_to_source(
    restic: Restic,
    located: Located,
    *,
    restore_to_source: bool,
    confirm: bool,
    engine: Any = None,
    scratch_root: str,
    clock: Clock = SYSTEM,
) -> RestoreResult:
    """Restore the latest snapshot over the source: only with ``restore_to_source`` and ``confirm`` both.

    The service is stopped first as the ``stop`` hook stops it (its container; for a PVC, the workloads
    that mount it) and started again afterwards; the snapshot is
    restored into scratch and checked against its stored manifest, and only then does it
    replace the source's contents.

    Raises:
        BackupError: a flag is missing (nothing was touched).
        RestoreTestFailed: the restore into scratch did not verify (the source was not touched).
    """
    t = located.target
    where = _where(restic, t)
    if not (restore_to_source and confirm):
        raise BackupError(
            f"target {t.name}: restoring over the source needs restore_to_source=True and confirm=True; "
            "nothing was touched",
            where=where,
            hint="a restore test (into scratch) needs neither",
        )
    snap = latest(restic, t)
    if snap is None:
        raise RestoreTestFailed(f"target {t.name} has no snapshot to restore", where=where)
    expected = stored_manifest(restic, t, snap)
    scratch = scratch_folder(restic, located, scratch_root, snap.short_id)
    folder = backup_folder(located)
    # stopped as the stop hook stops it: the container, or the workloads that mount the PVC; started again always
    with hook_for("stop", where=where)(HookContext(located, engine, clock, where)):
        restic.host.run(f"mkdir -p -- {shlex.quote(scratch)}", timeout=60)
        restic.restore(snap.id, scratch, what=f"restoring snapshot {snap.short_id} of {t.name}")
        got = _manifest(restic, scratch, where)
        diff = compare(expected, got)
        if not diff.ok:
            raise RestoreTestFailed(
                f"target {t.name}: snapshot {snap.short_id} restored into scratch differs from its manifest "
                f"({diff.summary()}); the source was not touched",
                where=where,
            )
        q, s = shlex.quote(folder), shlex.quote(scratch)
        swap = restic.host.run(f"find {q} -mindepth 1 -delete && cp -a -- {s}/. {q}/", timeout=6 * 3600)
        if not swap.ok:
            raise BackupError(
                f"target {t.name}: copying the restored files into {folder} failed: {swap.stderr.strip()}",
                where=where,
                hint=f"the verified copy is kept in {scratch}; copy it by hand",
            )
        restic.host.run(f"rm -rf -- {s}", timeout=3600)
        return RestoreResult(t, snap.short_id, clock.now(), True, got.files, got.total_bytes, "restored to source")


def source_untouched(before: Manifest, after: Manifest, *, ignore: Sequence[str] = (DUMP_FOLDER,)) -> bool:
    """Whether two manifests of a source are equal, paths under ``ignore`` aside (a dump hook's folder)."""

    def keep(m: Manifest) -> Mapping[str, object]:
        return {p: e for p, e in m.entries.items() if not any(p == i or p.startswith(i + "/") for i in ignore)}

    return keep(before) == keep(after)
