"""Runbook 04: the homelab's services on K3s (GitLab CE, Harbor, dev environments), as manifests.

What each service is, in Kubernetes terms:

- **gitlab**: namespace ``gitlab``; a Secret with the initial root password (from
  ``k3s.gitlab_root_password``); a StatefulSet of the omnibus image with PVCs for config, data and
  logs (local-path) and a readiness probe on its health path; a Service; an Ingress through traefik
  at ``gitlab.<network.domain>``.
- **harbor**: namespace ``harbor``; a Secret with the admin password (``k3s.harbor_admin_password``);
  a ``HelmChart`` (``helm.cattle.io/v1``) of goharbor's chart, pinned, its values naming that Secret
  (the password never enters the chart's values) and local-path persistence; success is its
  ``helm-install-harbor`` Job's ``Complete``.
- **devenv**: namespace ``devenv``; per ``k3s.devenvs`` entry a PVC, a Deployment of code-server,
  a Service and an Ingress at its own host.

Manifests are built from the inventory and the catalog only, validated with kubernetes-validate for
the K3s release's Kubernetes minor, sealed with the config hash (a Secret's, and the
``homelab.io/secrets-hash`` of the pods that read one, keyed with the homelab's hash key), and applied by
:class:`homelab_lib.kube.KubeManifests`.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from homelab_lib.core.clock import SYSTEM, Clock
from homelab_lib.core.errors import ConfigError, NotFound, Problem
from homelab_lib.kube import KubeDesired, KubeManifests, Probe, ordered, sealed, validate
from homelab_lib.kube.objects import INGRESS_CLASS, STORAGE_CLASS, KubeObject, config_hash, kubernetes_version

if TYPE_CHECKING:
    from homelab_lib.convert import Conversion
    from homelab_lib.inventory.model import Inventory, Service

RUNBOOK = "04_deploy_k3s_services"
HARBOR_REPO = "https://helm.goharbor.io"


def _meta(name: str, namespace: str = "", app: str = "") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    if app:
        meta["labels"] = {"app.kubernetes.io/name": app, "app.kubernetes.io/instance": name}
    return meta


def namespace(name: str) -> KubeObject:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(name)}


def secret(name: str, ns: str, values: dict[str, str]) -> KubeObject:
    """A Secret with ``data`` (base64), as the API stores it, so what runs compares with what is applied."""
    data = {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": _meta(name, ns), "type": "Opaque", "data": data}


def service(name: str, ns: str, ports: list[tuple[str, int]]) -> KubeObject:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, ns, name),
        "spec": {
            "selector": {"app.kubernetes.io/instance": name},
            "ports": [{"name": n, "port": p, "targetPort": p, "protocol": "TCP"} for n, p in ports],
        },
    }


def ingress(name: str, ns: str, host: str, port: int) -> KubeObject:
    backend = {"service": {"name": name, "port": {"number": port}}}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": _meta(name, ns, name),
        "spec": {
            "ingressClassName": INGRESS_CLASS,
            "rules": [{"host": host, "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]}}],
        },
    }


def pvc(name: str, ns: str, size: str) -> KubeObject:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _meta(name, ns),
        "spec": _claim(size),
    }


def _claim(size: str) -> dict[str, Any]:
    return {
        "accessModes": ["ReadWriteOnce"],
        "storageClassName": STORAGE_CLASS,
        "resources": {"requests": {"storage": size}},
    }


def _probe(path: str, port: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": port}, "periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 3}


def _roll_on(workload: KubeObject, secrets: list[KubeObject], hash_key: bytes) -> None:
    """Annotate the pod template with the hash of the Secrets it reads, so a changed Secret rolls the pods.

    The hash is keyed with the homelab's hash key (:mod:`homelab_lib.core.hashkey`): a plain hash of the
    Secrets would let whoever reads the annotation test guesses of the passwords offline.
    """
    if secrets:
        template = workload["spec"]["template"]["metadata"]
        digest = config_hash({"secrets": secrets}, hash_key)[:16]
        template.setdefault("annotations", {})["homelab.io/secrets-hash"] = digest


def _health(svc: Service) -> str:
    return svc.health if svc.health.startswith("/") else "/"


def gitlab(inv: Inventory, domain: str) -> list[KubeObject]:
    assert inv.k3s is not None
    svc = inv.services["gitlab"]
    ns, host = "gitlab", f"gitlab.{domain}"
    env: list[dict[str, Any]] = [
        {
            "name": "GITLAB_OMNIBUS_CONFIG",
            "value": f"external_url 'http://{host}'",
        },
    ]
    objs = [namespace(ns)]
    if inv.k3s.gitlab_root_password is not None:
        objs.append(secret("gitlab-root", ns, {"password": inv.k3s.gitlab_root_password.reveal()}))
        env.append(
            {"name": "GITLAB_ROOT_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "gitlab-root", "key": "password"}}}
        )
    volumes = {"config": "/etc/gitlab", "data": "/var/opt/gitlab", "logs": "/var/log/gitlab", **svc.volumes}
    sizes = {"config": "1Gi", "data": "50Gi", "logs": "5Gi"}
    sts = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _meta("gitlab", ns, "gitlab"),
        "spec": {
            "serviceName": "gitlab",
            "replicas": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/instance": "gitlab"}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "gitlab", "app.kubernetes.io/instance": "gitlab"}},
                "spec": {
                    "containers": [
                        {
                            "name": "gitlab",
                            "image": svc.image,
                            "ports": [{"name": "http", "containerPort": 80}, {"name": "ssh", "containerPort": 22}],
                            "env": env,
                            "readinessProbe": _probe(_health(svc), 80),
                            "resources": {
                                "requests": {"cpu": "1", "memory": "3Gi"},
                                "limits": {"memory": "6Gi"},
                            },
                            "volumeMounts": [{"name": n, "mountPath": p} for n, p in sorted(volumes.items())],
                        }
                    ]
                },
            },
            "volumeClaimTemplates": [
                {"metadata": {"name": n}, "spec": _claim(sizes.get(n, "5Gi"))} for n in sorted(volumes)
            ],
        },
    }
    secrets = [o for o in objs if o["kind"] == "Secret"]
    _roll_on(sts, secrets, inv.hash_key() if secrets else b"")
    objs += [sts, service("gitlab", ns, [("http", 80), ("ssh", 22)]), ingress("gitlab", ns, host, 80)]
    return objs


def harbor(inv: Inventory, domain: str) -> list[KubeObject]:
    assert inv.k3s is not None
    ns, host = "harbor", f"harbor.{domain}"
    values = [
        "expose:",
        "  type: ingress",
        "  tls: {enabled: false}",
        f"  ingress: {{className: {INGRESS_CLASS}, hosts: {{core: {host}}}}}",
        f"externalURL: http://{host}",
        "persistence:",
        "  persistentVolumeClaim:",
        f"    registry: {{storageClass: {STORAGE_CLASS}}}",
        f"    jobservice: {{jobLog: {{storageClass: {STORAGE_CLASS}}}}}",
        f"    database: {{storageClass: {STORAGE_CLASS}}}",
        f"    redis: {{storageClass: {STORAGE_CLASS}}}",
        f"    trivy: {{storageClass: {STORAGE_CLASS}}}",
    ]
    objs = [namespace(ns)]
    if inv.k3s.harbor_admin_password is not None:
        objs.append(secret("harbor-admin", ns, {"HARBOR_ADMIN_PASSWORD": inv.k3s.harbor_admin_password.reveal()}))
        values += ["existingSecretAdminPassword: harbor-admin", "existingSecretAdminPasswordKey: HARBOR_ADMIN_PASSWORD"]
    chart = {
        "apiVersion": "helm.cattle.io/v1",
        "kind": "HelmChart",
        "metadata": _meta("harbor", ns),
        "spec": {
            "chart": "harbor",
            "repo": HARBOR_REPO,
            "version": inv.k3s.harbor_chart_version,
            "targetNamespace": ns,
            "valuesContent": "\n".join(values) + "\n",
        },
    }
    return [*objs, chart]


def devenvs(inv: Inventory, domain: str) -> tuple[list[KubeObject], list[tuple[str, str]]]:
    assert inv.k3s is not None
    svc = inv.services["devenv"]
    ns = "devenv"
    objs, hosts = [namespace(ns)], []
    for env in inv.k3s.devenvs:
        name = f"devenv-{env.name}"
        host = env.host or f"{env.name}.dev.{domain}"
        hosts.append((name, host))
        home = svc.volumes.get("home", "/home/coder")
        deploy = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _meta(name, ns, "devenv"),
            "spec": {
                "replicas": 1,
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": {"app.kubernetes.io/instance": name}},
                "template": {
                    "metadata": {"labels": {"app.kubernetes.io/name": "devenv", "app.kubernetes.io/instance": name}},
                    "spec": {
                        "containers": [
                            {
                                "name": "code-server",
                                "image": svc.image,
                                "ports": [{"name": "http", "containerPort": 8080}],
                                "readinessProbe": _probe(_health(svc), 8080),
                                "resources": {
                                    "requests": {"cpu": "250m", "memory": "512Mi"},
                                    "limits": {"memory": "2Gi"},
                                },
                                "volumeMounts": [{"name": "home", "mountPath": home}],
                            }
                        ],
                        "volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": name}}],
                    },
                },
            },
        }
        objs += [pvc(name, ns, env.storage), deploy, service(name, ns, [("http", 8080)]), ingress(name, ns, host, 8080)]
    return objs, hosts


OWN_MANIFESTS = ("gitlab", "harbor", "devenv")  # the services this module writes manifests for by hand


def converted(
    inv: Inventory, name: str, address: str, conv: Conversion | None = None
) -> tuple[list[KubeObject], Probe | None]:
    """A catalog service's manifests as runbook 05's converter makes them (in its own namespace; ``conv``:
    that conversion, already made), with the NodePort monitoring scrapes it at, and the probe of its
    Ingress when the service has a ``proxy:`` sub-domain and an HTTP health path."""
    from homelab_lib.convert import convert_inventory_service

    conv = conv or convert_inventory_service(inv, None, name, name)
    svc = inv.services[name]
    objs = list(conv.objects)
    node_port = inv.monitoring.k3s_node_ports.get(name) if inv.monitoring else None
    if node_port and svc.metrics and svc.ports:  # where Prometheus scrapes it (runbook 07): a fixed NodePort
        port = svc.metrics_port or svc.ports[0].container
        workload = conv.object("Deployment")
        objs.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {**_meta(f"{conv.k8s_name}-metrics", name, conv.k8s_name)},
                "spec": {
                    "type": "NodePort",
                    "selector": dict(workload["spec"]["selector"]["matchLabels"]),
                    "ports": [{"name": "metrics", "port": port, "targetPort": port, "nodePort": node_port}],
                },
            }
        )
    probe = None
    if svc.proxy and svc.health.startswith("/"):
        probe = Probe(name, f"{svc.proxy}.{inv.network.domain}", address, svc.health)
    return objs, probe


def desired_services(inv: Inventory, only: Sequence[str] = ()) -> KubeDesired:
    """The manifests of the inventory's K3s services, validated and sealed.

    Raises:
        ConfigError: no k3s: section, or a manifest does not validate.
        UnresolvedSecret: a password reference cannot be read.
    """
    if inv.k3s is None:
        raise ConfigError([Problem("parameters", 0, "k3s", "there is no k3s: section")])
    unknown = sorted(set(only) - set(inv.k3s.services))
    if unknown:
        raise NotFound(unknown[0], what="K3s service", known=inv.k3s.services, where="services")
    chosen = [s for s in inv.k3s.services if not only or s in only]
    domain = inv.network.domain
    address = inv.vm(inv.k3s.vm).address
    objs: list[KubeObject] = []
    probes: list[Probe] = []
    if "gitlab" in chosen:
        objs += gitlab(inv, domain)
        probes.append(Probe("gitlab", f"gitlab.{domain}", address, _health(inv.services["gitlab"])))
    if "harbor" in chosen:
        objs += harbor(inv, domain)
    if "devenv" in chosen and inv.k3s.devenvs:
        made, hosts = devenvs(inv, domain)
        objs += made
        health = _health(inv.services["devenv"])
        probes += [Probe(name, host, address, health) for name, host in hosts]
    for name in chosen:
        if name not in OWN_MANIFESTS:  # any other catalog service (one runbook 05 moved): converted from Compose
            made, probe = converted(inv, name, address)
            objs += made
            probes += [probe] if probe else []
    try:
        validate(objs, kubernetes_version(inv.k3s.version))
    except ValueError as e:
        raise ConfigError([Problem("runbook 04 manifests", 0, "k3s.services", str(e))]) from None
    hash_key = inv.hash_key() if any(o["kind"] == "Secret" for o in objs) else None  # a Secret's hash is keyed
    sealed_objs = tuple(ordered([sealed(o, RUNBOOK, hash_key) for o in objs]))
    scope = tuple(chosen) if only else ()
    return KubeDesired(inv.name, RUNBOOK, sealed_objs, tuple(probes), inv.k3s.rollout_timeout_s, scope)


def adapter(
    inv: Inventory, *, services: Sequence[str] = (), force_conflicts: bool = False, clock: Clock = SYSTEM
) -> KubeManifests:
    """Runbook 04's adapter: the inventory's K3s services (or those named), through runbook 03's kubeconfig."""

    from homelab_lib import clients

    return KubeManifests(
        lambda: desired_services(inv, services),
        lambda: clients.k3s_kube(inv),
        name="k3s-services",
        force_conflicts=force_conflicts,
        clock=clock,
    )
