"""The stand-in program of the lab's service images: built from Go sources, laid out in an image.

No registry is reachable from the lab, so each catalog service runs as a small
stand-in image tagged under the catalog's real name. Its program is one static
Go binary (``lab/standin/*.go``, standard library only) with several names,
chosen by ``argv[0]`` as busybox does:

- ``standin``: the entrypoint; serves the service (configured by ``STANDIN_*``).
- ``curl``: the options healthchecks use (``-fsS -o FILE -L -m N -H -w``); exit
  0, 22 (HTTP >= 400 with ``-f``), 7 (cannot connect), 28 (timeout).
- ``pg_isready``: ``-h -p -U -d -t -q``; ``HOST:PORT - accepting connections``
  (0) or ``- no response`` (2); no ``-h`` means the unix socket, as with libpq.
- ``pg_dump`` / ``pg_dumpall``: a plain-format SQL dump of the stand-in's data
  directory, through the server (so it fails when the server is down).
- ``psql``: ``-h -p -U -d -q -t -A -c SQL -f FILE -v NAME=VALUE`` (and ``-X``, ``-w``);
  runs a script (such as a ``pg_dumpall`` file: its ``\\connect`` lines client-side,
  ``COPY ... FROM stdin`` data up to ``\\.``) statement by statement, prints results
  as psql does (aligned, or ``-A`` unaligned, ``-t`` tuples only), errors as
  ``psql:FILE:LINE: ERROR:  ...``; exit 0, 1 (unreadable file, failed ``-c``),
  2 (cannot connect), 3 (an error with ``ON_ERROR_STOP``).
- ``redis-cli``: ``[-h] [-p] [-a] [-n] CMD ARGS``; replies printed as redis-cli
  prints them (decorated on a terminal, plain otherwise).
- ``traefik``: ``healthcheck --ping``, ``version``; otherwise it serves.

The entrypoint reads ``STANDIN_SERVICE`` (name), ``STANDIN_KIND`` (one of
:data:`KINDS`), ``STANDIN_PORTS`` (``"8989 9000/udp"``), ``STANDIN_HEALTH`` (an
HTTP path or ``tcp``), ``STANDIN_VOLUMES`` (paths) and ``STANDIN_VERSION`` (a
leading ``v`` is dropped); :func:`service_env` derives them from a catalog
service. It keeps real files in every volume (``standin-<service>.id`` made on first boot, a
line per boot in ``boots.log``), serves every port until SIGTERM or SIGINT, and:

- ``http``: ``/`` and the health path answer 200 (``/ping`` as the *arr apps do),
  other paths 404; ``/metrics`` is Prometheus text (``standin_up``,
  ``standin_http_requests_total{path}``, ``process_start_time_seconds``, ...);
  ``/_standin/request`` echoes the request as JSON (host, headers: what a proxy sent).
- ``node-exporter`` / ``cadvisor``: the same, plus node series (memory from
  /proc/meminfo, the root filesystem by statfs of ``--path.rootfs``, load, CPU)
  or container series (``container_last_seen`` per container when the Docker
  socket is mounted).

Every kind but traefik honours ``--web.listen-address=[HOST]:PORT`` (as
node-exporter and Prometheus do: the catalog's host-networked node-exporter binds
its VM's address so) and ignores other arguments; traefik reads its own flags.
- ``postgres``: the PostgreSQL protocol (simple queries only) on the first port and on
  ``/var/run/postgresql/.s.PGSQL.<port>`` (SSLRequest answered ``N``, trust on
  the socket, a cleartext password over TCP when ``POSTGRES_PASSWORD(_FILE)`` is
  set, roles and databases from ``POSTGRES_USER``/``POSTGRES_DB``); the data
  directory (``PGDATA``, else the first volume) gets ``PG_VERSION``, ``base/``,
  ``global/`` on first boot and ``postmaster.pid`` while it runs. Its one table,
  ``standin_files``, lists the data directory (path, size, sha256, small files'
  content): that is what ``pg_dump`` writes as ``COPY`` data. It runs what its
  ``pg_dumpall`` writes (``CREATE/ALTER ROLE``, ``CREATE/ALTER DATABASE``, ``CREATE
  TABLE``, ``COPY ... FROM stdin``; unknown first words are syntax errors) and
  ``SELECT count(*) FROM pg_database`` (and pg_roles, tables); what they make is
  kept in memory only, so a restart forgets it.
- ``redis``: RESP on the first port (PING, ECHO, SET/GET/DEL/INCR/EXPIRE, KEYS,
  SAVE, BGSAVE, LASTSAVE, INFO, CONFIG GET); ``dump.rdb`` (a real RDB file) in the
  first volume, written by SAVE, BGSAVE and at shutdown, loaded at start.
- ``traefik``: entry points from ``TRAEFIK_ENTRYPOINTS_<NAME>_ADDRESS`` (or
  ``--entrypoints.<name>.address``), ``/ping`` on the ``traefik`` entry point
  (:8080) when ``TRAEFIK_PING`` is set, and traefik's docker provider
  (``TRAEFIK_PROVIDERS_DOCKER``): containers from the Engine API on
  /var/run/docker.sock, refreshed every 2 s, routed by ``Host(`a`) || Host(`b`)``
  rules to ``loadbalancer.server.port`` on ``traefik.docker.network`` (else a
  network traefik shares with them); unknown hosts get ``404 page not found``.

Image layout (:func:`dockerfile`; each service's image is :func:`service_dockerfile` on it)::

    FROM scratch
    /bin/busybox, and `busybox --install -s /bin` (sh, wget, nc, ...)
    /usr/local/bin/standin                      the entrypoint
    /usr/bin/curl, /usr/bin/pg_isready, /usr/bin/redis-cli, /usr/bin/pg_dump,
    /usr/bin/pg_dumpall, /usr/bin/psql, /usr/local/bin/traefik  symlinks to it
    /etc/passwd, /etc/group (root), /tmp (1777), /var/run
    ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    ENTRYPOINT ["/usr/local/bin/standin"]

Building needs Go >= 1.19 (Debian's ``golang-go``) and nothing from the network:
:func:`build_binary` compiles with ``CGO_ENABLED=0 -trimpath -ldflags='-s -w'``
into a folder the caller gives (Go's caches too, so nothing is written to
``$HOME``), and reuses the binary while the sources are unchanged.
"""

