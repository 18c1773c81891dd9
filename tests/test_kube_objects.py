"""The Kubernetes adapter's pure parts and runbook 04's manifests, no cluster: kind order, the config
hash, the plan's rules, dry-run field diffs (a Secret's values never shown), kubernetes-validate."""

from __future__ import annotations

from pathlib import Path

import pytest

from homelab_lib.core.errors import NotFound
from homelab_lib.core.plan import Action
from homelab_lib.inventory import load_inventory
from homelab_lib.k3s import services
from homelab_lib.kube import (
    CONFIG_HASH,
    Key,
    KubeDesired,
    KubeObserved,
    ObjectState,
    config_hash,
    key,
    ordered,
    sealed,
    validate,
)
from homelab_lib.kube.runbook import dry_run_fields, plan_objects

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def example() -> KubeDesired:
    return services.desired_services(load_inventory(REPO / "parameters" / "example.yaml"))


def test_runbook_04_builds_every_service_in_kind_order(example: KubeDesired) -> None:
    kinds = [o["kind"] for o in example.objects]
    assert kinds == [
        "Namespace", "Namespace", "Namespace", "PersistentVolumeClaim", "HelmChart", "Service", "Service",
        "Deployment", "StatefulSet", "Ingress", "Ingress",
    ]  # fmt: skip
    names = {str(key(o)) for o in example.objects}
    assert {"StatefulSet gitlab/gitlab", "HelmChart harbor/harbor", "Deployment devenv/devenv-ash"} <= names
    assert {p.host for p in example.probes} == {"gitlab.home.arpa", "ash.dev.home.arpa"}


def test_every_manifest_is_sealed_with_its_hash_and_the_homelab_labels(example: KubeDesired) -> None:
    for obj in example.objects:
        meta = obj["metadata"]
        assert meta["annotations"][CONFIG_HASH] == config_hash(obj)
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "homelab"
        assert meta["labels"]["homelab.io/runbook"] == services.RUNBOOK


def test_gitlab_is_a_statefulset_with_claims_for_config_data_and_logs(example: KubeDesired) -> None:
    (sts,) = [o for o in example.objects if o["kind"] == "StatefulSet"]
    claims = {c["metadata"]["name"]: c["spec"]["storageClassName"] for c in sts["spec"]["volumeClaimTemplates"]}
    assert claims == {"config": "local-path", "data": "local-path", "logs": "local-path"}
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "docker.io/gitlab/gitlab-ce:17.6.1-ce.0"
    assert container["readinessProbe"]["httpGet"] == {"path": "/-/health", "port": 80}


def test_the_claims_a_workload_mounts_by_name_and_by_its_templates(example: KubeDesired) -> None:
    from homelab_lib.kube.objects import mounts_claim

    (sts,) = [o for o in example.objects if o["kind"] == "StatefulSet"]  # gitlab: config, data, logs templates
    assert mounts_claim(sts, "data-gitlab-0")
    assert mounts_claim(sts, "logs-gitlab-12")
    assert not mounts_claim(sts, "data-gitlab-x")
    assert not mounts_claim(sts, "data-other-0")
    deployment = {"kind": "Deployment", "metadata": {"name": "app"},
                  "spec": {"template": {"spec": {"volumes": [{"name": "d", "persistentVolumeClaim": {
                      "claimName": "app-data"}}, {"name": "tmp", "emptyDir": {}}]}}}}  # fmt: skip
    assert mounts_claim(deployment, "app-data")
    assert not mounts_claim(deployment, "app-logs")


def test_harbor_is_a_pinned_helmchart_whose_values_hold_no_password(tmp_path: Path) -> None:
    inv = load_inventory(REPO / "parameters" / "example.yaml")
    (tmp_path / "pw").write_text("harbor-pw-0x5eed\n")
    assert inv.k3s is not None
    from homelab_lib.core.secrets import SecretRef

    k3s = inv.k3s.model_copy(update={"harbor_admin_password": SecretRef.parse("file:pw", tmp_path)})
    made = services.desired_services(inv.model_copy(update={"k3s": k3s}), only=["harbor"])
    (chart,) = [o for o in made.objects if o["kind"] == "HelmChart"]
    assert chart["spec"]["repo"] == "https://helm.goharbor.io"
    assert chart["spec"]["version"] == "1.16.0"
    assert "harbor-pw-0x5eed" not in chart["spec"]["valuesContent"]
    assert "existingSecretAdminPassword: harbor-admin" in chart["spec"]["valuesContent"]
    assert made.scope == ("harbor",)


