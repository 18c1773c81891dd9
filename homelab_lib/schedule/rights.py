"""What a scheduled runbook may do on the cluster: its ServiceAccount's rights, and the pod's kubeconfig.

A CronJob (:mod:`homelab_lib.schedule.cronjob`) runs its runbook under a ServiceAccount of its own with
only the rights that runbook needs, and a kubeconfig whose user is that ServiceAccount's token (mounted
by Kubernetes into the pod, bound to it, never in a Secret). What each runbook needs (``<homelab>``:
the inventory's name):

=========================  ==================  ============================================================
runbook                    needs the cluster   the ServiceAccount's rights
=========================  ==================  ============================================================
00_inventory               no                  none, and no token mounted: it reads the parameters only
01_provision_nodes         the run Lease       kube-system: ``leases`` create; ``leases/homelab-run-<homelab>``
02_deploy_compose_core                         get, update (Proxmox and the VMs it reaches with the
07_monitoring                                  parameters' own credentials, not the cluster's)
06_verify_backups          the run Lease and   the Lease's; in each K3s service's namespace:
                           the PVC layer       ``persistentvolumeclaims`` get, list; ``pods``, ``events`` list;
                           (``layers`` with    ``deployments``, ``statefulsets`` get, list;
                           ``k3s``)            ``deployments/scale``, ``statefulsets/scale`` patch (the
                                               ``stop`` hook); cluster: ``persistentvolumes`` get
03_bootstrap_k3s           refused             they change the cluster itself (install K3s, apply objects in
04_deploy_k3s_services                         namespaces of their own, move services): a pod of theirs
05_migrate_service                             would need cluster-admin; schedule them with a timer where
                                               the kubeconfig lives
=========================  ==================  ============================================================

The pod's kubeconfig (``k3s.kubeconfig`` rewritten to it) names the cluster as the operator's does
(server, CA) and the ServiceAccount's mounted token as its user: the cluster-admin kubeconfig is never
carried. With it the pod's run takes the run Lease (:mod:`homelab_lib.kube.lease`), so a CronJob's run
and a laptop's never overlap; the server address must be one the pod reaches (the VM's address, as
runbook 03 writes it). A runbook that needs no cluster gets no kubeconfig and no token.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from homelab_lib.core.errors import ConfigError, Problem
from homelab_lib.inventory import Inventory
from homelab_lib.kube import lease

TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"  # the ServiceAccount's token, as mounted


def _bad(where: str, message: str) -> ConfigError:
    return ConfigError([Problem(where, 0, "", message)])


def _here(path: Path, folder: Path) -> Path:
    path = path.expanduser()
    return path if path.is_absolute() else (folder / path).resolve()


@dataclass(frozen=True)
class Rule:
    """One RBAC rule of a scheduled run's ServiceAccount: verbs on resources of an API group (some names only)."""

    api_group: str
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    names: tuple[str, ...] = ()

    def manifest(self) -> dict[str, Any]:
        rule: dict[str, Any] = {"apiGroups": [self.api_group], "resources": list(self.resources),
                                "verbs": list(self.verbs)}  # fmt: skip
        if self.names:
            rule["resourceNames"] = list(self.names)
        return rule


@dataclass(frozen=True)
class Rights:
    """What one runbook needs of the cluster when a CronJob runs it (the module's table says it in words).

    Attributes:
        lease: the run Lease (kube-system): a run that changes the homelab must not overlap another.
        claims: runbook 06's PVC layer: read the K3s services' claims and volumes, stop their workloads.
        refused: why the runbook is not scheduled on K3s ('' when it is).
    """

    lease: bool = False
    claims: bool = False
    refused: str = ""


_CLUSTER_ADMIN = (
    "{} changes the cluster itself ({}): a pod of it would need cluster-admin's rights; schedule it with a "
    "timer where the kubeconfig lives (homelab schedule without --k3s)"
)
#: Each runbook's needs, by its notebook's name (a notebook not here is not scheduled on K3s).
RIGHTS: dict[str, Rights] = {
    "00_inventory": Rights(),
    "01_provision_nodes": Rights(lease=True),
    "02_deploy_compose_core": Rights(lease=True),
    "03_bootstrap_k3s": Rights(refused=_CLUSTER_ADMIN.format("03_bootstrap_k3s", "it installs K3s")),
    "04_deploy_k3s_services": Rights(
        refused=_CLUSTER_ADMIN.format("04_deploy_k3s_services", "it applies objects in namespaces of its own")
    ),
    "05_migrate_service": Rights(refused=_CLUSTER_ADMIN.format("05_migrate_service", "it moves services onto it")),
    "06_verify_backups": Rights(lease=True, claims=True),
    "07_monitoring": Rights(lease=True),
}
_LEASES = "coordination.k8s.io", ("leases",)
#: In each K3s service's namespace, for runbook 06's PVC layer (targets, locate, the ``stop`` hook, rollout waits).
CLAIM_RULES = (
    Rule("", ("persistentvolumeclaims",), ("get", "list")),
    Rule("", ("pods", "events"), ("list",)),
    Rule("apps", ("deployments", "statefulsets"), ("get", "list")),
    Rule("apps", ("deployments/scale", "statefulsets/scale"), ("patch",)),
)
#: Cluster-wide, for the PVC layer: where a claim's volume is on the VM.
VOLUME_RULES = (Rule("", ("persistentvolumes",), ("get",)),)


