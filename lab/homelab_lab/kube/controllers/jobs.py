"""Jobs (pods until completions succeed, or Failed past backoffLimit) and K3s's HelmChart
controller (a ``helm-install-<name>`` Job per chart, run again when the chart's spec changes)."""

from __future__ import annotations

import copy
import hashlib
import json
import time

from homelab_lab.kube.cluster import Cluster, WriteOptions, now
from homelab_lab.kube.controllers.base import MANAGER, condition, get_condition, kind, owned_by, owner_ref
from homelab_lab.kube.resources import Kind
from homelab_lab.kube.schema import Json
from homelab_lab.kube.system import IMAGES

CONFIG_HASH = "helmcharts.helm.cattle.io/configHash"
CHART_LABEL = "helmcharts.helm.cattle.io/chart"
BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 10.0)


def _opts() -> WriteOptions:
    return WriteOptions(MANAGER, False, "Ignore")


def finished(job: Json) -> str:
    """'Complete', 'Failed' or '' for a Job."""
    for t in ("Complete", "Failed"):
        c = get_condition(job, t)
        if c and c.get("status") == "True":
            return t
    return ""


class Jobs:
    def __init__(self, cluster: Cluster) -> None:
        self.c = cluster
        self.job = kind(cluster, "batch/v1", "Job")
        self.pod = kind(cluster, "v1", "Pod")
        self._last_failure: dict[str, tuple[int, float]] = {}

    def reconcile(self) -> None:
        all_pods, _ = self.c.list(self.pod)
        for job in self.c.list(self.job)[0]:
            if job["metadata"].get("deletionTimestamp") or (job.get("spec") or {}).get("suspend"):
                continue
            ns = job["metadata"]["namespace"]
            self._one(job, [p for p in all_pods if p["metadata"]["namespace"] == ns and owned_by(p, job)])

    def _one(self, job: Json, pods: list[Json]) -> None:
        spec, ns = job["spec"], job["metadata"]["namespace"]
        status = copy.deepcopy(job.get("status") or {})
        phase = {p["metadata"]["name"]: (p.get("status") or {}).get("phase") for p in pods}
        succeeded = sum(1 for v in phase.values() if v == "Succeeded")
        restarts = sum(
            int(c.get("restartCount") or 0)
            for p in pods
            for c in (p.get("status") or {}).get("containerStatuses") or []
        )
        failed = sum(1 for v in phase.values() if v == "Failed") + restarts
        active = [
            p
            for p in pods
            if phase[p["metadata"]["name"]] not in ("Succeeded", "Failed")
            and not p["metadata"].get("deletionTimestamp")
        ]
        completions = int(spec.get("completions") or 1)
        done = finished(job)
        conds = list(status.get("conditions") or [])
        status.setdefault("startTime", now())
        if not done and succeeded >= completions:
            conds = condition(
                conds, "SuccessCriteriaMet", "True", "CompletionsReached", "Reached expected number of succeeded pods"
            )
            conds = condition(
                conds, "Complete", "True", "CompletionsReached", "Reached expected number of succeeded pods"
            )
            status["completionTime"] = now()
            done = "Complete"
        elif not done and failed > int(spec.get("backoffLimit", 6)):
            conds = condition(
                conds, "FailureTarget", "True", "BackoffLimitExceeded", "Job has reached the specified backoff limit"
            )
            conds = condition(
                conds, "Failed", "True", "BackoffLimitExceeded", "Job has reached the specified backoff limit"
            )
            done = "Failed"
        if done:
            for p in active:
                self.c.delete(self.pod, ns, p["metadata"]["name"])
            active = []
        else:
            uid = job["metadata"]["uid"]
            count, at = self._last_failure.get(uid, (0, 0.0))
            if failed > count:
                self._last_failure[uid] = (failed, time.monotonic())
                count, at = failed, time.monotonic()
            wait = BACKOFF_S[min(count, len(BACKOFF_S)) - 1] if count else 0.0
            need = min(int(spec.get("parallelism", 1)), completions - succeeded) - len(active)
            if need > 0 and time.monotonic() - at >= wait:
                for _ in range(need):
                    tmpl = spec["template"]
                    pod: Json = {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "metadata": {
                            "generateName": f"{job['metadata']['name']}-",
                            "namespace": ns,
                            "labels": dict((tmpl.get("metadata") or {}).get("labels") or {}),
                            "annotations": dict((tmpl.get("metadata") or {}).get("annotations") or {}),
                            "ownerReferences": [owner_ref(job)],
                        },
                        "spec": copy.deepcopy(tmpl.get("spec") or {}),
                    }
                    if not pod["metadata"]["annotations"]:
                        del pod["metadata"]["annotations"]
                    active.append(self.c.create(self.pod, ns, pod, _opts()))
        ready = sum(1 for p in active if (get_condition(p, "Ready") or {}).get("status") == "True")
        status.update(
            {
                "active": len(active),
                "succeeded": succeeded,
                "failed": failed,
                "ready": ready,
                "terminating": 0,
                "uncountedTerminatedPods": {},
            }
        )
        for k in ("active", "succeeded", "failed"):
            if not status[k]:
                del status[k]
        if conds:
            status["conditions"] = conds
        self.c.set_status(self.job, job, status, MANAGER)


