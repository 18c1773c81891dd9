"""The Docker-volume and PVC backup layers on the runbook contract (:mod:`homelab_lib.core.contract`): runbook 06.

desired = the targets (every named volume of every stack on the Docker VMs; every PVC of the
K3s services' namespaces) and the repository; observed = whether the repository is there and
each target's latest data snapshot (``restic snapshots --json``, one listing), at one moment;
plan = create the repository if it is missing (``restic init``, only ever with confirm), back up
every target with no snapshot or one past its RPO, nothing for the rest; apply = the contract's
rules, then each backup (a target that fails is recorded as failed and the others go on);
verify = each target backed up now has a snapshot within its RPO, and the report: a row per
target (age against RPO), the restore tests (when ``restore_test``), ``restic check
--read-data-subset`` and the repository's size.

A runbook::

    runbook = backup.runbook.adapter(inv, layers=("docker", "k3s"), restore_test=True, sample_percent=5)
    desired = runbook.desired()
    observed = runbook.observe(desired)
    plan = runbook.plan(desired, observed)
    contract.show_plan(plan)
    result = runbook.apply(desired, plan, confirm=confirm)
    verified = runbook.verify(desired, result)
    df = backup.report.frame(proxmox_rows, verified.report.rows)     # display it, then:
    backup.report.write_textfile(df, textfile_path)
    backup.report.raise_on_violations(df)                              # fails the run after the report

The migration runbook's "final backup" is :func:`backup_service_now`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from homelab_lib.backup.report import record_size, volume_rows
from homelab_lib.backup.restic import Repository, Restic, Snapshot, shown
from homelab_lib.backup.rows import BackupRow
from homelab_lib.backup.targets import Located, VolumeTarget, docker_targets, k3s_targets, locate_pvc, locate_volume
from homelab_lib.backup.volumes import (
    BackupResult,
    CheckResult,
    RestoreResult,
    backup_target,
    check_repository,
    ensure_repository,
    latest_by_target,
    restore_test,
)
from homelab_lib.core.clock import SYSTEM, Clock
from homelab_lib.core.contract import (
    DONE,
    FAILED,
    Adapter,
    ApplyResult,
    BaseAdapter,
    Carried,
    Check,
    Outcome,
    VerifyResult,
)
from homelab_lib.core.errors import BackupError, ConfigError, HomelabError, Problem
from homelab_lib.core.plan import Action, Change, Plan
from homelab_lib.core.progress import Progress

if TYPE_CHECKING:
    from homelab_lib.hosts.docker import DockerHost, HostPool
    from homelab_lib.inventory.model import Inventory
    from homelab_lib.kube.client import Kube

Key = tuple[str, str, str, str, str]


def key_of(t: VolumeTarget) -> Key:
    return (t.layer, t.host, t.stack, t.service, t.volume)


def repository(inv: Inventory) -> Repository:
    """The inventory's restic repository and password reference.

    Raises:
        ConfigError: ``backups.restic_repository`` or ``backups.restic_password`` is not set.
    """
    b = inv.backups
    where = str(inv.source_files[0]) if inv.source_files else inv.name
    if not b.restic_repository or b.restic_password is None:
        missing = "restic_repository" if not b.restic_repository else "restic_password"
        raise ConfigError(
            [Problem(where, 0, f"backups.{missing}", "is needed to back up Docker volumes and PVCs with restic")]
        )
    return Repository(b.restic_repository, b.restic_password)


@dataclass(frozen=True)
class BackupDesired:
    """The targets and where their backups go.

    Attributes:
        targets: every Docker volume and PVC to back up, in inventory order.
        repository: the restic repository.
        scratch: the folder restore tests restore into, on each host.
        restore_test: restore-test every target at verify.
        sample_percent: ``restic check --read-data-subset`` at verify (0: metadata only; None: no check).
    """

    targets: tuple[VolumeTarget, ...]
    repository: Repository
    scratch: str
    restore_test: bool = True
    sample_percent: float | None = 5.0


@dataclass(frozen=True)
class BackupObserved:
    """The repository at one moment: whether it is there, and each target's latest data snapshot."""

    now: datetime
    exists: bool
    latest: Mapping[Key, Snapshot] = field(default_factory=dict)


