"""`homelab schedule NOTEBOOK --every SPEC --k3s`: a CronJob (Forbid) with its params ConfigMap, Secrets and
archive claim, planned and applied by the Kubernetes adapter (server-side apply) on a stand-in of its own
(127.0.24.11), or on the real cluster of HOMELAB_TEST_KUBECONFIG.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from homelab_lib.cli import main
from homelab_lib.core import contract
from homelab_lib.core.errors import ConfigError
from homelab_lib.core.progress import Lines
from homelab_lib.inventory import load_inventory
from homelab_lib.kube.objects import KubeObject
from homelab_lib.schedule.cronjob import (
    IMAGE,
    CronJobSpec,
    cron_of,
    cronjob_adapter,
    cronjob_spec,
    image_of,
    manifests,
)
from homelab_lib.schedule.rights import CLAIM_RULES, TOKEN_FILE, lease_rules
from homelab_lib.schedule.systemd import parse_every
from tests.kube_fixtures import Kube, api_cluster

ADDRESS = "127.0.24.11"
REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "notebooks" / "06_verify_backups.ipynb"
if not NOTEBOOK.exists():
    NOTEBOOK = REPO / "notebooks" / "00_inventory.ipynb"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    with api_cluster(tmp_path_factory, ADDRESS, "k3s-cronjob") as kube:
        yield kube


@pytest.fixture
def namespace(cluster: Kube) -> Iterator[str]:
    name = f"runs-{uuid.uuid4().hex[:8]}"
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


other_namespace = namespace


SIGNING_KEY = "audit-signing-key-material-0x99"
ADMIN_KEY = "cluster-admin-client-key-0x77"
DIGEST = "registry.home.arpa/homelab-runbooks:1.0@sha256:" + "e" * 64
SERVICES = ("devenv", "gitlab", "harbor")  # example.yaml's k3s.services: runbook 06's PVC layer works in each


def homelab(
    tmp_path: Path, make_params: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, kubeconfig: Path
) -> Path:
    """example.yaml with files to carry, an env: secret, the toolkit's image by digest and a signing key."""
    files = tmp_path / "files"
    files.mkdir()
    for name, text in (("ca.pem", "-----BEGIN CERTIFICATE-----\nCA\n"), ("id.pub", "ssh-ed25519 AAAA test\n"),
                       ("known_hosts", "10.0.0.1 ssh-ed25519 AAAA\n"), ("audit_key", SIGNING_KEY + "\n"),
                       ("allowed_signers", "me@example.org ssh-ed25519 AAAA\n")):  # fmt: skip
        (files / name).write_text(text)
    monkeypatch.setenv("PVE_TOKEN_SECRET", "pve-env-token-31337")

    def edit(data: dict[str, Any]) -> None:
        data["proxmox"]["token_secret"] = "env:PVE_TOKEN_SECRET"
        data["proxmox"]["ca_file"] = "files/ca.pem"
        data["ssh"]["public_key"] = "files/id.pub"
        data["ssh"]["known_hosts"] = str(files / "known_hosts")
        data["k3s"]["kubeconfig"] = str(kubeconfig)
        data["k3s"]["run_image"] = DIGEST
        data["audit"] = {"signing_key": "file:files/audit_key", "allowed_signers": "files/allowed_signers",
                         "identity": "me@example.org"}  # fmt: skip

    return make_params(edit=edit)


