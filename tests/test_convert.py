"""The Compose-to-Kubernetes converter on real-world compose files of homelab stacks.

The files under tests/data/compose/ are written as the projects' docs show them (linuxserver.io's
*arr and Plex, Prometheus/Grafana/node-exporter/cAdvisor, the postgres and redis images, GitLab
omnibus); the real Compose v2 accepts each one. Every manifest is validated by kubernetes-validate
for Kubernetes 1.31 (the lab's K3s v1.31.4+k3s1), and the report is checked to name every key.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from homelab_lib.cli import main
from homelab_lib.core.errors import ConvertError, MigrateError, NotFound
from homelab_lib.inventory import load_inventory
from homelab_lib.migrate import (
    Conversion,
    convert_compose,
    convert_inventory_service,
    load_compose,
    parse_compose,
    redacted,
    report_markdown,
)

DATA = Path(__file__).resolve().parent / "data" / "compose"
FILES = ["arr.yaml", "plex.yaml", "monitoring.yaml", "databases.yaml", "gitlab.yaml"]
VARIABLES = {"GITLAB_HOME": "/srv/gitlab"}
#: every secret value written in the test files (or their env_file and secret file)
SECRET_VALUES = [
    "example-password-in-compose",
    "redis-secret-value",
    "omnibus-root-password",
    "change-me-grafana",
    "backend-session-secret",
    "admin-password-from-a-file",
    "claim-xxxxxxxxxxxxxxxxxxxx",
]
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


def convert(name: str, **options: Any) -> dict[str, Conversion]:
    compose = load_compose(DATA / name, env=VARIABLES)
    return {c.service: c for c in convert_compose(compose, namespace="homelab", **options)}


@pytest.fixture(scope="module")
def every() -> dict[str, Conversion]:
    out: dict[str, Conversion] = {}
    for name in FILES:
        out.update(convert(name))
    return out


def walk(node: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) of a nested manifest."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield k, v
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


def pod(conv: Conversion) -> dict[str, Any]:
    spec: dict[str, Any] = conv.object("Deployment")["spec"]["template"]["spec"]
    return spec


def container(conv: Conversion) -> dict[str, Any]:
    c: dict[str, Any] = pod(conv)["containers"][0]
    return c


def keys_of(conv: Conversion, status: str | None = None) -> set[str]:
    return {r.key for r in conv.report if status is None or r.status == status}


# ------------------------------------------------------------------ the files, the report, validity


@pytest.mark.parametrize("name", FILES)
def test_the_real_compose_accepts_each_test_file(name: str, tmp_path: Path) -> None:
    """The test data is valid Compose as Compose v2 itself reads it (not only as the converter does)."""
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("the Compose v2 plugin is not installed here")
    done = subprocess.run(
        [docker, "compose", "-f", str(DATA / name), "config", "-q"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), **VARIABLES},
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("name", FILES)
def test_every_key_of_every_service_is_in_the_report(name: str) -> None:
    compose = load_compose(DATA / name, env=VARIABLES)
    for conv in convert_compose(compose):
        reported = {re.split(r"[.\[]", r.key)[0] for r in conv.report}
        service = compose.services[conv.service]
        assert set(service) <= reported, f"{conv.service}: not reported: {set(service) - reported}"
        # every item of a list-valued key is accounted for, one by one
        for key in ("ports", "volumes", "devices", "secrets"):
            for i in range(len(service.get(key) or [])):
                assert f"{key}[{i}]" in keys_of(conv), f"{conv.service}: {key}[{i}] is not in the report"
        for line in conv.report:
            assert line.detail, line
            assert line.line > 0, line


def test_what_cannot_be_mapped_is_named_with_why(every: dict[str, Conversion]) -> None:
    radarr, redis, app = every["radarr"], every["redis"], every["app_backend.v2"]
    assert "labels.traefik.http.routers.radarr.middlewares" in keys_of(radarr, "not mapped")
    assert "ulimits" in keys_of(redis, "not mapped")
    assert "logging" in keys_of(app, "not mapped")
    for conv in every.values():
        for line in conv.lines("not mapped"):
            assert len(line.detail) > 20, line


@pytest.mark.parametrize("name", FILES)
def test_every_manifest_validates_for_kubernetes_1_31(name: str) -> None:
    for conv in convert(name).values():
        assert conv.objects
        for obj in conv.objects:
            kubernetes_validate.validate(obj, "1.31.0", strict=True)


def test_names_with_underscore_and_dot_become_valid_and_the_mapping_is_reported(every: dict[str, Conversion]) -> None:
    app = every["app_backend.v2"]
    assert app.k8s_name == "app-backend-v2"
    named = [r for r in app.report if r.key == "(name)"]
    assert named
    assert "'app_backend.v2'" in named[0].detail
    assert "'app-backend-v2'" in named[0].detail
    for conv in every.values():
        for obj in conv.objects:
            assert DNS_1035.match(obj["metadata"]["name"]), obj["metadata"]["name"]
        assert conv.object("Deployment")["metadata"]["annotations"]["homelab.io/compose-service"] == conv.service


def test_two_services_that_clash_in_kubernetes_are_refused_with_their_line() -> None:
    text = "services:\n  web_1:\n    image: nginx:1.27\n  web.1:\n    image: nginx:1.27\n"
    with pytest.raises(ConvertError) as e:
        convert_compose(parse_compose(text, path="clash.yaml"))
    assert "web_1, web.1" in str(e.value)
    assert "clash.yaml:4" in str(e.value)


# ------------------------------------------------------------------ Services, ports, Ingress


def test_a_service_for_every_service_selecting_its_pods(every: dict[str, Conversion]) -> None:
    for conv in every.values():
        svc = conv.object("Service", conv.k8s_name)
        labels = conv.object("Deployment")["spec"]["template"]["metadata"]["labels"]
        assert svc["spec"]["selector"].items() <= labels.items()
        assert "(service)" in keys_of(conv, "mapped")
    # no ports at all: a headless Service still makes the name resolve
    assert every["node-exporter"].object("Service")["spec"] == {
        "selector": {"app.kubernetes.io/instance": "node-exporter"},
        "clusterIP": "None",
    }


def test_expose_never_becomes_a_host_port(every: dict[str, Conversion]) -> None:
    for conv in every.values():
        assert not [k for obj in conv.objects for k, _ in walk(obj) if k == "hostPort"], conv.service
    postgres = every["postgres"]
    assert [p["port"] for p in postgres.object("Service", "postgres")["spec"]["ports"]] == [5432]
    assert not [o for o in postgres.objects if o.get("spec", {}).get("type") == "NodePort"]
    assert "expose[0]" in keys_of(postgres, "mapped")


def test_udp_is_kept(every: dict[str, Conversion]) -> None:
    qbt = every["qbittorrent"]
    ports = {(p["port"], p["protocol"]) for p in qbt.object("Service", "qbittorrent")["spec"]["ports"]}
    assert {(6881, "UDP"), (6881, "TCP"), (8080, "TCP")} <= ports
    nodeport = {(p["port"], p["protocol"]) for p in qbt.object("Service", "qbittorrent-nodeport")["spec"]["ports"]}
    assert (6881, "UDP") in nodeport
    assert {(p["containerPort"], p["protocol"]) for p in container(qbt)["ports"]} >= {(6881, "UDP")}


def test_published_ports_become_nodeports_kept_in_range_and_flagged_outside(every: dict[str, Conversion]) -> None:
    app = every["app_backend.v2"]
    ports = {p["port"]: p for p in app.object("Service", "app-backend-v2-nodeport")["spec"]["ports"]}
    assert ports[9000]["nodePort"] == 30900  # in the NodePort range: the same number
    assert "nodePort" not in ports[8000]  # 8000 is not: K3s assigns one, and the report says so
    flagged = [r.detail for r in app.report if r.key == "ports[0]" and r.status == "approximated"]
    assert any("30000-32767" in d for d in flagged)
    assert any("127.0.0.1" in d for d in flagged)


def test_traefik_labels_become_an_ingress_and_the_port_it_serves_no_nodeport(every: dict[str, Conversion]) -> None:
    sonarr = every["sonarr"]
    ing = sonarr.object("Ingress")
    assert ing["spec"]["ingressClassName"] == "traefik"
    rule = ing["spec"]["rules"][0]
    assert rule["host"] == "sonarr.example.org"
    assert rule["http"]["paths"][0]["backend"]["service"] == {"name": "sonarr", "port": {"number": 8989}}
    notes = ing["metadata"]["annotations"]
    assert notes["traefik.ingress.kubernetes.io/router.entrypoints"] == "websecure"
    assert notes["traefik.ingress.kubernetes.io/router.tls.certresolver"] == "letsencrypt"
    assert not [o for o in sonarr.objects if o["metadata"]["name"] == "sonarr-nodeport"]
    # radarr's rule names no port label: the Ingress routes to its first port
    radarr = every["radarr"].object("Ingress")
    assert radarr["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"]["number"] == 7878


def test_container_name_and_aliases_get_a_service_of_their_own() -> None:
    text = """