@dataclass(frozen=True)
class BackupReport:
    """What verify read: a report row per target, the restore tests, the check, the repository's size."""

    rows: tuple[BackupRow, ...]
    restores: tuple[RestoreResult, ...] = ()
    check: CheckResult | None = None
    stats: Mapping[str, Any] = field(default_factory=dict)


def plan_backups(desired: BackupDesired, observed: BackupObserved) -> Plan:
    """Pure: ``restic init`` when the repository is missing; a backup per target with none or past its RPO."""
    changes = []
    if not observed.exists:
        changes.append(
            Change("repository", shown(desired.repository.location), Action.CREATE, reason="restic init", order=0)
        )
    for t in desired.targets:
        snap = observed.latest.get(key_of(t))
        if snap is None:
            changes.append(Change("backup", t.name, Action.CREATE, t.host, reason="no backup", order=1))
        elif (observed.now - snap.time).total_seconds() > t.rpo_hours * 3600:
            changes.append(Change("backup", t.name, Action.UPDATE, t.host, reason="past its RPO", order=1))
        else:
            changes.append(Change("backup", t.name, Action.NOOP, t.host, reason="within its RPO", order=1))
    return Plan.of(changes, adapter="backup")


class BackupAdapter(BaseAdapter[BackupDesired, BackupObserved, BackupReport]):
    """Runbook 06's Docker-volume and PVC layers.

    Args:
        inv: the inventory.
        layers: ``docker`` and/or ``k3s``.
        restore_test: restore-test every target at verify.
        sample_percent: ``restic check --read-data-subset`` percentage at verify (None: no check).
        hosts: open SSH hosts by VM name (default: connected when first needed, closed by :meth:`close`).
        kube: the K3s cluster's client (default: from ``k3s.kubeconfig``).
        state_file: where each run's repository size is appended (for the size chart); None: not kept.
        clock: stamps, ages and waits.
    """

    name = "backup"
    world = "the backup repository"

    def __init__(
        self,
        inv: Inventory,
        *,
        layers: Sequence[str] = ("docker", "k3s"),
        restore_test: bool = True,
        sample_percent: float | None = 5.0,
        hosts: Mapping[str, DockerHost] | None = None,
        kube: Kube | None = None,
        state_file: Path | None = None,
        clock: Clock = SYSTEM,
    ) -> None:
        self.inv = inv
        self.layers = tuple(layers)
        self.restore_test = restore_test
        self.sample_percent = sample_percent
        self._hosts: dict[str, DockerHost] = dict(hosts or {})
        self._own: list[HostPool] = []  # the pools this adapter opened (one per VM it reached itself)
        self._kube = kube
        self.state_file = state_file
        self.clock = clock

    def __repr__(self) -> str:
        return f"BackupAdapter({self.inv.name}, layers={list(self.layers)})"

    # ---------------------------------------------------------------- connections

    def host(self, name: str) -> DockerHost:
        """The SSH connection to a VM (opened now if it is not yet, host key checked)."""
        if name not in self._hosts:
            from homelab_lib import clients

            opened = clients.docker_hosts(self.inv, [name])
            self._own.append(opened)
            self._hosts[name] = opened[name]
        return self._hosts[name]

    def kube(self) -> Kube:
        if self._kube is None:
            from homelab_lib.core.errors import K3sError
            from homelab_lib.kube.client import Kube

            k3s = self.inv.k3s
            if k3s is None or k3s.kubeconfig is None or not k3s.kubeconfig.exists():
                raise K3sError(
                    "no kubeconfig for the K3s cluster",
                    where="backup, layer k3s",
                    hint="run 03_bootstrap_k3s with confirm=True first, or leave k3s out of layers",
                )
            self._kube = Kube(k3s.kubeconfig, where=f"K3s on {k3s.vm}")
        return self._kube

    def restic(self, host: str) -> Restic:
        return Restic(self.host(host), repository(self.inv))

    def _any_host(self, desired: BackupDesired) -> str:
        if desired.targets:
            return desired.targets[0].host
        hosts = [vm.name for vm in self.inv.docker_hosts]
        if not hosts:
            raise BackupError("no Docker VM and no target: nowhere to run restic", where="backup")
        return hosts[0]

    def locate(self, t: VolumeTarget) -> tuple[Located, Any]:
        """The target's folder, and the client its hook acts through (docker SDK for a volume, Kube for a PVC)."""
        if t.layer == "docker":
            host = self.host(t.host)
            engine = host.docker()
            return locate_volume(engine, t, where=host.where), engine
        kube = self.kube()
        return locate_pvc(kube, t), kube

    # ---------------------------------------------------------------- the contract's steps

    def desired(self) -> BackupDesired:
        """The targets: the stacks' volumes (inventory) and the K3s services' PVCs (read from the cluster)."""
        targets: list[VolumeTarget] = []
        if "docker" in self.layers:
            targets += docker_targets(self.inv)
        if "k3s" in self.layers and self.inv.k3s is not None:
            targets += k3s_targets(self.inv, self.kube())
        return BackupDesired(
            tuple(targets),
            repository(self.inv),
            self.inv.backups.restore_scratch,
            self.restore_test,
            self.sample_percent,
        )

    def observe(self, desired: BackupDesired) -> BackupObserved:
        """Whether the repository is there, and the latest snapshot of every target (reads only)."""
        restic = self.restic(self._any_host(desired))
        now = self.clock.now()
        if not restic.exists():
            return BackupObserved(now, False)
        return BackupObserved(now, True, latest_by_target(restic))

    def plan(self, desired: BackupDesired, observed: BackupObserved) -> Plan:
        return plan_backups(desired, observed)

    def carry_out(
        self,
        desired: BackupDesired,
        observed: BackupObserved,
        plan: Plan,
        todo: Sequence[Change],
        *,
        allow_delete: bool,
        progress: Progress,
        clock: Clock,
    ) -> Carried:
        by_name = {t.name: t for t in desired.targets}
        outcomes: list[Outcome] = []
        task = progress.task("backups", len(todo))
        for change in todo:
            start = clock.monotonic()
            try:
                if change.kind == "repository":
                    ensure_repository(self.restic(self._any_host(desired)), confirm=True)
                    detail = "restic init"
                else:
                    t = by_name[change.target]
                    located, engine = self.locate(t)
                    done = backup_target(self.restic(t.host), located, engine=engine, clock=clock)
                    detail = f"snapshot {done.snapshot}: {done.files} file(s), {done.size_bytes} bytes"
                outcomes.append(Outcome.of(change, DONE, detail, clock.monotonic() - start))
            except HomelabError as e:
                outcomes.append(Outcome.of(change, FAILED, str(e), clock.monotonic() - start))
                if change.kind == "repository":
                    task.done("the repository could not be created")
                    return Carried(tuple(outcomes))
            task.advance(change.target)
        task.done()
        return Carried(tuple(outcomes))

    def check(self, desired: BackupDesired, result: ApplyResult) -> VerifyResult[BackupReport]:
        """Each target backed up now has a snapshot within its RPO; the report (rows, restore tests, check, size)."""
        observed = self.observe(desired)
        failures: dict[str, str] = {
            o.target: f"backup failed now: {o.detail.splitlines()[0]}"
            for o in result.outcomes
            if o.kind == "backup" and o.result == FAILED
        }
        restores: list[RestoreResult] = []
        check: CheckResult | None = None
        stats: dict[str, Any] = {}
        if observed.exists:
            if desired.restore_test:
                for t in desired.targets:
                    if key_of(t) not in observed.latest:
                        continue
                    try:
                        located, engine = self.locate(t)
                        restores.append(
                            restore_test(
                                self.restic(t.host),
                                located,
                                scratch_root=desired.scratch,
                                engine=engine,
                                clock=self.clock,
                                snapshot=observed.latest[key_of(t)],
                            )
                        )
                    except HomelabError as e:
                        failures[t.name] = f"restore test failed: {e}"
            restic = self.restic(self._any_host(desired))
            if desired.sample_percent is not None:
                check = check_repository(restic, read_data_percent=desired.sample_percent)
            stats = restic.stats()
            if self.state_file is not None:
                record_size(self.state_file, observed.now, stats, shown(desired.repository.location))
        rows = volume_rows(desired.targets, observed.latest, observed.now, restores=restores, failures=failures)
        if check is not None and not check.ok:
            rows = [
                r if not any(f"snapshot {s}" in r.result for s in check.snapshots) else _with(r, "restic check failed")
                for r in rows
            ]
        checks = []
        for o in result.outcomes:
            if o.kind == "backup" and o.result == DONE:
                row = next(r for r in rows if r.target == o.target)
                fresh = row.age_hours is not None and row.age_hours <= row.rpo_hours
                detail = "snapshot within its RPO" if fresh else row.violation or "no snapshot within its RPO"
                checks.append(Check("backup", o.target, o.where, fresh, detail))
        if check is not None:
            checks.append(Check("repository", shown(desired.repository.location), "", check.ok, check.detail))
        note = f"{sum(r.ok for r in restores)} of {len(restores)} restore test(s) pass"
        return VerifyResult(
            self.name, result.confirmed, tuple(checks), BackupReport(tuple(rows), tuple(restores), check, stats), note
        )

    def close(self) -> None:
        """Close the SSH connections this adapter opened."""
        for pool in self._own:
            for name in pool:
                del self._hosts[name]
            pool.close()
        self._own.clear()


