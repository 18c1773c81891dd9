"""Runbook 06's Proxmox layer (homelab_lib.backup.vzdump) against the lab's fakepve, over HTTPS.

Each test serves a fresh fakepve built by the lab's launcher (:mod:`homelab_lab.pve_server`)
from the lab's own start state (:func:`homelab_lab.pve.guests`: the inventory's backup job
covering every VM but the last, one VM's latest backup a day past its RPO), on this file's
loopback address, TLS verified against a lab CA. The VMs are made by runbook 01's adapter, as
the demo makes them. The library talks through proxmoxer's real https backend; the tests read
back what the server recorded (its jobs, the volumes in the storage, its tasks and their logs)
and flip its fault switches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from homelab_lab import pve_server
from homelab_lab.pve import guests, issue_server_cert
from homelab_lib.backup import rows as backup_rows
from homelab_lib.backup import vzdump as pve_backup
from homelab_lib.core.errors import BackupError, BackupFailed, ConfigError, RpoViolated, TaskFailed, VzdumpFailed
from homelab_lib.core.plan import Action
from homelab_lib.inventory import load_inventory
from tests.test_proxmox_fixtures import PASSWORD, TOKEN, Hook, PveLab, Served, lab_inventory, token_id

HOST = "127.0.21.1"  # this file's loopback address (the lab's own is 127.0.0.2)
GIB = 1024**3
JOB = "homelab-vzdump"
LOOPS: dict[int, asyncio.AbstractEventLoop] = {}  # id(fake) -> the loop it is served on


def lab_loop(lab: PveLab) -> asyncio.AbstractEventLoop:
    """The event loop the lab's fake runs on (to call its coroutines from a test)."""
    return LOOPS[id(lab.pve)]


@pytest.fixture
def backup_lab(tmp_path: Path) -> Iterator[PveLab]:
    """The lab's fakepve in its start state, with the inventory's VMs provisioned by runbook 01."""
    inv = lab_inventory()
    pki = tmp_path / "pve"
    pve = pve_server.build(guests(inv), password=PASSWORD, host=HOST, port=0, tokens={token_id(inv): TOKEN})
    certfile, keyfile = issue_server_cert(pki, HOST)
    served = Served(pve, certfile, keyfile)
    LOOPS[id(pve)] = served.loop
    try:
        lab = PveLab(pve, inv, str(pki / "ca.pem"), tmp_path)
        assert lab.apply(hook=Hook()).ok  # runbook 01: the VMs 110..140, tagged as managed
        yield lab
    finally:
        LOOPS.pop(id(pve), None)
        served.stop()


def runbook(lab: PveLab) -> pve_backup.ProxmoxBackupAdapter:
    return pve_backup.ProxmoxBackupAdapter(lab.inv, lab.client())


def backups_of(lab: PveLab, vmid: int) -> dict[str, dict[str, object]]:
    """The server's own record of the vzdump volumes of vmid on storage local."""
    volumes = lab.pve.storages["local"].get("volumes", {})
    return {name: vol for name, vol in volumes.items() if vol.get("content") == "backup" and vol.get("vmid") == vmid}


def by_target(rows: tuple[pve_backup.BackupRow, ...]) -> dict[str, pve_backup.BackupRow]:
    return {r.target: r for r in rows}


# ---------------------------------------------------------------- observe and plan