services:
  web:
    image: nginx:1.27
    container_name: my_web
    expose: ["80"]
    networks:
      front:
        aliases: [www]
networks:
  front:
"""
    conv = convert_compose(parse_compose(text))[0]
    names = {o["metadata"]["name"] for o in conv.objects if o["kind"] == "Service"}
    assert names == {"web", "my-web", "www"}
    assert "networks.front" in keys_of(conv, "approximated")


def test_networks_default_and_the_proxys_are_mapped_a_lan_driver_is_not_kept() -> None:
    text = """
services:
  app:
    image: nginx:1.27
    networks: [default, proxy, lan]
    labels:
      traefik.docker.network: proxy
networks:
  proxy:
    external: true
  lan:
    driver: macvlan
"""
    conv = convert_compose(parse_compose(text))[0]
    assert {"networks.default", "networks.proxy"} <= keys_of(conv, "mapped")
    lan = [r for r in conv.report if r.key == "networks.lan"]
    assert lan[0].status == "approximated"
    assert "macvlan" in lan[0].detail


# ------------------------------------------------------------------ environment, secrets, configs


def test_a_password_in_the_compose_file_never_lands_in_a_configmap(every: dict[str, Conversion]) -> None:
    in_secrets: set[str] = set()
    for conv in every.values():
        for obj in conv.objects:
            if obj["kind"] == "ConfigMap":
                text = json.dumps(obj)
                for value in SECRET_VALUES:
                    assert value not in text, f"{value} in ConfigMap {obj['metadata']['name']}"
            if obj["kind"] == "Secret":
                in_secrets.update(base64.b64decode(v).decode() for v in obj["data"].values())
        shown = conv.yaml(redact=True) + conv.markdown()
        for value in SECRET_VALUES:
            assert value not in shown
    for value in SECRET_VALUES:
        assert any(value in s for s in in_secrets), f"{value} is in no Secret"


def test_environment_goes_to_a_configmap_and_secrets_to_a_secret_by_reference(every: dict[str, Conversion]) -> None:
    postgres = every["postgres"]
    env = {e["name"]: e["valueFrom"] for e in container(postgres)["env"]}
    assert env["POSTGRES_PASSWORD"] == {"secretKeyRef": {"name": "postgres-env", "key": "POSTGRES_PASSWORD"}}
    assert env["POSTGRES_USER"] == {"configMapKeyRef": {"name": "postgres-env", "key": "POSTGRES_USER"}}
    assert postgres.object("ConfigMap", "postgres-env")["data"]["POSTGRES_DB"] == "app"
    app = every["app_backend.v2"]
    # a URL with a password is a secret whatever its name; env_file values are read like environment's
    assert "DATABASE_URL" in app.object("Secret", "app-backend-v2-env")["data"]
    assert "SESSION_SECRET" in app.object("Secret", "app-backend-v2-env")["data"]
    assert app.object("ConfigMap", "app-backend-v2-env")["data"]["WORKERS"] == "4"
    assert "env_file" in keys_of(app, "mapped")
    # a value that names no secret, and the omnibus config that holds a password
    assert "GITLAB_OMNIBUS_CONFIG" in every["gitlab"].object("Secret", "gitlab-env")["data"]
    assert every["grafana"].object("ConfigMap", "grafana-env")["data"]["GF_SECURITY_ADMIN_USER"] == "admin"


def test_compose_secrets_are_a_secret_mounted_as_files_at_the_same_paths(every: dict[str, Conversion]) -> None:
    postgres = every["postgres"]
    secret = postgres.object("Secret", "postgres-secrets")
    assert base64.b64decode(secret["data"]["postgres_admin_password"]).decode() == "admin-password-from-a-file\n"
    mount = [m for m in container(postgres)["volumeMounts"] if m["mountPath"] == "/run/secrets/postgres_admin_password"]
    assert mount == [
        {"name": "compose-secrets", "mountPath": "/run/secrets/postgres_admin_password",
         "subPath": "postgres_admin_password", "readOnly": True}
    ]  # fmt: skip
    assert {"name": "compose-secrets", "secret": {"secretName": "postgres-secrets"}} in pod(postgres)["volumes"]


def test_configs_are_a_configmap_mounted_at_their_target(every: dict[str, Conversion]) -> None:
    prom = every["prometheus"]
    data = prom.object("ConfigMap", "prometheus-configs")["data"]["prometheus_config"]
    assert "scrape_interval: 15s" in data
    assert {
        "name": "compose-configs",
        "mountPath": "/etc/prometheus/prometheus.yml",
        "subPath": "prometheus_config",
        "readOnly": True,
    } in container(prom)["volumeMounts"]


def test_redact_hides_every_secret_value(every: dict[str, Conversion]) -> None:
    for obj in redacted(every["postgres"].objects):
        if obj["kind"] == "Secret":
            assert set(obj["data"].values()) == {"<redacted>"}
    assert every["postgres"].object("Secret", "postgres-env")["data"]["POSTGRES_PASSWORD"] != "<redacted>"


# ------------------------------------------------------------------ the container and the pod


def test_image_command_entrypoint_workdir_user() -> None:
    text = """
