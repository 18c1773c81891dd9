"""Deployments -> ReplicaSets -> Pods, and StatefulSets with ordinal pods and volumeClaimTemplates."""

from __future__ import annotations

import copy
import datetime
import math

from homelab_lab.kube.cluster import Cluster, WriteOptions
from homelab_lab.kube.controllers.base import (
    MANAGER,
    condition,
    get_condition,
    kind,
    owned_by,
    owner_ref,
    pod_ready,
    template_hash,
)
from homelab_lab.kube.schema import Json

REVISION = "deployment.kubernetes.io/revision"


def _opts() -> WriteOptions:
    return WriteOptions(MANAGER, False, "Ignore")


def _active(pod: Json) -> bool:
    return not pod["metadata"].get("deletionTimestamp") and (pod.get("status") or {}).get("phase") not in (
        "Succeeded",
        "Failed",
    )


def _pod_from_template(
    template: Json, owner: Json, extra_labels: dict[str, str], name: str = "", generate: str = ""
) -> Json:
    meta = copy.deepcopy(template.get("metadata") or {})
    labels = {**(meta.get("labels") or {}), **extra_labels}
    pod_meta: Json = {
        "namespace": owner["metadata"]["namespace"],
        "labels": labels,
        "ownerReferences": [owner_ref(owner)],
    }
    if meta.get("annotations"):
        pod_meta["annotations"] = meta["annotations"]
    if name:
        pod_meta["name"] = name
    else:
        pod_meta["generateName"] = generate
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": copy.deepcopy(template.get("spec") or {})}


class ReplicaSets:
    def __init__(self, cluster: Cluster) -> None:
        self.c = cluster
        self.rs = kind(cluster, "apps/v1", "ReplicaSet")
        self.pod = kind(cluster, "v1", "Pod")

    def reconcile(self) -> None:
        all_pods, _ = self.c.list(self.pod)
        for rs in self.c.list(self.rs)[0]:
            if rs["metadata"].get("deletionTimestamp"):
                continue
            ns = rs["metadata"]["namespace"]
            pods = [p for p in all_pods if p["metadata"].get("namespace") == ns and owned_by(p, rs)]
            active = [p for p in pods if _active(p)]
            want = int((rs.get("spec") or {}).get("replicas", 1))
            if len(active) < want:
                for _ in range(want - len(active)):
                    pod = _pod_from_template(rs["spec"]["template"], rs, {}, generate=f"{rs['metadata']['name']}-")
                    active.append(self.c.create(self.pod, ns, pod, _opts()))
            elif len(active) > want:
                extra = sorted(active, key=lambda p: (pod_ready(p), p["metadata"]["creationTimestamp"]))
                for p in extra[: len(active) - want]:
                    self.c.delete(self.pod, ns, p["metadata"]["name"])
                    active.remove(p)
            ready = sum(1 for p in active if pod_ready(p))
            status: Json = {
                "replicas": len(active),
                "fullyLabeledReplicas": len(active),
                "readyReplicas": ready,
                "availableReplicas": ready,
                "observedGeneration": rs["metadata"].get("generation", 1),
            }
            status = {k: v for k, v in status.items() if v or k in ("replicas", "observedGeneration")}
            self.c.set_status(self.rs, rs, status, MANAGER)


