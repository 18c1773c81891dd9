"""Kubernetes objects as the toolkit makes them: keys, apply order by kind, the config hash.

Every object the toolkit applies carries the annotation :data:`CONFIG_HASH`: the sha256 of its
manifest (that annotation left out); a Secret's is an HMAC under the homelab's hash key
(:mod:`homelab_lib.core.hashkey`), so it cannot be tested against guesses of the values. An object
whose annotation equals the hash of the manifest made now is unchanged: a no-op without a request
beyond its GET. The label :data:`MANAGED` marks what the toolkit owns, so a delete never reaches
anything else.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from homelab_lib.core.hashkey import keyed

#: A Kubernetes object as the API and YAML have it: apiVersion, kind, metadata, spec... (not a checksum
#: manifest: that is :class:`homelab_lib.hosts.checksums.Manifest`).
KubeObject = dict[str, Any]

CONFIG_HASH = "homelab.io/config-hash"
MANAGED = "app.kubernetes.io/managed-by"
MANAGER = "homelab"
PART_OF = "homelab.io/runbook"

#: K3s's defaults, which every manifest the toolkit makes names: its local-path storage class and its traefik Ingress.
STORAGE_CLASS = "local-path"
INGRESS_CLASS = "traefik"

#: Apply order by kind (lower first; deletes go in reverse), as lightkube's RANK_ORDER.
RANK = {
    "Namespace": 0,
    "CustomResourceDefinition": 1,
    "ServiceAccount": 2,
    "ClusterRole": 3,
    "ClusterRoleBinding": 3,
    "Role": 3,
    "RoleBinding": 3,
    "Secret": 4,
    "ConfigMap": 4,
    "PersistentVolumeClaim": 5,
    "HelmChart": 6,
    "Service": 7,
    "Deployment": 8,
    "StatefulSet": 8,
    "Job": 8,
    "Ingress": 9,
}


@dataclass(frozen=True, order=True)
class Key:
    """Which object: apiVersion, kind, namespace ('' when cluster-scoped), name."""

    api_version: str
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"

    @property
    def target(self) -> str:
        """How a plan names it: ``namespace/name`` or ``name``."""
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


def key(obj: KubeObject) -> Key:
    meta = obj.get("metadata") or {}
    return Key(str(obj["apiVersion"]), str(obj["kind"]), str(meta.get("namespace") or ""), str(meta["name"]))


def rank(obj: KubeObject) -> int:
    return RANK.get(str(obj.get("kind")), 8)


def config_hash(obj: KubeObject, hash_key: bytes | None = None) -> str:
    """The hash of a manifest, its own :data:`CONFIG_HASH` annotation left out: sha256, or with ``hash_key`` (the
    homelab's hash key, :mod:`homelab_lib.core.hashkey`) HMAC-SHA256, which no one without the key can test
    guesses of a Secret's values against."""
    body = copy.deepcopy(obj)
    (body.get("metadata") or {}).get("annotations", {}).pop(CONFIG_HASH, None)
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return keyed(hash_key, canonical) if hash_key is not None else hashlib.sha256(canonical).hexdigest()


def sealed(obj: KubeObject, runbook: str, hash_key: bytes | None = None) -> KubeObject:
    """The manifest with the toolkit's labels and its config hash annotation.

    A Secret's hash covers its values, so it is keyed with ``hash_key``, the homelab's hash key (required for a
    Secret: ValueError without it); other kinds are hashed plainly.
    """
    out = copy.deepcopy(obj)
    meta = out.setdefault("metadata", {})
    meta.setdefault("labels", {}).update({MANAGED: MANAGER, PART_OF: runbook})
    meta.setdefault("annotations", {}).pop(CONFIG_HASH, None)
    secret = out.get("kind") == "Secret"
    if secret and hash_key is None:
        raise ValueError(f"{key(out)}: a Secret's config hash covers its values; seal it with the homelab's hash key")
    meta["annotations"][CONFIG_HASH] = config_hash(out, hash_key if secret else None)
    return out


def mounts_claim(workload: KubeObject, claim: str) -> bool:
    """Whether a Deployment's or StatefulSet's pods mount the PVC ``claim`` (by name, or a StatefulSet's
    ``volumeClaimTemplates``: ``<template>-<statefulset>-<ordinal>``)."""
    spec = workload.get("spec") or {}
    pod = (spec.get("template") or {}).get("spec") or {}
    if any((v.get("persistentVolumeClaim") or {}).get("claimName") == claim for v in pod.get("volumes") or []):
        return True
    name = (workload.get("metadata") or {}).get("name", "")
    for template in spec.get("volumeClaimTemplates") or []:
        prefix = f"{(template.get('metadata') or {}).get('name', '')}-{name}-"
        if claim.startswith(prefix) and claim[len(prefix) :].isdigit():
            return True
    return False


def ordered(objs: list[KubeObject]) -> list[KubeObject]:
    """Objects in apply order: by kind's rank, then key."""
    return sorted(objs, key=lambda o: (rank(o), key(o)))


def kubernetes_version(k3s_version: str) -> str:
    """The Kubernetes schemas a K3s release is validated against: ``v1.31.4+k3s1`` -> ``1.31.0``."""
    major, minor = k3s_version.lstrip("v").split(".")[:2]
    return f"{major}.{minor}.0"


def validate(objs: list[KubeObject], version: str) -> None:
    """Validate each object of a built-in kind against Kubernetes's schemas (kubernetes-validate, strict).

    Custom resources (HelmChart) have no schema there and are left to the server's dry run.

    Raises:
        ValueError: an object does not validate (its key and the schema's message).
    """
    import kubernetes_validate

    for obj in objs:
        if "." in str(obj.get("apiVersion", "")).split("/")[0] and not str(obj["apiVersion"]).startswith(
            ("apps/", "batch/", "networking.k8s.io/", "rbac.authorization.k8s.io/", "storage.k8s.io/")
        ):
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            raise ValueError(f"{key(obj)}: {e.message}") from None
