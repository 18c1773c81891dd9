"""Runbooks 05, 06 and 07 against the rehearsal lab: a move with its data (rolled back, then done),
monitoring over both platforms (a stopped exporter down and alerted), and backups proven by restores.

The module brings the homelab to where 05 starts (01-04 confirmed), works on a placement file, a
move record and a restic repository of its own, and puts the lab back as lab.yaml wants it at the end.
"""

from __future__ import annotations

import json
import os
import shlex
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from homelab_lib import clients, monitoring
from homelab_lib.backup import report as backup_report
from homelab_lib.backup import runbook as restic_layers
from homelab_lib.compose.runbook import adapter as compose_adapter
from homelab_lib.core import contract
from homelab_lib.core.errors import BackupError, RolledBack
from homelab_lib.core.secrets import SecretRef
from homelab_lib.hosts.checksums import remote_manifest
from homelab_lib.hosts.docker import DockerHost
from homelab_lib.hosts.ssh import connect, run_command
from homelab_lib.inventory import Inventory, load_inventory
from homelab_lib.k3s.runbook import adapter as k3s_adapter
from homelab_lib.k3s.services import adapter as services_adapter
from homelab_lib.kube import Kube
from homelab_lib.kube.objects import Key
from homelab_lib.migrate.checkpoints import Faults
from homelab_lib.migrate.runbook import move_for
from homelab_lib.proxmox.runbook import adapter as proxmox_adapter
from tests.kube_fixtures import wait_for

pytestmark = pytest.mark.lab

LAB_FILE = Path(__file__).resolve().parent.parent / "parameters" / "lab.yaml"
SERVICE = "prowlarr"
RECEIVER = "127.0.30.1"


@pytest.fixture(scope="module")
def homelab(lab: Inventory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Inventory]:
    """The lab after runbooks 01-04, seen through a layer with this module's own placement file."""
    for runbook in (proxmox_adapter(lab), compose_adapter(lab), k3s_adapter(lab), services_adapter(lab)):
        assert contract.run(runbook, confirm=True).verified.ok, runbook
        runbook.close()
    d = tmp_path_factory.mktemp("runbooks")
    layer = d / "layer.yaml"
    layer.write_text(f"placement_file: {d / 'placement.yaml'}\n")
    yield load_inventory([LAB_FILE, layer])
    # back to lab.yaml: prowlarr's K3s namespace gone, its Compose container back on its kept volume
    kube = Kube(lab.k3s.kubeconfig, where="test") if lab.k3s and lab.k3s.kubeconfig else None
    if kube is not None:
        kube.delete(Key("v1", "Namespace", "", SERVICE))
        wait_for("prowlarr's namespace to go", lambda: kube.get(Key("v1", "Namespace", "", SERVICE)) is None, 120)
    for runbook in (compose_adapter(lab), monitoring.adapter(lab)):
        contract.run(runbook, confirm=True)
        runbook.close()


def _manifest_of_volume(inv: Inventory, vm: str, volume: str) -> str:
    with DockerHost.open(clients.ssh_target(inv, vm)) as host:
        mountpoint = host.docker().volumes.get(volume).attrs["Mountpoint"]
    client = connect(clients.ssh_target(inv, vm))
    try:
        return remote_manifest(client, mountpoint, where=vm).sha256
    finally:
        client.close()


def _compose_state(inv: Inventory, vm: str) -> tuple[str, str]:
    with DockerHost.open(clients.ssh_target(inv, vm)) as host:
        found = host.docker().containers.list(all=True, filters={"label": f"com.docker.compose.service={SERVICE}"})
        assert len(found) == 1, found
        state = found[0].attrs["State"]
        return state["Status"], (state.get("Health") or {}).get("Status", "")


