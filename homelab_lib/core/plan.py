"""Plans: desired state vs observed state as a list of typed changes.

Every runbook is plan -> confirm -> apply -> verify. A plan is a pure function
of (desired, observed) built by each adapter; this module gives the shared
shape: a :class:`Change` per target, sorted in dependency order, printable as a
table, with the rules every runbook follows:

- a plan of only no-ops means there is nothing to do (idempotent re-runs);
- ``conflict`` changes are never applied: they need the operator;
- ``delete`` changes are applied only with ``allow_delete`` as well as ``confirm``.

A plan also has a canonical form (:meth:`Plan.document`: JSON with sorted keys,
no volatile text) and its sha256 (:attr:`Plan.sha256`): what a dry run archives
and ``homelab run --approve`` compares, the way ``terraform plan -out`` does.
:func:`diff_documents` says what differs between two plans, one line per change.
This module imports no pandas until a table is asked for (the runner uses it).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

#: The MIME type a plan is emitted under in a notebook's outputs (see :func:`homelab_lib.core.contract.show_plan`).
PLAN_MIME = "application/vnd.homelab.plan+json"
#: The version of the canonical form.
PLAN_FORMAT = "homelab.plan/1"


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
    """An ordered list of changes, made by one adapter.

    Attributes:
        changes: the changes, in the order apply carries them out.
        adapter: the adapter that made the plan (``proxmox``, ``compose``...); part of its identity.
    """

    changes: tuple[Change, ...] = field(default_factory=tuple)
    adapter: str = ""

    @classmethod
    def of(cls, changes: Iterable[Change], *, adapter: str = "") -> Plan:
        """A plan with changes in dependency order: creates/updates by rank, then deletes in reverse rank."""
        items = list(changes)
        forward = sorted((c for c in items if c.action != Action.DELETE), key=lambda c: (c.order, c.kind, c.target))
        deletes = sorted((c for c in items if c.action == Action.DELETE), key=lambda c: (-c.order, c.kind, c.target))
        return cls(tuple(forward + deletes), adapter)

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
        import pandas as pd

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

    def document(self) -> dict[str, Any]:
        """The plan's canonical form: what is hashed, archived and compared.

        Every change with its kind, target, action, where, field diffs and reason; the reason of a
        no-op is left out (it reports volatile facts, such as a container's health, that are no part
        of what would be done). Values that JSON cannot hold are written as text.
        """
        return {
            "format": PLAN_FORMAT,
            "adapter": self.adapter,
            "summary": self.summary(),
            "changes": [
                {
                    "kind": c.kind,
                    "target": c.target,
                    "action": c.action.value,
                    "where": c.where,
                    "fields": [[f.name, _jsonable(f.old), _jsonable(f.new)] for f in c.fields],
                    "reason": "" if c.action == Action.NOOP else c.reason,
                }
                for c in self.changes
            ],
        }

    @property
    def sha256(self) -> str:
        """The sha256 (hex) of the canonical form: equal plans, equal hashes, on any machine."""
        return document_sha256(self.document())


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)


def canonical(document: Mapping[str, Any]) -> bytes:
    """The canonical bytes of a plan document (its ``sha256`` key left out): sorted keys, no spaces, UTF-8."""
    body = {k: v for k, v in document.items() if k != "sha256"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def document_sha256(document: Mapping[str, Any]) -> str:
    """The sha256 of a plan document, as :attr:`Plan.sha256` computes it (its own ``sha256`` key left out)."""
    return hashlib.sha256(canonical(document)).hexdigest()


def _describe(change: Mapping[str, Any]) -> str:
    fields = "; ".join(f"{name}: {old!r} -> {new!r}" for name, old, new in change.get("fields", []))
    detail = fields or str(change.get("reason") or "")
    return f"{change.get('action')}" + (f" ({detail})" if detail else "")


def diff_documents(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What differs between two plan documents, one line per change (by kind, where and target).

    ``+ kind target (where): action (details)`` is in new only, ``- ...`` in old only, and
    ``~ kind target (where): was ...; now ...`` differs, with what old had and what new has.
    Empty when the plans are the same.
    """
    lines: list[str] = []
    if old.get("adapter") != new.get("adapter"):
        lines.append(f"~ adapter: {old.get('adapter')!r} -> {new.get('adapter')!r}")
    before, after = changes_by_key(old), changes_by_key(new)
    for key in [k for k in after if k not in before]:
        lines.append(f"+ {key[0]} {key[2]} ({key[1] or '-'}): {_describe(after[key])}")
    for key in [k for k in before if k not in after]:
        lines.append(f"- {key[0]} {key[2]} ({key[1] or '-'}): {_describe(before[key])}")
    for key in [k for k in after if k in before and before[k] != after[k]]:
        lines.append(
            f"~ {key[0]} {key[2]} ({key[1] or '-'}): was {_describe(before[key])}; now {_describe(after[key])}"
        )
    if not lines and list(before) != list(after):
        lines.append("~ the same changes in another order")
    return lines


def changes_by_key(document: Mapping[str, Any]) -> dict[tuple[str, str, str], Mapping[str, Any]]:
    """A plan document's changes by (kind, where, target), in plan order."""
    return {
        (str(c.get("kind")), str(c.get("where") or ""), str(c.get("target"))): c for c in document.get("changes", [])
    }


def diff_plans(old: Plan, new: Plan) -> list[str]:
    """:func:`diff_documents` of two plans."""
    return diff_documents(old.document(), new.document())


def diff(old: dict[str, Any], new: dict[str, Any], names: Sequence[str] | None = None) -> tuple[FieldChange, ...]:
    """The fields (of names, or of new) whose values differ, in that order."""
    keys = list(names) if names is not None else list(new)
    return tuple(FieldChange(k, old.get(k), new.get(k)) for k in keys if old.get(k) != new.get(k))
