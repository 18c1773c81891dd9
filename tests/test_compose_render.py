"""Compose rendering, validation and planning: no lab needed (the real Compose binary checks the files).

The plan is a pure function of (desired, observed); its observed side is built
here from the library's own records (HostState, Container), not from SDK fakes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from homelab_lib import clients, compose
from homelab_lib.compose.observe import Container, HostState
from homelab_lib.core.errors import ComposeInvalid, ComposeMissing, ConfigError
from homelab_lib.core.plan import Action
from homelab_lib.hosts.docker import CommandResult
from homelab_lib.inventory import Inventory, load_inventory
from homelab_lib.notebook import report

SECRET_VALUE = "pg-secret-value-77aa66bb"


@pytest.fixture
def real_inv(make_params: Callable[..., Path], tmp_path: Path) -> Inventory:
    """example.yaml (profile real) with postgres' password given by reference."""
    (tmp_path / "secrets").mkdir(exist_ok=True)
    (tmp_path / "secrets" / "postgres").write_text(SECRET_VALUE + "\n")

    def edit(d: dict[str, Any]) -> None:
        d["services"] = {"postgres": {"secrets": {"postgres_password": {"ref": "file:secrets/postgres"}}}}

    return load_inventory(make_params(edit=edit))


@pytest.fixture(scope="module")
def local() -> tuple[str, ...]:
    return clients.local_compose()


def test_render_is_byte_identical_and_sorted(real_inv: Inventory) -> None:
    first = compose.render(real_inv)
    second = compose.render(real_inv)
    assert [p.text for p in first] == [p.text for p in second]
    for p in first:
        body = "\n".join(line for line in p.text.splitlines() if not line.startswith("#"))
        doc = yaml.safe_load(body)
        assert body.strip() == yaml.safe_dump(doc, sort_keys=True, default_flow_style=False, width=1000).strip()


def test_one_project_per_host_and_stack_with_unique_names(real_inv: Inventory) -> None:
    projects = compose.render(real_inv)
    keys = [(p.host, p.stack) for p in projects]
    assert keys == [(vm.name, s) for vm in real_inv.docker_hosts for s in vm.stacks]
    names = [p.name for p in projects]
    assert len(set(names)) == len(names)  # `exporters` is on three hosts: names still differ
    assert "docker-hypno-exporters" in names
    assert "docker-sleepy-exporters" in names


def test_ports_bind_to_the_vm_address_and_labels_scope_the_host(real_inv: Inventory) -> None:
    (arr,) = [p for p in compose.render(real_inv) if p.stack == "arr"]
    doc = arr.document()
    sonarr = doc["services"]["sonarr"]
    assert sonarr["ports"] == ["192.168.1.22:8989:8989/tcp"]
    labels = sonarr["labels"]
    assert labels["homelab.host"] == "docker-sleepy"
    assert labels["homelab.stack"] == "arr"
    assert labels["homelab.homelab"] == "dreamland"
    assert labels["homelab.config-hash"] == arr.service("sonarr").config_hash
    assert labels["traefik.http.routers.docker-sleepy-sonarr.rule"] == "Host(`sonarr.home.arpa`)"
    assert sonarr["environment"] == {"PGID": "1000", "PUID": "1000", "TZ": "Etc/UTC"}
    assert {"type": "bind", "source": "/srv/media/tv", "target": "/tv", "bind": {"create_host_path": True}} in sonarr[
        "volumes"
    ]


def test_real_profile_keeps_catalog_images_devices_and_healthchecks(real_inv: Inventory) -> None:
    (media,) = [p for p in compose.render(real_inv) if p.stack == "media"]
    plex = media.document()["services"]["plex"]
    assert plex["image"] == real_inv.services["plex"].image
    assert plex["devices"] == ["/dev/dri:/dev/dri"]
    assert plex["healthcheck"]["test"][:2] == ["CMD", "curl"]
    assert plex["deploy"]["resources"]["limits"] == {"cpus": "2", "memory": "4096M"}
    (exporters,) = [p for p in compose.render(real_inv) if p.name == "docker-hypno-exporters"]
    node = exporters.document()["services"]["node-exporter"]
    assert node["network_mode"] == "host"
    assert "ports" not in node


