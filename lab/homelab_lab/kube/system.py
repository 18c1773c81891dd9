"""What a fresh K3s server holds: namespaces, the node, the local-path StorageClass, traefik's
IngressClass, and kube-system's coredns, local-path-provisioner, metrics-server and traefik.

Created when missing (a restart keeps what is stored); a component given to ``--disable`` is
not created, and removed if an earlier start created it.
"""

from __future__ import annotations

import ipaddress
import platform
import uuid
from collections.abc import Iterator
from typing import Any

from homelab_lab.errors import KubeStandinError
from homelab_lab.kube.cluster import Cluster, now
from homelab_lab.kube.config import Config
from homelab_lab.kube.schema import Json

MANAGER = "k3s"
CONTAINERD = "containerd://1.7.23-k3s2"
IMAGES = {
    "coredns": "rancher/mirrored-coredns-coredns:1.12.0",
    "local-storage": "rancher/local-path-provisioner:v0.0.30",
    "metrics-server": "rancher/mirrored-metrics-server:v0.7.2",
    "traefik": "rancher/mirrored-library-traefik:2.11.18",
    "helm": "rancher/klipper-helm:v0.9.3-build20241008",
}


def service_ip(cfg: Config, index: int) -> str:
    """The index-th address of the service CIDR (1: the kubernetes Service, 10: kube-dns)."""
    return str(ipaddress.ip_network(cfg.service_cidr, strict=False).network_address + index)


def parse_labels(items: tuple[str, ...], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key or (not sep and what == "taint"):
            raise KubeStandinError(f"bad {what} {item!r}", where=f"--node-{what}", hint="use key=value")
        out[key] = value
    return out


def taints(cfg: Config) -> list[Json]:
    out = []
    for item in cfg.node_taints:
        key, _, rest = item.partition("=")
        value, _, effect = rest.rpartition(":") if ":" in rest else (rest, "", "")
        if ":" not in item or effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
            raise KubeStandinError(
                f"bad taint {item!r}",
                where="--node-taint",
                hint="use key=value:NoSchedule (or PreferNoSchedule, NoExecute)",
            )
        if not rest.count(":"):
            value = ""
        taint: Json = {"key": key.split(":")[0], "effect": effect}
        if value:
            taint["value"] = value
        out.append(taint)
    return out


def node(cfg: Config) -> Json:
    labels = {
        "beta.kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/instance-type": "k3s",
        "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": cfg.node_name,
        "kubernetes.io/os": "linux",
        "node-role.kubernetes.io/control-plane": "true",
        "node-role.kubernetes.io/master": "true",
        "node.kubernetes.io/instance-type": "k3s",
        **parse_labels(cfg.node_labels, "label"),
    }
    stamp = now()
    capacity = {
        "cpu": cfg.node_cpu,
        "memory": cfg.node_memory,
        "pods": "110",
        "ephemeral-storage": "20Gi",
        "hugepages-2Mi": "0",
    }
    cond = [
        ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
    ]
    spec: Json = {"podCIDR": _pod_cidr(cfg), "podCIDRs": [_pod_cidr(cfg)], "providerID": f"k3s://{cfg.node_name}"}
    if cfg.node_taints:
        spec["taints"] = taints(cfg)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": cfg.node_name,
            "labels": labels,
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                "k3s.io/internal-ip": cfg.host_ip,
                "k3s.io/hostname": cfg.node_name,
            },
        },
        "spec": spec,
        "status": {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "conditions": [
                {
                    "type": t,
                    "status": s,
                    "reason": r,
                    "message": m,
                    "lastHeartbeatTime": stamp,
                    "lastTransitionTime": stamp,
                }
                for t, s, r, m in cond
            ],
            "addresses": [
                {"type": "InternalIP", "address": cfg.host_ip},
                {"type": "Hostname", "address": cfg.node_name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": str(uuid.uuid4()),
                "containerRuntimeVersion": CONTAINERD,
                "kernelVersion": platform.release(),
                "kubeProxyVersion": cfg.version,
                "kubeletVersion": cfg.version,
                "machineID": uuid.uuid5(uuid.NAMESPACE_DNS, cfg.node_name).hex,
                "operatingSystem": "linux",
                "osImage": "Debian GNU/Linux 12 (bookworm)",
                "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, cfg.node_name)),
            },
        },
    }


