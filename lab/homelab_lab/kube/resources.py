"""The kinds the stand-in serves: group, version, plural, scope, short names, subresources.

Built-in kinds are listed here; kinds defined by a stored CustomResourceDefinition are
added at run time by :class:`Registry` (HelmChart is one of those in K3s, but it is
built in here so a fresh server serves it as K3s does).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class Kind:
    """One served kind.

    Attributes:
        group: API group ('' for the core group).
        version: API version within the group.
        kind: the object kind, e.g. ``Deployment``.
        plural: the resource name in URLs, e.g. ``deployments``.
        namespaced: True for namespaced kinds.
        short: short names (``deploy``).
        status: True when the kind has a ``/status`` subresource.
        scale: True when the kind has a ``/scale`` subresource.
        generation: True when ``metadata.generation`` is kept (bumped on spec changes).
        schema: the OpenAPI definition name of the kind, or '' for a CRD-defined kind.
        categories: e.g. ``("all",)``.
        crd: the openAPIV3Schema of a CRD-defined kind (None for built-ins).
        printer_columns: a CRD's additionalPrinterColumns.
    """

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    short: tuple[str, ...] = ()
    status: bool = False
    scale: bool = False
    generation: bool = False
    schema: str = ""
    categories: tuple[str, ...] = ()
    crd: dict[str, Any] | None = field(default=None, compare=False, hash=False)
    printer_columns: tuple[dict[str, Any], ...] = field(default=(), compare=False, hash=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def resource(self) -> str:
        """``plural.group`` as RBAC messages and Status details name it."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def key(self) -> str:
        """The store's key for this kind: ``group/plural``."""
        return f"{self.group}/{self.plural}"


def _k(gv: str, kind: str, plural: str, namespaced: bool, schema: str, **kw: Any) -> Kind:
    group, _, version = gv.rpartition("/")
    return Kind(group, version, kind, plural, namespaced, schema=schema, **kw)


CORE = "io.k8s.api.core.v1."
ALL = ("all",)
BUILTIN: tuple[Kind, ...] = (
    _k("v1", "Namespace", "namespaces", False, CORE + "Namespace", short=("ns",), status=True),
    _k("v1", "Node", "nodes", False, CORE + "Node", short=("no",), status=True),
    _k("v1", "Pod", "pods", True, CORE + "Pod", short=("po",), status=True, categories=ALL),
    _k("v1", "Service", "services", True, CORE + "Service", short=("svc",), status=True, categories=ALL),
    _k("v1", "Endpoints", "endpoints", True, CORE + "Endpoints", short=("ep",)),
    _k("v1", "ConfigMap", "configmaps", True, CORE + "ConfigMap", short=("cm",)),
    _k("v1", "Secret", "secrets", True, CORE + "Secret"),
    _k(
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        True,
        CORE + "PersistentVolumeClaim",
        short=("pvc",),
        status=True,
    ),
    _k("v1", "PersistentVolume", "persistentvolumes", False, CORE + "PersistentVolume", short=("pv",), status=True),
    _k("v1", "ServiceAccount", "serviceaccounts", True, CORE + "ServiceAccount", short=("sa",)),
    _k("v1", "Event", "events", True, CORE + "Event", short=("ev",)),
    _k(
        "apps/v1",
        "Deployment",
        "deployments",
        True,
        "io.k8s.api.apps.v1.Deployment",
        short=("deploy",),
        status=True,
        scale=True,
        generation=True,
        categories=ALL,
    ),
    _k(
        "apps/v1",
        "StatefulSet",
        "statefulsets",
        True,
        "io.k8s.api.apps.v1.StatefulSet",
        short=("sts",),
        status=True,
        scale=True,
        generation=True,
        categories=ALL,
    ),
    _k(
        "apps/v1",
        "ReplicaSet",
        "replicasets",
        True,
        "io.k8s.api.apps.v1.ReplicaSet",
        short=("rs",),
        status=True,
        scale=True,
        generation=True,
        categories=ALL,
    ),
    _k(
        "apps/v1",
        "DaemonSet",
        "daemonsets",
        True,
        "io.k8s.api.apps.v1.DaemonSet",
        short=("ds",),
        status=True,
        generation=True,
        categories=ALL,
    ),
    _k("apps/v1", "ControllerRevision", "controllerrevisions", True, "io.k8s.api.apps.v1.ControllerRevision"),
    _k("batch/v1", "Job", "jobs", True, "io.k8s.api.batch.v1.Job", status=True, generation=True, categories=ALL),
    _k(
        "batch/v1",
        "CronJob",
        "cronjobs",
        True,
        "io.k8s.api.batch.v1.CronJob",
        short=("cj",),
        status=True,
        generation=True,
        categories=ALL,
    ),
    _k(
        "networking.k8s.io/v1",
        "Ingress",
        "ingresses",
        True,
        "io.k8s.api.networking.v1.Ingress",
        short=("ing",),
        status=True,
        generation=True,
    ),
    _k(
        "networking.k8s.io/v1",
        "IngressClass",
        "ingressclasses",
        False,
        "io.k8s.api.networking.v1.IngressClass",
        generation=True,
    ),
    _k(
        "storage.k8s.io/v1",
        "StorageClass",
        "storageclasses",
        False,
        "io.k8s.api.storage.v1.StorageClass",
        short=("sc",),
    ),
    _k("coordination.k8s.io/v1", "Lease", "leases", True, "io.k8s.api.coordination.v1.Lease"),
    _k("rbac.authorization.k8s.io/v1", "Role", "roles", True, "io.k8s.api.rbac.v1.Role"),
    _k("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings", True, "io.k8s.api.rbac.v1.RoleBinding"),
    _k("rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", False, "io.k8s.api.rbac.v1.ClusterRole"),
    _k(
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        False,
        "io.k8s.api.rbac.v1.ClusterRoleBinding",
    ),
    _k(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        False,
        "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition",
        short=("crd", "crds"),
        status=True,
        generation=True,
    ),
    _k(
        "helm.cattle.io/v1",
        "HelmChart",
        "helmcharts",
        True,
        "io.cattle.helm.v1.HelmChart",
        status=True,
        generation=True,
    ),
    _k(
        "helm.cattle.io/v1",
        "HelmChartConfig",
        "helmchartconfigs",
        True,
        "io.cattle.helm.v1.HelmChartConfig",
        generation=True,
    ),
)