def test_a_checksum_mismatch_after_the_stop_rolls_back_onto_unchanged_data(homelab: Inventory, tmp_path: Path) -> None:
    move, conv = move_for(homelab, SERVICE, state_dir=tmp_path / "state")
    (volume,) = [p.docker_volume for p in conv.volumes if p.kind == "pvc-copied"]
    assert volume is not None
    before = _manifest_of_volume(homelab, "docker-sleepy", volume)
    k3s = clients.ssh_target(homelab, "k3s-nappy")

    def tamper(_volume: str, folder: str) -> None:  # the copy differs from its source by one file
        client = connect(k3s)
        try:
            run_command(client, f"echo tampered >> {shlex.quote(folder)}/extra", timeout=30, where="k3s-nappy")
        finally:
            client.close()

    move.faults = Faults(after_copy=tamper)
    desired = move.desired()
    plan = move.plan(desired, move.observe(desired))
    with pytest.raises(RolledBack) as caught:
        move.apply(desired, plan, confirm=True)
    move.close()
    assert "extra" in str(caught.value)
    assert caught.value.checkpoint == "verify"
    assert wait_for(
        "the Compose service healthy again",
        lambda: _compose_state(homelab, "docker-sleepy") == ("running", "healthy"),
        90,
    )
    # proved before the restart (the stand-in appends to its boot log as it starts): the data moved nowhere
    assert any("unchanged" in line for line in caught.value.undone)
    assert SERVICE not in load_inventory(homelab.source_files).placed("k3s")
    assert before


def test_the_move_carries_the_data_and_monitoring_follows_it(homelab: Inventory, tmp_path: Path) -> None:
    move, _ = move_for(homelab, SERVICE, state_dir=tmp_path / "state")
    desired = move.desired()
    plan = move.plan(desired, move.observe(desired))
    result = move.apply(desired, plan, confirm=True)
    verified = move.verify(desired, result)
    move.close()
    assert verified.ok
    sums = verified.report.checksums()
    assert (sums["source sha256"] == sums["copy sha256"]).all()
    assert (sums["files"].astype(int) > 0).all()  # real files moved
    moved = load_inventory(homelab.source_files)
    assert SERVICE in moved.placed("k3s")
    assert SERVICE not in moved.placed("compose")
    # its HTTP health answers through the K3s traefik, by its own host name
    svc = moved.services[SERVICE]
    answer = requests.get(
        f"http://{moved.vm('k3s-nappy').address}{svc.health}",
        headers={"Host": f"{svc.proxy}.{moved.network.domain}"},
        timeout=10,
    )
    assert answer.status_code == 200
    # runbook 04 owns it now and finds nothing to change
    runbook = services_adapter(moved, services=[SERVICE])
    again = runbook.plan(runbook.desired(), runbook.observe(runbook.desired()))
    runbook.close()
    assert again.empty, again.table()
    # monitoring: the same service label, now on K3s
    targets = [t for t in monitoring.targets.compute(moved).targets if t.service == SERVICE]
    assert [(t.platform, t.host) for t in targets] == [("k3s", "k3s-nappy")]


