"""Runbook 05: move a service from Compose to K3s with its data, verified, with rollback and resume.

- :mod:`~homelab_lib.convert.source`: read a compose file as Compose does, with the line of every key.
- :mod:`~homelab_lib.convert`: a Compose service to Kubernetes manifests, with a report of every
  key (mapped, approximated, not mapped) and a :class:`VolumePlan` per volume for the data copy.
- :mod:`~homelab_lib.migrate.readiness`: for every Compose service of the inventory, a verdict for K3s
  and a placement suggestion from the ADR's criteria; the migration order by dependency.
- :mod:`~homelab_lib.migrate.move`: the move itself as checkpoints (backup, stop, pvcs, copy, verify,
  apply, placement, cleanup), recorded so a later run resumes; rollback after the stop
  (:mod:`~homelab_lib.migrate.copy` streams and verifies, :mod:`~homelab_lib.migrate.state` records).

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
lazy_exports(
    __name__,
    {
        "homelab_lib.convert": (
            "DEFAULT_KUBERNETES",
            "Conversion",
            "ReportLine",
            "VolumePlan",
            "convert_compose",
            "convert_inventory_service",
            "convert_service",
            "redacted",
            "report_frame",
            "report_markdown",
        ),
        "homelab_lib.convert.source": ("ComposeFile", "load_compose", "parse_compose"),
        "homelab_lib.migrate.readiness": (
            "Readiness",
            "compose_dependency_order",
            "dependencies",
            "dependency_order",
            "readiness",
            "readiness_frame",
        ),
    },
)
