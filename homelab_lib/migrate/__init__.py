"""Runbook 05: move a service from Compose to K3s with its data, verified, with rollback and resume.

The converter it starts from lives one floor down, in :mod:`homelab_lib.convert` (runbook 04 uses it
too): :mod:`~homelab_lib.convert.source` reads a compose file as Compose does, with the line of every
key; :mod:`~homelab_lib.convert.units` gives sizes, CPUs and durations in Kubernetes' forms; the
package turns a Compose service into Kubernetes manifests, with a report of every key (mapped,
approximated, not mapped) and a :class:`VolumePlan` per volume for the data copy. This package
re-exports what the runbook calls of it.

- :mod:`~homelab_lib.migrate.readiness`: for every Compose service of the inventory, a verdict for K3s
  and a placement suggestion from the ADR's criteria; the migration order by dependency.
- the move itself, on the runbook contract, split as :mod:`homelab_lib.proxmox` is:
  :mod:`~homelab_lib.migrate.desired` (the move: manifests, volumes, placement change),
  :mod:`~homelab_lib.migrate.observe`, :mod:`~homelab_lib.migrate.plan` (pure),
  :mod:`~homelab_lib.migrate.checkpoints` (backup, stop, pvcs, copy, verify, apply, placement,
  cleanup), :mod:`~homelab_lib.migrate.rollback` (after the stop), :mod:`~homelab_lib.migrate.status`
  (what verify reads) and :mod:`~homelab_lib.migrate.move` (the adapter that runs them, its hosts
  from one :class:`~homelab_lib.hosts.docker.HostPool`: :mod:`~homelab_lib.migrate.reach`);
  :mod:`~homelab_lib.migrate.copy` streams and verifies, :mod:`~homelab_lib.migrate.state` records
  each checkpoint so a later run resumes; :mod:`~homelab_lib.migrate.runbook` builds a move from
  the inventory (:func:`~homelab_lib.migrate.runbook.move_for`).

A runbook::

    conv = migrate.convert_inventory_service(inv, None, service, namespace=service)
    display(conv.report_frame())          # what is mapped, approximated, not mapped, and why
    print(conv.yaml(redact=True))         # the manifests (Secret values hidden)
    conv.pvcs                             # the claims the data copy fills, with their sources
    display(migrate.readiness_frame(inv)) # the whole homelab: verdicts and placement advice
"""

from typing import TYPE_CHECKING

from homelab_lib.core.lazy import lazy_exports

if TYPE_CHECKING:
    from homelab_lib.convert import (
        DEFAULT_KUBERNETES,
        Conversion,
        ReportLine,
        VolumePlan,
        convert_compose,
        convert_inventory_service,
        convert_service,
        redacted,
        report_frame,
        report_markdown,
    )
    from homelab_lib.convert.source import ComposeFile, load_compose, parse_compose
    from homelab_lib.migrate.readiness import (
        Readiness,
        compose_dependency_order,
        dependencies,
        dependency_order,
        readiness,
        readiness_frame,
    )

__all__ = [
    "DEFAULT_KUBERNETES",
    "ComposeFile",
    "Conversion",
    "Readiness",
    "ReportLine",
    "VolumePlan",
    "compose_dependency_order",
    "convert_compose",
    "convert_inventory_service",
    "convert_service",
    "dependencies",
    "dependency_order",
    "load_compose",
    "parse_compose",
    "readiness",
    "readiness_frame",
    "redacted",
    "report_frame",
    "report_markdown",
]

# Each name is imported from its module when first used (homelab_lib.core.lazy).
lazy_exports(__name__)
