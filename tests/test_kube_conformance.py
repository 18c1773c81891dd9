"""Conformance of the Kubernetes API under test, through real clients: kubectl and the kubernetes client.

Runs against the lab's K3s stand-in (started by the ``kube`` fixture), or against a real cluster when
``HOMELAB_TEST_KUBECONFIG`` names its kubeconfig. Every object sent is first validated with
kubernetes-validate for Kubernetes 1.31.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

import pytest

from tests.kube_fixtures import IMAGE, KUBECTL_132, MISSING, REAL, Kube, validated, wait_for


def deployment(ns: str, name: str, image: str = IMAGE, replicas: int = 1, **spec: Any) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "web",
        "image": image,
        "ports": [{"containerPort": 80, "name": "http"}],
        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container]}},
            **spec,
        },
    }


def configmap(ns: str, name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}, "data": data}


# ---------------------------------------------------------------- kubectl


def test_kubectl_version_reports_the_server(kube: Kube) -> None:
    out = kube.json("version")
    server = out["serverVersion"]
    assert set(server) >= {
        "major",
        "minor",
        "gitVersion",
        "gitCommit",
        "gitTreeState",
        "buildDate",
        "goVersion",
        "compiler",
        "platform",
    }
    assert server["gitVersion"].startswith(f"v{server['major']}.{server['minor']}.")
    if not REAL:
        assert server["gitVersion"] == "v1.31.4+k3s1"
        assert server["minor"] == "31"


@pytest.mark.skipif(not os.path.exists(KUBECTL_132), reason=f"{KUBECTL_132} is not installed")
def test_plain_kubectl_132_applies_and_gets(kube: Kube, ns: str) -> None:
    body = validated(configmap(ns, "from-132", a="1"))
    kube.kubectl("apply", "--server-side", "-f", "-", stdin=body, binary=KUBECTL_132)
    out = kube.kubectl("get", "configmap", "from-132", "-n", ns, binary=KUBECTL_132).stdout
    assert out.split()[:3] == ["NAME", "DATA", "AGE"]
    assert "from-132" in out


def test_get_nodes_shows_a_ready_node(kube: Kube) -> None:
    out = kube.kubectl("get", "nodes").stdout.splitlines()
    assert out[0].split()[:5] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert any(" Ready " in f" {line} " for line in out[1:])
    nodes = kube.json("get", "nodes")["items"]
    ready = [c for c in nodes[0]["status"]["conditions"] if c["type"] == "Ready"]
    assert ready
    assert ready[0]["status"] == "True"
    assert nodes[0]["status"]["capacity"]["cpu"]


def test_apply_server_side_twice_changes_nothing(kube: Kube, ns: str) -> None:
    body = validated(configmap(ns, "settings", a="1", b="2"), deployment(ns, "twice"))
    first = kube.kubectl("apply", "--server-side", "-f", "-", stdin=body).stdout
    assert "serverside-applied" in first
    kube.kubectl("rollout", "status", "deployment/twice", "-n", ns, "--timeout=60s")  # status settles first
    before = {
        o["kind"]: o["metadata"] for o in kube.json("get", "configmap/settings", "deployment/twice", "-n", ns)["items"]
    }
    kube.kubectl("apply", "--server-side", "-f", "-", stdin=body)
    after = {
        o["kind"]: o["metadata"]
        for o in kube.json("get", "configmap/settings", "deployment/twice", "-n", ns, "--show-managed-fields")["items"]
    }
    for kind in ("ConfigMap", "Deployment"):
        assert after[kind]["resourceVersion"] == before[kind]["resourceVersion"], kind
    assert after["Deployment"]["generation"] == before["Deployment"]["generation"] == 1
    managers = [m["manager"] for m in after["ConfigMap"]["managedFields"]]
    assert managers == ["kubectl"]


def test_conflicting_manager_is_refused_then_forced(kube: Kube, ns: str) -> None:
    kube.kubectl("apply", "--server-side", "-f", "-", stdin=validated(configmap(ns, "owned", key="one")))
    other = validated(configmap(ns, "owned", key="two"))
    refused = kube.kubectl("apply", "--server-side", "--field-manager=intruder", "-f", "-", stdin=other, check=False)
    assert refused.returncode == 1
    assert 'conflict with "kubectl"' in refused.stderr
    assert ".data.key" in refused.stderr
    assert kube.json("get", "configmap", "owned", "-n", ns)["data"]["key"] == "one"
    kube.kubectl("apply", "--server-side", "--field-manager=intruder", "--force-conflicts", "-f", "-", stdin=other)
    cm = kube.json("get", "configmap", "owned", "-n", ns, "--show-managed-fields")
    assert cm["data"]["key"] == "two"
    owners = {m["manager"]: m["fieldsV1"] for m in cm["metadata"]["managedFields"]}
    assert "f:key" in owners["intruder"]["f:data"]
    assert "f:key" not in owners.get("kubectl", {}).get("f:data", {})


def test_rollout_status_and_wait_follow_the_deployment(kube: Kube, ns: str) -> None:
    kube.kubectl("apply", "--server-side", "-f", "-", stdin=validated(deployment(ns, "web", replicas=2)))
    out = kube.kubectl("rollout", "status", "deployment/web", "-n", ns, "--timeout=60s").stdout
    assert 'deployment "web" successfully rolled out' in out
    pods = kube.json("get", "pods", "-n", ns, "-l", "app=web")["items"]
    assert len(pods) == 2
    name = pods[0]["metadata"]["name"]
    done = kube.kubectl("wait", "--for=condition=Ready", f"pod/{name}", "-n", ns, "--timeout=60s").stdout
    assert "condition met" in done
    d = kube.json("get", "deployment", "web", "-n", ns)
    assert d["status"]["observedGeneration"] == d["metadata"]["generation"]
    assert d["status"]["availableReplicas"] == d["status"]["updatedReplicas"] == 2
    assert {c["type"]: c["status"] for c in d["status"]["conditions"]} == {"Available": "True", "Progressing": "True"}


def writer(ns: str, text: str) -> dict[str, Any]:
    """Pod ``writer``: writes ``text`` into /data/proof.txt of the claim ``data``, then waits."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "writer", "namespace": ns},
        "spec": {
            "containers": [
                {
                    "name": "w",
                    "image": IMAGE,
                    "command": ["sh", "-c", f"echo {text} > /data/proof.txt && sleep 3600"],
                    "volumeMounts": [{"name": "d", "mountPath": "/data"}],
                }
            ],
            "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}],
        },
    }


