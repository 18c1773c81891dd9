"""Docker-volume backups with real restic, over a real sshd (127.0.22.x) standing for the Docker VM.

The machine's Docker Engine holds the volumes and containers (a busybox image built here
FROM scratch; the lab's stand-in for postgres and redis, built with Go), reached over SSH
by the docker SDK exactly as on a VM. Everything made carries the label
``homelab.test.backup=<run>`` and is removed at the end. Every test that backs up or
restore-tests checks that the source volume's manifest is the same before and after.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from homelab_lib.backup import hooks, report, volumes
from homelab_lib.backup.restic import Repository, Restic
from homelab_lib.backup.rows import BackupRow
from homelab_lib.backup.targets import Located, VolumeTarget, locate_volume
from homelab_lib.core.clock import SYSTEM
from homelab_lib.core.errors import (
    CheckFailed,
    HookFailed,
    RepositoryMissing,
    ResticAuthFailed,
    RestoreTestFailed,
    RpoViolated,
    SourceChanged,
)
from homelab_lib.core.secrets import SecretRef
from homelab_lib.hosts.checksums import Manifest, local_manifest
from homelab_lib.hosts.docker import DockerHost
from homelab_lib.inventory.model import ServiceBackup
from tests.backup_fixtures import (
    build,
    busybox_files,
    docker_vm,
    labelled_engine,
    new_repository,
    secret_file,
)

RUN = uuid.uuid4().hex[:8]
LABEL = "homelab.test.backup"
ADDRESS = "127.0.22.1"
VM = "testvm"
IMAGE = f"homelab-backup-test/busybox:{RUN}"
PASSWORD = f"restic-test-pw-{RUN}"


class ShiftedClock:
    """The system clock, moved on by ``shift`` (ages against RPO without waiting)."""

    def __init__(self, shift: timedelta) -> None:
        self.shift = shift

    def monotonic(self) -> float:
        return SYSTEM.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC) + self.shift

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    """The machine's Docker Engine (for setting up and looking); removes what carries this run's label."""
    with labelled_engine(LABEL, RUN, scratch=(f"/var/tmp/homelab-backup-test-{RUN}", f"/var/tmp/hb-{RUN}")) as client:
        yield client


@pytest.fixture(scope="module")
def image(engine: Any) -> str:
    build(engine, IMAGE, busybox_files("mkdir -p /tmp /data", ["sleep", "3600"]), {LABEL: RUN})
    return IMAGE


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerHost]:
    with docker_vm(tmp_path_factory.mktemp("sshd"), ADDRESS, VM) as opened:
        yield opened


@pytest.fixture(scope="module")
def password(tmp_path_factory: pytest.TempPathFactory) -> SecretRef:
    return secret_file(tmp_path_factory.mktemp("secret") / "restic_password", PASSWORD)


@pytest.fixture
def restic(host: DockerHost, password: SecretRef, tmp_path: Path) -> Restic:
    return new_repository(host, tmp_path / "repo", password)


Make = Callable[..., Located]


@pytest.fixture
def make(engine: Any, image: str, host: DockerHost) -> Make:
    """A Compose-named volume with files (and optionally its service's container running a command)."""

    def volume(
        files: dict[str, bytes], *, hook: str = "none", command: str = "", service_image: str = "", env: Any = ()
    ) -> Located:
        stack = f"bk{uuid.uuid4().hex[:6]}"
        target = VolumeTarget(
            "docker", VM, stack, "app", "data", 24.0, ServiceBackup(hook=hook), service_image or image, "/data",
            tuple(env),
        )  # fmt: skip
        vol = engine.volumes.create(target.volume_name, labels={LABEL: RUN})
        root = Path(vol.attrs["Mountpoint"])
        for rel, data in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
        if command or service_image:
            options: dict[str, Any] = {"command": ["sh", "-c", command]} if command else {}
            engine.containers.run(
                service_image or image,
                detach=True,
                network_mode="none",
                name=f"bk-{RUN}-{stack}",
                labels={
                    LABEL: RUN,
                    "com.docker.compose.project": f"{VM}-{stack}",
                    "com.docker.compose.service": "app",
                },
                volumes={target.volume_name: {"bind": "/data", "mode": "rw"}},
                environment=dict(env),
                **options,
            )
        return locate_volume(host.docker(), target, where=host.where)

    return volume


def some_files() -> dict[str, bytes]:
    return {
        "a.txt": b"alpha\n",
        "sub dir/b.bin": os.urandom(200_000),
        "sub dir/deeper/c": b"",
        "config.xml": b"<config/>\n",
    }


def repo_path(restic: Restic) -> Path:
    return Path(restic.repo.location)


# ---------------------------------------------------------------- round trip


def test_a_backup_is_tagged_stores_its_manifest_and_restore_tests_identical(
    restic: Restic, make: Make, host: DockerHost
) -> None:
    located = make(some_files(), command="sleep 3600")
    assert located.folder.endswith(f"/{located.target.volume_name}/_data")
    assert located.container
    before = local_manifest(located.folder)

    done = volumes.backup_target(restic, located, engine=host.docker())
    assert done.files == 4
    assert done.size_bytes == before.total_bytes
    assert done.manifest_sha256 == before.sha256

    snaps = restic.snapshots(located.target.tags)
    data = [s for s in snaps if s.tags["kind"] == "data"]
    assert [s.short_id for s in data] == [done.snapshot]
    assert {k: data[0].tags[k] for k in ("layer", "host", "stack", "service", "volume")} == located.target.tags
    stored = volumes.stored_manifest(restic, located.target, data[0])
    assert stored == before  # the manifest in the repository is the one taken at backup time

    result = volumes.restore_test(restic, located, scratch_root="/var/tmp/homelab-backup-test-" + RUN)
    assert result.ok
    assert result.detail == "identical"
    assert result.snapshot == done.snapshot
    assert result.files == 4
    assert host.run(f"ls -A /var/tmp/homelab-backup-test-{RUN}").stdout.strip() == ""  # scratch removed
    assert local_manifest(located.folder) == before  # the source was never written


def test_the_password_reaches_restic_on_stdin_never_a_command_line(restic: Restic) -> None:
    command = restic.command(["snapshots"])
    assert PASSWORD not in command
    assert "read -r RESTIC_PASSWORD" in command
    assert restic.repo.location not in command  # a rest: URL may carry credentials: it goes by stdin too
    from homelab_lib.backup.restic import shown

    assert shown("rest:https://user:secret@nas:8000/homelab") == "rest:https://***@nas:8000/homelab"


# ---------------------------------------------------------------- faults


def test_a_wrong_password_is_named_and_never_shown(restic: Restic, host: DockerHost, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    other = Restic(host, Repository(restic.repo.location, SecretRef("file", str(wrong))))
    with pytest.raises(ResticAuthFailed, match="refused the password") as caught:
        other.snapshots()
    assert "not-the-password" not in str(caught.value)
    assert PASSWORD not in str(caught.value)
    assert restic.repo.location in str(caught.value)


def test_a_missing_repository_is_created_only_with_confirm(
    host: DockerHost, password: SecretRef, tmp_path: Path
) -> None:
    where = tmp_path / "nas" / "restic"
    r = Restic(host, Repository(str(where), password))
    with pytest.raises(RepositoryMissing, match="nothing was created") as caught:
        volumes.ensure_repository(r, confirm=False)
    assert "confirm=True" in str(caught.value)
    assert not where.exists()
    assert volumes.ensure_repository(r, confirm=True) is True
    assert (where / "config").is_file()
    assert volumes.ensure_repository(r, confirm=True) is False  # idempotent


def _largest_pack(repo: Path) -> Path:
    packs = [p for p in (repo / "data").rglob("*") if p.is_file()]
    return max(packs, key=lambda p: p.stat().st_size)


def test_a_corrupted_pack_fails_check_and_restore_test_naming_snapshot_and_target(restic: Restic, make: Make) -> None:
    located = make({"big.bin": os.urandom(3_000_000), "small": b"x"})
    done = volumes.backup_target(restic, located)
    assert volumes.check_repository(restic, read_data_percent=100).ok
    pack = _largest_pack(repo_path(restic))
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pack.chmod(0o644)
    pack.write_bytes(bytes(data))

    check = volumes.check_repository(restic, read_data_percent=100)
    assert not check.ok
    assert pack.name in check.packs
    assert done.snapshot in check.snapshots
    with pytest.raises(CheckFailed, match=done.snapshot):
        volumes.check_repository(restic, read_data_percent=100, raise_on_error=True)

    with pytest.raises(RestoreTestFailed) as caught:
        volumes.restore_test(restic, located, scratch_root=f"/var/tmp/homelab-backup-test-{RUN}")
    assert done.snapshot in str(caught.value)
    assert located.target.name in str(caught.value)


def test_a_volume_written_during_the_backup_is_refused_and_no_snapshot_is_claimed(
    restic: Restic, make: Make, host: DockerHost
) -> None:
    files = {f"f{i}": os.urandom(100_000) for i in range(50)}
    located = make(files, command="i=0; while true; do i=$((i+1)); echo $i >> /data/log; done")
    with pytest.raises(SourceChanged, match="changed while it was backed up") as caught:
        volumes.backup_target(restic, located, engine=host.docker())
    assert "log" in str(caught.value)
    assert "hook" in caught.value.hint
    assert restic.snapshots({**located.target.tags, "kind": "data"}) == []  # dropped: nothing claimed


def test_the_stop_hook_makes_the_copy_consistent_and_always_starts_the_service_again(
    restic: Restic, make: Make, host: DockerHost, engine: Any
) -> None:
    files = {f"f{i}": os.urandom(50_000) for i in range(20)}
    located = make(files, command="trap 'exit 0' TERM; while true; do date >> /data/log; sleep 0.01; done", hook="stop")
    done = volumes.backup_target(restic, located, engine=host.docker())
    container = engine.containers.get(located.container)
    assert container.status == "running"
    stored = volumes.stored_manifest(
        restic, located.target, restic.snapshots({**located.target.tags, "kind": "data"})[-1]
    )
    assert stored.sha256 == done.manifest_sha256
    assert "log" in stored.entries
    result = volumes.restore_test(restic, located, scratch_root=f"/var/tmp/homelab-backup-test-{RUN}")
    assert result.ok, result.detail  # the restored copy is exactly what was backed up while stopped

    # a backup that fails inside the hook still starts the service again
    broken = Located(located.target, located.folder + "/not-there", located.container)
    with pytest.raises(Exception, match="does not exist"):
        volumes.backup_target(restic, broken, engine=host.docker())
    container.reload()
    assert container.status == "running"


def test_a_dump_hook_that_fails_names_the_target_and_takes_no_snapshot(
    restic: Restic, make: Make, host: DockerHost
) -> None:
    located = make({"PG_VERSION": b"16\n"}, command="sleep 3600", hook="pg_dumpall")  # busybox: no pg_dumpall
    before = local_manifest(located.folder)
    with pytest.raises(HookFailed, match=f"target {located.target.name}: hook pg_dumpall") as caught:
        volumes.backup_target(restic, located, engine=host.docker())
    assert "no snapshot" in caught.value.hint
    assert restic.snapshots(located.target.tags) == []
    assert volumes.source_untouched(before, local_manifest(located.folder))


def test_a_hook_that_needs_a_container_says_none_runs(restic: Restic, make: Make, host: DockerHost) -> None:
    located = make({"dump.rdb": b"REDIS"}, hook="redis_bgsave")
    with pytest.raises(HookFailed, match="none runs"):
        volumes.backup_target(restic, located, engine=host.docker())


def test_a_full_scratch_disk_fails_the_restore_test_and_says_so(restic: Restic, make: Make, tmp_path: Path) -> None:
    located = make({"big.bin": os.urandom(3_000_000)})
    before = local_manifest(located.folder)
    volumes.backup_target(restic, located)
    scratch = tmp_path / "small-scratch"
    scratch.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(scratch)], check=True)
    try:
        with pytest.raises(RestoreTestFailed, match="failed") as caught:
            volumes.restore_test(restic, located, scratch_root=str(scratch))
        assert "full" in caught.value.hint
        assert located.target.name in str(caught.value)
        assert list(scratch.iterdir()) == []  # the half-restored scratch folder was removed
    finally:
        subprocess.run(["umount", str(scratch)], check=True)
    assert local_manifest(located.folder) == before


