"""Runbook 07 against real programs on 127.0.23.x (not the lab).

Started here, each on loopback: an OpenSSH server (the "monitoring VM": the config folders are in
tmp), Debian's ``prometheus`` (lifecycle API on), ``prometheus-alertmanager``, two
``prometheus-node-exporter``s (a Docker VM and the K3s VM), two ``prometheus_client`` exporters
(a Compose service, and a service on K3s behind its NodePort) and a webhook receiver. The adapter
deploys over SSH and reloads; a second run changes and reloads nothing; a stopped exporter shows
down and its TargetDown alert reaches the receiver through Alertmanager.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
import yaml

from homelab_lib import monitoring
from homelab_lib.core import contract
from homelab_lib.core.errors import MonitoringConfigRejected, SshError
from homelab_lib.core.secrets import SecretRef
from homelab_lib.hosts.docker import DockerHost, HostPool
from homelab_lib.hosts.ssh import SshTarget, connect
from homelab_lib.inventory import Inventory, load_inventory
from homelab_lib.monitoring import MonitoringAdapter, PrometheusApi, Settings
from tests.kube_fixtures import wait_for

VM = "127.0.23.11"  # the Docker VM: sshd, Prometheus, Alertmanager, node-exporter, the demo exporter
K3S = "127.0.23.12"  # the K3s VM: node-exporter, the NodePort of a service on K3s
SSHD = "/usr/sbin/sshd"
WEBHOOK_PATH = "/hook/secret-token-4d2a"
FAST = Settings(group_wait="1s", group_interval="1s", repeat_interval="1m", alert_for={"TargetDown": "0s"})
PROGRAMS = ("prometheus", "prometheus-alertmanager", "prometheus-node-exporter", "promtool")

pytestmark = [
    pytest.mark.skipif(not all(shutil.which(p) for p in PROGRAMS), reason="Debian's Prometheus packages missing"),
    pytest.mark.skipif(not Path(SSHD).exists(), reason="openssh-server is not installed"),
    pytest.mark.timeout(300),
]


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


@dataclass
class Hooked:
    """What the webhook receiver got: Alertmanager's JSON bodies."""

    bodies: list[dict[str, Any]] = field(default_factory=list)

    def alerts(self) -> list[dict[str, Any]]:
        return [a for b in self.bodies for a in b.get("alerts", [])]


@dataclass
class World:
    tmp: Path
    inv: Inventory
    ssh: SshTarget
    procs: dict[str, subprocess.Popen[bytes]]
    exporters: dict[str, Any]
    hooked: Hooked
    prometheus: PrometheusApi
    hosts: HostPool  # the "monitoring VM", connected once for every adapter of this module

    def adapter(self) -> MonitoringAdapter:
        return MonitoringAdapter(self.inv, settings=FAST, hosts=self.hosts, settle_timeout_s=60)


def _sshd(d: Path) -> tuple[subprocess.Popen[bytes], SshTarget, int]:
    for name in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    (d / "authorized_keys").write_text((d / "client.pub").read_text())
    port = free_port(VM)
    host_key = " ".join((d / "host.pub").read_text().split()[:2])
    (d / "known_hosts").write_text(f"[{VM}]:{port} {host_key}\n")
    (d / "sshd_config").write_text(
        "\n".join([f"ListenAddress {VM}:{port}", f"HostKey {d / 'host'}", f"PidFile {d / 'sshd.pid'}",
                   f"AuthorizedKeysFile {d / 'authorized_keys'}", "PasswordAuthentication no",
                   "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no", f"AllowUsers {getpass.getuser()}",
                   "PermitRootLogin prohibit-password", "UseDNS no", "Subsystem sftp internal-sftp", ""])
    )  # fmt: skip
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    with (d / "log").open("wb") as log:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stdout=log, stderr=log)
    target = SshTarget("docker-a", VM, port, getpass.getuser(), SecretRef("file", str(d / "client")),
                       d / "known_hosts", timeout=10)  # fmt: skip

    def up() -> bool:
        assert proc.poll() is None, (d / "log").read_text()
        try:
            connect(target).close()
            return True
        except SshError:
            return False

    wait_for("sshd", up, 30)
    return proc, target, port


