"""Runbook 04 against the lab's K3s (after runbook 03): a no-op re-run keeps every resourceVersion; a
change of Harbor's chart re-runs only its install Job; faults: an image that cannot be pulled (named
with the pod and the image), a 409 field conflict with another manager (named; forced only when asked)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from homelab_lib.core import contract
from homelab_lib.core.clock import SYSTEM
from homelab_lib.core.errors import K3sFieldConflict, K3sRolloutFailed
from homelab_lib.core.plan import Action
from homelab_lib.inventory import Inventory
from homelab_lib.k3s import K3sBootstrap, services
from homelab_lib.kube import Key, Kube, KubeDesired, KubeManifests, key, ordered, sealed

pytestmark = pytest.mark.lab
PULL_NS = "homelab-test-pull"
CONFLICT_NS = "homelab-test-conflict"


def with_k3s(inv: Inventory, **changes: object) -> Inventory:
    assert inv.k3s is not None
    return inv.model_copy(update={"k3s": inv.k3s.model_copy(update=changes)})


@pytest.fixture(scope="module")
def deployed(lab: Inventory) -> Iterator[Inventory]:
    """K3s (runbook 03) and the services (runbook 04) as lab.yaml wants them."""
    k3s = K3sBootstrap(lab)
    assert contract.run(k3s, confirm=True).verified.ok
    k3s.close()
    runbook = services.adapter(lab)
    assert contract.run(runbook, confirm=True).verified.ok
    runbook.close()
    yield lab
    runbook = services.adapter(lab)
    contract.run(runbook, confirm=True)
    runbook.close()


@pytest.fixture
def kube(deployed: Inventory) -> Iterator[Kube]:
    assert deployed.k3s is not None
    assert deployed.k3s.kubeconfig is not None
    k = Kube(deployed.k3s.kubeconfig, where="test")
    yield k
    for ns in (PULL_NS, CONFLICT_NS):
        k.delete(Key("v1", "Namespace", "", ns))
    # a namespace terminates before it goes: the next test must not plan against one that is going
    deadline = time.monotonic() + 60
    while any(k.get(Key("v1", "Namespace", "", ns)) is not None for ns in (PULL_NS, CONFLICT_NS)):
        assert time.monotonic() < deadline, "the test namespaces did not go away in 60 s"
        time.sleep(0.5)


def versions(kube: Kube, desired: KubeDesired) -> dict[str, str]:
    out = {}
    for obj in desired.objects:
        got = kube.get(key(obj))
        assert got is not None
        out[str(key(obj))] = got["metadata"]["resourceVersion"]
    return out


def test_a_second_run_plans_only_no_ops_and_keeps_every_resource_version(deployed: Inventory, kube: Kube) -> None:
    runbook = services.adapter(deployed)
    desired = runbook.desired()
    before = versions(kube, desired)
    done = contract.run(runbook, confirm=True)
    assert done.plan.empty, done.plan.summary()
    assert not done.result.applied
    assert done.verified.ok
    assert versions(kube, desired) == before
    assert {p[2] for p in done.verified.report.probes} == {"200 OK"}
    runbook.close()


def test_a_harbor_chart_change_reruns_only_its_install_job(deployed: Inventory, kube: Kube) -> None:
    old_job = kube.get(Key("batch/v1", "Job", "harbor", "helm-install-harbor"))
    assert old_job is not None
    runbook = services.adapter(with_k3s(deployed, harbor_chart_version="1.16.1"))
    desired = runbook.desired()
    before = versions(kube, desired)
    plan = runbook.plan(desired, runbook.observe(desired))
    (change,) = plan.of_action(Action.UPDATE)
    assert (change.kind, change.target) == ("HelmChart", "harbor/harbor")
    assert [(f.name, f.old, f.new) for f in change.fields] == [("spec.version", "'1.16.0'", "'1.16.1'")]
    result = runbook.apply(desired, plan, confirm=True)
    assert [o.detail for o in result.outcomes] == ["job helm-install-harbor Complete"]
    new_job = kube.get(Key("batch/v1", "Job", "harbor", "helm-install-harbor"))
    assert new_job is not None
    assert new_job["metadata"]["uid"] != old_job["metadata"]["uid"]
    after = versions(kube, desired)
    assert {k for k in after if after[k] != before[k]} == {"HelmChart harbor/harbor"}
    runbook.close()


def _manifests(ns: str, *objs: dict[str, object], timeout: float = 20.0) -> KubeDesired:
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
    sealed_objs = tuple(ordered([sealed(dict(o), "test-faults") for o in (namespace, *objs)]))
    return KubeDesired("rehearsal", "test-faults", sealed_objs, (), timeout, (ns,))


def _adapter(kube: Kube, desired: KubeDesired, *, force: bool = False) -> KubeManifests:
    return KubeManifests(lambda: desired, lambda: kube, name="test-faults", force_conflicts=force, clock=SYSTEM)


def test_an_image_that_cannot_be_pulled_is_named_with_its_pod(kube: Kube) -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "nopull", "namespace": PULL_NS},
        "spec": {
            "selector": {"matchLabels": {"app": "nopull"}},
            "template": {
                "metadata": {"labels": {"app": "nopull"}},
                "spec": {"containers": [{"name": "c", "image": "docker.io/library/no-such-image:0.0.1"}]},
            },
        },
    }
    desired = _manifests(PULL_NS, deployment)
    runbook = _adapter(kube, desired)
    with pytest.raises(K3sRolloutFailed) as e:
        contract.run(runbook, confirm=True)
    assert e.value.pod.startswith("nopull-")
    assert "ImagePullBackOff" in e.value.reason or "ErrImagePull" in e.value.reason
    assert "docker.io/library/no-such-image:0.0.1" in str(e.value)
    assert e.value.where == f"Deployment {PULL_NS}/nopull"


def test_a_field_another_manager_owns_is_a_named_409_unless_forced(kube: Kube) -> None:
    theirs = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "shared", "namespace": CONFLICT_NS},
        "data": {"mode": "theirs"},
    }
    assert contract.run(_adapter(kube, _manifests(CONFLICT_NS)), confirm=True).verified.ok
    cm = kube.resource("v1", "ConfigMap")
    kube.dyn.server_side_apply(cm, body=theirs, namespace=CONFLICT_NS, field_manager="someone-else")
    ours = {**theirs, "data": {"mode": "ours"}}
    desired = _manifests(CONFLICT_NS, ours)
    with pytest.raises(K3sFieldConflict) as e:
        _adapter(kube, desired).observe(desired)  # the server-side dry run already meets the conflict
    assert e.value.status == 409
    assert "someone-else" in str(e.value)
    assert "force_conflicts" in e.value.hint
    assert contract.run(_adapter(kube, desired, force=True), confirm=True).verified.ok
    got = kube.get(key(ours))
    assert got is not None
    assert got["data"] == {"mode": "ours"}


def test_a_claim_that_never_binds_stops_the_rollout_naming_the_pending_pod(kube: Kube) -> None:
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "nowhere", "namespace": PULL_NS},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "no-such-class",
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "unbound", "namespace": PULL_NS},
        "spec": {
            "selector": {"matchLabels": {"app": "unbound"}},
            "template": {
                "metadata": {"labels": {"app": "unbound"}},
                "spec": {
                    "containers": [
                        {
                            "name": "c",
                            "image": "docker.io/codercom/code-server:4.96.2",
                            "volumeMounts": [{"name": "d", "mountPath": "/d"}],
                        }
                    ],
                    "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "nowhere"}}],
                },
            },
        },
    }
    runbook = _adapter(kube, _manifests(PULL_NS, claim, deployment, timeout=15.0))
    with pytest.raises(K3sRolloutFailed) as e:
        contract.run(runbook, confirm=True)
    assert e.value.pod.startswith("unbound-")
    assert e.value.reason == "PersistentVolumeClaim nowhere is Pending (StorageClass no-such-class)"
    assert "nowhere is Pending" in str(e.value)


@pytest.fixture
def broken_chart(deployed: Inventory) -> Iterator[str]:
    """A chart whose install Job fails: the lab's knob in a config.yaml.d drop-in (runbook 03 owns only
    config.yaml), K3s restarted to read it; removed and restarted afterwards."""
    assert deployed.k3s is not None
    from homelab_lib import clients
    from homelab_lib.hosts.docker import DockerHost

    drop_in = "/etc/rancher/k3s/config.yaml.d/lab-broken.yaml"
    with DockerHost.open(clients.ssh_target(deployed, deployed.k3s.vm)) as host:
        made = host.run(
            f"mkdir -p /etc/rancher/k3s/config.yaml.d && echo 'lab-broken-charts: [failing-chart]' > {drop_in} "
            "&& systemctl restart k3s",
            timeout=300,
        )
        assert made.ok, made.stderr
        try:
            yield "failing-chart"
        finally:
            host.run(f"rm -f {drop_in} && systemctl restart k3s", timeout=300)


def test_a_helmchart_whose_install_job_keeps_failing_stops_at_the_toolkits_timeout(
    kube: Kube, broken_chart: str
) -> None:
    chart = {
        "apiVersion": "helm.cattle.io/v1",
        "kind": "HelmChart",
        "metadata": {"name": broken_chart, "namespace": CONFLICT_NS},
        "spec": {"chart": broken_chart, "repo": "https://charts.example.org", "version": "1.0.0",
                 "targetNamespace": CONFLICT_NS},
    }  # fmt: skip
    runbook = _adapter(kube, _manifests(CONFLICT_NS, chart, timeout=20.0))
    with pytest.raises(K3sRolloutFailed) as e:
        contract.run(runbook, confirm=True)
    assert e.value.where == f"HelmChart {CONFLICT_NS}/{broken_chart}"
    assert e.value.pod.startswith(f"helm-install-{broken_chart}-")
    assert e.value.reason


def test_runbook_04_with_refused_credentials_stops_with_a_401_and_the_fix(deployed: Inventory, tmp_path: Path) -> None:
    import yaml

    from homelab_lib.core.errors import K3sAuthError

    assert deployed.k3s is not None
    assert deployed.k3s.kubeconfig is not None
    data = yaml.safe_load(deployed.k3s.kubeconfig.read_text())
    data["users"][0]["user"] = {"token": "expired-or-wrong"}
    wrong = tmp_path / "kubeconfig.yaml"
    wrong.write_text(yaml.safe_dump(data))
    runbook = services.adapter(with_k3s(deployed, kubeconfig=wrong))
    with pytest.raises(K3sAuthError) as e:
        runbook.observe(runbook.desired())
    assert e.value.status == 401
    assert "03_bootstrap_k3s" in e.value.hint
