"""Prometheus's and Alertmanager's HTTP APIs: queries, targets, alerts, reload; the verify report.

:class:`PrometheusApi` speaks ``/api/v1/query``, ``/api/v1/targets``, ``/api/v1/alerts`` and
``POST /-/reload`` (the lifecycle API) with the standard library; errors become
:class:`~homelab_lib.core.errors.PrometheusUnreachable` or :class:`~homelab_lib.core.errors.ReloadFailed`
through one table. :func:`status` compares Prometheus's active targets with the rendered ones:
every expected target up, none unexpected, and the alerts that fire; :class:`MonitoringReport`
gives the table by platform/host/service and the chart of health and scrape duration.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from homelab_lib.core.errors import PrometheusUnreachable, ReloadFailed

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from homelab_lib.monitoring.targets import ScrapeTarget


@contextmanager
def _http(where: str) -> Iterator[None]:
    try:
        yield
    except urllib.error.HTTPError as e:
        body = e.read().decode(errors="replace")[:300]
        raise PrometheusUnreachable(f"HTTP {e.code}: {body or e.reason}", where=where) from e
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", None) or e
        raise PrometheusUnreachable(
            f"no answer ({reason})", where=where, hint="is it running, and its address right (monitoring.*_url)?"
        ) from e


class PrometheusApi:
    """A Prometheus (or Alertmanager) HTTP API at ``url``.

    Args:
        url: ``http://host:port`` (no trailing path).
        timeout: seconds per request.
        name: for messages (``prometheus``, ``alertmanager``).
    """

    def __init__(self, url: str, *, timeout: float = 10.0, name: str = "prometheus") -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.name = name

    def __repr__(self) -> str:
        return f"PrometheusApi({self.url!r})"

    def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        where = f"{self.name} {self.url}{path}"
        with _http(where), urllib.request.urlopen(f"{self.url}{path}{query}", timeout=self.timeout) as r:
            doc = json.loads(r.read())
        if isinstance(doc, dict) and doc.get("status") == "error":
            raise PrometheusUnreachable(f"{doc.get('errorType')}: {doc.get('error')}", where=where)
        return doc.get("data") if isinstance(doc, dict) and "data" in doc else doc

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result (a vector's samples; a scalar as one sample).

        Raises:
            PrometheusUnreachable: no answer, or the query does not parse (Prometheus's error).
        """
        data = self._get("/api/v1/query", {"query": expr})
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def targets(self) -> list[dict[str, Any]]:
        """The active targets (``/api/v1/targets?state=active``)."""
        return list(self._get("/api/v1/targets", {"state": "active"})["activeTargets"])

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts of the alerting rules (``/api/v1/alerts``): pending and firing."""
        return list(self._get("/api/v1/alerts")["alerts"])

    def ready(self) -> bool:
        """``/-/ready`` answers 200."""
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=self.timeout) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError, http.client.HTTPException):
            return False

    def reload(self) -> None:
        """``POST /-/reload``: re-read the config (needs ``--web.enable-lifecycle`` on Prometheus).

        Raises:
            ReloadFailed: refused (the server keeps its old config; its answer says why).
            PrometheusUnreachable: no answer.
        """
        where = f"{self.name} {self.url}/-/reload"
        req = urllib.request.Request(f"{self.url}/-/reload", method="POST", data=b"")
        try:
            with _http(where), urllib.request.urlopen(req, timeout=self.timeout):
                return
        except PrometheusUnreachable as e:
            if isinstance(e.__cause__, urllib.error.HTTPError):
                hint = "it keeps its old config; see its log" + (
                    "; Prometheus needs --web.enable-lifecycle (the catalog's command has it)"
                    if e.__cause__.code == 403 else ""
                )  # fmt: skip
                raise ReloadFailed(f"reload refused: {e.message}", where=where, hint=hint) from e
            raise


# ---------------------------------------------------------------- the report


@dataclass(frozen=True)
class TargetStatus:
    """One target as Prometheus sees it.

    Attributes:
        job, address, platform, node, host, service: as rendered (or as Prometheus labels an unexpected one).
        health: ``up``, ``down``, ``unknown`` (not scraped yet), or ``missing`` (expected, not active).
        expected: it is one of the rendered targets.
        scrape_seconds: the last scrape's duration.
        error: the last scrape's error.
    """

    job: str
    address: str
    platform: str
    node: str
    host: str
    service: str
    health: str
    expected: bool
    scrape_seconds: float = 0.0
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.expected and self.health == "up"


@dataclass(frozen=True)
class FiringAlert:
    """One alert of Prometheus's rules that fires (or is pending)."""

    name: str
    state: str
    labels: tuple[tuple[str, str], ...]
    summary: str

    def label(self, key: str) -> str:
        return dict(self.labels).get(key, "")


