"""The server's settings: K3s's flags and config-file keys, plus the lab's own knobs."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_VERSION = "v1.31.4+k3s1"
DEFAULT_DATA_DIR = Path("/var/lib/rancher/k3s")
DEFAULT_KUBECONFIG = Path("/etc/rancher/k3s/k3s.yaml")
DEFAULT_CONFIG = Path("/etc/rancher/k3s/config.yaml")
COMPONENTS = ("coredns", "servicelb", "traefik", "local-storage", "metrics-server", "runtimes")


@dataclass(frozen=True)
class Config:
    """What ``k3s server`` runs with (see the package docstring for the flags and keys)."""

    data_dir: Path = DEFAULT_DATA_DIR
    bind_address: str = "0.0.0.0"
    advertise_address: str = ""
    https_port: int = 6443
    tls_san: tuple[str, ...] = ()
    disable: tuple[str, ...] = ()
    node_name: str = field(default_factory=lambda: socket.gethostname().lower())
    node_labels: tuple[str, ...] = ()
    node_taints: tuple[str, ...] = ()
    node_ip: str = ""
    cluster_cidr: str = "10.42.0.0/16"
    service_cidr: str = "10.43.0.0/16"
    token: str = ""
    write_kubeconfig: Path = DEFAULT_KUBECONFIG
    write_kubeconfig_mode: str = ""
    version: str = field(default_factory=lambda: os.environ.get("HOMELAB_K3S_VERSION", DEFAULT_VERSION))
    node_cpu: str = "2"
    node_memory: str = "4Gi"
    broken_charts: tuple[str, ...] = ()
    runtime: str = "docker"
    ingress_ports: tuple[int, int] = (80, 443)

    @property
    def address(self) -> str:
        """The address clients reach: advertise-address, else bind-address (0.0.0.0: 127.0.0.1)."""
        if self.advertise_address:
            return self.advertise_address
        return self.bind_address if self.bind_address not in ("0.0.0.0", "::", "") else "127.0.0.1"

    @property
    def host_ip(self) -> str:
        return self.node_ip or self.address

    @property
    def server_dir(self) -> Path:
        return self.data_dir / "server"

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "storage"

    @property
    def pods_dir(self) -> Path:
        return self.data_dir / "agent" / "pods"

    def disabled(self, component: str) -> bool:
        return component in self.disable