def test_pvc_binds_when_a_pod_uses_it(kube: Kube, ns: str) -> None:
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": ns},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "64Mi"}}},
    }
    kube.kubectl("apply", "--server-side", "-f", "-", stdin=validated(pvc))
    rows = kube.kubectl("get", "pvc", "-n", ns).stdout.splitlines()
    assert rows[0].split()[:2] == ["NAME", "STATUS"]
    assert rows[1].split()[1] == "Pending"
    kube.kubectl("apply", "--server-side", "-f", "-", stdin=validated(writer(ns, "written-by-the-pod")))
    kube.kubectl("wait", "--for=condition=Ready", "pod/writer", "-n", ns, "--timeout=90s")
    bound = kube.json("get", "pvc", "data", "-n", ns)
    assert bound["status"]["phase"] == "Bound"
    assert kube.kubectl("get", "pvc", "-n", ns).stdout.splitlines()[1].split()[1] == "Bound"
    if kube.standin:
        assert kube.data_dir is not None
        volume = bound["spec"]["volumeName"]
        folder = kube.data_dir / "storage" / f"{volume}_{ns}_data"
        assert wait_for("the pod's file", lambda: (folder / "proof.txt").exists())
        assert (folder / "proof.txt").read_text() == "written-by-the-pod\n"


