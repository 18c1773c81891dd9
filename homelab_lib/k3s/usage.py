"""What runbook 04's notebook shows about the cluster: pods, claims, and requests against the node.

Functions return DataFrames, and a Figure from a ``figsize`` argument (the notebook displays and
closes it); the cluster is read through :class:`homelab_lib.kube.Kube`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from homelab_lib.kube import Kube, KubeDesired

UNITS = {"Ki": 1 / 1024, "Mi": 1.0, "Gi": 1024.0, "Ti": 1024.0 * 1024, "k": 1 / 1048.576, "M": 1 / 1.048576,
         "G": 1000 / 1.048576}  # fmt: skip


def cpu_cores(text: str) -> float:
    """``250m`` -> 0.25, ``2`` -> 2.0."""
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text or 0)


def memory_mib(text: str) -> float:
    """``512Mi`` -> 512, ``3Gi`` -> 3072, plain bytes -> MiB."""
    for unit, factor in UNITS.items():
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text or 0) / (1024 * 1024)


def requests_table(desired: KubeDesired) -> pd.DataFrame:
    """Per workload of the manifests: cpu and memory requested, memory limit (replicas counted)."""
    import pandas as pd

    rows = []
    for obj in desired.objects:
        if obj["kind"] not in ("Deployment", "StatefulSet"):
            continue
        replicas = int(obj["spec"].get("replicas", 1))
        cpu = mem = limit = 0.0
        for c in obj["spec"]["template"]["spec"].get("containers") or []:
            res = c.get("resources") or {}
            cpu += cpu_cores(str((res.get("requests") or {}).get("cpu", "0")))
            mem += memory_mib(str((res.get("requests") or {}).get("memory", "0")))
            limit += memory_mib(str((res.get("limits") or {}).get("memory", "0")))
        ns = obj["metadata"].get("namespace", "")
        rows.append(
            {"workload": f"{ns}/{obj['metadata']['name']}", "cpu": round(cpu * replicas, 2),
             "memory MiB": round(mem * replicas), "memory limit MiB": round(limit * replicas)}
        )  # fmt: skip
    return pd.DataFrame(rows, columns=["workload", "cpu", "memory MiB", "memory limit MiB"])


def node_capacity(kube: Kube) -> tuple[float, float]:
    """The cluster's allocatable cpu (cores) and memory (MiB), summed over its nodes."""
    cpu = mem = 0.0
    for node in kube.list("v1", "Node"):
        status: dict[str, Any] = node.get("status") or {}
        alloc = status.get("allocatable") or status.get("capacity") or {}
        cpu += cpu_cores(str(alloc.get("cpu", "0")))
        mem += memory_mib(str(alloc.get("memory", "0")))
    return cpu, mem


def pods_table(kube: Kube, namespaces: list[str]) -> pd.DataFrame:
    """The pods of the namespaces: phase, ready containers, restarts."""
    import pandas as pd

    rows = []
    for ns in namespaces:
        for pod in sorted(kube.list("v1", "Pod", namespace=ns), key=lambda p: p["metadata"]["name"]):
            statuses = (pod.get("status") or {}).get("containerStatuses") or []
            rows.append(
                {"namespace": ns, "pod": pod["metadata"]["name"], "phase": (pod.get("status") or {}).get("phase", ""),
                 "ready": f"{sum(bool(s.get('ready')) for s in statuses)}/{len(statuses)}",
                 "restarts": sum(int(s.get("restartCount") or 0) for s in statuses)}
            )  # fmt: skip
    return pd.DataFrame(rows, columns=["namespace", "pod", "phase", "ready", "restarts"])


def claims_table(kube: Kube, namespaces: list[str]) -> pd.DataFrame:
    """The PersistentVolumeClaims of the namespaces: phase, class, size."""
    import pandas as pd

    rows = []
    for ns in namespaces:
        for claim in sorted(
            kube.list("v1", "PersistentVolumeClaim", namespace=ns), key=lambda c: c["metadata"]["name"]
        ):
            spec = claim.get("spec") or {}
            rows.append(
                {"namespace": ns, "claim": claim["metadata"]["name"],
                 "phase": (claim.get("status") or {}).get("phase", ""),
                 "class": spec.get("storageClassName", ""),
                 "size": ((spec.get("resources") or {}).get("requests") or {}).get("storage", "")}
            )  # fmt: skip
    return pd.DataFrame(rows, columns=["namespace", "claim", "phase", "class", "size"])


def requests_figure(table: pd.DataFrame, capacity: tuple[float, float], figsize: tuple[float, float]) -> Figure:
    """Bars of each workload's cpu and memory requests (memory limits hatched) against the node's allocatable."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    cpu_ax, mem_ax = fig.subplots(1, 2)
    names = list(table["workload"]) or ["(none)"]
    cpu_ax.barh(names, list(table["cpu"]) or [0], color="#4c72b0")
    cpu_ax.axvline(capacity[0], color="#c44e52", linestyle="--", label=f"node: {capacity[0]:g} cores")
    cpu_ax.set_title(f"cpu requests: {table['cpu'].sum():g} of {capacity[0]:g} cores")
    cpu_ax.legend(loc="lower right")
    mem_ax.barh(names, list(table["memory limit MiB"]) or [0], color="none", edgecolor="#55a868", hatch="//",
                label="limit")  # fmt: skip
    mem_ax.barh(names, list(table["memory MiB"]) or [0], color="#55a868", label="request")
    mem_ax.axvline(capacity[1], color="#c44e52", linestyle="--", label=f"node: {capacity[1]:.0f} MiB")
    mem_ax.set_title(f"memory requests: {table['memory MiB'].sum():.0f} of {capacity[1]:.0f} MiB")
    mem_ax.legend(loc="lower right")
    mem_ax.set_yticklabels([])
    fig.tight_layout()
    return fig


def namespaces(desired: KubeDesired) -> list[str]:
    """The namespaces the manifests put objects in, sorted."""
    return sorted({o["metadata"].get("namespace") or o["metadata"]["name"] for o in desired.objects})
