"""The stand-in itself: the k3s command, its files, restarts, tokens, and K3s's controllers.

The first tests start their own servers (127.0.9.15, no container engine) and are stand-in only;
the workload tests use the session's server (and run against a real K3s too, except where noted).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kube_fixtures import (
    ADDRESS,
    IMAGE,
    REAL,
    STANDIN_ONLY,
    Kube,
    start_standin,
    stop_standin,
    validated,
    wait_for,
)

OWN = "127.0.9.15"
standin_only = pytest.mark.skipif(bool(REAL), reason=STANDIN_ONLY)


def k3s(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "homelab_lab.kube", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
        check=False,
    )


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
    )


@standin_only
def test_k3s_version_prints_as_k3s_does() -> None:
    out = k3s("--version")
    assert out.returncode == 0
    assert out.stdout == "k3s version v1.31.4+k3s1 (a562d090)\ngo version go1.22.9\n"
    other = k3s("--version", env={"HOMELAB_K3S_VERSION": "v1.32.1+k3s1"}).stdout
    assert other.startswith("k3s version v1.32.1+k3s1 (")


@standin_only
def test_restart_keeps_every_object_and_resource_versions_increase(tmp_path: Path) -> None:
    proc, kc = start_standin(tmp_path, OWN, "--disable", "traefik", "--token", "s3cret", runtime="none")
    try:
        mode = stat.S_IMODE(kc.stat().st_mode)
        assert mode == 0o600
        cfg = yaml.safe_load(kc.read_text())
        assert cfg["clusters"][0]["name"] == cfg["users"][0]["name"] == cfg["contexts"][0]["name"] == "default"
        assert cfg["clusters"][0]["cluster"]["server"] == f"https://{OWN}:6443"
        assert (tmp_path / "server" / "token").read_text().strip().endswith("::server:s3cret")
        body = validated(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "keep"}},
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "kept", "namespace": "keep"},
                "data": {"a": "1"},
            },
        )
        assert kubectl(kc, "apply", "--server-side", "-f", "-", stdin=body).returncode == 0
        before = json.loads(kubectl(kc, "get", "cm", "kept", "-n", "keep", "-o", "json").stdout)
        assert kubectl(kc, "get", "deploy", "traefik", "-n", "kube-system").returncode == 1  # disabled
        assert kubectl(kc, "get", "deploy", "coredns", "-n", "kube-system").returncode == 0
    finally:
        stop_standin(proc)
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "homelab_lab.kube",
            "server",
            "--data-dir",
            str(tmp_path),
            "--bind-address",
            OWN,
            "--token",
            "other",
            "--write-kubeconfig",
            str(kc),
            "--config",
            str(tmp_path / "config.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 1
    assert "bootstrap data already found and encrypted with different token" in refused.stderr
    proc, kc = start_standin(tmp_path, OWN, "--disable", "traefik", "--token", "s3cret", runtime="none")
    try:
        after = json.loads(kubectl(kc, "get", "cm", "kept", "-n", "keep", "-o", "json").stdout)
        assert after["metadata"]["uid"] == before["metadata"]["uid"]
        assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
        assert after["data"] == {"a": "1"}
        patched = kubectl(kc, "patch", "cm", "kept", "-n", "keep", "-p", '{"data":{"a":"2"}}', "-o", "json")
        rv = int(json.loads(patched.stdout)["metadata"]["resourceVersion"])
        assert rv > int(before["metadata"]["resourceVersion"])
    finally:
        stop_standin(proc)


@standin_only
def test_without_an_engine_pods_stay_pending_saying_why(tmp_path: Path) -> None:
    proc, kc = start_standin(tmp_path, OWN, runtime="none")
    try:
        pod = validated(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "idle", "namespace": "default"},
                "spec": {"containers": [{"name": "c", "image": IMAGE}]},
            }
        )
        kubectl(kc, "apply", "--server-side", "-f", "-", stdin=pod)

        def waiting() -> str:
            p = json.loads(kubectl(kc, "get", "pod", "idle", "-o", "json").stdout)
            states = p["status"].get("containerStatuses") or [{}]
            return str((states[0].get("state") or {}).get("waiting", {}).get("message", ""))

        assert "no container runtime" in wait_for("the waiting message", waiting, 30)
        assert json.loads(kubectl(kc, "get", "pod", "idle", "-o", "json").stdout)["status"]["phase"] == "Pending"
    finally:
        stop_standin(proc)


# ---------------------------------------------------------------- K3s behaviour on the session's server


def test_job_completes_and_a_failing_job_fails(kube: Kube, ns: str) -> None:
    def job(name: str, command: str, backoff: int) -> dict[str, Any]:
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "backoffLimit": backoff,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "j", "image": IMAGE, "command": ["sh", "-c", command]}],
                    }
                },
            },
        }

    kube.kubectl(
        "apply", "--server-side", "-f", "-", stdin=validated(job("ok", "echo done", 0), job("bad", "exit 3", 1))
    )
    kube.kubectl("wait", "--for=condition=Complete", "job/ok", "-n", ns, "--timeout=90s")
    kube.kubectl("wait", "--for=condition=Failed", "job/bad", "-n", ns, "--timeout=90s")
    bad = kube.json("get", "job", "bad", "-n", ns)
    failed = next(c for c in bad["status"]["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "BackoffLimitExceeded"
    assert bad["status"]["failed"] == 2
    logs = kube.kubectl("logs", "job/ok", "-n", ns, check=False).stdout
    assert "done" in logs


@standin_only
def test_helmchart_runs_its_install_job_and_again_on_a_values_change(kube: Kube, ns: str) -> None:
    def chart(name: str, values: str) -> dict[str, Any]:
        return {
            "apiVersion": "helm.cattle.io/v1",
            "kind": "HelmChart",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "chart": name,
                "repo": "https://charts.example.org",
                "version": "1.0.0",
                "targetNamespace": ns,
                "valuesContent": values,
            },
        }

    kube.kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all([chart("good", "a: 1\n")]))
    kube.kubectl("wait", "--for=condition=Complete", "job/helm-install-good", "-n", ns, "--timeout=90s")
    first = kube.json("get", "job", "helm-install-good", "-n", ns)["metadata"]["uid"]
    kube.kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all([chart("good", "a: 2\n")]))
    wait_for(
        "a new install job",
        lambda: kube.json("get", "job", "helm-install-good", "-n", ns)["metadata"]["uid"] != first,
        60,
    )
    kube.kubectl("wait", "--for=condition=Complete", "job/helm-install-good", "-n", ns, "--timeout=90s")
    kube.kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all([chart("broken-chart", "")]))

    def crashing() -> bool:
        pods = kube.json("get", "pods", "-n", ns, "-l", "helmcharts.helm.cattle.io/chart=broken-chart")["items"]
        return any(
            cs.get("restartCount", 0) > 0 or "terminated" in (cs.get("lastState") or {})
            for p in pods
            for cs in p["status"].get("containerStatuses") or []
        )

    wait_for("the broken chart's install to fail", crashing, 90)
    job = kube.json("get", "job", "helm-install-broken-chart", "-n", ns)
    assert not any(c["type"] == "Complete" for c in job["status"].get("conditions") or [])


@standin_only
def test_ingress_routes_by_host_to_ready_pods(kube: Kube, ns: str) -> None:
    host = f"{ns}.lab.test"
    objs = [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "site", "namespace": ns},
            "spec": {
                "selector": {"matchLabels": {"app": "site"}},
                "template": {
                    "metadata": {"labels": {"app": "site"}},
                    "spec": {"containers": [{"name": "web", "image": IMAGE, "ports": [{"containerPort": 80}]}]},
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "site", "namespace": ns},
            "spec": {"selector": {"app": "site"}, "ports": [{"port": 8080, "targetPort": 80}]},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "site", "namespace": ns},
            "spec": {
                "rules": [
                    {
                        "host": host,
                        "http": {
                            "paths": [
                                {
                                    "path": "/",
                                    "pathType": "Prefix",
                                    "backend": {"service": {"name": "site", "port": {"number": 8080}}},
                                }
                            ]
                        },
                    }
                ]
            },
        },
    ]
    kube.kubectl("apply", "--server-side", "-f", "-", stdin=validated(*objs))
    kube.kubectl("rollout", "status", "deployment/site", "-n", ns, "--timeout=60s")

    def fetch() -> str:
        req = urllib.request.Request(f"http://{ADDRESS}/index.html", headers={"Host": host})
        with urllib.request.urlopen(req, timeout=5) as r:
            return str(r.read().decode())

    assert wait_for("the ingress to answer", fetch, 30) == "hello\n"
    eps = kube.json("get", "endpoints", "site", "-n", ns)
    assert eps["subsets"][0]["ports"][0]["port"] == 80
    assert kube.json("get", "ingress", "site", "-n", ns)["status"]["loadBalancer"]["ingress"][0]["ip"] == ADDRESS


def test_statefulset_has_ordinal_pods_with_their_claims(kube: Kube, ns: str) -> None:
    sts = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": ns},
        "spec": {
            "serviceName": "db",
            "replicas": 2,
            "selector": {"matchLabels": {"app": "db"}},
            "template": {
                "metadata": {"labels": {"app": "db"}},
                "spec": {
                    "containers": [
                        {"name": "db", "image": IMAGE, "volumeMounts": [{"name": "data", "mountPath": "/data"}]}
                    ]
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "64Mi"}}},
                }
            ],
        },
    }
    kube.kubectl("apply", "--server-side", "-f", "-", stdin=validated(sts))
    kube.kubectl("rollout", "status", "statefulset/db", "-n", ns, "--timeout=90s")
    pods = sorted(p["metadata"]["name"] for p in kube.json("get", "pods", "-n", ns, "-l", "app=db")["items"])
    assert pods == ["db-0", "db-1"]
    claims = {c["metadata"]["name"]: c["status"]["phase"] for c in kube.json("get", "pvc", "-n", ns)["items"]}
    assert claims == {"data-db-0": "Bound", "data-db-1": "Bound"}


def test_crashing_container_goes_to_crash_loop_backoff(kube: Kube, ns: str) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "crash", "namespace": ns},
        "spec": {"containers": [{"name": "c", "image": IMAGE, "command": ["sh", "-c", "exit 2"]}]},
    }
    kube.kubectl("apply", "--server-side", "-f", "-", stdin=validated(pod))

    def reason() -> str:
        cs = (kube.json("get", "pod", "crash", "-n", ns)["status"].get("containerStatuses") or [{}])[0]
        return str(((cs.get("state") or {}).get("waiting") or {}).get("reason", ""))

    assert wait_for("CrashLoopBackOff", lambda: reason() == "CrashLoopBackOff", 90)
    kube.kubectl("delete", "pod", "crash", "-n", ns, "--timeout=60s")
    time.sleep(0.5)
    if kube.standin:
        import docker

        client = docker.from_env()
        left = client.containers.list(all=True, filters={"label": f"io.kubernetes.pod.namespace={ns}"})
        names = [c.name for c in left if "_crash_" in c.name]
        client.close()
        assert names == [], "deleting a pod removes its container"
