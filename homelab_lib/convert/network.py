"""Ports, Services, Ingress and names: how the service is reached, as it was on the Compose network.

Every service gets a Service of its name (headless without ports), ``container_name`` and network
aliases a Service each; published ports a NodePort Service (:func:`services`), or an Ingress where
traefik labels route to them (:func:`labels`). Also ``extra_hosts``, ``network_mode``, ``networks``,
``hostname`` and DNS settings. :func:`parse_port` and :func:`service_ports` read Compose's port forms.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from homelab_lib.convert.model import SERVICE_ANNOTATION, Build, handles, pair_list
from homelab_lib.convert.units import dns_label
from homelab_lib.hosts.labels import PREFIX as LABEL_PREFIX
from homelab_lib.kube.objects import INGRESS_CLASS, KubeObject

NODEPORT_RANGE = range(30000, 32768)


@dataclass(frozen=True)
class PortSpec:
    """One container port of a service: published on the host (``published``, 0: any) or not."""

    container: int
    protocol: str
    published: int | None = None  # None: not published; 0: published on a port Docker picks
    host_ip: str = ""


def _range(text: str) -> list[int]:
    if "-" in text:
        a, b = text.split("-", 1)
        return list(range(int(a), int(b) + 1))
    return [int(text)]


def parse_port(spec: Any) -> list[PortSpec]:
    """A ``ports:`` entry (short or long syntax; ranges expanded) as port specs.

    Raises:
        ValueError: not a port.
    """
    if isinstance(spec, dict):
        proto = str(spec.get("protocol") or "tcp").lower()
        target = _range(str(spec["target"]))
        pub = spec.get("published")
        published = _range(str(pub)) if pub not in (None, "") else [0] * len(target)
        if len(published) == 1 and len(target) > 1:
            published = [published[0] + i for i in range(len(target))]
        host_ip = str(spec.get("host_ip") or "")
        return [PortSpec(t, proto, p, host_ip) for t, p in zip(target, published, strict=True)]
    text = str(spec)
    proto = "tcp"
    if "/" in text:
        text, proto = text.rsplit("/", 1)
    host_ip = ""
    if text.startswith("["):
        host_ip, text = text[1:].split("]", 1)
        text = text.lstrip(":")
    parts = text.split(":")
    if len(parts) == 3:
        host_ip, host, container = parts
    elif len(parts) == 2:
        host, container = parts
    elif len(parts) == 1:
        host, container = "", parts[0]
    else:
        raise ValueError(f"{spec!r} is not a port")
    targets = _range(container)
    hosts = _range(host) if host else [0] * len(targets)
    if len(hosts) == 1 and len(targets) > 1:
        hosts = [hosts[0] + i for i in range(len(targets))]
    if len(hosts) != len(targets):
        raise ValueError(f"{spec!r}: the host and container ranges differ in length")
    return [PortSpec(t, proto.lower(), h, host_ip) for t, h in zip(targets, hosts, strict=True)]


def service_ports(svc: Mapping[str, Any]) -> list[PortSpec]:
    """Every container port a service serves: its ``ports:`` (published) and ``expose:`` (not), once each."""
    found: dict[tuple[int, str], PortSpec] = {}
    for spec in svc.get("ports") or []:
        for p in parse_port(spec):
            found.setdefault((p.container, p.protocol), p)
    for spec in svc.get("expose") or []:
        text = str(spec)
        proto = "tcp"
        if "/" in text:
            text, proto = text.rsplit("/", 1)
        for port in _range(text):
            found.setdefault((port, proto.lower()), PortSpec(port, proto.lower()))
    return list(found.values())


@handles("ports", "expose")
def _ports(b: Build, _value: Any) -> None:
    for i, spec in enumerate(b.svc.get("ports") or []):
        try:
            parsed = parse_port(spec)
        except (ValueError, KeyError) as e:
            b.note(f"ports[{i}]", "not mapped", f"cannot read the port {spec!r}: {e}")
            continue
        for p in parsed:
            what = f"{p.container}/{p.protocol}"
            if b.svc.get("network_mode") == "host":
                b.note(f"ports[{i}]", "mapped", f"{what}: the pod uses the node's network, the port is the node's")
            elif p.container in b.ingress_ports and p.protocol == "tcp":
                b.note(f"ports[{i}]", "mapped", f"{what}: Service {b.k8s}, reached from outside through the Ingress")
            elif p.published in NODEPORT_RANGE:
                b.note(f"ports[{i}]", "mapped", f"{what}: Service {b.k8s} and NodePort {p.published} (the same number)")
            else:
                shown = f"host port {p.published}" if p.published else "a host port Docker picks"
                b.note(
                    f"ports[{i}]",
                    "approximated",
                    f"{what}: Service {b.k8s}; {shown} becomes a NodePort that K3s assigns from 30000-32767 "
                    "(NodePort numbers outside that range are refused): reach it there, or through an Ingress",
                )
            if (p.host_ip.startswith("127.") or p.host_ip == "::1") and p.host_ip != b.ctx.host_address:
                b.note(
                    f"ports[{i}]",
                    "approximated",
                    f"published on {p.host_ip} only: a NodePort listens on every address of the node",
                )
    for i, spec in enumerate(b.svc.get("expose") or []):
        b.note(f"expose[{i}]", "mapped", f"{spec}: a port of Service {b.k8s} inside the cluster (never a hostPort)")


def services(b: Build) -> None:
    """The Service that makes the name resolve, a NodePort one for published ports, and alias Services."""
    ports = service_ports(b.svc)
    spec_ports: list[dict[str, Any]] = [
        {
            "name": f"{p.protocol}-{p.container}",
            "port": p.container,
            "targetPort": p.container,
            "protocol": p.protocol.upper(),
        }
        for p in ports
    ]
    selector = {"app.kubernetes.io/instance": b.k8s}

    def service(name: str) -> KubeObject:
        spec: dict[str, Any] = {"selector": selector}
        if spec_ports:
            spec["ports"] = spec_ports
        else:
            spec["clusterIP"] = "None"
        return {"apiVersion": "v1", "kind": "Service", "metadata": b.meta(name), "spec": spec}

    b.objects.append(service(b.k8s))
    shown = (
        f" with ports {', '.join(p['name'] for p in spec_ports)}"
        if spec_ports
        else (" (headless: the service has no ports, its name resolves to the pod)")
    )
    b.note("(service)", "mapped", f"Service {b.k8s}{shown}: its name resolves as on the Compose network")
    for name, why in b.extra_service_names:
        b.objects.append(service(name))
        b.note(why, "mapped", f"Service {name}: the name {why.split('.')[0]} gave resolves too")
    nodeports: list[dict[str, Any]] = []
    if b.svc.get("network_mode") != "host":
        for spec in b.svc.get("ports") or []:
            try:
                parsed = parse_port(spec)
            except (ValueError, KeyError):
                continue
            for p in parsed:
                if p.published is None or (p.container in b.ingress_ports and p.protocol == "tcp"):
                    continue
                port: dict[str, Any] = {
                    "name": f"{p.protocol}-{p.container}",
                    "port": p.container,
                    "targetPort": p.container,
                    "protocol": p.protocol.upper(),
                }
                if p.published in NODEPORT_RANGE:
                    port["nodePort"] = p.published
                if all(q["name"] != port["name"] for q in nodeports):
                    nodeports.append(port)
    if nodeports:
        b.objects.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": b.meta(f"{b.k8s}-nodeport"),
                "spec": {"type": "NodePort", "selector": selector, "ports": nodeports},
            }
        )


_RULE_HOST = re.compile(r"Host\(([^)]*)\)")
_RULE_PATH = re.compile(r"(PathPrefix|Path)\(`([^`]*)`\)")


def _label_loc(b: Build, key: str) -> tuple[str | int, ...]:
    labels = b.svc.get("labels")
    if isinstance(labels, list):
        names = [k for k, _ in pair_list(labels)]
        return ("labels", names.index(key)) if key in names else ("labels",)
    return ("labels", key)


def _traefik(b: Build, labels: list[tuple[str, str]]) -> None:
    """Ingress objects from traefik labels (one per router with a Host rule)."""
    lab = {k: v for k, v in labels}
    if lab.get("traefik.enable", "true").lower() == "false":
        b.note("labels.traefik.enable", "mapped", "traefik.enable=false: no Ingress", _label_loc(b, "traefik.enable"))
        return
    routers: dict[str, dict[str, str]] = {}
    service_ports_: dict[str, int] = {}
    for k, v in labels:
        m = re.fullmatch(r"traefik\.http\.routers\.([^.]+)\.(.+)", k)
        if m:
            routers.setdefault(m.group(1), {})[m.group(2)] = v
        m = re.fullmatch(r"traefik\.http\.services\.([^.]+)\.loadbalancer\.server\.port", k)
        if m and v.isdigit():
            service_ports_[m.group(1)] = int(v)
    first = service_ports(b.svc)
    used = set()
    for router, attrs in routers.items():
        rule = attrs.get("rule", "")
        hosts = [h.strip().strip("`") for m in _RULE_HOST.finditer(rule) for h in m.group(1).split(",")]
        paths = _RULE_PATH.findall(rule)
        key = f"labels.traefik.http.routers.{router}.rule"
        loc = _label_loc(b, key.removeprefix("labels."))
        if not hosts:
            b.note(
                key,
                "not mapped",
                f"rule {rule!r} has no Host(): an Ingress needs a host (HostRegexp is not mapped)",
                loc,
            )
            continue
        port = service_ports_.get(attrs.get("service", ""), 0) or (
            next(iter(service_ports_.values())) if len(service_ports_) == 1 else 0
        )
        if not port:
            tcp = [p.container for p in first if p.protocol == "tcp"]
            port = tcp[0] if tcp else 0
        if not port:
            b.note(key, "not mapped", "no port to route to: give traefik.http.services.X.loadbalancer.server.port", loc)
            continue
        b.ingress_ports.add(port)
        kind, path = paths[0] if paths else ("PathPrefix", "/")
        path_type = "Exact" if kind == "Path" else "Prefix"
        backend = {"service": {"name": b.k8s, "port": {"number": port}}}
        annotations = {SERVICE_ANNOTATION: b.name}
        used.update({f"traefik.http.routers.{router}.rule", f"traefik.http.routers.{router}.service"})
        if "entrypoints" in attrs:
            annotations["traefik.ingress.kubernetes.io/router.entrypoints"] = attrs["entrypoints"]
            used.add(f"traefik.http.routers.{router}.entrypoints")
        if attrs.get("tls", "").lower() == "true" or "tls.certresolver" in attrs:
            annotations["traefik.ingress.kubernetes.io/router.tls"] = "true"
            used.add(f"traefik.http.routers.{router}.tls")
        if "tls.certresolver" in attrs:
            annotations["traefik.ingress.kubernetes.io/router.tls.certresolver"] = attrs["tls.certresolver"]
            used.add(f"traefik.http.routers.{router}.tls.certresolver")
        name = b.k8s if len(routers) == 1 else dns_label(f"{b.k8s}-{router}")
        meta = b.meta(name)
        meta["annotations"] = annotations
        b.objects.append(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "metadata": meta,
                "spec": {
                    "ingressClassName": INGRESS_CLASS,
                    "rules": [
                        {"host": h, "http": {"paths": [{"path": path, "pathType": path_type, "backend": backend}]}}
                        for h in hosts
                    ],
                },
            }
        )
        b.note(
            key, "mapped", f"Ingress {name} (class traefik): {', '.join(hosts)}{path} -> Service {b.k8s}:{port}", loc
        )
    for k, v in labels:
        if k in used or k == "traefik.enable":
            continue
        if re.fullmatch(r"traefik\.http\.services\.[^.]+\.loadbalancer\.server\.port", k):
            b.note(f"labels.{k}", "mapped", f"the Ingress backend port {v}", _label_loc(b, k))
        elif k == "traefik.docker.network":
            b.note(f"labels.{k}", "mapped", "not needed: traefik on K3s reaches every Service", _label_loc(b, k))
        else:
            b.note(
                f"labels.{k}",
                "not mapped",
                "this traefik setting has no Ingress counterpart here (middlewares become traefik "
                "Middleware objects, made by hand)",
                _label_loc(b, k),
            )
    if lab.get("traefik.enable") is not None:
        b.note("labels.traefik.enable", "mapped", "the Ingress above", _label_loc(b, "traefik.enable"))


@handles("labels")
def labels(b: Build, value: Any) -> None:
    """traefik labels become Ingress objects; ``homelab.*`` ones are dropped; the rest become annotations."""
    given = [(k, v or "") for k, v in pair_list(value)]
    traefik = [(k, v) for k, v in given if k.startswith("traefik.")]
    if traefik:
        _traefik(b, traefik)
    for k, v in given:
        if k.startswith("traefik."):
            continue
        if k.startswith(f"{LABEL_PREFIX}."):
            b.note(
                f"labels.{k}", "mapped", "Compose bookkeeping of runbook 02: replaced by the app.kubernetes.io labels",
                _label_loc(b, k),
            )  # fmt: skip
            continue
        b.annotations[k] = v
        b.note(f"labels.{k}", "mapped", "an annotation of the workload and its pods", _label_loc(b, k))


@handles("extra_hosts")
def _extra_hosts(b: Build, value: Any) -> None:
    by_ip: dict[str, list[str]] = {}
    pairs = pair_list(value, sep="=") if isinstance(value, dict) else []
    if isinstance(value, list):
        for item in value:
            text = str(item)
            host, _, ip = text.partition("=") if "=" in text else text.partition(":")
            pairs.append((host, ip))
    for host, given in pairs:
        ip = (given or "").strip("[]")
        if ip == "host-gateway":
            b.note(f"extra_hosts.{host}", "not mapped", "host-gateway is Docker's: use the node's address")
            continue
        by_ip.setdefault(ip, []).append(host)
    if by_ip:
        b.pod["hostAliases"] = [{"ip": ip, "hostnames": names} for ip, names in by_ip.items()]
        b.note("extra_hosts", "mapped", f"hostAliases {', '.join(f'{h}={ip}' for ip, hs in by_ip.items() for h in hs)}")


@handles("network_mode")
def _network_mode(b: Build, value: Any) -> None:
    mode = str(value)
    if mode == "host":
        b.pod["hostNetwork"] = True
        b.pod["dnsPolicy"] = "ClusterFirstWithHostNet"
        b.note(
            "network_mode",
            "approximated",
            "hostNetwork with dnsPolicy ClusterFirstWithHostNet: the pod listens on the K3s node's addresses, "
            "its ports must be free there",
        )
    elif mode in ("bridge", "default"):
        b.note("network_mode", "mapped", "the pod network")
    else:
        b.note(
            "network_mode",
            "not mapped",
            f"network_mode {mode}: sharing another container's network is a sidecar in the same pod, made by hand",
        )


@handles("networks")
def _networks(b: Build, value: Any) -> None:
    nets = value if isinstance(value, dict) else dict.fromkeys(value or [])
    top = b.ctx.compose.document.get("networks") or {}
    labels = dict(pair_list(b.svc.get("labels")))
    for net, spec in nets.items():
        driver = str((top.get(net) or {}).get("driver") or "bridge")
        lost = "" if driver in ("bridge", "overlay") else f"; its {driver} driver (an address on the LAN) is not kept"
        if net == "default" and not lost:
            b.note(f"networks.{net}", "mapped", "the project's network: the pod network, as for every service")
        elif labels.get("traefik.docker.network") in {net, (top.get(net) or {}).get("name") or net} and not lost:
            b.note(f"networks.{net}", "mapped", "the reverse proxy's network: traefik on K3s reaches every Service")
        else:
            b.note(
                f"networks.{net}",
                "approximated",
                "one flat pod network: every pod reaches every Service (the network's isolation is not kept; "
                f"a NetworkPolicy would restore it){lost}",
            )
        for k, v in (spec or {}).items():
            if k == "aliases":
                for alias in v:
                    name = dns_label(str(alias))
                    if name != b.k8s and all(n != name for n, _ in b.extra_service_names):
                        b.extra_service_names.append((name, f"networks.{net}.aliases"))
            else:
                b.note(f"networks.{net}.{k}", "not mapped", f"{k}: pod addresses are the cluster's to give")


@handles("container_name")
def _container_name(b: Build, value: Any) -> None:
    name = dns_label(str(value))
    if name != b.k8s:
        b.extra_service_names.append((name, "container_name"))
    else:
        b.note("container_name", "mapped", f"the pod's name starts with {b.k8s}; Service {b.k8s} is its stable name")


@handles("hostname")
def _hostname(b: Build, value: Any) -> None:
    host = str(value)
    first = dns_label(host.split(".")[0])
    b.pod["hostname"] = first
    if "." in host or first != host:
        b.note(
            "hostname",
            "approximated",
            f"pod hostname {first}: the pod's full name is not {host} (set the application's external URL instead)",
        )
    else:
        b.note("hostname", "mapped", f"pod hostname {first}")


@handles("dns", "dns_search", "dns_opt")
def _dns(b: Build, _value: Any) -> None:
    cfg = b.pod.setdefault("dnsConfig", {})
    for key, field_ in (("dns", "nameservers"), ("dns_search", "searches")):
        if key in b.svc:
            v = b.svc[key]
            cfg[field_] = [str(x) for x in (v if isinstance(v, list) else [v])]
            b.note(key, "approximated", f"dnsConfig.{field_}: added to the cluster's DNS, not instead of it")
    if "dns_opt" in b.svc:
        opts = []
        for o in b.svc["dns_opt"]:
            name, _, val = str(o).partition(":")
            opts.append({"name": name, **({"value": val} if val else {})})
        cfg["options"] = opts
        b.note("dns_opt", "mapped", "dnsConfig.options")


__all__ = ["NODEPORT_RANGE", "PortSpec", "labels", "parse_port", "service_ports", "services"]