from __future__ import annotations

import json
import os
import platform
import struct
import subprocess
from collections.abc import Mapping
from pathlib import Path

from homelab_lab.common import digest
from homelab_lab.errors import LabError
from homelab_lib.inventory.model import Service

SOURCE_DIR = Path(__file__).with_name("standin")
BINARY = "/usr/local/bin/standin"
APPLETS = (
    "/usr/bin/curl",
    "/usr/bin/pg_isready",
    "/usr/bin/redis-cli",
    "/usr/local/bin/traefik",
    "/usr/bin/pg_dump",
    "/usr/bin/pg_dumpall",
    "/usr/bin/psql",
)
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
KINDS = ("http", "postgres", "redis", "traefik", "node-exporter", "cadvisor")
BUSYBOX = Path("/bin/busybox")
GO_HINT = "apt-get install golang-go"
LDFLAGS = "-s -w"
BUILD_FLAGS = ("-trimpath", "-buildvcs=false", f"-ldflags={LDFLAGS}")
_GOARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm"}
_KIND_OF_SERVICE = {
    "postgres": "postgres",
    "redis": "redis",
    "traefik": "traefik",
    "node-exporter": "node-exporter",
    "cadvisor": "cadvisor",
}


def kind_for(service: str) -> str:
    """The stand-in kind (``STANDIN_KIND``) for a catalog service name: ``http`` unless it has its own."""
    return _KIND_OF_SERVICE.get(service, "http")


def go_arch(machine: str | None = None) -> str:
    """GOARCH for a machine name (``platform.machine()`` by default); LabError for one Go cannot target here."""
    machine = machine or platform.machine()
    try:
        return _GOARCH[machine]
    except KeyError:
        raise LabError(f"no Go architecture known for machine {machine!r}", where="stand-in program") from None


def sources(src: Path = SOURCE_DIR) -> dict[str, bytes]:
    """The program's sources by file name: the ``*.go`` files (tests included) and ``go.mod``."""
    files = sorted([*src.glob("*.go"), src / "go.mod"])
    try:
        return {path.name: path.read_bytes() for path in files}
    except OSError as e:
        raise LabError(f"cannot read the stand-in sources: {e}", where=str(src)) from None


def source_digest(src: Path = SOURCE_DIR, goarch: str | None = None) -> str:
    """A hash of the sources, the build flags and the target: the key of a cached binary."""
    files = sources(src)
    parts = [part for name in sorted(files) for part in (name, files[name])]
    return digest("standin", "linux", goarch or go_arch(), *BUILD_FLAGS, *parts)


