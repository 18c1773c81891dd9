"""The row of runbook 06's report: one backup target, on any layer.

Every layer makes :class:`BackupRow` (the Proxmox layer :func:`homelab_lib.backup.vzdump.rows`, Docker
volumes and PVCs :func:`homelab_lib.backup.report.volume_rows`) and the report
(:func:`homelab_lib.backup.report.frame`) takes them all, :data:`COLUMNS` in that order. The row lives
here, apart from the report, so that a layer makes its rows without loading pandas and matplotlib.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

#: The columns every layer's table starts with: the target, its latest backup against its RPO.
LEADING = ("layer", "target", "last_backup", "age_hours", "rpo_hours", "size_bytes")
#: The report's columns (issue 12: layer, target, last backup, age, RPO, size, last restore test, result).
COLUMNS = (*LEADING, "last_restore_test", "result", "violation")


@dataclass(frozen=True)
class BackupRow:
    """One target of the backup report (the same type on every layer).

    Attributes:
        layer: ``proxmox``, ``docker`` or ``k3s``.
        target: its name (a VM's name; ``docker-a/db/postgres/data`` for a volume or PVC).
        last_backup: when its latest backup was taken (UTC), None when it has none.
        age_hours: how old that backup was at the reading, None when none.
        rpo_hours: its RPO.
        size_bytes: the latest backup's bytes (None: unknown).
        last_restore_test: when it was last restore-tested (None: not in this run, or a layer without
            restore tests).
        result: the restore test's result (``identical``, what differs, ``not tested``); ``''`` on a
            layer without restore tests (Proxmox).
        violation: what is wrong (not covered by a job, no backup, past its RPO, restore test failed),
            None when nothing is.
        storage: the Proxmox storage of the latest backup (None elsewhere).
        protected: the latest vzdump backup is protected (None elsewhere).
        verification: PBS's verify state of the latest backup (None where none is reported).
    """

    layer: str
    target: str
    last_backup: datetime | None
    age_hours: float | None
    rpo_hours: float
    size_bytes: int | None
    last_restore_test: datetime | None = None
    result: str = ""
    violation: str | None = None
    storage: str | None = None
    protected: bool | None = None
    verification: str | None = None

    def row(self, columns: Sequence[str] = COLUMNS) -> dict[str, Any]:
        """The row as a dict: the report's :data:`COLUMNS`, or the columns named (a layer's own table)."""
        return {c: getattr(self, c) for c in columns}


__all__ = ["COLUMNS", "LEADING", "BackupRow"]
