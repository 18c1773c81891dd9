"""Kubernetes through the official client: server-side apply of the toolkit's manifests, on the contract.

``objects`` (keys, kind order, the config-hash annotation, kubernetes-validate), ``client`` (the
DynamicClient: get, server-side apply with field manager ``homelab``, delete, list; its errors'
table), ``rollout`` (observedGeneration and replicas, Job ``Complete``, HelmChart install Jobs,
the failing pod's reason and events), ``runbook`` (:class:`KubeManifests`, the adapter any set of
manifests runs on; runbook 04 is :mod:`homelab_lib.k3s.services`).
"""

from typing import TYPE_CHECKING

from homelab_lib.core.lazy import lazy_exports

if TYPE_CHECKING:
    from homelab_lib.kube.client import KUBE_ERRORS, Kube
    from homelab_lib.kube.objects import CONFIG_HASH, MANAGER, RANK, Key, config_hash, key, ordered, sealed, validate
    from homelab_lib.kube.runbook import KubeDesired, KubeManifests, KubeObserved, KubeReport, ObjectState, Probe

__all__ = [
    "CONFIG_HASH",
    "KUBE_ERRORS",
    "MANAGER",
    "RANK",
    "Key",
    "Kube",
    "KubeDesired",
    "KubeManifests",
    "KubeObserved",
    "KubeReport",
    "ObjectState",
    "Probe",
    "config_hash",
    "key",
    "ordered",
    "sealed",
    "validate",
]

# Each name is imported from its module when first used (homelab_lib.core.lazy).
lazy_exports(__name__)
