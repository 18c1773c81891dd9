"""The converter: each Compose key of a service through its rule, the objects assembled and validated.

:func:`convert_compose` converts the services of a compose file; :func:`convert_service` one. Each
key of a service goes to the rule :func:`~homelab_lib.convert.model.handles` registered for it (the
rules of :data:`RULES`, imported here so that every one is registered); a key no rule reads is
reported as not mapped, with why (:data:`NOT_MAPPED_WHY`). The objects are assembled in apply order
and validated against the Kubernetes schemas of :data:`DEFAULT_KUBERNETES` (or the version given).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from homelab_lib.convert import inline, network, secrets, security, storage, workload
from homelab_lib.convert.model import HANDLERS, WAIT_IMAGE, Build, Context, Handler
from homelab_lib.convert.network import service_ports
from homelab_lib.convert.report import Conversion, ReportLine
from homelab_lib.convert.source import ComposeFile
from homelab_lib.convert.units import dns_label
from homelab_lib.core.errors import ConvertError, NotFound, Problem
from homelab_lib.kube.objects import KubeObject, ordered
from homelab_lib.kube.objects import validate as validate_objects

#: A moved secret shorter than this is not looked for in the other objects (it would be found in any word).
MIN_CHECKED = 4

#: The Kubernetes minor the CLI validates for when no inventory names a K3s release (the lab's v1.31.4+k3s1).
DEFAULT_KUBERNETES = "1.31.0"

#: The modules whose rules register themselves with @handles when imported.
RULES = (network, secrets, security, storage, workload)

#: The Compose keys no rule maps, and why (any other key without a rule: "no counterpart this converter knows").
NOT_MAPPED_WHY = {
    "logging": "the kubelet keeps the container's output (kubectl logs); log drivers have no counterpart",
    "init": "Kubernetes runs no init for the container: use an image with tini, or shareProcessNamespace",
    "ulimits": "Kubernetes sets no per-pod ulimits; they are the container runtime's defaults",
    "stop_signal": "Kubernetes sends SIGTERM (Kubernetes 1.31 has no per-container stop signal)",
    "profiles": "profiles select services in Compose; the service is converted regardless",
    "domainname": "the pod's domain is the cluster's (namespace.svc.cluster.local)",
    "volumes_from": "sharing another container's volumes is a shared volume of one pod, made by hand",
    "external_links": "links to containers outside the project have no counterpart",
    "userns_mode": "user namespaces are the pod's hostUsers setting (off by default), not mapped",
    "cgroup_parent": "the kubelet places pods in cgroups",
    "oom_score_adj": "the kubelet sets OOM scores from the pod's QoS class (its requests and limits)",
    "pids_limit": "the kubelet's podPidsLimit applies to every pod",
    "runtime": "a RuntimeClass, made on the node by hand",
    "mac_address": "pod addresses are the cluster's to give",
    "memswap_limit": "Kubernetes has no swap limit per container",
    "cpu_shares": "the kubelet derives CPU shares from requests: give deploy.resources.reservations.cpus",
    "cpu_quota": "give deploy.resources.limits.cpus",
    "cpuset": "CPU pinning is the kubelet's CPU manager, not a pod setting",
}


def _prepare(b: Build) -> None:
    """Handlers that others depend on run first: traefik labels before ports (which ports the Ingress serves)."""
    if "labels" in b.svc:
        network.labels(b, b.svc["labels"])


def convert_service(compose: ComposeFile, service: str, **options: Any) -> Conversion:
    """Convert one service of a compose file (see :func:`convert_compose` for the options).

    Raises:
        NotFound: the file has no such service.
        ConvertError: a file the service reads (env_file) is missing, or a manifest does not validate.
    """
    conversions = convert_compose(compose, [service], **options)
    return conversions[0]


def convert_compose(
    compose: ComposeFile,
    services: Sequence[str] = (),
    *,
    namespace: str = "default",
    measured_bytes: Mapping[str, int] | None = None,
    sizes: Mapping[str, str] | None = None,
    secret_values: Mapping[str, str] | None = None,
    variables: Mapping[str, str] | None = None,
    headroom: float = 0.25,
    kubernetes_version: str = DEFAULT_KUBERNETES,
    with_namespace: bool = True,
    host_address: str = "",
    wait_image: str = WAIT_IMAGE,
) -> list[Conversion]:
    """Convert the services of a compose file to Kubernetes manifests, each with its report.

    Args:
        compose: the parsed file (:func:`~homelab_lib.convert.source.load_compose`).
        services: the services to convert, in this order; empty: every service, in the file's order.
        namespace: the namespace of every object.
        measured_bytes: the data's size per volume (its Compose name or Docker name) or bind (host path);
            a claim gets that plus ``headroom``, rounded up to whole GiB.
        sizes: a claim size given outright (``"20Gi"``) per volume or host path; wins over measured_bytes.
        secret_values: the value of a Compose secret, by name (instead of its file or variable).
        variables: the environment a ``KEY`` without a value (or a secret's ``environment:``) reads.
        headroom: the fraction added to measured sizes.
        kubernetes_version: the schemas every manifest is validated against (``1.31.0``).
        with_namespace: put the Namespace object first in each conversion's objects.
        host_address: the Docker host's own address; ports published on it alone are not flagged
            (runbook 02 binds every published port to its VM's address).
        wait_image: the image of the init containers that wait for a dependency (``sh`` and ``nc``,
            ``nslookup``): busybox, or a copy of it in a registry the cluster reaches.

    Returns:
        One :class:`Conversion` per service.

    Raises:
        NotFound: a service the file does not have.
        ConvertError: two services whose Kubernetes names clash, a missing env_file, an invalid manifest.
    """
    if services:
        for s in services:
            if s not in compose.services:
                raise NotFound(s, what="service", known=list(compose.services), where=compose.shown)
    chosen = list(services) or list(compose.services)
    names = {s: dns_label(s, limit=47) for s in compose.services}
    clashes: dict[str, list[str]] = {}
    for s, n in names.items():
        clashes.setdefault(n, []).append(s)
    problems = [
        Problem(
            compose.shown,
            compose.line(("services", group[1])),
            f"services.{group[1]}",
            f"services {', '.join(group)} all become {n} in Kubernetes: rename one",
        )
        for n, group in clashes.items()
        if len(group) > 1
    ]
    if problems:
        raise ConvertError(problems)
    ns = dns_label(namespace)
    ctx = Context(
        compose,
        ns,
        measured_bytes or {},
        sizes or {},
        secret_values or {},
        variables or {},
        headroom,
        names,
        host_address,
        wait_image,
    )
    out = []
    for s in chosen:
        conv = _convert(ctx, s, with_namespace=with_namespace)
        if ns != namespace:
            conv.report.append(
                ReportLine(s, "(namespace)", "mapped", f"namespace {namespace!r} is not a valid name: it is {ns!r}")
            )
        try:
            validate_objects(conv.objects, kubernetes_version)
        except ValueError as e:
            raise ConvertError(
                [Problem(compose.shown, compose.line(("services", s)), f"services.{s}", f"invalid manifest: {e}")]
            ) from None
        out.append(conv)
    return out


@contextlib.contextmanager
def _unreadable(compose: ComposeFile, service: str, key: str) -> Iterator[None]:
    """A value Compose's schema lets through but no reading of it makes sense: a ConvertError at its line."""
    try:
        yield
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        where = compose.line(("services", service, key))
        message = f"cannot read services.{service}.{key}: {e}"
        raise ConvertError([Problem(compose.shown, where, f"services.{service}.{key}", message)]) from e


def _convert(ctx: Context, name: str, *, with_namespace: bool) -> Conversion:
    svc = ctx.compose.services[name] or {}
    k8s = ctx.names[name]
    b = Build(name, k8s, ctx, svc)
    if k8s != name:
        b.note("(name)", "mapped", f"{name!r} is not a valid Kubernetes name: it becomes {k8s!r} "
               "(other services must reach it by that name)")  # fmt: skip
    with _unreadable(ctx.compose, name, "ports"):
        service_ports(svc)
    with _unreadable(ctx.compose, name, "labels"):
        _prepare(b)
    called: set[Handler] = {network.labels}
    for key in svc:
        handler = HANDLERS.get(key)
        if handler is not None:
            if handler not in called:  # a handler of several keys (command and entrypoint) runs once
                called.add(handler)
                with _unreadable(ctx.compose, name, key):
                    handler(b, svc[key])
        elif key.startswith("x-"):
            b.note(key, "not mapped", "an extension field (x-): Compose itself ignores it")
        elif key in NOT_MAPPED_WHY:
            b.note(key, "not mapped", NOT_MAPPED_WHY[key])
        else:
            b.note(key, "not mapped", f"{key} has no Kubernetes counterpart this converter knows")
    if "restart" not in svc:
        b.note("restart", "approximated", "no restart: (Compose: never); a Deployment's pods always restart")
    return _assemble(b, with_namespace=with_namespace)


def _assemble(b: Build, *, with_namespace: bool) -> Conversion:
    """The objects: a secret written inline (command, healthcheck, label) moved to the Secret first, or refused.

    Raises:
        ConvertError: a secret written inline that no variable can carry, or that is written elsewhere too.
    """
    moved = inline.move_inline_secrets(b)
    network.services(b)
    objects: list[KubeObject] = []
    if with_namespace:
        objects.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": b.ctx.namespace}})
    objects += secrets.env_objects(b)
    deployment = workload.deployment(b)
    objects += [*b.objects, deployment]
    left = inline.left_in(objects, [v for v in moved if len(v) >= MIN_CHECKED])
    if left:
        compose = b.ctx.compose
        raise ConvertError(
            [
                Problem(
                    compose.shown,
                    compose.line(("services", b.name)),
                    f"services.{b.name}",
                    f"a secret of its command or healthcheck is written elsewhere in the service too (it would be "
                    f"in {', '.join(left)}); write it once, in environment: (the converter moves it to the Secret)",
                )
            ]
        )
    return Conversion(b.name, b.k8s, b.ctx.namespace, ordered(objects), b.report, b.volumes)


__all__ = ["DEFAULT_KUBERNETES", "NOT_MAPPED_WHY", "RULES", "convert_compose", "convert_service"]