def test_a_claim_that_names_its_volume_binds_to_it_and_nothing_is_provisioned(kube: Kube, ns: str) -> None:
    folder = tempfile.mkdtemp(prefix=f"homelab-pv-{ns}-")  # on the node: the stand-in's is this machine
    os.chmod(folder, 0o777)
    pv_name = f"static-{ns}"
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": pv_name},
        "spec": {
            "capacity": {"storage": "64Mi"},
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "",
            "persistentVolumeReclaimPolicy": "Retain",
            "hostPath": {"path": folder, "type": "DirectoryOrCreate"},
        },
    }
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": ns},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "",
            "volumeName": pv_name,
            "resources": {"requests": {"storage": "64Mi"}},
        },
    }
    try:
        # the pod at once: no provisioner may race the binding
        for obj in (pv, pvc, writer(ns, "into-the-named-volume")):
            kube.kubectl("apply", "--server-side", "-f", "-", stdin=validated(obj))
        kube.kubectl("wait", "--for=condition=Ready", "pod/writer", "-n", ns, "--timeout=90s")
        bound = kube.json("get", "pvc", "data", "-n", ns)
        assert bound["status"]["phase"] == "Bound"
        assert bound["spec"]["volumeName"] == pv_name
        volume = kube.json("get", "pv", pv_name)
        assert volume["status"]["phase"] == "Bound"
        assert (volume["spec"]["claimRef"]["namespace"], volume["spec"]["claimRef"]["name"]) == (ns, "data")
        others = [
            v["metadata"]["name"]
            for v in kube.json("get", "pv")["items"]
            if (v["spec"].get("claimRef") or {}).get("namespace") == ns and v["metadata"]["name"] != pv_name
        ]
        assert others == []  # nothing provisioned beside it
        if kube.standin:
            proof = os.path.join(folder, "proof.txt")
            assert wait_for("the pod's file", lambda: os.path.exists(proof))
            with open(proof) as f:
                assert f.read() == "into-the-named-volume\n"
    finally:
        kube.kubectl("delete", "pod", "writer", "-n", ns, "--wait=false", check=False)
        kube.kubectl("delete", "pvc", "data", "-n", ns, "--wait=false", check=False)
        kube.kubectl("delete", "pv", pv_name, "--wait=false", check=False)
        shutil.rmtree(folder, ignore_errors=True)


def test_set_image_to_a_missing_image_shows_image_pull_backoff(kube: Kube, ns: str) -> None:
    kube.kubectl("apply", "--server-side", "-f", "-", stdin=validated(deployment(ns, "app")))
    kube.kubectl("rollout", "status", "deployment/app", "-n", ns, "--timeout=60s")
    kube.kubectl("set", "image", "deployment/app", f"web={MISSING}", "-n", ns)

    def backoff() -> str:
        for pod in kube.json("get", "pods", "-n", ns, "-l", "app=app")["items"]:
            for cs in pod["status"].get("containerStatuses") or []:
                waiting = cs["state"].get("waiting") or {}
                if waiting.get("reason") == "ImagePullBackOff":
                    return str(waiting.get("message", ""))
        return ""

    message = wait_for("ImagePullBackOff", backoff, 90)
    assert MISSING in message
    table = kube.kubectl("get", "pods", "-n", ns).stdout
    assert "ImagePullBackOff" in table or "ErrImagePull" in table
    stuck = kube.kubectl("rollout", "status", "deployment/app", "-n", ns, "--timeout=3s", check=False)
    assert stuck.returncode != 0
    running = [
        p for p in kube.json("get", "pods", "-n", ns, "-l", "app=app")["items"] if p["status"].get("phase") == "Running"
    ]
    assert running, "the old pod keeps serving during a stuck rollout"


def test_delete_namespace_removes_it_and_its_objects(kube: Kube) -> None:
    name = "t-doomed"
    kube.kubectl(
        "apply",
        "--server-side",
        "-f",
        "-",
        stdin=validated(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}, configmap(name, "inside", a="1")
        ),
    )
    kube.kubectl("delete", "namespace", name, "--timeout=90s")
    gone = kube.kubectl("get", "namespace", name, check=False)
    assert gone.returncode == 1
    assert "NotFound" in gone.stderr


# ---------------------------------------------------------------- the kubernetes client


