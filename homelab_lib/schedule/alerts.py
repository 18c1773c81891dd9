"""Alerts: a failed run, drift found by a dry run, or tampering found by ``audit verify``, sent to a webhook.

The inventory's optional ``alerts:`` section says where and how::

    alerts:
      webhook: env:HOMELAB_ALERT_URL     # a secret reference: the URL may hold a token
      kind: ntfy                         # ntfy | gotify | slack | alertmanager | json (default)
      on: [failure, drift, tamper]       # the default: all three

After ``homelab run`` (so after every scheduled run too) :func:`after_run` looks at the run's record:

- a run that did not end ``ok`` (a cell raised, the kernel died, a secret leaked) is a ``failure``,
  with the failing cell, its error (secrets already masked by the runner), the plan summary if the
  notebook showed one, and the archived notebook's path;
- a dry run (no ``confirm``, no ``--approve``) that ended ok and whose plan has changes is ``drift``:
  the homelab is not what its inventory says; it is reported as drift, not as a failed run.

``homelab audit verify -f PARAMS`` that finds a break sends ``tamper`` (:func:`after_verify`).

Each ``kind`` is a payload builder in :data:`PAYLOADS` (a name -> function registry, as papermill's
engines): ntfy (a text body with ``Title``/``Priority``/``Tags`` headers), Gotify (JSON ``title``,
``message``, ``priority``), Slack- and Discord-compatible JSON (``{"text": ...}``), Alertmanager's
API v2 (``POST /api/v2/alerts``, a list of alerts with labels and annotations) and plain JSON
(:meth:`Alert.document`).

Delivery never hides the run's own result: :func:`notify` does not raise; a POST that fails is
logged and returned as a :class:`Delivery` that says why. The webhook URL appears nowhere: errors
name the reference (``alerts.webhook (env:NAME)``) and any part of the URL in a reason is masked.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from homelab_lib.core.errors import AlertError, HomelabError
from homelab_lib.core.secrets import Redactor

if TYPE_CHECKING:
    from homelab_lib.inventory.model import Alerts
    from homelab_lib.runs.archive import Record

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())  # a library: the application decides where warnings go

EVENTS = ("failure", "drift", "tamper")
SEVERITY = {"failure": "critical", "drift": "warning", "tamper": "critical"}
ALERTNAME = {"failure": "HomelabRunFailed", "drift": "HomelabDrift", "tamper": "HomelabAuditTamper"}
NTFY_PRIORITY = {"failure": "high", "drift": "default", "tamper": "urgent"}
GOTIFY_PRIORITY = {"failure": 8, "drift": 5, "tamper": 10}
MAX_CHANGES = 10  # plan lines in a message; the rest is counted
ALERTMANAGER_PATH = "/api/v2/alerts"


@dataclass(frozen=True)
class Alert:
    """What happened, as every payload kind tells it.

    Attributes:
        event: ``failure``, ``drift`` or ``tamper``.
        runbook: the notebook's name (``01_provision_nodes``), or ``audit`` for tampering.
        homelab: the inventory's name.
        status: the run's status (``failed``, ``leak``, ``ok`` for drift) or ``tamper``.
        run: the run id ('' for tampering).
        failed_cell: index of the failing cell, None when none or unknown.
        error: the error (``ename: evalue``, secrets masked), or the first problems ``audit verify`` found.
        plan_summary: the plan's one-line summary ('' when the run showed no plan).
        changes: the plan's changes other than no-ops, one line each.
        archive: the archived notebook's path (or the archive's folder).
        start: when the run started (ISO 8601, UTC).
    """

    event: str
    runbook: str
    homelab: str
    status: str
    run: str = ""
    failed_cell: int | None = None
    error: str = ""
    plan_summary: str = ""
    changes: tuple[str, ...] = ()
    archive: str = ""
    start: str = ""

    @property
    def severity(self) -> str:
        return SEVERITY[self.event]

    def title(self) -> str:
        """One line: ``homelab lab: 01_provision_nodes failed``."""
        what = {"failure": "failed", "drift": "drift", "tamper": "tampering found"}[self.event]
        return f"homelab {self.homelab}: {self.runbook} {what}"

    def message(self) -> str:
        """The body: runbook, homelab, status, failing cell and error, plan, archive."""
        lines = [f"runbook: {self.runbook}" + (f" (run {self.run})" if self.run else ""), f"homelab: {self.homelab}"]
        lines.append(f"status: {self.status}")
        if self.event == "failure":
            at = f"cell {self.failed_cell}" if self.failed_cell is not None else "an unknown cell"
            lines.append(f"failed at {at}: {self.error}")
        elif self.error:
            lines.append(self.error)
        if self.plan_summary:
            lines.append(f"plan: {self.plan_summary}")
            lines += [f"  {c}" for c in self.changes[:MAX_CHANGES]]
            if len(self.changes) > MAX_CHANGES:
                lines.append(f"  ... and {len(self.changes) - MAX_CHANGES} more")
        if self.archive:
            lines.append(f"archive: {self.archive}")
        return "\n".join(lines)

    def document(self) -> dict[str, Any]:
        """The alert as plain JSON (kind ``json``)."""
        return {
            "event": self.event,
            "severity": self.severity,
            "runbook": self.runbook,
            "homelab": self.homelab,
            "status": self.status,
            "run": self.run,
            "failed_cell": self.failed_cell,
            "error": self.error,
            "plan_summary": self.plan_summary,
            "plan_changes": list(self.changes),
            "archive": self.archive,
            "start": self.start,
            "title": self.title(),
            "message": self.message(),
        }


@dataclass(frozen=True)
class Request:
    """One HTTP request to the webhook (its URL is not shown by ``repr``)."""

    url: str = field(repr=False)
    body: bytes
    headers: Mapping[str, str]


@dataclass(frozen=True)
class Delivery:
    """What became of one alert.

    Attributes:
        event: the alert's event.
        kind: the payload kind.
        sent: the webhook took it (HTTP 2xx).
        detail: where it went (the reference, never the URL), or why it was not sent.
    """

    event: str
    kind: str
    sent: bool
    detail: str

    def __str__(self) -> str:
        return f"alert {self.event} ({self.kind}) " + ("sent to " if self.sent else "NOT sent: ") + self.detail


# ------------------------------------------------------------------ what happened


def _change_line(change: Mapping[str, Any]) -> str:
    fields = "; ".join(f"{n}: {old!r} -> {new!r}" for n, old, new in change.get("fields", []))
    detail = fields or str(change.get("reason") or "")
    where = f" ({change['where']})" if change.get("where") else ""
    return f"{change.get('action')} {change.get('kind')} {change.get('target')}{where}" + (
        f": {detail}" if detail else ""
    )


def is_drift(record: Record) -> bool:
    """A dry run (no confirm, no --approve) that ended ok with a plan that would change something."""
    if record.status != "ok" or record.parameters.get("confirm") or record.approves or not record.plan:
        return False
    return any(c.get("action") != "no-op" for c in record.plan.get("changes", []))


def alert_for_run(record: Record, archive_root: Path) -> Alert | None:
    """The alert a recorded run calls for: ``failure``, ``drift``, or None (an ok run, an ok dry run of no changes)."""
    if record.status == "ok" and not is_drift(record):
        return None
    plan = record.plan or {}
    changes = tuple(_change_line(c) for c in plan.get("changes", []) if c.get("action") != "no-op")
    return Alert(
        event="failure" if record.status != "ok" else "drift",
        runbook=Path(record.notebook).stem,
        homelab=record.homelab,
        status=record.status,
        run=record.run,
        failed_cell=record.failed_cell,
        error=record.error,
        plan_summary=str(plan.get("summary", "")),
        changes=changes,
        archive=str((archive_root / record.archived).absolute()) if record.archived else str(archive_root.absolute()),
        start=record.start,
    )


def alert_for_tamper(problems: Sequence[str], archive_root: Path, homelab: str) -> Alert:
    """The alert for an archive that does not verify: its first problems (the first is the first break)."""
    shown = list(problems[:5]) + ([f"... and {len(problems) - 5} more"] if len(problems) > 5 else [])
    return Alert(
        event="tamper",
        runbook="audit",
        homelab=homelab,
        status="tamper",
        error="audit verify found:\n" + "\n".join(f"  {p}" for p in shown),
        archive=str(archive_root.absolute()),
    )


# ------------------------------------------------------------------ payloads


def _header(value: str) -> str:
    """A header value HTTP can carry: as is when ASCII, else an RFC 2047 encoded word (ntfy decodes it)."""
    one_line = " ".join(value.split())
    if one_line.isascii():
        return one_line
    return "=?UTF-8?B?" + base64.b64encode(one_line.encode()).decode() + "?="


def _json(data: object) -> bytes:
    return json.dumps(data, ensure_ascii=False).encode()


JSON_HEADERS = {"Content-Type": "application/json"}


def ntfy_request(alert: Alert, url: str) -> Request:
    """ntfy: the message as a text body; Title, Priority and Tags as headers (the URL is the topic)."""
    headers = {
        "Content-Type": "text/plain; charset=utf-8",
        "Title": _header(alert.title()),
        "Priority": NTFY_PRIORITY[alert.event],
        "Tags": _header(",".join(["homelab", alert.event, alert.runbook])),
    }
    return Request(url, alert.message().encode(), headers)


def gotify_request(alert: Alert, url: str) -> Request:
    """Gotify: ``POST /message?token=...`` with JSON title, message and priority."""
    body = {"title": alert.title(), "message": alert.message(), "priority": GOTIFY_PRIORITY[alert.event]}
    return Request(url, _json(body), JSON_HEADERS)


def slack_request(alert: Alert, url: str) -> Request:
    """Slack's incoming webhooks, Mattermost, and Discord's Slack-compatible endpoint: ``{"text": ...}``."""
    return Request(url, _json({"text": f"{alert.title()}\n{alert.message()}"}), JSON_HEADERS)


def alertmanager_request(alert: Alert, url: str) -> Request:
    """Alertmanager API v2: ``POST /api/v2/alerts`` with a list of one alert (labels and annotations).

    The URL may be Alertmanager's base (``http://am:9093``); ``/api/v2/alerts`` is added when missing.
    """
    parts = urllib.parse.urlsplit(url)
    if not parts.path.rstrip("/").endswith(ALERTMANAGER_PATH):
        parts = parts._replace(path=parts.path.rstrip("/") + ALERTMANAGER_PATH)
    labels = {
        "alertname": ALERTNAME[alert.event],
        "runbook": alert.runbook,
        "homelab": alert.homelab,
        "severity": alert.severity,
        "event": alert.event,
    }
    annotations = {
        "summary": alert.title(),
        "description": alert.message(),
        "archive": alert.archive,
        "run": alert.run,
        "failed_cell": "" if alert.failed_cell is None else str(alert.failed_cell),
        "error": alert.error,
        "plan": alert.plan_summary,
    }
    one: dict[str, Any] = {
        "labels": {k: v for k, v in labels.items() if v},
        "annotations": {k: v for k, v in annotations.items() if v},
    }
    if alert.start:
        one["startsAt"] = alert.start
    return Request(urllib.parse.urlunsplit(parts), _json([one]), JSON_HEADERS)


def json_request(alert: Alert, url: str) -> Request:
    """Plain JSON: :meth:`Alert.document`."""
    return Request(url, _json(alert.document()), JSON_HEADERS)


#: Payload kind -> the function that builds its request (``alerts.kind`` in the inventory).
PAYLOADS: dict[str, Callable[[Alert, str], Request]] = {
    "ntfy": ntfy_request,
    "gotify": gotify_request,
    "slack": slack_request,
    "alertmanager": alertmanager_request,
    "json": json_request,
}


# ------------------------------------------------------------------ sending


def _url_redactor(url: str) -> Redactor:
    """Masks the URL and each part of it that may carry a token: userinfo, path, query and its values."""
    parts = urllib.parse.urlsplit(url)
    pieces = [url, parts.netloc, parts.query, *(v for _k, v in urllib.parse.parse_qsl(parts.query))]
    if parts.password:
        pieces.append(parts.password)
    if parts.path not in ("", "/"):
        pieces += [parts.path, *(seg for seg in parts.path.split("/") if len(seg) >= 4)]
    return Redactor(pieces)


def post(config: Alerts, alert: Alert) -> None:
    """Send one alert to the webhook now.

    Raises:
        AlertError: the URL does not resolve or is not http(s), or the webhook did not take it
            (no answer, refused, a non-2xx status); the message names the reference, never the URL.
        UnresolvedSecret: the webhook reference cannot be read.
    """
    where = f"alerts.webhook ({config.webhook})"
    url = config.webhook.reveal().strip()
    masked = _url_redactor(url)
    try:
        parts = urllib.parse.urlsplit(url)
        _port = parts.port  # raises ValueError for a port that is not a number
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise AlertError("the webhook is not an http(s) URL", where=where, hint="give http://HOST/... or https://...")
    request = PAYLOADS[config.kind](alert, url)
    try:
        outgoing = urllib.request.Request(request.url, data=request.body, headers=dict(request.headers), method="POST")
    except ValueError:
        raise AlertError("the webhook URL is not valid", where=where, hint="check it; it is not shown") from None
    try:
        with urllib.request.urlopen(outgoing, timeout=config.timeout_s) as answer:  # http(s) only: checked above
            status = answer.status
    except urllib.error.HTTPError as e:
        said = e.read(300).decode(errors="replace").strip()
        raise AlertError(
            masked.redact(f"the webhook answered HTTP {e.code} {e.reason}" + (f": {said}" if said else "")),
            where=where,
            hint=f"check the URL and what a {config.kind} webhook expects",
        ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
        reason = e.reason if isinstance(e, urllib.error.URLError) else f"{type(e).__name__}: {e}"
        raise AlertError(
            masked.redact(f"the webhook could not be reached: {reason}"),
            where=where,
            hint=f"is it up and reachable from here? (timeout {config.timeout_s:g}s)",
        ) from None
    if not 200 <= status < 300:
        raise AlertError(f"the webhook answered HTTP {status}", where=where)


def notify(config: Alerts | None, alert: Alert) -> Delivery:
    """Send an alert if the configuration asks for its event; never raises.

    Returns:
        What became of it; a failure is also logged (warning) on this module's logger.
    """
    if config is None:
        return Delivery(alert.event, "-", False, "no alerts: section in the parameters")
    if alert.event not in config.on:
        return Delivery(alert.event, config.kind, False, f"{alert.event} is not in alerts.on")
    try:
        post(config, alert)
    except HomelabError as e:
        log.warning("alert %s not delivered: %s", alert.event, e)
        return Delivery(alert.event, config.kind, False, str(e))
    except Exception as e:  # never hide the run's own result; the text may hold the URL, so only the class
        log.warning("alert %s not delivered: %s", alert.event, type(e).__name__)
        return Delivery(alert.event, config.kind, False, f"alerts.webhook ({config.webhook}): {type(e).__name__}")
    return Delivery(alert.event, config.kind, True, f"alerts.webhook ({config.webhook})")


def _config(files: Sequence[str | Path]) -> tuple[Alerts | None, str]:
    from homelab_lib.inventory import load_inventory

    inv = load_inventory([Path(f) for f in files])
    return inv.alerts, inv.name


def after_run(record: Record, archive_root: Path) -> Delivery | None:
    """Send the alert a recorded run calls for, with the ``alerts:`` of the run's parameter files.

    Returns:
        None when the run calls for no alert or had no parameter files; else what became of it.
        Never raises: a parameter file that no longer loads is reported in the Delivery.
    """
    alert = alert_for_run(record, archive_root)
    if alert is None or not record.parameter_files:
        return None
    try:
        config, _name = _config(record.parameter_files)
    except HomelabError as e:
        return Delivery(alert.event, "-", False, f"the parameters could not be read for alerts: {e}")
    if config is None:
        return None
    return notify(config, alert)


def after_verify(files: Sequence[str | Path], problems: Sequence[str], archive_root: Path) -> Delivery | None:
    """``audit verify -f PARAMS`` found problems: send ``tamper`` with the ``alerts:`` of those files.

    Returns:
        None without problems, files or ``alerts:``; else what became of it. Never raises.
    """
    if not problems or not files:
        return None
    try:
        config, name = _config(files)
    except HomelabError as e:
        return Delivery("tamper", "-", False, f"the parameters could not be read for alerts: {e}")
    if config is None:
        return None
    return notify(config, alert_for_tamper(problems, archive_root, name))


__all__ = [
    "EVENTS",
    "PAYLOADS",
    "Alert",
    "Delivery",
    "Request",
    "after_run",
    "after_verify",
    "alert_for_run",
    "alert_for_tamper",
    "alertmanager_request",
    "gotify_request",
    "is_drift",
    "json_request",
    "notify",
    "ntfy_request",
    "post",
    "slack_request",
]
