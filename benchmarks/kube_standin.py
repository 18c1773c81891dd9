"""The K3s stand-in under kubectl: server-side apply of 200 objects, rollout status of 20 Deployments.

Each figure is printed beside a ``kubectl get --raw /version`` round trip measured in the same run
(the cost of starting kubectl and one TLS request), with the machine's cores and load average.
Target: the 200 objects in <= 5 s on 2 cores.

    .venv/bin/python benchmarks/kube_standin.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# The tests' helpers start the stand-in and clean up after it.
from tests.kube_fixtures import (
    IMAGE,
    _build_test_image,
    remove_engine_leftovers,
    start_standin,
    stop_standin,
)

ADDRESS = "127.0.9.30"


def objects(n: int, deployments: int) -> list[dict[str, object]]:
    out: list[dict[str, object]] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}]
    for i in range(n - deployments):
        if i % 2:
            out.append(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": f"cm-{i}", "namespace": "bench"},
                    "data": {"key": f"value-{i}", "other": "x" * 64},
                }
            )
        else:
            out.append(
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": f"svc-{i}", "namespace": "bench"},
                    "spec": {"selector": {"app": f"d-{i % deployments}"}, "ports": [{"port": 80}]},
                }
            )
    for i in range(deployments):
        labels = {"app": f"d-{i}"}
        out.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": f"d-{i}", "namespace": "bench"},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {"containers": [{"name": "web", "image": IMAGE, "ports": [{"containerPort": 80}]}]},
                    },
                },
            }
        )
    return out


def timed(cmd: list[str], env: dict[str, str], stdin: str | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, input=stdin, env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def main() -> None:
    client = docker.from_env()
    built = False
    try:
        client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        _build_test_image(client)
        built = True
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        proc, kubeconfig = start_standin(data, ADDRESS, "--disable", "traefik")
        env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        kubectl = ["kubectl", f"--cache-dir={data / 'cache'}"]
        try:
            raw = [timed([*kubectl, "get", "--raw", "/version"], env) for _ in range(5)]
            base = statistics.median(raw)
            stream = yaml.safe_dump_all(objects(200, 20))
            apply = timed([*kubectl, "apply", "--server-side", "-f", "-"], env, stream)
            again = timed([*kubectl, "apply", "--server-side", "-f", "-"], env, stream)
            start = time.perf_counter()
            for i in range(20):
                subprocess.run(
                    [*kubectl, "rollout", "status", f"deployment/d-{i}", "-n", "bench", "--timeout=120s"],
                    env=env,
                    check=True,
                    capture_output=True,
                )
            rollout = time.perf_counter() - start
        finally:
            stop_standin(proc)
            remove_engine_leftovers(data)
    if built:
        client.images.remove(IMAGE, force=True)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"cores: {os.cpu_count()}   load average: {load}")
    print(f"kubectl get --raw /version (median of 5)          {base:6.2f} s   (baseline)")
    print(
        f"kubectl apply --server-side, 200 objects            {apply:6.2f} s   ({apply / base:5.1f}x baseline; "
        "target <= 5 s)"
    )
    print(f"  the same again (no change)                        {again:6.2f} s   ({again / base:5.1f}x baseline)")
    print(f"rollout status of 20 Deployments (after apply)      {rollout:6.2f} s   ({rollout / base:5.1f}x baseline)")


if __name__ == "__main__":
    main()
