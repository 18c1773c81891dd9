"""The container and its Deployment: image, command, health probes, restarts, resources, dependencies.

``image``/``build``/``pull_policy``, ``command``/``entrypoint``, ``working_dir``, ``healthcheck``
(readiness, liveness and startup probes), ``restart``, ``deploy`` and the older resource keys,
``depends_on`` (an init container that waits for the dependency's Service), ``stop_grace_period``,
``tty``, ``platform`` and ``annotations``. :func:`deployment` assembles the Deployment from what
every rule put into the build.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

from homelab_lib.convert.model import Build, handles, pair_list
from homelab_lib.convert.network import service_ports
from homelab_lib.convert.report import Status
from homelab_lib.convert.units import cpu, dns_label, quantity, seconds, size_bytes, whole_seconds
from homelab_lib.kube.objects import KubeObject


def _command(value: Any) -> list[str]:
    """A Compose command/entrypoint (a string is split as a shell would, without running one)."""
    parts = [str(v) for v in value] if isinstance(value, list) else shlex.split(str(value))
    # Kubernetes expands $(VAR) in command and args; Compose does not: keep them literal.
    return [p.replace("$(", "$$(") for p in parts]


@handles("image")
def _image(b: Build, value: Any) -> None:
    b.container["image"] = str(value)
    b.note("image", "mapped", f"container image {value}")


@handles("build")
def _build(b: Build, value: Any) -> None:
    if "image" in b.svc:
        b.note("build", "not mapped", "Kubernetes runs images only: the image named by image: is used, build: is not")
    else:
        b.container["image"] = f"{b.k8s}:built-locally"
        b.note(
            "build",
            "not mapped",
            f"Kubernetes cannot build: build the image, push it to a registry the cluster pulls from (Harbor), "
            f"and set image: (the manifest says {b.k8s}:built-locally until then)",
        )


@handles("pull_policy")
def _pull(b: Build, value: Any) -> None:
    policy = {"always": "Always", "never": "Never", "missing": "IfNotPresent", "if_not_present": "IfNotPresent"}
    if str(value) in policy:
        b.container["imagePullPolicy"] = policy[str(value)]
        b.note("pull_policy", "mapped", f"imagePullPolicy {policy[str(value)]}")
    else:
        b.note("pull_policy", "not mapped", f"pull_policy {value} has no Kubernetes counterpart (daily: use Always)")


@handles("command", "entrypoint")
def _cmd(b: Build, _value: Any) -> None:
    if "entrypoint" in b.svc and "command" not in b.container:
        b.container["command"] = _command(b.svc["entrypoint"])
        b.note("entrypoint", "mapped", "container command (replaces the image's ENTRYPOINT)")
    if "command" in b.svc and "args" not in b.container:
        b.container["args"] = _command(b.svc["command"])
        b.note("command", "mapped", "container args (the image's ENTRYPOINT gets them, as in Compose)")
    # a secret written in either moves to the Secret once every rule has run (:mod:`.inline`)


@handles("working_dir")
def _workdir(b: Build, value: Any) -> None:
    b.container["workingDir"] = str(value)
    b.note("working_dir", "mapped", "workingDir")


def _probe_test(test: Any) -> list[str] | None:
    if isinstance(test, str):
        return ["/bin/sh", "-c", test]
    parts = [str(t) for t in test]
    if not parts or parts[0] == "NONE":
        return None
    if parts[0] == "CMD":
        return parts[1:]
    if parts[0] == "CMD-SHELL":
        return ["/bin/sh", "-c", " ".join(parts[1:])]
    return parts


@handles("healthcheck")
def _health(b: Build, value: Any) -> None:
    hc = dict(value or {})
    if hc.get("disable") or "test" not in hc or _probe_test(hc["test"]) is None:
        b.note("healthcheck", "mapped", "disabled: no probes (the pod is ready once it runs)")
        return
    command = _probe_test(hc["test"])
    interval = whole_seconds(hc.get("interval", "30s"))
    timeout = whole_seconds(hc.get("timeout", "30s"))
    retries = int(hc.get("retries", 3))
    start = seconds(hc.get("start_period", 0))
    probe = {
        "exec": {"command": command},
        "periodSeconds": interval,
        "timeoutSeconds": timeout,
        "failureThreshold": retries,
    }
    b.container["readinessProbe"] = dict(probe)
    b.container["livenessProbe"] = dict(probe)
    form = "CMD-SHELL (run by /bin/sh -c)" if command and command[:2] == ["/bin/sh", "-c"] else "CMD"
    b.note("healthcheck.test", "mapped", f"exec readiness and liveness probes ({form})")
    for k, what in (("interval", f"periodSeconds {interval}"), ("timeout", f"timeoutSeconds {timeout}"),
                    ("retries", f"failureThreshold {retries}")):  # fmt: skip
        if k in hc:
            b.note(f"healthcheck.{k}", "mapped", what)
    if start or "start_interval" in hc:
        period = whole_seconds(hc.get("start_interval", min(interval, 5)))
        threshold = max(1, -(-int(start) // period)) + retries
        b.container["startupProbe"] = {**probe, "periodSeconds": period, "failureThreshold": threshold}
        b.note(
            "healthcheck.start_period",
            "mapped",
            f"a startupProbe every {period}s, {threshold} tries: {start:g}s of grace before liveness counts",
        )
        if "start_interval" in hc:
            b.note("healthcheck.start_interval", "mapped", f"the startupProbe's periodSeconds {period}")
    b.note(
        "healthcheck",
        "mapped",
        f"liveness restarts the container after {retries} failures (Docker only marks it unhealthy)",
    )


@handles("restart")
def _restart(b: Build, value: Any) -> None:
    policy = str(value)
    if policy in ("always", "unless-stopped"):
        b.note("restart", "mapped", f"restartPolicy Always ({policy})")
    else:
        b.note(
            "restart",
            "approximated",
            f"restart: {policy}: a Deployment's pods always restart (restartPolicy Always); a one-off task is a Job",
        )


def _resources(b: Build, section: str, spec: Mapping[str, Any], key: str) -> None:
    res = b.container.setdefault("resources", {})
    for k, v in spec.items():
        if k == "cpus":
            res.setdefault(section, {})["cpu"] = cpu(v)
            b.note(f"{key}.{k}", "mapped", f"resources.{section}.cpu {cpu(v)}")
        elif k == "memory":
            res.setdefault(section, {})["memory"] = quantity(size_bytes(v))
            b.note(f"{key}.{k}", "mapped", f"resources.{section}.memory {quantity(size_bytes(v))}")
        elif k == "devices":
            b.note(
                f"{key}.{k}", "not mapped",
                "device reservations (GPUs) need the vendor's device plugin on K3s (nvidia.com/gpu resources)",
            )  # fmt: skip
        else:
            b.note(f"{key}.{k}", "not mapped", f"{k} has no per-container Kubernetes limit")


@handles("deploy")
def _deploy(b: Build, value: Any) -> None:
    for k, v in (value or {}).items():
        key = f"deploy.{k}"
        if k == "replicas":
            b.replicas = int(v)
            b.note(key, "mapped", f"replicas {v}")
        elif k == "resources":
            for section, kube in (("limits", "limits"), ("reservations", "requests")):
                if section in (v or {}):
                    _resources(b, kube, v[section] or {}, f"{key}.{section}")
        elif k == "restart_policy":
            cond = (v or {}).get("condition", "any")
            b.note(key, "mapped" if cond == "any" else "approximated", f"condition {cond}: restartPolicy Always")
        elif k == "labels":
            for lk, lv in pair_list(v):
                b.annotations[lk] = lv or ""
            b.note(key, "mapped", "annotations of the workload")
        elif k == "mode" and v == "replicated":
            b.note(key, "mapped", "a Deployment")
        else:
            b.note(key, "not mapped", f"deploy.{k} is a Swarm setting with no counterpart on single-node K3s")


@handles("mem_limit", "mem_reservation", "cpus")
def _legacy_resources(b: Build, _value: Any) -> None:
    res = b.container.setdefault("resources", {})
    if "mem_limit" in b.svc:
        res.setdefault("limits", {})["memory"] = quantity(size_bytes(b.svc["mem_limit"]))
        b.note("mem_limit", "mapped", f"resources.limits.memory {res['limits']['memory']}")
    if "mem_reservation" in b.svc:
        res.setdefault("requests", {})["memory"] = quantity(size_bytes(b.svc["mem_reservation"]))
        b.note("mem_reservation", "mapped", f"resources.requests.memory {res['requests']['memory']}")
    if "cpus" in b.svc:
        res.setdefault("limits", {})["cpu"] = cpu(b.svc["cpus"])
        b.note("cpus", "mapped", f"resources.limits.cpu {res['limits']['cpu']}")


@handles("scale")
def _scale(b: Build, value: Any) -> None:
    b.replicas = int(value)
    b.note("scale", "mapped", f"replicas {value}")


@handles("depends_on", "links")
def _depends(b: Build, _value: Any) -> None:
    deps = b.svc.get("depends_on") or {}
    entries = deps if isinstance(deps, dict) else {d: {"condition": "service_started"} for d in deps}
    services = b.ctx.compose.services
    inits = []
    for dep, spec in entries.items():
        cond = (spec or {}).get("condition", "service_started")
        target = b.ctx.names.get(dep, dns_label(dep))
        key = f"depends_on.{dep}"
        if cond == "service_completed_successfully":
            b.note(
                key, "not mapped",
                f"waiting for {dep} to finish: make {dep} a Job, or an init container of this pod",
            )  # fmt: skip
            continue
        ports = [p for p in service_ports(services.get(dep) or {}) if p.protocol == "tcp"]
        if ports:
            check = f"nc -z -w 2 {target} {ports[0].container}"
            how = f"until {target}:{ports[0].container} accepts connections through its Service"
        else:
            check = f"nslookup {target}.{b.ctx.namespace}.svc.cluster.local"
            how = f"until the name {target} resolves (headless Service: only ready pods are in it)"
        healthy = "healthcheck" in (services.get(dep) or {})
        inits.append(
            {
                "name": dns_label(f"wait-for-{target}"),
                "image": b.ctx.wait_image,
                "command": ["sh", "-c", f"until {check}; do echo waiting for {target}; sleep 2; done"],
            }
        )
        if cond == "service_healthy":
            status: Status = "mapped" if healthy else "approximated"
            extra = "" if healthy else f"; {dep} has no healthcheck, so ready means running"
            b.note(key, status, f"init container waits {how}: a Service sends only to ready pods{extra}")
        else:
            b.note(
                key,
                "approximated",
                f"init container waits {how}: stricter than service_started (it waits for ready)",
            )
        if (spec or {}).get("restart"):
            b.note(f"{key}.restart", "not mapped", "restarting with the dependency is not kept")
    if inits:
        b.pod["initContainers"] = inits
    for i, link in enumerate(b.svc.get("links") or []):
        name, _, alias = str(link).partition(":")
        b.note(
            f"links[{i}]",
            "mapped" if not alias else "approximated",
            f"{name} resolves by its Service {b.ctx.names.get(name, dns_label(name))}"
            + (f"; the alias {alias} does not" if alias else ""),
        )


@handles("stop_grace_period")
def _grace(b: Build, value: Any) -> None:
    b.pod["terminationGracePeriodSeconds"] = whole_seconds(value, 0)
    b.note("stop_grace_period", "mapped", f"terminationGracePeriodSeconds {whole_seconds(value, 0)}")


@handles("tty", "stdin_open")
def _tty(b: Build, _value: Any) -> None:
    for key, field_ in (("tty", "tty"), ("stdin_open", "stdin")):
        if key in b.svc:
            b.container[field_] = bool(b.svc[key])
            b.note(key, "mapped", f"{field_} {bool(b.svc[key])}")


@handles("platform")
def _platform(b: Build, value: Any) -> None:
    arch = str(value).split("/")[1] if "/" in str(value) else ""
    if arch:
        b.pod["nodeSelector"] = {"kubernetes.io/arch": arch}
        b.note("platform", "mapped", f"nodeSelector kubernetes.io/arch={arch}")
    else:
        b.note("platform", "not mapped", f"platform {value} names no architecture")


@handles("annotations")
def _annotations(b: Build, value: Any) -> None:
    for k, v in pair_list(value):
        b.annotations[k] = v or ""
    b.note("annotations", "mapped", "annotations of the workload and its pods")


def deployment(b: Build) -> KubeObject:
    """The Deployment of the service's one container, from what the rules put into the build."""
    container = {"name": b.k8s, **b.container}
    container.setdefault("image", f"{b.k8s}:unknown")
    ports = [
        {"name": f"{p.protocol}-{p.container}", "containerPort": p.container, "protocol": p.protocol.upper()}
        for p in service_ports(b.svc)
    ]
    if ports:
        container["ports"] = ports
    if b.env:
        container["env"] = b.env
    if b.mounts:
        container["volumeMounts"] = b.mounts
    if not container.get("securityContext"):
        container.pop("securityContext", None)
    if not container.get("resources"):
        container.pop("resources", None)
    pod: dict[str, Any] = {**b.pod, "containers": [container]}
    if b.pod_volumes:
        pod["volumes"] = b.pod_volumes
    if not pod.get("dnsConfig"):
        pod.pop("dnsConfig", None)
    labels = {"app.kubernetes.io/name": b.k8s, "app.kubernetes.io/instance": b.k8s}
    template_meta: dict[str, Any] = {"labels": labels}
    if b.annotations:
        template_meta["annotations"] = dict(b.annotations)
    has_claims = any(v.kind == "pvc-copied" for v in b.volumes)
    spec: dict[str, Any] = {
        "replicas": b.replicas,
        "selector": {"matchLabels": {"app.kubernetes.io/instance": b.k8s}},
        "template": {"metadata": template_meta, "spec": pod},
    }
    if has_claims:
        spec["strategy"] = {"type": "Recreate"}
        b.note(
            "(workload)",
            "mapped",
            "a Deployment, strategy Recreate: the old pod lets go of its ReadWriteOnce claims before the next starts",
        )
        if b.replicas > 1:
            b.note(
                "deploy.replicas",
                "approximated",
                f"{b.replicas} replicas share ReadWriteOnce local-path claims: all run on the one K3s node",
            )
    else:
        b.note("(workload)", "mapped", "a Deployment")
    meta = b.meta(b.k8s)
    meta["annotations"].update(b.annotations)
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": spec}


__all__ = ["deployment"]