def _pod_cidr(cfg: Config) -> str:
    net = ipaddress.ip_network(cfg.cluster_cidr, strict=False)
    return str(next(net.subnets(new_prefix=24)) if net.prefixlen <= 24 else net)


def _deployment(
    name: str,
    labels: dict[str, str],
    image: str,
    ports: list[Json],
    probe: Json | None,
    args: list[str] | None = None,
    sa: str = "",
) -> Json:
    container: Json = {
        "name": name.split("-")[0] if name != "local-path-provisioner" else name,
        "image": image,
        "ports": ports,
    }
    if probe is not None:
        container["readinessProbe"] = probe
    if args:
        container["args"] = args
    spec: Json = {
        "containers": [container],
        "priorityClassName": "system-cluster-critical",
        "tolerations": [
            {"key": "CriticalAddonsOnly", "operator": "Exists"},
            {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"},
        ],
    }
    if sa:
        spec["serviceAccountName"] = sa
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "kube-system", "labels": dict(labels)},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": dict(labels)},
            "template": {"metadata": {"labels": dict(labels)}, "spec": spec},
        },
    }


def _service(name: str, labels: dict[str, str], ip: str, ports: list[Json], kind: str = "ClusterIP") -> Json:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "kube-system", "labels": dict(labels)},
        "spec": {"type": kind, "clusterIP": ip, "clusterIPs": [ip], "selector": dict(labels), "ports": ports},
    }


def _http(port: int | str, path: str) -> Json:
    return {"httpGet": {"path": path, "port": port}, "periodSeconds": 2}


def components(cfg: Config) -> dict[str, list[Json]]:
    """The objects of each disableable component, by component name."""
    dns = {"k8s-app": "kube-dns"}
    lpp = {"app": "local-path-provisioner"}
    ms = {"k8s-app": "metrics-server"}
    tr = {"app.kubernetes.io/instance": "traefik-kube-system", "app.kubernetes.io/name": "traefik"}
    return {
        "coredns": [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "coredns", "namespace": "kube-system"}},
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "coredns", "namespace": "kube-system"},
                "data": {
                    "Corefile": ".:53 {\n    errors\n    health\n    ready\n    kubernetes cluster.local in-addr.arpa "
                    "ip6.arpa {\n      pods insecure\n      fallthrough in-addr.arpa ip6.arpa\n    }\n    "
                    "forward . /etc/resolv.conf\n    cache 30\n    loop\n    reload\n    loadbalance\n}\n",
                    "NodeHosts": f"{cfg.host_ip} {cfg.node_name}\n",
                },
            },
            _deployment(
                "coredns",
                dns,
                IMAGES["coredns"],
                [
                    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                    {"name": "metrics", "containerPort": 9153, "protocol": "TCP"},
                ],
                _http(8181, "/ready"),
                ["-conf", "/etc/coredns/Corefile"],
                "coredns",
            ),
            _service(
                "kube-dns",
                dns,
                service_ip(cfg, 10),
                [
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                    {"name": "metrics", "port": 9153},
                ],
            ),
        ],
        "local-storage": [
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": "local-path-provisioner-service-account", "namespace": "kube-system"},
            },
            _deployment(
                "local-path-provisioner",
                lpp,
                IMAGES["local-storage"],
                [],
                None,
                ["start", "--config", "/etc/config/config.json"],
                "local-path-provisioner-service-account",
            ),
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {
                    "name": "local-path",
                    "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
                },
                "provisioner": "rancher.io/local-path",
                "reclaimPolicy": "Delete",
                "volumeBindingMode": "WaitForFirstConsumer",
                "allowVolumeExpansion": False,
            },
        ],
        "metrics-server": [
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": "metrics-server", "namespace": "kube-system"},
            },
            _deployment(
                "metrics-server",
                ms,
                IMAGES["metrics-server"],
                [{"name": "https", "containerPort": 10250, "protocol": "TCP"}],
                _http(10250, "/readyz"),
                ["--cert-dir=/tmp", "--secure-port=10250"],
                "metrics-server",
            ),
            _service(
                "metrics-server", ms, service_ip(cfg, 200), [{"name": "https", "port": 443, "targetPort": "https"}]
            ),
        ],
        "traefik": [
            {
                "apiVersion": "helm.cattle.io/v1",
                "kind": "HelmChart",
                "metadata": {"name": "traefik-crd", "namespace": "kube-system"},
                "spec": {"chart": "https://%{KUBERNETES_API}%/static/charts/traefik-crd-27.0.201+up27.0.2.tgz"},
            },
            {
                "apiVersion": "helm.cattle.io/v1",
                "kind": "HelmChart",
                "metadata": {"name": "traefik", "namespace": "kube-system"},
                "spec": {
                    "chart": "https://%{KUBERNETES_API}%/static/charts/traefik-27.0.201+up27.0.2.tgz",
                    "set": {"global.systemDefaultRegistry": ""},
                    "valuesContent": 'deployment:\n  podAnnotations:\n    prometheus.io/port: "8082"\n',
                },
            },
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "traefik", "namespace": "kube-system"}},
            _deployment(
                "traefik",
                tr,
                IMAGES["traefik"],
                [
                    {"name": "web", "containerPort": 8000},
                    {"name": "websecure", "containerPort": 8443},
                    {"name": "traefik", "containerPort": 9000},
                ],
                _http(9000, "/ping"),
                ["--entryPoints.web.address=:8000/tcp", "--ping=true"],
                "traefik",
            ),
            _service(
                "traefik",
                tr,
                service_ip(cfg, 100),
                [
                    {"name": "web", "port": 80, "targetPort": "web", "nodePort": 30080},
                    {"name": "websecure", "port": 443, "targetPort": "websecure", "nodePort": 30443},
                ],
                "LoadBalancer",
            ),
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "IngressClass",
                "metadata": {"name": "traefik", "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
                "spec": {"controller": "traefik.io/ingress-controller"},
            },
        ],
    }