services:
  tool:
    image: alpine:3.20
    entrypoint: ["/bin/sh", "-c"]
    command: echo $$(date) "hello world"
    working_dir: /work
    user: "1000:100"
"""
    conv = convert_compose(parse_compose(text))[0]
    c = container(conv)
    assert c["image"] == "alpine:3.20"
    assert c["command"] == ["/bin/sh", "-c"]
    assert c["args"] == ["echo", "$$(date)", "hello world"]  # Kubernetes would expand $(date): kept literal
    assert c["workingDir"] == "/work"
    assert c["securityContext"] == {"runAsUser": 1000, "runAsGroup": 100}
    assert {"image", "entrypoint", "command", "working_dir", "user"} <= keys_of(conv, "mapped")


def test_a_user_by_name_is_not_mapped_and_says_why() -> None:
    conv = convert_compose(parse_compose("services:\n  a:\n    image: alpine:3.20\n    user: www-data\n"))[0]
    assert "user" in keys_of(conv, "not mapped")
    assert "securityContext" not in container(conv)


def test_healthcheck_becomes_probes_with_its_timings(every: dict[str, Conversion]) -> None:
    c = container(every["postgres"])
    command = ["/bin/sh", "-c", "pg_isready -U app -d app"]  # CMD-SHELL
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe] == {
            "exec": {"command": command},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 5,
        }
    assert c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"] >= 30  # start_period
    redis = container(every["redis"])
    assert redis["readinessProbe"]["exec"]["command"] == ["redis-cli", "ping"]  # CMD
    assert "startupProbe" not in redis
    for key in ("healthcheck.test", "healthcheck.interval", "healthcheck.timeout", "healthcheck.retries",
                "healthcheck.start_period"):  # fmt: skip
        assert key in keys_of(every["postgres"], "mapped")


def test_restart_resources_and_replicas(every: dict[str, Conversion]) -> None:
    app = every["app_backend.v2"]
    assert container(app)["resources"] == {
        "limits": {"cpu": "500m", "memory": "256Mi"},
        "requests": {"cpu": "100m", "memory": "64Mi"},
    }
    assert app.object("Deployment")["spec"]["replicas"] == 2
    assert "restart" in keys_of(app, "approximated")  # no restart: Compose never restarts it
    assert "restart" in keys_of(every["sonarr"], "mapped")  # unless-stopped: Always


def test_depends_on_waits_for_the_dependencys_service(every: dict[str, Conversion]) -> None:
    inits = {i["name"]: i for i in pod(every["app_backend.v2"])["initContainers"]}
    assert set(inits) == {"wait-for-postgres", "wait-for-redis"}
    assert "nc -z -w 2 postgres 5432" in inits["wait-for-postgres"]["command"][-1]
    assert "redis" in inits["wait-for-redis"]["command"][-1]
    assert "depends_on.postgres" in keys_of(every["app_backend.v2"], "mapped")  # service_healthy, with a healthcheck
    assert "depends_on.prometheus" in keys_of(every["grafana"], "mapped")


def test_extra_hosts_become_host_aliases(every: dict[str, Conversion]) -> None:
    assert pod(every["app_backend.v2"])["hostAliases"] == [
        {"ip": "10.0.0.5", "hostnames": ["ldap.internal"]},
        {"ip": "10.0.0.6", "hostnames": ["mail.internal"]},
    ]


def test_host_network_devices_pid_privileged_are_mapped_and_flagged(every: dict[str, Conversion]) -> None:
    plex = every["plex"]
    assert pod(plex)["hostNetwork"] is True
    assert pod(plex)["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert {"name": "dev-dev-dri", "hostPath": {"path": "/dev/dri"}} in pod(plex)["volumes"]
    assert container(plex)["securityContext"]["privileged"] is True
    flagged = [r for r in plex.report if r.key == "devices[0]"]
    assert flagged[0].status == "approximated"
    assert "FLAGGED" in flagged[0].detail
    assert pod(every["node-exporter"])["hostPID"] is True
    cadvisor = every["cadvisor"]
    assert container(cadvisor)["securityContext"]["privileged"] is True
    assert "privileged" in keys_of(cadvisor, "approximated")
    assert {"name": "dev-dev-kmsg", "hostPath": {"path": "/dev/kmsg"}} in pod(cadvisor)["volumes"]


def test_capabilities_read_only_no_new_privileges(every: dict[str, Conversion]) -> None:
    sc = container(every["app_backend.v2"])["securityContext"]
    assert sc == {
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
        "allowPrivilegeEscalation": False,
    }


def test_shm_size_tmpfs_and_sysctls(every: dict[str, Conversion]) -> None:
    postgres = every["postgres"]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "128Mi"}} in pod(postgres)["volumes"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container(postgres)["volumeMounts"]
    app_volumes = pod(every["app_backend.v2"])["volumes"]
    assert {"name": "tmpfs-tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}} in app_volumes
    assert {"name": "tmpfs-transcode", "emptyDir": {"medium": "Memory", "sizeLimit": "4Gi"}} in pod(every["plex"])[
        "volumes"
    ]
    assert pod(every["redis"])["securityContext"]["sysctls"] == [{"name": "net.core.somaxconn", "value": "1024"}]
    assert "sysctls.net.core.somaxconn" in keys_of(every["redis"], "approximated")  # an unsafe sysctl


def test_hostname_is_the_pods_first_label(every: dict[str, Conversion]) -> None:
    assert pod(every["gitlab"])["hostname"] == "gitlab"
    assert "hostname" in keys_of(every["gitlab"], "approximated")


# ------------------------------------------------------------------ volumes and what the data copy fills


def test_named_volumes_become_local_path_pvcs_for_the_data_copy(every: dict[str, Conversion]) -> None:
    sonarr = every["sonarr"]
    plan = next(v for v in sonarr.volumes if v.source == "sonarr_config")
    assert (plan.kind, plan.source_kind, plan.pvc, plan.container_path) == (
        "pvc-copied", "volume", "sonarr-config", "/config"
    )  # fmt: skip
    assert plan.docker_volume == "compose_sonarr_config"  # the project is the file's folder, as Compose names it
    pvc = sonarr.object("PersistentVolumeClaim", plan.pvc)["spec"]
    assert pvc["storageClassName"] == "local-path"
    assert pvc["accessModes"] == ["ReadWriteOnce"]
    assert sonarr.object("Deployment")["spec"]["strategy"] == {"type": "Recreate"}
    monitoring = every["prometheus"].volumes[0]
    assert monitoring.docker_volume == "monitoring_prometheus_data"  # the file's name: wins


def test_binds_read_only_are_host_paths_writable_ones_pvcs_filled_from_the_host(every: dict[str, Conversion]) -> None:
    bazarr = {v.container_path: v for v in every["bazarr"].volumes}
    assert bazarr["/movies"].kind == "hostPath"
    assert bazarr["/movies"].source == "/srv/media/movies"
    assert bazarr["/movies"].read_only
    sonarr = {v.container_path: v for v in every["sonarr"].volumes}
    assert sonarr["/tv"].kind == "pvc-copied"
    assert sonarr["/tv"].source == "/srv/media/tv"
    assert sonarr["/tv"].source_kind == "bind"
    assert sonarr["/tv"].pvc == "sonarr-tv"
    assert "volumes[1]" in keys_of(every["sonarr"], "approximated")  # each choice in the report
    gitlab = {v.container_path: v.source for v in every["gitlab"].volumes}
    assert gitlab["/var/opt/gitlab"] == "/srv/gitlab/data"  # $GITLAB_HOME interpolated
    prowlarr = every["prowlarr"].volumes[0]
    assert prowlarr.source == str(DATA / "prowlarr" / "config")  # a relative bind, from the file's folder


def test_claim_sizes_come_from_the_measured_data_with_headroom_or_as_given() -> None:
    sized = convert(
        "arr.yaml",
        measured_bytes={"sonarr_config": 3 * 1024**3, "/srv/media/tv": 10 * 1024**2},
        sizes={"compose_radarr_config": "20Gi"},
    )
    sonarr = {v.source: v for v in sized["sonarr"].volumes}
    assert (sonarr["sonarr_config"].size, sonarr["sonarr_config"].size_from) == ("4Gi", "measured")  # 3 GiB + 25%
    assert (sonarr["/srv/media/tv"].size, sonarr["/srv/media/tv"].size_from) == ("1Gi", "measured")
    assert (sonarr["/srv/downloads"].size, sonarr["/srv/downloads"].size_from) == ("1Gi", "default")
    radarr = {v.source: v for v in sized["radarr"].volumes}
    assert radarr["radarr_config"].size == "20Gi"
    claim = sized["sonarr"].object("PersistentVolumeClaim", sonarr["sonarr_config"].pvc)
    assert claim["spec"]["resources"]["requests"]["storage"] == "4Gi"


def test_a_claim_size_is_also_found_by_the_claims_own_name_as_a_move_records_it() -> None:
    # a move records sizes by claim; sonarr_config's claim is sonarr-config, not its volume's name
    sized = convert("arr.yaml", sizes={"sonarr-config": "7Gi"}, measured_bytes={"sonarr_config": 1})
    config = {v.source: v for v in sized["sonarr"].volumes}["sonarr_config"]
    assert (config.pvc, config.size, config.size_from) == ("sonarr-config", "7Gi", "sizes")


def test_the_docker_socket_is_not_mapped() -> None:
    text = (
        "services:\n  proxy:\n    image: traefik:v3.2.3\n"
        "    volumes:\n      - /var/run/docker.sock:/var/run/docker.sock:ro\n"
    )
    conv = convert_compose(parse_compose(text))[0]
    assert "volumes[0]" in keys_of(conv, "not mapped")
    assert "volumes" not in pod(conv)


# ------------------------------------------------------------------ invalid files, the CLI


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("services:\n  web:\n    image: nginx:1.27\n    ports: [80\n", 5, "YAML syntax error"),
        ("services:\n  web:\n    image: nginx:1.27\n    ports: 80\n", 4, "is not of type 'array'"),
        ("services:\n  web:\n    image: nginx:1.27\n    depends_on: [db]\n", 4, "depends on db"),
        ("services:\n  web:\n    image: nginx:1.27\n    volumes: [data:/data]\n", 4, "volume data"),
        ("services:\n  web:\n    image: ${IMAGE:?give IMAGE}\n", 3, "give IMAGE"),
        ("services:\n  web:\n    restart: always\n", 2, "neither image nor build"),
    ],
)
def test_an_invalid_compose_file_exits_2_naming_the_problem_and_its_line(
    text: str, line: int, words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "compose.yaml"
    bad.write_text(text)
    assert main(["convert", str(bad), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"compose.yaml:{line}:" in err, err
    assert words in err, err
    assert not (tmp_path / "out").exists()


def test_the_cli_writes_one_yaml_per_service_and_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["convert", str(DATA / "databases.yaml"), "--namespace", "apps", "-o", str(out)]) == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["app-backend-v2.yaml", "postgres.yaml", "redis.yaml", "report.md"]
    objs = list(yaml.safe_load_all((out / "postgres.yaml").read_text()))
    assert {o["kind"] for o in objs} >= {"Namespace", "Secret", "ConfigMap", "PersistentVolumeClaim", "Service",
                                         "Deployment"}  # fmt: skip
    assert all(o["metadata"].get("namespace", "apps") == "apps" for o in objs)
    assert (out / "postgres.yaml").stat().st_mode & 0o077 == 0  # it holds Secrets
    report = (out / "report.md").read_text()
    assert "| `ulimits` |" in report
    assert "not mapped" in report
    assert "app_backend.v2" in report
    printed = capsys.readouterr().out
    assert "postgres.yaml: postgres -> 7 objects" in printed
    for value in SECRET_VALUES:
        assert value not in report
        assert value not in printed


def test_the_cli_converts_only_the_services_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    args = ["convert", str(DATA / "arr.yaml"), "--service", "sonarr", "--service", "bazarr", "-o", str(out)]
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["bazarr.yaml", "report.md", "sonarr.yaml"]
    assert main(["convert", str(DATA / "arr.yaml"), "--service", "lidarr", "-o", str(out)]) == 2
    assert "lidarr" in capsys.readouterr().err
    with pytest.raises(NotFound):
        convert_compose(load_compose(DATA / "arr.yaml"), ["lidarr"])


def test_yaml_anchors_and_merge_keys_are_read_with_lines() -> None:
    text = """x-common: &common
  restart: unless-stopped
  environment:
    TZ: Etc/UTC