def _with(row: BackupRow, problem: str) -> BackupRow:
    from dataclasses import replace

    return replace(row, violation="; ".join(p for p in (row.violation, problem) if p))


if TYPE_CHECKING:  # mypy proves the class offers the contract's steps, names and arguments
    _contract: type[Adapter[BackupDesired, BackupObserved, BackupReport]] = BackupAdapter


def adapter(
    inv: Inventory,
    *,
    layers: Sequence[str] = ("docker", "k3s"),
    restore_test: bool = True,
    sample_percent: float | None = 5.0,
    state_file: Path | None = None,
) -> BackupAdapter:
    """Runbook 06's adapter for the Docker-volume and PVC layers (hosts are connected when first needed)."""
    return BackupAdapter(
        inv, layers=layers, restore_test=restore_test, sample_percent=sample_percent, state_file=state_file
    )


def backup_service_now(
    inv: Inventory,
    service: str,
    *,
    host: str = "",
    hosts: Mapping[str, DockerHost] | None = None,
    confirm: bool = True,
    clock: Clock = SYSTEM,
    after: Callable[[BackupResult], None] | None = None,
) -> list[BackupResult]:
    """Back up one service's Docker volumes now (its hook, manifest, tags), whatever their age: the
    migration runbook's "final backup" before it moves the data.

    Args:
        inv: the inventory.
        service: the service (every stack and host that runs it, or only ``host``).
        host: limit to this Docker VM.
        hosts: open SSH hosts by VM name (default: opened and closed here).
        confirm: may create the repository if it is missing.
        clock: stamps and waits.
        after: called with each result as it is taken (progress).

    Raises:
        BackupError: the service has no volume on the Docker VMs; or (the first) failure of a
            target, which stops the rest (a final backup must be whole).
    """
    targets = [t for t in docker_targets(inv, services=[service]) if not host or t.host == host]
    if not targets:
        raise BackupError(
            f"service {service} has no volume in any stack" + (f" on {host}" if host else ""),
            where="backup",
            hint="check the VM's stacks: and the service's volumes: in the inventory",
        )
    runbook = BackupAdapter(inv, layers=("docker",), hosts=hosts, clock=clock)
    try:
        ensure_repository(runbook.restic(targets[0].host), confirm=confirm)
        results = []
        for t in targets:
            located, engine = runbook.locate(t)
            done = backup_target(runbook.restic(t.host), located, engine=engine, clock=clock)
            results.append(done)
            if after is not None:
                after(done)
        return results
    finally:
        runbook.close()
