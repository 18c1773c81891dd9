"""The scheduler (one node: taints, PVC binding on first use) and the kubelet (volumes, env, the
runtime, readiness probes, pod status, graceful deletion)."""

from __future__ import annotations

import base64
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from homelab_lab.errors import KubeStatus
from homelab_lab.kube import runtime as rt
from homelab_lab.kube.cluster import Cluster, now
from homelab_lab.kube.controllers.base import MANAGER, condition, kind
from homelab_lab.kube.controllers.core import SELECTED_NODE
from homelab_lab.kube.schema import Json


class Scheduler:
    """Binds pending pods to the node once their PVCs can bind.

    A WaitForFirstConsumer claim gets the node as its selected node, so the provisioner binds it.
    """

    def __init__(self, cluster: Cluster, node_name: str) -> None:
        self.c = cluster
        self.node_name = node_name
        self.pod = kind(cluster, "v1", "Pod")
        self.pvc = kind(cluster, "v1", "PersistentVolumeClaim")
        self.node = kind(cluster, "v1", "Node")

    def _unschedulable(self, pod: Json, message: str) -> None:
        conds = condition(
            (pod.get("status") or {}).get("conditions") or [], "PodScheduled", "False", "Unschedulable", message
        )
        self.c.set_status(
            self.pod, pod, {**(pod.get("status") or {}), "phase": "Pending", "conditions": conds}, "default-scheduler"
        )

    def reconcile(self) -> None:
        node = self.c.find(self.node, "", self.node_name)
        for pod in self.c.list(self.pod)[0]:
            if (pod.get("spec") or {}).get("nodeName") or pod["metadata"].get("deletionTimestamp"):
                continue
            self._schedule(pod, node)

    def _schedule(self, pod: Json, node: Json | None) -> None:
        ns = pod["metadata"]["namespace"]
        if node is None:
            self._unschedulable(pod, "0/0 nodes are available")
            return
        tolerations = pod["spec"].get("tolerations") or []
        for taint in (node.get("spec") or {}).get("taints") or []:
            if taint.get("effect") in ("NoSchedule", "NoExecute") and not any(
                _tolerates(t, taint) for t in tolerations
            ):
                shown = f"{taint['key']}: {taint.get('value', '')}" if taint.get("value") else taint["key"]
                self._unschedulable(
                    pod,
                    f"0/1 nodes are available: 1 node(s) had untolerated taint {{{shown}}}. "
                    "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.",
                )
                return
        waiting = False
        for v in pod["spec"].get("volumes") or []:
            claim = (v.get("persistentVolumeClaim") or {}).get("claimName")
            if not claim:
                continue
            pvc = self.c.find(self.pvc, ns, claim)
            if pvc is None:
                self._unschedulable(
                    pod,
                    f'0/1 nodes are available: persistentvolumeclaim "{claim}" not found. '
                    "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.",
                )
                return
            if (pvc.get("status") or {}).get("phase") != "Bound":
                waiting = True
                annotations = pvc["metadata"].get("annotations") or {}
                if SELECTED_NODE not in annotations:
                    meta = {**pvc["metadata"], "annotations": {**annotations, SELECTED_NODE: self.node_name}}
                    self.c.write(self.pvc, {**pvc, "metadata": meta}, "kube-scheduler")
        if waiting:
            return
        bound = self.c.write(self.pod, {**pod, "spec": {**pod["spec"], "nodeName": self.node_name}}, "kube-scheduler")
        conds = condition((bound.get("status") or {}).get("conditions") or [], "PodScheduled", "True")
        self.c.set_status(self.pod, bound, {**(bound.get("status") or {}), "conditions": conds}, "kube-scheduler")


def _tolerates(t: Json, taint: Json) -> bool:
    if t.get("effect") and t["effect"] != taint.get("effect"):
        return False
    if t.get("operator") == "Exists":
        return not t.get("key") or t["key"] == taint.get("key")
    return bool(t.get("key") == taint.get("key") and t.get("value", "") == taint.get("value", ""))


class _ConfigError(Exception):
    pass