@dataclass(frozen=True)
class MonitoringReport:
    """What verify saw: every target's health and the alerts."""

    targets: tuple[TargetStatus, ...]
    alerts: tuple[FiringAlert, ...] = ()

    @property
    def down(self) -> tuple[TargetStatus, ...]:
        return tuple(t for t in self.targets if t.expected and t.health != "up")

    @property
    def unexpected(self) -> tuple[TargetStatus, ...]:
        return tuple(t for t in self.targets if not t.expected)

    @property
    def firing(self) -> tuple[FiringAlert, ...]:
        return tuple(a for a in self.alerts if a.state == "firing")

    def table(self) -> pd.DataFrame:
        """One row per target, by platform, host, service: health, scrape seconds, error."""
        import pandas as pd

        rows = sorted(self.targets, key=lambda t: (t.platform, t.host, t.service, t.job))
        return pd.DataFrame(
            [{"platform": t.platform, "host": t.host, "service": t.service, "job": t.job, "address": t.address,
              "health": t.health if t.expected else f"{t.health} (unexpected)",
              "scrape_ms": round(t.scrape_seconds * 1000, 1), "error": t.error or "-"} for t in rows],
            columns=["platform", "host", "service", "job", "address", "health", "scrape_ms", "error"],
        )  # fmt: skip

    def alerts_table(self) -> pd.DataFrame:
        """One row per alert: name, state, service, host, platform, summary."""
        import pandas as pd

        return pd.DataFrame(
            [{"alert": a.name, "state": a.state, "service": a.label("service") or "-", "host": a.label("host") or "-",
              "platform": a.label("platform") or "-", "summary": a.summary} for a in self.alerts],
            columns=["alert", "state", "service", "host", "platform", "summary"],
        )  # fmt: skip

    def chart(self, figsize: tuple[float, float] = (10.0, 4.0)) -> Figure:
        """Target health by platform (stacked bars) and each target's scrape duration; returns the Figure."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize)
        left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 2]})
        platforms = sorted({t.platform for t in self.targets}) or ["-"]
        bottom = [0] * len(platforms)
        for health, color in (("up", "tab:green"), ("down", "tab:red"), ("unknown", "tab:gray"),
                              ("missing", "tab:orange")):  # fmt: skip
            counts = [sum(1 for t in self.targets if t.platform == p and t.health == health) for p in platforms]
            left.bar(platforms, counts, bottom=bottom, color=color, label=health)
            bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
        left.set_title("targets by platform")
        left.set_ylabel("targets")
        left.legend(fontsize="small")
        rows = sorted(self.targets, key=lambda t: (t.platform, t.host, t.service))
        names = [f"{t.service}@{t.host}" for t in rows]
        colors = ["tab:green" if t.health == "up" else "tab:red" for t in rows]
        right.barh(names, [t.scrape_seconds * 1000 for t in rows], color=colors)
        right.set_xlabel("last scrape (ms)")
        right.set_title("scrape duration (red: not up)")
        right.tick_params(axis="y", labelsize="x-small")
        fig.tight_layout()
        return fig

    def summary(self) -> str:
        up = sum(1 for t in self.targets if t.ok)
        expected = sum(1 for t in self.targets if t.expected)
        return (
            f"{up} of {expected} expected target(s) up, {len(self.unexpected)} unexpected, "
            f"{len(self.firing)} alert(s) firing"
        )


def _seconds(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def status(api: PrometheusApi, expected: Sequence[ScrapeTarget]) -> MonitoringReport:
    """Compare Prometheus's active targets with the expected ones; read its alerts.

    A target is matched by (job or its ``-N`` variant, address, metrics path). Expected but not
    active: ``missing``; active but not expected: reported as unexpected.

    Raises:
        PrometheusUnreachable: Prometheus does not answer.
    """
    active = api.targets()
    by_key: dict[tuple[str, str, str], dict[str, Any]] = {}
    for t in active:
        labels = t.get("labels") or {}
        disc = t.get("discoveredLabels") or {}
        path = disc.get("__metrics_path__", "/metrics")
        job = str(labels.get("job", t.get("scrapePool", "")))
        by_key[(job, str(labels.get("instance", "")), path)] = t
    rows: list[TargetStatus] = []
    seen: set[tuple[str, str, str]] = set()
    for want in expected:
        found = None
        for key, t in by_key.items():
            same_job = key[0] == want.job or (key[0].startswith(f"{want.job}-") and key[0].rsplit("-", 1)[1].isdigit())
            if same_job and key[1] == want.address and key[2] == want.metrics_path:
                found = (key, t)
                break
        if found is None:
            rows.append(TargetStatus(want.job, want.address, want.platform, want.node, want.host, want.service,
                                     "missing", True, 0.0, "not among Prometheus's active targets"))  # fmt: skip
            continue
        key, t = found
        seen.add(key)
        rows.append(TargetStatus(want.job, want.address, want.platform, want.node, want.host, want.service,
                                 str(t.get("health", "unknown")), True, _seconds(t.get("lastScrapeDuration")),
                                 str(t.get("lastError", ""))))  # fmt: skip
    for key, t in sorted(by_key.items()):
        if key in seen:
            continue
        labels = t.get("labels") or {}
        rows.append(TargetStatus(key[0], key[1], str(labels.get("platform", "-")), str(labels.get("node", "-")),
                                 str(labels.get("host", "-")), str(labels.get("service", "-")),
                                 str(t.get("health", "unknown")), False, _seconds(t.get("lastScrapeDuration")),
                                 str(t.get("lastError", ""))))  # fmt: skip
    alerts = []
    for a in api.alerts():
        labels = {str(k): str(v) for k, v in (a.get("labels") or {}).items()}
        summary = str((a.get("annotations") or {}).get("summary", ""))
        alerts.append(FiringAlert(labels.pop("alertname", "?"), str(a.get("state", "")),
                                  tuple(sorted(labels.items())), summary))  # fmt: skip
    return MonitoringReport(tuple(rows), tuple(sorted(alerts, key=lambda a: (a.name, a.labels))))
