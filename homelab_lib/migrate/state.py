"""The migration's checkpoints and the state record that lets a later run resume.

A move is eight checkpoints, in order (:data:`CHECKPOINTS`): ``backup``, ``stop``, ``pvcs``,
``copy``, ``verify``, ``apply``, ``placement``, ``cleanup``. Each one, once completed, is recorded
with its facts (the containers stopped and their volumes' manifests, each PVC's folder, the
manifests' sha256...) in a :class:`MoveState`, kept as JSON in a file per service under the
archive's folder (:func:`state_path`); the run's :class:`~homelab_lib.core.contract.ApplyResult`
carries the same facts. A later run reads the file and plans only what is left.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from homelab_lib.core.errors import MigrateError

#: The checkpoints of a move, in order.
CHECKPOINTS = ("backup", "stop", "pvcs", "copy", "verify", "apply", "placement", "cleanup")
#: The checkpoints after which a failure is rolled back (the Compose service is stopped).
AFTER_STOP = CHECKPOINTS[CHECKPOINTS.index("stop") + 1 :]
STATE_FORMAT = "homelab.migrate/1"


@dataclass(frozen=True)
class Done:
    """One completed checkpoint: when, and the facts it recorded (strings, for the archive)."""

    at: str
    facts: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class MoveState:
    """Where a service's move stands.

    Attributes:
        service: the service (``stack/service``).
        done: the completed checkpoints, by name.
        copied: the volumes whose copy completed (skipped when the copy checkpoint is resumed).
        rolled_back: lines from the last rollback ('' when none), kept for the record.
    """

    service: str
    done: Mapping[str, Done] = field(default_factory=lambda: MappingProxyType({}))
    copied: tuple[str, ...] = ()
    rolled_back: tuple[str, ...] = ()

    @property
    def last(self) -> str:
        """The last completed checkpoint in order ('' when none)."""
        finished = [c for c in CHECKPOINTS if c in self.done]
        return finished[-1] if finished else ""

    @property
    def remaining(self) -> tuple[str, ...]:
        return tuple(c for c in CHECKPOINTS if c not in self.done)

    @property
    def stopped(self) -> bool:
        """The Compose service was stopped by this move (and not brought back)."""
        return "stop" in self.done

    def fact(self, checkpoint: str, name: str, default: str = "") -> str:
        got = self.done.get(checkpoint)
        return got.facts.get(name, default) if got else default

    def with_done(self, checkpoint: str, at: str, facts: Mapping[str, str]) -> MoveState:
        return replace(self, done=MappingProxyType({**self.done, checkpoint: Done(at, MappingProxyType(dict(facts)))}))

    def with_copied(self, volume: str) -> MoveState:
        return replace(self, copied=(*self.copied, volume) if volume not in self.copied else self.copied)

    def document(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "service": self.service,
            "done": {c: {"at": d.at, "facts": dict(d.facts)} for c, d in self.done.items()},
            "copied": list(self.copied),
            "rolled_back": list(self.rolled_back),
        }

    @classmethod
    def parse(cls, data: Mapping[str, Any], *, where: str) -> MoveState:
        if data.get("format") != STATE_FORMAT or not isinstance(data.get("done"), dict):
            raise MigrateError(
                f"the state record is not {STATE_FORMAT}",
                where=where,
                hint="it was written by another version or altered: move it aside and plan again",
            )
        done = {
            str(c): Done(
                str(d.get("at", "")), MappingProxyType({str(k): str(v) for k, v in (d.get("facts") or {}).items()})
            )
            for c, d in data["done"].items()
            if c in CHECKPOINTS
        }
        return cls(
            str(data.get("service", "")),
            MappingProxyType(done),
            tuple(str(v) for v in data.get("copied") or ()),
            tuple(str(v) for v in data.get("rolled_back") or ()),
        )


def state_path(state_dir: Path, service: str) -> Path:
    """The state file of a service: ``<state_dir>/migrate/<service with / as __>.json``."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", service.replace("/", "__"))
    return state_dir / "migrate" / f"{safe}.json"


def load(state_dir: Path, service: str) -> MoveState:
    """The recorded state of a service's move (a fresh one when there is no record)."""
    path = state_path(state_dir, service)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return MoveState(service)
    try:
        data = json.loads(text)
    except ValueError as e:
        raise MigrateError(
            f"the state record cannot be read: {e}", where=str(path), hint="move it aside and plan again"
        ) from e
    return MoveState.parse(data, where=str(path))


def save(state_dir: Path, state: MoveState) -> Path:
    """Write the state record atomically (temp file + rename); returns its path."""
    path = state_path(state_dir, state.service)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(state.document(), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


__all__ = ["AFTER_STOP", "CHECKPOINTS", "Done", "MoveState", "load", "save", "state_path"]