# Groups served in this order in /apis (the core group is /api).
GROUP_ORDER = (
    "apps",
    "batch",
    "networking.k8s.io",
    "storage.k8s.io",
    "coordination.k8s.io",
    "rbac.authorization.k8s.io",
    "apiextensions.k8s.io",
    "helm.cattle.io",
)


class Registry:
    """Built-in kinds plus those of stored CRDs; lookups by URL plural, kind, or short name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._crd_kinds: dict[str, tuple[Kind, ...]] = {}  # CRD name -> its served kinds
        self._rebuild()

    def _rebuild(self) -> None:
        kinds = list(BUILTIN) + [k for ks in self._crd_kinds.values() for k in ks]
        self._all = tuple(kinds)
        self._by_path = {(k.group, k.version, k.plural): k for k in kinds}
        self._by_gvk = {(k.group, k.version, k.kind): k for k in kinds}
        self._by_key = {k.key: k for k in kinds}

    def all(self) -> tuple[Kind, ...]:
        return self._all

    def lookup(self, group: str, version: str, plural: str) -> Kind | None:
        return self._by_path.get((group, version, plural))

    def by_gvk(self, api_version: str, kind: str) -> Kind | None:
        group, _, version = api_version.rpartition("/")
        return self._by_gvk.get((group, version, kind))

    def by_key(self, key: str) -> Kind | None:
        return self._by_key.get(key)

    def groups(self) -> list[tuple[str, list[str]]]:
        """[(group, [versions])] of the named groups, in serving order (CRD groups last)."""
        seen: dict[str, list[str]] = {}
        for k in self._all:
            if k.group and k.version not in seen.setdefault(k.group, []):
                seen[k.group].append(k.version)
        order = {g: i for i, g in enumerate(GROUP_ORDER)}
        return sorted(seen.items(), key=lambda gv: (order.get(gv[0], len(order)), gv[0]))

    def in_group_version(self, group: str, version: str) -> list[Kind]:
        return [k for k in self._all if k.group == group and k.version == version]

    def set_crd(self, name: str, crd: dict[str, Any] | None) -> None:
        """Serve (or stop serving, when crd is None) the kinds a CRD defines."""
        with self._lock:
            if crd is None:
                self._crd_kinds.pop(name, None)
            else:
                self._crd_kinds[name] = tuple(crd_kinds(crd))
            self._rebuild()


def crd_kinds(crd: dict[str, Any]) -> Iterable[Kind]:
    """The kinds a CustomResourceDefinition serves (built-in groups are never overridden)."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group = str(spec.get("group") or "")
    if group in GROUP_ORDER or not group or not names.get("plural") or not names.get("kind"):
        return []
    out = []
    for v in spec.get("versions") or []:
        if not v.get("served", True):
            continue
        sub = v.get("subresources") or {}
        out.append(
            Kind(
                group,
                str(v.get("name")),
                str(names["kind"]),
                str(names["plural"]),
                spec.get("scope", "Namespaced") == "Namespaced",
                short=tuple(names.get("shortNames") or ()),
                status="status" in sub,
                scale="scale" in sub,
                generation=True,
                categories=tuple(names.get("categories") or ()),
                crd=((v.get("schema") or {}).get("openAPIV3Schema") or {"type": "object"}),
                printer_columns=tuple(v.get("additionalPrinterColumns") or ()),
            )
        )
    return out
