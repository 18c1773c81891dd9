"""Where runbook 05 records the services it moved between Compose and K3s.

A migration changes the homelab's placement: a service leaves its Compose stack
and joins ``k3s.services``. The inventory says where every service lives, so
the move must land in it, or the next run of 02 would put the service back.
Two ways, as the inventory chooses:

- ``placement_file:`` set: the move is written there (a small YAML file the
  toolkit owns, ``moved: {service: {to: k3s, from: vm/stack, run: ...}}``) and
  every load of the inventory applies it, so 02, 04, 06 and 07 all see the
  service on K3s. The operator's own files are never rewritten.
- not set: :func:`edit_to_make` says which lines to change, and the runbook
  shows it.

Moving back (a rollback, or 05 run the other way) removes the record.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ruamel.yaml import YAML

from homelab_lib.core.errors import ConfigError, Problem

Platform = Literal["compose", "k3s"]


@dataclass(frozen=True)
class Move:
    """One recorded move: the service, where it went, and where it came from (``vm/stack``)."""

    service: str
    to: Platform
    origin: str
    run: str = ""
    sizes: tuple[tuple[str, str], ...] = ()

    def fields(self) -> dict[str, object]:
        return {"to": self.to, "from": self.origin, "run": self.run, "sizes": dict(self.sizes)}


def read_moves(path: Path) -> dict[str, Move]:
    """The moves recorded in ``path`` (none when the file does not exist yet).

    Raises:
        ConfigError: the file is not a placement record (names the line).
    """
    if not path.exists():
        return {}
    data = YAML(typ="safe").load(path.read_text()) or {}
    moved = data.get("moved") if isinstance(data, dict) else None
    if not isinstance(moved, dict):
        raise ConfigError(
            [Problem(str(path), 1, "moved", "a placement file holds `moved: {service: {to: k3s, from: vm/stack}}`")]
        )
    out = {}
    for name, entry in moved.items():
        if not isinstance(entry, dict) or entry.get("to") not in ("compose", "k3s"):
            raise ConfigError([Problem(str(path), 1, f"moved.{name}", "each move needs `to: k3s` or `to: compose`")])
        sizes = entry.get("sizes") or {}
        if not isinstance(sizes, dict):
            raise ConfigError([Problem(str(path), 1, f"moved.{name}.sizes", "sizes maps a claim to its size (1Gi)")])
        out[str(name)] = Move(
            str(name),
            entry["to"],
            str(entry.get("from", "")),
            str(entry.get("run", "")),
            tuple(sorted((str(k), str(v)) for k, v in sizes.items())),
        )
    return out


def apply_moves(merged: dict[str, Any], moves: dict[str, Move]) -> dict[str, Any]:
    """The merged parameter data with each move applied (plain data, before validation)."""
    if "moved" in merged:
        raise ConfigError([Problem("parameters", 0, "moved", "`moved:` is read from placement_file; do not write it")])
    merged["moved"] = {
        m.service: {"origin": m.origin, "sizes": dict(m.sizes), "run": m.run} for m in moves.values() if m.to == "k3s"
    }
    for move in moves.values():
        if move.to != "k3s":
            continue
        for vm in merged.get("vms") or []:
            stacks = vm.get("stacks") if isinstance(vm, dict) else None
            if not isinstance(stacks, dict):
                continue
            for stack in list(stacks):
                if isinstance(stacks[stack], list) and move.service in stacks[stack]:
                    stacks[stack] = [s for s in stacks[stack] if s != move.service]
                    if not stacks[stack]:
                        del stacks[stack]
        k3s = merged.get("k3s")
        if isinstance(k3s, dict):
            services = list(k3s.get("services") or [])
            if move.service not in services:
                services.append(move.service)
            k3s["services"] = services
    return merged


def record_move(path: Path, move: Move) -> None:
    """Write ``move`` into the placement file (atomically; other moves kept)."""
    moves = read_moves(path)
    moves[move.service] = move
    _write(path, moves)


def forget_move(path: Path, service: str) -> bool:
    """Remove the record of ``service`` (it is back where its stack says); whether there was one."""
    moves = read_moves(path)
    if moves.pop(service, None) is None:
        return False
    _write(path, moves)
    return True


def edit_to_make(service: str, origin: str, to: Platform) -> str:
    """The change to make by hand in the parameter file, when there is no ``placement_file``."""
    vm, _, stack = origin.partition("/")
    if to == "k3s":
        return f"remove '{service}' from vms[{vm}].stacks.{stack} and add it to k3s.services"
    return f"remove '{service}' from k3s.services and add it to vms[{vm}].stacks.{stack}"


def _write(path: Path, moves: dict[str, Move]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"moved": {name: m.fields() for name, m in sorted(moves.items())}}
    yaml = YAML(typ="safe")
    yaml.default_flow_style = False
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".placement.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write("# Written by runbook 05 (homelab_lib.inventory.placement): services moved between platforms.\n")
            yaml.dump(body, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
