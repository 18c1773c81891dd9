"""Backups on every layer of the homelab, each checked against its RPO and proven by restores (runbook 06).

One module per layer, each on the runbook contract (:mod:`homelab_lib.core.contract`):

- :mod:`homelab_lib.backup.proxmox`: Proxmox's own VM backups (vzdump): the backup job that
  covers every managed VM, each VM's latest backup against its RPO, failed backup tasks; with
  ``confirm`` it fixes the job and takes the backups that are missing.

Every layer's rows are one type, :class:`homelab_lib.backup.rows.BackupRow`, which the report over
all layers (:mod:`homelab_lib.backup.report`) takes.
"""
