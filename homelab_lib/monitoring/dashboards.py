"""Grafana dashboards, built in code with grafanalib; every panel's query listed and checkable.

Four dashboards, provisioned as files (:func:`homelab_lib.monitoring.render.grafana_files`):

- ``homelab-overview``: targets up and down by platform, scrape duration, firing alerts;
- ``homelab-node``: one node (template variable ``host``): CPU, memory, filesystems, network;
- ``homelab-service``: one service (``service``) on whichever platform it runs: up, scrape duration,
  container CPU and memory (cAdvisor, kubelet);
- ``homelab-backups``: each backup's age against its RPO (``homelab_backup_age_seconds``/``..._rpo_seconds``).

:func:`panel_queries` lists every panel's PromQL; :func:`check_queries` asks a Prometheus
whether each parses and returns series (template variables replaced by ``.*``), as runbook 07's
last check does against the homelab's Prometheus.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from grafanalib import core as g
from grafanalib._gen import DashboardEncoder

if TYPE_CHECKING:
    import pandas as pd

    from homelab_lib.inventory.model import Inventory
    from homelab_lib.monitoring.prom import PrometheusApi

DATASOURCE_UID = "homelab-prometheus"
DS = {"type": "prometheus", "uid": DATASOURCE_UID}
VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)(?::\w+)?\}")
#: (dashboard, panel) whose query is empty when all is well (it lists what is down): no series is fine.
MAY_BE_EMPTY = frozenset({("homelab-overview", "targets down")})


def _ts(title: str, exprs: Sequence[tuple[str, str]], x: int, y: int, *, w: int = 12, unit: str = "") -> g.TimeSeries:
    return g.TimeSeries(
        title=title,
        dataSource=DS,
        targets=[g.Target(expr=e, legendFormat=legend, refId=chr(65 + i), datasource=DS)
                 for i, (e, legend) in enumerate(exprs)],
        gridPos=g.GridPos(h=8, w=w, x=x, y=y),
        unit=unit,
    )  # fmt: skip


def _stat(title: str, expr: str, legend: str, x: int, y: int, *, w: int = 6) -> g.Stat:
    return g.Stat(
        title=title,
        dataSource=DS,
        targets=[g.Target(expr=expr, legendFormat=legend, refId="A", datasource=DS)],
        gridPos=g.GridPos(h=4, w=w, x=x, y=y),
        reduceCalc="lastNotNull",
    )


def _var(name: str, query: str) -> g.Template:
    return g.Template(
        name=name,
        query=query,
        dataSource=DS,
        label=name,
        includeAll=True,
        multi=True,
        allValue=".*",
        default="$__all",
    )


def overview() -> g.Dashboard:
    return g.Dashboard(
        title="Homelab: overview by platform",
        uid="homelab-overview",
        tags=["homelab"],
        timezone="utc",
        panels=[
            _stat("targets up (compose)", 'sum(up{platform="compose"})', "compose", 0, 0),
            _stat("targets up (k3s)", 'sum(up{platform="k3s"})', "k3s", 6, 0),
            _stat("targets down", "count(up == 0) or vector(0)", "down", 12, 0),
            _stat("alerts firing", 'count(ALERTS{alertstate="firing"}) or vector(0)', "firing", 18, 0),
            _ts("targets up by platform", [("sum by (platform) (up)", "{{platform}}")], 0, 4),
            _ts("scrape duration by platform", [("max by (platform) (scrape_duration_seconds)", "{{platform}}")], 12, 4,
                unit="s"),
            _ts("targets down", [("up == 0", "{{service}} on {{host}} ({{platform}})")], 0, 12, w=24),
        ],
    ).auto_panel_ids()  # fmt: skip


def _one_of(uid: str, title: str, variable: g.Template, panels: Sequence[tuple[str, str, str, str]]) -> g.Dashboard:
    """A dashboard of what a template variable picks (a node, a service): one time series per panel, two by two.

    Args:
        uid: the dashboard's uid.
        title: its title.
        variable: the template variable the panels' queries select by.
        panels: ``(title, expr, legend, unit)`` per panel, in reading order (12 wide, 8 high each).
    """
    return g.Dashboard(
        title=title,
        uid=uid,
        tags=["homelab"],
        timezone="utc",
        templating=g.Templating(list=[variable]),
        panels=[_ts(name, [(expr, legend)], 12 * (i % 2), 8 * (i // 2), unit=unit)
                for i, (name, expr, legend, unit) in enumerate(panels)],
    ).auto_panel_ids()  # fmt: skip


def node() -> g.Dashboard:
    sel = 'host=~"$host"'
    return _one_of("homelab-node", "Homelab: node", _var("host", "label_values(node_uname_info, host)"), [
        ("CPU busy", f'1 - avg by (host) (rate(node_cpu_seconds_total{{mode="idle",{sel}}}[5m]))', "{{host}}",
         "percentunit"),
        ("memory available", f"node_memory_MemAvailable_bytes{{{sel}}} / node_memory_MemTotal_bytes{{{sel}}}",
         "{{host}}", "percentunit"),
        ("filesystem free", f'node_filesystem_avail_bytes{{fstype!~"tmpfs|overlay",{sel}}} '
                            f'/ node_filesystem_size_bytes{{fstype!~"tmpfs|overlay",{sel}}}',
         "{{host}} {{mountpoint}}", "percentunit"),
        ("network received", f'rate(node_network_receive_bytes_total{{device!="lo",{sel}}}[5m])',
         "{{host}} {{device}}", "Bps"),
    ])  # fmt: skip


def service() -> g.Dashboard:
    sel = 'service=~"$service"'
    return _one_of("homelab-service", "Homelab: service", _var("service", "label_values(up, service)"), [
        ("up, by platform", f"up{{{sel}}}", "{{service}} {{platform}} {{host}}", ""),
        ("scrape duration", f"scrape_duration_seconds{{{sel}}}", "{{service}} {{platform}}", "s"),
        ("samples scraped", f"scrape_samples_scraped{{{sel}}}", "{{service}} {{platform}}", ""),
        ("containers' CPU (cAdvisor)",
         'sum by (host, name) (rate(container_cpu_usage_seconds_total{name=~".+"}[5m]))', "{{host}} {{name}}", ""),
    ])  # fmt: skip


def backups() -> g.Dashboard:
    return g.Dashboard(
        title="Homelab: backups",
        uid="homelab-backups",
        tags=["homelab"],
        timezone="utc",
        panels=[
            _ts("backup age / RPO", [("homelab_backup_age_seconds / on (layer, target) homelab_backup_rpo_seconds",
                                      "{{layer}} {{target}}")], 0, 0, w=24, unit="percentunit"),
            _ts("backup age", [("homelab_backup_age_seconds", "{{layer}} {{target}}")], 0, 8, unit="s"),
            _stat("backups over RPO",
                  "count(homelab_backup_age_seconds > on (layer, target) homelab_backup_rpo_seconds) or vector(0)",
                  "over RPO", 12, 8),
        ],
    ).auto_panel_ids()  # fmt: skip


BUILDERS = {"homelab-overview": overview, "homelab-node": node, "homelab-service": service, "homelab-backups": backups}


def build(inv: Inventory | None = None) -> dict[str, g.Dashboard]:
    """Every dashboard by uid (the inventory is accepted for dashboards that will depend on it)."""
    return {uid: make() for uid, make in BUILDERS.items()}


def documents(inv: Inventory | None = None) -> dict[str, dict[str, Any]]:
    """Every dashboard as Grafana's JSON model (a dict), by uid."""
    out: dict[str, dict[str, Any]] = {}
    for uid, dash in build(inv).items():
        out[uid] = json.loads(json.dumps(dash.to_json_data(), cls=DashboardEncoder, sort_keys=True))
    return out


