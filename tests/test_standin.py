"""The lab's stand-in program: built with Go, run in an image FROM scratch on the machine's Docker Engine.

One image (busybox + the program, the Dockerfile of ``standin_build.dockerfile()``)
is tagged under the catalog's real image names with a per-run suffix, and every
container runs it with the catalog's real environment and healthcheck commands.
Everything the tests create carries the label ``homelab.test.standin=<run id>``
and is removed at the end of the module. Servers publish on 127.0.5.1 only.
"""

from __future__ import annotations

import io
import json
import shutil
import socket
import struct
import tarfile
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from homelab_lab import standin_build
from homelab_lab.errors import LabError
from homelab_lab.standin_build import APPLETS, BINARY, PATH, build_binary, image_files, service_dockerfile
from homelab_lib.inventory.load import CATALOG
from homelab_lib.inventory.model import Service
from tests.backup_fixtures import build, labelled_engine

RUN = uuid.uuid4().hex[:8]
LABEL = "homelab.test.standin"
LOOPBACK = "127.0.5.1"
TAG_SUFFIX = f"standintest-{RUN}"
CATALOG_SERVICES = {name: Service.model_validate(entry) for name, entry in yaml.safe_load(CATALOG.read_text()).items()}
# The 14 Compose services of the example shape: everything the catalog places on Compose with a healthcheck.
COMPOSE_SERVICES = sorted(
    name for name, s in CATALOG_SERVICES.items() if "compose" in s.platforms and s.healthcheck is not None
)
SECRET_VALUE = "standin-test-pw-" + RUN


