"""A conversion under way, and the registry of the rules that carry it out.

:class:`Build` is one service's conversion as the rules fill it in (container, pod, volumes,
environment, objects, report); :class:`Context` what they read besides the service (the file, the
options). A rule is a function of (build, value) registered for the Compose keys it reads with
:func:`handles` (a registry, as papermill's engines): :data:`HANDLERS` maps each key to its rule.
The rules live by concern in :mod:`.workload`, :mod:`.network`, :mod:`.storage`, :mod:`.secrets`
and :mod:`.security`; :mod:`.converter` imports each of them, so every rule is registered before
a service is converted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from homelab_lib.convert.report import ReportLine, Status, VolumePlan
from homelab_lib.convert.source import ComposeFile
from homelab_lib.convert.units import dns_label
from homelab_lib.kube.objects import KubeObject

WAIT_IMAGE = "docker.io/library/busybox:1.37.0"
SERVICE_ANNOTATION = "homelab.io/compose-service"


@dataclass
class Context:
    """What the converter needs besides the service: the file, the options."""

    compose: ComposeFile
    namespace: str
    measured_bytes: Mapping[str, int]
    sizes: Mapping[str, str]
    secret_values: Mapping[str, str]
    variables: Mapping[str, str]
    headroom: float
    names: Mapping[str, str]  # every Compose service -> its Kubernetes name
    host_address: str = ""  # the Docker VM's address published ports bind to (runbook 02's rule: not flagged)
    wait_image: str = WAIT_IMAGE


@dataclass
class Build:
    """A service's conversion under way."""

    name: str
    k8s: str
    ctx: Context
    svc: Mapping[str, Any]
    report: list[ReportLine] = field(default_factory=list)
    volumes: list[VolumePlan] = field(default_factory=list)
    container: dict[str, Any] = field(default_factory=dict)
    pod: dict[str, Any] = field(default_factory=dict)
    pod_volumes: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)
    env: list[dict[str, Any]] = field(default_factory=list)
    config_data: dict[str, str] = field(default_factory=dict)
    secret_data: dict[str, str] = field(default_factory=dict)
    file_secrets: dict[str, str] = field(default_factory=dict)
    file_configs: dict[str, str] = field(default_factory=dict)
    objects: list[KubeObject] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)
    replicas: int = 1
    ingress_ports: set[int] = field(default_factory=set)
    extra_service_names: list[tuple[str, str]] = field(default_factory=list)

    # -- helpers
    def note(self, key: str, status: Status, detail: str, loc: tuple[str | int, ...] = ()) -> None:
        line = self.ctx.compose.line(("services", self.name, *(loc or tuple(key_path(key)))))
        self.report.append(ReportLine(self.name, key, status, detail, line))

    def meta(self, name: str) -> dict[str, Any]:
        return {
            "name": name,
            "namespace": self.ctx.namespace,
            "labels": {"app.kubernetes.io/name": self.k8s, "app.kubernetes.io/instance": self.k8s},
            "annotations": {SERVICE_ANNOTATION: self.name},
        }

    def security(self) -> dict[str, Any]:
        sc: dict[str, Any] = self.container.setdefault("securityContext", {})
        return sc

    def pod_security(self) -> dict[str, Any]:
        sc: dict[str, Any] = self.pod.setdefault("securityContext", {})
        return sc

    def volume_name(self, base: str) -> str:
        name = dns_label(base, limit=50)
        taken = {v["name"] for v in self.pod_volumes}
        out, i = name, 2
        while out in taken:
            out, i = f"{name}-{i}", i + 1
        return out


def key_path(key: str) -> list[str | int]:
    """``ports[0].target`` -> ["ports", 0, "target"]."""
    out: list[str | int] = []
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", key):
        out.append(int(part[1:-1]) if part.startswith("[") else part)
    return out


def pair_list(value: Any, sep: str = "=") -> list[tuple[str, str | None]]:
    """A Compose list-or-mapping (``["A=b", "C"]`` or ``{A: b, C: null}``) as (key, value) pairs."""
    if isinstance(value, dict):
        return [(str(k), None if v is None else as_text(v)) for k, v in value.items()]
    out: list[tuple[str, str | None]] = []
    for item in value or []:
        key, found, val = str(item).partition(sep)
        out.append((key, val if found else None))
    return out


def as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


Handler = Callable[[Build, Any], None]
HANDLERS: dict[str, Handler] = {}


def handles(*keys: str) -> Callable[[Handler], Handler]:
    """Register a handler for Compose service keys (a registry, as papermill's engines)."""

    def register(fn: Handler) -> Handler:
        for k in keys:
            HANDLERS[k] = fn
        return fn

    return register


__all__ = [
    "HANDLERS",
    "SERVICE_ANNOTATION",
    "WAIT_IMAGE",
    "Build",
    "Context",
    "Handler",
    "as_text",
    "handles",
    "key_path",
    "pair_list",
]