def test_the_lab_renders_exactly_as_a_real_homelab(repo: Path, real_inv: Inventory) -> None:
    """lab.yaml is an ordinary parameter file: real images, healthchecks, devices, host paths, folders."""
    inv = load_inventory(repo / "parameters" / "lab.yaml")
    projects = {p.name: p for p in compose.render(inv)}
    real = {p.name: p for p in compose.render(real_inv)}
    assert set(projects) == set(real)  # the example's whole shape
    assert sum(len(p.services) for p in projects.values()) == sum(len(p.services) for p in real.values())
    plex = projects["docker-drowzee-media"].document()["services"]["plex"]
    assert plex["image"] == "lscr.io/linuxserver/plex:1.41.3"
    assert plex["devices"] == ["/dev/dri:/dev/dri"]
    assert plex["healthcheck"]["test"] == ["CMD", "curl", "-fsS", "-o", "/dev/null", "http://localhost:32400/identity"]
    assert plex["healthcheck"]["interval"] == "2s"  # the lab only probes more often (fields merge)
    assert {v["source"] for v in plex["volumes"] if v["type"] == "bind"} == {"/srv/media"}
    assert projects["docker-drowzee-media"].remote_dir == "homelab/compose/docker-drowzee-media"
    node = projects["docker-hypno-exporters"].document()["services"]["node-exporter"]
    assert node["network_mode"] == "host"
    assert node["command"] == [
        "--path.rootfs=/host",
        "--web.listen-address=127.0.0.13:9100",
        "--collector.textfile.directory=/host/var/lib/prometheus/node-exporter",
    ]


def test_proxied_services_share_the_proxy_network_on_the_proxy_host(real_inv: Inventory) -> None:
    projects = {p.name: p for p in compose.render(real_inv)}
    proxy = projects["docker-hypno-proxy"]
    assert proxy.networks == (compose.PROXY_NETWORK,)
    assert proxy.document()["networks"] == {"homelab-proxy": {"external": True, "name": "homelab-proxy"}}
    grafana = projects["docker-hypno-monitoring"].document()["services"]["grafana"]
    assert grafana["networks"] == ["default", "homelab-proxy"]
    assert grafana["labels"]["traefik.docker.network"] == "homelab-proxy"
    assert projects["docker-hypno-monitoring"].service("grafana").proxy_host == "grafana.home.arpa"
    # no reverse proxy on sleepy: its services keep their labels but join no proxy network
    arr = projects["docker-sleepy-arr"]
    assert arr.networks == ()
    assert "networks" not in arr.document()["services"]["sonarr"]
    assert arr.service("sonarr").proxy_host == ""


def test_a_rotated_secret_changes_the_config_hash(make_params: Callable[..., Path], tmp_path: Path) -> None:
    inv = load_inventory(make_params())

    def databases() -> compose.Project:
        return next(p for p in compose.render(inv) if p.stack == "databases")

    before = databases()
    (tmp_path / "secrets" / "postgres-password").write_text("a-new-password-after-rotation\n")
    after = databases()
    assert after.service("postgres").config_hash != before.service("postgres").config_hash
    assert "a-new-password-after-rotation" not in after.text
    assert after.service("redis").config_hash == before.service("redis").config_hash


