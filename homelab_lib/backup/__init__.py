"""Backups on every layer of the homelab, each checked against its RPO and proven by restores (runbook 06).

Two layers, each on the runbook contract (:mod:`homelab_lib.core.contract`):

- **VMs, through Proxmox** (:mod:`homelab_lib.backup.vzdump`, adapter ``vzdump``): Proxmox's own VM
  backups. The backup job that covers every managed VM, each VM's latest backup against its RPO,
  failed backup tasks; with ``confirm`` it fixes the job and takes the backups that are missing.
  Split as :mod:`homelab_lib.proxmox` is: ``state`` (the frozen desired and observed, the
  :class:`~homelab_lib.backup.vzdump.state.VzdumpTarget` VMs), ``desired``, ``observe``, ``plan``,
  ``apply``, ``report`` (its rows and :func:`~homelab_lib.backup.vzdump.report.check_rpo`), ``runbook``.
- **Docker volumes and PVCs, through restic** (:mod:`homelab_lib.backup.runbook`, adapter ``backup``):
  every named volume of the stacks and every PVC of the K3s services, backed up where the data is and
  restore-tested. :mod:`.targets` lists them (:class:`~homelab_lib.backup.targets.VolumeTarget`) and
  finds each one's folder; :mod:`.volumes` backs up and restore-tests "a host and a folder";
  :mod:`.restic` runs restic over SSH; :mod:`.hooks` holds the consistency hooks (stop, pg_dumpall,
  redis_bgsave) by the catalog's name.

Every layer's rows are one type, :class:`homelab_lib.backup.rows.BackupRow`, which the report over
all layers (:mod:`homelab_lib.backup.report`: the table, the charts, the Prometheus textfile, the
verdict) takes.
"""