def is_static_elf(data: bytes) -> bool:
    """True for an ELF executable with no program interpreter (PT_INTERP), i.e. statically linked."""
    if data[:4] != b"\x7fELF" or len(data) < 64:
        return False
    end = "<" if data[5] == 1 else ">"
    if data[4] == 2:  # 64-bit
        (phoff,) = struct.unpack_from(end + "Q", data, 32)
        phentsize, phnum = struct.unpack_from(end + "HH", data, 54)
    else:
        (phoff,) = struct.unpack_from(end + "I", data, 28)
        phentsize, phnum = struct.unpack_from(end + "HH", data, 42)
    for i in range(phnum):
        at = phoff + i * phentsize
        if at + 4 > len(data):
            return False
        (p_type,) = struct.unpack_from(end + "I", data, at)
        if p_type == 3:  # PT_INTERP: needs a dynamic loader
            return False
    return True


def go_env(cache_dir: Path, goarch: str) -> dict[str, str]:
    """The environment of ``go``: caches under cache_dir, no network, no cgo, the user's Go settings ignored."""
    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(cache_dir),
        "GOCACHE": str(cache_dir / "go-build"),
        "GOPATH": str(cache_dir / "go-path"),
        "GOMODCACHE": str(cache_dir / "go-path" / "mod"),
        "GOENV": "off",
        "GOFLAGS": "",
        "GOPROXY": "off",
        "GOTOOLCHAIN": "local",
        "GO111MODULE": "on",
        "CGO_ENABLED": "0",
        "GOOS": "linux",
        "GOARCH": goarch,
        "TMPDIR": os.environ.get("TMPDIR", "/tmp"),
    }


def _run_go(go: str, args: list[str], src: Path, env: dict[str, str], what: str) -> str:
    try:
        done = subprocess.run([go, *args], cwd=src, env=env, capture_output=True, text=True, timeout=900, check=False)
    except FileNotFoundError:
        raise LabError(
            f"the Go toolchain ({go!r}) is not installed; the lab compiles its stand-in program with it",
            where="stand-in program",
            hint=GO_HINT,
        ) from None
    except subprocess.TimeoutExpired:
        raise LabError(f"{what} did not finish in 15 minutes", where=str(src), hint=GO_HINT) from None
    if done.returncode != 0:
        output = "\n".join((done.stdout + done.stderr).strip().splitlines()[-30:])
        raise LabError(
            f"{what} failed (exit {done.returncode}):\n{output}",
            where=str(src),
            hint=f"{GO_HINT} (Go >= 1.19); the sources use the standard library only",
        )
    return done.stdout + done.stderr


def build_binary(out_dir: Path, *, go: str = "go", src: Path = SOURCE_DIR, goarch: str | None = None) -> Path:
    """Compile the stand-in program into out_dir, or reuse the build of the same sources.

    The binary is ``out_dir/standin-<hash>``, where the hash covers the sources,
    the flags and the target; Go's build cache is ``out_dir/go-build``. Builds of
    other sources are removed. Concurrent builds are safe (each writes a temporary
    file and renames it).

    Args:
        out_dir: where the binary and Go's caches go (created if missing).
        go: the ``go`` command.
        src: the folder of the Go sources.
        goarch: the target architecture (default: this machine's).

    Returns:
        The path of the static binary.

    Raises:
        LabError: ``go`` is missing, the build fails (with go's output), or the result is not static.
    """
    arch = goarch or go_arch()
    key = source_digest(src, arch)[:16]
    out_dir.mkdir(parents=True, exist_ok=True)
    binary = out_dir / f"standin-{key}"
    if binary.is_file():
        return binary
    tmp = out_dir / f".standin-{key}.{os.getpid()}.tmp"
    env = go_env(out_dir.resolve(), arch)
    try:
        _run_go(go, ["build", *BUILD_FLAGS, "-o", str(tmp.resolve()), "."], src, env, "building the stand-in program")
        if not is_static_elf(tmp.read_bytes()):
            raise LabError("the program was not linked statically", where=str(tmp), hint="build with CGO_ENABLED=0")
        tmp.chmod(0o755)
        tmp.replace(binary)
    finally:
        tmp.unlink(missing_ok=True)
    for old in out_dir.glob("standin-*"):
        if old != binary and old.is_file():
            old.unlink(missing_ok=True)
    return binary


