"""Runbook 05's placement record: a moved service leaves its stack and joins k3s.services on every load."""

from __future__ import annotations

from pathlib import Path

import pytest

from homelab_lib.core.errors import ConfigError
from homelab_lib.inventory import load_inventory
from homelab_lib.inventory.placement import Move, edit_to_make, forget_move, read_moves, record_move

EXAMPLE = Path(__file__).parents[1] / "parameters" / "example.yaml"


def _layer(tmp_path: Path) -> tuple[Path, Path]:
    record = tmp_path / "placement.yaml"
    layer = tmp_path / "placement-layer.yaml"
    layer.write_text(f"placement_file: {record}\n")
    return layer, record


def _stack_of(inv: object, service: str) -> list[str]:
    return [f"{vm.name}/{s}" for vm in inv.vms for s, names in vm.stacks.items() if service in names]  # type: ignore[attr-defined]


def test_no_record_yet_changes_nothing(tmp_path: Path) -> None:
    layer, _ = _layer(tmp_path)
    assert load_inventory([EXAMPLE, layer]).model_dump(exclude={"source_files", "placement_file"}) == load_inventory(
        EXAMPLE
    ).model_dump(exclude={"source_files", "placement_file"})


def test_a_recorded_move_places_the_service_on_k3s_and_forgetting_it_puts_it_back(tmp_path: Path) -> None:
    layer, record = _layer(tmp_path)
    before = load_inventory([EXAMPLE, layer])
    origin = _stack_of(before, "prowlarr")
    assert origin
    assert "prowlarr" not in (before.k3s.services if before.k3s else [])
    record_move(record, Move("prowlarr", "k3s", origin[0], run="20261126T010000Z"))
    assert read_moves(record)["prowlarr"].origin == origin[0]
    after = load_inventory([EXAMPLE, layer])
    assert _stack_of(after, "prowlarr") == []
    assert after.k3s is not None
    assert "prowlarr" in after.k3s.services
    assert "prowlarr" in after.placed("k3s")
    assert "prowlarr" not in after.placed("compose")
    assert forget_move(record, "prowlarr")
    assert _stack_of(load_inventory([EXAMPLE, layer]), "prowlarr") == origin
    assert not forget_move(record, "prowlarr")


def test_a_damaged_record_is_named(tmp_path: Path) -> None:
    layer, record = _layer(tmp_path)
    record.write_text("moved: {prowlarr: {to: mars}}\n")
    with pytest.raises(ConfigError, match=r"moved\.prowlarr"):
        load_inventory([EXAMPLE, layer])


def test_the_edit_to_make_names_the_stack_and_the_k3s_list() -> None:
    text = edit_to_make("prowlarr", "docker-sleepy/arr", "k3s")
    assert "vms[docker-sleepy].stacks.arr" in text
    assert "k3s.services" in text


def test_runbook_04_deploys_a_moved_service_as_the_converter_made_it_with_its_recorded_claims(tmp_path: Path) -> None:
    from homelab_lib.k3s.services import desired_services

    lab = Path(__file__).parents[1] / "parameters" / "lab.yaml"
    layer, record = _layer(tmp_path)
    record_move(record, Move("prowlarr", "k3s", "docker-sleepy/arr", sizes=(("prowlarr-config", "2Gi"),)))
    inv = load_inventory([lab, layer])
    objs = {(o["kind"], o["metadata"]["name"]): o for o in desired_services(inv, ["prowlarr"]).objects}
    assert objs["PersistentVolumeClaim", "prowlarr-config"]["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert objs["Deployment", "prowlarr"]["metadata"]["namespace"] == "prowlarr"
    rules = objs["Ingress", "prowlarr"]["spec"]["rules"]
    assert rules[0]["host"] == "prowlarr.lab.home.arpa"
    probes = desired_services(inv, ["prowlarr"]).probes
    assert [(p.host, p.path) for p in probes] == [("prowlarr.lab.home.arpa", "/ping")]


def test_a_moved_service_with_metrics_gets_the_nodeport_monitoring_scrapes(tmp_path: Path) -> None:
    from homelab_lib.k3s.services import desired_services
    from homelab_lib.monitoring.targets import compute

    lab = Path(__file__).parents[1] / "parameters" / "lab.yaml"
    layer, record = _layer(tmp_path)
    before = load_inventory([lab, layer])
    record_move(record, Move("prowlarr", "k3s", "docker-sleepy/arr"))
    inv = load_inventory([lab, layer])
    assert inv.monitoring is not None
    port = inv.monitoring.k3s_node_ports["prowlarr"]
    objs = {(o["kind"], o["metadata"]["name"]): o for o in desired_services(inv, ["prowlarr"]).objects}
    spec = objs["Service", "prowlarr-metrics"]["spec"]
    assert spec["type"] == "NodePort"
    assert spec["ports"][0]["nodePort"] == port
    old = [t for t in compute(before).targets if t.service == "prowlarr"]
    new = [t for t in compute(inv).targets if t.service == "prowlarr"]
    assert [t.platform for t in old] == ["compose"]
    assert [(t.platform, t.address) for t in new] == [("k3s", f"{inv.vm('k3s-nappy').address}:{port}")]
