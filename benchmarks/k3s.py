"""Runbooks 03 and 04: the no-change re-run, measured in one run (printed, never asserted).

1. Runbook 04's no-change re-run for all K3s services (desired with validation, observe, plan,
   apply with nothing to do, verify with the Ingress probes), against a like-with-like baseline
   measured in the same run: one GET per object with the same kubernetes client, which is the
   least any tool must do to know nothing changed. Rounds alternate which goes first; medians and
   their ratio are printed. Target (issue 10): the re-run of 04 <= 3 s beyond kernel start.
2. Runbook 03's no-change re-run (SSH connect, k3s --version, config.yaml, systemctl, kubeconfig,
   API, plan, verify) against its baseline: SSH connect plus ``k3s --version``.
3. The whole notebooks under ``homelab run`` (this interpreter's), so the kernel's share shows.

Needs the lab up with 03 and 04 applied (``homelab run notebooks/03_bootstrap_k3s.ipynb -p confirm true``,
then 04 the same way).

    .venv/bin/python benchmarks/k3s.py [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from homelab_lib import clients
from homelab_lib.core import contract
from homelab_lib.hosts.docker import DockerHost
from homelab_lib.inventory import Inventory, load_inventory
from homelab_lib.k3s import K3sBootstrap, services
from homelab_lib.kube import Kube, key

REPO = Path(__file__).resolve().parent.parent
LAB = REPO / "parameters" / "lab.yaml"


def rerun_04(inv: Inventory) -> None:
    with closing(services.adapter(inv)) as runbook:
        done = contract.run(runbook, confirm=True)
    if not done.plan.empty or done.result.applied:
        raise SystemExit("04 is not applied: run it with confirm first")


def gets_04(inv: Inventory) -> None:
    assert inv.k3s is not None
    assert inv.k3s.kubeconfig is not None
    desired = services.desired_services(inv)
    kube = Kube(inv.k3s.kubeconfig, where="bench")
    for obj in desired.objects:
        kube.get(key(obj))
    kube.api.close()  # type: ignore[no-untyped-call]


def rerun_03(inv: Inventory) -> None:
    with closing(K3sBootstrap(inv)) as runbook:
        done = contract.run(runbook, confirm=True)
    if not done.plan.empty:
        raise SystemExit("03 is not applied: run it with confirm first")


def ssh_version_03(inv: Inventory) -> None:
    assert inv.k3s is not None
    with DockerHost.open(clients.ssh_target(inv, inv.k3s.vm)) as host:
        host.run("k3s --version")


def timed(fn: Callable[[Inventory], None], inv: Inventory) -> float:
    start = time.perf_counter()
    fn(inv)
    return time.perf_counter() - start


def pair(name: str, ours: Callable[[Inventory], None], base: Callable[[Inventory], None], inv: Inventory,
         runs: int) -> None:  # fmt: skip
    ours(inv), base(inv)  # warm-up: discovery caches, imports
    a: list[float] = []
    b: list[float] = []
    for i in range(runs):
        first, second = ((ours, a), (base, b)) if i % 2 == 0 else ((base, b), (ours, a))
        first[1].append(timed(first[0], inv))
        second[1].append(timed(second[0], inv))
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"{name}: re-run median {ma:.3f} s, baseline median {mb:.3f} s, ratio {ma / mb:.1f}x "
          f"(min {min(a):.3f} / {min(b):.3f} s, {runs} rounds)")  # fmt: skip


def notebook(path: str) -> None:
    env = {**os.environ, "HOMELAB_HEADLESS": "1"}
    times = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run(
            [str(Path(sys.executable).parent / "homelab"), "run", path, "-p", "confirm", "true"],
            cwd=REPO, env=env, check=True, capture_output=True,
        )  # fmt: skip
        times.append(time.perf_counter() - start)
    print(f"homelab run {path} (no change): median {statistics.median(times):.2f} s of 3, kernel start included")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--notebooks", action="store_true", help="also time the notebooks under homelab run")
    args = parser.parse_args()
    inv = load_inventory(LAB)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    pair("04 (all K3s services)", rerun_04, gets_04, inv, args.runs)
    pair("03 (bootstrap)", rerun_03, ssh_version_03, inv, args.runs)
    if args.notebooks:
        notebook("notebooks/03_bootstrap_k3s.ipynb")
        notebook("notebooks/04_deploy_k3s_services.ipynb")
    return 0


if __name__ == "__main__":
    sys.exit(main())
