"""The Proxmox layer of runbook 06: vzdump backup jobs, each managed VM's latest backup, its age against its RPO.

Everything goes through the Proxmox adapter's client (:class:`~homelab_lib.clients.proxmox.ProxmoxClient`,
its error table) and task waiter (:func:`~homelab_lib.clients.tasks.wait_task`):

- **jobs**: ``GET /cluster/backup``; a job covers a VM when it is enabled and selects it (``vmid``
  list, ``all`` minus ``exclude``, or ``pool``; a job's ``node`` limits it to that node);
- **backups**: each backup storage's content (``content=backup``) on every online node, shared
  storages once: time, size, storage, notes, ``protected``, and the ``verification`` state where
  Proxmox Backup Server reports one;
- **failed tasks**: ``vzdump`` tasks that ended in error within a window (``nodes/{node}/tasks``),
  with their log's last lines and the VMs their ``ERROR: Backup of VM ... failed`` lines name;
- **targets** (:class:`VzdumpTarget`): the inventory's VMs and any other VM carrying
  ``proxmox.managed_tag``; the RPO of each is ``backups.rpo_hours[name]``, else ``backups.vzdump.rpo_hours``.

The plan (pure) has one ``backup-job`` change, to create or fix the inventory's job
(``backups.vzdump``: ``job_id``, ``schedule``, ``storage``, ``mode``, ``keep_daily`` as
``prune-backups``, ``notes_template``) so that it covers every target, and one ``vzdump`` change per
target: ``create`` (a backup now, as a vzdump task waited on) when it has none within its RPO,
else a no-op; a target missing from the cluster or on an offline node is a conflict, reported and
left out while the rest is applied. Times in the plan are the backups' own (never the age, which
moves), so the plan made for the dry run is the one a confirmed apply re-checks.

One module per step, as :mod:`homelab_lib.proxmox` is split: :mod:`.state` (the frozen desired and
observed, and :func:`targets`), :mod:`.desired`, :mod:`.observe`, :mod:`.plan`, :mod:`.apply`,
:mod:`.report` (the rows, :class:`VzdumpReport`, :func:`check_rpo`) and :mod:`.runbook` (the adapter).

A runbook::

    from homelab_lib.backup import vzdump
    runbook = vzdump.adapter(inv)
    desired = runbook.desired()
    observed = runbook.observe(desired)
    plan = runbook.plan(desired, observed)
    contract.show_plan(plan)
    result = runbook.apply(desired, plan, confirm=confirm, approved_plan=approved_plan)
    verified = runbook.verify(desired, result)  # after a confirmed run, a target still out of its RPO raises
    display(verified.report.table())            # one row per VM (this layer's COLUMNS), violations first
    vzdump.check_rpo(verified.report.rows)      # raises RpoViolated, naming each target
"""

from homelab_lib.backup.rows import BackupRow
from homelab_lib.backup.vzdump.apply import carry_out, vzdump
from homelab_lib.backup.vzdump.desired import desired_state
from homelab_lib.backup.vzdump.observe import observe
from homelab_lib.backup.vzdump.plan import plan, wanted_job
from homelab_lib.backup.vzdump.report import COLUMNS, VzdumpReport, check_rpo, rows
from homelab_lib.backup.vzdump.runbook import ProxmoxBackupAdapter, adapter
from homelab_lib.backup.vzdump.state import (
    LAYER,
    BackupJob,
    Desired,
    FailedTask,
    Guest,
    JobSpec,
    Observed,
    VzdumpBackup,
    VzdumpTarget,
    targets,
)

__all__ = [
    "COLUMNS",
    "LAYER",
    "BackupJob",
    "BackupRow",
    "Desired",
    "FailedTask",
    "Guest",
    "JobSpec",
    "Observed",
    "ProxmoxBackupAdapter",
    "VzdumpBackup",
    "VzdumpReport",
    "VzdumpTarget",
    "adapter",
    "carry_out",
    "check_rpo",
    "desired_state",
    "observe",
    "plan",
    "rows",
    "targets",
    "vzdump",
    "wanted_job",
]
