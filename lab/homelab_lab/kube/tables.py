"""``Accept: application/json;as=Table``: the server-side columns ``kubectl get`` prints."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from homelab_lab.kube.resources import Kind
from homelab_lab.kube.schema import Json

Column = tuple[str, str, str, int, Callable[[Json], Any]]  # name, type, format, priority, cell


def age(obj: Json, at: str | None = None) -> str:
    """Kubernetes' short human duration since a timestamp (``5s``, ``3m20s``, ``4h``, ``2d``)."""
    stamp = at or (obj.get("metadata") or {}).get("creationTimestamp")
    if not stamp:
        return "<unknown>"
    then = datetime.datetime.strptime(str(stamp), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    s = max(0, int((datetime.datetime.now(datetime.UTC) - then).total_seconds()))
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    return f"{d}d{h % 24}h" if d < 8 and h % 24 else f"{d}d"


def _name(o: Json) -> str:
    return str(o["metadata"]["name"])


def _status(o: Json) -> Json:
    return o.get("status") or {}


def _spec(o: Json) -> Json:
    return o.get("spec") or {}


def _pod_status(o: Json) -> str:
    if (o.get("metadata") or {}).get("deletionTimestamp"):
        return "Terminating"
    st = _status(o)
    reason = st.get("reason") or st.get("phase") or "Pending"
    for c in st.get("initContainerStatuses") or []:
        state = c.get("state") or {}
        if "waiting" in state and state["waiting"].get("reason") not in (None, "PodInitializing"):
            return f"Init:{state['waiting']['reason']}"
        if "terminated" in state and state["terminated"].get("exitCode", 0) != 0:
            return f"Init:{state['terminated'].get('reason') or 'Error'}"
    for c in st.get("containerStatuses") or []:
        state = c.get("state") or {}
        if "waiting" in state and state["waiting"].get("reason"):
            reason = state["waiting"]["reason"]
        elif "terminated" in state:
            t = state["terminated"]
            reason = t.get("reason") or (
                f"Signal:{t['signal']}" if t.get("signal") else f"ExitCode:{t.get('exitCode')}"
            )
    return str(reason)


def _pod_ready(o: Json) -> str:
    cs = _status(o).get("containerStatuses") or []
    total = len(_spec(o).get("containers") or [])
    return f"{sum(1 for c in cs if c.get('ready'))}/{total}"


def _restarts(o: Json) -> Any:
    return sum(int(c.get("restartCount") or 0) for c in _status(o).get("containerStatuses") or [])


def _node_status(o: Json) -> str:
    ready = next((c for c in _status(o).get("conditions") or [] if c.get("type") == "Ready"), None)
    text = "Ready" if ready and ready.get("status") == "True" else "NotReady"
    return text + (",SchedulingDisabled" if _spec(o).get("unschedulable") else "")


def _roles(o: Json) -> str:
    roles = sorted(
        k.split("/", 1)[1] for k in (o["metadata"].get("labels") or {}) if k.startswith("node-role.kubernetes.io/")
    )
    return ",".join(roles) or "<none>"


def _ports(o: Json) -> str:
    out = []
    for p in _spec(o).get("ports") or []:
        text = f"{p.get('port')}"
        if p.get("nodePort"):
            text += f":{p['nodePort']}"
        out.append(f"{text}/{p.get('protocol', 'TCP')}")
    return ",".join(out) or "<none>"


def _external(o: Json) -> str:
    ingress = (_status(o).get("loadBalancer") or {}).get("ingress") or []
    ips = [i.get("ip") or i.get("hostname") for i in ingress]
    if ips:
        return ",".join(str(i) for i in ips)
    if _spec(o).get("type") == "LoadBalancer":
        return "<pending>"
    return ",".join(_spec(o).get("externalIPs") or []) or "<none>"


def _modes(modes: list[str] | None) -> str:
    short = {"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX", "ReadWriteOncePod": "RWOP"}
    return ",".join(short.get(m, m) for m in modes or [])


def _job_status(o: Json) -> str:
    conds = {c.get("type"): c.get("status") for c in _status(o).get("conditions") or []}
    if conds.get("Complete") == "True":
        return "Complete"
    if conds.get("Failed") == "True":
        return "Failed"
    if (o["metadata"]).get("deletionTimestamp"):
        return "Terminating"
    return "Running"


def _job_duration(o: Json) -> str:
    st = _status(o)
    if not st.get("startTime"):
        return ""
    if st.get("completionTime"):
        a = datetime.datetime.strptime(st["startTime"], "%Y-%m-%dT%H:%M:%SZ")
        b = datetime.datetime.strptime(st["completionTime"], "%Y-%m-%dT%H:%M:%SZ")
        return f"{int((b - a).total_seconds())}s"
    return age(o, st["startTime"])


def _hosts(o: Json) -> str:
    hosts = [str(r.get("host") or "*") for r in _spec(o).get("rules") or []]
    return ",".join(hosts) or "*"


def _address(o: Json) -> str:
    ingress = (_status(o).get("loadBalancer") or {}).get("ingress") or []
    return ",".join(str(i.get("ip") or i.get("hostname")) for i in ingress)


def _cond(o: Json, kind: str) -> str:
    c = next((c for c in _status(o).get("conditions") or [] if c.get("type") == kind), None)
    return str(c.get("status")) if c else ""


NAME: Column = ("Name", "string", "name", 0, _name)
AGE: Column = ("Age", "string", "", 0, age)
COLUMNS: dict[str, list[Column]] = {
    "Pod": [
        NAME,
        ("Ready", "string", "", 0, _pod_ready),
        ("Status", "string", "", 0, _pod_status),
        ("Restarts", "string", "", 0, _restarts),
        AGE,
        ("IP", "string", "", 1, lambda o: _status(o).get("podIP") or "<none>"),
        ("Node", "string", "", 1, lambda o: _spec(o).get("nodeName") or "<none>"),
        ("Nominated Node", "string", "", 1, lambda o: "<none>"),
        ("Readiness Gates", "string", "", 1, lambda o: "<none>"),
    ],
    "Node": [
        NAME,
        ("Status", "string", "", 0, _node_status),
        ("Roles", "string", "", 0, _roles),
        AGE,
        ("Version", "string", "", 0, lambda o: (_status(o).get("nodeInfo") or {}).get("kubeletVersion", "")),
        (
            "Internal-IP",
            "string",
            "",
            1,
            lambda o: next(
                (a.get("address") for a in _status(o).get("addresses") or [] if a.get("type") == "InternalIP"), "<none>"
            ),
        ),
        ("OS-Image", "string", "", 1, lambda o: (_status(o).get("nodeInfo") or {}).get("osImage", "")),
        ("Kernel-Version", "string", "", 1, lambda o: (_status(o).get("nodeInfo") or {}).get("kernelVersion", "")),
        (
            "Container-Runtime",
            "string",
            "",
            1,
            lambda o: (_status(o).get("nodeInfo") or {}).get("containerRuntimeVersion", ""),
        ),
    ],
    "Namespace": [NAME, ("Status", "string", "", 0, lambda o: _status(o).get("phase", "")), AGE],
    "Service": [
        NAME,
        ("Type", "string", "", 0, lambda o: _spec(o).get("type", "")),
        ("Cluster-IP", "string", "", 0, lambda o: _spec(o).get("clusterIP") or "<none>"),
        ("External-IP", "string", "", 0, _external),
        ("Port(s)", "string", "", 0, _ports),
        AGE,
        (
            "Selector",
            "string",
            "",
            1,
            lambda o: ",".join(f"{k}={v}" for k, v in (_spec(o).get("selector") or {}).items()) or "<none>",
        ),
    ],
    "Deployment": [
        NAME,
        ("Ready", "string", "", 0, lambda o: f"{_status(o).get('readyReplicas', 0)}/{_spec(o).get('replicas', 1)}"),
        ("Up-to-date", "integer", "", 0, lambda o: _status(o).get("updatedReplicas", 0)),
        ("Available", "integer", "", 0, lambda o: _status(o).get("availableReplicas", 0)),
        AGE,
    ],
    "StatefulSet": [
        NAME,
        ("Ready", "string", "", 0, lambda o: f"{_status(o).get('readyReplicas', 0)}/{_spec(o).get('replicas', 1)}"),
        AGE,
    ],
    "ReplicaSet": [
        NAME,
        ("Desired", "integer", "", 0, lambda o: _spec(o).get("replicas", 1)),
        ("Current", "integer", "", 0, lambda o: _status(o).get("replicas", 0)),
        ("Ready", "integer", "", 0, lambda o: _status(o).get("readyReplicas", 0)),
        AGE,
    ],
    "Job": [
        NAME,
        ("Status", "string", "", 0, _job_status),
        (
            "Completions",
            "string",
            "",
            0,
            lambda o: f"{_status(o).get('succeeded', 0)}/{_spec(o).get('completions', 1)}",
        ),
        ("Duration", "string", "", 0, _job_duration),
        AGE,
    ],
    "CronJob": [
        NAME,
        ("Schedule", "string", "", 0, lambda o: _spec(o).get("schedule", "")),
        ("Timezone", "string", "", 0, lambda o: _spec(o).get("timeZone") or "<none>"),
        ("Suspend", "boolean", "", 0, lambda o: bool(_spec(o).get("suspend"))),
        ("Active", "integer", "", 0, lambda o: len(_status(o).get("active") or [])),
        ("Last Schedule", "string", "", 0, lambda o: "<none>"),
        AGE,
    ],
    "PersistentVolumeClaim": [
        NAME,
        ("Status", "string", "", 0, lambda o: _status(o).get("phase", "Pending")),
        ("Volume", "string", "", 0, lambda o: _spec(o).get("volumeName", "")),
        ("Capacity", "string", "", 0, lambda o: (_status(o).get("capacity") or {}).get("storage", "")),
        ("Access Modes", "string", "", 0, lambda o: _modes(_status(o).get("accessModes"))),
        ("StorageClass", "string", "", 0, lambda o: _spec(o).get("storageClassName") or "<unset>"),
        ("VolumeAttributesClass", "string", "", 0, lambda o: "<unset>"),
        AGE,
        ("VolumeMode", "string", "", 1, lambda o: _spec(o).get("volumeMode", "")),
    ],
    "PersistentVolume": [
        NAME,
        ("Capacity", "string", "", 0, lambda o: (_spec(o).get("capacity") or {}).get("storage", "")),
        ("Access Modes", "string", "", 0, lambda o: _modes(_spec(o).get("accessModes"))),
        ("Reclaim Policy", "string", "", 0, lambda o: _spec(o).get("persistentVolumeReclaimPolicy", "")),
        ("Status", "string", "", 0, lambda o: _status(o).get("phase", "")),
        (
            "Claim",
            "string",
            "",
            0,
            lambda o: "/".join(str((_spec(o).get("claimRef") or {}).get(k, "")) for k in ("namespace", "name")).strip(
                "/"
            ),
        ),
        ("StorageClass", "string", "", 0, lambda o: _spec(o).get("storageClassName", "")),
        ("VolumeAttributesClass", "string", "", 0, lambda o: "<unset>"),
        ("Reason", "string", "", 0, lambda o: _status(o).get("reason", "")),
        AGE,
    ],
    "StorageClass": [
        NAME,
        ("Provisioner", "string", "", 0, lambda o: o.get("provisioner", "")),
        ("ReclaimPolicy", "string", "", 0, lambda o: o.get("reclaimPolicy", "Delete")),
        ("VolumeBindingMode", "string", "", 0, lambda o: o.get("volumeBindingMode", "Immediate")),
        ("AllowVolumeExpansion", "boolean", "", 0, lambda o: bool(o.get("allowVolumeExpansion"))),
        AGE,
    ],
    "Ingress": [
        NAME,
        ("Class", "string", "", 0, lambda o: _spec(o).get("ingressClassName") or "<none>"),
        ("Hosts", "string", "", 0, _hosts),
        ("Address", "string", "", 0, _address),
        ("Ports", "string", "", 0, lambda o: "80, 443" if _spec(o).get("tls") else "80"),
        AGE,
    ],
    "ConfigMap": [
        NAME,
        ("Data", "integer", "", 0, lambda o: len(o.get("data") or {}) + len(o.get("binaryData") or {})),
        AGE,
    ],
    "Secret": [
        NAME,
        ("Type", "string", "", 0, lambda o: o.get("type", "Opaque")),
        ("Data", "integer", "", 0, lambda o: len(o.get("data") or {})),
        AGE,
    ],
    "Endpoints": [
        NAME,
        (
            "Endpoints",
            "string",
            "",
            0,
            lambda o: (
                ",".join(
                    f"{a.get('ip')}:{p.get('port')}"
                    for s in o.get("subsets") or []
                    for a in s.get("addresses") or []
                    for p in s.get("ports") or []
                )
                or "<none>"
            ),
        ),
        AGE,
    ],
    "Event": [
        ("Last Seen", "string", "", 0, lambda o: age(o, o.get("lastTimestamp"))),
        ("Type", "string", "", 0, lambda o: o.get("type", "")),
        ("Reason", "string", "", 0, lambda o: o.get("reason", "")),
        (
            "Object",
            "string",
            "",
            0,
            lambda o: (
                f"{str((o.get('involvedObject') or {}).get('kind', '')).lower()}/"
                f"{(o.get('involvedObject') or {}).get('name', '')}"
            ),
        ),
        ("Message", "string", "", 0, lambda o: o.get("message", "")),
    ],
    "CustomResourceDefinition": [
        NAME,
        ("Created At", "date", "", 0, lambda o: (o.get("metadata") or {}).get("creationTimestamp")),
    ],
    "HelmChart": [
        NAME,
        ("Job", "string", "", 0, lambda o: _status(o).get("jobName", "")),
        ("Chart", "string", "", 0, lambda o: _spec(o).get("chart", "")),
        ("TargetNamespace", "string", "", 0, lambda o: _spec(o).get("targetNamespace", "")),
        ("Version", "string", "", 0, lambda o: _spec(o).get("version", "")),
        ("Repo", "string", "", 0, lambda o: _spec(o).get("repo", "")),
        ("HelmVersion", "string", "", 0, lambda o: _spec(o).get("helmVersion", "")),
        ("Bootstrap", "string", "", 0, lambda o: str(bool(_spec(o).get("bootstrap"))).lower()),
    ],
    "Lease": [NAME, ("Holder", "string", "", 0, lambda o: _spec(o).get("holderIdentity", "")), AGE],
    "ServiceAccount": [NAME, ("Secrets", "integer", "", 0, lambda o: len(o.get("secrets") or [])), AGE],
}


def _jsonpath(obj: Any, path: str) -> Any:
    for part in path.strip().lstrip(".").split("."):
        if not part:
            continue
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def _columns(kind: Kind) -> list[Column]:
    if kind.printer_columns:
        cols: list[Column] = [NAME]
        for c in kind.printer_columns:
            path = str(c.get("jsonPath", ""))
            fmt = str(c.get("type", "string"))
            cols.append(
                (
                    str(c.get("name")),
                    fmt,
                    "",
                    int(c.get("priority") or 0),
                    _printer(path, fmt),
                )
            )
        return cols
    cols = COLUMNS.get(kind.kind, [NAME, AGE])
    if kind.kind in ("StorageClass", "IngressClass"):
        return [("Name", "string", "name", 0, _default_name), *cols[1:]]
    return cols


def _default_name(o: Json) -> str:
    notes = (o.get("metadata") or {}).get("annotations") or {}
    default = "true" in (
        notes.get("storageclass.kubernetes.io/is-default-class"),
        notes.get("ingressclass.kubernetes.io/is-default-class"),
    )
    return _name(o) + (" (default)" if default else "")


def _printer(path: str, fmt: str) -> Callable[[Json], Any]:
    def cell(o: Json) -> Any:
        value = _jsonpath(o, path)
        return age(o, value) if fmt == "date" else value

    return cell


def _partial(obj: Json) -> Json:
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata") or {}}


def table(kind: Kind, items: list[Json], rv: int | str, include: str = "Metadata") -> Json:
    """A meta.k8s.io/v1 Table of items (includeObject: None, Metadata or Object)."""
    cols = _columns(kind)
    rows = []
    for obj in items:
        cells = []
        for col in cols:
            try:
                value = col[4](obj)
            except (KeyError, TypeError, ValueError):
                value = ""
            cells.append(value if value is not None else "")
        row: Json = {"cells": cells}
        if include == "Object":
            row["object"] = obj
        elif include != "None":
            row["object"] = _partial(obj)
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": str(rv)},
        "columnDefinitions": [
            {"name": n, "type": t, "format": f, "description": n, "priority": p} for n, t, f, p, _ in cols
        ],
        "rows": rows,
    }
