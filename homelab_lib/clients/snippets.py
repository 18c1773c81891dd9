"""Writing cloud-init snippets where Proxmox reads them.

The Proxmox VE API has no way to upload a snippet: ``POST
/nodes/{node}/storage/{storage}/upload`` takes ``iso``, ``vztmpl`` and
``import`` content only. A snippet is a file in the ``snippets/`` folder of a
storage whose content includes ``snippets`` (``/var/lib/vz/snippets`` for
``local``), so it is written there directly:

- :class:`SshSnippets` writes over SFTP to each node (``proxmox.snippets.write: ssh``);
- :class:`LocalSnippets` writes into a folder of this machine, where a shared
  storage (NFS, CephFS) is mounted (``proxmox.snippets.write: local``).

Writes are atomic (a temporary name, then a rename) and idempotent: a file of
the same name is replaced by the same content.
"""

from __future__ import annotations

import os
import posixpath
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from homelab_lib.core.errors import NodeUnreachable, ProxmoxError
from homelab_lib.core.secrets import SecretRef

if TYPE_CHECKING:
    pass


class SnippetStore(Protocol):
    """Puts a snippet file where a node's Proxmox reads it."""

    @property
    def storage(self) -> str:
        """The Proxmox storage id the snippets are on."""
        ...

    def put(self, node: str, filename: str, text: str) -> None:
        """Write text as ``snippets/filename`` of the storage, as node sees it."""
        ...


@dataclass(frozen=True)
class LocalSnippets:
    """Snippets written into a folder of this machine (a shared storage mounted here).

    Attributes:
        storage: the Proxmox storage id (content ``snippets``).
        folder: that storage's ``snippets/`` folder as mounted on this machine.
    """

    storage: str
    folder: Path

    def put(self, node: str, filename: str, text: str) -> None:
        """Write the file atomically (node is irrelevant: the storage is shared).

        Raises:
            ProxmoxError: the folder cannot be written.
        """
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".homelab-", dir=self.folder)
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.folder / filename)
        except OSError as e:
            raise ProxmoxError(
                f"cannot write snippet {filename} into {self.folder}: {e.strerror}",
                node=node,
                hint="check proxmox.snippets.dir is where the snippets storage is mounted, and writable",
            ) from e


@dataclass(frozen=True)
class SshSnippets:
    """Snippets written over SFTP to each node.

    Attributes:
        storage: the Proxmox storage id (content ``snippets``).
        folder: that storage's ``snippets/`` folder on the nodes.
        hosts: node -> SSH address (a node missing here is reached by its name).
        user: the SSH user on the nodes (root, or a user who may write the folder).
        port: the SSH port.
        private_key: reference to the private key (revealed at connect time).
        known_hosts: the known_hosts file the nodes' host keys are checked against.
        timeout_s: connect timeout.
    """

    storage: str
    folder: str
    hosts: Mapping[str, str]
    user: str
    port: int
    private_key: SecretRef
    known_hosts: Path
    timeout_s: float = 15.0

    def put(self, node: str, filename: str, text: str) -> None:
        """Write the file on node, atomically.

        Raises:
            HostKeyRejected: the node's host key is not the one ssh.known_hosts has.
            SshError: the node's SSH cannot be reached, or the login is refused.
            NodeUnreachable: the file cannot be written.
        """
        import paramiko  # here: runbooks that write no snippet do not pay for its import

        from homelab_lib.hosts.ssh import SshTarget, connect, sftp_makedirs, sftp_replace

        host = self.hosts.get(node, node)
        target = SshTarget(
            host=node,
            address=host,
            port=self.port,
            user=self.user,
            key=self.private_key,
            known_hosts=self.known_hosts,
            timeout=self.timeout_s,
            role="node",
        )
        client = connect(target)
        try:
            with client.open_sftp() as sftp:
                sftp_makedirs(sftp, self.folder)
                sftp_replace(sftp, posixpath.join(self.folder, filename), text.encode(), 0o644)
        except (OSError, paramiko.SSHException) as e:
            raise NodeUnreachable(
                f"cannot write snippet {filename} to {host}:{self.folder}: {e}",
                node=node,
                hint="check proxmox.snippets (hosts, dir) and that the node is up",
            ) from e
        finally:
            client.close()