def test_the_lab_starts_with_one_stale_backup_and_one_vm_no_job_covers(backup_lab: PveLab) -> None:
    lab = backup_lab
    rb = runbook(lab)
    desired = rb.desired()
    observed = rb.observe(desired)

    job = observed.job(JOB)
    assert job is not None
    assert (job.enabled, job.schedule, job.storage, job.mode) == (True, "02:00", "local", "snapshot")
    assert job.vmids == (110, 120, 130)
    assert job.prune_backups == "keep-daily=7"
    assert job.notes_template == "{{guestname}}"
    assert job.next_run is not None
    assert job.next_run > observed.at
    assert observed.backup_storages == ("local",)
    latest_120 = observed.latest(120)
    assert latest_120 is not None
    assert latest_120.node == "sleepy"  # a backup on a storage that is not shared is on its node's disk
    assert latest_120.volid.startswith("local:backup/vzdump-qemu-120-")
    assert latest_120.format == "vma.zst"

    rows = by_target(pve_backup.rows(desired, observed))
    assert list(rows) == ["docker-drowzee", "docker-sleepy", "docker-hypno", "k3s-nappy"]
    fresh = rows["docker-drowzee"]
    assert fresh.violation is None
    assert fresh.layer == "proxmox"
    assert fresh.storage == "local"
    assert fresh.size_bytes == 2 * GIB
    assert fresh.protected is False
    assert fresh.verification is None
    assert fresh.last_backup is not None
    assert fresh.last_backup.tzinfo is not None
    assert fresh.age_hours is not None
    assert 2.5 < fresh.age_hours < 3.5
    assert fresh.rpo_hours == 26
    stale = rows["docker-sleepy"]
    assert stale.age_hours is not None
    assert stale.age_hours > 26
    assert stale.violation is not None
    assert "over its RPO of 26 h" in stale.violation
    uncovered = rows["k3s-nappy"]
    assert uncovered.violation == "no backup job covers it; no backup"
    assert (uncovered.last_backup, uncovered.age_hours, uncovered.size_bytes) == (None, None, None)
    assert list(fresh.row()) == list(backup_rows.COLUMNS)  # the report's row, as every layer's
    assert (fresh.last_restore_test, fresh.result) == (None, "")  # vzdump backups are not restore-tested
    assert list(fresh.row(pve_backup.COLUMNS)) == list(pve_backup.COLUMNS)

    plan = rb.plan(desired, observed)
    changes = {(c.kind, c.target): c for c in plan.changes}
    job_change = changes[("backup-job", JOB)]
    assert job_change.action == Action.UPDATE
    assert [(f.name, f.old, f.new) for f in job_change.fields] == [("vmid", "110,120,130", "110,120,130,140")]
    assert changes[("vzdump", "docker-sleepy")].action == Action.CREATE
    assert "older than its RPO of 26 h" in changes[("vzdump", "docker-sleepy")].reason
    assert changes[("vzdump", "k3s-nappy")].action == Action.CREATE
    assert changes[("vzdump", "k3s-nappy")].where == "nappy"
    assert changes[("vzdump", "docker-drowzee")].action == Action.NOOP
    assert plan.sha256 == rb.plan(desired, rb.observe(desired)).sha256  # the plan does not move with the clock

    with pytest.raises(RpoViolated) as raised:
        pve_backup.check_rpo(pve_backup.rows(desired, observed))
    assert [v.split(":")[0] for v in raised.value.violations] == ["proxmox docker-sleepy", "proxmox k3s-nappy"]
    assert isinstance(raised.value, BackupError)


def test_a_dry_run_changes_nothing_and_reports_both_violations(backup_lab: PveLab) -> None:
    lab = backup_lab
    rb = runbook(lab)
    desired = rb.desired()
    plan = rb.plan(desired, rb.observe(desired))
    jobs_before = {k: dict(v) for k, v in lab.pve.backup_jobs.items()}
    volumes_before = set(lab.pve.storages["local"]["volumes"])
    tasks_before = len(lab.pve.tasklog)
    mark = lab.mark()

    result = rb.apply(desired, plan, confirm=False, progress=Hook())
    assert not result.applied
    assert {o.target: o.result for o in result.outcomes} == {
        JOB: "would update",
        "docker-sleepy": "would create",
        "k3s-nappy": "would create",
    }
    verified = rb.verify(desired, result)  # a report, not an error, after a dry run
    assert not verified.ok
    assert {c.target for c in verified.problems} == {JOB, "docker-sleepy", "k3s-nappy"}
    table = verified.report.table()
    assert list(table["target"][:2]) == ["docker-sleepy", "k3s-nappy"]  # violations first
    assert list(table.columns) == list(pve_backup.COLUMNS)

    assert lab.writes(mark) == []
    assert lab.pve.backup_jobs == jobs_before
    assert set(lab.pve.storages["local"]["volumes"]) == volumes_before
    assert len(lab.pve.tasklog) == tasks_before


# ---------------------------------------------------------------- apply, verify, idempotent