def test_a_scratch_folder_inside_the_source_is_refused(restic: Restic, make: Make) -> None:
    located = make(some_files())
    before = local_manifest(located.folder)
    volumes.backup_target(restic, located)
    with pytest.raises(RestoreTestFailed, match="inside the source"):
        volumes.restore_test(restic, located, scratch_root=located.folder + "/scratch")
    assert local_manifest(located.folder) == before


def test_restoring_over_the_source_needs_both_flags_and_stops_the_service(
    restic: Restic, make: Make, host: DockerHost, engine: Any
) -> None:
    located = make(some_files(), command="trap 'exit 0' TERM; while true; do sleep 0.2; done")
    before = local_manifest(located.folder)
    volumes.backup_target(restic, located, engine=host.docker())
    Path(located.folder, "a.txt").write_bytes(b"damaged\n")
    Path(located.folder, "stray").write_bytes(b"left by someone\n")
    for flags in ({"restore_to_source": True, "confirm": False}, {"restore_to_source": False, "confirm": True}):
        with pytest.raises(Exception, match="needs restore_to_source=True and confirm=True"):
            volumes.restore_to_source(restic, located, engine=host.docker(), scratch_root=f"/var/tmp/hb-{RUN}", **flags)
    assert Path(located.folder, "a.txt").read_bytes() == b"damaged\n"
    started = engine.containers.get(located.container).attrs["State"]["StartedAt"]
    done = volumes.restore_to_source(
        restic, located, restore_to_source=True, confirm=True, engine=host.docker(), scratch_root=f"/var/tmp/hb-{RUN}"
    )
    assert done.ok
    assert local_manifest(located.folder) == before
    container = engine.containers.get(located.container)
    assert container.status == "running"
    assert container.attrs["State"]["StartedAt"] != started


