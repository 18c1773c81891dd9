"""Converted manifests applied for real: kubectl server-side apply to a Kubernetes API, pods in a Docker Engine.

The API is the stand-in K3s (``python -m homelab_lab.kube server``) started here on 127.0.20.1
(this test's own address, apart from the lab's and the kube tests'), running pods in the local
Docker Engine; its local-path claims bind to real folders. The compose file's service waits for
its dependency's readiness, reads its settings from a ConfigMap and its token from a Secret, and
keeps data in its PVC. (The stand-in does not run init containers: that the wait works is for a
real K3s; here the pod is checked to carry it.)
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest

from homelab_lib.migrate import convert_compose, parse_compose
from tests.kube_fixtures import IMAGE, Kube, standin_cluster, wait_for

ADDRESS = "127.0.20.1"

COMPOSE = f"""
services:
  web_app:
    image: {IMAGE}
    expose: ["80"]
    environment:
      GREETING: hello
      API_TOKEN: token-value-5f4e3d
    volumes:
      - web_data:/data
    healthcheck:
      test: ["CMD-SHELL", "wget -q -O /dev/null http://localhost:80/ || exit 1"]
      interval: 2s
      timeout: 2s
      retries: 3
    restart: unless-stopped
  client:
    image: {IMAGE}
    command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
    expose: ["8080"]
    depends_on:
      web_app:
        condition: service_healthy
    restart: unless-stopped
volumes:
  web_data:
"""


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    with standin_cluster(tmp_path_factory, ADDRESS, "k3s-convert") as cluster:
        yield cluster


def test_converted_services_apply_roll_out_and_keep_their_settings(kube: Kube) -> None:
    conversions = convert_compose(parse_compose(COMPOSE), namespace="converted", wait_image=IMAGE)
    by_name = {c.service: c for c in conversions}
    stream = "".join(f"---\n{c.yaml()}" for c in conversions)
    kube.kubectl("apply", "--server-side", "--field-manager", "homelab", "-f", "-", stdin=stream)

    def ready(name: str) -> bool:
        d = kube.json("get", "deployment", name, "-n", "converted")
        return bool(d.get("status", {}).get("readyReplicas") == 1)

    wait_for("web-app ready", lambda: ready("web-app"), timeout=120)
    wait_for("client ready (after its init container saw web-app ready)", lambda: ready("client"), timeout=120)

    # the claim the data copy fills is bound, to a real folder
    plan = by_name["web_app"].pvcs[0]
    claim = kube.json("get", "pvc", plan.pvc, "-n", "converted")
    assert claim["status"]["phase"] == "Bound"
    assert claim["spec"]["storageClassName"] == "local-path"

    # the settings: GREETING from the ConfigMap, API_TOKEN from the Secret, never the other way round
    cm = kube.json("get", "configmap", "web-app-env", "-n", "converted")
    assert cm["data"] == {"GREETING": "hello"}
    secret = kube.json("get", "secret", "web-app-env", "-n", "converted")
    assert base64.b64decode(secret["data"]["API_TOKEN"]).decode() == "token-value-5f4e3d"

    # the Service of a service without published ports exists, and selects the ready pod
    svc = kube.json("get", "service", "web-app", "-n", "converted")
    assert [(p["port"], p["protocol"]) for p in svc["spec"]["ports"]] == [(80, "TCP")]
    pods = kube.json("get", "pods", "-n", "converted", "-l", "app.kubernetes.io/instance=web-app")["items"]
    assert len(pods) == 1
    assert pods[0]["spec"]["containers"][0]["readinessProbe"]["exec"]["command"][:2] == ["/bin/sh", "-c"]

    # the client's pod carries the init container that waits for web-app's Service (the stand-in
    # does not run init containers: a real K3s does, see test_convert.py for what it runs)
    client_pod = kube.json("get", "pods", "-n", "converted", "-l", "app.kubernetes.io/instance=client")["items"][0]
    assert [c["name"] for c in client_pod["spec"]["initContainers"]] == ["wait-for-web-app"]

    # a second apply of the same manifests changes nothing (the converter is deterministic)
    again = convert_compose(parse_compose(COMPOSE), namespace="converted", wait_image=IMAGE)
    assert json.dumps([c.objects for c in again], sort_keys=True) == json.dumps(
        [c.objects for c in conversions], sort_keys=True
    )
    before = kube.json("get", "deployment", "web-app", "-n", "converted")["metadata"]["generation"]
    kube.kubectl("apply", "--server-side", "--field-manager", "homelab", "-f", "-", stdin=stream)
    assert kube.json("get", "deployment", "web-app", "-n", "converted")["metadata"]["generation"] == before
