"""Runbook 02's figures, measured in one run (printed, never asserted).

1. Like with like: what a no-change re-run of 02 needs to know that nothing changed
   (SSH to each Docker VM, observe with the docker SDK, plan) against
   ``docker compose ps`` for the same projects over the same SSH hosts (connect, then
   one ``docker compose -p PROJECT ps`` per project, hosts in parallel). Rounds
   alternate which goes first; medians and their ratio are printed (target: <= 2x).
   Then, separately: the whole library re-run (render, validate, observe, plan, a
   deploy with nothing to do, verify and probe through the proxy), and the whole
   notebook under ``homelab run`` (the running interpreter's), so the kernel's and
   papermill's share shows.
2. Render + validate of 50 services (10 stacks of 5 on three hosts):
   medians of each part (target: <= 2 s).

Needs the lab up with the stacks deployed (``homelab lab up``, then
``homelab run notebooks/02_deploy_compose_core.ipynb -f parameters/lab.yaml -p confirm true``).

    .venv/bin/python benchmarks/compose.py [--runs 7]
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
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from homelab_lib import clients, compose
from homelab_lib.core import contract
from homelab_lib.inventory import Inventory, load_inventory

REPO = Path(__file__).resolve().parent.parent
DESIRED: dict[str, Any] = {}  # rendered once: the like-with-like figure compares observing, not rendering
LAB = REPO / "parameters" / "lab.yaml"
EXAMPLE = REPO / "parameters" / "example.yaml"


def deploy_02(inv: Inventory, local: tuple[str, ...]) -> None:
    """Bring the lab's stacks to their rendered state (a first run of 02), so the re-runs have nothing to do."""
    with closing(compose.ComposeAdapter(inv, local_compose=local)) as runbook:
        contract.run(runbook, confirm=True)


def observe_plan(inv: Inventory, local: tuple[str, ...]) -> None:
    """What tells a re-run that nothing changed: connect to every host, observe, plan (desired is rendered apart)."""
    with closing(compose.ComposeAdapter(inv, local_compose=local)) as runbook:
        desired = DESIRED.setdefault(inv.name, runbook.desired())
        plan = runbook.plan(desired, runbook.observe(desired))
    if not plan.empty:
        raise SystemExit("the lab's stacks are not deployed as rendered: run 02 with confirm first")


def rerun_02(inv: Inventory, local: tuple[str, ...]) -> None:
    """What a no-change run of the notebook does, without the kernel: the contract's five steps."""
    with closing(compose.ComposeAdapter(inv, local_compose=local)) as runbook:
        done = contract.run(runbook, confirm=True)  # verify raises if anything is not healthy as rendered
        if not done.plan.empty or done.result.outcomes:
            raise SystemExit("the lab's stacks are not deployed as rendered: run 02 with confirm first")


def compose_ps(inv: Inventory, projects: list[compose.Project]) -> None:
    """`docker compose -p PROJECT ps` for every project, over fresh SSH connections, hosts in parallel."""

    def host_ps(host: str) -> None:
        with compose.DockerHost.open(clients.ssh_target(inv, host)) as h:
            for p in projects:
                if p.host == host:
                    done = h.run(f"docker compose -p {p.name} ps")
                    assert done.ok, done.stderr

    names = compose.hosts_of(projects)
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        list(pool.map(host_ps, names))


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def fifty_services(folder: Path) -> Inventory:
    """example.yaml with its stacks replaced by 10 stacks of 5 user-defined services."""
    yaml = YAML(typ="safe")
    data = yaml.load(EXAMPLE.read_text())
    services: dict[str, Any] = {}
    docker_vms = [vm for vm in data["vms"] if vm["role"] == "docker"]
    for vm in docker_vms:
        vm["stacks"] = {}
    for i in range(50):
        name = f"svc{i:02d}"
        services[name] = {
            "image": f"docker.io/library/nginx:1.27.{i % 4}",
            "platforms": ["compose"],
            "ports": [{"container": 80, "host": 20000 + i}],
            "health": "/",
            "volumes": {"data": "/data"},
            "environment": {"TZ": "Etc/UTC", "INDEX": str(i)},
            "healthcheck": {"test": ["CMD", "wget", "-q", "-O", "/dev/null", "http://localhost/"]},
            "resources": {"memory_mib": 128, "cpus": 0.5},
            "proxy": name,
        }
        vm = docker_vms[(i // 5) % len(docker_vms)]
        vm["stacks"].setdefault(f"stack{i // 5:02d}", []).append(name)
    data["services"] = services
    path = folder / "fifty.yaml"
    with path.open("w") as f:
        yaml.dump(data, f)
    return load_inventory(path)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(argv)
    local = clients.local_compose()
    inv = load_inventory(LAB)
    projects = compose.render(inv)

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} cores, load average {load}")
    deploy_02(inv, local)  # the first run: deploys whatever is missing
    rerun_02(inv, local)  # warm: imports, schema, page cache
    compose_ps(inv, projects)
    ours, ps, whole_lib = [], [], []
    for i in range(args.runs):
        pair = [("ours", lambda: observe_plan(inv, local)), ("ps", lambda: compose_ps(inv, projects))]
        for name, fn in pair if i % 2 == 0 else reversed(pair):
            (ours if name == "ours" else ps).append(timed(fn))
        whole_lib.append(timed(lambda: rerun_02(inv, local)))
    m_ours, m_ps = statistics.median(ours), statistics.median(ps)
    hosts = len(compose.hosts_of(projects))
    services = sum(len(p.services) for p in projects)
    print(
        f"observe + plan of a no-change re-run ({services} services, {len(projects)} stacks, {hosts} hosts): "
        f"median {m_ours:.3f} s"
    )
    print(f"docker compose ps over the same SSH hosts ({len(projects)} projects): median {m_ps:.3f} s")
    print(f"ratio observe+plan / compose ps: {m_ours / m_ps:.2f}x (target <= 2x; {args.runs} alternating rounds)")
    print(
        f"the whole library re-run (render, validate, observe, plan, no-op deploy, verify, probes): "
        f"median {statistics.median(whole_lib):.3f} s"
    )

    with tempfile.TemporaryDirectory() as tmp:
        argv_run = [
            str(Path(sys.executable).with_name("homelab")),
            "run",
            str(REPO / "notebooks" / "02_deploy_compose_core.ipynb"),
            "-f",
            str(LAB),
            "-p",
            "confirm",
            "true",
            "--archive",
            tmp,
            "--quiet",
        ]
        whole = timed(lambda: subprocess.run(argv_run, check=True, capture_output=True))
    print(f"the whole notebook under `homelab run` (kernel, papermill, archive), once: {whole:.2f} s")
    print(f"machine after the runs: load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}")

    with tempfile.TemporaryDirectory() as tmp:
        big = fifty_services(Path(tmp))
        n = sum(len(s) for vm in big.docker_hosts for s in vm.stacks.values())
        renders, validates = [], []
        for _ in range(5):
            t0 = time.perf_counter()
            rendered = compose.render(big)
            t1 = time.perf_counter()
            compose.validate(rendered, local)
            t2 = time.perf_counter()
            renders.append(t1 - t0)
            validates.append(t2 - t1)
        r, v = statistics.median(renders), statistics.median(validates)
        print(
            f"render + validate of {n} services ({len(rendered)} projects): median {r + v:.3f} s "
            f"(render {r:.3f} s, validate {v:.3f} s; target <= 2 s)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
