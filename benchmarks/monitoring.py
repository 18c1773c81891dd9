"""Runbook 07's render, measured in one run (printed, never asserted).

An inventory of 100 Docker hosts and 500 services with metrics (5 per host, plus node-exporter
and cAdvisor on each, Prometheus, Alertmanager and Grafana on the first, a K3s VM with its
node-exporter) is rendered: targets, prometheus.yml, rules, alertmanager.yml and the Grafana
files with their dashboards. Target (issue 13): the render <= 1 s.

Baseline, measured in the same run, like with like: the least any renderer must do for the same
scrape config: a plain dict of the same jobs and labelled targets, built by hand from the same
inventory, dumped with the same YAML dumper. Rounds alternate which goes first; medians and
their ratio are printed. ``promtool check config`` (which loads the rules too) is timed
separately, and so is building the inventory (loading and validating the parameter file).

No lab needed; promtool must be installed.

    .venv/bin/python benchmarks/monitoring.py [--runs 7] [--hosts 100] [--services 500]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from homelab_lib import monitoring
from homelab_lib.inventory import Inventory, load_inventory
from homelab_lib.monitoring.render import dump


def parameters(folder: Path, hosts: int, services: int) -> Path:
    """A parameter file of hosts Docker VMs and services services with metrics, secrets in files there."""
    (folder / "secrets").mkdir()
    for name in ("pve", "key", "grafana"):
        (folder / "secrets" / name).write_text(f"{name}-value\n")
    (folder / "secrets" / "hook").write_text("https://hooks.example.org/T0/secret\n")
    (folder / "known_hosts").write_text("")
    per_host = services // hosts
    vms: list[dict[str, Any]] = []
    catalog: dict[str, Any] = {}
    for h in range(hosts):
        names = [f"app-{h}-{i}" for i in range(per_host)]
        for i, name in enumerate(names):
            catalog[name] = {
                "image": f"example.org/{name}:1.0",
                "ports": [{"container": 9000 + i}],
                "metrics": "/metrics",
            }
        stacks: dict[str, list[str]] = {"apps": names, "exporters": ["node-exporter", "cadvisor"]}
        if h == 0:
            stacks["monitoring"] = ["prometheus", "alertmanager", "grafana"]
        vms.append({"name": f"docker-{h}", "vmid": 1000 + h, "node": f"pve{h % 4}", "role": "docker", "cores": 1,
                    "memory_mib": 512, "disk_gib": 8, "ip": f"10.{h // 250}.{h % 250}.10/16",
                    "stacks": stacks})  # fmt: skip
    vms.append({"name": "k3s", "vmid": 999, "node": "pve3", "role": "k3s", "cores": 2, "memory_mib": 2048,
                "disk_gib": 16, "ip": "10.9.0.10/16"})  # fmt: skip
    doc = {
        "name": "bench",
        "proxmox": {"endpoint": "https://10.0.0.1:8006", "token_id": "t", "token_secret": "file:secrets/pve",
                    "template": "debian"},
        "nodes": [{"name": f"pve{i}", "cores": 512, "memory_gib": 4096} for i in range(4)],
        "ssh": {"private_key": "file:secrets/key", "known_hosts": "known_hosts"},
        "vms": vms,
        "k3s": {"vm": "k3s", "version": "v1.31.4+k3s1"},
        "services": catalog,
        "monitoring": {"prometheus_host": "docker-0", "grafana_admin_password": "file:secrets/grafana"},
        "alerts": {"webhook": "file:secrets/hook"},
    }  # fmt: skip
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def baseline(inv: Inventory) -> str:
    """The same jobs and labelled targets as a plain dict, dumped with the same dumper."""
    jobs: dict[str, list[dict[str, Any]]] = {}
    for vm in inv.docker_hosts:
        for services in vm.stacks.values():
            for name in services:
                svc = inv.services[name]
                if svc.metrics and svc.ports:
                    port = svc.ports[0]
                    address = port.container if svc.network_mode == "host" else port.published
                    labels = {"platform": "compose", "node": vm.node, "host": vm.name, "service": name}
                    jobs.setdefault(name, []).append({"targets": [f"{vm.address}:{address}"], "labels": labels})
    doc = {"scrape_configs": [{"job_name": j, "static_configs": t} for j, t in sorted(jobs.items())]}
    return dump(doc)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--services", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = parameters(folder, args.hosts, args.services)
        load_s = timed(lambda: load_inventory(path))
        inv = load_inventory(path)
        rendered = monitoring.render(inv)
        counts = f"{len(rendered.targets)} targets, {len(rendered.files)} files"
        print(f"inventory: {args.hosts} Docker hosts, {args.services} services with metrics; {counts}; "
              f"load+validate {load_s:.3f} s")  # fmt: skip
        ours: list[float] = []
        base: list[float] = []
        for i in range(args.runs):
            pair = [("render", lambda: monitoring.render(inv), ours), ("baseline", lambda: baseline(inv), base)]
            for _name, fn, out in pair if i % 2 == 0 else reversed(pair):
                out.append(timed(fn))
        mo, mb = statistics.median(ours), statistics.median(base)
        print(f"render (targets, prometheus.yml, rules, alertmanager.yml, Grafana): median {mo:.3f} s of {args.runs} "
              f"(target <= 1 s); baseline (same scrape config as a plain dict, same dumper): median {mb:.3f} s; "
              f"ratio {mo / mb:.1f}x")  # fmt: skip
        out = folder / "out"
        rendered.write(out, with_secrets=True)
        checks = []
        for _ in range(3):
            start = time.perf_counter()
            done = subprocess.run(["promtool", "check", "config", "prometheus.yml"], cwd=out / "prometheus",
                                  capture_output=True, text=True)  # fmt: skip
            checks.append(time.perf_counter() - start)
            if done.returncode:
                sys.exit(f"promtool rejected the render:\n{done.stdout}{done.stderr}")
        print(f"promtool check config (with rules), separately: median {statistics.median(checks):.3f} s of 3")
        check_s = timed(lambda: monitoring.check(rendered))
        print(f"monitoring.check (promtool config + rules, amtool; files written to tmp): {check_s:.3f} s")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
