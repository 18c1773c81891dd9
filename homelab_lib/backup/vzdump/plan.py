"""The vzdump plan: a pure function of (desired, observed).

One ``backup-job`` change, to create or fix the inventory's job (``backups.vzdump``: ``job_id``,
``schedule``, ``storage``, ``mode``, ``keep_daily`` as ``prune-backups``, ``notes_template``) so that it
covers every target, and one ``vzdump`` change per target: ``create`` (a backup now) when it has none
within its RPO, else a no-op; a target missing from the cluster or on an offline node is a conflict.
Times in the plan are the backups' own (never the age, which moves), so the plan made for the dry run
is the one a confirmed apply re-checks.
"""

from __future__ import annotations

from homelab_lib.backup.vzdump.state import (
    JOB,
    VZDUMP,
    Desired,
    Observed,
    VzdumpTarget,
    stamp,
    targets,
    vmids_of,
    within,
)
from homelab_lib.core.plan import Action, Change, FieldChange, Plan


def wanted_job(desired: Desired, observed: Observed) -> dict[str, str | None]:
    """The inventory's job as it must be: its options, and a selection that covers every target.

    A job that selects ``all`` keeps doing so (minus no target); otherwise its ``vmid`` list is
    what it had plus every target. None for an option means it must go (``delete``).
    """
    spec = desired.job
    existing = observed.job(spec.id)
    want: dict[str, str | None] = dict(spec.options())
    vmids = {t.vmid for t in targets(desired, observed)}
    if existing is not None and existing.all and not existing.vmids and not existing.pool:
        want["all"] = "1"
        left = sorted(set(existing.exclude) - vmids)
        want["exclude"] = ",".join(str(i) for i in left) or None
    else:
        have = set(existing.vmids) if existing is not None and not existing.pool else set()
        want["vmid"] = ",".join(str(i) for i in sorted(have | vmids))
        if existing is not None and existing.pool:
            want["pool"] = None
    if existing is not None and existing.node:
        want["node"] = None
    if existing is None:
        want = {k: v for k, v in want.items() if v is not None}
    return want


def job_change(desired: Desired, observed: Observed) -> Change:
    """The ``backup-job`` change: create the job, update the options that differ, or a no-op (verify asks it too)."""
    spec = desired.job
    existing = observed.job(spec.id)
    want = wanted_job(desired, observed)
    if existing is None:
        fields = tuple(FieldChange(k, None, v) for k, v in sorted(want.items()))
        return Change(JOB, spec.id, Action.CREATE, "cluster", fields, "cover every managed VM", order=0)
    changed = []
    for key, value in sorted(want.items()):
        old = existing.options.get(key)
        if key == "vmid" and value is not None and old is not None and vmids_of(old) == vmids_of(value):
            continue
        if (old or None) != value:
            changed.append(FieldChange(key, old, value))
    if changed:
        return Change(JOB, spec.id, Action.UPDATE, "cluster", tuple(changed), "cover every managed VM", order=0)
    return Change(JOB, spec.id, Action.NOOP, "cluster", reason=f"covers {len(targets(desired, observed))} VM(s)")


def _vzdump_change(desired: Desired, observed: Observed, target: VzdumpTarget) -> Change:
    guest = observed.guest(target.vmid)
    latest = observed.latest(target.vmid)
    if guest is None:
        return Change(
            VZDUMP,
            target.name,
            Action.CONFLICT,
            "",
            reason=f"VM {target.vmid} is not in the cluster: provision it first (runbook 01)",
            order=1,
        )
    if guest.node in observed.offline:
        return Change(VZDUMP, target.name, Action.CONFLICT, guest.node, reason=f"node {guest.node} is offline", order=1)
    if within(latest, target.rpo_hours, observed.at):
        assert latest is not None
        return Change(
            VZDUMP,
            target.name,
            Action.NOOP,
            guest.node,
            reason=f"latest backup {stamp(latest.time)} on {latest.storage}, within its RPO of {target.rpo_hours:g} h",
            order=1,
        )
    why = (
        f"latest backup {stamp(latest.time)} is older than its RPO of {target.rpo_hours:g} h"
        if latest
        else "no backup on any storage"
    )
    fields = (
        FieldChange("vmid", None, target.vmid),
        FieldChange("storage", None, desired.job.storage),
        FieldChange("mode", None, desired.job.mode),
    )
    return Change(VZDUMP, target.name, Action.CREATE, guest.node, fields, f"back up now: {why}", order=1)


def plan(desired: Desired, observed: Observed) -> Plan:
    """The backup job to create or fix, and a backup now for each target out of its RPO (a pure function)."""
    changes = [job_change(desired, observed)]
    changes += [_vzdump_change(desired, observed, t) for t in targets(desired, observed)]
    return Plan.of(changes, adapter=VZDUMP)