def _int_or_percent(value: object, total: int, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        frac = total * int(value[:-1]) / 100
        return math.ceil(frac) if round_up else math.floor(frac)
    return int(value) if isinstance(value, int | str) and str(value).isdigit() else 0


class Deployments:
    def __init__(self, cluster: Cluster) -> None:
        self.c = cluster
        self.d = kind(cluster, "apps/v1", "Deployment")
        self.rs = kind(cluster, "apps/v1", "ReplicaSet")

    def reconcile(self) -> None:
        all_rs, _ = self.c.list(self.rs)
        for d in self.c.list(self.d)[0]:
            if not d["metadata"].get("deletionTimestamp"):
                self._one(
                    d,
                    [r for r in all_rs if r["metadata"]["namespace"] == d["metadata"]["namespace"] and owned_by(r, d)],
                )

    def _one(self, d: Json, owned: list[Json]) -> None:
        spec, ns, name = d["spec"], d["metadata"]["namespace"], d["metadata"]["name"]
        want = int(spec.get("replicas", 1))
        h = template_hash(spec["template"])
        revisions = [int((r["metadata"].get("annotations") or {}).get(REVISION, "0")) for r in owned]
        new = next((r for r in owned if (r["metadata"].get("labels") or {}).get("pod-template-hash") == h), None)
        if new is None:
            template = copy.deepcopy(spec["template"])
            template.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = h
            selector = copy.deepcopy(spec["selector"])
            selector.setdefault("matchLabels", {})["pod-template-hash"] = h
            rs = {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": {
                    "name": f"{name}-{h}",
                    "namespace": ns,
                    "labels": dict(template["metadata"]["labels"]),
                    "annotations": {
                        REVISION: str(max(revisions, default=0) + 1),
                        "deployment.kubernetes.io/desired-replicas": str(want),
                        "deployment.kubernetes.io/max-replicas": str(want + 1),
                    },
                    "ownerReferences": [owner_ref(d)],
                },
                "spec": {"replicas": want, "selector": selector, "template": template},
            }
            new = self.c.create(self.rs, ns, rs, _opts())
            owned.append(new)
        elif new["spec"].get("replicas") != want:
            new = self.c.write(self.rs, {**new, "spec": {**new["spec"], "replicas": want}}, MANAGER)
        new_ready = int((new.get("status") or {}).get("availableReplicas") or 0)
        old = sorted(
            (r for r in owned if r is not new and r["metadata"]["uid"] != new["metadata"]["uid"]),
            key=lambda r: r["metadata"]["creationTimestamp"],
            reverse=True,
        )
        room = max(0, want - new_ready)
        for r in old:
            keep = min(int(r["spec"].get("replicas", 0)), room)
            room -= keep
            if r["spec"].get("replicas") != keep:
                self.c.write(self.rs, {**r, "spec": {**r["spec"], "replicas": keep}}, MANAGER)
        self._status(d, new, old, want)

    def _status(self, d: Json, new: Json, old: list[Json], want: int) -> None:
        def st(r: Json, k: str) -> int:
            return int((r.get("status") or {}).get(k) or 0)

        every = [new, *old]
        replicas = sum(st(r, "replicas") for r in every)
        updated = st(new, "replicas")
        ready = sum(st(r, "readyReplicas") for r in every)
        available = sum(st(r, "availableReplicas") for r in every)
        max_unavailable = _int_or_percent(
            ((d["spec"].get("strategy") or {}).get("rollingUpdate") or {}).get("maxUnavailable", "25%"), want, False
        )
        conds = list((d.get("status") or {}).get("conditions") or [])
        if available >= want - max_unavailable:
            conds = condition(
                conds,
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
                probe_times=True,
            )
        else:
            conds = condition(
                conds,
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
                probe_times=True,
            )
        rs_name = new["metadata"]["name"]
        done = updated == want and replicas == want and available >= want
        prog = get_condition(d, "Progressing")
        deadline = int(d["spec"].get("progressDeadlineSeconds", 600))
        if done:
            conds = condition(
                conds,
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                f'ReplicaSet "{rs_name}" has successfully progressed.',
                probe_times=True,
            )
        elif (
            prog is not None and prog.get("reason") == "ProgressDeadlineExceeded" and rs_name in prog.get("message", "")
        ):
            pass
        elif (
            prog is not None
            and prog.get("reason") == "ReplicaSetUpdated"
            and rs_name in prog.get("message", "")
            and _age_s(prog.get("lastUpdateTime")) > deadline
        ):
            conds = condition(
                conds,
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{rs_name}" has timed out progressing.',
                probe_times=True,
            )
        else:
            conds = condition(
                conds,
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                f'ReplicaSet "{rs_name}" is progressing.',
                probe_times=True,
            )
        status: Json = {
            "observedGeneration": d["metadata"].get("generation", 1),
            "replicas": replicas,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": available,
            "unavailableReplicas": max(0, want - available),
            "conditions": conds,
        }
        status = {k: v for k, v in status.items() if v or k in ("observedGeneration", "conditions")}
        self.c.set_status(self.d, d, status, MANAGER)


def _age_s(stamp: object) -> float:
    if not isinstance(stamp, str):
        return 0.0
    then = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    return (datetime.datetime.now(datetime.UTC) - then).total_seconds()