class Kubelet:
    """Runs the node's pods through a runtime and reports their status.

    Args:
        cluster: the objects.
        runtime: :class:`~homelab_lab.kube.runtime.DockerRuntime` or ``NoRuntime``.
        node_name: the node whose pods this kubelet runs.
        pods_dir: where pod volumes (emptyDir, configMap, secret) live on the host.
        host_ip: the node's address (status.hostIP).
    """

    def __init__(self, cluster: Cluster, runtime: Any, node_name: str, pods_dir: Path, host_ip: str) -> None:
        self.c = cluster
        self.rt = runtime
        self.node_name = node_name
        self.pods_dir = pods_dir
        self.host_ip = host_ip
        self.pod = kind(cluster, "v1", "Pod")
        self.pvc = kind(cluster, "v1", "PersistentVolumeClaim")
        self.pv = kind(cluster, "v1", "PersistentVolume")
        self.cm = kind(cluster, "v1", "ConfigMap")
        self.secret = kind(cluster, "v1", "Secret")
        self._probes: dict[tuple[str, str], tuple[bool, float]] = {}

    def reconcile(self) -> None:
        pods = [p for p in self.c.list(self.pod)[0] if (p.get("spec") or {}).get("nodeName") == self.node_name]
        for pod in pods:
            try:
                if pod["metadata"].get("deletionTimestamp"):
                    self._remove(pod)
                elif (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                    self._sync(pod)
            except KubeStatus as e:  # one pod's trouble (a race with a client) must not stall the others
                if e.code not in (404, 409):
                    print(f"kubelet: pod {pod['metadata']['name']}: {e}", file=sys.stderr)
        live = {p["metadata"]["uid"] for p in self.c.list(self.pod)[0]}
        for uid in self.rt.uids() - live:
            self.rt.kill(uid)
            shutil.rmtree(self.pods_dir / uid, ignore_errors=True)

    def _remove(self, pod: Json) -> None:
        uid = pod["metadata"]["uid"]
        self.rt.kill(uid)
        shutil.rmtree(self.pods_dir / uid, ignore_errors=True)
        for key in [k for k in self._probes if k[0] == uid]:
            self._probes.pop(key, None)
        self.c.remove_now(self.pod, pod)

    # ------------------------------------------------------------ volumes and env

    def _write_files(self, folder: Path, files: dict[str, bytes], mode: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists() or path.read_bytes() != data:
                path.write_bytes(data)
                os.chmod(path, mode)

    def _volume(self, pod: Json, vol: Json) -> str:
        uid, ns = pod["metadata"]["uid"], pod["metadata"]["namespace"]
        base = self.pods_dir / uid / "volumes"
        name = vol["name"]
        if vol.get("persistentVolumeClaim"):
            claim = vol["persistentVolumeClaim"]["claimName"]
            pvc = self.c.find(self.pvc, ns, claim)
            pv = self.c.find(self.pv, "", str(((pvc or {}).get("spec") or {}).get("volumeName") or ""))
            path = str((((pv or {}).get("spec") or {}).get("hostPath") or {}).get("path") or "")
            if not path:
                raise _ConfigError(f'persistentvolumeclaim "{claim}" is not bound')
            return path
        if "configMap" in vol or "secret" in vol:
            is_cm = "configMap" in vol
            src = vol["configMap"] if is_cm else vol["secret"]
            ref = src.get("name") if is_cm else src.get("secretName")
            obj = self.c.find(self.cm if is_cm else self.secret, ns, str(ref))
            folder = base / ("kubernetes.io~configmap" if is_cm else "kubernetes.io~secret") / name
            if obj is None:
                if src.get("optional"):
                    folder.mkdir(parents=True, exist_ok=True)
                    return str(folder)
                raise _ConfigError(f'{"configmap" if is_cm else "secret"} "{ref}" not found')
            if is_cm:
                data = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
                data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
            else:
                data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
            if src.get("items"):
                data = {i["path"]: data[i["key"]] for i in src["items"] if i.get("key") in data}
            self._write_files(folder, data, int(src.get("defaultMode", 0o644)))
            return str(folder)
        if vol.get("hostPath"):
            host = Path(vol["hostPath"]["path"])
            if vol["hostPath"].get("type") in ("DirectoryOrCreate", "", None) and not host.exists():
                host.mkdir(parents=True, exist_ok=True)
            return str(host)
        folder = base / "kubernetes.io~empty-dir" / name
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o777)
        return str(folder)

    def _mounts(self, pod: Json) -> dict[str, list[rt.Mount]]:
        vols = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        paths = {name: self._volume(pod, v) for name, v in vols.items()}
        out: dict[str, list[rt.Mount]] = {}
        for c in pod["spec"].get("containers") or []:
            mounts = []
            for m in c.get("volumeMounts") or []:
                host = paths.get(m["name"])
                if host is None:
                    continue
                if m.get("subPath"):
                    sub = Path(host) / m["subPath"]
                    if not sub.exists():
                        sub.mkdir(parents=True, exist_ok=True)
                    host = str(sub)
                mounts.append((host, m["mountPath"], bool(m.get("readOnly"))))
            out[c["name"]] = mounts
        return out

    def _key(self, ns: str, ref: Json, secret: bool) -> str | None:
        obj = self.c.find(self.secret if secret else self.cm, ns, str(ref.get("name")))
        if obj is None:
            if ref.get("optional"):
                return None
            raise _ConfigError(f'{"secret" if secret else "configmap"} "{ref.get("name")}" not found')
        value = (obj.get("data") or {}).get(ref.get("key"))
        if value is None:
            if ref.get("optional"):
                return None
            raise _ConfigError(
                f"couldn't find key {ref.get('key')} in {'Secret' if secret else 'ConfigMap'} {ns}/{ref.get('name')}"
            )
        return base64.b64decode(value).decode(errors="replace") if secret else str(value)

    def _env(self, pod: Json) -> dict[str, dict[str, str]]:
        ns, meta = pod["metadata"]["namespace"], pod["metadata"]
        fields = {
            "metadata.name": meta["name"],
            "metadata.namespace": ns,
            "metadata.uid": meta["uid"],
            "spec.nodeName": self.node_name,
            "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
            "status.hostIP": self.host_ip,
            "status.podIP": (pod.get("status") or {}).get("podIP", ""),
        }
        out: dict[str, dict[str, str]] = {}
        for c in pod["spec"].get("containers") or []:
            env: dict[str, str] = {}
            for src in c.get("envFrom") or []:
                prefix = src.get("prefix", "")
                for key, secret in (("configMapRef", False), ("secretRef", True)):
                    if key in src:
                        obj = self.c.find(self.secret if secret else self.cm, ns, str(src[key].get("name")))
                        if obj is None and not src[key].get("optional"):
                            raise _ConfigError(
                                f'{"secret" if secret else "configmap"} "{src[key].get("name")}" not found'
                            )
                        for k, v in ((obj or {}).get("data") or {}).items():
                            env[prefix + k] = base64.b64decode(v).decode(errors="replace") if secret else str(v)
            for e in c.get("env") or []:
                vf = e.get("valueFrom")
                if vf is None:
                    env[e["name"]] = str(e.get("value", ""))
                elif "configMapKeyRef" in vf or "secretKeyRef" in vf:
                    secret = "secretKeyRef" in vf
                    value = self._key(ns, vf["secretKeyRef" if secret else "configMapKeyRef"], secret)
                    if value is not None:
                        env[e["name"]] = value
                elif "fieldRef" in vf:
                    path = vf["fieldRef"].get("fieldPath", "")
                    if path.startswith("metadata.labels['"):
                        env[e["name"]] = (meta.get("labels") or {}).get(path[17:-2], "")
                    else:
                        env[e["name"]] = str(fields.get(path, ""))
            out[c["name"]] = env
        return out

    # ------------------------------------------------------------ probes and status

    def _ready(self, pod: Json, c: Json, st: rt.ContainerStatus) -> bool:
        probe = c.get("readinessProbe")
        key = (pod["metadata"]["uid"], c["name"])
        if not st.running:
            self._probes.pop(key, None)
            return False
        if not probe:
            return True
        ok, at = self._probes.get(key, (False, 0.0))
        if time.monotonic() - at < float(probe.get("periodSeconds", 10)) and at:
            return ok
        timeout = float(probe.get("timeoutSeconds", 1))
        if "exec" in probe:
            ok = self.rt.exec_ok(pod, c["name"], list(probe["exec"].get("command") or []))
        elif "httpGet" in probe:
            ok = bool(st.ip) and rt.http_ok(
                st.ip, _port(c, probe["httpGet"].get("port")), probe["httpGet"].get("path", "/"), timeout
            )
        elif "tcpSocket" in probe:
            ok = bool(st.ip) and rt.tcp_ok(st.ip, _port(c, probe["tcpSocket"].get("port")), timeout)
        else:
            ok = True
        self._probes[key] = (ok, time.monotonic())
        return ok

    def _sync(self, pod: Json) -> None:
        status = dict(pod.get("status") or {})
        try:
            mounts, env = self._mounts(pod), self._env(pod)
            states = self.rt.sync(pod, mounts, env)
        except _ConfigError as e:
            states = [
                rt.ContainerStatus(
                    c["name"],
                    c.get("image", ""),
                    {"waiting": {"reason": "CreateContainerConfigError", "message": str(e)}},
                )
                for c in pod["spec"].get("containers") or []
            ]
        except KubeStatus:
            raise
        specs = {c["name"]: c for c in pod["spec"].get("containers") or []}
        previous = {s.get("name"): s for s in status.get("containerStatuses") or []}
        statuses = []
        for st in states:
            ready = self._ready(pod, specs[st.name], st)
            entry: Json = {
                "name": st.name,
                "image": st.image,
                "imageID": st.image_id,
                "ready": ready,
                "restartCount": st.restart_count,
                "started": st.running,
                "state": st.state,
                "lastState": st.last_state,
            }
            if st.container_id:
                entry["containerID"] = st.container_id
            statuses.append(entry)
            self._events(pod, specs[st.name], previous.get(st.name), entry)
        ip = next((s.ip for s in states if s.ip), "")
        all_ready = bool(statuses) and all(s["ready"] for s in statuses)
        terminated = [s for s in states if "terminated" in s.state]
        if statuses and len(terminated) == len(states):
            phase = "Succeeded" if all(s.exited == 0 for s in terminated) else "Failed"
        elif any(s.running or s.restart_count or s.last_state for s in states):
            phase = "Running"
        else:
            phase = "Pending"
        conds = status.get("conditions") or []
        started = any(s.container_id for s in states)
        conds = condition(conds, "PodReadyToStartContainers", "True" if started else "False")
        conds = condition(conds, "Initialized", "True")
        reason = "" if all_ready else ("PodCompleted" if phase in ("Succeeded", "Failed") else "ContainersNotReady")
        waiting = [s["name"] for s in statuses if not s["ready"]]
        msg = f"containers with unready status: [{' '.join(waiting)}]" if reason == "ContainersNotReady" else ""
        conds = condition(conds, "Ready", "True" if all_ready else "False", reason, msg)
        conds = condition(conds, "ContainersReady", "True" if all_ready else "False", reason, msg)
        conds = condition(conds, "PodScheduled", "True")
        order = ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]
        conds.sort(key=lambda c: order.index(c["type"]) if c["type"] in order else 99)
        for c in conds:
            c.setdefault("lastProbeTime", None)
        new: Json = {
            "phase": phase,
            "conditions": conds,
            "hostIP": self.host_ip,
            "hostIPs": [{"ip": self.host_ip}],
            "startTime": status.get("startTime") or now(),
            "containerStatuses": statuses,
            "qosClass": status.get("qosClass", "BestEffort"),
        }
        if ip:
            new["podIP"], new["podIPs"] = ip, [{"ip": ip}]
        self.c.set_status(self.pod, pod, new, MANAGER)

    def _events(self, pod: Json, c: Json, before: Json | None, after: Json) -> None:
        old = (before or {}).get("state") or {}
        new = after["state"]
        reason = (new.get("waiting") or {}).get("reason")
        if reason and reason != (old.get("waiting") or {}).get("reason"):
            image = c.get("image", "")
            if reason == "ErrImagePull":
                self.c.event(pod, "Pulling", f'Pulling image "{image}"')
                self.c.event(pod, "Failed", f'Failed to pull image "{image}": {new["waiting"]["message"]}', "Warning")
                self.c.event(pod, "Failed", "Error: ErrImagePull", "Warning")
            elif reason == "ImagePullBackOff":
                self.c.event(pod, "BackOff", f'Back-off pulling image "{image}"', "Normal")
                self.c.event(pod, "Failed", "Error: ImagePullBackOff", "Warning")
            elif reason == "CrashLoopBackOff":
                self.c.event(
                    pod,
                    "BackOff",
                    f"Back-off restarting failed container {c['name']} in pod "
                    f"{pod['metadata']['name']}_{pod['metadata']['namespace']}({pod['metadata']['uid']})",
                    "Warning",
                )
            else:
                self.c.event(pod, "Failed", f"Error: {new['waiting'].get('message', reason)}", "Warning")
        if "running" in new and "running" not in old and not after["restartCount"]:
            self.c.event(pod, "Pulled", f'Container image "{c.get("image")}" already present on machine')
            self.c.event(pod, "Created", f"Created container {c['name']}")
            self.c.event(pod, "Started", f"Started container {c['name']}")


def _port(c: Json, port: Any) -> int:
    if isinstance(port, int):
        return port
    if isinstance(port, str) and port.isdigit():
        return int(port)
    for p in c.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    return 0