def _params(tmp: Path, ssh_port: int, webhook_port: int) -> Path:
    (tmp / "secrets").mkdir()
    (tmp / "secrets" / "webhook").write_text(f"http://{VM}:{webhook_port}{WEBHOOK_PATH}\n")
    (tmp / "secrets" / "pve").write_text("unused\n")
    folders = {c: tmp / "vm" / c for c in ("prometheus", "alertmanager", "grafana")}
    doc = {
        "name": "livetest",
        "proxmox": {"endpoint": "https://127.0.23.2:8006", "token_id": "t", "token_secret": "file:secrets/pve",
                    "template": "debian"},
        "nodes": [{"name": "pve-a", "cores": 8, "memory_gib": 32}, {"name": "pve-b", "cores": 8, "memory_gib": 32}],
        "ssh": {"user": getpass.getuser(), "port": ssh_port, "private_key": f"file:{tmp / 'sshd' / 'client'}",
                "known_hosts": str(tmp / "sshd" / "known_hosts")},
        "vms": [
            {"name": "docker-a", "vmid": 110, "node": "pve-a", "role": "docker", "cores": 2, "memory_mib": 2048,
             "disk_gib": 8, "ip": f"{VM}/8",
             "stacks": {"monitoring": ["prometheus", "alertmanager", "grafana"], "exporters": ["node-exporter"],
                        "app": ["demo"]}},
            {"name": "k3s-b", "vmid": 120, "node": "pve-b", "role": "k3s", "cores": 2, "memory_mib": 2048,
             "disk_gib": 8, "ip": f"{K3S}/8"},
        ],
        "k3s": {"vm": "k3s-b", "version": "v1.31.4+k3s1", "services": ["web"]},
        "services": {
            "prometheus": {"binds": [{"host": str(folders["prometheus"]), "container": "/etc/prometheus"}]},
            "alertmanager": {"binds": [{"host": str(folders["alertmanager"]), "container": "/etc/alertmanager"}]},
            # Grafana's files are deployed, but no Grafana runs here: its metrics are not scraped
            "grafana": {"binds": [{"host": str(folders["grafana"]), "container": "/etc/grafana/provisioning"}],
                        "metrics": None},
            "demo": {"image": "example.org/demo:1.0", "ports": [{"container": 9500}], "metrics": "/metrics"},
            "web": {"image": "example.org/web:1.0", "ports": [{"container": 8080}], "metrics": "/metrics"},
        },
        "monitoring": {"prometheus_host": "docker-a", "scrape_interval": "1s", "evaluation_interval": "1s",
                       "k3s_node_ports": {"web": 30500}},
        "alerts": {"webhook": "file:secrets/webhook", "kind": "json"},
    }  # fmt: skip
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _exporter(address: str, port: int, name: str) -> Any:
    registry = prometheus_client.CollectorRegistry()
    counter = prometheus_client.Counter(
        f"{name}_requests", "requests served (moves on every scrape)", registry=registry
    )

    class Moving(prometheus_client.registry.Collector):
        def collect(self) -> Iterator[Any]:
            counter.inc()
            return iter(())

    registry.register(Moving())
    server, _thread = prometheus_client.start_http_server(port, address, registry=registry)
    return server


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("monitoring")
    (tmp / "sshd").mkdir()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    exporters: dict[str, Any] = {}
    hooked = Hooked()
    hosts = HostPool()

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path == WEBHOOK_PATH:
                hooked.bodies.append(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    receiver = ThreadingHTTPServer((VM, free_port(VM)), Hook)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        sshd, target, ssh_port = _sshd(tmp / "sshd")
        procs["sshd"] = sshd
        inv = load_inventory(_params(tmp, ssh_port, receiver.server_address[1]))
        vm = tmp / "vm"
        for c in ("prometheus", "alertmanager"):
            (vm / c).mkdir(parents=True)
        (vm / "prometheus" / "prometheus.yml").write_text("scrape_configs: []\n")  # what runs before runbook 07
        (vm / "alertmanager" / "alertmanager.yml").write_text("route: {receiver: none}\nreceivers: [{name: none}]\n")
        logs = tmp / "logs"
        logs.mkdir()

        def start(name: str, *args: str) -> None:
            with (logs / f"{name}.log").open("wb") as log:
                procs[name] = subprocess.Popen(list(args), stdout=log, stderr=log)

        start(
            "prometheus",
            "prometheus",
            f"--config.file={vm / 'prometheus' / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address={VM}:9090",
            "--web.enable-lifecycle",
        )
        start(
            "alertmanager",
            "prometheus-alertmanager",
            f"--config.file={vm / 'alertmanager' / 'alertmanager.yml'}",
            f"--storage.path={tmp / 'am'}",
            f"--web.listen-address={VM}:9093",
            "--cluster.listen-address=",
        )
        start("node-exporter-a", "prometheus-node-exporter", f"--web.listen-address={VM}:9100")
        start("node-exporter-k3s", "prometheus-node-exporter", f"--web.listen-address={K3S}:9100")  # fmt: skip
        exporters["demo"] = _exporter(VM, 9500, "demo")
        exporters["web"] = _exporter(K3S, 30500, "web")
        api = PrometheusApi(f"http://{VM}:9090")
        wait_for("prometheus", api.ready)
        wait_for("alertmanager", PrometheusApi(f"http://{VM}:9093").ready)
        for name, proc in procs.items():
            assert proc.poll() is None, f"{name} exited: {(logs / f'{name}.log').read_text()[-2000:]}"
        hosts["docker-a"] = DockerHost.open(target)
        yield World(tmp, inv, target, procs, exporters, hooked, api, hosts)
    finally:
        hosts.close()
        receiver.shutdown()
        for server in exporters.values():
            server.shutdown()
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def _reload_timestamp(api: PrometheusApi) -> float:
    """Read from Prometheus's own /metrics (it need not scrape itself)."""
    with urllib.request.urlopen(f"{api.url}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("prometheus_config_last_reload_success_timestamp_seconds "):
                return float(line.split()[1])
    raise AssertionError("no prometheus_config_last_reload_success_timestamp_seconds")


def test_first_run_copies_over_ssh_reloads_and_every_target_is_up(world: World) -> None:
    before = _reload_timestamp(world.prometheus)
    runbook = world.adapter()
    try:
        done = contract.run(runbook, confirm=True)
    finally:
        runbook.close()
    assert done.plan.summary().startswith(("create", "update")) or not done.plan.empty
    assert sorted(runbook.reloads) == ["alertmanager", "prometheus"]
    assert done.result.applied
    assert done.result.ok
    written = world.tmp / "vm" / "prometheus" / "prometheus.yml"
    assert "job_name: demo" in written.read_text()
    assert (world.tmp / "vm" / "grafana" / "dashboards" / "homelab" / "homelab-overview.json").is_file()
    assert _reload_timestamp(world.prometheus) >= before
    report = done.verified.report
    assert done.verified.ok, done.verified.summary()
    assert report.targets
    assert all(t.health == "up" for t in report.targets)
    assert not report.unexpected
    by_service = {(t.service, t.platform, t.host) for t in report.targets}
    assert ("demo", "compose", "docker-a") in by_service
    assert ("web", "k3s", "k3s-b") in by_service
    assert ("node-exporter", "k3s", "k3s-b") in by_service
    table = report.table()
    assert list(table.columns[:3]) == ["platform", "host", "service"]
    assert set(table["health"]) == {"up"}
    fig = report.chart(figsize=(8, 3))
    assert len(fig.axes) == 2
    # Prometheus itself has the labels: one query spans both platforms
    up = world.prometheus.query("sum by (platform) (up)")
    assert {s["metric"]["platform"] for s in up} == {"compose", "k3s"}


def test_second_run_changes_and_reloads_nothing(world: World) -> None:
    before = _reload_timestamp(world.prometheus)
    mtime = (world.tmp / "vm" / "prometheus" / "prometheus.yml").stat().st_mtime_ns
    runbook = world.adapter()
    try:
        done = contract.run(runbook, confirm=True)
    finally:
        runbook.close()
    assert done.plan.empty, done.plan.table()
    assert done.result.outcomes == ()
    assert not done.result.applied
    assert runbook.reloads == []
    assert _reload_timestamp(world.prometheus) == before
    assert (world.tmp / "vm" / "prometheus" / "prometheus.yml").stat().st_mtime_ns == mtime
    assert done.verified.ok


def test_a_stray_rule_file_is_deleted_only_with_allow_delete(world: World) -> None:
    stray = world.tmp / "vm" / "prometheus" / "rules" / "old.yml"
    stray.write_text("groups: []\n")
    runbook = world.adapter()
    try:
        desired = runbook.desired()
        plan = runbook.plan(desired, runbook.observe(desired))
        assert [(c.target, c.action.value) for c in plan.applicable(allow_delete=True)] == [
            ("prometheus", "update"),
            ("prometheus/rules/old.yml", "delete"),
        ]
        held = runbook.apply(desired, plan, confirm=True)
        assert held.not_done == ("prometheus/rules/old.yml: delete needs allow_delete=True",)
        assert stray.exists()
        assert runbook.reloads == []  # nothing of Prometheus's was written: no reload
        done = runbook.apply(desired, plan, confirm=True, allow_delete=True)
        assert done.applied
        assert not stray.exists()
        assert runbook.reloads == ["prometheus"]
    finally:
        runbook.close()


def test_a_file_with_a_secret_is_readable_by_the_containers_group_only(world: World) -> None:
    am = (world.tmp / "vm" / "alertmanager" / "alertmanager.yml").stat()
    if os.geteuid() != 0:
        pytest.skip("chown to group nobody needs root")
    assert am.st_mode & 0o777 == 0o640
    assert am.st_gid == 65534
    assert WEBHOOK_PATH in (world.tmp / "vm" / "alertmanager" / "alertmanager.yml").read_text()


def test_a_rejected_config_copies_nothing(world: World) -> None:
    bad = MonitoringAdapter(world.inv, settings=Settings(alert_for={"TargetDown": "whenever"}),
                            hosts=world.hosts)  # fmt: skip
    rules = world.tmp / "vm" / "prometheus" / "rules" / "homelab.yml"
    before = rules.read_text()
    try:
        desired = bad.desired()
        plan = bad.plan(desired, bad.observe(desired))
        assert any(c.target == "prometheus/rules/homelab.yml" for c in plan.applicable())
        with pytest.raises(MonitoringConfigRejected, match="nothing was copied"):
            bad.apply(desired, plan, confirm=True)
    finally:
        bad.close()
    assert rules.read_text() == before
    assert bad.reloads == []


def test_panel_queries_parse_and_the_overview_returns_series(world: World) -> None:
    checks = monitoring.check_queries(world.prometheus)
    assert checks
    assert all(c.error in ("", "no series") for c in checks), [c for c in checks if c.error not in ("", "no series")]
    overview = [c for c in checks if c.query.dashboard == "homelab-overview"]
    assert overview
    assert all(c.ok for c in overview), monitoring.checks_table(overview)
    node = [c for c in checks if c.query.dashboard == "homelab-node"]
    assert node
    assert all(c.ok for c in node), monitoring.checks_table(node)
    broken = monitoring.PanelQuery("x", "broken", "A", "sum(up")
    assert "parse error" in monitoring.check_queries(world.prometheus, [broken])[0].error


def test_a_stopped_exporter_is_down_and_its_alert_reaches_the_webhook(world: World) -> None:
    world.exporters.pop("demo").shutdown()
    runbook = world.adapter()
    try:
        desired = runbook.desired()

        def demo_down() -> Any:
            report = runbook.report(desired)
            return report if any(t.service == "demo" and t.health == "down" for t in report.targets) else None

        report = wait_for("the demo target to be down", demo_down)
        assert [t.service for t in report.down] == ["demo"]
        assert "down" in report.table().set_index("service").loc["demo", "health"]
        verified = runbook.verify(desired, contract.ApplyResult("monitoring", False, ""))
        assert not verified.ok
        assert any(c.target.startswith("demo ") for c in verified.problems)
    finally:
        runbook.close()

    def delivered() -> list[dict[str, Any]]:
        return [a for a in world.hooked.alerts()
                if a["labels"].get("alertname") == "TargetDown" and a["labels"].get("service") == "demo"]  # fmt: skip

    alerts = wait_for("TargetDown for demo at the webhook", delivered, 90)
    labels = alerts[0]["labels"]
    assert alerts[0]["status"] == "firing"
    assert (labels["platform"], labels["host"], labels["node"]) == ("compose", "docker-a", "pve-a")

    def listed() -> list[dict[str, Any]]:
        return [a for a in world.prometheus.alerts() if a["labels"]["alertname"] == "TargetDown"]

    firing = wait_for("Prometheus to list the alert", listed)
    assert firing[0]["labels"]["service"] == "demo"


def test_the_catalog_seeds_a_first_config_that_runbook_07_then_replaces(world: World) -> None:
    """02 seeds Prometheus's and Alertmanager's folders (so they start before 07); a seed never overwrites."""
    from homelab_lib import compose

    fresh = world.tmp / "fresh"
    inv = world.inv.model_copy(
        update={"services": {**world.inv.services, "prometheus": world.inv.services["prometheus"].model_copy(
            update={"binds": [b.model_copy(update={"host": str(fresh / "prometheus"),
                                                    "seed": load_inventory_catalog_seed("prometheus")})
                              for b in world.inv.services["prometheus"].binds]})}}
    )  # fmt: skip
    project = next(p for p in compose.render(inv) if p.stack == "monitoring")
    assert [path for path, _ in project.seeds] == [f"{fresh}/prometheus/prometheus.yml"]
    with DockerHost.open(world.ssh) as host:
        assert host.seed_files({path: text.encode() for path, text in project.seeds}) == 1
        seeded = (fresh / "prometheus" / "prometheus.yml").read_text()
        assert "scrape_configs: []" in seeded
        (fresh / "prometheus" / "prometheus.yml").write_text("# runbook 07's\n")
        assert host.seed_files({path: text.encode() for path, text in project.seeds}) == 0
    assert (fresh / "prometheus" / "prometheus.yml").read_text() == "# runbook 07's\n"
    # the seeds are configs the real programs accept
    seeds = world.tmp / "seeds"
    seeds.mkdir()
    (seeds / "prometheus.yml").write_text(load_inventory_catalog_seed("prometheus")["prometheus.yml"])
    (seeds / "alertmanager.yml").write_text(load_inventory_catalog_seed("alertmanager")["alertmanager.yml"])
    for args in (["promtool", "check", "config", "prometheus.yml"], ["amtool", "check-config", "alertmanager.yml"]):
        done = subprocess.run(args, cwd=seeds, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr


def load_inventory_catalog_seed(service: str) -> dict[str, str]:
    """The seed the shipped catalog gives a service's config bind."""
    from homelab_lib.inventory.load import CATALOG

    catalog = yaml.safe_load(CATALOG.read_text())
    return dict(catalog[service]["binds"][0]["seed"])
