"""The K3s cluster's state through the Kubernetes API: version, node, kube-system components, readiness."""

from __future__ import annotations

from typing import Any, cast

from kubernetes import client as k8s

from homelab_lib.core.clock import Clock
from homelab_lib.core.errors import K3sApiError, K3sAuthError, K3sError, K3sNotReady, mapped
from homelab_lib.k3s.state import ApiState, ComponentRow, K3sReport, NodeRow
from homelab_lib.kube.api import API_ERRORS, POLL_S, REQUEST_TIMEOUT_S, readyz


def api_state(api: k8s.ApiClient, *, where: str) -> ApiState:
    """The API's version and the first node's readiness; an ApiState saying why when it does not answer."""
    try:
        with mapped(API_ERRORS, where=where):
            version = k8s.VersionApi(api).get_code(_request_timeout=REQUEST_TIMEOUT_S).git_version
            nodes: list[Any] = k8s.CoreV1Api(api).list_node(_request_timeout=REQUEST_TIMEOUT_S).items
    except K3sError as e:
        return ApiState(False, error=e.message)
    if not nodes:
        return ApiState(True, version)
    node: Any = nodes[0]
    return ApiState(True, version, node.metadata.name, _ready(node))


def _ready(node: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (node.status.conditions or []))


def report(api: k8s.ApiClient, components: tuple[str, ...], *, where: str, kubeconfig: str = "") -> K3sReport:
    """The cluster now: /readyz, version, nodes, each expected kube-system Deployment.

    Raises:
        K3sAuthError, K3sUnreachable: the API refuses the credentials or does not answer.
    """
    ready = readyz(api, where=where)
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    with mapped(API_ERRORS, where=where):
        version = k8s.VersionApi(api).get_code(_request_timeout=REQUEST_TIMEOUT_S).git_version
        nodes = tuple(
            NodeRow(
                n.metadata.name,
                _ready(n),
                n.status.node_info.kubelet_version if n.status.node_info else "",
                ",".join(
                    sorted(
                        k.split("/", 1)[1]
                        for k in (n.metadata.labels or {})
                        if k.startswith("node-role.kubernetes.io/")
                    )
                )
                or "-",
                str((n.status.capacity or {}).get("cpu", "")),
                str((n.status.capacity or {}).get("memory", "")),
            )
            for n in cast(list[Any], core.list_node(_request_timeout=REQUEST_TIMEOUT_S).items)
        )
    rows = []
    for name in components:
        try:
            with mapped(API_ERRORS, where=where):
                dep: Any = apps.read_namespaced_deployment(name, "kube-system", _request_timeout=REQUEST_TIMEOUT_S)
        except K3sApiError as e:
            if e.status != 404:
                raise
            rows.append(ComponentRow(name, "not deployed", False))
            continue
        want = dep.spec.replicas if dep.spec.replicas is not None else 1
        have = dep.status.ready_replicas or 0
        available = any(c.type == "Available" and c.status == "True" for c in (dep.status.conditions or []))
        rows.append(ComponentRow(name, f"{have}/{want}", available and have >= want))
    return K3sReport(version, ready, nodes, tuple(rows), kubeconfig)


def problems(found: K3sReport) -> list[str]:
    """What is not ready in a report, one line each (empty: all ready)."""
    out = [] if found.readyz == "ok" else [f"/readyz: {found.readyz}"]
    if not found.nodes:
        out.append("no node registered")
    out += [f"node {n.name} is not Ready" for n in found.nodes if not n.ready]
    out += [f"kube-system/{c.name}: {c.ready}, not available" for c in found.components if not c.available]
    return out


def wait_ready(connect: Any, components: tuple[str, ...], *, timeout_s: float, clock: Clock, where: str) -> K3sReport:
    """Wait until /readyz is ok, the node Ready and every expected component available.

    Args:
        connect: a callable returning a fresh :class:`kubernetes.client.ApiClient` (the kubeconfig
            may appear only after the service has started).
        components: the kube-system Deployments to wait for.
        timeout_s: how long to wait.
        clock: the clock to wait by.
        where: the VM, for messages.

    Raises:
        K3sNotReady: not ready in time; names what was not.
        K3sAuthError: the credentials are refused (waiting would not help).
    """
    deadline = clock.monotonic() + timeout_s
    last: list[str] = ["the API never answered"]
    while True:
        try:
            found = report(connect(), components, where=where)
            last = problems(found)
            if not last:
                return found
        except K3sAuthError:
            raise
        except K3sError as e:
            last = [e.message]
        if clock.monotonic() >= deadline:
            raise K3sNotReady(
                f"K3s was not ready after {timeout_s:.0f} s: " + "; ".join(last),
                where=where,
                hint="look at the service's log on the VM (journalctl -u k3s, or /var/log/k3s.service.log), "
                "then run again: the plan shows what is left",
            )
        clock.sleep(POLL_S)
