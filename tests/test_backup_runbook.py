"""Runbook 06's Docker-volume layer on the runbook contract, from a parameter file, against a real sshd
(127.0.22.3) standing for the Docker VM, the machine's Docker Engine and real restic.

The "deployed stack" is a volume and a container named and labelled as Compose names them for the
inventory's stack. Everything made carries ``homelab.test.backup-runbook=<run>`` and is removed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from homelab_lib.backup import report
from homelab_lib.backup.runbook import BackupAdapter, backup_service_now
from homelab_lib.backup.volumes import latest_by_target
from homelab_lib.core import contract
from homelab_lib.core.errors import RepositoryMissing, RpoViolated
from homelab_lib.core.plan import Action
from homelab_lib.hosts.checksums import local_manifest
from homelab_lib.hosts.ssh import SshTarget
from homelab_lib.inventory import Inventory, load_inventory
from tests.backup_fixtures import build, busybox_files, labelled_engine
from tests.sshd_fixtures import start_sshd

RUN = uuid.uuid4().hex[:8]
LABEL = "homelab.test.backup-runbook"
ADDRESS = "127.0.22.3"
VM = "docker-bk"
STACK = f"st{RUN[:6]}"
IMAGE = f"homelab-backup-runbook-test/app:1.0-{RUN}"


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    with labelled_engine(LABEL, RUN, scratch=(f"/var/tmp/homelab-runbook-test-{RUN}",)) as client:
        yield client


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshTarget]:
    with start_sshd(tmp_path_factory.mktemp("sshd"), ADDRESS, host=VM) as target:
        yield target


@pytest.fixture(scope="module")
def deployed(engine: Any) -> dict[str, Path]:
    """The stack as Compose would have deployed it: app (hook stop) with one volume, db-less."""
    command = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"]
    build(engine, IMAGE, busybox_files("mkdir -p /tmp /config", command), {LABEL: RUN})
    out = {}
    for svc in ("app", "web"):
        name = f"{VM}-{STACK}_{svc}-config"
        vol = engine.volumes.create(name, labels={LABEL: RUN})
        root = Path(vol.attrs["Mountpoint"])
        (root / "settings.xml").write_text(f"<{svc}/>\n")
        (root / "db").mkdir()
        (root / "db" / "state.bin").write_bytes(uuid.uuid4().bytes * 1000)
        engine.containers.run(
            IMAGE,
            detach=True,
            network_mode="none",  # needs none (and the bridge may be missing)
            name=f"bkrb-{RUN}-{svc}",
            labels={LABEL: RUN, "com.docker.compose.project": f"{VM}-{STACK}", "com.docker.compose.service": svc},
            volumes={name: {"bind": "/config", "mode": "rw"}},
        )
        out[svc] = root
    return out


def params(folder: Path, sshd: SshTarget, repo: Path, *, rpo_app: float = 24.0) -> Inventory:
    (folder / "pve-password").write_text("unused\n")
    (folder / "restic-password").write_text(f"runbook-{RUN}\n")
    data = {
        "name": "backuptest",
        "proxmox": {"endpoint": "https://127.0.22.250:8006", "user": "root@pam",
                    "password": f"file:{folder / 'pve-password'}", "template": "debian-12-cloudinit"},
        "nodes": [{"name": "n1", "cores": 4, "memory_gib": 16}],
        "ssh": {"user": sshd.user, "port": sshd.port, "private_key": f"file:{sshd.key.target}",
                "known_hosts": str(sshd.known_hosts)},
        "vms": [{"name": VM, "vmid": 120, "node": "n1", "role": "docker", "cores": 1, "memory_mib": 1024,
                 "disk_gib": 8, "ip": f"{ADDRESS}/8", "stacks": {STACK: ["app", "web"]}}],
        "services": {
            "app": {"image": IMAGE, "platforms": ["compose"], "volumes": {"config": "/config"},
                    "backup": {"hook": "stop"}},
            "web": {"image": IMAGE, "platforms": ["compose"], "volumes": {"config": "/config"}},
        },
        "backups": {"restic_repository": str(repo), "restic_password": f"file:{folder / 'restic-password'}",
                    "restore_scratch": f"/var/tmp/homelab-runbook-test-{RUN}", "rpo_hours": {"app": rpo_app}},
    }  # fmt: skip
    path = folder / "backuptest.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_inventory(path)


def test_dry_run_plans_then_confirmed_run_backs_up_restore_tests_and_a_rerun_changes_nothing(
    engine: Any, sshd: SshTarget, deployed: dict[str, Path], tmp_path: Path
) -> None:
    inv = params(tmp_path, sshd, tmp_path / "repo")
    before = {svc: local_manifest(root) for svc, root in deployed.items()}
    state = tmp_path / "archive" / "restic-size.jsonl"
    runbook = BackupAdapter(inv, layers=("docker",), sample_percent=100, state_file=state)
    try:
        dry = contract.run(runbook, confirm=False)
        assert [(c.kind, c.action) for c in dry.plan.changes] == [
            ("repository", Action.CREATE),
            ("backup", Action.CREATE),
            ("backup", Action.CREATE),
        ]
        assert not (tmp_path / "repo").exists()  # a dry run creates nothing
        df = report.frame(dry.verified.report.rows)
        assert set(df["violation"]) == {"no backup"}
        with pytest.raises(RpoViolated):
            report.raise_on_violations(df)

        done = contract.run(runbook, confirm=True)
        assert done.result.ok, done.result.table()
        assert done.verified.ok, done.verified.table()
        rows = {r.target: r for r in done.verified.report.rows}
        assert set(rows) == {f"{VM}/{STACK}/app/config", f"{VM}/{STACK}/web/config"}
        assert all(r.violation is None and "identical" in r.result for r in rows.values())
        assert done.verified.report.check is not None
        assert done.verified.report.check.ok
        assert engine.containers.get(f"bkrb-{RUN}-app").status == "running"  # stopped for its backup, started

        again = contract.run(runbook, confirm=True)
        assert again.plan.empty  # idempotent: everything within its RPO
        assert len(report.size_history(state)) == 2  # the dry run had no repository to measure
    finally:
        runbook.close()
    assert {svc: local_manifest(root) for svc, root in deployed.items()} == before


def test_a_missing_repository_and_backup_service_now(
    sshd: SshTarget, deployed: dict[str, Path], tmp_path: Path
) -> None:
    inv = params(tmp_path, sshd, tmp_path / "nas" / "repo")
    with pytest.raises(RepositoryMissing):
        backup_service_now(inv, "web", confirm=False)
    results = backup_service_now(inv, "web")
    assert [r.target.name for r in results] == [f"{VM}/{STACK}/web/config"]
    runbook = BackupAdapter(inv, layers=("docker",))
    try:
        latest = latest_by_target(runbook.restic(VM))
    finally:
        runbook.close()
    assert [key[3] for key in latest] == ["web"]
