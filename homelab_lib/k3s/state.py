"""What runbook 03 wants and finds: frozen desired, observed and report states, and the desired state's making.

:func:`desired_state` is the inventory's ``k3s:`` section in K3s's terms: the pinned version, the
install script's URL, and ``/etc/rancher/k3s/config.yaml`` rendered (``tls-san`` with the VM's
address and name, node labels and taints, disabled components, ``write-kubeconfig-mode: "0600"``,
data dir, cluster and service CIDRs). No I/O: the token stays a reference.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from homelab_lib.core.errors import ConfigError, Problem
from homelab_lib.core.secrets import SecretRef

if TYPE_CHECKING:
    import pandas as pd

    from homelab_lib.inventory.model import Inventory

CONFIG_PATH = "/etc/rancher/k3s/config.yaml"
REMOTE_KUBECONFIG = "/etc/rancher/k3s/k3s.yaml"
#: kube-system Deployments that K3s deploys, by the ``disable`` name that turns each off.
COMPONENTS = {
    "coredns": "coredns",
    "local-storage": "local-path-provisioner",
    "metrics-server": "metrics-server",
    "traefik": "traefik",
}


@dataclass(frozen=True)
class K3sDesired:
    """K3s as the inventory wants it on its VM.

    Attributes:
        homelab: the inventory's name (the kubeconfig's cluster, user and context are named so).
        vm: the K3s VM.
        address: the VM's address (the API server the kubeconfig points at).
        version: the pinned K3s release (``v1.31.4+k3s1``).
        install_url: the install script (``curl -sfL URL | sh -s -``).
        config: the content of ``/etc/rancher/k3s/config.yaml``, rendered.
        kubeconfig: where the fetched kubeconfig is kept (None: not kept).
        token: the cluster token's reference (None: K3s makes one and keeps it on the VM).
        components: the kube-system Deployments verify expects available.
        ready_timeout_s: how long the API, the node and kube-system may take to be ready.
        airgap: (binary, sha256, install script) on this machine for an air-gapped install; None: install_url.
        install_sha256: the install script's sha256, checked on the VM before it runs (None: not checked;
            an air-gapped install needs it).
    """

    homelab: str
    vm: str
    address: str
    version: str
    install_url: str
    config: str
    kubeconfig: Path | None
    token: SecretRef | None
    components: tuple[str, ...]
    ready_timeout_s: float
    airgap: tuple[Path, str, Path] | None = None
    install_sha256: str | None = None

    @property
    def where(self) -> str:
        return f"VM {self.vm}"

    def settings(self) -> dict[str, Any]:
        """The rendered config.yaml as data."""
        data = yaml.safe_load(self.config)
        return data if isinstance(data, dict) else {}

    def table(self) -> pd.DataFrame:
        """One row per setting: the version, the install source, each config.yaml key, the kubeconfig, the token."""
        import pandas as pd

        rows = [
            ("version", self.version),
            (
                "install",
                f"curl -sfL {self.install_url} | INSTALL_K3S_VERSION={self.version} INSTALL_K3S_EXEC=server sh -s -",
            ),
        ]
        if self.install_sha256:
            rows.append(("install script sha256", self.install_sha256))
        rows += [(f"config.yaml: {k}", _show(v)) for k, v in self.settings().items()]
        rows += [
            ("kubeconfig", _near(self.kubeconfig) if self.kubeconfig else "- (not kept)"),
            ("token", str(self.token) if self.token else "- (K3s makes one on the VM)"),
            ("verify", ", ".join(self.components) or "-"),
        ]
        return pd.DataFrame(rows, columns=["setting", "value"])


def _show(value: object) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


@dataclass(frozen=True)
class ApiState:
    """What the Kubernetes API answered at observe time (nothing when K3s is not there yet).

    Attributes:
        answered: the API answered /version.
        version: its gitVersion.
        node: the node's name.
        node_ready: the node's Ready condition is True.
        error: why it did not answer, in words.
    """

    answered: bool = False
    version: str = ""
    node: str = ""
    node_ready: bool = False
    error: str = ""


@dataclass(frozen=True)
class K3sObserved:
    """K3s as it is on the VM now (read over SSH and through the API).

    Attributes:
        vm: the VM.
        version: the installed version (``k3s --version``), '' when K3s is not installed.
        config: the content of config.yaml, None when there is none.
        active: ``systemctl is-active k3s`` says active.
        kubeconfig: the local kubeconfig against the VM's: ``current``, ``missing``, ``stale``,
            ``no source`` (the VM has no k3s.yaml yet) or ``not kept`` (k3s.kubeconfig unset).
        api: what the API answered.
    """

    vm: str
    version: str
    config: str | None
    active: bool
    kubeconfig: str
    api: ApiState = field(default_factory=ApiState)

    @property
    def installed(self) -> bool:
        return bool(self.version)

    def table(self) -> pd.DataFrame:
        """One row per fact: installed version, config file, service, kubeconfig, API, node."""
        import pandas as pd

        rows = [
            ("installed version", self.version or "- (not installed)"),
            ("config.yaml", "present" if self.config is not None else "- (none)"),
            ("service k3s", "active" if self.active else "not active"),
            ("kubeconfig", self.kubeconfig),
            ("API /version", self.api.version or (self.api.error or "-")),
            ("node", f"{self.api.node} ({'Ready' if self.api.node_ready else 'not Ready'})" if self.api.node else "-"),
        ]
        return pd.DataFrame(rows, columns=["what", "now"])


@dataclass(frozen=True)
class NodeRow:
    """One node as the API reports it."""

    name: str
    ready: bool
    version: str
    roles: str
    cpu: str
    memory: str


@dataclass(frozen=True)
class ComponentRow:
    """One kube-system Deployment K3s deploys: its replicas ready and whether it is Available."""

    name: str
    ready: str
    available: bool


@dataclass(frozen=True)
class K3sReport:
    """The cluster as verify found it (for the notebook's tables).

    Attributes:
        version: the API's gitVersion ('' when it did not answer).
        readyz: what /readyz answered (``ok`` when ready).
        nodes: each node.
        components: each packaged component expected.
        kubeconfig: the kept kubeconfig's path and mode (``- (not kept)`` when none).
    """

    version: str = ""
    readyz: str = ""
    nodes: tuple[NodeRow, ...] = ()
    components: tuple[ComponentRow, ...] = ()
    kubeconfig: str = ""

    def nodes_table(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(
            [
                {"node": n.name, "ready": "yes" if n.ready else "NO", "version": n.version, "roles": n.roles,
                 "cpu": n.cpu, "memory": n.memory}
                for n in self.nodes
            ],
            columns=["node", "ready", "version", "roles", "cpu", "memory"],
        )  # fmt: skip

    def components_table(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(
            [{"deployment": f"kube-system/{c.name}", "ready": c.ready, "available": "yes" if c.available else "NO"}
             for c in self.components],
            columns=["deployment", "ready", "available"],
        )  # fmt: skip


def render_config(inv: Inventory) -> str:
    """The VM's /etc/rancher/k3s/config.yaml for the inventory (keys in a fixed order)."""
    assert inv.k3s is not None
    k = inv.k3s
    vm = inv.vm(k.vm)
    sans = list(dict.fromkeys([vm.address, vm.name, *k.tls_san]))
    config: dict[str, Any] = {
        "write-kubeconfig-mode": "0600",
        "node-name": vm.name,
        "tls-san": sans,
        "data-dir": k.data_dir,
        "cluster-cidr": str(k.cluster_cidr),
        "service-cidr": str(k.service_cidr),
    }
    if k.node_labels:
        config["node-label"] = [f"{key}={value}" for key, value in sorted(k.node_labels.items())]
    if k.node_taints:
        config["node-taint"] = list(k.node_taints)
    if k.disable:
        config["disable"] = sorted(set(k.disable))
    head = (
        "# Written by homelab runbook 03 (homelab_lib.k3s) from the parameters' k3s: section; edits are overwritten.\n"
    )
    return head + yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def desired_state(inv: Inventory) -> K3sDesired:
    """K3s as the inventory wants it (no I/O).

    Raises:
        ConfigError: the inventory has no ``k3s:`` section.
    """
    if inv.k3s is None:
        where = str(inv.source_files[0]) if inv.source_files else "parameters"
        raise ConfigError([Problem(where, 0, "k3s", "there is no k3s: section; add one (vm, version)")])
    k = inv.k3s
    vm = inv.vm(k.vm)
    components = tuple(dep for name, dep in COMPONENTS.items() if name not in k.disable)
    return K3sDesired(
        homelab=inv.name,
        vm=vm.name,
        address=vm.address,
        version=k.version,
        install_url=k.install_url,
        config=render_config(inv),
        kubeconfig=k.kubeconfig,
        token=k.token,
        components=components,
        ready_timeout_s=k.ready_timeout_s,
        airgap=(k.airgap.binary, k.airgap.sha256, k.airgap.install_script) if k.airgap else None,
        install_sha256=k.install_sha256,
    )


def _near(path: Path) -> str:
    """A path as a table shows it: relative to the working folder when it is close by (``../.lab/...``)."""
    relative = os.path.relpath(path)
    return relative if relative.count("..") <= 2 else str(path)
