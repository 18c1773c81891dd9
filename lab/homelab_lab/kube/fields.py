"""Managed fields and server-side apply, in the structured-merge-diff model.

A field set is a set of paths; a path is a tuple of fieldsV1 elements: ``f:name`` (a field or
map key), ``k:{"name":"app"}`` (a list item by its map keys), ``v:"x"`` (a set item), ``i:0``.
:func:`apply` merges an applied configuration into the live object for one field manager,
refusing with 409 Conflict what another manager owns; :func:`record_update` gives a
non-apply writer the fields it changed.
"""

from __future__ import annotations

import copy
import datetime
import json
from collections.abc import Iterable
from typing import Any

from homelab_lab.errors import KubeStatus
from homelab_lab.kube import schema
from homelab_lab.kube.schema import Json

Path = tuple[str, ...]
FieldSet = frozenset[Path]
_KEY_DEFAULTS = {"protocol": "TCP"}
_META_KEPT = ("labels", "annotations", "finalizers", "ownerReferences")
_ABSENT = object()


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _key_element(item: Json, keys: list[str]) -> str:
    values = {k: item.get(k, _KEY_DEFAULTS.get(k)) for k in keys}
    return "k:" + json.dumps({k: v for k, v in values.items() if v is not None}, separators=(",", ":"), sort_keys=True)


def _walk_set(value: Any, node: Json | None, prefix: Path, out: set[Path]) -> None:
    if isinstance(value, dict) and value:
        for key, sub in value.items():
            _walk_set(sub, schema.child(node, key) if node is not None else None, (*prefix, f"f:{key}"), out)
        return
    if isinstance(value, list) and node is not None and value:
        kind = schema.list_type(node)
        if kind == "map":
            keys, elem = schema.map_keys(node), schema.items(node)
            for item in value:
                if isinstance(item, dict):
                    path = (*prefix, _key_element(item, keys))
                    out.add(path)
                    _walk_set(item, elem, path, out)
            return
        if kind == "set":
            for item in value:
                out.add((*prefix, "v:" + json.dumps(item, separators=(",", ":"))))
            return
    out.add(prefix)


def field_set(obj: Json, root: Json, subresource: str = "") -> FieldSet:
    """The paths set in obj (status only for the status subresource; metadata identity left out)."""
    out: set[Path] = set()
    for key, value in obj.items():
        if key in ("apiVersion", "kind"):
            continue
        if (key == "status") != (subresource == "status"):
            continue
        if key == "metadata":
            meta_node = schema.child(root, "metadata")
            for mk in _META_KEPT:
                if mk in (value or {}):
                    _walk_set(value[mk], schema.child(meta_node or {}, mk), ("f:metadata", f"f:{mk}"), out)
            continue
        _walk_set(value, schema.child(root, key), (f"f:{key}",), out)
    return frozenset(out)


def to_fields_v1(paths: Iterable[Path]) -> Json:
    """The fieldsV1 trie of a set of paths."""
    trie: Json = {}
    for path in sorted(paths):
        node = trie
        for element in path:
            node = node.setdefault(element, {})
        if path and path[-1][:2] in ("k:", "v:", "i:"):
            node.setdefault(".", {})
    return trie


def from_fields_v1(trie: Json, prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    for key, sub in trie.items():
        if key == ".":
            out.add(prefix)
        elif not sub:
            out.add((*prefix, key))
        else:
            out |= from_fields_v1(sub, (*prefix, key))
    return out


def _value_at(obj: Any, path: Path) -> Any:
    for element in path:
        kind, _, rest = element.partition(":")
        if kind == "f":
            if not isinstance(obj, dict) or rest not in obj:
                return _ABSENT
            obj = obj[rest]
        elif kind == "k":
            want = json.loads(rest)
            if not isinstance(obj, list):
                return _ABSENT
            obj = next(
                (
                    x
                    for x in obj
                    if isinstance(x, dict) and all(x.get(k, _KEY_DEFAULTS.get(k)) == v for k, v in want.items())
                ),
                _ABSENT,
            )
            if obj is _ABSENT:
                return obj
        elif kind == "v":
            want = json.loads(rest)
            return want if isinstance(obj, list) and want in obj else _ABSENT
        elif kind == "i":
            if not isinstance(obj, list) or int(rest) >= len(obj):
                return _ABSENT
            obj = obj[int(rest)]
    return obj


def _remove_at(obj: Any, path: Path) -> None:
    parent = _value_at(obj, path[:-1])
    last = path[-1]
    kind, _, rest = last.partition(":")
    if kind == "f" and isinstance(parent, dict):
        parent.pop(rest, None)
    elif kind == "k" and isinstance(parent, list):
        want = json.loads(rest)
        parent[:] = [
            x
            for x in parent
            if not (isinstance(x, dict) and all(x.get(k, _KEY_DEFAULTS.get(k)) == v for k, v in want.items()))
        ]
    elif kind == "v" and isinstance(parent, list):
        want = json.loads(rest)
        parent[:] = [x for x in parent if x != want]


def display(path: Path) -> str:
    """A path as Kubernetes prints it in conflicts: ``.spec.containers[name="app"].image``."""
    out = ""
    for element in path:
        kind, _, rest = element.partition(":")
        if kind == "f":
            out += f".{rest}"
        elif kind == "k":
            keys = json.loads(rest)
            out += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in keys.items()) + "]"
        elif kind == "v":
            out += f"[={rest}]"
        else:
            out += f"[{rest}]"
    return out