@dataclass(frozen=True)
class PanelQuery:
    """One query of one panel."""

    dashboard: str
    panel: str
    ref: str
    expr: str

    @property
    def concrete(self) -> str:
        """The query with template variables as ``.*`` and Grafana's intervals as 5m: what Prometheus can run."""
        expr = self.expr.replace("$__rate_interval", "5m").replace("$__interval", "1m")
        return VARIABLE.sub(".*", expr)


def panel_queries(docs: dict[str, dict[str, Any]] | None = None) -> list[PanelQuery]:
    """Every panel's query (and every template variable's ``label_values`` metric), dashboard by dashboard."""
    docs = docs if docs is not None else documents()
    out = []
    for uid, doc in docs.items():
        for panel in doc.get("panels", []):
            for target in panel.get("targets", []):
                if target.get("expr"):
                    out.append(PanelQuery(uid, panel.get("title", ""), target.get("refId", ""), target["expr"]))
        for var in (doc.get("templating") or {}).get("list", []):
            m = re.match(r"label_values\((\w+)\s*,\s*(\w+)\)", str(var.get("query", "")))
            if m:
                out.append(PanelQuery(uid, f"variable {var['name']}", "var", f"count by ({m[2]}) ({m[1]})"))
    return out


@dataclass(frozen=True)
class QueryCheck:
    """What Prometheus said about one panel's query.

    Attributes:
        query: the panel query.
        ok: it parsed (and returned series when asked).
        series: how many series it returned.
        error: Prometheus's error ('' when none).
    """

    query: PanelQuery
    ok: bool
    series: int
    error: str = ""


def check_queries(api: PrometheusApi, queries: Sequence[PanelQuery] | None = None) -> list[QueryCheck]:
    """Run every panel's query against a Prometheus: each must parse and return at least one series.

    A panel that lists problems (:data:`MAY_BE_EMPTY`) may return none. A query that does not parse
    has Prometheus's error; one that returns nothing has ``no series`` (the metric is not scraped: the
    backups dashboard before the backup runbook exports its metrics, container panels without cAdvisor).

    Args:
        api: the Prometheus to ask (:class:`homelab_lib.monitoring.prom.PrometheusApi`).
        queries: the queries (default: every dashboard's, :func:`panel_queries`).
    """
    from homelab_lib.core.errors import PrometheusUnreachable

    out = []
    for q in queries if queries is not None else panel_queries():
        try:
            result = api.query(q.concrete)
        except PrometheusUnreachable as e:
            out.append(QueryCheck(q, False, 0, e.message))
            continue
        n = len(result)
        fine = n > 0 or (q.dashboard, q.panel) in MAY_BE_EMPTY
        out.append(QueryCheck(q, fine, n, "" if fine else "no series"))
    return out


def checks_table(checks: Sequence[QueryCheck]) -> pd.DataFrame:
    """One row per query: ok, dashboard, panel, series, error, query."""
    import pandas as pd

    return pd.DataFrame(
        [{"ok": "yes" if c.ok else "NO", "dashboard": c.query.dashboard, "panel": c.query.panel, "series": c.series,
          "error": c.error or "-", "query": c.query.concrete} for c in checks],
        columns=["ok", "dashboard", "panel", "series", "error", "query"],
    )  # fmt: skip
