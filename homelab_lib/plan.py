"""Plans: desired state vs observed state as a list of typed changes.

Every runbook is plan -> confirm -> apply -> verify. A plan is a pure function
of (desired, observed) built by each adapter; this module gives the shared
shape: a :class:`Change` per target, sorted in dependency order, printable as a
table, with the rules every runbook follows:

- a plan of only no-ops means there is nothing to do (idempotent re-runs);
- ``conflict`` changes are never applied: they need the operator;
- ``delete`` changes are applied only with ``allow_delete`` as well as ``confirm``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import pandas as pd


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    NOOP = "no-op"
    CONFLICT = "conflict"


@dataclass(frozen=True)
class FieldChange:
    """One field that differs: what runs now, what the inventory wants."""

    name: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.name}: {self.old!r} -> {self.new!r}"


@dataclass(frozen=True)
class Change:
    """One change a plan proposes.

    Attributes:
        kind: what sort of thing changes (``vm``, ``stack``, ``service``...).
        target: its name, unique within kind.
        action: create, update, delete, no-op or conflict.
        where: where it is (node, host), for the table and for errors.
        fields: for an update, each field that differs.
        reason: for a conflict or a delete, why; otherwise a short note.
        order: dependency rank (lower goes first; deletes run in reverse).
    """

    kind: str
    target: str
    action: Action
    where: str = ""
    fields: tuple[FieldChange, ...] = ()
    reason: str = ""
    order: int = 0


@dataclass(frozen=True)
class Plan:
    """An ordered list of changes."""

    changes: tuple[Change, ...] = field(default_factory=tuple)

    @classmethod
    def of(cls, changes: Iterable[Change]) -> Plan:
        """A plan with changes in dependency order: creates/updates by rank, then deletes in reverse rank."""
        items = list(changes)
        forward = sorted((c for c in items if c.action != Action.DELETE), key=lambda c: (c.order, c.kind, c.target))
        deletes = sorted((c for c in items if c.action == Action.DELETE), key=lambda c: (-c.order, c.kind, c.target))
        return cls(tuple(forward + deletes))

    def of_action(self, *actions: Action) -> list[Change]:
        return [c for c in self.changes if c.action in actions]

    @property
    def empty(self) -> bool:
        """True when applying would change nothing."""
        return all(c.action == Action.NOOP for c in self.changes)

    @property
    def conflicts(self) -> list[Change]:
        return self.of_action(Action.CONFLICT)

    def applicable(self, *, allow_delete: bool = False) -> list[Change]:
        """The changes apply() may carry out: no conflicts, no no-ops, deletes only when allowed."""
        wanted = [Action.CREATE, Action.UPDATE] + ([Action.DELETE] if allow_delete else [])
        return self.of_action(*wanted)

    def summary(self) -> str:
        """One line: counts per action, e.g. ``2 create, 1 update, 5 no-op``."""
        counts = {a: len(self.of_action(a)) for a in Action}
        parts = [f"{n} {a.value}" for a, n in counts.items() if n]
        return ", ".join(parts) if parts else "nothing planned"

    def table(self) -> pd.DataFrame:
        """The plan as a table: one row per change, field diffs spelled out."""
        return pd.DataFrame(
            [
                {
                    "action": c.action.value,
                    "kind": c.kind,
                    "target": c.target,
                    "where": c.where or "-",
                    "details": "; ".join(str(f) for f in c.fields) or c.reason or "-",
                }
                for c in self.changes
            ],
            columns=["action", "kind", "target", "where", "details"],
        )


def diff(old: dict[str, Any], new: dict[str, Any], names: Sequence[str] | None = None) -> tuple[FieldChange, ...]:
    """The fields (of names, or of new) whose values differ, in that order."""
    keys = list(names) if names is not None else list(new)
    return tuple(FieldChange(k, old.get(k), new.get(k)) for k in keys if old.get(k) != new.get(k))
