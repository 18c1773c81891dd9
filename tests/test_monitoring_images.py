"""The lab's images of the real Prometheus, Alertmanager and node-exporter, built and run on this machine's engine.

Built as the lab builds them (:func:`homelab_lab.realbin.image_files`), tagged under the
catalog's names with this run's suffix, then started the way runbook 02's Compose file starts
them (the catalog's command, healthcheck, binds); the servers are Debian's real programs.
Cleans up what it labels.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from homelab_lab import realbin
from homelab_lib.inventory.load import CATALOG
from homelab_lib.inventory.model import Service
from tests.backup_fixtures import build, labelled_engine

RUN = uuid.uuid4().hex[:8]
LABEL = "homelab.test.realbin"
ADDRESS = "127.0.23.31"
SERVICES = {n: Service.model_validate(e) for n, e in yaml.safe_load(CATALOG.read_text()).items()}

pytestmark = [
    pytest.mark.skipif(
        not all(Path(p.source).exists() for p in realbin.PROGRAMS.values()), reason="no Debian binaries"
    ),
    pytest.mark.skipif(not Path("/var/run/docker.sock").exists(), reason="no Docker Engine"),
    pytest.mark.timeout(300),
]


def tagged(image: str) -> str:
    return f"{image}-realbintest-{RUN}"


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    with labelled_engine(LABEL, RUN) as client:
        yield client


@pytest.fixture(scope="module")
def images(engine: Any) -> dict[str, Any]:
    return {
        name: build(engine, tagged(SERVICES[name].image), realbin.image_files(name, labels={LABEL: RUN}), {LABEL: RUN})
        for name in realbin.PROGRAMS
    }


def healthcheck(name: str, address: str) -> dict[str, Any]:
    hc = SERVICES[name].healthcheck
    assert hc is not None
    return {"test": [p.replace("{address}", address) for p in hc.test], "interval": 500_000_000,
            "timeout": 5_000_000_000, "retries": 3}  # fmt: skip


def wait_healthy(container: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        container.reload()
        state = container.attrs["State"]
        if state.get("Health", {}).get("Status") == "healthy":
            return
        if not state["Running"] or time.monotonic() > deadline:
            pytest.fail(f"{container.name}: {state.get('Health')}; logs:\n{container.logs().decode()[-2000:]}")
        time.sleep(0.3)


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        return bytes(r.read())


def test_images_are_from_scratch_with_the_upstream_entrypoints(images: dict[str, Any]) -> None:
    prom = images["prometheus"].attrs["Config"]
    assert prom["Entrypoint"] == ["/bin/prometheus"]
    assert prom["Cmd"] == ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
    assert prom["User"] == "65534"
    assert prom["WorkingDir"] == "/prometheus"
    am = images["alertmanager"].attrs["Config"]
    assert am["Entrypoint"] == ["/bin/alertmanager"]
    assert am["Cmd"] == ["--config.file=/etc/alertmanager/alertmanager.yml", "--storage.path=/alertmanager"]
    assert images["node-exporter"].attrs["Config"]["Entrypoint"] == ["/bin/node_exporter"]
    # one layer of files (COPY) and one of setup (RUN): nothing from a registry
    assert len(images["prometheus"].history()) <= 12


def test_prometheus_runs_with_the_catalogs_command_and_reloads(engine: Any, images: dict[str, Any],
                                                               tmp_path: Path) -> None:  # fmt: skip
    """The catalog's command with a host-network override (--web.listen-address={address}:9090), a bound config."""
    svc = SERVICES["prometheus"]
    config = tmp_path / "prometheus"
    config.mkdir()
    (config / "prometheus.yml").write_text(svc.binds[0].seed["prometheus.yml"])
    (config / "prometheus.yml").chmod(0o644)
    config.chmod(0o755)
    port = 19090
    command = [*svc.command, f"--web.listen-address={ADDRESS}:{port}"]
    hc = healthcheck("prometheus", ADDRESS)
    hc["test"] = [p.replace("localhost:9090", f"{ADDRESS}:{port}") for p in hc["test"]]
    c = engine.containers.run(tagged(svc.image), command=command, detach=True, network_mode="host",
                              name=f"realbin-{RUN}-prometheus", labels={LABEL: RUN}, healthcheck=hc,
                              volumes={str(config): {"bind": "/etc/prometheus", "mode": "ro"}})  # fmt: skip
    wait_healthy(c)
    info = json.loads(get(f"http://{ADDRESS}:{port}/api/v1/status/buildinfo"))
    assert info["data"]["version"].startswith("2.")  # Debian's real Prometheus, not a stand-in
    (config / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s}\n"
        f"scrape_configs: [{{job_name: self, static_configs: [{{targets: ['{ADDRESS}:{port}']}}]}}]\n"
    )
    req = urllib.request.Request(f"http://{ADDRESS}:{port}/-/reload", method="POST", data=b"")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200  # the lifecycle API is on (the catalog's command)
    deadline = time.monotonic() + 30
    while True:
        targets = json.loads(get(f"http://{ADDRESS}:{port}/api/v1/targets"))["data"]["activeTargets"]
        if targets and targets[0]["health"] == "up":
            break
        assert time.monotonic() < deadline, targets
        time.sleep(0.5)


