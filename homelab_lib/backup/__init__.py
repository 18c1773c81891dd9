"""Backups proven by restores (runbook 06): Proxmox vzdump, Docker volumes and PVCs.

Submodules: ``proxmox`` (vzdump jobs and backups through the Proxmox adapter), ``restic``
(restic run over SSH on the host where the data is), ``targets`` (the Docker volumes and PVCs
to back up, and where their folders are), ``hooks`` (consistency per service, from the
catalog), ``volumes`` (back up, restore-test, check), ``report`` (one table over every layer,
charts, the Prometheus textfile and the final verdict) and ``runbook`` (the runbook contract).
"""
