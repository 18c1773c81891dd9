"""Runbook 07's rendering: targets and labels from the inventory, promtool's verdicts, rules' unit tests, dashboards.

Every check of a rendered file goes through the real ``promtool`` (and ``amtool``); the rule
tests run under ``promtool test rules``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from homelab_lib import monitoring
from homelab_lib.core.errors import ConfigError, MonitoringConfigRejected, MonitoringError
from homelab_lib.inventory import Inventory, load_inventory
from homelab_lib.monitoring.render import Settings

WEBHOOK = "https://hooks.example.org/services/T000/very-secret-token-0x5eed"
TOKEN = "k3s-bearer-token-value-77f1"
CA = "-----BEGIN CERTIFICATE-----\nthe K3s cluster CA\n-----END CERTIFICATE-----\n"

pytestmark = pytest.mark.skipif(not Path("/usr/bin/promtool").exists(), reason="promtool is not installed")


@pytest.fixture
def inv(make_params: Callable[..., Path], tmp_path: Path) -> Inventory:
    """example.yaml with Alertmanager placed, alerts to a webhook, K3s scraped with a token, sonarr on K3s."""
    (tmp_path / "secrets").mkdir(exist_ok=True)
    (tmp_path / "secrets" / "webhook").write_text(WEBHOOK + "\n")
    (tmp_path / "secrets" / "k3s-token").write_text(TOKEN + "\n")
    (tmp_path / "secrets" / "k3s-ca.pem").write_text(CA)

    def edit(d: dict[str, Any]) -> None:
        d["services"] = {"postgres": {"secrets": {"postgres_password": {"ref": "file:secrets/postgres-password"}}}}
        hypno = next(vm for vm in d["vms"] if vm["name"] == "docker-hypno")
        hypno["stacks"]["monitoring"] = ["prometheus", "alertmanager", "grafana"]
        d["k3s"]["services"] = ["gitlab", "harbor", "devenv", "sonarr"]
        for vm in d["vms"]:
            for stack in vm.get("stacks", {}).values():
                if "sonarr" in stack:
                    stack.remove("sonarr")
        d["services"]["sonarr"] = {"metrics": "/metrics"}
        d["alerts"] = {"webhook": "file:secrets/webhook", "kind": "json"}
        d["monitoring"]["k3s"] = {
            "token": "file:secrets/k3s-token",
            "ca_file": "secrets/k3s-ca.pem",
            "kube_state_metrics_port": 30808,
        }
        d["monitoring"]["k3s_node_ports"] = {"sonarr": 30989}
        d["monitoring"]["node_exporters"] = {"drowzee": "192.168.1.11:9100"}
        d["monitoring"]["pve_exporter"] = {"vm": "docker-hypno"}

    return load_inventory(make_params(edit=edit))


def test_every_target_has_the_four_labels_and_both_platforms_appear(inv: Inventory) -> None:
    targets = monitoring.compute(inv)
    assert len(targets) > 10
    for t in targets:
        assert set(t.labels) == {"platform", "node", "host", "service"}
        assert all(t.labels.values()), t
    platforms = {t.platform for t in targets}
    assert platforms == {"compose", "k3s", "proxmox"}
    jobs = {t.job for t in targets}
    assert {"node-exporter", "cadvisor", "traefik", "prometheus", "alertmanager", "grafana"} <= jobs
    assert {"kubelet", "kubelet-cadvisor", "kube-apiserver", "kube-state-metrics", "pve-exporter"} <= jobs
    # cAdvisor on every Docker VM at the host port 8081; node-exporter on each and on the K3s VM
    assert {t.address for t in targets if t.job == "cadvisor"} == {f"{vm.address}:8081" for vm in inv.docker_hosts}
    k3s_vm = inv.vm("k3s-nappy")
    assert f"{k3s_vm.address}:9100" in {t.address for t in targets if t.job == "node-exporter"}
    # traefik's metrics come from its own entrypoint, published on the VM
    assert {t.address for t in targets if t.job == "traefik"} == {"192.168.1.23:8082"}


def test_a_service_on_k3s_keeps_its_service_label_under_platform_k3s(inv: Inventory) -> None:
    sonarr = [t for t in monitoring.compute(inv) if t.service == "sonarr"]
    assert len(sonarr) == 1
    assert sonarr[0].platform == "k3s"
    assert sonarr[0].job == "sonarr"
    assert sonarr[0].address == f"{inv.vm('k3s-nappy').address}:30989"
    assert sonarr[0].host == "k3s-nappy"


def test_render_passes_promtool_and_amtool_and_keeps_secrets_out_of_the_text(inv: Inventory) -> None:
    rendered = monitoring.render(inv)
    runs = monitoring.check(rendered)
    assert [r.command[:3] for r in runs] == [
        ("promtool", "check", "config"),
        ("promtool", "check", "rules"),
        ("amtool", "check-config", "alertmanager.yml"),
    ]
    assert all(r.ok for r in runs)
    for f in rendered.files:
        assert WEBHOOK not in f.text
        assert TOKEN not in f.text
        assert WEBHOOK not in repr(f)
    am = rendered.file("alertmanager/alertmanager.yml")
    assert WEBHOOK.encode() in am.content()
    assert rendered.file("prometheus/secrets/k3s_token").content() == (TOKEN + "\n").encode()
    prom = yaml.safe_load(rendered.file("prometheus/prometheus.yml").text)
    kubelet = next(j for j in prom["scrape_configs"] if j["job_name"] == "kubelet")
    assert kubelet["authorization"] == {"type": "Bearer", "credentials_file": "secrets/k3s_token"}
    assert kubelet["scheme"] == "https"
    assert kubelet["tls_config"] == {"ca_file": "secrets/k3s_ca.pem"}  # TLS verified: the token goes to the cluster
    assert rendered.file("prometheus/secrets/k3s_ca.pem").content() == CA.encode()
    assert prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["192.168.1.23:9093"]
    pve = next(j for j in prom["scrape_configs"] if j["job_name"] == "pve-exporter")
    assert pve["metrics_path"] == "/pve"
    assert pve["params"]["target"] == ["192.168.1.11"]
    # files land in the folders the catalog's services bind-mount
    assert rendered.file("prometheus/prometheus.yml").remote_path == "/srv/homelab/monitoring/prometheus/prometheus.yml"
    assert rendered.file("alertmanager/alertmanager.yml").vm == "docker-hypno"


def test_the_k3s_scrape_of_a_real_homelab_never_skips_tls_verification(inv: Inventory) -> None:
    assert inv.monitoring is not None
    assert inv.monitoring.k3s is not None
    no_ca = inv.monitoring.k3s.model_copy(update={"ca_file": None})  # past the inventory's checks
    unchecked = inv.model_copy(update={"monitoring": inv.monitoring.model_copy(update={"k3s": no_ca})})
    with pytest.raises(MonitoringError, match="without verifying TLS") as e:
        monitoring.render(unchecked)
    assert "give ca_file" in e.value.hint
    lab = monitoring.render(unchecked.model_copy(update={"profile": "lab"}))  # the lab's own cluster: allowed
    prom = yaml.safe_load(lab.file("prometheus/prometheus.yml").text)
    kubelet = next(j for j in prom["scrape_configs"] if j["job_name"] == "kubelet")
    assert kubelet["tls_config"] == {"insecure_skip_verify": True}


def test_render_is_byte_identical_run_to_run(inv: Inventory) -> None:
    a, b = monitoring.render(inv), monitoring.render(inv)
    assert [(f.name, f.sha256, f.text) for f in a.files] == [(f.name, f.sha256, f.text) for f in b.files]


def test_a_bad_for_override_is_rejected_by_promtool(inv: Inventory) -> None:
    rendered = monitoring.render(inv, Settings(alert_for={"TargetDown": "soon"}))
    with pytest.raises(MonitoringConfigRejected) as e:
        monitoring.check(rendered)
    assert "promtool" in str(e.value)
    assert "soon" in e.value.output


def test_a_checker_quoting_a_rejected_secret_never_shows_it(inv: Inventory, tmp_path: Path) -> None:
    bad = "http://bad host/with-secret-token-0xfeed"  # url.Parse quotes it in amtool's error
    (tmp_path / "secrets" / "webhook").write_text(bad + "\n")
    with pytest.raises(MonitoringConfigRejected) as e:
        monitoring.check(monitoring.render(inv))
    assert "amtool" in str(e.value)
    assert "with-secret-token-0xfeed" not in str(e.value)
    assert "********" in e.value.output


def test_for_overrides_change_the_rendered_rules_not_the_shipped_ones(inv: Inventory) -> None:
    shipped = Path(__file__).parent.parent / "homelab_lib/monitoring/rules/homelab.yml"
    before = shipped.read_text()
    rendered = monitoring.render(inv, Settings(alert_for={"TargetDown": "1s"}))
    doc = yaml.safe_load(rendered.file("prometheus/rules/homelab.yml").text)
    rules = {r["alert"]: r for g in doc["groups"] for r in g["rules"]}
    assert rules["TargetDown"]["for"] == "1s"
    assert rules["NodeMemoryPressure"]["for"] == "10m"
    assert shipped.read_text() == before


def test_the_shipped_rules_pass_their_unit_tests() -> None:
    run = monitoring.run_rule_tests()
    assert run.ok, run.output
    assert "SUCCESS" in run.output


def test_a_broken_rule_test_fails_under_promtool(tmp_path: Path) -> None:
    """The rule tests can fail: the same test with a wrong expectation is reported as FAILED."""
    source = Path(__file__).parent.parent / "homelab_lib/monitoring/rules"
    (tmp_path / "rules" / "tests").mkdir(parents=True)
    (tmp_path / "rules" / "homelab.yml").write_text((source / "homelab.yml").read_text())
    text = (source / "tests" / "homelab_test.yml").read_text().replace("sonarr on k3s (k3s) is down", "wrong")
    (tmp_path / "rules" / "tests" / "t.yml").write_text(text)
    run = monitoring.run_rule_tests(tmp_path / "rules" / "tests")
    assert not run.ok
    assert "FAILED" in run.output


def test_alertmanager_without_alerts_section_has_no_receiver_config(
    make_params: Callable[..., Path],
) -> None:
    def edit(d: dict[str, Any]) -> None:
        assert "alertmanager" in next(vm for vm in d["vms"] if vm["name"] == "docker-hypno")["stacks"]["monitoring"]
        d.pop("alerts", None)

    rendered = monitoring.render(load_inventory(make_params(edit=edit)))
    assert any("no alerts: section" in n for n in rendered.notes)
    monitoring.check(rendered)


def test_a_service_whose_metrics_port_does_not_exist_is_a_config_error(make_params: Callable[..., Path]) -> None:
    def edit(d: dict[str, Any]) -> None:
        d["services"]["plex"] = {"metrics": "/metrics", "metrics_port": 1234}

    with pytest.raises(ConfigError, match="plex has no port 1234"):
        monitoring.compute(load_inventory(make_params(edit=edit)))


def test_a_component_without_a_config_bind_is_refused(make_params: Callable[..., Path]) -> None:
    def edit(d: dict[str, Any]) -> None:
        d["services"]["prometheus"] = {"binds": []}

    with pytest.raises(MonitoringError, match="binds no host folder at /etc/prometheus"):
        monitoring.render(load_inventory(make_params(edit=edit)))


def test_dashboards_are_grafana_json_and_every_panel_has_a_query(inv: Inventory) -> None:
    docs = monitoring.documents(inv)
    assert set(docs) == {"homelab-overview", "homelab-node", "homelab-service", "homelab-backups"}
    for uid, doc in docs.items():
        assert doc["uid"] == uid
        assert doc["panels"]
        for panel in doc["panels"]:
            assert panel["targets"], (uid, panel["title"])
            assert all(t["expr"] for t in panel["targets"]), (uid, panel["title"])
    queries = monitoring.panel_queries(docs)
    assert len(queries) >= sum(len(d["panels"]) for d in docs.values())
    assert all("$" not in q.concrete for q in queries)
    grafana = monitoring.render(inv).of("grafana")
    assert {f.path for f in grafana} >= {"datasources/homelab.yml", "dashboards/homelab.yml",
                                         "dashboards/homelab/homelab-overview.json"}  # fmt: skip
    ds = yaml.safe_load(next(f.text for f in grafana if f.path == "datasources/homelab.yml"))
    assert ds["datasources"][0]["url"] == "http://192.168.1.23:9090"


def test_the_public_api_is_what_all_says() -> None:
    assert all(hasattr(monitoring, name) for name in monitoring.__all__)
    assert {"adapter", "render", "compute", "status", "check_queries", "panel_queries", "PrometheusApi"} <= set(
        monitoring.__all__
    )
