"""What the apiserver fills in at admission: Service cluster IPs and node ports, Job selectors,
a PVC's default StorageClass, a Pod's ServiceAccount."""

from __future__ import annotations

import ipaddress

from homelab_lab.errors import KubeStatus
from homelab_lab.kube.cluster import Cluster
from homelab_lab.kube.config import Config
from homelab_lab.kube.resources import Kind
from homelab_lab.kube.schema import Json

NODE_PORTS = range(30000, 32768)


class Admission:
    """Admission hooks for a cluster (registered in ``cluster.admit``)."""

    def __init__(self, cluster: Cluster, cfg: Config) -> None:
        self.c = cluster
        self.cfg = cfg
        cluster.admit.append(self)

    def __call__(self, kind: Kind, obj: Json, old: Json | None) -> None:
        handler = {
            "Service": self._service,
            "Job": self._job,
            "PersistentVolumeClaim": self._pvc,
            "Pod": self._pod,
        }.get(kind.kind)
        if handler is not None:
            handler(kind, obj, old)

    def _services(self) -> list[Json]:
        kind = self.c.registry.by_gvk("v1", "Service")
        assert kind is not None
        return self.c.list(kind)[0]

    def _service(self, kind: Kind, obj: Json, old: Json | None) -> None:
        spec = obj.setdefault("spec", {})
        others = [s for s in self._services() if s["metadata"].get("uid") != obj["metadata"].get("uid")]
        if spec.get("type") == "ExternalName":
            return
        if not spec.get("clusterIP"):
            if old is not None and (old.get("spec") or {}).get("clusterIP"):
                spec["clusterIP"] = old["spec"]["clusterIP"]
            else:
                used = {(s.get("spec") or {}).get("clusterIP") for s in others}
                net = ipaddress.ip_network(self.cfg.service_cidr, strict=False)
                spec["clusterIP"] = next(
                    str(ip) for i, ip in enumerate(net.hosts()) if i >= 1 and i + 1 not in (10,) and str(ip) not in used
                )
        if spec["clusterIP"] != "None":
            spec["clusterIPs"] = [spec["clusterIP"]]
        if spec.get("type") in ("NodePort", "LoadBalancer"):
            used_ports = {p.get("nodePort") for s in others for p in (s.get("spec") or {}).get("ports") or []}
            before = {
                (p.get("port"), p.get("protocol")): p.get("nodePort")
                for p in ((old or {}).get("spec") or {}).get("ports") or []
            }
            for p in spec.get("ports") or []:
                if p.get("nodePort") in used_ports:
                    raise KubeStatus(
                        422,
                        "Invalid",
                        f'Service "{obj["metadata"]["name"]}" is invalid: '
                        f"spec.ports[0].nodePort: Invalid value: {p['nodePort']}: provided port is "
                        "already allocated",
                    )
                if not p.get("nodePort"):
                    p["nodePort"] = before.get((p.get("port"), p.get("protocol"))) or next(
                        n for n in NODE_PORTS if n not in used_ports
                    )
                used_ports.add(p["nodePort"])
        else:
            for p in spec.get("ports") or []:
                p.pop("nodePort", None)

    def _job(self, kind: Kind, obj: Json, old: Json | None) -> None:
        spec = obj.setdefault("spec", {})
        if old is not None or spec.get("manualSelector"):
            return
        uid, name = obj["metadata"]["uid"], obj["metadata"]["name"]
        labels = {
            "batch.kubernetes.io/controller-uid": uid,
            "batch.kubernetes.io/job-name": name,
            "controller-uid": uid,
            "job-name": name,
        }
        spec.setdefault("selector", {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
        tmeta = spec.setdefault("template", {}).setdefault("metadata", {})
        tmeta["labels"] = {**(tmeta.get("labels") or {}), **labels}

    def _pvc(self, kind: Kind, obj: Json, old: Json | None) -> None:
        spec = obj.setdefault("spec", {})
        if old is None and "storageClassName" not in spec:
            sc_kind = self.c.registry.by_gvk("storage.k8s.io/v1", "StorageClass")
            assert sc_kind is not None
            default = next(
                (
                    sc
                    for sc in self.c.list(sc_kind)[0]
                    if (sc["metadata"].get("annotations") or {}).get("storageclass.kubernetes.io/is-default-class")
                    == "true"
                ),
                None,
            )
            if default is not None:
                spec["storageClassName"] = default["metadata"]["name"]
        if old is None:
            obj.setdefault("status", {}).setdefault("phase", "Pending")

    def _pod(self, kind: Kind, obj: Json, old: Json | None) -> None:
        spec = obj.setdefault("spec", {})
        if old is None:
            spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
            spec.setdefault("serviceAccount", spec["serviceAccountName"])
            spec.setdefault("enableServiceLinks", True)
            spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
            spec.setdefault("priority", 0)
            obj.setdefault("status", {"phase": "Pending", "qosClass": _qos(spec)})
        elif old is not None and (old.get("spec") or {}).get("containers") and spec != old.get("spec"):
            _pod_update_allowed(obj, old)


def _qos(spec: Json) -> str:
    resources = [c.get("resources") or {} for c in spec.get("containers") or []]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    if all(r.get("limits") and r.get("requests", r.get("limits")) == r.get("limits") for r in resources):
        return "Guaranteed"
    return "Burstable"


def _pod_update_allowed(new: Json, old: Json) -> None:
    """Only images, activeDeadlineSeconds, tolerations and scheduling fields of a pod may change."""
    a, b = dict(new["spec"]), dict(old["spec"])
    for k in ("activeDeadlineSeconds", "tolerations", "nodeName", "schedulingGates"):
        a.pop(k, None)
        b.pop(k, None)
    strip = [{k: v for k, v in c.items() if k != "image"} for c in a.get("containers") or []]
    strip_old = [{k: v for k, v in c.items() if k != "image"} for c in b.get("containers") or []]
    a["containers"], b["containers"] = strip, strip_old
    if a != b:
        raise KubeStatus(
            422,
            "Invalid",
            f'Pod "{new["metadata"]["name"]}" is invalid: spec: Forbidden: pod updates '
            "may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,"
            "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),"
            "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
        )