def test_secrets_are_references_never_values(real_inv: Inventory) -> None:
    (db,) = [p for p in compose.render(real_inv) if p.stack == "databases"]
    assert SECRET_VALUE not in db.text
    assert SECRET_VALUE not in repr(db)
    doc = db.document()
    assert doc["secrets"] == {"postgres_password": {"file": "./secrets/postgres_password"}}
    pg = doc["services"]["postgres"]
    assert pg["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert pg["secrets"] == ["postgres_password"]
    table = report.compose_projects_table([db])
    assert SECRET_VALUE not in table.to_string()
    assert "file:secrets/postgres" in table.to_string()


def test_required_secret_without_reference_is_a_config_error(make_params: Callable[..., Path]) -> None:
    inv = load_inventory(make_params(edit=lambda d: d.__setitem__("services", {})))
    with pytest.raises(ConfigError) as e:
        compose.render(inv)
    assert "services.postgres.secrets.postgres_password.ref" in str(e.value)
    assert "give a reference" in str(e.value)


def test_literal_secret_in_environment_is_refused_at_load(make_params: Callable[..., Path]) -> None:
    def edit(d: dict[str, Any]) -> None:
        d["services"] = {"grafana": {"environment": {"GF_SECURITY_ADMIN_PASSWORD": "hunter2"}}}

    with pytest.raises(ConfigError) as e:
        load_inventory(make_params(edit=edit))
    assert "looks like a secret" in str(e.value)
    assert "hunter2" not in str(e.value)


def test_more_cpus_than_the_vm_has_is_refused(make_params: Callable[..., Path], tmp_path: Path) -> None:
    (tmp_path / "pg").write_text("x\n")

    def edit(d: dict[str, Any]) -> None:
        d["services"] = {
            "plex": {"resources": {"cpus": 16}},
            "postgres": {"secrets": {"postgres_password": {"ref": "file:pg"}}},
        }

    with pytest.raises(ConfigError) as e:
        compose.render(load_inventory(make_params(edit=edit)))
    assert "asks 16 cpus but VM docker-drowzee has 6 cores" in str(e.value)


def test_dollar_signs_are_escaped_for_compose(real_inv: Inventory) -> None:
    inv = real_inv.model_copy(
        update={
            "services": {
                **real_inv.services,
                "redis": real_inv.services["redis"].model_copy(update={"environment": {"NOTE": "cost $5"}}),
            }
        }
    )
    (db,) = [p for p in compose.render(inv) if p.stack == "databases"]
    assert db.document()["services"]["redis"]["environment"]["NOTE"] == "cost $$5"


def test_unknown_stack_filter_is_refused(real_inv: Inventory) -> None:
    assert [p.stack for p in compose.render(real_inv, stacks=["media"])] == ["media"]
    assert [p.name for p in compose.render(real_inv, stacks=["docker-sleepy/exporters"])] == ["docker-sleepy-exporters"]
    assert compose.render(real_inv, stacks=["nope"]) == []
    plan = compose.plan([], {"docker-sleepy": host_state("docker-sleepy", [])}, homelab="dreamland", stacks=["nope"])
    assert [(c.kind, c.target, c.action) for c in plan.changes] == [("stack", "nope", Action.CONFLICT)]
    assert "check the name" in plan.conflicts[0].reason


def test_rendered_projects_pass_schema_and_compose_config(real_inv: Inventory, local: tuple[str, ...]) -> None:
    compose.validate(compose.render(real_inv), local)


def test_schema_check_names_the_key() -> None:
    problems = compose.schema_problems({"services": {"a": {"image": "x:1", "bogus": 1}}})
    assert problems
    assert "$.services.a" in problems[0]
    assert "bogus" in problems[0]


def test_a_file_compose_config_rejects_is_never_deployed(real_inv: Inventory, local: tuple[str, ...]) -> None:
    projects = compose.render(real_inv, stacks=["arr"])
    doc = projects[0].document()
    doc["services"]["sonarr"]["depends_on"] = ["qbittorrent"]  # in another stack: Compose refuses
    broken = replace(projects[0], text=yaml.safe_dump(doc, sort_keys=True))
    assert compose.schema_problems(doc) == []  # the schema cannot see it; `compose config` does
    with pytest.raises(ComposeInvalid) as e:
        compose.validate([broken, *compose.render(real_inv, stacks=["media"])], local)
    msg = str(e.value)
    assert "docker-sleepy/arr" in msg
    assert 'depends on undefined service "qbittorrent"' in msg
    assert "nothing was deployed" in msg
    assert "docker-drowzee/media" not in e.value.where


def test_compose_v2_is_preferred_and_v1_is_the_fallback() -> None:
    ok = CommandResult("v", 0, "2.29.0", "")
    missing = CommandResult("v", 127, "", "not found")
    assert compose.compose_command("vm", ok, None) == ("docker", "compose")
    assert compose.compose_command("vm", missing, ok) == ("docker-compose",)
    with pytest.raises(ComposeMissing, match="VM vm"):
        compose.compose_command("vm", missing, missing)


# ---------------------------------------------------------------- the plan (pure)


def running(project: compose.Project, service: str, **changes: Any) -> Container:
    want = project.service(service)
    base = Container(
        id=f"{service:0<12}" + "0" * 52,
        name=f"{project.name}-{service}-1",
        homelab=project.homelab,
        host=project.host,
        stack=project.stack,
        service=service,
        project=project.name,
        config_hash=want.config_hash,
        image=want.image,
        image_id="sha256:" + "a" * 64,
        state="running",
        health="healthy",
        env=dict(want.environment),
    )
    return replace(base, **changes)


def host_state(
    host: str, containers: list[Container], engine: str = "E1", images: dict[str, str] | None = None
) -> HostState:
    images = images if images is not None else {compose.normal_image(c.image): c.image_id for c in containers}
    return HostState(host, engine, "27.0", tuple(containers), images)


@pytest.fixture
def arr(real_inv: Inventory) -> compose.Project:
    return compose.render(real_inv, stacks=["arr"])[0]


def test_plan_creates_what_does_not_run(arr: compose.Project) -> None:
    plan = compose.plan([arr], {"docker-sleepy": host_state("docker-sleepy", [])}, homelab="dreamland")
    assert [(c.action, c.target) for c in plan.changes] == [
        (Action.CREATE, f"arr/{s}") for s in ("bazarr", "prowlarr", "radarr", "sonarr")
    ]
    assert compose.stacks_to_apply(plan) == [("docker-sleepy", "arr")]


def test_plan_of_what_runs_as_rendered_is_empty(arr: compose.Project) -> None:
    state = host_state("docker-sleepy", [running(arr, s.name) for s in arr.services])
    plan = compose.plan([arr], {"docker-sleepy": state}, homelab="dreamland")
    assert plan.empty
    assert compose.stacks_to_apply(plan) == []


def test_plan_names_the_changed_environment_of_one_service(real_inv: Inventory, arr: compose.Project) -> None:
    state = host_state("docker-sleepy", [running(arr, s.name) for s in arr.services])
    sonarr = real_inv.services["sonarr"]
    changed = real_inv.model_copy(
        update={
            "services": {
                **real_inv.services,
                "sonarr": sonarr.model_copy(update={"environment": {**sonarr.environment, "TZ": "Europe/Berlin"}}),
            }
        }
    )
    plan = compose.plan(compose.render(changed, stacks=["arr"]), {"docker-sleepy": state}, homelab="dreamland")
    (update,) = plan.of_action(Action.UPDATE)
    assert update.target == "arr/sonarr"
    assert [f.name for f in update.fields] == ["environment.TZ", "config-hash"]
    assert update.fields[0].old == "Etc/UTC"
    assert update.fields[0].new == "Europe/Berlin"
    assert len(plan.of_action(Action.NOOP)) == 3


def test_plan_sees_a_new_image_behind_the_same_tag_and_a_stopped_container(arr: compose.Project) -> None:
    containers = [running(arr, s.name) for s in arr.services]
    containers[0] = replace(containers[0], state="exited", health="none")
    images = {c.image: c.image_id for c in containers}
    images[arr.services[1].image] = "sha256:" + "b" * 64
    plan = compose.plan(
        [arr], {"docker-sleepy": host_state("docker-sleepy", containers, images=images)}, homelab="dreamland"
    )
    updates = {c.target: [f.name for f in c.fields] for c in plan.of_action(Action.UPDATE)}
    assert updates == {f"arr/{arr.services[0].name}": ["state"], f"arr/{arr.services[1].name}": ["image id"]}


def test_plan_deletes_stacks_and_services_dropped_from_the_inventory(arr: compose.Project) -> None:
    containers = [running(arr, s.name) for s in arr.services]
    containers.append(replace(running(arr, "sonarr"), service="readarr", name="x-readarr-1"))
    containers.append(replace(running(arr, "sonarr"), stack="old", service="lidarr", name="old-lidarr-1"))
    plan = compose.plan([arr], {"docker-sleepy": host_state("docker-sleepy", containers)}, homelab="dreamland")
    deletes = {(c.kind, c.target) for c in plan.of_action(Action.DELETE)}
    assert deletes == {("service", "arr/readarr"), ("stack", "old")}
    assert compose.stacks_to_remove(plan) == [("docker-sleepy", "old")]
    assert compose.stacks_to_apply(plan) == []
    assert compose.stacks_to_apply(plan, allow_delete=True) == [("docker-sleepy", "arr")]
    limited = compose.plan(
        [arr], {"docker-sleepy": host_state("docker-sleepy", containers)}, homelab="dreamland", stacks=["arr"]
    )
    assert compose.stacks_to_remove(limited) == []


def test_every_container_on_a_hosts_engine_is_the_hosts_business(arr: compose.Project) -> None:
    mine = [running(arr, s.name) for s in arr.services]
    stray = replace(mine[0], id="f" * 64, name="by-hand", homelab="", host="", stack="", service="", config_hash="")
    other_host = replace(mine[0], id="e" * 64, name="hypno-thing", host="docker-hypno", stack="monitoring")
    plan = compose.plan(
        [arr], {"docker-sleepy": host_state("docker-sleepy", [*mine, stray, other_host])}, homelab="dreamland"
    )
    assert sorted(c.target for c in plan.conflicts) == ["by-hand", "hypno-thing"]
    assert all("belongs to no stack" in c.reason for c in plan.conflicts)
    assert all(c.where == "docker-sleepy" for c in plan.of_action(Action.NOOP))


def test_image_references_compare_in_one_normal_form(arr: compose.Project) -> None:
    assert compose.normal_image("postgres:16.6") == "docker.io/library/postgres:16.6"
    assert compose.normal_image("docker.io/library/postgres:16.6") == "docker.io/library/postgres:16.6"
    assert compose.normal_image("index.docker.io/grafana/grafana:11.4.0") == "docker.io/grafana/grafana:11.4.0"
    assert compose.normal_image("grafana/grafana") == "docker.io/grafana/grafana:latest"
    assert compose.normal_image("localhost:5000/x:1") == "localhost:5000/x:1"
    assert compose.normal_image("quay.io/prometheus/node-exporter:v1.8.2") == "quay.io/prometheus/node-exporter:v1.8.2"
    # Docker lists docker.io/library/x:t as x:t: the container still runs "the same image"
    short = [replace(running(arr, s.name), image=s.image.removeprefix("docker.io/library/")) for s in arr.services]
    plan = compose.plan([arr], {"docker-sleepy": host_state("docker-sleepy", short)}, homelab="dreamland")
    assert [c.action for c in plan.changes] == [Action.NOOP] * len(arr.services)


def test_status_and_figure_per_host(arr: compose.Project) -> None:
    now = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
    containers = [running(arr, s.name, started_at=datetime(2025, 1, 1, 11, 0, tzinfo=UTC)) for s in arr.services]
    containers[0] = replace(containers[0], health="unhealthy", restarts=2)
    rows = compose.status([arr], {"docker-sleepy": host_state("docker-sleepy", containers[:-1])}, now)
    assert [r.state for r in rows] == ["running", "running", "running", "missing"]
    assert rows[1].uptime_s == 3600
    table = report.compose_status_table(rows, host="docker-sleepy")
    assert list(table.columns) == [
        "host",
        "stack",
        "service",
        "image",
        "state",
        "health",
        "ports",
        "uptime",
        "restarts",
        "probe",
    ]
    assert table["uptime"].tolist()[:2] == ["60m", "60m"]
    fig = report.compose_health_figure(rows, figsize=(6.0, 3.0))
    assert tuple(fig.get_size_inches()) == (6.0, 3.0)
    assert len(fig.axes) == 2


def test_an_inventory_value_compose_rejects_stops_the_run(real_inv: Inventory, local: tuple[str, ...]) -> None:
    plex = real_inv.services["plex"].model_copy(update={"devices": ["/dev/dri:card0:rw:x"]})
    inv = real_inv.model_copy(update={"services": {**real_inv.services, "plex": plex}})
    projects = compose.render(inv, stacks=["media", "arr"])
    assert compose.schema_problems(projects[0].document()) == []
    with pytest.raises(ComposeInvalid) as e:
        compose.validate(projects, local)
    assert e.value.where == "docker-drowzee/media"
    assert "confusing device mapping" in str(e.value)