def test_typed_client_create_list_patch_read_status(kube: Kube, ns: str) -> None:
    from kubernetes import client

    api = kube.api_client()
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    body = deployment(ns, "typed")
    validated(body)
    created = apps.create_namespaced_deployment(ns, body)
    assert created.metadata.uid
    assert created.metadata.generation == 1
    names = [d.metadata.name for d in apps.list_namespaced_deployment(ns).items]
    assert names == ["typed"]
    patched = apps.patch_namespaced_deployment("typed", ns, {"spec": {"replicas": 2}})
    assert patched.metadata.generation == 2
    status = wait_for(
        "two available replicas",
        lambda: (s := apps.read_namespaced_deployment_status("typed", ns)).status.available_replicas == 2 and s,
        90,
    )
    assert status.status.observed_generation == 2
    pods = core.list_namespaced_pod(ns, label_selector="app=typed").items
    assert len(pods) == 2
    assert all(p.status.phase == "Running" for p in pods)
    by_name = core.list_namespaced_pod(ns, field_selector=f"metadata.name={pods[0].metadata.name}").items
    assert [p.metadata.name for p in by_name] == [pods[0].metadata.name]
    assert client.VersionApi(api).get_code().git_version
    nodes = core.list_node().items
    assert nodes
    assert nodes[0].status.node_info.kubelet_version


def test_dynamic_client_server_side_apply(kube: Kube, ns: str, tmp_path: Any) -> None:
    from kubernetes.dynamic import DynamicClient

    dyn = DynamicClient(kube.api_client(), cache_file=str(tmp_path / "discovery.json"))
    cms = dyn.resources.get(api_version="v1", kind="ConfigMap")
    body = configmap(ns, "dynamic", a="1")
    validated(body)
    first = dyn.server_side_apply(cms, body=body, field_manager="homelab")
    again = dyn.server_side_apply(cms, body=body, field_manager="homelab")
    assert again.metadata.resourceVersion == first.metadata.resourceVersion
    changed = dyn.server_side_apply(cms, body=configmap(ns, "dynamic", a="2"), field_manager="homelab")
    assert int(changed.metadata.resourceVersion) > int(first.metadata.resourceVersion)
    assert [m.manager for m in changed.metadata.managedFields] == ["homelab"]
    deploys = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    d = dyn.server_side_apply(deploys, body=validated_obj(deployment(ns, "dyn")), field_manager="homelab")
    assert d.metadata.generation == 1
    if not REAL:
        charts = dyn.resources.get(api_version="helm.cattle.io/v1", kind="HelmChart")
        assert charts.namespaced


def validated_obj(obj: dict[str, Any]) -> dict[str, Any]:
    validated(obj)
    return obj


def test_watch_streams_changes(kube: Kube, ns: str) -> None:
    from kubernetes import client, watch

    core = client.CoreV1Api(kube.api_client())
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    core.create_namespaced_config_map(ns, validated_obj(configmap(ns, "watched", a="1")))
    core.patch_namespaced_config_map("watched", ns, {"data": {"a": "2"}})
    core.delete_namespaced_config_map("watched", ns)
    seen = []
    for event in watch.Watch().stream(core.list_namespaced_config_map, ns, resource_version=rv, timeout_seconds=5):
        if event["object"].metadata.name == "watched":
            seen.append((event["type"], (event["object"].data or {}).get("a")))
        if len(seen) == 3:
            break
    assert seen == [("ADDED", "1"), ("MODIFIED", "2"), ("DELETED", "2")]


# ---------------------------------------------------------------- errors


def test_errors_are_status_objects(kube: Kube, ns: str) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(kube.api_client())
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_config_map("nope", ns)
    status = json.loads(missing.value.body)
    assert missing.value.status == 404
    assert status["kind"] == "Status"
    assert status["reason"] == "NotFound"
    assert status["message"] == 'configmaps "nope" not found'
    with pytest.raises(ApiException) as bad:
        core.create_namespaced_config_map(ns, {"metadata": {"name": "Bad_Name"}, "data": {}})
    status = json.loads(bad.value.body)
    assert bad.value.status == 422
    assert status["reason"] == "Invalid"
    assert status["details"]["causes"][0]["field"] == "metadata.name"
    core.create_namespaced_config_map(ns, validated_obj(configmap(ns, "once")))
    with pytest.raises(ApiException) as twice:
        core.create_namespaced_config_map(ns, configmap(ns, "once"))
    assert twice.value.status == 409
    assert json.loads(twice.value.body)["reason"] == "AlreadyExists"
    stale = core.read_namespaced_config_map("once", ns)
    core.patch_namespaced_config_map("once", ns, {"data": {"x": "1"}})
    with pytest.raises(ApiException) as conflict:
        core.replace_namespaced_config_map("once", ns, stale)
    assert conflict.value.status == 409
    assert json.loads(conflict.value.body)["reason"] == "Conflict"