def lease_rules(homelab: str) -> tuple[Rule, ...]:
    """The run Lease of a homelab: create it (a create names no object), get and update only it."""
    return (Rule(*_LEASES, ("create",)), Rule(*_LEASES, ("get", "update"), (lease.lease_name(homelab or "default"),)))


def rights_of(notebook: Path, parameters: Mapping[str, Any]) -> Rights:
    """What the runbook needs of the cluster (:data:`RIGHTS`), its parameters taken into account.

    Raises:
        ConfigError: the runbook is not scheduled on K3s (it changes the cluster itself), or is unknown.
    """
    rights = RIGHTS.get(notebook.stem)
    if rights is None:
        raise _bad(
            str(notebook),
            "no rights are known for this notebook, so its pod would have none it needs or more than it needs; "
            "add it to homelab_lib.schedule.rights.RIGHTS (what it needs of the cluster), or schedule it with a "
            "timer (homelab schedule without --k3s)",
        )
    if rights.refused:
        raise _bad(str(notebook), rights.refused)
    layers = parameters.get("layers")
    if rights.claims and isinstance(layers, list | tuple) and "k3s" not in layers:
        return Rights(lease=rights.lease)  # runbook 06 without its PVC layer
    return rights


def roles_of(inv: Inventory, rights: Rights) -> tuple[tuple[str, tuple[Rule, ...]], ...]:
    """The ServiceAccount's rights: (namespace, rules) per Role, ('', rules) for the ClusterRole."""
    roles: list[tuple[str, tuple[Rule, ...]]] = []
    if rights.lease:
        roles.append((lease.NAMESPACE, lease_rules(inv.name)))
    spaces = sorted(inv.k3s.services) if rights.claims and inv.k3s is not None else []
    roles += [(space, CLAIM_RULES) for space in spaces if space != lease.NAMESPACE]
    if spaces:
        roles.append(("", VOLUME_RULES))
    return tuple(roles)


def pod_kubeconfig(source: Path, homelab: str, namespace: str, account: str) -> str:
    """The pod's kubeconfig: the cluster (server, CA) of the operator's kubeconfig, the ServiceAccount's token.

    Only what is public is taken from ``source`` (it holds cluster-admin's key: never carried).

    Raises:
        ConfigError: source is not there, or names no cluster with a server.
    """
    where = f"k3s.kubeconfig ({source})"
    if not source.is_file():
        raise _bad(where, "is not a file here; run 03_bootstrap_k3s (it fetches the kubeconfig)")
    try:
        data = yaml.safe_load(source.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise _bad(where, f"cannot be read as a kubeconfig ({e.__class__.__name__})") from None
    contexts = {c.get("name"): c.get("context") or {} for c in data.get("contexts") or [] if isinstance(c, dict)}
    clusters = {c.get("name"): c.get("cluster") or {} for c in data.get("clusters") or [] if isinstance(c, dict)}
    named = contexts.get(data.get("current-context"), {}).get("cluster")
    cluster = clusters.get(named) or (next(iter(clusters.values())) if len(clusters) == 1 else {})
    if not cluster.get("server"):
        raise _bad(where, "names no cluster with a server; run 03_bootstrap_k3s (it fetches the kubeconfig)")
    kept = {k: cluster[k] for k in ("server", "certificate-authority-data", "tls-server-name") if k in cluster}
    if "certificate-authority" in cluster and "certificate-authority-data" not in kept:
        ca = _here(Path(str(cluster["certificate-authority"])), source.parent)
        try:
            kept["certificate-authority-data"] = base64.b64encode(ca.read_bytes()).decode()
        except OSError as e:
            raise _bad(where, f"its certificate-authority {ca} cannot be read ({e.strerror})") from None
    user = f"system:serviceaccount:{namespace}:{account}"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": homelab, "cluster": kept}],
        "users": [{"name": user, "user": {"tokenFile": TOKEN_FILE}}],
        "contexts": [{"name": homelab, "context": {"cluster": homelab, "user": user, "namespace": namespace}}],
        "current-context": homelab,
    }
    return yaml.safe_dump(config, sort_keys=False)


__all__ = [
    "CLAIM_RULES",
    "RIGHTS",
    "TOKEN_FILE",
    "VOLUME_RULES",
    "Rights",
    "Rule",
    "lease_rules",
    "pod_kubeconfig",
    "rights_of",
    "roles_of",
]
