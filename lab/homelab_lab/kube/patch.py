"""PATCH bodies: JSON merge patch (RFC 7386), strategic merge patch, JSON patch (RFC 6902).

Strategic merge follows the schema's ``x-kubernetes-patch-merge-key`` / ``-patch-strategy``:
lists of containers, ports, env, volumes... merge by their key; ``$patch: delete|replace|merge``,
``$retainKeys``, ``$deleteFromPrimitiveList/<f>`` and ``$setElementOrder/<f>`` directives are honoured.
"""

from __future__ import annotations

import copy
from typing import Any

from homelab_lab.errors import KubeStatus
from homelab_lab.kube import schema
from homelab_lab.kube.schema import Json

_MISSING = object()


def bad_request(message: str) -> KubeStatus:
    return KubeStatus(400, "BadRequest", message)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def strategic_merge(target: Any, patch: Any, node: Json | None) -> Any:
    """Apply a strategic merge patch to target, guided by the schema node (None: plain merge)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return _MISSING
    out = dict(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            current = out.get(field)
            if isinstance(current, list) and isinstance(value, list):
                out[field] = [x for x in current if x not in value]
            continue
        sub = schema.child(node, key) if node is not None else None
        if value is None:
            out.pop(key, None)
        elif isinstance(value, list) and sub is not None and schema.type_of(sub) == "array":
            out[key] = _merge_list(out.get(key), value, sub)
        elif isinstance(value, dict):
            merged = strategic_merge(out.get(key), value, sub)
            if merged is _MISSING:
                out.pop(key, None)
            else:
                out[key] = merged
        else:
            out[key] = copy.deepcopy(value)
    if isinstance(retain, list):
        out = {k: v for k, v in out.items() if k in retain}
    return out


def _merge_list(current: Any, patch: list[Any], node: Json) -> list[Any]:
    current = list(current) if isinstance(current, list) else []
    strategy = schema.patch_strategy(node)
    key = schema.patch_merge_key(node)
    if any(isinstance(x, dict) and x.get("$patch") == "replace" for x in patch):
        return [copy.deepcopy(x) for x in patch if not (isinstance(x, dict) and "$patch" in x)]
    if "merge" not in strategy:
        return copy.deepcopy(patch)
    if key is None:  # a merging list of primitives: union, keeping order
        out = list(current)
        for x in patch:
            if x not in out:
                out.append(copy.deepcopy(x))
        return out
    elem = schema.items(node)
    out = list(current)
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise bad_request(f"map: {item} does not contain declared merge key: {key}")
        at = next((i for i, x in enumerate(out) if isinstance(x, dict) and x.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if at is not None:
                out.pop(at)
            continue
        if at is None:
            out.append({k: copy.deepcopy(v) for k, v in item.items() if k != "$patch"})
        else:
            out[at] = strategic_merge(out[at], item, elem)
    return out


# ---------------------------------------------------------------- JSON patch


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str]) -> Any:
    for p in parts:
        if isinstance(doc, list):
            try:
                doc = doc[int(p)]
            except (ValueError, IndexError):
                raise bad_request(f"index {p} out of range") from None
        elif isinstance(doc, dict) and p in doc:
            doc = doc[p]
        else:
            raise KubeStatus(422, "Invalid", f"doc is missing path: /{'/'.join(parts)}")
    return doc


def _add(doc: Any, parts: list[str], value: Any) -> Any:
    if not parts:
        return value
    parent = _walk(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, list):
        if last == "-":
            parent.append(value)
        else:
            try:
                parent.insert(int(last), value)
            except ValueError:
                raise bad_request(f"invalid array index {last!r}") from None
    elif isinstance(parent, dict):
        parent[last] = value
    else:
        raise bad_request(f"cannot add to a non-container at /{'/'.join(parts)}")
    return doc


def _remove(doc: Any, parts: list[str]) -> Any:
    if not parts:
        raise bad_request("cannot remove the whole document")
    parent = _walk(doc, parts[:-1])
    last = parts[-1]
    try:
        if isinstance(parent, list):
            return parent.pop(int(last))
        return parent.pop(last)
    except (KeyError, ValueError, IndexError, AttributeError):
        raise KubeStatus(422, "Invalid", f"unable to remove nonexistent key: {last}: missing value") from None


def json_patch(target: Any, ops: Any) -> Any:
    """RFC 6902 operations applied in order to a copy of target."""
    if not isinstance(ops, list):
        raise bad_request("a JSON patch must be a list of operations")
    doc = copy.deepcopy(target)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise bad_request(f"invalid JSON patch operation {op!r}")
        kind, parts = op["op"], _pointer(str(op["path"]))
        if kind == "add":
            doc = _add(doc, parts, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            _remove(doc, parts)
        elif kind == "replace":
            _walk(doc, parts)
            if parts:
                _remove(doc, parts)
            doc = _add(doc, parts, copy.deepcopy(op.get("value")))
        elif kind in ("move", "copy"):
            source = _pointer(str(op.get("from", "")))
            value = copy.deepcopy(_walk(doc, source))
            if kind == "move":
                _remove(doc, source)
            doc = _add(doc, parts, value)
        elif kind == "test":
            if _walk(doc, parts) != op.get("value"):
                raise KubeStatus(422, "Invalid", f"testing value /{'/'.join(parts)} failed")
        else:
            raise bad_request(f"unknown JSON patch operation {kind!r}")
    return doc
