"""Label and field selectors, parsed as the apiserver parses them."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from homelab_lab.errors import KubeStatus
from homelab_lab.kube.schema import Json

Match = Callable[[Json], bool]
_SET = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s*(?:(notin|in)\s*\(([^)]*)\))?\s*$")
_CMP = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s*(==|!=|=)\s*([A-Za-z0-9_./-]*)\s*$")


def _split(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return parts


Labels = dict[str, Any]


def _equals(key: str, value: str, negate: bool) -> Callable[[Labels], bool]:
    return lambda lb: (lb.get(key) == value) != negate


def _member(key: str, allowed: set[str], negate: bool) -> Callable[[Labels], bool]:
    return lambda lb: (lb.get(key) in allowed) != negate


def _exists(key: str, negate: bool) -> Callable[[Labels], bool]:
    return lambda lb: (key in lb) != negate


def _field_test(path: str, value: str, negate: bool) -> Match:
    return lambda o: (_field(o, path) == value) != negate


def label_selector(text: str) -> Match:
    """A predicate on an object's labels; 400 BadRequest for a malformed selector."""
    tests: list[Callable[[dict[str, Any]], bool]] = []
    for part in _split(text or ""):
        if m := _CMP.match(part):
            key, op, value = m.groups()
            tests.append(_equals(key, value, op == "!="))
        elif m := _SET.match(part):
            neg, key, op, values = m.groups()
            if op:
                tests.append(_member(key, {v.strip() for v in values.split(",") if v.strip()}, op == "notin"))
            else:
                tests.append(_exists(key, bool(neg)))
        else:
            raise KubeStatus(400, "BadRequest", f"unable to parse requirement: {part.strip()!r}")
    return lambda obj: all(t((obj.get("metadata") or {}).get("labels") or {}) for t in tests)


def _field(obj: Json, path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def field_selector(text: str) -> Match:
    """A predicate on fields (``metadata.name=x``, ``status.phase!=Running``...)."""
    tests: list[Match] = []
    for part in _split(text or ""):
        m = _CMP.match(part)
        if not m:
            raise KubeStatus(400, "BadRequest", f"invalid field selector: {part.strip()!r}")
        path, op, value = m.groups()
        tests.append(_field_test(path, value, op == "!="))
    return lambda obj: all(t(obj) for t in tests)


def matches_selector(selector: Json | None, labels: dict[str, str]) -> bool:
    """A LabelSelector object (matchLabels/matchExpressions) against labels; empty matches nothing."""
    if not selector or not (selector.get("matchLabels") or selector.get("matchExpressions")):
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        present = key in labels
        if (op == "In" and labels.get(key) not in values) or (op == "NotIn" and present and labels[key] in values):
            return False
        if (op == "Exists" and not present) or (op == "DoesNotExist" and present):
            return False
    return True
