"""Moving one service's data and workload from Compose to K3s, as a plan of checkpoints, on the runbook contract.

The move takes the converter's output as its input (:class:`~homelab_lib.migrate.desired.MoveDesired`:
the service's manifests, and per volume the Docker volume and the PVC it goes to) and carries it out
in eight checkpoints (:data:`~homelab_lib.migrate.state.CHECKPOINTS`):

1. ``backup``: the final backup, by the function given (none given: recorded as skipped);
2. ``stop``: the service's Compose containers stopped through the Docker Engine API on its VM;
   their ids, and each volume's Mountpoint and checksum manifest, recorded;
3. ``pvcs``: the PVCs applied (server-side), bound by a short-lived pod that mounts them and
   runs nothing (local-path binds on first consumer), each PV's folder read
   (``spec.hostPath.path`` or ``spec.local.path``; it must lie under the storage root);
4. ``copy``: each volume streamed host to host (:func:`homelab_lib.migrate.copy.stream`); a copy
   that breaks leaves the service stopped and the state recorded: the next run skips the volumes
   already copied and copies the cut one again from scratch;
5. ``verify``: file count, total bytes and per-file sha256 of both sides (and the source still as
   at the stop); a difference fails naming the paths;
6. ``apply``: every manifest by server-side apply, the rollout waited for, health probed through
   the new Ingress (:class:`~homelab_lib.kube.runbook.Probe`);
7. ``placement``: the inventory's edit (:class:`~homelab_lib.migrate.desired.PlacementEdit`) shown,
   or written when asked;
8. ``cleanup``: the Compose containers removed; the volumes stay (a ``delete`` each, carried out
   only with ``allow_delete``).

Any failure after ``stop`` (but a broken copy stream, which resumes) rolls back
(:mod:`homelab_lib.migrate.rollback`; :meth:`MoveAdapter.rollback` on demand): what was created on
K3s is deleted (workload, Service, PVCs, PV folders), each volume's manifest is proved equal to the
one taken at the stop, and the Compose containers are started again on their original volumes and
waited for; then
:class:`~homelab_lib.core.errors.RolledBack` is raised. A failure before the stop (the K3s API does
not answer: observe reads it first) stops nothing.

Every completed checkpoint is written at once to the service's state record
(:mod:`homelab_lib.migrate.state`) and returned in the run's ``ApplyResult.facts``; the plan marks
recorded checkpoints as no-ops, so a later run resumes after the last one completed.

The steps live by module, as :mod:`homelab_lib.proxmox`'s do: :mod:`.desired` (the move, the
placement change), :mod:`.observe`, :mod:`.plan` (pure), :mod:`.checkpoints` (each checkpoint),
:mod:`.rollback`, :mod:`.status` (what verify reads); :mod:`.reach` names the hosts and the cluster
a move works on. This module is the adapter that runs them on the contract. Its connections come
from the :class:`~homelab_lib.hosts.docker.HostPool` it is given (the Docker VM's and the K3s VM's);
it keeps none of its own.

A runbook::

    hosts = clients.docker_hosts(inv, ["docker-a", "k3s-a"])
    move = MoveAdapter(desired, hosts=hosts, k3s="k3s-a", kube=lambda: Kube(kubeconfig, where="k3s"),
                       state_dir=Path("archive"))
    observed = move.observe(desired)
    plan = move.plan(desired, observed)          # done / remaining checkpoints; space refused here
    result = move.apply(desired, plan, confirm=confirm, allow_delete=allow_delete)
    verified = move.verify(desired, result)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from homelab_lib.core.clock import SYSTEM, Clock
from homelab_lib.core.contract import (
    DONE,
    FAILED,
    NOT_STARTED,
    Adapter,
    ApplyResult,
    BaseAdapter,
    Carried,
    Outcome,
    VerifyResult,
)
from homelab_lib.core.errors import CopyFailed, MigrateError, MigrateRefused, RollbackFailed, RolledBack, mapped
from homelab_lib.core.plan import Action, Change, Plan
from homelab_lib.core.progress import Progress
from homelab_lib.hosts.docker import ENGINE_ERRORS, HostPool
from homelab_lib.kube.client import Kube
from homelab_lib.migrate import checkpoints
from homelab_lib.migrate import state as records
from homelab_lib.migrate.checkpoints import Faults, summary
from homelab_lib.migrate.desired import Backup, MoveDesired
from homelab_lib.migrate.observe import MoveObserved, observe
from homelab_lib.migrate.plan import plan_move
from homelab_lib.migrate.reach import Reach
from homelab_lib.migrate.rollback import rollback
from homelab_lib.migrate.state import AFTER_STOP, MoveState
from homelab_lib.migrate.status import MoveReport, move_status

if TYPE_CHECKING:
    from homelab_lib.inventory.model import Inventory


class MoveAdapter(BaseAdapter[MoveDesired, MoveObserved, MoveReport]):
    """Move one service from Compose to K3s with its data, by the contract's rules; rolls back after the stop.

    Args:
        desired: the move (see :func:`~homelab_lib.migrate.desired.desired_of`), or a function that makes it.
        hosts: the open hosts: the service's Docker VM (``desired.docker_host``: its engine, and SSH for
            the copy) and the K3s VM (SSH: PV folders, df). The caller closes them, unless the move
            owns them (:attr:`owned`, as :func:`adapter` opens them).
        k3s: the K3s VM's name in ``hosts``.
        kube: opens the cluster client (called at the first observe).
        state_dir: the run archive's folder; the state record is ``<state_dir>/migrate/<service>.json``.
        backup: the final backup (None: the backup checkpoint is recorded as skipped).
        write_placement: write the placement edit back to the inventory (else it is shown).
        faults: fault hooks (tests).
        clock: the clock waits go by.
    """

    name = "migrate"
    world = "the Compose service and the cluster"
    conflicts_block = True

    def __init__(
        self,
        desired: MoveDesired | Callable[[], MoveDesired],
        *,
        hosts: HostPool,
        k3s: str,
        kube: Callable[[], Kube],
        state_dir: Path,
        backup: Backup | None = None,
        write_placement: bool = False,
        faults: Faults | None = None,
        clock: Clock = SYSTEM,
    ) -> None:
        self._make = desired if callable(desired) else (lambda: desired)
        self.hosts = hosts
        self.k3s_vm = k3s
        self._open_kube = kube
        self._kube: Kube | None = None
        self.state_dir = state_dir
        self.backup = backup
        self.write_placement = write_placement
        self.faults = faults or Faults()
        self.clock = clock
        self.owned = False  # close the hosts with the move (:func:`adapter` opened them)

    @property
    def kube(self) -> Kube:
        if self._kube is None:
            self._kube = self._open_kube()
        return self._kube

    def reach(self, desired: MoveDesired) -> Reach:
        """The move's hosts (from the pool) and its cluster.

        Raises:
            MigrateError: the pool has no connection to the Docker VM or the K3s VM.
        """
        for vm in (desired.docker_host, self.k3s_vm):
            if vm not in self.hosts:
                raise MigrateError(
                    f"no connection to VM {vm} among the hosts given ({', '.join(sorted(self.hosts)) or 'none'})",
                    where=desired.service,
                    hint="open the Docker VM and the K3s VM in one HostPool (clients.docker_hosts) and pass it",
                )
        return Reach(self.hosts[desired.docker_host], self.hosts[self.k3s_vm], lambda: self.kube)

    # --------------------------------------------------------- the contract's steps

    def desired(self) -> MoveDesired:
        return self._make()

    def observe(self, desired: MoveDesired) -> MoveObserved:
        """The state record, the K3s API (first: unreachable stops here), the Compose containers, volumes, space.

        Raises:
            K3sUnreachable: the Kubernetes API does not answer; nothing was changed.
            EngineUnreachable, SshError: the Docker VM or the K3s VM cannot be reached.
        """
        return observe(self.reach(desired), desired, self.state_dir)

    def plan(self, desired: MoveDesired, observed: MoveObserved) -> Plan:
        """The checkpoints done (no-ops) and remaining, refusals (space, nothing to move), volume deletes."""
        return plan_move(self.name, desired, observed, backup=self.backup is not None, write=self.write_placement)

    def refuse_conflicts(self, plan: Plan) -> None:
        raise MigrateRefused([f"{c.kind} {c.target} ({c.where or '-'}): {c.reason}" for c in plan.conflicts])

    def carry_out(
        self,
        desired: MoveDesired,
        observed: MoveObserved,
        plan: Plan,
        todo: Sequence[Change],
        *,
        allow_delete: bool,
        progress: Progress,
        clock: Clock,
    ) -> Carried:
        st = observed.state
        outcomes: list[Outcome] = []
        steps: list[str] = []
        facts: dict[str, str] = {}
        checkpoints = [c for c in todo if c.kind == "checkpoint"]
        task = progress.task(f"migrate {desired.service}", len(checkpoints))
        for n, change in enumerate(checkpoints):
            cp = change.target
            began = clock.monotonic()
            try:
                got, st = self._checkpoint(cp, desired, observed, st, progress, clock)
            except CopyFailed as e:  # no rollback: the record (saved per volume by the copy) lets a re-run resume
                e.hint = (
                    f"run again to resume: {len(st.copied)} volume(s) copied are kept, the one cut short is "
                    "copied again from scratch; or run with rollback=True to bring the Compose service back"
                )
                raise
            except Exception as e:
                if not st.stopped or cp not in AFTER_STOP:
                    raise
                try:
                    undone = rollback(
                        self.reach(desired),
                        desired,
                        st,
                        state_dir=self.state_dir,
                        write_placement=self.write_placement,
                        clock=clock,
                    )
                except RollbackFailed as failed:
                    failed.message = f"{cp} failed ({e}); {failed.message}"
                    raise
                outcomes.append(Outcome.of(change, FAILED, str(e), clock.monotonic() - began))
                outcomes += [Outcome.of(c, NOT_STARTED) for c in checkpoints[n + 1 :]]
                raise RolledBack(
                    f"checkpoint {cp} failed ({e}); rolled back: the Compose service runs again "
                    "on its unchanged volumes",
                    checkpoint=cp,
                    cause=e,
                    undone=undone,
                    where=f"{desired.service} ({cp})",
                    hint="fix the cause, then plan again: the move starts over from its backup",
                ) from e
            st = st.with_done(cp, clock.now().isoformat(timespec="seconds"), got)
            records.save(self.state_dir, st)
            facts.update({f"{cp}.{k}": v for k, v in got.items()})
            steps.append(f"{cp}: done")
            outcomes.append(Outcome.of(change, DONE, summary(cp, got), clock.monotonic() - began))
            task.advance(cp)
        task.done()
        for change in todo:
            if change.kind == "volume" and change.action == Action.DELETE and allow_delete:
                began = clock.monotonic()
                reach = self.reach(desired)
                with mapped(ENGINE_ERRORS, where=reach.docker):
                    reach.engine().volumes.get(change.target).remove()
                steps.append(f"volume {change.target}: removed")
                outcomes.append(Outcome.of(change, DONE, "removed", clock.monotonic() - began))
        facts["state"] = str(records.state_path(self.state_dir, desired.service))
        facts["last_checkpoint"] = st.last
        return Carried(tuple(outcomes), tuple(steps), facts)

    def check(self, desired: MoveDesired, result: ApplyResult) -> VerifyResult[MoveReport]:
        """Every checkpoint recorded; workloads ready; each volume's checksums equal on both sides; probes answer."""
        return move_status(self.name, self.reach(desired), desired, result, self.state_dir)

    def close(self) -> None:
        """Close the cluster client, and the hosts when the move owns them."""
        if self._kube is not None:
            self._kube.api.close()  # type: ignore[no-untyped-call]
            self._kube = None
        if self.owned:
            self.hosts.close()
            self.owned = False

    # --------------------------------------------------------- checkpoints

    def _checkpoint(
        self, cp: str, desired: MoveDesired, observed: MoveObserved, st: MoveState, progress: Progress, clock: Clock
    ) -> tuple[dict[str, str], MoveState]:
        reach = self.reach(desired)
        if cp == "backup":
            made = self.backup(desired) if self.backup is not None else ""
            return {"backup": made or "skipped: no backup function given"}, st
        if cp == "stop":
            return checkpoints.stop(reach, desired, observed, self.state_dir), st
        if cp == "pvcs":
            return checkpoints.pvcs(reach, desired, clock), st
        if cp == "copy":
            return checkpoints.copy(reach, desired, st, progress, state_dir=self.state_dir, faults=self.faults)
        if cp == "verify":
            return checkpoints.verify(reach, desired, st, self.state_dir), st
        if cp == "apply":
            return checkpoints.apply(reach, desired, clock), st
        if cp == "placement":
            return checkpoints.placement(desired, write=self.write_placement), st
        if cp == "cleanup":
            return checkpoints.cleanup(reach, st), st
        raise MigrateError(f"unknown checkpoint {cp!r}", where=desired.service)

    # --------------------------------------------------------- rollback

    def rollback(self, desired: MoveDesired, clock: Clock | None = None) -> tuple[str, ...]:
        """Undo a stopped move now: K3s objects and PV folders removed, Compose back on unchanged volumes.

        Returns:
            One line per thing done (nothing when the service was never stopped by a move).

        Raises:
            RollbackFailed: a step failed, or a volume differs from its manifest at the stop.
        """
        st = records.load(self.state_dir, desired.service)
        if not st.stopped:
            return ()
        return rollback(
            self.reach(desired),
            desired,
            st,
            state_dir=self.state_dir,
            write_placement=self.write_placement,
            clock=clock or self.clock,
        )


