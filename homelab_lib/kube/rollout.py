"""Waiting for what was applied to run: rollouts, Jobs, HelmChart install Jobs.

- Deployment and StatefulSet: ``status.observedGeneration`` reached ``metadata.generation`` and the
  updated and available (StatefulSet: ready) replicas equal the wanted ones.
- Job: its ``Complete`` condition; ``Failed`` stops the wait at once.
- HelmChart (K3s's Helm controller): its ``helm-install-<name>`` Job's ``Complete``, judged with the
  toolkit's timeout (the controller's backOffLimit is 1000: it never fails by itself); after a
  change, the Job must be a new one (another uid than before the apply).

A timeout names the pod that is not ready, its container's reason (``ImagePullBackOff`` with the
image, ``CrashLoopBackOff``...) and the last events about it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from homelab_lib.core.clock import Clock
from homelab_lib.core.errors import K3sRolloutFailed
from homelab_lib.kube.objects import Key, KubeObject

if TYPE_CHECKING:
    from homelab_lib.kube.client import Kube

POLL_S = 1.0
EVENTS = 5


def _cond(obj: KubeObject, kind: str) -> dict[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind and c.get("status") == "True":
            return dict(c)
    return None


def workload_ready(obj: KubeObject) -> tuple[bool, str]:
    """Whether a Deployment or StatefulSet has rolled out, and its replicas in words."""
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    want = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
    observed = int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    ready = int(status.get("availableReplicas" if obj["kind"] == "Deployment" else "readyReplicas") or 0)
    words = f"{ready}/{want} ready, {updated} updated" + ("" if observed else ", generation not observed yet")
    return observed and updated >= want and ready >= want and int(status.get("replicas") or 0) <= want, words


def job_state(job: KubeObject) -> str:
    """``Complete``, ``Failed`` or ``running``."""
    if _cond(job, "Complete"):
        return "Complete"
    if _cond(job, "Failed"):
        return "Failed"
    return "running"


def _selector(obj: KubeObject) -> str:
    labels = (((obj.get("spec") or {}).get("selector") or {}).get("matchLabels")) or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def diagnose(kube: Kube, namespace: str, selector: str) -> tuple[str, str, list[str]]:
    """The first pod (by selector) that is not ready: its name, its container's reason, its last events."""
    pods = list(kube.list("v1", "Pod", namespace=namespace, label_selector=selector)) if selector else []
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        if statuses and all(s.get("ready") for s in statuses):
            continue
        reason = ""
        for s in statuses:
            state = s.get("state") or {}
            waiting, terminated = state.get("waiting") or {}, state.get("terminated") or {}
            last = (s.get("lastState") or {}).get("terminated") or {}
            detail = waiting or terminated or last
            if detail:
                reason = str(detail.get("reason") or "")
                if reason in ("ImagePullBackOff", "ErrImagePull"):
                    reason += f" (image {s.get('image')})"
                elif detail.get("message"):
                    reason += f": {str(detail['message'])[:160]}"
                break
        if not reason:
            phase = (pod.get("status") or {}).get("phase") or "Pending"
            reason = _unbound(kube, namespace, pod) or _unscheduled(pod) or f"{phase}, not ready"
        name = pod["metadata"]["name"]
        events = [
            f"{e.get('reason')}: {e.get('message')}"
            for e in sorted(
                kube.list("v1", "Event", namespace=namespace),
                key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""),
            )
            if (e.get("involvedObject") or {}).get("name") == name
        ][-EVENTS:]
        return name, reason, events
    return "", "", []


def _unbound(kube: Kube, namespace: str, pod: KubeObject) -> str:
    """``PersistentVolumeClaim X is Pending (StorageClass Y)`` for the first claim of the pod that is not Bound."""
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
        if not claim:
            continue
        found = kube.get(Key("v1", "PersistentVolumeClaim", namespace, claim))
        if found is None:
            return f"PersistentVolumeClaim {claim} does not exist"
        phase = (found.get("status") or {}).get("phase") or "Pending"
        if phase != "Bound":
            sc = (found.get("spec") or {}).get("storageClassName") or "(default)"
            return f"PersistentVolumeClaim {claim} is {phase} (StorageClass {sc})"
    return ""


def _unscheduled(pod: KubeObject) -> str:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("status") == "False":
            return f"{c.get('reason') or 'Unschedulable'}: {str(c.get('message') or '')[:160]}"
    return ""


def wait(
    kube: Kube,
    obj: KubeObject,
    *,
    timeout_s: float,
    clock: Clock,
    previous_job: str = "",
) -> str:
    """Wait until obj runs as applied; returns what was seen (``3/3 ready``, ``Complete``).

    Args:
        kube: the cluster.
        obj: the applied manifest (Deployment, StatefulSet, Job, HelmChart; other kinds return at once).
        timeout_s: how long to wait.
        clock: the clock to wait by.
        previous_job: for a HelmChart, the uid of its install Job before the apply ('' when none).

    Raises:
        K3sRolloutFailed: not ready in time, or the Job failed; names the pod, its reason and events.
    """
    kind = obj["kind"]
    meta = obj["metadata"]
    ns, name = meta.get("namespace", ""), meta["name"]
    if kind not in ("Deployment", "StatefulSet", "Job", "HelmChart"):
        return "applied"
    where = f"{kind} {ns}/{name}"
    deadline = clock.monotonic() + timeout_s
    seen = "not seen yet"
    while True:
        if kind in ("Deployment", "StatefulSet"):
            now = kube.get(Key(obj["apiVersion"], kind, ns, name))
            if now is not None:
                ok, seen = workload_ready(now)
                if ok:
                    return seen
            selector = _selector(obj)
        else:
            job_name = name if kind == "Job" else f"helm-install-{name}"
            job_ns = ns
            job = kube.get(Key("batch/v1", "Job", job_ns, job_name))
            selector = f"job-name={job_name}"
            fresh = job is not None and (kind == "Job" or job["metadata"].get("uid") != previous_job)
            if job is not None and fresh:
                seen = job_state(job)
                if seen == "Complete":
                    return f"job {job_name} Complete"
                if seen == "Failed":
                    pod, reason, events = diagnose(kube, job_ns, selector)
                    failed = _cond(job, "Failed") or {}
                    raise K3sRolloutFailed(
                        f"job {job_name} failed: {failed.get('reason', '')} {failed.get('message', '')}".strip(),
                        pod=pod,
                        reason=reason,
                        events=events,
                        where=where,
                        hint="read the job's pod log (kubectl logs -n " + f"{job_ns} job/{job_name}), fix, run again",
                    )
            else:
                seen = "waiting for a new install job" if kind == "HelmChart" else "job not seen yet"
        if clock.monotonic() >= deadline:
            pod, reason, events = diagnose(kube, ns, selector)
            at = f"; pod {pod}: {reason}" if pod else ""
            raise K3sRolloutFailed(
                f"not ready after {timeout_s:.0f} s ({seen}){at}",
                pod=pod,
                reason=reason,
                events=events,
                where=where,
                hint="fix what the pod's reason says (an image name, a PVC, a probe), then run again: "
                "the plan shows what is left",
            )
        clock.sleep(POLL_S)
