"""Runbook 05 for an inventory: one service's move, from the inventory to the move's adapter.

:func:`move_for` finds where the service runs (its VM and stack, or, once moved, where it came
from), sizes its claims from its volumes' data (``du`` on the Docker VM, plus headroom, whole
GiB), converts it exactly as runbook 04 will deploy it on K3s afterwards (the same manifests,
labelled as 04's, so 04's next run changes nothing), and builds the move: its volumes, its
probe through the K3s Ingress, and the placement change (recorded in ``placement_file`` when
the inventory has one, otherwise shown as the edit to make).

A notebook::

    move, conv = migration.move_for(inv, "prowlarr", backup=migration.final_backup(inv))
    display(conv.report_frame())
    desired = move.desired(); observed = move.observe(desired)
    plan = move.plan(desired, observed); contract.show_plan(plan)
    result = move.apply(desired, plan, confirm=confirm)
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from homelab_lib import clients
from homelab_lib.compose.render import project_name
from homelab_lib.convert import Conversion, convert_inventory_service
from homelab_lib.core.clock import SYSTEM, Clock
from homelab_lib.core.errors import MigrateError, NotFound
from homelab_lib.inventory.model import Inventory
from homelab_lib.inventory.placement import Move, edit_to_make
from homelab_lib.k3s.services import RUNBOOK as K3S_SERVICES
from homelab_lib.k3s.services import converted

if TYPE_CHECKING:  # the move (docker, paramiko, kubernetes) is imported when one is built
    from homelab_lib.hosts.docker import DockerHost
    from homelab_lib.migrate.desired import Backup, MoveDesired
    from homelab_lib.migrate.move import MoveAdapter


def origin(inv: Inventory, service: str) -> tuple[str, str]:
    """(VM, stack) the service runs in on Compose, or ran in before runbook 05 moved it.

    Raises:
        NotFound: no Compose stack has it and no move recorded it.
        MigrateError: it runs on several VMs (a per-host service: those stay where they are).
    """
    found = [(vm.name, stack) for vm in inv.docker_hosts for stack, names in vm.stacks.items() if service in names]
    if not found and service in inv.moved:
        vm, stack = inv.moved[service].origin.split("/")
        return vm, stack
    if not found:
        known = sorted({s for vm in inv.docker_hosts for names in vm.stacks.values() for s in names})
        raise NotFound(service, what="Compose service", known=known, where="vms[].stacks")
    if len(found) > 1:
        raise MigrateError(
            f"service {service} runs on {len(found)} VMs: a per-host service stays on its hosts",
            where=f"service {service}",
        )
    return found[0]


def measured_bytes(host: DockerHost, volumes: Iterable[str]) -> dict[str, int]:
    """The bytes of data in each Docker volume on its VM (``du -sb`` of its mountpoint).

    A volume that does not exist (yet) holds 0 bytes: its claim gets the smallest size.
    """
    from homelab_lib.hosts.docker import DockerNotFound

    used: dict[str, int] = {}
    engine = host.docker()
    for volume in volumes:
        try:
            mountpoint = engine.volumes.get(volume).attrs["Mountpoint"]
        except DockerNotFound:  # nothing to measure yet
            used[volume] = 0
            continue
        got = host.run(f"du -sb -- {shlex.quote(mountpoint)}")
        used[volume] = int(got.stdout.split()[0]) if got.ok and got.stdout.split() else 0
    return used


def move_for(
    inv: Inventory,
    service: str,
    *,
    state_dir: Path | None = None,
    backup: Backup | None = None,
    clock: Clock = SYSTEM,
) -> tuple[MoveAdapter, Conversion]:
    """The move of one Compose service to the inventory's K3s, ready for plan/apply, and its conversion.

    Args:
        inv: the inventory.
        service: the Compose service to move.
        state_dir: where each move's checkpoints are recorded (default: ``migrate/`` beside the
            inventory's ``placement_file``, else ``~/.local/state/homelab/migrate``).
        backup: the final backup (default: none, recorded as skipped).
        clock: waits and stamps.

    The move gets one :class:`~homelab_lib.hosts.docker.HostPool` with the service's Docker VM (its
    volumes are measured through it) and the K3s VM; :meth:`MoveAdapter.close` closes it.

    Raises:
        NotFound, MigrateError: the service is not one that can move (see :func:`origin`), or it keeps
            data in bind-mounted host folders the move does not copy.
        HostKeyRejected, SshError: the Docker VM or the K3s VM cannot be reached.
    """
    from homelab_lib.migrate.desired import PlacementRecord, VolumeMove, desired_of
    from homelab_lib.migrate.desired import storage_root as k3s_storage_root
    from homelab_lib.migrate.move import adapter

    if inv.k3s is None:
        raise MigrateError("the inventory has no k3s section: nowhere to move to", where=inv.name)
    if state_dir is None:  # beside the placement record, or this user's state folder
        base = inv.placement_file.parent if inv.placement_file else Path("~/.local/state/homelab").expanduser()
        state_dir = base / "migrate"
    vm, stack = origin(inv, service)
    first = convert_inventory_service(inv, vm if service not in inv.moved else None, service, service, reveal=False)
    copied = [p for p in first.volumes if p.kind == "pvc-copied"]
    binds = [p for p in copied if p.source_kind != "volume"]
    if binds:
        raise MigrateError(
            f"service {service} keeps data in host folders ({', '.join(str(p.source) for p in binds)}), "
            "which the move does not copy",
            where=f"service {service}",
            hint="move the data into a named volume first, or keep the service on Compose (see the readiness table)",
        )
    # the move's connections (the Docker VM's and the K3s VM's), opened once: closed with the move
    hosts = clients.docker_hosts(inv, sorted({vm, inv.k3s.vm}))
    try:
        # sized from the data (measured: its size plus headroom), or, once moved, as the move made the claims
        moved = inv.moved.get(service)
        used = {} if moved else measured_bytes(hosts[vm], [str(p.docker_volume or p.source) for p in copied])
        conv = convert_inventory_service(inv, vm if not moved else None, service, service, measured_bytes=used)
        sizes = {p.pvc: p.size for p in conv.volumes if p.kind == "pvc-copied"}
        address = inv.vm(inv.k3s.vm).address
        manifests, probe = converted(inv, service, address, conv)
        record = Move(service, "k3s", f"{vm}/{stack}", sizes=tuple(sorted(sizes.items())))
        placement = PlacementRecord(inv.placement_file, record) if inv.placement_file else None
        desired: MoveDesired = desired_of(
            f"{stack}/{service}",
            docker_host=vm,
            project=project_name(vm, stack),
            compose_service=service,
            manifests=manifests,
            volumes=[
                VolumeMove(str(p.docker_volume or p.source), conv.namespace, p.pvc, p.container_path) for p in copied
            ],
            storage_root=k3s_storage_root(inv),
            probes=[probe] if probe else [],
            placement=placement,
            runbook=K3S_SERVICES,
            hash_key=inv.hash_key() if any(o["kind"] == "Secret" for o in manifests) else None,
            rollout_timeout_s=inv.k3s.rollout_timeout_s,
        )
    except BaseException:
        hosts.close()
        raise
    move = adapter(
        inv,
        desired,
        state_dir=state_dir,
        backup=backup,
        write_placement=placement is not None,
        clock=clock,
        hosts=hosts,
    )
    move.owned = True
    return move, conv


def placement_note(inv: Inventory, service: str) -> str:
    """What happens to the inventory when the move is done: recorded, or the edit to make by hand."""
    vm, stack = origin(inv, service)
    if inv.placement_file:
        return f"the move is recorded in {inv.placement_file}; every later run places {service} on K3s"
    return "no placement_file: after the move, " + edit_to_make(service, f"{vm}/{stack}", "k3s")


def final_backup(inv: Inventory) -> Backup | None:
    """The move's final backup through runbook 06's restic layer, when the inventory has a repository."""
    if not inv.backups.restic_repository or inv.backups.restic_password is None:
        return None

    def run(desired: MoveDesired) -> str:
        from homelab_lib.backup.runbook import backup_service_now

        results = backup_service_now(inv, desired.compose_service, host=desired.docker_host)
        return ", ".join(f"{r.target.name}: {r.snapshot}" for r in results)

    return run
