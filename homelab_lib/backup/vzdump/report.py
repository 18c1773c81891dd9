"""What the vzdump layer reports: a row per target (its latest backup, age, RPO, what is wrong), the jobs,
the failed vzdump tasks; :func:`check_rpo` raises over any layer's rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from homelab_lib.backup.rows import LEADING, BackupRow
from homelab_lib.backup.vzdump.state import (
    LAYER,
    BackupJob,
    Desired,
    FailedTask,
    Observed,
    VzdumpTarget,
    targets,
    within,
)
from homelab_lib.core.errors import RpoViolated

if TYPE_CHECKING:
    import pandas as pd

#: This layer's own table (:meth:`VzdumpReport.table`): the report's leading columns, then vzdump's.
COLUMNS = (*LEADING, "storage", "protected", "verification", "violation")


def _coverage_problem(target: VzdumpTarget, observed: Observed) -> str | None:
    guest = observed.guest(target.vmid)
    jobs = observed.covering(target.vmid, guest.node if guest else "")
    if any(j.enabled for j in jobs):
        return None
    if jobs:
        return f"only disabled backup job(s) cover it: {', '.join(j.id for j in jobs)}"
    return "no backup job covers it"


def rows(desired: Desired, observed: Observed) -> tuple[BackupRow, ...]:
    """One row per target, in target order: its latest backup, age, RPO and what is wrong (a pure function).

    The rows are the report's (:class:`~homelab_lib.backup.rows.BackupRow`), with this layer's storage,
    ``protected`` and verification; they have no restore test.
    """
    out = []
    for target in targets(desired, observed):
        latest = observed.latest(target.vmid)
        problems = []
        guest = observed.guest(target.vmid)
        if guest is None:
            problems.append(f"VM {target.vmid} is not in the cluster")
        coverage = _coverage_problem(target, observed)
        if coverage:
            problems.append(coverage)
        age = round((observed.at - latest.time).total_seconds() / 3600, 2) if latest else None
        if latest is None:
            problems.append("no backup")
        elif not within(latest, target.rpo_hours, observed.at):
            problems.append(f"latest backup is {age:.1f} h old, over its RPO of {target.rpo_hours:g} h")
        out.append(
            BackupRow(
                layer=LAYER,
                target=target.name,
                last_backup=latest.time if latest else None,
                age_hours=age,
                rpo_hours=target.rpo_hours,
                size_bytes=latest.size if latest else None,
                storage=latest.storage if latest else None,
                protected=latest.protected if latest else None,
                verification=latest.verification if latest else None,
                violation="; ".join(problems) or None,
            )
        )
    return tuple(out)


def check_rpo(report_rows: Iterable[BackupRow]) -> None:
    """Raise when any row has a violation (so that papermill fails and a scheduled run alerts).

    Raises:
        RpoViolated: naming each target and what is wrong with it.
    """
    bad = [f"{r.layer} {r.target}: {r.violation}" for r in report_rows if r.violation]
    if bad:
        raise RpoViolated(
            f"{len(bad)} target(s) violate their RPO",
            where=", ".join(sorted({v.split(":")[0] for v in bad})),
            hint="run the backups runbook with confirm=True to cover and back them up, then check again",
            problems=bad,
        )


@dataclass(frozen=True)
class VzdumpReport:
    """What verify reports: a row per target, the jobs, the failed vzdump tasks, the moment of reading."""

    rows: tuple[BackupRow, ...]
    jobs: tuple[BackupJob, ...]
    failed_tasks: tuple[FailedTask, ...]
    at: datetime

    @property
    def violations(self) -> tuple[BackupRow, ...]:
        return tuple(r for r in self.rows if r.violation)

    def table(self) -> pd.DataFrame:
        """One row per target (:data:`COLUMNS`), violations first, then by target."""
        import pandas as pd

        ordered = sorted(self.rows, key=lambda r: (r.violation is None, r.target))
        return pd.DataFrame([r.row(COLUMNS) for r in ordered], columns=list(COLUMNS))

    def jobs_table(self) -> pd.DataFrame:
        """One row per backup job: id, enabled, schedule, storage, mode, selection, retention, next run."""
        import pandas as pd

        return pd.DataFrame(
            [
                {"id": j.id, "enabled": j.enabled, "schedule": j.schedule, "storage": j.storage, "mode": j.mode,
                 "selects": j.selection, "prune-backups": j.prune_backups, "next_run": j.next_run}
                for j in self.jobs
            ],
            columns=["id", "enabled", "schedule", "storage", "mode", "selects", "prune-backups", "next_run"],
        )  # fmt: skip

    def tasks_table(self) -> pd.DataFrame:
        """One row per failed vzdump task in the window: node, start, status, vmids, why, upid."""
        import pandas as pd

        return pd.DataFrame(
            [t.row() for t in self.failed_tasks], columns=["node", "start", "status", "vmids", "why", "upid"]
        )