services:
  web:
    <<: *common
    image: nginx:1.27
"""
    conv = convert_compose(parse_compose(text, path="anchors.yaml"))[0]
    lines = {r.key: r.line for r in conv.report}
    assert lines["restart"] == 7  # merged in: the line of the service's own map
    assert lines["environment.TZ"] == 4
    assert lines["image"] == 8
    assert container(conv)["env"] == [
        {"name": "TZ", "valueFrom": {"configMapKeyRef": {"name": "web-env", "key": "TZ"}}}
    ]


def test_a_namespace_that_is_not_a_valid_name_is_made_one_and_reported() -> None:
    conv = convert_compose(parse_compose("services:\n  a:\n    image: alpine:3.20\n"), namespace="My_Apps")[0]
    assert conv.namespace == "my-apps"
    assert {o["metadata"].get("namespace", "my-apps") for o in conv.objects} == {"my-apps"}
    assert "(namespace)" in keys_of(conv, "mapped")


def test_report_markdown_summarises_every_service(every: dict[str, Conversion]) -> None:
    text = report_markdown(list(every.values()), source="all")
    for conv in every.values():
        assert f"| {conv.service} | {conv.k8s_name} |" in text


# ------------------------------------------------------------------ the inventory's catalog services


@pytest.fixture
def real_inv(make_params: Callable[..., Path]) -> Any:
    return load_inventory(make_params())


def test_an_inventory_service_converts_as_runbook_05_applies_it(real_inv: Any) -> None:
    conv = convert_inventory_service(real_inv, None, "sonarr", "media")
    assert conv.namespace == "media"
    assert conv.k8s_name == "sonarr"
    ing = conv.object("Ingress")  # the inventory's proxy: sonarr -> sonarr.<network.domain>
    assert ing["spec"]["rules"][0]["host"] == f"sonarr.{real_inv.network.domain}"
    assert not [o for o in conv.objects if o["metadata"]["name"].endswith("-nodeport")]  # served by the Ingress
    config = next(v for v in conv.volumes if v.container_path == "/config")
    assert (config.pvc, config.docker_volume) == ("sonarr-config", "docker-sleepy-arr_sonarr-config")
    assert container(conv)["image"] == real_inv.services["sonarr"].image
    assert not conv.lines("not mapped")
    for obj in conv.objects:
        kubernetes_validate.validate(obj, "1.31.0", strict=True)


def test_an_inventory_secret_is_read_from_its_reference_into_a_secret_only(real_inv: Any) -> None:
    conv = convert_inventory_service(real_inv, "docker-hypno", "postgres", "databases")
    secret = conv.object("Secret", "postgres-secrets")
    assert base64.b64decode(secret["data"]["postgres_password"]).decode() == "postgres-pw-77aa88bb"
    assert (
        conv.object("ConfigMap", "postgres-env")["data"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    )
    assert "postgres-pw-77aa88bb" not in json.dumps([o for o in conv.objects if o["kind"] != "Secret"])
    unread = convert_inventory_service(real_inv, None, "postgres", "databases", reveal=False)
    assert base64.b64decode(unread.object("Secret", "postgres-secrets")["data"]["postgres_password"]) == b""


def test_a_per_host_service_needs_its_vm(real_inv: Any) -> None:
    with pytest.raises(MigrateError, match="name the VM"):
        convert_inventory_service(real_inv, None, "node-exporter", "monitoring")
    conv = convert_inventory_service(real_inv, "docker-sleepy", "node-exporter", "monitoring")
    assert pod(conv)["hostNetwork"] is True
    with pytest.raises(NotFound):
        convert_inventory_service(real_inv, None, "lidarr", "media")


def test_mount_options_propagation_subpath_selinux() -> None:
    text = """