@pytest.fixture
def params(tmp_path: Path, cluster: Kube, make_params: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    """The homelab's parameters on the test cluster, whose K3s services' namespaces are there (runbook 04's)."""
    for space in SERVICES:
        cluster.kubectl("create", "namespace", space, check=False)
    return homelab(tmp_path, make_params, monkeypatch, cluster.kubeconfig)


@pytest.fixture
def unit_params(tmp_path: Path, make_params: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    """The homelab's parameters with a kubeconfig as runbook 03 writes it (cluster-admin's key in it); no cluster."""
    ca = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nthe K3s server CA\n").decode()
    admin = base64.b64encode(ADMIN_KEY.encode()).decode()
    kubeconfig = tmp_path / "kubeconfig-nappy.yaml"
    kubeconfig.write_text(
        yaml.safe_dump(
            {"apiVersion": "v1", "kind": "Config", "current-context": "nappy",
             "clusters": [{"name": "nappy", "cluster": {"server": "https://192.168.1.24:6443",
                                                        "certificate-authority-data": ca}}],
             "users": [{"name": "nappy", "user": {"client-certificate-data": admin, "client-key-data": admin}}],
             "contexts": [{"name": "nappy", "context": {"cluster": "nappy", "user": "nappy"}}]}
        )
    )  # fmt: skip
    return homelab(tmp_path, make_params, monkeypatch, kubeconfig)


def objects_of(spec: CronJobSpec) -> dict[str, KubeObject]:
    """The manifests by ``Kind namespace/name``."""
    return {f"{o['kind']} {o['metadata'].get('namespace', '')}/{o['metadata']['name']}": o for o in manifests(spec)}


def decoded(obj: KubeObject) -> str:
    """A Secret's or ConfigMap's values, as the pod reads them."""
    values = (obj.get("data") or {}).values()
    return "\n".join(base64.b64decode(v).decode() if obj["kind"] == "Secret" else v for v in values)


def test_every_spec_cron_can_say_becomes_cron_and_the_others_are_refused() -> None:
    assert cron_of(parse_every("15m", check=False)) == "*/15 * * * *"
    assert cron_of(parse_every("6h", check=False)) == "0 */6 * * *"
    assert cron_of(parse_every("daily", check=False)) == "0 0 * * *"
    assert cron_of(parse_every("*-*-* 02:30:00", check=False)) == "30 2 * * *"
    for spec in ("45m", "Mon..Fri *-*-* 02:00:00"):
        with pytest.raises(ConfigError) as e:
            cron_of(parse_every(spec, check=False))
        assert "cron, which cannot say this" in str(e.value)
        assert "15m" in str(e.value)


def test_the_manifests_carry_parameters_and_secrets_apart(params: Path) -> None:
    spec = cronjob_spec(NOTEBOOK, parse_every("15m", check=False), param_files=[params], parameters={"confirm": False})
    objs = {o["kind"] + ("/" + o["metadata"]["name"] if o["kind"] == "Secret" else ""): o for o in manifests(spec)}
    cron = objs["CronJob"]["spec"]
    assert cron["concurrencyPolicy"] == "Forbid"
    assert cron["schedule"] == "*/15 * * * *"
    pod = cron["jobTemplate"]["spec"]["template"]["spec"]
    command = pod["containers"][0]["command"]
    assert command[:3] == ["homelab", "run", f"/opt/homelab/notebooks/{NOTEBOOK.name}"]
    assert command[command.index("--archive") + 1] == "/homelab/archive"
    assert command[command.index("-p") : command.index("-p") + 3] == ["-p", "confirm", "false"]
    claim = next(v for v in pod["volumes"] if v["name"] == "archive")["persistentVolumeClaim"]["claimName"]
    assert objs["PersistentVolumeClaim"]["metadata"]["name"] == claim
    text = next(iter(objs["ConfigMap"]["data"].values()))
    assert "file:/homelab/params/files/" in text  # every file reference points where the pod finds it
    assert "grafana-admin-pw" not in text  # ... and no value is in the ConfigMap
    assert "kubeconfig: /homelab/params/kubeconfig.yaml" in text  # the pod's run takes the Lease on the same cluster
    files = objs[f"Secret/{spec.name}-files"]["data"]
    assert any(base64.b64decode(v).decode().startswith("grafana-admin-pw") for v in files.values())
    env = objs[f"Secret/{spec.name}-env"]["data"]
    assert base64.b64decode(env["PVE_TOKEN_SECRET"]).decode() == "pve-env-token-31337"
    names = [e["name"] for e in pod["containers"][0]["env"]]
    assert "PVE_TOKEN_SECRET" in names
    shown = manifests(spec, reveal=False)  # for showing: placeholders, no values
    assert "pve-env-token-31337" not in repr(shown)


def test_a_placement_file_not_made_yet_is_pointed_at_and_not_carried(params: Path, tmp_path: Path) -> None:
    layer = tmp_path / "layer.yaml"
    layer.write_text(f"placement_file: {tmp_path / 'state' / 'placement.yaml'}\n")  # 05 makes it on the first move
    spec = cronjob_spec(NOTEBOOK, parse_every("15m", check=False), param_files=[params, layer])
    assert dict(spec.params)["p1-layer.yaml"].strip() == "placement_file: /homelab/params/files/placement.yaml"
    assert not any(path.name == "placement.yaml" for _, path, _ in spec.files)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "placement.yaml").write_text("moved: {}\n")  # once made, it is carried
    spec = cronjob_spec(NOTEBOOK, parse_every("15m", check=False), param_files=[params, layer])
    rel = next(rel for _, path, rel in spec.files if path.name == "placement.yaml")
    assert dict(spec.params)["p1-layer.yaml"].strip() == f"placement_file: /homelab/params/{rel}"


def runbook(name: str) -> Path:
    return REPO / "notebooks" / f"{name}.ipynb"


def test_the_pod_runs_as_a_service_account_with_only_its_runbooks_rights(unit_params: Path) -> None:
    spec = cronjob_spec(runbook("06_verify_backups"), parse_every("6h", check=False), param_files=[unit_params])
    objs = objects_of(spec)
    ns, rbac = spec.namespace, f"{spec.namespace}.{spec.name}"
    account = objs[f"ServiceAccount {ns}/{spec.name}"]
    assert account["automountServiceAccountToken"] is False  # only the CronJob's pods take its token
    pod = objs[f"CronJob {ns}/{spec.name}"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == spec.name
    assert pod["automountServiceAccountToken"] is True
    rule = {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"]}
    homelab = load_inventory(unit_params).name
    assert objs[f"Role kube-system/{rbac}"]["rules"] == [  # the run Lease, and only this homelab's
        {**rule, "verbs": ["create"]},
        {**rule, "verbs": ["get", "update"], "resourceNames": [f"homelab-run-{homelab}"]},
    ]
    for space in SERVICES:  # the PVC layer: claims, their workloads (the stop hook), their pods and events
        assert objs[f"Role {space}/{rbac}"]["rules"] == [
            {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["get", "list"]},
            {"apiGroups": [""], "resources": ["pods", "events"], "verbs": ["list"]},
            {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets"], "verbs": ["get", "list"]},
            {"apiGroups": ["apps"], "resources": ["deployments/scale", "statefulsets/scale"], "verbs": ["patch"]},
        ]
    assert objs[f"ClusterRole /{rbac}"]["rules"] == [
        {"apiGroups": [""], "resources": ["persistentvolumes"], "verbs": ["get"]}
    ]
    roles = [o for o in objs.values() if o["kind"] in ("Role", "ClusterRole")]
    assert len(roles) == 1 + len(SERVICES) + 1  # nothing else, nowhere else
    for role in roles:
        binding = objs[f"{role['kind']}Binding {role['metadata'].get('namespace', '')}/{rbac}"]
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": spec.name, "namespace": ns}]
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": role["kind"], "name": rbac}
        assert all("*" not in r["verbs"] and "*" not in r["resources"] for r in role["rules"])
    assert spec.roles == (("kube-system", lease_rules(homelab)), *((s, CLAIM_RULES) for s in SERVICES),
                          spec.roles[-1])  # fmt: skip


def test_no_secret_carries_the_signing_key_or_cluster_admins_kubeconfig(unit_params: Path) -> None:
    spec = cronjob_spec(runbook("06_verify_backups"), parse_every("6h", check=False), param_files=[unit_params])
    objs = objects_of(spec)
    carried = [decoded(o) for o in objs.values() if o["kind"] in ("Secret", "ConfigMap")]
    assert carried
    for text in carried:
        assert SIGNING_KEY not in text  # the pod's runs are unsigned: the key stays where it lives
        assert ADMIN_KEY not in text
        assert base64.b64encode(ADMIN_KEY.encode()).decode() not in text
    assert "ssh-private-key-material" in "".join(carried)  # what the runbook needs is carried (README says so)
    config = objs[f"ConfigMap {spec.namespace}/{spec.name}-params"]["data"]
    params = yaml.safe_load(next(text for key, text in config.items() if key.startswith("p0-")))
    assert "signing_key" not in params["audit"]
    assert params["k3s"]["kubeconfig"] == "/homelab/params/kubeconfig.yaml"
    pod_kubeconfig = yaml.safe_load(config["kubeconfig.yaml"])
    (user,) = pod_kubeconfig["users"]
    assert user["user"] == {"tokenFile": TOKEN_FILE}  # the ServiceAccount's token, mounted by Kubernetes
    (cluster,) = pod_kubeconfig["clusters"]
    assert cluster["cluster"]["server"] == "https://192.168.1.24:6443"
    assert base64.b64decode(cluster["cluster"]["certificate-authority-data"]).startswith(b"-----BEGIN CERT")
    annotations = objs[f"CronJob {spec.namespace}/{spec.name}"]["metadata"]["annotations"]
    assert annotations["homelab.io/audit"].startswith("unsigned: the audit signing key stays off the cluster")


def test_the_pod_reads_the_homelabs_hash_key_beside_its_parameters(unit_params: Path) -> None:
    """The pod's parameters folder is read-only: the key it hashes secrets with (as the operator's runs do, so
    its plans compare with theirs) is carried into it, from beside the operator's parameters."""
    from homelab_lib.core.hashkey import KEY_FILE
    from homelab_lib.schedule.cronjob import PARAMS_DIR, desired_cronjob

    spec = cronjob_spec(runbook("06_verify_backups"), parse_every("6h", check=False), param_files=[unit_params])
    (carried,) = [(key, path) for key, path, rel in spec.files if rel == KEY_FILE]  # /homelab/params/.homelab-hash-key
    assert carried[1] == unit_params.parent / KEY_FILE
    assert (carried[1].stat().st_mode & 0o777) == 0o600
    assert all(arg.startswith(f"{PARAMS_DIR}/") for arg in spec.command[spec.command.index("-f") + 1 :][:1])
    desired = desired_cronjob(load_inventory(unit_params), spec)
    (files,) = [o for o in desired.objects if o["kind"] == "Secret" and o["metadata"]["name"].endswith("-files")]
    assert base64.b64decode(files["data"][carried[0]]).decode() == carried[1].read_text()


def test_a_runbook_that_needs_no_cluster_gets_no_token_no_kubeconfig_and_no_rights(unit_params: Path) -> None:
    spec = cronjob_spec(runbook("00_inventory"), parse_every("daily", check=False), param_files=[unit_params])
    objs = objects_of(spec)
    assert spec.kubeconfig == ""
    assert spec.roles == ()
    assert not [o for o in objs.values() if "Role" in o["kind"]]
    pod = objs[f"CronJob {spec.namespace}/{spec.name}"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    config = objs[f"ConfigMap {spec.namespace}/{spec.name}-params"]["data"]
    assert "kubeconfig.yaml" not in config
    assert "kubeconfig" not in yaml.safe_load(config["p0-params.yaml"])["k3s"]
    without_pvcs = cronjob_spec(runbook("06_verify_backups"), parse_every("6h", check=False),
                                param_files=[unit_params], parameters={"layers": ["proxmox", "docker"]})  # fmt: skip
    assert [space for space, _ in without_pvcs.roles] == ["kube-system"]  # the Lease only


def test_runbooks_that_change_the_cluster_are_not_scheduled_on_it(unit_params: Path, tmp_path: Path) -> None:
    for name in ("03_bootstrap_k3s", "04_deploy_k3s_services", "05_migrate_service"):
        with pytest.raises(ConfigError) as e:
            cronjob_spec(runbook(name), parse_every("daily", check=False), param_files=[unit_params])
        assert "cluster-admin" in str(e.value)
        assert "homelab schedule without --k3s" in str(e.value)
    mine = tmp_path / "08_mine.ipynb"
    mine.write_text(runbook("00_inventory").read_text())
    with pytest.raises(ConfigError, match="no rights are known for this notebook"):
        cronjob_spec(mine, parse_every("daily", check=False), param_files=[unit_params])


def test_the_image_of_a_real_homelab_is_named_by_digest(unit_params: Path, repo: Path) -> None:
    every, nb = parse_every("6h", check=False), runbook("06_verify_backups")
    assert cronjob_spec(nb, every, param_files=[unit_params]).image == DIGEST  # k3s.run_image
    other = "registry.home.arpa/homelab-runbooks:1.1@sha256:" + "f" * 64
    assert cronjob_spec(nb, every, param_files=[unit_params], image=other).image == other
    with pytest.raises(ConfigError) as e:
        cronjob_spec(nb, every, param_files=[unit_params], image="registry.home.arpa/homelab-runbooks:1.1")
    assert "--image" in str(e.value)
    assert "is not named by digest" in str(e.value)
    inv = load_inventory(unit_params)
    assert inv.k3s is not None
    untagged = inv.model_copy(update={"k3s": inv.k3s.model_copy(update={"run_image": None})})
    with pytest.raises(ConfigError, match=r"k3s\.run_image: .*homelab-runbooks:latest' is not named by digest"):
        image_of(untagged, "")
    assert image_of(load_inventory(repo / "parameters" / "lab.yaml"), "") == IMAGE  # the lab builds its own


def test_dry_run_shows_the_plan_then_confirm_applies_it_through_the_server(
    params: Path, cluster: Kube, namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["schedule", str(NOTEBOOK), "--every", "15m", "--k3s", "-f", str(params), "--namespace", namespace]
    assert main(argv) == 0
    shown = capsys.readouterr().out
    assert "schedule '*/15 * * * *'" in shown
    assert "concurrencyPolicy Forbid" in shown
    for kind in ("Namespace", "ConfigMap", "Secret", "PersistentVolumeClaim", "CronJob"):
        assert kind in shown
    assert "dry run: nothing applied" in shown
    assert "pve-env-token-31337" not in shown
    (Path(__file__).resolve().parent.parent / "test-artifacts").mkdir(exist_ok=True)
    (Path(__file__).resolve().parent.parent / "test-artifacts" / "schedule-k3s-dry-run.txt").write_text(shown)
    assert cluster.kubectl("get", "namespace", namespace, check=False).returncode != 0  # nothing applied

    assert main([*argv, "--confirm"]) == 0
    capsys.readouterr()
    jobs = cluster.json("get", "cronjobs", "-n", namespace)["items"]
    assert len(jobs) == 1
    cron = jobs[0]["spec"]
    assert cron["concurrencyPolicy"] == "Forbid"
    assert cron["schedule"] == "*/15 * * * *"
    assert cron["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    shown_fields = cluster.json("get", "cronjob", jobs[0]["metadata"]["name"], "-n", namespace, "--show-managed-fields")
    managed = [m["manager"] for m in shown_fields["metadata"]["managedFields"]]
    assert "homelab" in managed  # server-side apply, field manager homelab
    assert (
        cluster.json("get", "pvc", "homelab-archive", "-n", namespace)["spec"]["resources"]["requests"]["storage"]
        == "2Gi"
    )
    secrets = cluster.json("get", "secrets", "-n", namespace)["items"]
    assert any(s["metadata"]["name"].endswith("-env") for s in secrets)
    name = jobs[0]["metadata"]["name"]
    assert cluster.json("get", "serviceaccount", name, "-n", namespace)["automountServiceAccountToken"] is False
    for space in ("kube-system", *SERVICES):  # its rights, where its runbook works
        role = cluster.json("get", "role", f"{namespace}.{name}", "-n", space)
        assert role["metadata"]["labels"]["homelab.io/schedule-namespace"] == namespace
        binding = cluster.json("get", "rolebinding", f"{namespace}.{name}", "-n", space)
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]
    assert cluster.json("get", "clusterrole", f"{namespace}.{name}")["rules"][0]["resources"] == ["persistentvolumes"]

    assert main(argv) == 0  # again: nothing to do
    again = capsys.readouterr().out
    assert "plan: " in again
    assert "create" not in again.split("plan: ", 1)[1].splitlines()[0]
    assert "update" not in again.split("plan: ", 1)[1].splitlines()[0]


def test_a_confirmed_run_verifies_the_archive_claim_that_waits_for_the_first_run(params: Path, namespace: str) -> None:
    spec = cronjob_spec(NOTEBOOK, parse_every("15m", check=False), param_files=[params], namespace=namespace)
    adapter = cronjob_adapter([params], spec)
    try:
        done = contract.run(adapter, confirm=True, progress=Lines())
    finally:
        adapter.close()
    assert done.result.applied
    claim = next(c for c in done.verified.checks if c.kind == "PersistentVolumeClaim")
    assert claim.ok  # local-path binds a claim when its first pod starts: the CronJob's first run
    assert claim.detail == "Pending until its first pod (WaitForFirstConsumer)"


def test_a_spec_cron_cannot_say_is_refused_before_anything_is_asked(params: Path, namespace: str) -> None:
    argv = ["schedule", str(NOTEBOOK), "--every", "45m", "--k3s", "-f", str(params), "--namespace", namespace]
    assert main(argv) == 2


def test_list_shows_the_scheduled_run_and_remove_deletes_it_but_keeps_the_archive(
    params: Path, cluster: Kube, namespace: str, other_namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["schedule", str(NOTEBOOK), "--every", "15m", "--k3s", "-f", str(params), "--namespace", namespace]
    other = [*argv[:-1], other_namespace, "--confirm"]  # the same schedule in another namespace: its rights are its own
    assert main(other) == 0
    assert main([*argv, "--confirm"]) == 0
    name = cluster.json("get", "cronjobs", "-n", namespace)["items"][0]["metadata"]["name"]
    assert main(other) == 0
    again = capsys.readouterr().out.split("plan: ")[-1].splitlines()[0]
    assert "delete" not in again  # the other namespace's plan leaves this one's Roles in kube-system alone

    assert main(["schedule", "--list", "--k3s", "-f", str(params)]) == 0
    listed = capsys.readouterr().out
    line = next(x for x in listed.splitlines() if x.startswith(f"{namespace}/{name}:"))
    assert "'*/15 * * * *'" in line
    assert f"runs notebooks/{NOTEBOOK.name}" in line
    assert "last run never" in line

    remove = ["schedule", "--remove", name, "--k3s", "-f", str(params), "--namespace", namespace]
    assert main(remove) == 0  # the plan only
    shown = capsys.readouterr().out
    plan = shown.split("plan: ", 1)[1]
    for kind in ("CronJob", "ConfigMap", "Secret", "ServiceAccount", "RoleBinding", "ClusterRole"):
        assert kind in plan, kind
    assert f"kube-system/{namespace}.{name}" in plan
    assert "PersistentVolumeClaim" not in plan.split("kept:")[0]
    assert "dry run: nothing deleted" in shown
    assert len(cluster.json("get", "cronjobs", "-n", namespace)["items"]) == 1

    assert main([*remove, "--confirm"]) == 0
    capsys.readouterr()
    assert cluster.json("get", "cronjobs", "-n", namespace)["items"] == []
    ours = f"homelab.io/runbook=schedule-{name}"
    assert cluster.json("get", "configmaps", "-n", namespace, "-l", ours)["items"] == []
    assert cluster.json("get", "secrets", "-n", namespace, "-l", ours)["items"] == []
    assert cluster.json("get", "serviceaccounts", "-n", namespace, "-l", ours)["items"] == []
    this = f"{ours},homelab.io/schedule-namespace={namespace}"  # its rights elsewhere are gone too
    for kind in ("roles", "rolebindings"):
        assert cluster.json("get", kind, "-A", "-l", this)["items"] == []
    for kind in ("clusterroles", "clusterrolebindings"):
        assert cluster.json("get", kind, "-l", this)["items"] == []
    kept = cluster.json("get", "role", f"{other_namespace}.{name}", "-n", "kube-system")  # the other's stay
    assert kept["metadata"]["labels"]["homelab.io/schedule-namespace"] == other_namespace
    assert cluster.json("get", "pvc", "homelab-archive", "-n", namespace)["metadata"]["name"] == "homelab-archive"

    assert main(remove) == 1  # nothing of that name any more: said, with the names there are
    err = capsys.readouterr().err
    assert f"no scheduled run named '{name}'" in err
    assert f"namespace {namespace}" in err