class _Receiver:
    """A webhook receiver on loopback: what Alertmanager posts."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.posts.append(json.loads(body or b"{}"))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((RECEIVER, 0), Handler)
        self.url = f"http://{RECEIVER}:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def alerts(self, name: str) -> list[dict[str, Any]]:
        return [a for p in self.posts for a in p.get("alerts", []) if a.get("labels", {}).get("alertname") == name]


def test_monitoring_spans_both_platforms_and_a_stopped_exporter_is_down_and_alerted(homelab: Inventory) -> None:
    receiver = _Receiver()
    os.environ["HOMELAB_TEST_WEBHOOK"] = receiver.url
    inv = load_inventory(homelab.source_files)
    assert inv.monitoring is not None
    from homelab_lib.inventory.model import Alerts

    inv = inv.model_copy(
        update={
            "alerts": Alerts(webhook=SecretRef("env", "HOMELAB_TEST_WEBHOOK"), kind="json"),
            "monitoring": inv.monitoring.model_copy(update={"scrape_interval": "2s", "evaluation_interval": "2s"}),
        }
    )
    port = inv.monitoring.k3s_node_ports[SERVICE]
    address = inv.vm("k3s-nappy").address

    def answers() -> bool:
        try:
            return requests.get(f"http://{address}:{port}/metrics", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    wait_for(f"{SERVICE}'s NodePort {port} on K3s", answers, 60)
    fast = monitoring.Settings(group_wait="1s", group_interval="1s", alert_for={"TargetDown": "4s"})
    runbook = monitoring.adapter(inv, settings=fast)
    k3s = clients.ssh_target(inv, "k3s-nappy")
    try:
        first = contract.run(runbook, confirm=True)
        assert first.verified.ok, first.verified.report.table()
        table = first.verified.report.table()
        assert set(table["platform"]) == {"compose", "k3s"}
        assert (table["health"] == "up").all()
        assert SERVICE in set(table[table["platform"] == "k3s"]["service"])
        # a second run changes and reloads nothing
        reloads = len(runbook.reloads)
        again = contract.run(runbook, confirm=True)
        assert again.plan.empty, again.plan.table()
        assert len(runbook.reloads) == reloads
        client = connect(k3s)
        try:
            assert run_command(client, "systemctl stop prometheus-node-exporter", timeout=60, where="k3s").ok

            def down() -> bool:
                t = runbook.report(runbook.desired()).table()
                row = t[(t["host"] == "k3s-nappy") & (t["service"] == "node-exporter")]
                return bool(len(row)) and row.iloc[0]["health"] == "down"

            wait_for("node-exporter on k3s-nappy to show down", down, 60)
            fired = wait_for("TargetDown at the receiver", lambda: receiver.alerts("TargetDown"), 120)
            assert any(a["labels"].get("host") == "k3s-nappy" for a in fired), fired
        finally:
            run_command(client, "systemctl start prometheus-node-exporter", timeout=60, where="k3s")
            client.close()
    finally:
        runbook.close()
        receiver.server.shutdown()  # the module's teardown puts lab.yaml's monitoring config back


def test_backups_restore_test_every_volume_and_a_corrupted_pack_names_its_snapshot(homelab: Inventory) -> None:
    repo = f"/srv/nas/test-{os.urandom(4).hex()}"
    inv = homelab.model_copy(update={"backups": homelab.backups.model_copy(update={"restic_repository": repo})})
    runbook = restic_layers.adapter(inv, layers=("docker",), restore_test=True, sample_percent=100)
    assert homelab.lab is not None
    nas = homelab.lab.state_dir / "nas" / repo.rsplit("/", 1)[1]
    try:
        done = contract.run(runbook, confirm=True)
        rows = done.verified.report.rows
        assert rows
        assert [(r.target, r.violation) for r in rows if r.violation] == []
        assert all(r.last_restore_test for r in rows), [(r.target, r.result) for r in rows]
        packs = sorted((nas / "data").rglob("*"))
        pack = max((p for p in packs if p.is_file()), key=lambda p: p.stat().st_size)
        data = bytearray(pack.read_bytes())
        data[len(data) // 2] ^= 0xFF
        pack.write_bytes(bytes(data))
        after = contract.run(runbook, confirm=False)
        check = after.verified.report.check
        assert check is not None
        assert not check.ok
        assert check.snapshots, check.detail  # the snapshots that hold the damaged pack, by id
        with pytest.raises(BackupError) as caught:
            backup_report.raise_on_violations(backup_report.frame(after.verified.report.rows))
        assert any(snap in str(caught.value) for snap in check.snapshots), str(caught.value)
    finally:
        runbook.close()
        import shutil

        shutil.rmtree(nas, ignore_errors=True)


def test_a_dry_run_of_06_flags_the_stale_and_the_uncovered_vm_and_fails_after_its_report(
    homelab: Inventory, tmp_path: Path
) -> None:
    """The lab's Proxmox starts with docker-sleepy's backup past its RPO and k3s-nappy in no job."""
    from homelab_lib.core.errors import NotebookFailed
    from homelab_lib.runs.runner import run_notebook

    notebook = LAB_FILE.parent.parent / "notebooks" / "06_verify_backups.ipynb"
    archive = tmp_path / "archive"
    with pytest.raises(NotebookFailed) as caught:
        run_notebook(
            notebook,
            param_files=[LAB_FILE],
            parameters={"layers": ["proxmox"]},
            archive_dir=archive,
            progress_bar=False,
        )
    text = str(caught.value)
    assert "RpoViolated" in text
    assert "docker-sleepy" in text
    assert "k3s-nappy" in text
    (failed,) = archive.rglob("*-06_verify_backups-failed.ipynb")
    saved = failed.read_text()
    assert "no backup job covers it" in saved  # the whole report is in the archive before the verdict
    assert "over its RPO" in saved
