"""Runbook 07: one Prometheus/Grafana view over both platforms (Compose and K3s).

Prometheus pulls: every few seconds it asks each target's ``/metrics`` for its current values.
The scrape config is rendered from the inventory (:mod:`.targets`), so every target carries the
labels ``platform``, ``node``, ``host`` and ``service``, and a service that moves from Compose to
K3s keeps its ``service`` label (only ``platform`` and ``host`` change).

A runbook::

    from homelab_lib import monitoring

    from homelab_lib.core import contract
    runbook = monitoring.adapter(inv)
    desired = runbook.desired()            # render: prometheus.yml, rules, alertmanager.yml, Grafana files
    observed = runbook.observe(desired)    # each file's sha256 on its VM (SFTP)
    plan = runbook.plan(desired, observed) # files to write, reloads to make
    contract.show_plan(plan)
    result = runbook.apply(desired, plan, confirm=confirm)   # promtool/amtool checks, copy, POST /-/reload
    verified = runbook.verify(desired, result)               # files, reload, targets up, alerts
    display(verified.report.table()); verified.report.chart()
    runbook.close()

Panels: :func:`.dashboards.panel_queries` lists every dashboard query; :func:`.dashboards.check_queries`
runs them against a Prometheus (:class:`.prom.PrometheusApi`).
"""

from typing import TYPE_CHECKING

from homelab_lib.core.lazy import lazy_exports

if TYPE_CHECKING:
    from homelab_lib.monitoring.check import ToolRun, check, run_rule_tests
    from homelab_lib.monitoring.dashboards import (
        PanelQuery,
        QueryCheck,
        check_queries,
        checks_table,
        documents,
        panel_queries,
    )
    from homelab_lib.monitoring.prom import FiringAlert, MonitoringReport, PrometheusApi, TargetStatus, status
    from homelab_lib.monitoring.render import ConfigFile, Rendered, Settings, render
    from homelab_lib.monitoring.runbook import MonitoringAdapter, MonitoringDesired, adapter
    from homelab_lib.monitoring.targets import ScrapeTarget, Targets, compute

__all__ = [
    "ConfigFile",
    "FiringAlert",
    "MonitoringAdapter",
    "MonitoringDesired",
    "MonitoringReport",
    "PanelQuery",
    "PrometheusApi",
    "QueryCheck",
    "Rendered",
    "ScrapeTarget",
    "Settings",
    "TargetStatus",
    "Targets",
    "ToolRun",
    "adapter",
    "check",
    "check_queries",
    "checks_table",
    "compute",
    "documents",
    "panel_queries",
    "render",
    "run_rule_tests",
    "status",
]

# Each name is imported from its module when first used (homelab_lib.core.lazy).
lazy_exports(__name__)
