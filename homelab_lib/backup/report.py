"""Runbook 06's report over every layer: the table, the charts, the Prometheus textfile, the verdict.

Every layer's rows are one type, :class:`~homelab_lib.backup.rows.BackupRow` (:func:`volume_rows`
here for Docker volumes and PVCs; :func:`homelab_lib.backup.vzdump.rows` for the VMs' vzdump
backups). :func:`frame` puts them in one DataFrame (:data:`COLUMNS`), violations first;
:func:`plot_age_vs_rpo` and :func:`plot_repository_size` draw the charts; :func:`write_textfile`
writes ``homelab_backup_age_seconds``, ``homelab_backup_rpo_seconds`` and
``homelab_backup_restore_ok`` for node-exporter's textfile collector (the monitoring runbook's
alert rule uses exactly these names); :func:`raise_on_violations` fails the run, after all of
that is written, when any target is past its RPO or failed its restore test.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from homelab_lib.backup.restic import Snapshot
from homelab_lib.backup.rows import COLUMNS, BackupRow
from homelab_lib.backup.targets import VolumeTarget
from homelab_lib.backup.volumes import RestoreResult
from homelab_lib.core.errors import BackupError, ConfigError, Problem, RestoreTestFailed, RpoViolated

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from homelab_lib.inventory.model import Inventory


def volume_rows(
    targets: Sequence[VolumeTarget],
    latest: Mapping[tuple[str, str, str, str, str], Snapshot],
    now: datetime,
    *,
    sizes: Mapping[str, int] | None = None,
    restores: Iterable[RestoreResult] = (),
    failures: Mapping[str, str] | None = None,
) -> list[BackupRow]:
    """A row per Docker volume or PVC: its latest snapshot's age against its RPO, and its restore test.

    Args:
        targets: the targets.
        latest: latest data snapshot by (layer, host, stack, service, volume) (:func:`.volumes.latest_by_target`).
        now: the time ages are measured at.
        sizes: bytes per target name (from the backup or restore test that ran now).
        restores: restore tests run now.
        failures: target name -> why its backup or restore test could not run now.
    """
    tested = {r.target.name: r for r in restores}
    failed = dict(failures or {})
    rows = []
    for t in targets:
        snap = latest.get((t.layer, t.host, t.stack, t.service, t.volume))
        age = (now - snap.time).total_seconds() / 3600 if snap else None
        test = tested.get(t.name)
        problems = []
        if snap is None:
            problems.append("no backup")
        elif age is not None and age > t.rpo_hours:
            problems.append(f"past RPO ({age:.1f} h > {t.rpo_hours:g} h)")
        if test is not None and not test.ok:
            problems.append(f"restore test failed ({test.detail})")
        if t.name in failed:
            problems.append(failed[t.name])
        size = (sizes or {}).get(t.name, test.size_bytes if test else None)
        result = f"{test.detail} (snapshot {test.snapshot})" if test else "not tested"
        rows.append(
            BackupRow(
                t.layer,
                t.name,
                snap.time if snap else None,
                round(age, 2) if age is not None else None,
                t.rpo_hours,
                size,
                test.time if test else None,
                result,
                "; ".join(problems) or None,
            )
        )
    return rows


def frame(*layers: Iterable[BackupRow]) -> pd.DataFrame:
    """One table over every layer's rows (:data:`COLUMNS`), violations first (then by layer and target).

    A row with no violation, or no restore test result (the Proxmox layer's), shows ``''`` there.
    """
    import pandas as pd

    records = [row.row() for rows in layers for row in rows]
    df = pd.DataFrame(records, columns=list(COLUMNS))
    df["violation"] = df["violation"].fillna("").astype(str)
    df["result"] = df["result"].fillna("").astype(str)
    order = df.assign(_ok=df["violation"] == "").sort_values(["_ok", "layer", "target"], kind="stable")
    return order.drop(columns="_ok").reset_index(drop=True)


def violations(df: pd.DataFrame) -> list[str]:
    """One line per target with a violation: ``layer target: violation``."""
    bad = df[df["violation"] != ""]
    return [f"{r.layer} {r.target}: {r.violation}" for r in bad.itertuples()]


def raise_on_violations(df: pd.DataFrame) -> None:
    """Fail the run (after the report is written) when any target violates its RPO or failed a restore test.

    Raises:
        RpoViolated: a target is past its RPO or has no backup (every violation listed).
        RestoreTestFailed: only restore tests (or backups run now) failed (every one listed).
    """
    lines = violations(df)
    if not lines:
        return
    rpo = any(("past RPO" in ln or "no backup" in ln) for ln in lines)
    cls: type[BackupError] = RpoViolated if rpo else RestoreTestFailed
    raise cls(
        f"{len(lines)} of {len(df)} backup target(s) violate their RPO or failed a restore test",
        where="backup report",
        hint="the report above has every row; back up the targets named (run with confirm=True) and look at "
        "each failed restore test's snapshot",
        problems=lines,
    )


# ---------------------------------------------------------------- Prometheus textfile

METRICS = (
    ("homelab_backup_age_seconds", "Age of the latest backup of a target, in seconds."),
    ("homelab_backup_rpo_seconds", "The recovery point objective of a target, in seconds."),
    ("homelab_backup_restore_ok", "1 if the last restore test of a target passed, 0 if it failed."),
)


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): v for k, v in row.items()} for row in df.to_dict("records")]


def _present(value: Any) -> bool:
    import pandas as pd

    return value is not None and not bool(pd.isna(value))


def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def textfile(df: pd.DataFrame) -> str:
    """The report in Prometheus text format (node-exporter's textfile collector).

    A target with no backup has no age sample (the alert rule's ``absent``/``unless`` sees it by
    its RPO sample); a target not restore-tested now has no ``restore_ok`` sample.
    """
    samples: dict[str, list[str]] = {name: [] for name, _ in METRICS}
    for r in _records(df):
        labels = f'{{layer="{_label(r["layer"])}",target="{_label(r["target"])}"}}'
        if _present(r["age_hours"]):
            age = float(r["age_hours"]) * 3600
            samples["homelab_backup_age_seconds"].append(f"homelab_backup_age_seconds{labels} {age:.0f}")
        rpo = float(r["rpo_hours"]) * 3600
        samples["homelab_backup_rpo_seconds"].append(f"homelab_backup_rpo_seconds{labels} {rpo:.0f}")
        if _present(r["last_restore_test"]):
            ok = 0 if "restore test failed" in str(r["violation"]) else 1
            samples["homelab_backup_restore_ok"].append(f"homelab_backup_restore_ok{labels} {ok}")
    out = []
    for name, help_text in METRICS:
        out += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", *samples[name]]
    return "\n".join(out) + "\n"


def write_textfile(df: pd.DataFrame, path: Path) -> Path:
    """Write :func:`textfile` to ``path`` atomically (the collector never reads half a file); mode 644."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".homelab-backup-", suffix=".prom.tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(textfile(df))
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------- repository size over time


def record_size(state_file: Path, when: datetime, stats: Mapping[str, Any], repository: str) -> None:
    """Append one run's ``restic stats`` to the state file (JSON lines)."""
    state_file.parent.mkdir(parents=True, exist_ok=True)
    line = {
        "time": when.isoformat(),
        "repository": repository,
        "total_size": int(stats.get("total_size", 0)),
        "snapshots": int(stats.get("snapshots_count", 0)),
    }
    with state_file.open("a") as f:
        f.write(json.dumps(line, sort_keys=True) + "\n")


def size_history(state_file: Path) -> pd.DataFrame:
    """The state file as a table: time, repository, total_size, snapshots (empty when there is none)."""
    import pandas as pd

    cols = ["time", "repository", "total_size", "snapshots"]
    if not state_file.exists():
        return pd.DataFrame(columns=cols)
    rows = [json.loads(line) for line in state_file.read_text().splitlines() if line.strip()]
    df = pd.DataFrame(rows, columns=cols)
    df["time"] = pd.to_datetime(df["time"], utc=True)
    return df.sort_values("time").reset_index(drop=True)


# ---------------------------------------------------------------- charts


def plot_age_vs_rpo(df: pd.DataFrame, figsize: tuple[float, float] = (9.0, 4.0)) -> Figure:
    """Backup age against RPO per target: a bar per target (red past its RPO, grey with none), the RPO as a tick."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    ax = fig.subplots()
    records = _records(df)
    names = [str(r["target"]) for r in records]
    ages = [float(r["age_hours"]) if _present(r["age_hours"]) else 0.0 for r in records]
    colors = []
    for r, age in zip(records, ages, strict=True):
        if not _present(r["age_hours"]):
            colors.append("tab:gray")
        else:
            colors.append("tab:red" if age > float(r["rpo_hours"]) else "tab:green")
    y = range(len(names))
    ax.barh(list(y), ages, color=colors)
    ax.scatter(list(df["rpo_hours"]), list(y), marker="|", s=300, color="black", label="RPO", zorder=3)
    ax.set_yticks(list(y), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("hours since the latest backup")
    ax.set_title("Backup age against RPO")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def plot_repository_size(history: pd.DataFrame, figsize: tuple[float, float] = (7.0, 3.0)) -> Figure:
    """The restic repository's size over time (one point per run, from :func:`size_history`)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    ax = fig.subplots()
    for repo, part in history.groupby("repository") if len(history) else []:
        ax.plot(part["time"], part["total_size"] / 2**20, marker="o", label=str(repo))
    ax.set_ylabel("MiB")
    ax.set_title("Repository size over time")
    if len(history):
        ax.legend(loc="upper left", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


#: Where node-exporter's textfile collector reads on a VM (the catalog's node-exporter binds / at /host).
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
TEXTFILE_NAME = "homelab_backup.prom"


def publish_textfile(df: pd.DataFrame, inv: Inventory, vm: str | None = None) -> str:
    """Write :func:`textfile` onto a VM's textfile-collector folder over SFTP, atomically (a temporary
    name, then a rename): the monitoring host's by default, so runbook 07's backup alert sees it.

    Returns:
        ``vm:path`` of the file written.

    Raises:
        ConfigError: no VM given and the inventory has no ``monitoring:`` section.
        SshError, HostKeyRejected: the VM cannot be reached.
    """
    from homelab_lib import clients

    if vm is None:
        if inv.monitoring is None:
            raise ConfigError([Problem("parameters", 0, "monitoring", "no monitoring: section: name the VM")])
        vm = inv.monitoring.prometheus_host
    with clients.docker_hosts(inv, [vm]) as pool:
        pool[vm].put_files(TEXTFILE_DIR, {TEXTFILE_NAME: (textfile(df).encode(), 0o644)})
    path = f"{TEXTFILE_DIR}/{TEXTFILE_NAME}"
    return f"{vm}:{path}"