def test_alertmanager_runs_with_the_catalogs_command(engine: Any, images: dict[str, Any], tmp_path: Path) -> None:
    svc = SERVICES["alertmanager"]
    config = tmp_path / "alertmanager"
    config.mkdir()
    (config / "alertmanager.yml").write_text(svc.binds[0].seed["alertmanager.yml"])
    config.chmod(0o755)
    c = engine.containers.run(tagged(svc.image), command=svc.command, detach=True,
                              name=f"realbin-{RUN}-alertmanager", labels={LABEL: RUN},
                              healthcheck=healthcheck("alertmanager", ADDRESS), ports={"9093/tcp": (ADDRESS, None)},
                              volumes={str(config): {"bind": "/etc/alertmanager", "mode": "ro"}})  # fmt: skip
    wait_healthy(c)
    c.reload()
    port = int(c.ports["9093/tcp"][0]["HostPort"])
    status = json.loads(get(f"http://{ADDRESS}:{port}/api/v2/status"))
    assert status["versionInfo"]["version"].startswith("0.")
    assert "receiver: none" in status["config"]["original"]


def test_node_exporter_runs_host_networked_on_the_vms_address(
    engine: Any, images: dict[str, Any], tmp_path: Path
) -> None:
    """The catalog's command: the VM's root at /host, and the backup runbook's textfile metrics read from it."""
    svc = SERVICES["node-exporter"]
    textfiles = tmp_path / "textfiles"
    textfiles.mkdir()
    textfiles.chmod(0o755)
    (textfiles / "homelab_backup.prom").write_text(
        "# HELP homelab_backup_age_seconds Age of the last good backup.\n# TYPE homelab_backup_age_seconds gauge\n"
        'homelab_backup_age_seconds{layer="volume",target="postgres"} 7200\n'
    )
    (textfiles / "homelab_backup.prom").chmod(0o644)
    if shutil.which("prometheus-node-exporter") is None:
        pytest.skip("no node-exporter")
    port = 19100
    command = [p.replace("{address}:9100", f"{ADDRESS}:{port}") for p in svc.command]
    hc = healthcheck("node-exporter", f"{ADDRESS}")
    hc["test"] = [p.replace(f"{ADDRESS}:9100", f"{ADDRESS}:{port}") for p in hc["test"]]
    c = engine.containers.run(tagged(svc.image), command=command, detach=True, network_mode="host",
                              name=f"realbin-{RUN}-node-exporter", labels={LABEL: RUN}, healthcheck=hc,
                              volumes={"/": {"bind": "/host", "mode": "ro"},
                                       str(textfiles): {"bind": "/host/var/lib/prometheus/node-exporter",
                                                        "mode": "ro"}})  # fmt: skip
    wait_healthy(c)
    text = get(f"http://{ADDRESS}:{port}/metrics").decode()
    assert 'homelab_backup_age_seconds{layer="volume",target="postgres"} 7200' in text
    assert "node_filesystem_avail_bytes{device=" in text
    assert "node_exporter_build_info" in text