def base(cfg: Config) -> list[Json]:
    """Namespaces, the node and the kubernetes Service: always there."""
    ns = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}
        for n in ("default", "kube-system", "kube-public", "kube-node-lease")
    ]
    ip = service_ip(cfg, 1)
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "labels": {"component": "apiserver", "provider": "kubernetes"},
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": ip,
            "clusterIPs": [ip],
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": cfg.https_port}],
        },
    }
    eps = {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"},
        },
        "subsets": [
            {
                "addresses": [{"ip": cfg.host_ip}],
                "ports": [{"name": "https", "port": cfg.https_port, "protocol": "TCP"}],
            }
        ],
    }
    return [*ns, node(cfg), svc, eps]


def _each(objs: list[Json]) -> Iterator[tuple[str, str, Json]]:
    for obj in objs:
        yield str(obj["apiVersion"]), str(obj["kind"]), obj


def ensure(cluster: Cluster, cfg: Config) -> None:
    """Create what is missing; remove the objects of disabled components; refresh the node's status."""
    wanted: list[Json] = list(base(cfg))
    parts = components(cfg)
    for name, objs in parts.items():
        if not cfg.disabled(name):
            wanted += objs
    for api_version, kind_name, obj in _each(wanted):
        kind = cluster.kind(api_version, kind_name)
        meta = obj["metadata"]
        live = cluster.find(kind, str(meta.get("namespace") or ""), meta["name"])
        if live is None:
            cluster.write(kind, obj, MANAGER)
        elif kind_name == "Node":
            fresh = node(cfg)
            status: Any = fresh["status"]
            labels = {**live["metadata"].get("labels", {}), **fresh["metadata"]["labels"]}
            cluster.write(
                kind, {**live, "metadata": {**live["metadata"], "labels": labels}, "spec": fresh["spec"]}, MANAGER
            )
            cluster.set_status(kind, cluster.get(kind, "", meta["name"]), status, MANAGER)
    for name, objs in parts.items():
        if cfg.disabled(name):
            for api_version, kind_name, obj in _each(objs):
                kind = cluster.kind(api_version, kind_name)
                meta = obj["metadata"]
                if cluster.find(kind, str(meta.get("namespace") or ""), meta["name"]) is not None:
                    cluster.delete(kind, str(meta.get("namespace") or ""), meta["name"])