class StatefulSets:
    def __init__(self, cluster: Cluster) -> None:
        self.c = cluster
        self.sts = kind(cluster, "apps/v1", "StatefulSet")
        self.pod = kind(cluster, "v1", "Pod")
        self.pvc = kind(cluster, "v1", "PersistentVolumeClaim")

    def reconcile(self) -> None:
        all_pods, _ = self.c.list(self.pod)
        for s in self.c.list(self.sts)[0]:
            if not s["metadata"].get("deletionTimestamp"):
                ns = s["metadata"]["namespace"]
                self._one(
                    s,
                    {p["metadata"]["name"]: p for p in all_pods if p["metadata"]["namespace"] == ns and owned_by(p, s)},
                )

    def _pod(self, s: Json, i: int, revision: str) -> Json:
        name = f"{s['metadata']['name']}-{i}"
        labels = {
            "controller-revision-hash": revision,
            "statefulset.kubernetes.io/pod-name": name,
            "apps.kubernetes.io/pod-index": str(i),
        }
        pod = _pod_from_template(s["spec"]["template"], s, labels, name=name)
        spec = pod["spec"]
        spec["hostname"] = name
        if s["spec"].get("serviceName"):
            spec["subdomain"] = s["spec"]["serviceName"]
        vols = [v for v in spec.get("volumes") or []]
        for t in s["spec"].get("volumeClaimTemplates") or []:
            tname = t["metadata"]["name"]
            vols = [v for v in vols if v.get("name") != tname]
            vols.append({"name": tname, "persistentVolumeClaim": {"claimName": f"{tname}-{name}"}})
        if vols:
            spec["volumes"] = vols
        return pod

    def _claims(self, s: Json, i: int) -> None:
        ns, name = s["metadata"]["namespace"], f"{s['metadata']['name']}-{i}"
        for t in s["spec"].get("volumeClaimTemplates") or []:
            claim = f"{t['metadata']['name']}-{name}"
            if self.c.find(self.pvc, ns, claim) is None:
                labels = {
                    **(t["metadata"].get("labels") or {}),
                    **((s["spec"].get("selector") or {}).get("matchLabels") or {}),
                }
                meta: Json = {"name": claim, "namespace": ns}
                if labels:
                    meta["labels"] = labels
                if t["metadata"].get("annotations"):
                    meta["annotations"] = t["metadata"]["annotations"]
                self.c.create(
                    self.pvc,
                    ns,
                    {
                        "apiVersion": "v1",
                        "kind": "PersistentVolumeClaim",
                        "metadata": meta,
                        "spec": copy.deepcopy(t.get("spec") or {}),
                    },
                    _opts(),
                )

    def _one(self, s: Json, pods: dict[str, Json]) -> None:
        spec, ns, name = s["spec"], s["metadata"]["namespace"], s["metadata"]["name"]
        want = int(spec.get("replicas", 1))
        revision = f"{name}-{template_hash(spec['template'])}"
        parallel = spec.get("podManagementPolicy") == "Parallel"
        for i in range(want):
            pname = f"{name}-{i}"
            if pname not in pods:
                self._claims(s, i)
                pods[pname] = self.c.create(self.pod, ns, self._pod(s, i, revision), _opts())
                if not parallel:
                    break
            elif not pod_ready(pods[pname]) and not parallel:
                break
        for pname, p in sorted(pods.items(), key=lambda kv: -_ordinal(kv[0])):
            if _ordinal(pname) >= want and not p["metadata"].get("deletionTimestamp"):
                self.c.delete(self.pod, ns, pname)
                break
        current = [p for n, p in pods.items() if _ordinal(n) < want]
        all_ready = len(current) == want and all(pod_ready(p) for p in current)
        outdated = [
            p for p in current if (p["metadata"].get("labels") or {}).get("controller-revision-hash") != revision
        ]
        if (
            all_ready
            and outdated
            and (spec.get("updateStrategy") or {}).get("type", "RollingUpdate") == "RollingUpdate"
        ):
            victim = max(outdated, key=lambda p: _ordinal(p["metadata"]["name"]))
            self.c.delete(self.pod, ns, victim["metadata"]["name"])
        live = [p for p in current if not p["metadata"].get("deletionTimestamp")]
        ready = sum(1 for p in live if pod_ready(p))
        updated = sum(
            1 for p in live if (p["metadata"].get("labels") or {}).get("controller-revision-hash") == revision
        )
        old_status = s.get("status") or {}
        current_rev = revision if updated == want and ready == want else old_status.get("currentRevision", revision)
        at_current = sum(
            1 for p in live if (p["metadata"].get("labels") or {}).get("controller-revision-hash") == current_rev
        )
        status: Json = {
            "observedGeneration": s["metadata"].get("generation", 1),
            "replicas": len(live),
            "readyReplicas": ready,
            "currentReplicas": at_current,
            "updatedReplicas": updated,
            "availableReplicas": ready,
            "currentRevision": current_rev,
            "updateRevision": revision,
            "collisionCount": 0,
        }
        status = {
            k: v
            for k, v in status.items()
            if v or k in ("observedGeneration", "replicas", "availableReplicas", "collisionCount")
        }
        self.c.set_status(self.sts, s, status, MANAGER)


def _ordinal(pod_name: str) -> int:
    tail = pod_name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1
