"""pytest plugin: a Kubernetes API to test against, and the kubectl/client helpers the kube tests share.

By default a stand-in K3s (``python -m homelab_lab.kube server``) is started once per session on
127.0.9.14 with a tmp data dir, running pods in the local Docker Engine; set ``HOMELAB_TEST_KUBECONFIG``
(and, for a cluster that reaches no registry, ``HOMELAB_TEST_NODE_ENGINE``: the Docker Engine its node
pulls from, e.g. ``unix://.lab/vms/k3s-nappy/docker.sock`` for the lab's K3s, which gets the test image)
to run the same tests against a real cluster (K3s, k3d, kind) instead. Everything a session creates in
the engine (containers, the images it builds) is removed at its end.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ADDRESS = "127.0.9.14"
IMAGE = "nginx:1.27.3-alpine"  # a real image name: a real cluster pulls it, the stand-in's engine has a local build
MISSING = "nginx:0.0.0-missing"
TEST_LABEL = "homelab.lab.kube.test"
KUBECTL = os.environ.get("HOMELAB_TEST_KUBECTL", "kubectl")
KUBECTL_132 = "/usr/lib/google-cloud-sdk/bin/kubectl.1.32"
REAL = os.environ.get("HOMELAB_TEST_KUBECONFIG", "")
STANDIN_ONLY = "needs the stand-in's internals (its data dir, a restart); not run against HOMELAB_TEST_KUBECONFIG"


@dataclass
class Kube:
    """The cluster under test: its kubeconfig, and the stand-in's process and data dir (None for a real cluster)."""

    kubeconfig: Path
    cache: Path
    data_dir: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def standin(self) -> bool:
        return self.data_dir is not None

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True, binary: str = KUBECTL, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        cmd = [binary, f"--cache-dir={self.cache}", *args]
        done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=env, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def api_client(self) -> Any:
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))


def validated(*objs: dict[str, Any]) -> str:
    """The objects as a YAML stream, each first validated by kubernetes-validate for Kubernetes 1.31 (strict)."""
    import kubernetes_validate

    for obj in objs:
        kubernetes_validate.validate(obj, "1.31.0", strict=True)
    return yaml.safe_dump_all(list(objs), sort_keys=False)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0, every: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(AssertionError):
            last = check()
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def _build_test_image(client: Any) -> None:
    """IMAGE built locally: static busybox serving /www on :80, with sh for probes and commands."""
    from tests.backup_fixtures import build, busybox_files

    files = busybox_files(
        "mkdir -p /www /tmp /data && echo hello > /www/index.html", ["httpd", "-f", "-p", "80", "-h", "/www"]
    )
    build(client, IMAGE, files, {TEST_LABEL: "1"})


def start_standin(
    data_dir: Path, address: str, *extra: str, runtime: str = "docker"
) -> tuple[subprocess.Popen[bytes], Path]:
    """Start ``k3s server`` from this checkout; returns (process, kubeconfig) once /readyz answers."""
    kubeconfig = data_dir / "k3s.yaml"
    config = data_dir / "config.yaml"
    if not config.exists():
        config.write_text(
            yaml.safe_dump(
                {
                    "node-label": ["homelab.test/role=conformance"],
                    "lab-runtime": runtime,
                    "lab-broken-charts": ["broken-chart"],
                }
            )
        )
    argv = [
        sys.executable,
        "-m",
        "homelab_lab.kube",
        "server",
        "--config",
        str(config),
        "--data-dir",
        str(data_dir),
        "--bind-address",
        address,
        "--write-kubeconfig",
        str(kubeconfig),
        "--node-name",
        "kube-test",
        *extra,
    ]
    log = (data_dir / "server.log").open("ab")
    proc = subprocess.Popen(argv, stdout=log, stderr=log, cwd=Path(__file__).resolve().parent.parent)
    deadline = time.monotonic() + 60
    import requests

    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"k3s server exited {proc.returncode}:\n{(data_dir / 'server.log').read_text()[-3000:]}"
            )
        tls = data_dir / "server" / "tls"
        if kubeconfig.exists() and (tls / "client-admin.crt").exists():
            with contextlib.suppress(requests.RequestException):
                r = requests.get(
                    f"https://{address}:6443/readyz",
                    verify=str(tls / "server-ca.crt"),
                    cert=(str(tls / "client-admin.crt"), str(tls / "client-admin.key")),
                    timeout=2,
                )
                if r.status_code == 200:
                    return proc, kubeconfig
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("k3s server did not become ready in 60 s")