def _merge(live: Any, applied: Any, node: Json | None) -> Any:
    """Structured merge of an applied configuration into live."""
    if isinstance(applied, dict) and isinstance(live, dict):
        out = dict(live)
        for key, value in applied.items():
            out[key] = _merge(live.get(key), value, schema.child(node, key) if node is not None else None)
        return out
    if isinstance(applied, list) and isinstance(live, list) and node is not None:
        kind = schema.list_type(node)
        if kind == "map":
            keys, elem = schema.map_keys(node), schema.items(node)
            merged = list(live)
            for item in applied:
                if not isinstance(item, dict):
                    continue
                k = _key_element(item, keys)
                at = next((i for i, x in enumerate(merged) if isinstance(x, dict) and _key_element(x, keys) == k), None)
                if at is None:
                    merged.append(copy.deepcopy(item))
                else:
                    merged[at] = _merge(merged[at], item, elem)
            return merged
        if kind == "set":
            return list(live) + [copy.deepcopy(x) for x in applied if x not in live]
    return copy.deepcopy(applied)


def _entries(obj: Json) -> list[Json]:
    return list(obj.get("metadata", {}).get("managedFields") or [])


def _entry_set(entry: Json) -> set[Path]:
    return from_fields_v1(entry.get("fieldsV1") or {})


def _same(entry: Json, manager: str, operation: str, subresource: str) -> bool:
    return (
        entry.get("manager") == manager
        and entry.get("operation") == operation
        and (entry.get("subresource") or "") == subresource
    )


def _entry(
    manager: str, operation: str, api_version: str, paths: Iterable[Path], subresource: str, time: str | None = None
) -> Json:
    out: Json = {
        "manager": manager,
        "operation": operation,
        "apiVersion": api_version,
        "time": time or now(),
        "fieldsType": "FieldsV1",
        "fieldsV1": to_fields_v1(paths),
    }
    if subresource:
        out["subresource"] = subresource
    return out


def conflict_error(conflicts: dict[str, list[Path]], api_versions: dict[str, str], own_version: str) -> KubeStatus:
    """The 409 Conflict apply answers, naming each manager and its fields, as the apiserver words it."""
    total = sum(len(p) for p in conflicts.values())
    parts, causes = [], []
    for manager, paths in conflicts.items():
        shown = sorted(display(p) for p in paths)
        using = f" using {api_versions[manager]}" if api_versions.get(manager, own_version) != own_version else ""
        if len(shown) == 1:
            parts.append(f'conflict with "{manager}"{using}: {shown[0]}')
        else:
            parts.append(f'conflicts with "{manager}"{using}:\n' + "\n".join(f"- {s}" for s in shown))
        causes += [
            {"reason": "FieldManagerConflict", "message": f'conflict with "{manager}"{using}', "field": s}
            for s in shown
        ]
    plural = "s" if total != 1 else ""
    message = f"Apply failed with {total} conflict{plural}: " + "\n".join(parts)
    return KubeStatus(409, "Conflict", message, {"causes": causes})


