"""Consistency hooks against the lab's stand-ins for PostgreSQL and Redis (built here with Go, FROM scratch).

The stand-ins answer the catalog's real commands: ``pg_dumpall`` writes a plain SQL dump of the
stand-in's data directory, ``redis-cli BGSAVE`` saves ``dump.rdb`` and moves ``LASTSAVE``. The
"VM" is a real sshd on 127.0.22.2 over which the docker SDK reaches the machine's engine.
Everything made carries ``homelab.test.backup-hooks=<run>`` and is removed at the end.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from homelab_lab.standin_build import build_binary, image_files, service_dockerfile
from homelab_lib.backup import volumes
from homelab_lib.backup.hooks import DUMP_FILE, DUMP_FOLDER
from homelab_lib.backup.restic import Restic
from homelab_lib.backup.targets import Located, VolumeTarget, locate_volume
from homelab_lib.hosts.checksums import local_manifest
from homelab_lib.hosts.docker import DockerHost
from homelab_lib.inventory.load import CATALOG
from homelab_lib.inventory.model import Service
from tests.backup_fixtures import build, docker_vm, labelled_engine, new_repository, secret_file

RUN = uuid.uuid4().hex[:8]
LABEL = "homelab.test.backup-hooks"
ADDRESS = "127.0.22.2"
VM = "hookvm"
CATALOG_SERVICES = {name: Service.model_validate(entry) for name, entry in yaml.safe_load(CATALOG.read_text()).items()}


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    with labelled_engine(LABEL, RUN, scratch=(f"/var/tmp/homelab-hooks-test-{RUN}",)) as client:
        yield client


@pytest.fixture(scope="module")
def images(engine: Any, pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The stand-in base image, and postgres and redis images on it (this run's tags)."""
    cache = (
        Path(pytestconfig.cache.mkdir("standin-go")) if pytestconfig.cache else tmp_path_factory.mktemp("standin-go")
    )
    build_binary(cache)
    base = f"homelab-backup-hooks-test/standin:base-{RUN}"
    build(engine, base, image_files(cache), {LABEL: RUN})
    out = {}
    for name in ("postgres", "redis"):
        tag = f"homelab-backup-hooks-test/{name}:{RUN}"
        df = service_dockerfile(base, name, CATALOG_SERVICES[name], labels={LABEL: RUN})
        build(engine, tag, {"Dockerfile": (df.encode(), 0o644)}, {LABEL: RUN})
        out[name] = tag
    return out


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerHost]:
    with docker_vm(tmp_path_factory.mktemp("sshd"), ADDRESS, VM) as opened:
        yield opened


@pytest.fixture(scope="module")
def restic(host: DockerHost, tmp_path_factory: pytest.TempPathFactory) -> Restic:
    folder = tmp_path_factory.mktemp("restic")
    return new_repository(host, folder / "repo", secret_file(folder / "pw", f"hooks-{RUN}"))


def start(engine: Any, host: DockerHost, image: str, service: str, tmp_path: Path) -> Located:
    """The service's stand-in as Compose would run it (catalog environment, volume, labels), healthy."""
    svc = CATALOG_SERVICES[service]
    stack = f"hk{uuid.uuid4().hex[:6]}"
    vol, mount = next(iter(sorted(svc.volumes.items())))
    target = VolumeTarget(
        "docker", VM, stack, service, vol, 6.0, svc.backup, image, mount, tuple(sorted(svc.environment.items()))
    )
    engine.volumes.create(target.volume_name, labels={LABEL: RUN})
    env = dict(svc.environment)
    mounts: dict[str, dict[str, str]] = {target.volume_name: {"bind": mount, "mode": "rw"}}
    for secret, spec in svc.secrets.items():
        (tmp_path / secret).write_text("hook-test-secret\n")
        env[spec.env or f"{secret.upper()}_FILE"] = f"/run/secrets/{secret}"
        mounts[str(tmp_path / secret)] = {"bind": f"/run/secrets/{secret}", "mode": "ro"}
    assert svc.healthcheck is not None
    container = engine.containers.run(
        image,
        detach=True,
        network_mode="none",  # needs none (and the bridge may be missing)
        name=f"hk-{RUN}-{stack}",
        labels={LABEL: RUN, "com.docker.compose.project": f"{VM}-{stack}", "com.docker.compose.service": service},
        environment=env,
        volumes=mounts,
        healthcheck={"test": svc.healthcheck.test, "interval": 500_000_000, "timeout": 5_000_000_000, "retries": 3},
    )
    deadline = time.monotonic() + 60
    while container.attrs["State"].get("Health", {}).get("Status") != "healthy":
        assert time.monotonic() < deadline, container.logs().decode(errors="replace")[-2000:]
        time.sleep(0.3)
        container.reload()
    return locate_volume(host.docker(), target, where=host.where)


def test_pg_dumpall_backs_up_the_dump_alone_and_the_restore_test_loads_it_into_a_scratch_database(
    engine: Any, host: DockerHost, restic: Restic, images: dict[str, str], tmp_path: Path
) -> None:
    located = start(engine, host, images["postgres"], "postgres", tmp_path)
    assert located.target.backup.hook == "pg_dumpall"
    before = local_manifest(located.folder)

    done = volumes.backup_target(restic, located, engine=host.docker())
    assert done.files == 1
    dump = Path(located.folder, DUMP_FOLDER, DUMP_FILE).read_text()
    assert "PostgreSQL database cluster dump" in dump
    assert volumes.source_untouched(before, local_manifest(located.folder))  # only the dump folder was written

    result = volumes.restore_test(
        restic, located, scratch_root=f"/var/tmp/homelab-hooks-test-{RUN}", engine=host.docker(), db_timeout_s=30
    )
    assert result.snapshot == done.snapshot
    assert result.files == 1
    assert result.db is not None
    assert result.db.query == "SELECT count(*) FROM pg_database"
    # The stand-in's psql loads the dump into a scratch container of the same image (its own role and
    # database exist already there, as with the real image: psql reports them and goes on) and answers
    # the count: postgres, template0, template1 and POSTGRES_DB.
    assert result.db.ok, result.db.answer
    assert result.db.answer == "4"
    assert result.ok, result.detail
    assert result.detail == "identical"
    assert not engine.containers.list(all=True, filters={"label": f"homelab.restore-test={located.target.name}"})


def test_redis_bgsave_waits_for_lastsave_and_the_copy_restores_identical(
    engine: Any, host: DockerHost, restic: Restic, images: dict[str, str], tmp_path: Path
) -> None:
    located = start(engine, host, images["redis"], "redis", tmp_path)
    container = engine.containers.get(located.container)
    assert container.exec_run(["redis-cli", "SET", "greeting", "hello"])[0] == 0
    done = volumes.backup_target(restic, located, engine=host.docker())
    stored = volumes.stored_manifest(restic, located.target, done.snapshot)
    assert "dump.rdb" in stored.entries  # BGSAVE wrote it before the copy
    assert b"greeting" in Path(located.folder, "dump.rdb").read_bytes()
    result = volumes.restore_test(restic, located, scratch_root=f"/var/tmp/homelab-hooks-test-{RUN}")
    assert result.ok, result.detail