def stop_standin(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def remove_engine_leftovers(data_dir: Path) -> None:
    """Remove every container the stand-in of data_dir ran, and the images it (and the tests) built."""
    import docker

    from homelab_lab.kube.cli import instance_id
    from homelab_lab.kube.config import Config
    from homelab_lab.kube.runtime import LABEL

    client = docker.from_env()
    instance = instance_id(Config(data_dir=data_dir, node_name="kube-test"))
    for c in client.containers.list(all=True, filters={"label": f"{LABEL}={instance}"}):
        c.remove(force=True)
    for image in client.images.list(filters={"label": f"{LABEL}={instance}"}):
        with contextlib.suppress(docker.errors.APIError):
            client.images.remove(image.id, force=True)
    client.close()


@contextlib.contextmanager
def standin_cluster(tmp_path_factory: pytest.TempPathFactory, address: str, name: str) -> Iterator[Kube]:
    """A stand-in on ``address`` (data dir ``name``) running pods in the local Docker Engine, IMAGE built there
    if missing; at the end, what the stand-in ran and built (and IMAGE, if built here) leaves the engine."""
    import docker

    client = docker.from_env()
    built_here = False
    try:
        client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        _build_test_image(client)
        built_here = True
    data_dir = tmp_path_factory.mktemp(name)
    proc, kubeconfig = start_standin(data_dir, address)
    try:
        yield Kube(kubeconfig, tmp_path_factory.mktemp("kube-cache"), data_dir, proc)
    finally:
        stop_standin(proc)
        remove_engine_leftovers(data_dir)
        if built_here:
            with contextlib.suppress(docker.errors.APIError):
                image = client.images.get(IMAGE)
                if image.labels.get(TEST_LABEL) == "1":
                    client.images.remove(IMAGE, force=True)
        client.close()


@contextlib.contextmanager
def api_cluster(tmp_path_factory: pytest.TempPathFactory, address: str, name: str) -> Iterator[Kube]:
    """A module's own cluster for tests of the API alone: the real one of HOMELAB_TEST_KUBECONFIG, else a
    stand-in on ``address`` (data dir ``name``) with no container runtime and no traefik."""
    cache = tmp_path_factory.mktemp("kube-cache")
    if REAL:
        yield Kube(Path(REAL), cache)
        return
    data_dir = tmp_path_factory.mktemp(name)
    proc, kubeconfig = start_standin(data_dir, address, "--disable", "traefik", runtime="none")
    try:
        yield Kube(kubeconfig, cache, data_dir, proc)
    finally:
        stop_standin(proc)


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    """The cluster under test (a stand-in unless HOMELAB_TEST_KUBECONFIG names a real one)."""
    if REAL:
        engine = os.environ.get("HOMELAB_TEST_NODE_ENGINE")
        if engine:  # a cluster that reaches no registry (the lab's K3s): its node's engine gets the test image
            import docker

            node = docker.DockerClient(base_url=engine)
            try:
                node.images.get(IMAGE)
            except docker.errors.ImageNotFound:
                _build_test_image(node)
            node.close()
        yield Kube(Path(REAL), tmp_path_factory.mktemp("kube-cache"))
        return
    with standin_cluster(tmp_path_factory, ADDRESS, "k3s") as cluster:
        yield cluster


@pytest.fixture
def ns(kube: Kube) -> Iterator[str]:
    """A fresh namespace for one test, deleted after it."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    kube.kubectl(
        "apply",
        "--server-side",
        "-f",
        "-",
        stdin=validated({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
    )
    wait_for(
        "the default ServiceAccount",
        lambda: kube.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0,
        30,
    )
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)
