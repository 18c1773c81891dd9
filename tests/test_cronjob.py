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

from homelab_lib.cli import main
from homelab_lib.core import contract
from homelab_lib.core.errors import ConfigError
from homelab_lib.core.progress import Lines
from homelab_lib.schedule.cronjob import cron_of, cronjob_adapter, cronjob_spec, manifests
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


@pytest.fixture
def params(tmp_path: Path, cluster: Kube, make_params: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    files = tmp_path / "files"
    files.mkdir()
    for name, text in (("ca.pem", "-----BEGIN CERTIFICATE-----\nCA\n"), ("id.pub", "ssh-ed25519 AAAA test\n"),
                       ("known_hosts", "10.0.0.1 ssh-ed25519 AAAA\n")):  # fmt: skip
        (files / name).write_text(text)
    monkeypatch.setenv("PVE_TOKEN_SECRET", "pve-env-token-31337")

    def edit(data: dict[str, Any]) -> None:
        data["proxmox"]["token_secret"] = "env:PVE_TOKEN_SECRET"
        data["proxmox"]["ca_file"] = "files/ca.pem"
        data["ssh"]["public_key"] = "files/id.pub"
        data["ssh"]["known_hosts"] = str(files / "known_hosts")
        data["k3s"]["kubeconfig"] = str(cluster.kubeconfig)

    return make_params(edit=edit)


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
    assert "kubeconfig: /homelab/params/files/" in text  # the pod's run takes the Lease on the same cluster
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
    params: Path, cluster: Kube, namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["schedule", str(NOTEBOOK), "--every", "15m", "--k3s", "-f", str(params), "--namespace", namespace]
    assert main([*argv, "--confirm"]) == 0
    name = cluster.json("get", "cronjobs", "-n", namespace)["items"][0]["metadata"]["name"]
    capsys.readouterr()

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
    for kind in ("CronJob", "ConfigMap", "Secret"):
        assert kind in plan, kind
    assert "PersistentVolumeClaim" not in plan.split("kept:")[0]
    assert "dry run: nothing deleted" in shown
    assert len(cluster.json("get", "cronjobs", "-n", namespace)["items"]) == 1

    assert main([*remove, "--confirm"]) == 0
    capsys.readouterr()
    assert cluster.json("get", "cronjobs", "-n", namespace)["items"] == []
    ours = f"homelab.io/runbook=schedule-{name}"
    assert cluster.json("get", "configmaps", "-n", namespace, "-l", ours)["items"] == []
    assert cluster.json("get", "secrets", "-n", namespace, "-l", ours)["items"] == []
    assert cluster.json("get", "pvc", "homelab-archive", "-n", namespace)["metadata"]["name"] == "homelab-archive"

    assert main(remove) == 1  # nothing of that name any more: said, with the names there are
    err = capsys.readouterr().err
    assert f"no scheduled run named '{name}'" in err
    assert f"namespace {namespace}" in err
