"""Readiness for K3s, placement advice from the ADR's criteria, and the migration order."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from homelab_lib.core.errors import DependencyCycle, NotFound
from homelab_lib.inventory import Inventory, load_inventory
from homelab_lib.migrate import (
    compose_dependency_order,
    dependencies,
    dependency_order,
    load_compose,
    readiness,
    readiness_frame,
)
from homelab_lib.migrate.readiness import order

DATA = Path(__file__).resolve().parent / "data" / "compose"


def _apps(data: dict[str, Any], services: dict[str, Any], stack: list[str]) -> None:
    data["services"].update(services)
    hypno = next(vm for vm in data["vms"] if vm["name"] == "docker-hypno")
    hypno["stacks"]["apps"] = stack


@pytest.fixture
def inv(make_params: Callable[..., Path]) -> Inventory:
    """The example homelab, plus a dev tool and an app that uses the database, on Compose."""

    def edit(data: dict[str, Any]) -> None:
        _apps(
            data,
            {
                "gitea": {
                    "image": "docker.io/gitea/gitea:1.22.6",
                    "ports": [{"container": 3000}, {"container": 22, "host": 2222}],
                    "volumes": {"data": "/data"},
                },
                "myapp": {
                    "image": "ghcr.io/example/myapp:1.4.0",
                    "ports": [{"container": 8000}],
                    "environment": {"DB_HOST": "postgres", "CACHE_URL": "redis://redis:6379/0"},
                    "volumes": {"state": "/state"},
                },
            },
            ["gitea", "myapp"],
        )

    return load_inventory(make_params(edit=edit))


def test_every_compose_service_gets_a_verdict_and_a_placement(inv: Inventory) -> None:
    found = {r.service: r for r in readiness(inv)}
    assert set(found) == set(inv.placed("compose"))
    for r in found.values():
        assert r.reasons or r.verdict == "maps cleanly"
        assert r.why
    plex = found["plex"]
    assert plex.verdict == "blocked"
    assert any("host devices /dev/dri" in x for x in plex.reasons)
    assert any("media bind mount /srv/media" in x for x in plex.reasons)
    assert found["node-exporter"].verdict == "blocked"
    assert any("host networking" in x for x in found["node-exporter"].reasons)
    assert any("stateful database" in x for x in found["postgres"].reasons)
    assert any("stateful database" in x for x in found["redis"].reasons)
    assert any("Docker socket" in x for x in found["traefik"].reasons)
    assert found["node-exporter"].hosts == ("docker-drowzee", "docker-sleepy", "docker-hypno")


def test_services_that_convert_as_they_are_map_cleanly_or_say_what_is_approximated(inv: Inventory) -> None:
    found = {r.service: r for r in readiness(inv)}
    assert found["prowlarr"].verdict == "maps cleanly"  # one volume, behind the proxy: nothing lost
    assert found["prowlarr"].approximated == found["prowlarr"].not_mapped == 0
    # gitea publishes 2222 -> 22: not in the NodePort range, so that port is approximated
    assert found["gitea"].verdict == "approximated"
    assert any("30000-32767" in x for x in found["gitea"].reasons)


def test_placement_follows_the_adr_criteria(inv: Inventory) -> None:
    found = {r.service: r for r in readiness(inv)}
    assert found["gitea"].suggested == "k3s"
    assert any("development tool" in w for w in found["gitea"].why)
    assert found["prowlarr"].suggested == "compose"
    assert any("stable and simple" in w for w in found["prowlarr"].why)
    assert found["plex"].suggested == "compose"  # blocked: it stays where its devices are


def test_readiness_frame_is_one_row_per_compose_service(inv: Inventory) -> None:
    df = readiness_frame(inv)
    assert list(df.columns) == [
        "service", "hosts", "stack", "verdict", "suggested", "reasons", "why", "approximated", "not mapped"
    ]  # fmt: skip
    assert sorted(df["service"]) == inv.placed("compose")
    assert set(df["verdict"]) == {"blocked", "approximated", "maps cleanly"}
    assert readiness_frame(inv, ["plex"])["service"].tolist() == ["plex"]
    with pytest.raises(NotFound):
        readiness(inv, ["lidarr"])


def test_readiness_reads_no_secret(make_params: Callable[..., Path], tmp_path: Path) -> None:
    """The secret files are gone: the readiness check still runs (notebook 00 must not need secrets)."""
    inv = load_inventory(make_params())
    (tmp_path / "secrets" / "postgres-password").unlink()
    assert {r.service for r in readiness(inv)} == set(inv.placed("compose"))


def test_dependencies_come_from_the_proxy_and_the_environment(inv: Inventory) -> None:
    deps = dependencies(inv)
    assert set(deps["myapp"]) == {"postgres", "redis"}
    assert deps["grafana"] == ("traefik",)  # routed by the proxy of its host
    assert deps["postgres"] == ()


def test_dependency_order_puts_dependencies_first(inv: Inventory) -> None:
    ordered = dependency_order(inv, ["all"])
    assert sorted(ordered) == inv.placed("compose")
    for service, deps in dependencies(inv).items():
        for dep in deps:
            if service in ordered:
                assert ordered.index(dep) < ordered.index(service), (dep, service)
    assert dependency_order(inv, ["myapp", "postgres"]) == ["postgres", "myapp"]
    with pytest.raises(NotFound):
        dependency_order(inv, ["lidarr"])


def test_a_dependency_cycle_is_a_clear_error(make_params: Callable[..., Path]) -> None:
    def edit(data: dict[str, Any]) -> None:
        _apps(
            data,
            {
                "alpha": {"image": "ghcr.io/example/alpha:1.0", "environment": {"PEER": "http://beta:80"}},
                "beta": {"image": "ghcr.io/example/beta:1.0", "environment": {"PEER": "http://alpha:80"}},
            },
            ["alpha", "beta"],
        )

    inv = load_inventory(make_params(edit=edit))
    with pytest.raises(DependencyCycle) as e:
        dependency_order(inv)
    assert e.value.cycle == ("alpha", "beta", "alpha")
    assert "alpha -> beta -> alpha" in str(e.value)
    assert "break the cycle" in str(e.value)


def test_order_of_a_compose_file_by_depends_on() -> None:
    ordered = compose_dependency_order(load_compose(DATA / "databases.yaml"))
    assert ordered.index("postgres") < ordered.index("app_backend.v2")
    assert ordered.index("redis") < ordered.index("app_backend.v2")
    arr = compose_dependency_order(load_compose(DATA / "arr.yaml"))
    assert arr.index("bazarr") > max(arr.index("sonarr"), arr.index("radarr"))
    with pytest.raises(DependencyCycle):
        order({"a": ["b"], "b": ["c"], "c": ["a"]}, ["a", "b", "c"])