def adapter(
    inv: Inventory,
    desired: MoveDesired,
    *,
    state_dir: Path,
    backup: Backup | None = None,
    write_placement: bool = False,
    clock: Clock = SYSTEM,
    hosts: HostPool | None = None,
) -> MoveAdapter:
    """Runbook 05's move for an inventory: its Docker VM and K3s VM over SSH, the kubeconfig runbook 03 fetched.

    Args:
        hosts: the open hosts to use (the Docker VM and the K3s VM); None: both are opened now, and
            closed by :meth:`MoveAdapter.close`.

    Raises:
        MigrateError: the inventory has no K3s section.
        HostKeyRejected, SshError: the Docker VM or the K3s VM cannot be reached.
    """
    from homelab_lib import clients

    k3s = inv.k3s
    if k3s is None:
        raise MigrateError("the inventory has no k3s section: nowhere to move to", where=inv.name)

    pool = hosts if hosts is not None else clients.docker_hosts(inv, sorted({desired.docker_host, k3s.vm}))
    move = MoveAdapter(
        desired,
        hosts=pool,
        k3s=k3s.vm,
        kube=lambda: clients.k3s_kube(inv),
        state_dir=state_dir,
        backup=backup,
        write_placement=write_placement,
        clock=clock,
    )
    move.owned = hosts is None
    return move


if TYPE_CHECKING:  # mypy proves the class offers the contract's steps, names and arguments
    _contract: type[Adapter[MoveDesired, MoveObserved, MoveReport]] = MoveAdapter


__all__ = ["MoveAdapter", "adapter"]
