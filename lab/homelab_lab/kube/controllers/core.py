"""Namespaces (default ServiceAccount, kube-root-ca.crt, termination), garbage collection by owner
references, Endpoints of Services, and the local-path provisioner (PVC -> PV -> folder)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from homelab_lab.kube.cluster import Cluster, WriteOptions
from homelab_lab.kube.controllers.base import MANAGER, kind, pod_ready
from homelab_lab.kube.schema import Json
from homelab_lab.kube.selectors import matches_selector

SELECTED_NODE = "volume.kubernetes.io/selected-node"
PROVISIONER = "rancher.io/local-path"
_CA_NOTE = (
    "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as "
    "the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of "
    "Kubernetes clusters."
)


class Namespaces:
    """Every namespace gets a ``default`` ServiceAccount and ``kube-root-ca.crt``.

    A deleted namespace is emptied, then removed.
    """

    def __init__(self, cluster: Cluster, ca_pem: str) -> None:
        self.c = cluster
        self.ns = kind(cluster, "v1", "Namespace")
        self.sa = kind(cluster, "v1", "ServiceAccount")
        self.cm = kind(cluster, "v1", "ConfigMap")
        self.ca = ca_pem

    def reconcile(self) -> None:
        for ns in self.c.list(self.ns)[0]:
            name = ns["metadata"]["name"]
            if ns["metadata"].get("deletionTimestamp"):
                self._terminate(ns)
                continue
            if self.c.find(self.sa, name, "default") is None:
                self.c.create(self.sa, name, {"metadata": {"name": "default"}}, WriteOptions(MANAGER, False, "Ignore"))
            if self.c.find(self.cm, name, "kube-root-ca.crt") is None:
                self.c.create(
                    self.cm,
                    name,
                    {
                        "metadata": {
                            "name": "kube-root-ca.crt",
                            "annotations": {"kubernetes.io/description": _CA_NOTE},
                        },
                        "data": {"ca.crt": self.ca},
                    },
                    WriteOptions(MANAGER, False, "Ignore"),
                )

    def _terminate(self, ns: Json) -> None:
        name = ns["metadata"]["name"]
        left = 0
        for k in self.c.registry.all():
            if not k.namespaced:
                continue
            for obj in self.c.list(k, name)[0]:
                left += 1
                if not obj["metadata"].get("deletionTimestamp"):
                    self.c.delete(k, name, obj["metadata"]["name"])
        if left == 0:
            self.c.remove_now(self.ns, ns)


class GarbageCollector:
    """Objects whose every owner is gone are deleted (background propagation)."""

    def __init__(self, cluster: Cluster) -> None:
        self.c = cluster

    def reconcile(self) -> None:
        everything = [(k, o) for k in self.c.registry.all() for o in self.c.list(k)[0]]
        uids = {o["metadata"].get("uid") for _, o in everything}
        for k, o in everything:
            refs = o["metadata"].get("ownerReferences")
            if refs and not any(r.get("uid") in uids for r in refs) and not o["metadata"].get("deletionTimestamp"):
                self.c.delete(k, str(o["metadata"].get("namespace") or ""), o["metadata"]["name"])


def _target_port(svc_port: Json, pod: Json) -> int | None:
    target = svc_port.get("targetPort", svc_port.get("port"))
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == target:
                return int(p["containerPort"])
    return None


class Endpoints:
    """Endpoints of each Service with a selector: its pods' IPs, ready or not."""

    def __init__(self, cluster: Cluster) -> None:
        self.c = cluster
        self.svc = kind(cluster, "v1", "Service")
        self.ep = kind(cluster, "v1", "Endpoints")
        self.pod = kind(cluster, "v1", "Pod")

    def reconcile(self) -> None:
        pods, _ = self.c.list(self.pod)
        services = self.c.list(self.svc)[0]
        names = {(s["metadata"]["namespace"], s["metadata"]["name"]) for s in services}
        for s in services:
            selector = (s.get("spec") or {}).get("selector")
            if not selector:
                continue
            ns = s["metadata"]["namespace"]
            chosen = [
                p
                for p in pods
                if p["metadata"]["namespace"] == ns
                and (p.get("status") or {}).get("podIP")
                and matches_selector({"matchLabels": selector}, p["metadata"].get("labels") or {})
                and not p["metadata"].get("deletionTimestamp")
            ]
            subsets: dict[str, Json] = {}
            for p in chosen:
                ports = []
                for sp in s["spec"].get("ports") or []:
                    port = _target_port(sp, p)
                    if port is not None:
                        entry: Json = {"port": port, "protocol": sp.get("protocol", "TCP")}
                        if sp.get("name"):
                            entry["name"] = sp["name"]
                        ports.append(entry)
                key = repr(ports)
                sub = subsets.setdefault(key, {"ports": ports})
                addr = {
                    "ip": p["status"]["podIP"],
                    "nodeName": (p.get("spec") or {}).get("nodeName", ""),
                    "targetRef": {
                        "kind": "Pod",
                        "namespace": ns,
                        "name": p["metadata"]["name"],
                        "uid": p["metadata"]["uid"],
                    },
                }
                sub.setdefault("addresses" if pod_ready(p) else "notReadyAddresses", []).append(addr)
            ep: Json = {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {
                    "name": s["metadata"]["name"],
                    "namespace": ns,
                    "labels": dict(s["metadata"].get("labels") or {}),
                },
            }
            if not ep["metadata"]["labels"]:
                del ep["metadata"]["labels"]
            if subsets:
                ep["subsets"] = [v for _, v in sorted(subsets.items())]
            live = self.c.find(self.ep, ns, s["metadata"]["name"])
            if live is None or live.get("subsets") != ep.get("subsets"):
                self.c.write(self.ep, ep if live is None else {**live, "subsets": ep.get("subsets", [])}, MANAGER)
        for ep in self.c.list(self.ep)[0]:
            ident = (ep["metadata"]["namespace"], ep["metadata"]["name"])
            if ident not in names and ident != ("default", "kubernetes"):
                self.c.delete(self.ep, *ident)


