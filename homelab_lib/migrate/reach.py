"""What a move reaches: the Docker VM and the K3s VM from one host pool, and the cluster.

Both VMs are :class:`~homelab_lib.hosts.docker.DockerHost`\\s of the
:class:`~homelab_lib.hosts.docker.HostPool` the move was given: the Docker VM for its engine (the
Compose containers and volumes) and its SSH channels (the stream's source, checksum manifests), the
K3s VM for its SSH channels only (the PV folders, ``df``). The move keeps no connection of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from homelab_lib.hosts.docker import DockerClient, DockerHost
from homelab_lib.kube.client import Kube


@dataclass(frozen=True)
class Reach:
    """The hosts and the cluster one move works on.

    Attributes:
        docker: the service's Docker VM.
        k3s: the K3s VM.
        open_kube: the cluster client (opened once, at its first use, by the adapter).
    """

    docker: DockerHost
    k3s: DockerHost
    open_kube: Callable[[], Kube]

    @property
    def kube(self) -> Kube:
        return self.open_kube()

    @property
    def where_docker(self) -> str:
        return self.docker.where

    @property
    def where_k3s(self) -> str:
        t = self.k3s.target
        return f"{t.role} {t.host} (ssh {t.endpoint})"

    def engine(self) -> DockerClient:
        """The Docker VM's docker SDK client."""
        return self.docker.docker()


__all__ = ["Reach"]