# ---------------------------------------------------------------- RPO and the report


def test_a_backup_older_than_its_rpo_is_a_violation_and_fails_after_the_report(
    restic: Restic, make: Make, tmp_path: Path
) -> None:
    fresh = make(some_files())
    stale = make(some_files())
    never = make(some_files())
    volumes.backup_target(restic, fresh)
    volumes.backup_target(restic, stale)
    stale_target = VolumeTarget(**{**stale.target.__dict__, "rpo_hours": 0.5})
    targets = [fresh.target, stale_target, never.target]
    tested = volumes.restore_test(restic, fresh, scratch_root=f"/var/tmp/hb-{RUN}")
    later = datetime.now(UTC) + timedelta(hours=1)
    rows = report.volume_rows(targets, volumes.latest_by_target(restic), later, restores=[tested])
    df = report.frame(rows)
    assert list(df["target"][:2]) == sorted([stale_target.name, never.target.name])  # violations first
    by = {r["target"]: r for r in df.to_dict("records")}
    assert by[stale_target.name]["violation"].startswith("past RPO")
    assert by[never.target.name]["violation"] == "no backup"
    assert by[fresh.target.name]["violation"] == ""
    assert "identical" in by[fresh.target.name]["result"]

    prom = report.write_textfile(df, tmp_path / "textfile" / "homelab_backup.prom").read_text()
    assert f'homelab_backup_rpo_seconds{{layer="docker",target="{stale_target.name}"}} 1800' in prom
    assert f'homelab_backup_age_seconds{{layer="docker",target="{never.target.name}"}}' not in prom
    assert f'homelab_backup_restore_ok{{layer="docker",target="{fresh.target.name}"}} 1' in prom
    age = next(
        ln for ln in prom.splitlines() if ln.startswith("homelab_backup_age_seconds") and stale_target.name in ln
    )
    assert 3500 < float(age.split()[-1]) < 4000

    fig = report.plot_age_vs_rpo(df)
    assert len(fig.axes[0].patches) == 3
    with pytest.raises(RpoViolated) as caught:
        report.raise_on_violations(df)
    assert len(caught.value.problems) == 2
    assert stale_target.name in str(caught.value)