class LocalPath:
    """The local-path provisioner: a PVC of a local-path class binds (on first use, for WaitForFirstConsumer)
    to a new hostPath PV whose folder is ``<storage>/pvc-<uid>_<ns>_<name>``; a released PV's folder goes with it."""

    def __init__(self, cluster: Cluster, storage: Path, node_name: str) -> None:
        self.c = cluster
        self.storage = storage
        self.node = node_name
        self.pvc = kind(cluster, "v1", "PersistentVolumeClaim")
        self.pv = kind(cluster, "v1", "PersistentVolume")
        self.sc = kind(cluster, "storage.k8s.io/v1", "StorageClass")

    def _unprotect(self, k: object, obj: Json, finalizer: str) -> None:
        meta = obj["metadata"]
        rest = [f for f in meta.get("finalizers") or [] if f != finalizer]
        self.c.write(k, {**obj, "metadata": {**meta, "finalizers": rest}}, MANAGER)  # type: ignore[arg-type]

    def reconcile(self) -> None:
        classes = {sc["metadata"]["name"]: sc for sc in self.c.list(self.sc)[0]}
        claims = self.c.list(self.pvc)[0]
        pod_kind = kind(self.c, "v1", "Pod")
        in_use = {
            (p["metadata"]["namespace"], v["persistentVolumeClaim"].get("claimName"))
            for p in self.c.list(pod_kind)[0]
            for v in (p.get("spec") or {}).get("volumes") or []
            if v.get("persistentVolumeClaim")
        }
        for pvc in claims:
            meta = pvc["metadata"]
            if meta.get("deletionTimestamp") and (meta["namespace"], meta["name"]) not in in_use:
                self._unprotect(self.pvc, pvc, "kubernetes.io/pvc-protection")
        for pv in self.c.list(self.pv)[0]:
            ref = (pv.get("spec") or {}).get("claimRef") or {}
            if pv["metadata"].get("deletionTimestamp") and not any(
                c["metadata"]["uid"] == ref.get("uid") for c in claims
            ):
                self._unprotect(self.pv, pv, "kubernetes.io/pv-protection")
        for pvc in claims:
            if (pvc.get("status") or {}).get("phase") == "Bound" or pvc["metadata"].get("deletionTimestamp"):
                continue
            if (pvc.get("spec") or {}).get("volumeName"):  # pre-bound: the PV controller binds it, nothing provisions
                self._bind_named(pvc)
                continue
            sc = classes.get(str((pvc.get("spec") or {}).get("storageClassName") or ""))
            if sc is None or sc.get("provisioner") != PROVISIONER:
                continue
            annotations = pvc["metadata"].get("annotations") or {}
            if sc.get("volumeBindingMode") == "WaitForFirstConsumer" and SELECTED_NODE not in annotations:
                self.c.event(
                    pvc,
                    "WaitForFirstConsumer",
                    "waiting for first consumer to be created before binding",
                    component="persistentvolume-controller",
                )
                continue
            self._provision(pvc, sc)
        live = {p["metadata"]["uid"] for p in claims}
        for pv in self.c.list(self.pv)[0]:
            ref = (pv.get("spec") or {}).get("claimRef") or {}
            if ref.get("uid") and ref["uid"] not in live and not pv["metadata"].get("deletionTimestamp"):
                if pv["spec"].get("persistentVolumeReclaimPolicy") == "Delete":
                    folder = ((pv["spec"].get("hostPath") or {}).get("path")) or ""
                    if folder.startswith(str(self.storage) + os.sep):
                        shutil.rmtree(folder, ignore_errors=True)
                    self.c.delete(self.pv, "", pv["metadata"]["name"])
                elif (pv.get("status") or {}).get("phase") != "Released":
                    self.c.set_status(self.pv, pv, {"phase": "Released"}, MANAGER)

    def _provision(self, pvc: Json, sc: Json) -> None:
        meta, spec = pvc["metadata"], pvc["spec"]
        name = f"pvc-{meta['uid']}"
        folder = self.storage / f"{name}_{meta['namespace']}_{meta['name']}"
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o777)
        size = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
        pv = self.c.find(self.pv, "", name)
        if pv is None:
            pv = self.c.write(
                self.pv,
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolume",
                    "metadata": {
                        "name": name,
                        "annotations": {
                            "pv.kubernetes.io/provisioned-by": PROVISIONER,
                            "local.path.provisioner/selected-node": self.node,
                        },
                        "finalizers": ["kubernetes.io/pv-protection"],
                    },
                    "spec": {
                        "capacity": {"storage": size},
                        "accessModes": list(spec.get("accessModes") or []),
                        "hostPath": {"path": str(folder), "type": "DirectoryOrCreate"},
                        "claimRef": _claim_ref(meta),
                        "persistentVolumeReclaimPolicy": sc.get("reclaimPolicy", "Delete"),
                        "storageClassName": sc["metadata"]["name"],
                        "volumeMode": spec.get("volumeMode", "Filesystem"),
                        "nodeAffinity": {
                            "required": {
                                "nodeSelectorTerms": [
                                    {
                                        "matchExpressions": [
                                            {"key": "kubernetes.io/hostname", "operator": "In", "values": [self.node]}
                                        ]
                                    }
                                ]
                            }
                        },
                    },
                },
                "local-path-provisioner",
            )
            self.c.event(
                pvc,
                "ProvisioningSucceeded",
                f"Successfully provisioned volume {name}",
                component="rancher.io/local-path_local-path-provisioner",
            )
        self._bound(pvc, pv, {"volume.beta.kubernetes.io/storage-provisioner": PROVISIONER,
                               "volume.kubernetes.io/storage-provisioner": PROVISIONER})  # fmt: skip

    def _bind_named(self, pvc: Json) -> None:
        """A claim that names its PV (``spec.volumeName``): bound to it once it is there and free, as the PV
        controller binds a pre-bound claim; until then it stays Pending (no provisioner makes another)."""
        meta = pvc["metadata"]
        pv = self.c.find(self.pv, "", str(pvc["spec"]["volumeName"]))
        if pv is None or pv["metadata"].get("deletionTimestamp"):
            return
        ref = (pv.get("spec") or {}).get("claimRef") or {}
        if ref and (ref.get("namespace"), ref.get("name")) != (meta["namespace"], meta["name"]):
            return  # another claim's
        if ref.get("uid") not in (None, "", meta["uid"]):
            return  # an earlier claim of the same name: Released, not reused
        pv = self.c.write(self.pv, {**pv, "spec": {**pv["spec"], "claimRef": _claim_ref(meta)}}, MANAGER)
        self._bound(pvc, pv, {})

    def _bound(self, pvc: Json, pv: Json, more: dict[str, str]) -> None:
        """The PV and the claim both Bound, the claim annotated as the PV controller does."""
        meta, spec = pvc["metadata"], pvc["spec"]
        self.c.set_status(self.pv, pv, {"phase": "Bound"}, MANAGER)
        annotations = {
            **(meta.get("annotations") or {}),
            "pv.kubernetes.io/bind-completed": "yes",
            "pv.kubernetes.io/bound-by-controller": "yes",
            **more,
        }
        bound = self.c.write(
            self.pvc,
            {
                **pvc,
                "metadata": {**meta, "annotations": annotations, "finalizers": ["kubernetes.io/pvc-protection"]},
                "spec": {**spec, "volumeName": pv["metadata"]["name"]},
            },
            MANAGER,
        )
        size = ((pv.get("spec") or {}).get("capacity") or {}).get("storage", "1Gi")
        self.c.set_status(
            self.pvc,
            bound,
            {"phase": "Bound", "accessModes": list(spec.get("accessModes") or []), "capacity": {"storage": size}},
            MANAGER,
        )


def _claim_ref(meta: Json) -> Json:
    """A PersistentVolume's ``spec.claimRef`` to the claim with this metadata."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "namespace": meta["namespace"],
        "name": meta["name"],
        "uid": meta["uid"],
        "resourceVersion": meta.get("resourceVersion"),
    }