def test_a_confirmed_run_covers_the_vm_takes_the_missing_backups_and_a_second_plan_is_empty(backup_lab: PveLab) -> None:
    lab = backup_lab
    rb = runbook(lab)
    desired = rb.desired()
    before_120 = set(backups_of(lab, 120))
    result = rb.apply(desired, rb.plan(desired, rb.observe(desired)), confirm=True, progress=Hook())
    assert result.ok
    assert result.applied
    assert {o.target for o in result.outcomes} == {JOB, "docker-sleepy", "k3s-nappy"}

    job = lab.pve.backup_jobs[JOB]  # what the server now holds
    assert job["vmid"] == "110,120,130,140"
    assert (job["schedule"], job["storage"], job["mode"], job["prune-backups"]) == (
        "02:00",
        "local",
        "snapshot",
        "keep-daily=7",
    )
    new_120 = {n: v for n, v in backups_of(lab, 120).items() if n not in before_120}
    assert len(new_120) == 1
    (name, vol), *_ = new_120.items()
    assert name.startswith("backup/vzdump-qemu-120-")
    assert name.endswith(".vma.zst")
    assert vol["notes"] == "docker-sleepy"  # notes-template {{guestname}}
    assert len(backups_of(lab, 140)) == 1
    for vmid in (120, 140):
        upid = result.facts["docker-sleepy" if vmid == 120 else "k3s-nappy"]
        task = lab.pve.tasks[upid]
        assert (task["type"], task["id"], task["exitstatus"]) == ("vzdump", str(vmid), "OK")
        assert task["log"][-2:] == ["INFO: Backup job finished successfully", "TASK OK"]

    verified = rb.verify(desired, result)
    assert verified.ok, verified.summary()
    assert verified.report.violations == ()
    pve_backup.check_rpo(verified.report.rows)  # raises nothing now

    again = rb.plan(desired, rb.observe(desired))
    assert again.empty, again.table().to_string()
    mark = lab.mark()
    assert not rb.apply(desired, again, confirm=True, progress=Hook()).applied
    assert lab.writes(mark) == []


def test_a_missing_job_is_created_and_an_all_job_keeps_all_but_loses_its_exclude(backup_lab: PveLab) -> None:
    lab = backup_lab
    del lab.pve.backup_jobs[JOB]
    rb = runbook(lab)
    desired = rb.desired()
    plan = rb.plan(desired, rb.observe(desired))
    create = next(c for c in plan.changes if c.kind == "backup-job")
    assert create.action == Action.CREATE
    assert {f.name: f.new for f in create.fields}["vmid"] == "110,120,130,140"
    rb.apply(desired, plan, confirm=True, progress=Hook())
    assert lab.pve.backup_jobs[JOB]["vmid"] == "110,120,130,140"
    assert lab.pve.backup_jobs[JOB]["enabled"] == 1

    lab.pve.backup_jobs[JOB] = {
        "schedule": "02:00",
        "storage": "local",
        "mode": "snapshot",
        "compress": "zstd",
        "all": 1,
        "exclude": "140,999",
        "enabled": 0,
        "prune-backups": "keep-daily=7",
        "notes-template": "{{guestname}}",
    }
    observed = rb.observe(desired)
    assert "only disabled backup job(s) cover it" in str(
        by_target(pve_backup.rows(desired, observed))["docker-drowzee"].violation
    )
    fix = next(c for c in rb.plan(desired, observed).changes if c.kind == "backup-job")
    assert {f.name: (f.old, f.new) for f in fix.fields} == {"enabled": ("0", "1"), "exclude": ("140,999", "999")}
    rb.apply(desired, rb.plan(desired, rb.observe(desired)), confirm=True, progress=Hook())
    held = lab.pve.backup_jobs[JOB]
    assert (held["all"], held["exclude"], held["enabled"]) == (1, "999", 1)
    assert "vmid" not in held
    assert rb.plan(desired, rb.observe(desired)).empty


# ---------------------------------------------------------------- faults


def test_a_failed_vzdump_task_is_reported_with_its_log_and_the_other_changes_still_happen(backup_lab: PveLab) -> None:
    lab = backup_lab
    lab.pve.vzdump_errors[120] = "vma_queue_write: write error - Broken pipe"
    rb = runbook(lab)
    desired = rb.desired()
    with pytest.raises(BackupFailed) as raised:
        rb.apply(desired, rb.plan(desired, rb.observe(desired)), confirm=True, progress=Hook())
    (failure,) = raised.value.failures
    assert isinstance(failure, VzdumpFailed)
    assert isinstance(failure, TaskFailed)
    assert (failure.vm, failure.vmid, failure.node) == ("docker-sleepy", 120, "sleepy")
    assert failure.pve_message == "vma_queue_write: write error - Broken pipe"
    assert "ERROR: Backup of VM 120 failed - vma_queue_write: write error - Broken pipe" in failure.log_tail
    assert failure.log_tail[-1] == "TASK ERROR: job errors"
    assert ":vzdump:120:" in failure.upid
    assert "task log (last lines)" in str(raised.value)
    assert TOKEN not in str(raised.value)
    assert PASSWORD not in str(raised.value)
    assert lab.pve.backup_jobs[JOB]["vmid"] == "110,120,130,140"  # done before the failure
    assert len(backups_of(lab, 140)) == 1  # and the backup after it

    observed = rb.observe(desired)
    (task,) = observed.failed
    assert (task.node, task.status, task.vmids, task.upid) == ("sleepy", "job errors", (120,), failure.upid)
    assert task.reasons[120] == "vma_queue_write: write error - Broken pipe"
    assert task.log_tail[-1] == "TASK ERROR: job errors"
    assert task.start is not None
    assert abs(task.start - observed.at) < timedelta(minutes=5)
    row = task.row()
    assert row["why"] == "120: vma_queue_write: write error - Broken pipe"

    verified = rb.verify(desired, rb.apply(desired, rb.plan(desired, observed), confirm=False))
    assert "1 failed vzdump task(s)" in verified.note
    assert verified.report.tasks_table()["vmids"].tolist() == ["120"]
    assert "over its RPO" in str(by_target(verified.report.rows)["docker-sleepy"].violation)

    del lab.pve.vzdump_errors[120]  # the cause is fixed: the next run takes the backup and passes
    result = rb.apply(desired, rb.plan(desired, rb.observe(desired)), confirm=True, progress=Hook())
    assert [o.target for o in result.outcomes] == ["docker-sleepy"]
    assert rb.verify(desired, result).ok


