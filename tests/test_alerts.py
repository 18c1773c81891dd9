"""Alerts: `homelab run` and `audit verify` post to a webhook; here a real HTTP receiver on 127.0.4.x."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from homelab_lib.inventory.model import Alerts
from homelab_lib.schedule.alerts import Alert, notify

NOTEBOOKS = Path(__file__).parent / "alert_notebooks"
TOKEN = "tok-9c1e5b7d"  # a test value that must never show
TOPIC = "hook-secret-path-7f3a"


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """An HTTP server in a thread that keeps every request and answers ``status``."""

    host: str
    port: int = 0
    status: int = 200
    got: list[Received] = field(default_factory=list)

    def url(self, path: str = f"/{TOPIC}", query: str = f"token={TOKEN}") -> str:
        return f"http://{self.host}:{self.port}{path}" + (f"?{query}" if query else "")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    box = Receiver("127.0.4.1")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            box.got.append(Received("POST", self.path, dict(self.headers.items()), body))
            answer = b"ok" if box.status < 300 else f"no such hook {self.path}".encode()  # echoes the token
            self.send_response(box.status)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((box.host, 0), Handler)
    box.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield box
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def closed_port(host: str) -> int:
    """A port on host that nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def homelab(*args: str, url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOMELAB_ALERT_URL": url, "XDG_RUNTIME_DIR": str(cwd / "rt")}
    return subprocess.run(
        [sys.executable, "-m", "homelab_lib.cli", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


def assert_no_url(url: str, *texts: str) -> None:
    for text in texts:
        assert TOKEN not in text
        assert TOPIC not in text
        assert url not in text


def everything_written(archive: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in archive.rglob("*") if p.is_file())


@pytest.fixture
def alerting_params(make_params: Callable[..., Path]) -> Callable[..., Path]:
    def make(**alerts: Any) -> Path:
        return make_params(alerts={"webhook": "env:HOMELAB_ALERT_URL", **alerts})

    return make


def test_failed_run_posts_the_failing_cell(tmp_path: Path, receiver: Receiver, alerting_params: Any) -> None:
    params = alerting_params(kind="json")
    archive = tmp_path / "archive"
    url = receiver.url()
    done = homelab(
        "run", str(NOTEBOOKS / "fails.ipynb"), "-f", str(params), "--archive", str(archive), "-q", url=url, cwd=tmp_path
    )
    assert done.returncode == 1, done.stderr
    assert "FAILED" in done.stderr
    assert "alert failure (json) sent to alerts.webhook (env:HOMELAB_ALERT_URL)" in done.stdout
    [got] = receiver.got
    assert got.path == f"/{TOPIC}?token={TOKEN}"
    body = got.json()
    [record] = [json.loads(line) for line in (archive / "index.jsonl").read_text().splitlines()]
    assert body["event"] == "failure"
    assert body["severity"] == "critical"
    assert body["runbook"] == "fails"
    assert body["homelab"] == record["homelab"] == "dreamland"
    assert body["status"] == "failed"
    assert body["run"] == record["run"]
    assert body["failed_cell"] == record["failed_cell"]
    assert body["failed_cell"] is not None
    assert body["error"] == "RuntimeError: disk /dev/sdz is gone"
    assert f"failed at cell {record['failed_cell']}: RuntimeError: disk /dev/sdz is gone" in body["message"]
    assert body["archive"] == str(archive / record["archived"])
    assert Path(body["archive"]).is_file()
    assert_no_url(url, done.stdout, done.stderr, everything_written(archive))


def test_dry_run_with_changes_posts_drift(tmp_path: Path, receiver: Receiver, alerting_params: Any) -> None:
    params = alerting_params(kind="slack")
    archive = tmp_path / "archive"
    nb = str(NOTEBOOKS / "drift.ipynb")
    url = receiver.url()
    done = homelab("run", nb, "-f", str(params), "--archive", str(archive), "-q", url=url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr  # drift is not a failed run
    assert "ok: " in done.stdout
    [got] = receiver.got
    text = got.json()["text"]
    assert text.startswith("homelab dreamland: drift drift\n")
    assert "status: ok" in text
    assert "plan: 1 create" in text
    assert "  create vm web-1 (node1): not on node1" in text
    assert "failed at" not in text

    same = homelab(
        "run", nb, "-f", str(params), "-p", "changes", "0", "--archive", str(archive), "-q", url=url, cwd=tmp_path
    )
    assert same.returncode == 0, same.stderr
    applied = homelab(
        "run", nb, "-f", str(params), "-p", "confirm", "true", "--archive", str(archive), "-q", url=url, cwd=tmp_path
    )
    assert applied.returncode == 0, applied.stderr
    assert len(receiver.got) == 1  # no changes: no drift; a confirmed run is not a dry run
    quiet = homelab("run", nb, "-f", str(params), "--no-alert", "--archive", str(archive), "-q", url=url, cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert len(receiver.got) == 1  # a dry run someone reviews by hand
    assert_no_url(url, done.stdout, done.stderr, everything_written(archive))


def test_failed_post_is_reported_and_changes_nothing(tmp_path: Path, receiver: Receiver, alerting_params: Any) -> None:
    params = alerting_params(kind="gotify")
    archive = tmp_path / "archive"
    receiver.status = 500
    url = receiver.url()
    done = homelab(
        "run", str(NOTEBOOKS / "fails.ipynb"), "-f", str(params), "--archive", str(archive), "-q", url=url, cwd=tmp_path
    )
    assert done.returncode == 1  # the run's own result, not the alert's
    assert "FAILED: " in done.stderr
    assert "alert failure (gotify) NOT sent: alerts.webhook (env:HOMELAB_ALERT_URL): the webhook answered HTTP 500" in (
        done.stderr
    )
    assert len(receiver.got) == 1
    assert_no_url(url, done.stdout, done.stderr, everything_written(archive))

    gone = f"http://127.0.4.1:{closed_port('127.0.4.1')}/{TOPIC}?token={TOKEN}"
    drift = homelab(
        "run",
        str(NOTEBOOKS / "drift.ipynb"),
        "-f",
        str(params),
        "--archive",
        str(archive),
        "-q",
        url=gone,
        cwd=tmp_path,
    )
    assert drift.returncode == 0, drift.stderr
    assert (
        "alert drift (gotify) NOT sent: alerts.webhook (env:HOMELAB_ALERT_URL): the webhook could not be reached"
        in (drift.stderr)
    )
    assert_no_url(gone, drift.stdout, drift.stderr, everything_written(archive))


def test_events_not_asked_for_are_not_sent(tmp_path: Path, receiver: Receiver, alerting_params: Any) -> None:
    params = alerting_params(on=["failure"])
    done = homelab(
        "run", str(NOTEBOOKS / "drift.ipynb"), "-f", str(params), "--archive", str(tmp_path / "a"), "-q",
        url=receiver.url(), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert receiver.got == []
    assert "drift is not in alerts.on" in done.stdout + done.stderr


def test_audit_verify_posts_tamper(tmp_path: Path, receiver: Receiver, alerting_params: Any) -> None:
    params = alerting_params(kind="ntfy", on=["tamper"])
    archive = tmp_path / "archive"
    url = receiver.url()
    ran = homelab(
        "run", str(NOTEBOOKS / "drift.ipynb"), "-f", str(params), "--archive", str(archive), "-q", url=url, cwd=tmp_path
    )
    assert ran.returncode == 0, ran.stderr
    assert receiver.got == []  # drift is not in alerts.on here
    [notebook] = archive.rglob("*.ipynb")
    notebook.write_text(notebook.read_text().replace("web-1", "web-2"))

    bare = homelab("audit", "verify", "--archive", str(archive), url=url, cwd=tmp_path)
    assert bare.returncode == 1
    assert receiver.got == []  # without -f there are no alerts: settings
    done = homelab("audit", "verify", "--archive", str(archive), "-f", str(params), url=url, cwd=tmp_path)
    assert done.returncode == 1
    [got] = receiver.got
    assert got.headers["Title"] == "homelab dreamland: audit tampering found"
    assert got.headers["Priority"] == "urgent"
    assert got.headers["Tags"] == "homelab,tamper,audit"
    text = got.body.decode()
    assert "audit verify found:" in text
    assert notebook.name in text
    assert f"archive: {archive}" in text
    assert_no_url(url, done.stdout, done.stderr)


# ------------------------------------------------------------------ each payload's shape

ALERT = Alert(
    event="failure",
    runbook="01_provision_nodes",
    homelab="drowzee",
    status="failed",
    run="20261125T174205Z-01_provision_nodes",
    failed_cell=4,
    error="TaskFailed: clone of vm 101 failed",
    plan_summary="1 create, 2 no-op",
    changes=("create vm web-1 (pve1)",),
    archive="/srv/archive/2026/11/25/174205Z-01_provision_nodes-failed.ipynb",
    start="2026-11-25T17:42:05+00:00",
)


@pytest.fixture
def send(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Received]:
    """Notify ALERT with alerts.kind = kind and the webhook at url (default: the receiver); what it got."""

    def post(kind: str, url: str | None = None) -> Received:
        monkeypatch.setenv("HOMELAB_TEST_ALERT_URL", url or receiver.url())
        config = Alerts.model_validate({"webhook": "env:HOMELAB_TEST_ALERT_URL", "kind": kind})
        delivery = notify(config, ALERT)
        assert delivery.sent, delivery.detail
        [got] = receiver.got
        return got

    return post


def test_ntfy_shape(send: Callable[..., Received]) -> None:
    got = send("ntfy")
    assert got.headers["Title"] == "homelab drowzee: 01_provision_nodes failed"
    assert got.headers["Priority"] == "high"
    assert got.headers["Tags"] == "homelab,failure,01_provision_nodes"
    assert got.headers["Content-Type"].startswith("text/plain")
    text = got.body.decode()
    assert "failed at cell 4: TaskFailed: clone of vm 101 failed" in text
    assert "plan: 1 create, 2 no-op\n  create vm web-1 (pve1)" in text
    assert f"archive: {ALERT.archive}" in text


def test_gotify_shape(send: Callable[..., Received]) -> None:
    body = send("gotify").json()
    assert set(body) == {"title", "message", "priority"}
    assert body["title"] == "homelab drowzee: 01_provision_nodes failed"
    assert body["priority"] == 8
    assert "failed at cell 4" in body["message"]


def test_slack_shape(send: Callable[..., Received]) -> None:
    body = send("slack").json()
    assert set(body) == {"text"}
    assert body["text"].startswith("homelab drowzee: 01_provision_nodes failed\nrunbook: 01_provision_nodes")


def test_alertmanager_shape(send: Callable[..., Received], receiver: Receiver) -> None:
    got = send("alertmanager", receiver.url(path="", query=""))
    assert got.path == "/api/v2/alerts"
    [one] = got.json()
    assert one["labels"] == {
        "alertname": "HomelabRunFailed",
        "runbook": "01_provision_nodes",
        "homelab": "drowzee",
        "severity": "critical",
        "event": "failure",
    }
    assert one["annotations"]["summary"] == "homelab drowzee: 01_provision_nodes failed"
    assert one["annotations"]["failed_cell"] == "4"
    assert one["annotations"]["archive"] == ALERT.archive
    assert one["startsAt"] == ALERT.start
    assert all(isinstance(v, str) for v in [*one["labels"].values(), *one["annotations"].values()])


def test_alertmanager_path_is_kept(send: Callable[..., Received], receiver: Receiver) -> None:
    got = send("alertmanager", receiver.url(path="/am/api/v2/alerts", query=""))
    assert got.path == "/am/api/v2/alerts"


def test_json_shape(send: Callable[..., Received]) -> None:
    body = send("json").json()
    assert body["event"] == "failure"
    assert body["failed_cell"] == 4
    assert body["plan_changes"] == ["create vm web-1 (pve1)"]
    assert body["archive"] == ALERT.archive


@pytest.mark.parametrize(
    "url",
    [f"ftp://{TOKEN}@host/{TOPIC}", f"http://127.0.4.1:{TOKEN}/{TOPIC}", f"http:///{TOPIC}?token={TOKEN}"],
)
def test_bad_url_is_refused_without_showing_it(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("HOMELAB_TEST_ALERT_URL", url)
    delivery = notify(Alerts.model_validate({"webhook": "env:HOMELAB_TEST_ALERT_URL"}), ALERT)
    assert not delivery.sent
    assert "not an http(s) URL" in delivery.detail
    assert_no_url(url, str(delivery))


def test_webhook_must_be_a_reference(make_params: Callable[..., Path]) -> None:
    from homelab_lib.core.errors import ConfigError
    from homelab_lib.inventory import load_inventory

    params = make_params(alerts={"webhook": "https://ntfy.sh/my-topic", "kind": "ntfy"})
    with pytest.raises(ConfigError) as e:
        load_inventory([params])
    assert "alerts.webhook" in str(e.value)
    assert "my-topic" not in str(e.value)


# ------------------------------------------------------------------ a real Alertmanager takes the payload

ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    """Debian's Alertmanager on 127.0.4.2, clustering off; its base URL."""
    if ALERTMANAGER is None:
        pytest.skip("Alertmanager is not installed (Debian package prometheus-alertmanager)")
    config = tmp_path / "alertmanager.yml"
    config.write_text('route:\n  receiver: "null"\nreceivers:\n  - name: "null"\n')
    port = closed_port("127.0.4.2")
    base = f"http://127.0.4.2:{port}"
    log = (tmp_path / "alertmanager.log").open("w")
    proc = subprocess.Popen(
        [ALERTMANAGER, f"--config.file={config}", f"--storage.path={tmp_path / 'am-data'}",
         f"--web.listen-address=127.0.4.2:{port}", "--cluster.listen-address="],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        for _ in range(200):
            try:
                with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                assert proc.poll() is None, (tmp_path / "alertmanager.log").read_text()
                threading.Event().wait(0.1)
        else:
            pytest.fail("Alertmanager did not get ready: " + (tmp_path / "alertmanager.log").read_text())
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_alertmanager_takes_the_alert(alertmanager: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOMELAB_TEST_ALERT_URL", alertmanager)
    delivery = notify(Alerts.model_validate({"webhook": "env:HOMELAB_TEST_ALERT_URL", "kind": "alertmanager"}), ALERT)
    assert delivery.sent, delivery.detail
    with urllib.request.urlopen(f"{alertmanager}/api/v2/alerts?filter=homelab%3D%22drowzee%22", timeout=10) as answer:
        [active] = json.loads(answer.read())
    assert active["labels"]["alertname"] == "HomelabRunFailed"
    assert active["labels"]["runbook"] == "01_provision_nodes"
    assert active["labels"]["severity"] == "critical"
    assert active["annotations"]["failed_cell"] == "4"
    assert active["status"]["state"] == "active"


# ------------------------------------------------------------------ a scheduled run that fails


def test_scheduled_failing_run_posts(tmp_path: Path, receiver: Receiver, alerting_params: Any) -> None:
    """What the timer's service runs (its ExecStart, from its WorkingDirectory) posts the failing cell."""
    from homelab_lib.schedule import systemd as sched

    planned = sched.plan_schedule(
        NOTEBOOKS / "fails.ipynb",
        sched.parse_every("hourly"),
        param_files=[alerting_params(kind="ntfy")],
        archive_dir=tmp_path / "archive",
        unit_dir=tmp_path / "units",
    )
    sched.write_schedule(planned)
    [unit] = sched.list_schedules(tmp_path / "units")
    env = {**os.environ, "HOMELAB_ALERT_URL": receiver.url(), "XDG_RUNTIME_DIR": str(tmp_path / "rt")}
    done = subprocess.run(list(unit.command), cwd=unit.workdir, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    [got] = receiver.got
    assert got.headers["Title"] == "homelab dreamland: fails failed"
    [record] = [json.loads(line) for line in (tmp_path / "archive" / "index.jsonl").read_text().splitlines()]
    assert f"failed at cell {record['failed_cell']}: RuntimeError: disk /dev/sdz is gone" in got.body.decode()
    assert_no_url(receiver.url(), done.stdout, done.stderr)


def test_notebook_that_prints_the_url_is_not_archived(tmp_path: Path, receiver: Receiver, alerting_params: Any) -> None:
    """The webhook is a secret of the inventory: a notebook that shows it is refused by the leak scan."""
    from tests.test_runner import write_nb

    nb = write_nb(tmp_path / "chatty.ipynb", "import os\nprint(os.environ['HOMELAB_ALERT_URL'])")
    archive = tmp_path / "archive"
    url = receiver.url()
    done = homelab("run", str(nb), "-f", str(alerting_params()), "--archive", str(archive), "-q", url=url, cwd=tmp_path)
    assert done.returncode == 1
    [record] = [json.loads(line) for line in (archive / "index.jsonl").read_text().splitlines()]
    assert record["status"] == "leak"
    assert not list(archive.rglob("*.ipynb"))
    [got] = receiver.got
    assert got.json()["status"] == "leak"
    assert_no_url(url, done.stdout, done.stderr, everything_written(archive))