def tagged(image: str) -> str:
    """A catalog image reference with this run's suffix on its tag: lscr.io/linuxserver/sonarr:4.0.11-standintest-…"""
    return f"{image}-{TAG_SUFFIX}"


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cache_dir(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the program is built: pytest's cache folder (kept between runs), else a temporary one."""
    if pytestconfig.cache is not None:
        return Path(pytestconfig.cache.mkdir("standin-go"))
    return tmp_path_factory.mktemp("standin-go")


@pytest.fixture(scope="module")
def binary(cache_dir: Path) -> Path:
    return build_binary(cache_dir)


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    """The machine's default Docker Engine; removes what carries this run's label afterwards."""
    with labelled_engine(LABEL, RUN) as client:
        yield client


@pytest.fixture(scope="module")
def image(engine: Any, cache_dir: Path, binary: Path) -> str:
    """The base image, and on it one image per catalog service tagged under its real name (with this run's suffix).

    Built as the lab builds them: ``dockerfile()`` for the base, ``service_dockerfile()`` for each service.
    """
    base = f"homelab-standin-test/base:{RUN}"
    build(engine, base, image_files(cache_dir), {LABEL: RUN})
    for name, service in CATALOG_SERVICES.items():
        dockerfile = service_dockerfile(base, name, service, labels={LABEL: RUN})
        build(engine, tagged(service.image), {"Dockerfile": (dockerfile.encode(), 0o644)}, {LABEL: RUN})
    return base


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("secrets")
    for name in ("postgres_password", "grafana_admin_password"):
        (folder / name).write_text(SECRET_VALUE + "\n")
    return folder


Run = Callable[..., Any]


@pytest.fixture(scope="module")
def run(engine: Any, image: str, secrets_dir: Path) -> Run:
    """Start a catalog service's image the way Compose would (its environment, healthcheck, secrets), labelled."""

    def start(
        service: str,
        *,
        name: str | None = None,
        publish: tuple[int, ...] = (),
        env: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
        volumes: dict[str, dict[str, str]] | None = None,
        healthcheck: bool = True,
        address: str = LOOPBACK,
        **kwargs: Any,
    ) -> Any:
        """Start one; ``address`` stands for the VM's address in the catalog's ``{address}`` (host networking)."""
        svc = CATALOG_SERVICES[service]
        environment = dict(svc.environment)
        mounts = dict(volumes or {})
        for secret, spec in svc.secrets.items():
            environment[spec.env or f"{secret.upper()}_FILE"] = f"/run/secrets/{secret}"
            mounts[str(secrets_dir / secret)] = {"bind": f"/run/secrets/{secret}", "mode": "ro"}
        environment.update(env or {})
        options: dict[str, Any] = {}
        if svc.command:
            options["command"] = [part.replace("{address}", address) for part in svc.command]
        if svc.network_mode == "host":
            options["network_mode"] = "host"
        if healthcheck and svc.healthcheck is not None:
            options["healthcheck"] = {
                "test": [part.replace("{address}", address) for part in svc.healthcheck.test],
                "interval": 1_000_000_000,
                "timeout": 5_000_000_000,
                "retries": 3,
            }
        container = engine.containers.run(
            tagged(svc.image),
            detach=True,
            name=f"standin-{RUN}-{name or service}",
            labels={LABEL: RUN, **(labels or {})},
            environment=environment,
            ports={f"{port}/tcp": (LOOPBACK, None) for port in publish},
            volumes=mounts,
            **options,
            **kwargs,
        )
        return container

    return start


def host_port(container: Any, port: int) -> int:
    container.reload()
    return int(container.ports[f"{port}/tcp"][0]["HostPort"])


def wait_healthy(container: Any, timeout: float = 45.0) -> None:
    """Wait for Docker to report the container healthy (its healthcheck ran and passed)."""
    deadline = time.monotonic() + timeout
    while True:
        container.reload()
        health = container.attrs["State"].get("Health", {})
        if health.get("Status") == "healthy":
            return
        if not container.attrs["State"]["Running"] or time.monotonic() > deadline:
            log = [entry.get("Output", "") for entry in health.get("Log", [])][-3:]
            logs = container.logs().decode(errors="replace")[-2000:]
            pytest.fail(f"{container.name} is {health.get('Status') or container.status}: checks {log}; logs:\n{logs}")
        time.sleep(0.3)


def wait_for(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def sh(container: Any, *cmd: str, tty: bool = False, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run a command in the container (docker exec): exit code, stdout, stderr."""
    if tty:
        result = container.exec_run(list(cmd), tty=True, environment=env)
        return result.exit_code, result.output.decode(), ""
    result = container.exec_run(list(cmd), demux=True, environment=env)
    out, err = result.output
    return result.exit_code, (out or b"").decode(), (err or b"").decode()


def metric_samples(text: str) -> dict[str, list[Any]]:
    """Samples by name, parsed with prometheus_client's own parser."""
    samples: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


# ---------------------------------------------------------------- the build


def test_build_is_static_and_reused_while_sources_are_unchanged(cache_dir: Path, binary: Path) -> None:
    assert standin_build.is_static_elf(binary.read_bytes())
    before = binary.stat().st_mtime_ns
    again = build_binary(cache_dir)
    assert again == binary
    assert again.stat().st_mtime_ns == before
    assert binary.name == f"standin-{standin_build.source_digest()[:16]}"


def test_changed_sources_are_rebuilt_and_a_failing_build_shows_go_output(
    tmp_path: Path, cache_dir: Path, binary: Path
) -> None:
    src = tmp_path / "src"
    shutil.copytree(standin_build.SOURCE_DIR, src)
    with (src / "main.go").open("a") as f:
        f.write("\nfunc brokenOnPurpose() { return 1 }\n")
    assert standin_build.source_digest(src) != standin_build.source_digest()
    before = sorted(cache_dir.iterdir())
    with pytest.raises(LabError) as info:
        build_binary(cache_dir, src=src)
    assert "too many return values" in info.value.message
    assert "main.go" in info.value.message
    assert "apt-get install golang-go" in info.value.hint
    assert sorted(cache_dir.iterdir()) == before, "a failed build left a file behind"
    assert binary.is_file()


def test_missing_go_names_the_package_to_install(tmp_path: Path) -> None:
    with pytest.raises(LabError) as info:
        build_binary(tmp_path, go=str(tmp_path / "no-go-here"))
    assert info.value.hint == "apt-get install golang-go"
    assert "not installed" in info.value.message


def test_go_unit_tests_pass(cache_dir: Path) -> None:
    output = standin_build.run_go_tests(cache_dir)
    assert output.startswith("ok")


def test_package_data_ships_every_source(repo: Path) -> None:
    globs = tomllib.loads((repo / "lab" / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    for name in standin_build.sources():
        rel = f"standin/{name}"
        assert any(fnmatch(rel, g) for g in globs["homelab_lab"]), rel


def test_image_layout(engine: Any, image: str, run: Run) -> None:
    attrs = engine.images.get(tagged(CATALOG_SERVICES["bazarr"].image)).attrs
    assert attrs["Config"]["Entrypoint"] == [BINARY]
    assert f"PATH={PATH}" in attrs["Config"]["Env"]
    assert "STANDIN_SERVICE=bazarr" in attrs["Config"]["Env"]
    assert "6767/tcp" in attrs["Config"]["ExposedPorts"]
    assert "Healthcheck" not in attrs["Config"] or not attrs["Config"]["Healthcheck"]
    c = run("bazarr", healthcheck=False)
    for applet in APPLETS:
        assert sh(c, "readlink", applet)[1].strip() == BINARY, applet
    names = " ".join(Path(a).name for a in APPLETS)
    code, out, _ = sh(c, "sh", "-c", f"for c in {names}; do command -v $c; done")
    assert code == 0
    assert out.split() == list(APPLETS)
    assert sh(c, "readlink", "/bin/wget")[1].strip() == "/bin/busybox"


# ---------------------------------------------------------------- the catalog's healthchecks


@pytest.fixture(scope="module")
def catalog_containers(run: Run) -> dict[str, Any]:
    """Every Compose service of the catalog, started at once with its real environment and healthcheck."""
    return {name: run(name, name=f"catalog-{name}", address="127.0.5.2") for name in COMPOSE_SERVICES}


def test_the_example_shape_has_14_compose_services() -> None:
    assert len(COMPOSE_SERVICES) == 14, COMPOSE_SERVICES  # alertmanager joined with runbook 07


@pytest.mark.parametrize("service", COMPOSE_SERVICES)
def test_catalog_healthcheck_passes(catalog_containers: dict[str, Any], service: str) -> None:
    container = catalog_containers[service]
    wait_healthy(container)
    test = container.attrs["Config"]["Healthcheck"]["Test"]  # the catalog's, {address} filled in
    cmd = ["sh", "-c", test[1]] if test[0] == "CMD-SHELL" else test[1:]
    assert sh(container, *cmd)[0] == 0


# ---------------------------------------------------------------- curl and HTTP services


@pytest.fixture(scope="module")
def sonarr(engine: Any, run: Run) -> Any:
    volume = engine.volumes.create(f"standin-{RUN}-sonarr-config", labels={LABEL: RUN})
    container = run("sonarr", publish=(8989,), volumes={volume.name: {"bind": "/config", "mode": "rw"}})
    wait_healthy(container)
    return container


def test_curl_exit_codes_are_curls(sonarr: Any) -> None:
    assert sh(sonarr, "curl", "-fsS", "-o", "/dev/null", "http://localhost:8989/ping")[0] == 0
    code, out, err = sh(sonarr, "curl", "-fsS", "http://localhost:8989/no-such-page")
    assert (code, out) == (22, "")
    assert "curl: (22) The requested URL returned error: 404" in err
    code, out, _ = sh(sonarr, "curl", "-s", "http://localhost:8989/no-such-page")
    assert (code, out) == (0, "404 page not found\n")
    code, _, err = sh(sonarr, "curl", "-fsS", "http://localhost:8990/ping")
    assert code == 7
    assert "Failed to connect to localhost port 8990" in err
    assert sh(sonarr, "curl", "-fs", "http://localhost:8990/ping")[2] == "", "-s without -S must stay quiet"
    # A listener that accepts and never answers: --max-time ends it with curl's timeout code.
    sonarr.exec_run(["sh", "-c", "sleep 30 | nc -l -p 7000"], detach=True)
    wait_for(lambda: sh(sonarr, "sh", "-c", "netstat -ltn | grep -q ':7000 '")[0] == 0, "nc to listen")
    code, _, err = sh(sonarr, "curl", "-sS", "--max-time", "1", "http://localhost:7000/")
    assert code == 28, err
    code, out, _ = sh(sonarr, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "http://localhost:8989/ping")
    assert (code, out) == (0, "200")
    code, out, _ = sh(sonarr, "curl", "-fsS", "http://localhost:8989/ping")
    assert json.loads(out) == {"status": "OK"}
    assert sh(sonarr, "curl", "--bogus-option", "http://localhost:8989/")[0] == 2


def test_busybox_wget_healthchecks_work_too(sonarr: Any) -> None:
    assert sh(sonarr, "wget", "-q", "-O", "/dev/null", "http://localhost:8989/ping")[0] == 0
    assert sh(sonarr, "wget", "-q", "-O", "/dev/null", "http://localhost:8989/no-such-page")[0] != 0


def test_metrics_parse_and_the_request_counter_moves(sonarr: Any) -> None:
    url = f"http://{LOOPBACK}:{host_port(sonarr, 8989)}/metrics"
    first = metric_samples(requests.get(url, timeout=5).text)
    second_response = requests.get(url, timeout=5)
    assert second_response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    second = metric_samples(second_response.text)

    def scrapes(samples: dict[str, list[Any]]) -> float:
        (value,) = [s.value for s in samples["standin_http_requests_total"] if s.labels == {"path": "/metrics"}]
        return float(value)

    assert scrapes(second) > scrapes(first)
    assert [s.value for s in second["standin_up"]] == [1.0]
    (start,) = second["process_start_time_seconds"]
    assert 0 < time.time() - start.value < 3600
    (info,) = second["standin_info"]
    assert info.labels["service"] == "sonarr"


def test_volume_files_are_real_and_survive_a_restart(sonarr: Any) -> None:
    code, ident, _ = sh(sonarr, "cat", "/config/standin-sonarr.id")
    assert code == 0
    assert len(ident) == 32
    boots = sh(sonarr, "cat", "/config/boots.log")[1].splitlines()
    sonarr.restart(timeout=5)
    wait_healthy(sonarr)
    assert sh(sonarr, "cat", "/config/standin-sonarr.id")[1] == ident
    after = sh(sonarr, "cat", "/config/boots.log")[1].splitlines()
    assert after[: len(boots)] == boots
    assert len(after) == len(boots) + 1
    assert after[-1].endswith(f"boot of sonarr stand-in {ident}")


# ---------------------------------------------------------------- postgres


@pytest.fixture(scope="module")
def postgres(run: Run) -> Any:
    container = run("postgres", publish=(5432,))
    wait_healthy(container)
    return container


def test_pg_isready_like_the_real_one(postgres: Any) -> None:
    code, out, _ = sh(postgres, "pg_isready", "-U", "homelab", "-d", "homelab")
    assert (code, out) == (0, "/var/run/postgresql:5432 - accepting connections\n")
    code, out, _ = sh(postgres, "pg_isready", "-h", "localhost", "-U", "homelab")
    assert (code, out) == (0, "localhost:5432 - accepting connections\n")
    code, out, _ = sh(postgres, "pg_isready", "-h", "127.0.0.1", "-p", "5999", "-t", "2")
    assert (code, out) == (2, "127.0.0.1:5999 - no response\n")
    assert sh(postgres, "pg_isready", "-q", "-h", "127.0.0.1", "-p", "5999")[:2] == (2, "")


def test_postgres_data_directory(postgres: Any) -> None:
    assert sh(postgres, "cat", "/var/lib/postgresql/data/PG_VERSION")[1] == "16\n"
    code, out, _ = sh(postgres, "ls", "/var/lib/postgresql/data/base")
    assert code == 0
    assert set(out.split()) >= {"1", "4", "5"}
    assert sh(postgres, "cat", "/var/lib/postgresql/data/postmaster.pid")[1].splitlines()[0] == "1"
    assert sh(postgres, "test", "-s", "/var/lib/postgresql/data/standin-postgres.id")[0] == 0


def test_pg_dump_needs_the_server_and_its_password(postgres: Any) -> None:
    code, dump, err = sh(postgres, "pg_dump", "-U", "homelab", "homelab")
    assert code == 0, err
    assert dump.startswith("--\n-- PostgreSQL database dump\n--\n")
    assert "-- Dumped from database version 16.6" in dump
    assert "COPY public.standin_files (path, size, sha256, content) FROM stdin;\nPG_VERSION\t3\t" in dump
    assert dump.rstrip().endswith("-- PostgreSQL database dump complete\n--")
    code, _, err = sh(postgres, "pg_dump", "-h", "127.0.0.1", "-U", "homelab", "homelab")
    assert code == 1
    assert "fe_sendauth: no password supplied" in err
    code, _, err = sh(postgres, "pg_dump", "-h", "127.0.0.1", "-U", "homelab", "homelab", env={"PGPASSWORD": "wrong"})
    assert code == 1
    assert 'password authentication failed for user "homelab"' in err
    code, _, err = sh(
        postgres,
        "pg_dump",
        "-h",
        "127.0.0.1",
        "-U",
        "homelab",
        "-f",
        "/tmp/homelab.sql",
        "homelab",
        env={"PGPASSWORD": SECRET_VALUE},
    )
    assert code == 0, err
    assert "CREATE TABLE public.standin_files" in sh(postgres, "cat", "/tmp/homelab.sql")[1]
    code, _, err = sh(postgres, "pg_dump", "-h", "127.0.0.1", "-p", "5999", "-U", "homelab", "homelab")
    assert code == 1
    assert 'connection to server at "127.0.0.1", port 5999 failed: Connection refused' in err
    code, everything, err = sh(postgres, "pg_dumpall", "-U", "homelab")
    assert code == 0, err
    assert '-- Database "homelab" dump' in everything
    assert "CREATE ROLE homelab;" in everything


def test_postgres_speaks_the_wire_protocol(postgres: Any) -> None:
    """From the host, over the published port: SSLRequest gets 'N', a StartupMessage an authentication request."""
    with socket.create_connection((LOOPBACK, host_port(postgres, 5432)), timeout=5) as conn:
        conn.sendall(struct.pack("!ii", 8, 80877103))
        assert conn.recv(1) == b"N"
        params = b"user\0homelab\0database\0homelab\0\0"
        conn.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
        kind, length, code = struct.unpack("!cii", conn.recv(9))
        assert (kind, length, code) == (b"R", 8, 3)  # AuthenticationCleartextPassword: a password is set
        password = SECRET_VALUE.encode() + b"\0"
        conn.sendall(b"p" + struct.pack("!i", 4 + len(password)) + password)
        reply = b""
        while not reply.endswith(b"Z\0\0\0\x05I"):
            chunk = conn.recv(4096)
            assert chunk, f"connection closed after {reply!r}"
            reply += chunk
        assert reply.startswith(b"R\0\0\0\x08\0\0\0\0")  # AuthenticationOk
        assert b"server_version\x0016.6\x00" in reply


def put_file(container: Any, path: str, text: str) -> None:
    """Write a file into a container (docker cp's archive upload)."""
    data = text.encode()
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        info = tarfile.TarInfo(Path(path).name)
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    assert container.put_archive(str(Path(path).parent), archive.getvalue())


def test_psql_loads_a_pg_dumpall_into_a_scratch_server_as_the_restore_test_does(run: Run) -> None:
    """pg_dumpall in one stand-in, psql -f into a second (scratch) one, then the restore test's query."""
    source = run("postgres", name="pg-source", network_mode="none")  # as the restore test runs its scratch one
    scratch = run("postgres", name="pg-scratch", network_mode="none")
    wait_healthy(source)
    wait_healthy(scratch)
    assert sh(source, "psql", "-U", "homelab", "-d", "postgres", "-c", "CREATE DATABASE media")[:2] == (
        0,
        "CREATE DATABASE\n",
    )
    media = (
        "CREATE TABLE public.standin_files (path text, size bigint, sha256 text, content bytea);\n"
        "COPY public.standin_files (path, size, sha256, content) FROM stdin;\n"
        "notes/a.txt\t5\t2cf24d\t\\\\x68656c6c6f\nnotes/b\\tc.txt\t0\te3b0c4\t\\N\n\\.\n"
    )
    put_file(source, "/tmp/media.sql", media)
    assert sh(source, "psql", "-U", "homelab", "-d", "media", "-f", "/tmp/media.sql") == (
        0,
        "CREATE TABLE\nCOPY 2\n",
        "",
    )
    code, out, err = sh(source, "psql", "-U", "homelab", "-d", "postgres", "-c", "SELECT count(*) FROM pg_database")
    assert (code, out, err) == (0, " count \n-------\n     5\n(1 row)\n\n", "")
    code, dump, err = sh(source, "pg_dumpall", "-U", "homelab")
    assert code == 0, err
    assert "CREATE DATABASE media WITH TEMPLATE" in dump
    assert "\\connect media\n" in dump
    put_file(scratch, "/tmp/dump.sql", dump)

    query = ["psql", "-U", "homelab", "-d", "postgres", "-tA", "-c", "SELECT count(*) FROM pg_database"]
    assert sh(scratch, *query) == (0, "4\n", "")
    code, out, err = sh(scratch, "psql", "-U", "homelab", "-d", "postgres", "-q", "-f", "/tmp/dump.sql")
    # As with the real server: the scratch server's own role and database exist already; psql goes on (exit 0).
    assert code == 0, err
    lines = dump.splitlines()
    role = lines.index("CREATE ROLE homelab;") + 1
    database = next(n for n, line in enumerate(lines, 1) if line.startswith("CREATE DATABASE homelab "))
    table = lines.index(");", lines.index("\\connect homelab")) + 1  # where the statement ends, as psql counts
    assert err.splitlines() == [
        f'psql:/tmp/dump.sql:{role}: ERROR:  role "homelab" already exists',
        f'psql:/tmp/dump.sql:{database}: ERROR:  database "homelab" already exists',
        f'psql:/tmp/dump.sql:{table}: ERROR:  relation "standin_files" already exists',
    ], err
    assert " set_config \n------------\n \n(1 row)\n\n" in out
    assert sh(scratch, *query) == (0, "5\n", "")
    code, out, _ = sh(scratch, *query[:-1], "SELECT datname FROM pg_database")
    assert out.split() == ["homelab", "media", "postgres", "template1"]
    # The restored database's table holds the source's rows (COPY FROM stdin took the dump's data lines).
    in_media = ["psql", "-U", "homelab", "-d", "media", "-tA", "-c"]
    code, out, err = sh(scratch, *in_media, "SELECT count(*) FROM standin_files")
    assert (code, out, err) == (0, "2\n", "")
    code, out, err = sh(scratch, *in_media, "SELECT * FROM standin_files")
    assert (code, out, err) == (0, "notes/a.txt|5|2cf24d|\\x68656c6c6f\nnotes/b\tc.txt|0|e3b0c4|\n", "")

    # A damaged dump: psql goes on without ON_ERROR_STOP (exit 0), stops with it (exit 3).
    put_file(scratch, "/tmp/damaged.sql", "CREATE DATABASE music;\nCREAT DATABASE garbled;\nCREATE DATABASE films;\n")
    load = ["psql", "-U", "homelab", "-d", "postgres", "-q", "-f", "/tmp/damaged.sql"]
    code, out, err = sh(scratch, *load[:-2], "-v", "ON_ERROR_STOP=1", *load[-2:])
    assert (code, out, err) == (3, "", 'psql:/tmp/damaged.sql:2: ERROR:  syntax error at or near "CREAT"\n')
    assert sh(scratch, *query)[1] == "6\n"  # music, not films
    code, _, err = sh(scratch, *load)
    assert code == 0
    assert 'database "music" already exists' in err
    assert sh(scratch, *query)[1] == "7\n"  # films now
    # psql's other exits: a query that fails (1), a missing file (1), no server (2), an unknown option (1).
    code, _, err = sh(scratch, "psql", "-U", "homelab", "-d", "postgres", "-c", "bogus")
    assert (code, err) == (1, 'ERROR:  syntax error at or near "bogus"\n')
    code, _, err = sh(scratch, "psql", "-U", "homelab", "-f", "/tmp/missing.sql")
    assert (code, err) == (1, "psql: error: /tmp/missing.sql: No such file or directory\n")
    code, _, err = sh(scratch, "psql", "-h", "127.0.0.1", "-p", "5999", "-U", "homelab", "-c", "SELECT 1")
    assert code == 2
    assert err.startswith('psql: error: connection to server at "127.0.0.1", port 5999 failed: Connection refused')
    code, _, err = sh(scratch, "psql", "-Z")
    assert code == 1
    assert "invalid option -- 'Z'" in err


# ---------------------------------------------------------------- redis


@pytest.fixture(scope="module")
def redis(engine: Any, run: Run) -> Any:
    volume = engine.volumes.create(f"standin-{RUN}-redis-data", labels={LABEL: RUN})
    container = run("redis", publish=(6379,), volumes={volume.name: {"bind": "/data", "mode": "rw"}})
    wait_healthy(container)
    return container


def test_redis_cli_prints_like_redis_cli(redis: Any) -> None:
    assert sh(redis, "redis-cli", "ping")[:2] == (0, "PONG\n")
    assert sh(redis, "redis-cli", "set", "greeting", "hello world")[1] == "OK\n"
    assert sh(redis, "redis-cli", "get", "greeting")[1] == "hello world\n"
    assert sh(redis, "redis-cli", "get", "missing")[1] == "\n"
    assert sh(redis, "redis-cli", "echo", "x")[1] == "x\n"
    # On a terminal: redis-cli's decorated form.
    assert sh(redis, "redis-cli", "incr", "visits", tty=True)[1] == "(integer) 1\r\n"
    assert sh(redis, "redis-cli", "get", "greeting", tty=True)[1] == '"hello world"\r\n'
    assert sh(redis, "redis-cli", "get", "missing", tty=True)[1] == "(nil)\r\n"
    # Not a terminal: plain.
    assert sh(redis, "redis-cli", "incr", "visits")[1] == "2\n"
    code, out, _ = sh(redis, "redis-cli", "no-such-command")
    assert (code, out) == (0, "ERR unknown command 'no-such-command', with args beginning with: \n\n")
    code, out, err = sh(redis, "redis-cli", "-p", "6390", "ping")
    assert (code, out) == (1, "")
    assert err == "Could not connect to Redis at 127.0.0.1:6390: Connection refused\n"


def test_redis_bgsave_writes_dump_rdb_and_it_is_loaded_after_a_restart(redis: Any) -> None:
    assert sh(redis, "redis-cli", "set", "kept", "across restarts")[1] == "OK\n"
    before = int(sh(redis, "redis-cli", "lastsave")[1])
    time.sleep(1.1)  # LASTSAVE counts whole seconds
    assert sh(redis, "redis-cli", "bgsave")[1] == "Background saving started\n"
    wait_for(lambda: int(sh(redis, "redis-cli", "lastsave")[1]) > before, "LASTSAVE to advance")
    persistence = sh(redis, "redis-cli", "info", "persistence")[1]
    assert "rdb_changes_since_last_save:0\r\n" in persistence
    assert "rdb_last_bgsave_status:ok\r\n" in persistence
    assert sh(redis, "head", "-c", "9", "/data/dump.rdb")[1] == "REDIS0010"
    redis.restart(timeout=5)
    wait_healthy(redis)
    assert sh(redis, "redis-cli", "get", "kept")[1] == "across restarts\n"


def test_redis_speaks_resp_to_the_host(redis: Any) -> None:
    with socket.create_connection((LOOPBACK, host_port(redis, 6379)), timeout=5) as conn:
        conn.sendall(b"*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n")
        reply = b""
        while reply.count(b"\r\n") < 3:
            reply += conn.recv(4096)
    assert reply == b"+PONG\r\n$2\r\nhi\r\n"


# ---------------------------------------------------------------- traefik


@pytest.fixture(scope="module")
def proxy_net(engine: Any) -> Any:
    return engine.networks.create(f"standin-{RUN}-proxy", labels={LABEL: RUN})


def backend_labels(rule: str, *, enable: bool = True) -> dict[str, str]:
    """Labels as compose/render.py writes them for a service with ``proxy:``."""
    labels = {
        "traefik.http.routers.web.rule": rule,
        "traefik.http.routers.web.entrypoints": "web",
        "traefik.http.services.web.loadbalancer.server.port": "8989",
        "traefik.docker.network": f"standin-{RUN}-proxy",
    }
    if enable:
        labels["traefik.enable"] = "true"
    return labels


@pytest.fixture(scope="module")
def traefik(run: Run, proxy_net: Any) -> Any:
    app = run("sonarr", name="app", labels=backend_labels("Host(`app.test`) || Host(`www.app.test`)"))
    proxy_net.connect(app)  # on the default bridge and the proxy network: the label picks the proxy's
    run("sonarr", name="hidden", network=proxy_net.name, labels=backend_labels("Host(`hidden.test`)", enable=False))
    container = run(
        "traefik",
        publish=(80, 443),
        network=proxy_net.name,
        volumes={"/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "ro"}},
    )
    wait_healthy(container)
    return container


def through_proxy(traefik: Any, host: str, path: str = "/_standin/request") -> requests.Response:
    return requests.get(f"http://{LOOPBACK}:{host_port(traefik, 80)}{path}", headers={"Host": host}, timeout=5)


def test_traefik_routes_by_host_rule_to_the_backend(traefik: Any) -> None:
    wait_for(lambda: through_proxy(traefik, "app.test").status_code == 200, "the route to app.test")
    seen = through_proxy(traefik, "app.test").json()
    assert seen["service"] == "sonarr"
    assert seen["host"] == "app.test"
    assert seen["headers"]["X-Forwarded-Host"] == "app.test"
    assert through_proxy(traefik, "www.app.test", "/ping").json() == {"status": "OK"}
    unknown = through_proxy(traefik, "nobody.test", "/")
    assert (unknown.status_code, unknown.text) == (404, "404 page not found\n")
    hidden = through_proxy(traefik, "hidden.test", "/")
    assert hidden.status_code == 404, "a container without traefik.enable=true was routed"
    websecure = requests.get(f"http://{LOOPBACK}:{host_port(traefik, 443)}/", headers={"Host": "app.test"}, timeout=5)
    assert websecure.status_code == 404, "a router limited to the web entry point answered on websecure"
    code, out, _ = sh(traefik, "curl", "-fsS", "-H", "Host: app.test", "http://localhost/ping")
    assert (code, out) == (0, '{"status": "OK"}\n')


def test_traefik_sees_containers_started_after_it(traefik: Any, run: Run, proxy_net: Any) -> None:
    assert through_proxy(traefik, "late.test", "/").status_code == 404
    late = run("sonarr", name="late", network=proxy_net.name, labels=backend_labels("Host(`late.test`)"))
    wait_healthy(late)
    wait_for(lambda: through_proxy(traefik, "late.test", "/").status_code == 200, "the route to late.test")
    assert through_proxy(traefik, "late.test", "/").text == "stand-in for sonarr\n"


def test_traefik_command(traefik: Any, sonarr: Any) -> None:
    assert sh(traefik, "traefik", "healthcheck", "--ping")[:2] == (0, "OK: http://:8080/ping\n")
    code, out, _ = sh(traefik, "traefik", "version")
    assert code == 0
    assert out.startswith("Version:      3.2.3\n")
    # Where nothing listens on :8080, or ping is not enabled, the healthcheck fails as traefik's does.
    code, out, _ = sh(sonarr, "traefik", "healthcheck", "--ping")
    assert code == 1
    assert out.startswith("Error calling healthcheck:")
    assert sh(sonarr, "traefik", "healthcheck")[:2] == (1, "Please enable `ping` to use health check\n")


# ---------------------------------------------------------------- exporters


def test_node_exporter_metrics(run: Run) -> None:
    """As the catalog runs it: host networking, the VM's address from --web.listen-address, / at /host."""
    node = run("node-exporter", address="127.0.5.3", volumes={"/": {"bind": "/host", "mode": "ro"}})
    wait_healthy(node)
    samples = metric_samples(requests.get("http://127.0.5.3:9100/metrics", timeout=5).text)
    with socket.socket() as other:
        assert other.connect_ex(("127.0.5.4", 9100)) != 0, "node-exporter listens beyond its --web.listen-address"
    (total,) = samples["node_memory_MemTotal_bytes"]
    (available,) = samples["node_memory_MemAvailable_bytes"]
    assert 0 < available.value <= total.value
    (size,) = samples["node_filesystem_size_bytes"]
    (avail,) = samples["node_filesystem_avail_bytes"]
    assert size.labels["mountpoint"] == "/"
    assert 0 < avail.value <= size.value
    assert samples["node_load1"][0].value >= 0
    assert any(s.labels["mode"] == "idle" for s in samples["node_cpu_seconds_total"])


def test_cadvisor_sees_the_engines_containers(run: Run) -> None:
    cadvisor = run(
        "cadvisor",
        publish=(8080,),
        volumes={"/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "ro"}},
    )
    wait_healthy(cadvisor)
    samples = metric_samples(requests.get(f"http://{LOOPBACK}:{host_port(cadvisor, 8080)}/metrics", timeout=5).text)
    names = {s.labels["name"] for s in samples["container_last_seen"]}
    assert cadvisor.name in names
    assert samples["machine_memory_bytes"][0].value > 0


# ---------------------------------------------------------------- stopping


@pytest.mark.parametrize("service", ["sonarr", "postgres", "redis", "traefik", "node-exporter", "cadvisor"])
def test_sigterm_stops_the_stand_in_cleanly(run: Run, service: str) -> None:
    """`docker stop -t 2`: a stand-in that ignored SIGTERM would be killed after 2 s and exit 137."""
    container = run(service, name=f"stop-{service}", healthcheck=False, address="127.0.5.5")
    wait_for(lambda: b"kind " in container.logs(), f"{service} to start")
    container.stop(timeout=2)
    container.reload()
    assert not container.attrs["State"]["Running"]
    assert container.attrs["State"]["ExitCode"] == 0
    assert b"stopping" in container.logs()