def test_a_confirmed_run_that_leaves_a_vm_out_of_its_rpo_raises_on_verify(backup_lab: PveLab) -> None:
    """A VM the cluster does not have (not provisioned) is a conflict: the rest is applied, verify fails."""
    lab = backup_lab
    from homelab_lib.core.errors import VerifyFailed

    lab.pve.vms = [vm for vm in lab.pve.vms if vm.vmid != 140]
    rb = runbook(lab)
    desired = rb.desired()
    plan = rb.plan(desired, rb.observe(desired))
    conflict = next(c for c in plan.changes if c.target == "k3s-nappy")
    assert conflict.action == Action.CONFLICT
    assert "not in the cluster: provision it first" in conflict.reason
    result = rb.apply(desired, plan, confirm=True, progress=Hook())
    assert {o.target: o.result for o in result.outcomes}["k3s-nappy"] == "conflict"
    with pytest.raises(VerifyFailed) as raised:
        rb.verify(desired, result)
    assert "k3s-nappy" in str(raised.value)


def test_pbs_verification_and_protected_flags_come_from_the_storage_content(backup_lab: PveLab) -> None:
    lab = backup_lab
    taken = int((datetime.now(UTC) - timedelta(hours=1)).timestamp())
    upid = "UPID:pbs:0000C0DE:00000001:6B000000:verificationjob:store1:root@pam:"
    volid = lab.pve.add_backup(
        "local", 110, taken, 3 * GIB, notes="before upgrade", protected=True, verification={"state": "ok", "upid": upid}
    )
    rb = runbook(lab)
    desired = rb.desired()
    observed = rb.observe(desired)
    latest = observed.latest(110)
    assert latest is not None
    assert (latest.volid, latest.notes, latest.protected, latest.size) == (volid, "before upgrade", True, 3 * GIB)
    assert (latest.verification, latest.verification_upid) == ("ok", upid)
    row = by_target(pve_backup.rows(desired, observed))["docker-drowzee"]
    assert (row.protected, row.verification, row.size_bytes) == (True, "ok", 3 * GIB)


# ---------------------------------------------------------------- the lab's server, directly


def test_the_lab_prunes_by_keep_daily_but_never_a_protected_backup(backup_lab: PveLab) -> None:
    lab = backup_lab
    now = datetime.now(UTC)
    old = [lab.pve.add_backup("local", 130, int((now - timedelta(days=d)).timestamp()), GIB) for d in (3, 4, 5)]
    protected = lab.pve.add_backup("local", 130, int((now - timedelta(days=9)).timestamp()), GIB, protected=True)
    client = lab.client()
    upid = client.post("nodes/hypno/vzdump", vmid="130", storage="local", **{"prune-backups": "keep-daily=2"})
    log = [line["t"] for line in client.get(f"nodes/hypno/tasks/{upid}/log", limit=1000)]
    kept = {f"local:{n}" for n in backups_of(lab, 130)}
    assert protected in kept
    assert len(kept) == 3  # today's new one, the newest other day, and the protected one
    assert not kept & set(old)  # a newer backup holds the second day
    assert "INFO: prune older backups with retention: keep-daily=2" in log
    assert any(line.startswith("INFO: pruned ") for line in log)

    with pytest.raises(Exception, match="invalid calendar event 'daily 02:00'"):
        client.post("cluster/backup", id="bad", schedule="daily 02:00", vmid="110")
    with pytest.raises(Exception, match="option conflicts with option 'vmid'"):
        client.post("cluster/backup", id="bad", schedule="02:00", vmid="110", all=1)
    with pytest.raises(Exception, match="Job 'homelab-vzdump' already exists"):
        client.post("cluster/backup", id=JOB, schedule="02:00", vmid="110")
    assert [j["id"] for j in client.get("cluster/backup")] == [JOB]