def _raw(kube: Kube, path: str, token: str) -> tuple[int, dict[str, Any]]:
    code, text = _raw_text(kube, path, token)
    return code, json.loads(text)


def _raw_text(kube: Kube, path: str, token: str) -> tuple[int, str]:
    import requests
    import yaml

    cfg = yaml.safe_load(kube.kubeconfig.read_text())
    cluster = cfg["clusters"][0]["cluster"]
    with tempfile.NamedTemporaryFile("wb", suffix=".pem", delete=False) as ca:
        import base64

        ca.write(base64.b64decode(cluster["certificate-authority-data"]))
    try:
        r = requests.get(
            cluster["server"] + path, headers={"Authorization": f"Bearer {token}"}, verify=ca.name, timeout=10
        )
    finally:
        os.unlink(ca.name)
    return r.status_code, r.text


def test_metrics_need_a_non_resource_url_rule_then_serve_prometheus_text(kube: Kube, ns: str) -> None:
    """What Prometheus scrapes with a bearer token (runbook 07): /metrics, granted by nonResourceURLs."""
    from kubernetes import client

    core = client.CoreV1Api(kube.api_client())
    rbac = client.RbacAuthorizationV1Api(kube.api_client())
    sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "scraper", "namespace": ns}}
    core.create_namespaced_service_account(ns, validated_obj(sa))
    token = core.create_namespaced_service_account_token("scraper", ns, {"spec": {"audiences": []}}).status.token
    code, _ = _raw_text(kube, "/metrics", token)
    assert code == 403
    role = f"{ns}-metrics"
    rbac.create_cluster_role(
        validated_obj(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": role},
                "rules": [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}],
            }
        )
    )
    try:
        rbac.create_cluster_role_binding(
            validated_obj(
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRoleBinding",
                    "metadata": {"name": role},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                    "subjects": [{"kind": "ServiceAccount", "name": "scraper", "namespace": ns}],
                }
            )
        )
        code, text = _raw_text(kube, "/metrics", token)
        assert code == 200
        assert "# TYPE apiserver_request_total counter" in text
        assert 'code="403"' in text  # the refused scrape above was counted
    finally:
        rbac.delete_cluster_role_binding(role)
        rbac.delete_cluster_role(role)


def test_bad_token_401_and_a_token_without_rights_403(kube: Kube, ns: str) -> None:
    from kubernetes import client

    code, body = _raw(kube, f"/api/v1/namespaces/{ns}/pods", "not-a-token")
    assert code == 401
    assert body["kind"] == "Status"
    assert body["reason"] == "Unauthorized"
    core = client.CoreV1Api(kube.api_client())
    core.create_namespaced_service_account(
        ns,
        validated_obj(
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "norights", "namespace": ns}}
        ),
    )
    token = core.create_namespaced_service_account_token("norights", ns, {"spec": {"audiences": []}}).status.token
    code, body = _raw(kube, f"/api/v1/namespaces/{ns}/pods", token)
    assert code == 403
    assert body["reason"] == "Forbidden"
    assert f'"system:serviceaccount:{ns}:norights" cannot list resource "pods"' in body["message"]


def test_table_output_of_kubectl_get(kube: Kube) -> None:
    out = kube.kubectl("get", "deployments", "-n", "kube-system").stdout.splitlines()
    assert out[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    names = {line.split()[0] for line in out[1:]}
    assert {"coredns", "local-path-provisioner", "metrics-server"} <= names
    sc = kube.kubectl("get", "storageclass").stdout
    assert "local-path (default)" in sc
    assert "WaitForFirstConsumer" in sc


def test_kubectl_is_found() -> None:
    assert shutil.which("kubectl"), "kubectl must be on PATH"