services:
  exporter:
    image: quay.io/prometheus/node-exporter:v1.8.2
    volumes:
      - /:/host:ro,rslave
      - /srv/photos:/photos:z
      - type: volume
        source: shared
        target: /app/config
        volume:
          subpath: app1
volumes:
  shared:
"""
    conv = convert_compose(parse_compose(text))[0]
    mounts = {m["mountPath"]: m for m in container(conv)["volumeMounts"]}
    assert mounts["/host"]["mountPropagation"] == "HostToContainer"
    assert mounts["/host"]["readOnly"] is True
    assert mounts["/app/config"]["subPath"] == "app1"
    assert "volumes[0].bind.propagation" in keys_of(conv, "mapped")
    assert "volumes[1].bind.selinux" in keys_of(conv, "not mapped")
    for obj in conv.objects:
        kubernetes_validate.validate(obj, "1.31.0", strict=True)


@pytest.mark.parametrize(
    ("service", "key"),
    [
        ("    image: alpine:3.20\n    healthcheck:\n      test: [CMD, 'true']\n      interval: soon\n", "healthcheck"),
        ("    image: alpine:3.20\n    shm_size: lots\n", "shm_size"),
        ("    image: alpine:3.20\n    ports: ['80:80:80:80']\n", "ports"),
    ],
)
def test_a_value_that_cannot_be_read_is_a_convert_error_at_its_line(service: str, key: str) -> None:
    text = f"services:\n  app:\n{service}"
    with pytest.raises(ConvertError) as e:  # refused by the schema, or when read: located either way
        convert_compose(parse_compose(text, path="odd.yaml"))
    assert f"services.app.{key}" in str(e.value)
    assert re.search(r"odd\.yaml:[3-9]:", str(e.value))


def test_the_package_exports_what_the_runbooks_call() -> None:
    from homelab_lib import migrate

    assert set(migrate.__all__) == {
        "DEFAULT_KUBERNETES", "ComposeFile", "Conversion", "Readiness", "ReportLine", "VolumePlan",
        "compose_dependency_order", "convert_compose", "convert_inventory_service", "convert_service",
        "dependencies", "dependency_order", "load_compose", "parse_compose", "readiness", "readiness_frame",
        "redacted", "report_frame", "report_markdown",
    }  # fmt: skip
    assert all(hasattr(migrate, name) for name in migrate.__all__)


def test_frames_for_the_notebooks(every: dict[str, Conversion]) -> None:
    sonarr = every["sonarr"]
    report = sonarr.report_frame()
    assert list(report.columns) == ["service", "k8s_name", "key", "status", "detail", "line"]
    assert len(report) == len(sonarr.report)
    volumes = sonarr.volumes_frame()
    assert set(volumes["kind"]) == {"pvc-copied"}
    assert "sonarr_config" in set(volumes["source"])


def test_a_secret_on_the_command_line_moves_to_the_secret_and_reprs_show_no_secret(
    every: dict[str, Conversion],
) -> None:
    text = "services:\n  cache:\n    image: redis:7.4.1\n    command: redis-server --requirepass hunter2-pw\n"
    conv = convert_compose(parse_compose(text))[0]
    assert container(conv)["args"] == [
        "redis-server",
        "--requirepass",
        "$(REQUIREPASS)",
    ]  # tests/test_convert_inline.py
    (moved,) = [r for r in conv.report if r.key == "command" and "Secret cache-env key REQUIREPASS" in r.detail]
    assert "hunter2-pw" not in moved.detail
    assert "$(REDIS_PASSWORD)" not in json.dumps(every["redis"].objects)  # "$${REDIS_PASSWORD}": a reference
    assert container(every["redis"])["args"][-1] == "${REDIS_PASSWORD}"
    for c in every.values():
        shown = repr(c)
        assert c.service in shown
        for obj in c.objects:
            if obj["kind"] == "Secret":
                for value in obj["data"].values():
                    assert value not in shown