def test_the_inventory_refuses_a_schedule_pve_would_not_take(tmp_path: Path) -> None:
    yaml = YAML(typ="rt")
    src = Path(__file__).resolve().parent.parent / "parameters" / "lab.yaml"
    data = yaml.load(src.read_text())
    data["backups"]["vzdump"]["schedule"] = "daily 02:00"
    bad = tmp_path / "lab.yaml"
    with bad.open("w") as f:
        yaml.dump(data, f)
    with pytest.raises(ConfigError) as raised:
        load_inventory(bad)
    assert "backups.vzdump.schedule" in str(raised.value)
    assert "'02:00' (every day)" in str(raised.value)


def test_a_stray_managed_vm_and_a_pool_job_count_and_fakepves_own_failed_task_is_reported(backup_lab: PveLab) -> None:
    lab = backup_lab
    client = lab.client()
    client.post("pools", poolid="critical")
    client.put("pools/critical", vms="140")
    client.post("cluster/backup", id="pool-job", schedule="sat 03:00", pool="critical", storage="local")
    lab.pve.add_vm(
        150, "stray", node="drowzee", config={"tags": "homelab-managed", "scsi0": "local-lvm:vm-150-disk-0,size=4G"}
    )

    rb = runbook(lab)
    desired = rb.desired()
    observed = rb.observe(desired)
    assert observed.pools == {"critical": frozenset({140})}
    rows = by_target(pve_backup.rows(desired, observed))
    assert rows["k3s-nappy"].violation == "no backup"  # the pool's job covers it now
    assert rows["stray"].violation == "no backup job covers it; no backup"
    assert rows["stray"].rpo_hours == 26
    plan = rb.plan(desired, observed)
    job = next(c for c in plan.changes if c.kind == "backup-job")
    assert {f.name: f.new for f in job.fields} == {"vmid": "110,120,130,140,150"}

    lab.pve.fail("POST", "/nodes/drowzee/vzdump", error="internal_error")  # fakepve's own fault: a TASK ERROR
    with pytest.raises(BackupFailed) as raised:
        rb.apply(desired, plan, confirm=True, progress=Hook())
    (failure,) = raised.value.failures
    assert isinstance(failure, VzdumpFailed)
    assert (failure.vm, failure.pve_message) == ("stray", "internal error")
    assert failure.log_tail[-1] == "TASK ERROR: internal error"
    (task,) = rb.observe(desired).failed
    assert (task.node, task.status) == ("drowzee", "internal error")


def test_a_job_runs_as_pvescheduler_runs_it_a_vzdump_task_per_node_of_its_guests(backup_lab: PveLab) -> None:
    lab = backup_lab
    monday_0159 = datetime(2026, 11, 23, 1, 59, tzinfo=UTC).timestamp()
    assert pve_server.due("02:00", monday_0159, monday_0159 + 120)
    assert not pve_server.due("02:00", monday_0159 + 120, monday_0159 + 180)
    assert not pve_server.due("sat 02:00", monday_0159, monday_0159 + 120)
    assert pve_server.due("mon..fri 02:00", monday_0159, monday_0159 + 60)

    upids = asyncio.run_coroutine_threadsafe(lab.pve.run_backup_job(JOB), lab_loop(lab)).result(30)
    assert [u.split(":")[1] for u in upids] == ["drowzee", "hypno", "sleepy"]  # 140 on nappy: not in the job
    log = lab.pve.tasks[upids[0]]["log"]
    assert log[0].startswith("INFO: starting new backup job: vzdump 110 120 130 ")
    assert "--job-id homelab-vzdump" in log[0]
    assert "INFO: skip external VMs: 120, 130" in log
    assert log[-1] == "TASK OK"
    rb = runbook(lab)
    desired = rb.desired()
    rows = by_target(pve_backup.rows(desired, rb.observe(desired)))
    assert rows["docker-sleepy"].violation is None  # the job's run took its backup
    assert rows["k3s-nappy"].violation == "no backup job covers it; no backup"