def apply(live: Json | None, applied: Json, root: Json, manager: str, force: bool, subresource: str = "") -> Json:
    """The object after ``manager`` applies ``applied`` (managedFields included); live is not changed.

    Raises:
        KubeStatus: 409 Conflict when another manager owns a field this apply changes, unless force.
    """
    base: Json = copy.deepcopy(live) if live is not None else {"metadata": {}}
    api_version = str(applied.get("apiVersion") or base.get("apiVersion") or "")
    new = field_set(applied, root, subresource)
    entries = _entries(base)
    mine = next((e for e in entries if _same(e, manager, "Apply", subresource)), None)
    conflicts: dict[str, list[Path]] = {}
    versions: dict[str, str] = {}
    others: list[tuple[Json, set[Path]]] = []
    for entry in entries:
        if entry is mine:
            continue
        owned = _entry_set(entry)
        clash = [
            p for p in owned & new if p[-1][:2] not in ("k:", "v:") and _value_at(base, p) != _value_at(applied, p)
        ]
        if clash and (entry.get("subresource") or "") == subresource:
            if force:
                owned -= set(clash)
            else:
                conflicts.setdefault(str(entry.get("manager")), []).extend(clash)
                versions[str(entry.get("manager"))] = str(entry.get("apiVersion") or "")
        others.append((entry, owned))
    if conflicts:
        raise conflict_error(conflicts, versions, api_version)
    # Fields this manager applied before and no longer does, owned by nobody else: removed.
    previous = _entry_set(mine) if mine is not None else set()
    kept_by_others: set[Path] = set().union(*(owned for _, owned in others)) if others else set()
    gone = previous - new - kept_by_others
    result: Json = _merge(base, {k: v for k, v in applied.items() if k != "metadata"}, root)
    meta = dict(result.get("metadata") or {})
    for mk in _META_KEPT:
        if mk in (applied.get("metadata") or {}):
            meta[mk] = _merge(
                meta.get(mk), applied["metadata"][mk], schema.child(schema.child(root, "metadata") or {}, mk)
            )
    result["metadata"] = meta
    for path in sorted(gone, key=len, reverse=True):
        if not any(len(o) > len(path) and o[: len(path)] == path for o in kept_by_others | new):
            _remove_at(result, path)
    _prune_empty(result, gone)
    same_set = mine is not None and previous == set(new)
    time = str(mine.get("time")) if same_set and mine is not None else None
    own = _entry(manager, "Apply", api_version, new, subresource, time)
    kept = {id(entry): owned for entry, owned in others}
    managed = []
    for entry in entries:
        if entry is mine:
            managed.append(own)
        elif kept.get(id(entry)):
            owned = kept[id(entry)]
            managed.append(entry if owned == _entry_set(entry) else {**entry, "fieldsV1": to_fields_v1(owned)})
    if mine is None:
        managed.append(own)
    result["metadata"]["managedFields"] = managed
    return result


def _prune_empty(obj: Json, gone: set[Path]) -> None:
    """Maps left empty by removals (labels: {}) are dropped, as structured merge drops them."""
    for path in gone:
        for cut in range(len(path) - 1, 0, -1):
            parent = _value_at(obj, path[:cut])
            if isinstance(parent, dict | list) and not parent and path[cut - 1].startswith("f:"):
                _remove_at(obj, path[:cut])
            else:
                break


def record_update(old: Json | None, new: Json, root: Json, manager: str, subresource: str = "") -> None:
    """Give ``manager`` (operation Update) the fields new changes from old; writes new's managedFields."""
    entries = _entries(old) if old is not None else _entries(new)
    after = field_set(new, root, subresource)
    removed: set[Path] = set()
    if old is None:
        changed = set(after)
    else:
        before = field_set(old, root, subresource)
        changed = {p for p in after if _value_at(old, p) != _value_at(new, p)}
        removed = set(before - after)
    if not changed and not removed:
        new.setdefault("metadata", {})["managedFields"] = entries
        return
    mine = next((e for e in entries if _same(e, manager, "Update", subresource)), None)
    owned_now = ((_entry_set(mine) if mine is not None else set()) | changed) - removed
    owned_now = {p for p in owned_now if p in after}
    own = _entry(manager, "Update", str(new.get("apiVersion") or ""), owned_now, subresource) if owned_now else None
    managed: list[Json] = []
    for entry in entries:
        if entry is mine:
            if own is not None:
                managed.append(own)
            continue
        owned = _entry_set(entry)
        if (entry.get("subresource") or "") == subresource:
            owned -= changed | removed
        if owned:
            managed.append(entry if owned == _entry_set(entry) else {**entry, "fieldsV1": to_fields_v1(owned)})
    if mine is None and own is not None:
        managed.append(own)
    new.setdefault("metadata", {})["managedFields"] = managed