def run_go_tests(out_dir: Path, *, go: str = "go", src: Path = SOURCE_DIR) -> str:
    """Run the program's Go unit tests (``go test``) with the same environment; returns go's output.

    Raises:
        LabError: ``go`` is missing or a test fails (with go's output).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    env = go_env(out_dir.resolve(), go_arch())
    return _run_go(go, ["test", "-count=1", "."], src, env, "the stand-in program's Go tests")


def dockerfile() -> str:
    """The Dockerfile of the stand-in base image: busybox and the program ``FROM scratch`` (module docstring)."""
    links = " ".join(APPLETS)
    setup = (
        "set -e; /bin/busybox mkdir -p /usr/bin /usr/sbin /usr/local/sbin /etc /root /tmp /var/run; "
        "/bin/busybox --install -s /bin; chmod 1777 /tmp; "
        "echo root:x:0:0:root:/root:/bin/sh >/etc/passwd; echo root:x:0: >/etc/group; "
        f"for a in {links}; do ln -s {BINARY} $a; done"
    )
    return (
        "FROM scratch\n"
        "COPY busybox /bin/busybox\n"
        f"COPY standin {BINARY}\n"
        f'RUN ["/bin/busybox", "sh", "-c", "{setup}"]\n'
        f"ENV PATH={PATH}\n"
        f'ENTRYPOINT ["{BINARY}"]\n'
    )


def image_version(image: str) -> str:
    """The version in an image reference's tag (``docker.io/library/postgres:16.6`` -> ``16.6``), or ``""``."""
    tail = image.rsplit("/", 1)[-1]
    if "@" in tail or ":" not in tail:
        return ""
    return tail.split(":", 1)[1]


def service_env(name: str, service: Service) -> dict[str, str]:
    """The environment a service's stand-in image carries: ``STANDIN_*`` and what the real image sets.

    The real postgres image sets ``PGDATA`` (where pg_dump's stand-in reads the data
    directory); everything else the service needs comes from the catalog's
    ``environment`` at run time, as with the real image.
    """
    env = {
        "STANDIN_SERVICE": name,
        "STANDIN_KIND": kind_for(name),
        "STANDIN_PORTS": " ".join(f"{p.container}/{p.protocol}" for p in service.ports),
        "STANDIN_HEALTH": service.health,
        "STANDIN_VOLUMES": " ".join(service.volumes.values()),
    }
    if version := image_version(service.image):
        env["STANDIN_VERSION"] = version
    if kind_for(name) == "postgres":
        env["PGDATA"] = next(iter(service.volumes.values()), "/var/lib/postgresql/data")
    return env


def service_dockerfile(base: str, name: str, service: Service, labels: Mapping[str, str] | None = None) -> str:
    """The Dockerfile of one service's stand-in on the base image (:func:`dockerfile`): env, labels, ports.

    No ``HEALTHCHECK``: the Compose file carries the catalog's real one. The ports are
    ``EXPOSE``d, as in the real images, so traefik's docker provider finds a port
    when a router names none.
    """
    lines = [f"FROM {base}", "ENV " + " ".join(f"{k}={json.dumps(v)}" for k, v in service_env(name, service).items())]
    if labels:
        lines.append("LABEL " + " ".join(f"{k}={json.dumps(v)}" for k, v in labels.items()))
    if service.ports:
        lines.append("EXPOSE " + " ".join(f"{p.container}/{p.protocol}" for p in service.ports))
    if service.volumes and kind_for(name) == "redis":
        lines.append(f"WORKDIR {next(iter(service.volumes.values()))}")
    return "\n".join(lines) + "\n"


def image_files(out_dir: Path, *, busybox: Path = BUSYBOX) -> dict[str, tuple[bytes, int]]:
    """The build context of the base image: name -> (content, mode) for ``Dockerfile``, ``busybox``, ``standin``.

    Args:
        out_dir: the build folder given to :func:`build_binary`.
        busybox: a statically linked busybox (Debian's ``busybox-static``).

    Raises:
        LabError: busybox is missing or not static, or the program cannot be built.
    """
    hint = "apt-get install busybox-static"
    try:
        box = busybox.read_bytes()
    except OSError:
        raise LabError(f"{busybox} is missing", where="stand-in images", hint=hint) from None
    if not is_static_elf(box):
        raise LabError(f"{busybox} is not a statically linked program", where="stand-in images", hint=hint)
    return {
        "Dockerfile": (dockerfile().encode(), 0o644),
        "busybox": (box, 0o755),
        "standin": (build_binary(out_dir).read_bytes(), 0o755),
    }
