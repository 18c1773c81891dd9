"""Runbook 05's placement record: a moved service leaves its stack and joins k3s.services on every load."""

from __future__ import annotations

from pathlib import Path

import pytest

from homelab_lib.errors import ConfigError
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
