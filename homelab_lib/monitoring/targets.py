"""What Prometheus scrapes, computed from the inventory: one :class:`ScrapeTarget` per endpoint.

Every target carries the labels ``platform`` (``compose``, ``k3s``; ``proxmox`` for a node-exporter
on a Proxmox node itself), ``node`` (the Proxmox node), ``host`` (the VM, or the node) and
``service`` (the catalog's name), so one query spans both platforms.

Where targets come from:

- every service placed in a Compose stack whose catalog entry has ``metrics:`` (node-exporter,
  cAdvisor, traefik, Prometheus, Alertmanager, Grafana...), at ``<VM address>:<published port>``
  (the container port for ``network_mode: host``), job = the service's name;
- every service of ``k3s.services`` with ``metrics:`` and a NodePort in ``monitoring.k3s_node_ports``,
  at ``<K3s VM address>:<NodePort>``: **same job, same ``service`` label, ``platform="k3s"``**, so a
  migrated service's series continue under its name. A NodePort (not the Ingress) because an
  Ingress routes by Host name, which a static scrape target cannot set, and a NodePort answers on
  the VM's address on a real cluster as in the lab. A K3s service with ``metrics:`` but no NodePort
  is listed in :attr:`Targets.unscraped`;
- with ``k3s:``: node-exporter on the K3s VM (``monitoring.k3s_node_exporter_port``); with
  ``monitoring.k3s`` (a bearer token by reference): the kubelet (``/metrics``, ``/metrics/cadvisor``
  on :10250), the API server (:6443) and kube-state-metrics (its NodePort), over HTTPS;
- ``monitoring.node_exporters``: node-exporters on the Proxmox nodes;
- ``monitoring.pve_exporter``: prometheus-pve-exporter (``/pve?target=<PVE host>&module=...``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

import pandas as pd

from homelab_lib.core.errors import ConfigError, Problem
from homelab_lib.inventory.model import Inventory, Service, Vm

Platform = Literal["compose", "k3s", "proxmox"]
#: How the K3s targets authenticate: a bearer token and TLS settings (see render).
K3S_AUTH = "k3s"
KUBELET_PORT = 10250
APISERVER_PORT = 6443


@dataclass(frozen=True)
class ScrapeTarget:
    """One scrape target.

    Attributes:
        job: the scrape job (the service's name for catalog services).
        address: ``host:port`` as Prometheus dials it.
        platform: ``compose``, ``k3s`` or ``proxmox``.
        node: the Proxmox node it runs on.
        host: the VM (or node) it runs on.
        service: the service's name (the same on both platforms).
        metrics_path: the HTTP path.
        scheme: ``http`` or ``https``.
        params: URL parameters (pve-exporter's ``target``, ``module``).
        auth: '' or :data:`K3S_AUTH` (bearer token file and the cluster's TLS settings).
    """

    job: str
    address: str
    platform: Platform
    node: str
    host: str
    service: str
    metrics_path: str = "/metrics"
    scheme: str = "http"
    params: tuple[tuple[str, str], ...] = ()
    auth: str = ""

    @property
    def labels(self) -> dict[str, str]:
        """The labels every target carries (besides Prometheus's own ``job`` and ``instance``)."""
        return {"platform": self.platform, "node": self.node, "host": self.host, "service": self.service}

    @property
    def key(self) -> tuple[str, str, str]:
        """(job, address, metrics path): how a target is matched with Prometheus's active targets."""
        return (self.job, self.address, self.metrics_path)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.address}{self.metrics_path}"


@dataclass(frozen=True)
class Targets:
    """Every target of the homelab, and the services that have metrics but cannot be scraped (with why)."""

    targets: tuple[ScrapeTarget, ...]
    unscraped: tuple[tuple[str, str], ...] = ()

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.targets)

    def __len__(self) -> int:
        return len(self.targets)

    def table(self) -> pd.DataFrame:
        """One row per target (platform, node, host, service, job, URL), sorted; then the unscraped."""
        rows = [
            {"platform": t.platform, "node": t.node, "host": t.host, "service": t.service, "job": t.job, "url": t.url}
            for t in self.targets
        ]
        rows += [{"platform": "-", "service": name, "url": f"not scraped: {why}"} for name, why in self.unscraped]
        return pd.DataFrame(rows).sort_values(["platform", "host", "service"], kind="stable").reset_index(drop=True)


def listen_port(vm: Vm, svc: Service, name: str, problems: list[Problem], where: str) -> int | None:
    """The port a service's metrics (or first port) answer on at the VM's address, or None."""
    if not svc.ports:
        problems.append(Problem(where, 0, f"services.{name}", f"service {name} has metrics: but no ports"))
        return None
    wanted = svc.metrics_port or svc.ports[0].container
    for port in svc.ports:
        if port.container == wanted:
            if svc.network_mode == "host":
                return port.container
            if not port.publish:
                problems.append(
                    Problem(where, 0, f"services.{name}.ports", f"{name}'s metrics port {wanted} is not published")
                )
                return None
            return port.published
    problems.append(
        Problem(where, 0, f"services.{name}.metrics_port", f"{name} has no port {wanted}; add it under ports:")
    )
    return None


def compute(inv: Inventory) -> Targets:
    """Every scrape target of the inventory, in a stable order (host, then service).

    Raises:
        ConfigError: a service with ``metrics:`` has no port to scrape.
    """
    where = ", ".join(str(f) for f in inv.source_files) or f"inventory {inv.name}"
    problems: list[Problem] = []
    out: list[ScrapeTarget] = []
    unscraped: list[tuple[str, str]] = []
    seen: set[tuple[str, str, str]] = set()

    def add(t: ScrapeTarget) -> None:
        if t.key not in seen:
            seen.add(t.key)
            out.append(t)

    for vm in inv.docker_hosts:
        for services in vm.stacks.values():
            for name in services:
                svc = inv.services[name]
                if svc.metrics is None:
                    continue
                port = listen_port(vm, svc, name, problems, where)
                if port is not None:
                    add(ScrapeTarget(name, f"{vm.address}:{port}", "compose", vm.node, vm.name, name, svc.metrics))
    mon = inv.monitoring
    if inv.k3s is not None:
        kvm = inv.vm(inv.k3s.vm)
        node_ports = mon.k3s_node_ports if mon else {}
        for name in inv.k3s.services:
            svc = inv.services[name]
            if svc.metrics is None:
                continue
            if name not in node_ports:
                unscraped.append((name, "on K3s: no NodePort in monitoring.k3s_node_ports"))
                continue
            add(ScrapeTarget(name, f"{kvm.address}:{node_ports[name]}", "k3s", kvm.node, kvm.name, name, svc.metrics))
        if mon and mon.k3s_node_exporter_port:
            exporter = "node-exporter"
            add(
                ScrapeTarget(
                    exporter, f"{kvm.address}:{mon.k3s_node_exporter_port}", "k3s", kvm.node, kvm.name, exporter
                )
            )
        if mon and mon.k3s:
            k = mon.k3s
            if k.kubelet:
                kubelet = f"{kvm.address}:{KUBELET_PORT}"
                add(
                    ScrapeTarget(
                        "kubelet", kubelet, "k3s", kvm.node, kvm.name, "kubelet", scheme="https", auth=K3S_AUTH
                    )
                )
                add(
                    ScrapeTarget(
                        "kubelet-cadvisor",
                        kubelet,
                        "k3s",
                        kvm.node,
                        kvm.name,
                        "cadvisor",
                        "/metrics/cadvisor",
                        scheme="https",
                        auth=K3S_AUTH,
                    )
                )
            if k.apiserver:
                api = f"{kvm.address}:{APISERVER_PORT}"
                add(ScrapeTarget("kube-apiserver", api, "k3s", kvm.node, kvm.name, "kube-apiserver", scheme="https",
                           auth=K3S_AUTH))  # fmt: skip
            if k.kube_state_metrics_port:
                ksm = "kube-state-metrics"
                add(ScrapeTarget(ksm, f"{kvm.address}:{k.kube_state_metrics_port}", "k3s", kvm.node, kvm.name, ksm))
    if mon:
        for node, address in sorted(mon.node_exporters.items()):
            add(ScrapeTarget("node-exporter", address, "proxmox", node, node, "node-exporter"))
        if mon.pve_exporter:
            pve = mon.pve_exporter
            vm = inv.vm(pve.vm)
            host = pve.target or (urlsplit(inv.proxmox.endpoint).hostname or "")
            params = (("module", pve.module), ("target", host))
            add(
                ScrapeTarget("pve-exporter", f"{vm.address}:{pve.port}", "compose", vm.node, vm.name, "pve-exporter",
                       "/pve", params=params)
            )  # fmt: skip
    if problems:
        raise ConfigError(problems)
    return Targets(tuple(out), tuple(unscraped))