def test_an_unknown_service_is_named() -> None:
    with pytest.raises(NotFound) as e:
        services.desired_services(load_inventory(REPO / "parameters" / "example.yaml"), only=["jenkins"])
    assert "jenkins" in str(e.value)


def test_a_manifest_kubernetes_rejects_is_refused_before_the_cluster_sees_it() -> None:
    bad = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": {"replicas": "two"}}
    with pytest.raises(ValueError, match="Deployment x"):
        validate([bad], services.kubernetes_version("v1.31.4+k3s1"))
    assert services.kubernetes_version("v1.31.4+k3s1") == "1.31.0"


def test_the_hash_ignores_itself_and_changes_with_the_manifest() -> None:
    a = sealed({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "n"}, "data": {}}, "r")
    b = sealed({**a, "data": {"k": "v"}}, "r")
    assert config_hash(a) == a["metadata"]["annotations"][CONFIG_HASH]
    assert config_hash(b) != config_hash(a)
    assert [o["kind"] for o in ordered([b, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}}])] == [
        "Namespace",
        "ConfigMap",
    ]


def _desired() -> KubeDesired:
    objs = [
        sealed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}}, "r"),
        sealed({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "n"}, "data": {}}, "r"),
    ]
    return KubeDesired("h", "r", tuple(ordered(objs)))


def test_the_plan_creates_updates_no_ops_deletes_in_reverse_and_needs_a_default_class() -> None:
    d = _desired()
    ns, cm = (key(o) for o in d.objects)
    stray = Key("apps/v1", "Deployment", "n", "old")
    observed = KubeObserved(
        {ns: ObjectState(True, d.objects[0]["metadata"]["annotations"][CONFIG_HASH]),
         cm: ObjectState(True, "0ld", (("data.k", "'a'", "'b'"),))},
        (stray,),
        "local-path",
    )  # fmt: skip
    made = plan_objects("x", d, observed)
    assert [(c.kind, c.target, c.action) for c in made.changes] == [
        ("StorageClass", "(default)", Action.NOOP),
        ("Namespace", "n", Action.NOOP),
        ("ConfigMap", "n/c", Action.UPDATE),
        ("Deployment", "n/old", Action.DELETE),
    ]
    assert str(made.changes[2].fields[0]) == "data.k: \"'a'\" -> \"'b'\""
    fresh = plan_objects("x", d, KubeObserved({}, (), ""))
    assert fresh.conflicts[0].kind == "StorageClass"
    assert [c.action for c in fresh.changes[1:]] == [Action.CREATE, Action.CREATE]


def test_dry_run_fields_name_leaves_and_never_a_secrets_value() -> None:
    now = {"kind": "Deployment", "spec": {"replicas": 1, "template": {"spec": {"image": "a:1"}}}}
    would = {"kind": "Deployment", "spec": {"replicas": 1, "template": {"spec": {"image": "a:2"}}}}
    assert dry_run_fields(now, would) == (("spec.template.spec.image", "'a:1'", "'a:2'"),)
    secret = dry_run_fields({"kind": "Secret", "data": {"pw": "b2xk"}}, {"kind": "Secret", "data": {"pw": "bmV3"}})
    assert secret == (("data.pw", "(set)", "(changed)"),)


def test_requests_are_summed_per_workload_in_cores_and_mib(example: KubeDesired) -> None:
    from homelab_lib.k3s import usage

    assert usage.cpu_cores("250m") == 0.25
    assert usage.memory_mib("3Gi") == 3072
    assert usage.memory_mib("512Mi") == 512
    table = usage.requests_table(example)
    assert table.to_dict("records") == [
        {"workload": "devenv/devenv-ash", "cpu": 0.25, "memory MiB": 512, "memory limit MiB": 2048},
        {"workload": "gitlab/gitlab", "cpu": 1.0, "memory MiB": 3072, "memory limit MiB": 6144},
    ]
    assert usage.namespaces(example) == ["devenv", "gitlab", "harbor"]
    fig = usage.requests_figure(table, (4.0, 8192.0), figsize=(8, 3))
    assert [ax.get_title() for ax in fig.axes] == ["cpu requests: 1.25 of 4 cores", "memory requests: 3584 of 8192 MiB"]