def test_the_report_takes_other_layers_rows_and_only_restore_failures_raise_restore_test_failed() -> None:
    proxmox_row = BackupRow("proxmox", "vm 101 docker-a", None, 2.0, 26.0, 10, storage="local", protected=False)
    failing = BackupRow("docker", "a/b/c/d", None, 1.0, 24.0, 5, datetime.now(UTC), "1 changed (x)",
                        "restore test failed (1 changed (x))")  # fmt: skip
    df = report.frame([proxmox_row], [failing])
    assert list(df["layer"]) == ["docker", "proxmox"]
    assert list(df.columns) == list(report.COLUMNS)  # the vzdump layer's storage and protected are not the report's
    assert (df["result"][1], df["violation"][1]) == ("", "")
    with pytest.raises(RestoreTestFailed, match="1 of 2"):
        report.raise_on_violations(df)
    assert 'homelab_backup_restore_ok{layer="docker",target="a/b/c/d"} 0' in report.textfile(df)


def test_repository_size_is_kept_per_run_and_charted(restic: Restic, make: Make, tmp_path: Path) -> None:
    state = tmp_path / "state" / "restic-size.jsonl"
    report.record_size(state, datetime.now(UTC), restic.stats(), restic.repo.location)
    volumes.backup_target(restic, make({"x.bin": os.urandom(500_000)}))
    report.record_size(state, datetime.now(UTC), restic.stats(), restic.repo.location)
    history = report.size_history(state)
    assert len(history) == 2
    assert history["total_size"].iloc[1] > history["total_size"].iloc[0] + 400_000
    assert len(report.plot_repository_size(history).axes[0].lines) == 1
    assert report.size_history(tmp_path / "none").empty


def test_manifest_helpers_ignore_only_the_dump_folder() -> None:
    a = Manifest.parse("0" * 64 + " 1 f x\n", where="t")
    b = Manifest.parse("0" * 64 + " 1 f x\n" + "1" * 64 + f" 2 f {hooks.DUMP_FOLDER}/dumpall.sql\n", where="t")
    c = Manifest.parse("2" * 64 + " 1 f x\n", where="t")
    assert volumes.source_untouched(a, b)
    assert not volumes.source_untouched(a, c)


def test_a_manifest_of_thousands_of_files_is_whole(tmp_path: Path) -> None:
    """Parallel sha256sum batches once interleaved their output in one pipe, cutting records in two."""
    import hashlib

    for i in range(3000):
        (tmp_path / f"a_rather_long_file_name_to_fill_the_pipe_{i}").write_bytes(str(i).encode())
    m = local_manifest(tmp_path)
    assert m.files == 3000
    for path, entry in m.entries.items():
        assert entry.sha256 == hashlib.sha256((tmp_path / path).read_bytes()).hexdigest()