class CronJobs:
    """CronJobs are kept, not scheduled (the runbooks only store them)."""

    def reconcile(self) -> None:
        return


class HelmCharts:
    """K3s's helm-controller: one ``helm-install-<name>`` Job (image klipper-helm) per HelmChart."""

    def __init__(self, cluster: Cluster) -> None:
        self.c = cluster
        self.hc = kind(cluster, "helm.cattle.io/v1", "HelmChart")
        self.job = kind(cluster, "batch/v1", "Job")
        self.sa = kind(cluster, "v1", "ServiceAccount")
        self.secret = kind(cluster, "v1", "Secret")
        self.cm = kind(cluster, "v1", "ConfigMap")

    def reconcile(self) -> None:
        for hc in self.c.list(self.hc)[0]:
            if not hc["metadata"].get("deletionTimestamp"):
                self._one(hc)

    def _one(self, hc: Json) -> None:
        ns, name, spec = hc["metadata"]["namespace"], hc["metadata"]["name"], hc.get("spec") or {}
        digest = "SHA256=" + hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest().upper()
        job_name = f"helm-install-{name}"
        job = self.c.find(self.job, ns, job_name)
        if job is not None and (job["metadata"].get("annotations") or {}).get(CONFIG_HASH) != digest:
            if not job["metadata"].get("deletionTimestamp"):
                self.c.delete(self.job, ns, job_name)
            return
        if job is None:
            self._support(hc, ns, name, spec)
            job = self.c.create(self.job, ns, self._job(hc, ns, name, spec, digest), _opts())
        conds = list((hc.get("status") or {}).get("conditions") or [])
        conds = condition(conds, "JobCreated", "True", "Job created", f"Applying HelmChart using Job {ns}/{job_name}")
        state = finished(job)
        if state == "Failed":
            conds = condition(conds, "Failed", "True", "Failed", f"Job {ns}/{job_name} failed")
        else:
            conds = [c for c in conds if c.get("type") != "Failed"]
        self.c.set_status(self.hc, hc, {"jobName": job_name, "conditions": conds}, MANAGER)

    def _support(self, hc: Json, ns: str, name: str, spec: Json) -> None:
        owner = [owner_ref(hc, controller=False)]
        objs: list[tuple[Kind, Json]] = [
            (
                self.sa,
                {
                    "apiVersion": "v1",
                    "kind": "ServiceAccount",
                    "metadata": {"name": f"helm-{name}", "namespace": ns, "ownerReferences": owner},
                },
            ),
            (
                self.secret,
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "type": "Opaque",
                    "metadata": {"name": f"chart-values-{name}", "namespace": ns, "ownerReferences": owner},
                    "stringData": {"values-01_HelmChart.yaml": spec.get("valuesContent", "")},
                },
            ),
            (
                self.cm,
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": f"chart-content-{name}", "namespace": ns, "ownerReferences": owner},
                },
            ),
        ]
        for k, obj in objs:
            if k.kind == "Secret":
                import base64

                obj["data"] = {
                    key: base64.b64encode(str(v).encode()).decode() for key, v in obj.pop("stringData").items()
                }
            self.c.write(k, obj, MANAGER)

    def _job(self, hc: Json, ns: str, name: str, spec: Json, digest: str) -> Json:
        target = spec.get("targetNamespace") or ns
        env = {
            "NAME": name,
            "VERSION": spec.get("version", ""),
            "REPO": spec.get("repo", ""),
            "HELM_DRIVER": "secret",
            "CHART_NAMESPACE": target,
            "CHART": spec.get("chart", ""),
            "HELM_VERSION": spec.get("helmVersion", ""),
            "TARGET_NAMESPACE": target,
            "AUTH_PASS_CREDENTIALS": "false",
            "INSECURE_SKIP_TLS_VERIFY": "false",
            "PLAIN_HTTP": "false",
            "NO_PROXY": ".svc,.cluster.local,10.42.0.0/16,10.43.0.0/16",
            "FAILURE_POLICY": spec.get("failurePolicy", "reinstall"),
            "CREATE_NAMESPACE": "true",
        }
        labels = {CHART_LABEL: name}
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": f"helm-install-{name}",
                "namespace": ns,
                "labels": labels,
                "annotations": {CONFIG_HASH: digest},
                "ownerReferences": [owner_ref(hc)],
            },
            "spec": {
                "backoffLimit": int(spec.get("backOffLimit") or 1000),
                "template": {
                    "metadata": {"labels": dict(labels), "annotations": {CONFIG_HASH: digest}},
                    "spec": {
                        "restartPolicy": "OnFailure",
                        "serviceAccountName": f"helm-{name}",
                        "containers": [
                            {
                                "name": "helm",
                                "image": spec.get("jobImage") or IMAGES["helm"],
                                "args": ["install"],
                                "env": [{"name": k, "value": str(v)} for k, v in env.items()],
                                "volumeMounts": [
                                    {"name": "values", "mountPath": "/config"},
                                    {"name": "content", "mountPath": "/chart"},
                                ],
                            }
                        ],
                        "volumes": [
                            {"name": "values", "secret": {"secretName": f"chart-values-{name}"}},
                            {"name": "content", "configMap": {"name": f"chart-content-{name}"}},
                        ],
                    },
                },
            },
        }
