"""Load parameter files into an :class:`Inventory`, with file:line on every problem.

Files are read with ruamel.yaml, which keeps the line of every key and item.
Several files may be layered: a later file's top-level key replaces the
earlier one's whole (a base file plus a site file, say). The built-in service
catalog is merged field by field under the inventory's ``services:``.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from homelab_lib.core.errors import ConfigError, Problem, SecretError
from homelab_lib.core.secrets import REF_PATTERN, SECRET_NAME, SecretRef, SecretStatus, check_secret
from homelab_lib.inventory.checks import check
from homelab_lib.inventory.model import Inventory
from homelab_lib.inventory.placement import apply_moves, read_moves

CATALOG = Path(__file__).with_name("catalog.yaml")
FIELDWISE = ("healthcheck", "resources", "backup")  # service keys whose override is merged field by field
PATH_KEYS = {
    "ca_file", "known_hosts", "public_key", "kubeconfig", "state_dir", "allowed_signers", "binary", "install_script",
    "placement_file", "witness",
}  # fmt: skip
Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Where:
    file: str
    line: int


class LineIndex:
    """Maps a key path (as pydantic writes ``loc``) to the file and line it came from."""

    def __init__(self) -> None:
        self._at: dict[Loc, Where] = {}

    def add(self, loc: Loc, where: Where) -> None:
        self._at[loc] = where

    def drop(self, prefix: Loc) -> None:
        n = len(prefix)
        for loc in [loc for loc in self._at if loc[:n] == prefix]:
            del self._at[loc]

    def copy_from(self, other: LineIndex, src: Loc, dst: Loc, *, overwrite: bool = True) -> None:
        n = len(src)
        for loc, where in other._at.items():
            if loc[:n] == src and (overwrite or dst + loc[n:] not in self._at):
                self._at[dst + loc[n:]] = where

    def find(self, loc: Loc) -> Where:
        """The nearest known place for loc: itself, or its closest ancestor."""
        for n in range(len(loc), -1, -1):
            if loc[:n] in self._at:
                return self._at[loc[:n]]
        return Where("?", 0)

    def problem(self, loc: Loc, message: str) -> Problem:
        w = self.find(loc)
        return Problem(w.file, w.line, dotted(loc), message)


def dotted(loc: Iterable[str | int]) -> str:
    """('vms', 2, 'memory_mib') -> 'vms[2].memory_mib'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def plain(node: Any, loc: Loc, file: str, index: LineIndex, line: int = 1) -> Any:
    """ruamel's round-trip nodes as plain dicts and lists, recording each key's and item's line in index.

    A key merged in by ``<<:`` has no line of its own: it gets its map's line (or line, the parent's).
    """
    if isinstance(node, CommentedMap):
        out = {}
        own = node.lc.line + 1 if node.lc.line is not None else line
        for k, v in node.items():
            try:
                at = node.lc.key(k)[0] + 1
            except (KeyError, TypeError):
                at = own  # merged from an anchor: no line of its own here
            index.add((*loc, str(k)), Where(file, at))
            out[str(k)] = plain(v, (*loc, str(k)), file, index, at)
        return out
    if isinstance(node, CommentedSeq):
        items = []
        for i, v in enumerate(node):
            try:
                at = node.lc.item(i)[0] + 1
            except (KeyError, TypeError, IndexError):
                at = line
            index.add((*loc, i), Where(file, at))
            items.append(plain(v, (*loc, i), file, index, at))
        return items
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    return node


def read_yaml(path: Path, index: LineIndex, loc: Loc = ()) -> Any:
    """Read one YAML file into plain data, adding its lines to index.

    Raises:
        ConfigError: the file is missing or is not valid YAML (with the line of the fault).
    """
    shown = shown_path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError([Problem(shown, 0, "", f"cannot read the file ({e.strerror})")]) from None
    yaml = YAML(typ="rt")
    try:
        data = yaml.load(text)
    except DuplicateKeyError:
        raise ConfigError([duplicate_key(text, shown)]) from None
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 0
        what = " ".join(str(x) for x in (e.context, e.problem) if x)
        raise ConfigError([Problem(shown, line, "", f"YAML syntax error: {what}")]) from None
    except YAMLError as e:
        raise ConfigError([Problem(shown, 0, "", f"YAML error: {e}")]) from None
    index.add(loc, Where(shown, 1))
    return plain(data, loc, shown, index)


def duplicate_key(text: str, shown: str) -> Problem:
    """The first key written twice in one mapping of text: its path and both lines, and the fix; no value.

    ruamel's own message quotes both values whole (a mapping of secrets, say), so it is not shown.
    """
    found = _first_duplicate(YAML(typ="rt").compose(text), ())
    if found is None:  # not expected: ruamel found one; say so without its message
        return Problem(shown, 0, "", "duplicate key in a mapping (YAML would keep only one of them); remove one")
    loc, key, first, again = found
    path = dotted((*loc, key))
    return Problem(
        shown,
        again,
        path,
        f"duplicate key '{key}': first at {shown}:{first}, again at {shown}:{again} (YAML would keep only "
        f"one of them); merge the two into one '{key}:' or remove one",
    )


def _first_duplicate(node: Node | None, loc: Loc) -> tuple[Loc, str, int, int] | None:
    """(path of the mapping, key, first line, second line) of the first repeated key under node, in file order."""
    if isinstance(node, MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, ScalarNode) else "(a complex key)"
            line = key_node.start_mark.line + 1
            if key in seen and key != "<<":
                return loc, key, seen[key], line
            seen.setdefault(key, line)
            found = _first_duplicate(value_node, (*loc, key))
            if found is not None:
                return found
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            found = _first_duplicate(item, (*loc, i))
            if found is not None:
                return found
    return None


def shown_path(path: Path) -> str:
    """A path as messages show it: relative to the working folder when under it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _absolutize(data: Any, loc: Loc, index: LineIndex, files: dict[str, Path]) -> Any:
    """Make relative paths (path keys and ``file:`` refs) relative to the file they were written in."""
    if isinstance(data, dict):
        return {k: _absolutize(v, (*loc, k), index, files) for k, v in data.items()}
    if isinstance(data, list):
        return [_absolutize(v, (*loc, i), index, files) for i, v in enumerate(data)]
    if isinstance(data, str) and loc:
        base = files.get(index.find(loc).file)
        if base is None:
            return data
        if loc[-1] in _secret_keys() and REF_PATTERN.match(data.strip()):
            try:
                return SecretRef.parse(data, base.parent)  # relative file: refs are relative to their file
            except ValueError:
                return data  # pydantic reports it, with its line
        if loc[-1] in PATH_KEYS:
            p = Path(data).expanduser()
            return data if p.is_absolute() else str((base.parent / p).resolve())
    return data


@functools.cache
def _secret_keys() -> frozenset[str]:
    """Names of the model's fields that hold secret references."""
    found: set[str] = set()
    seen: set[type[BaseModel]] = set()

    def walk(model: type[BaseModel]) -> None:
        if model in seen:
            return
        seen.add(model)
        for name, field in model.model_fields.items():
            if "SecretRef" in str(field.annotation):
                found.add(name)
            sub = _model_of(field.annotation)
            if sub:
                walk(sub)

    walk(Inventory)
    return frozenset(found)


def _message(err: Any, model_keys: list[str]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        key = str(err["loc"][-1])
        close = difflib.get_close_matches(key, model_keys, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        allowed = ", ".join(model_keys)
        return f"unknown key '{key}'{hint} (allowed here: {allowed})"
    if kind == "missing":
        return "required key is missing; add it"
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    given = err.get("input")
    if not under_secret(tuple(err["loc"])) and not isinstance(given, dict | list):
        msg += f" (got {given!r})"
    return msg


def under_secret(loc: Loc) -> bool:
    """True when loc is, or lies under, a key that holds a secret: a field typed as a secret
    reference (``token_secret``, ``ref``), a service's ``secrets:``, or any key named like a secret.
    Messages never echo a value found there: it may be the secret itself, written where a
    reference belongs."""
    return any(isinstance(part, str) and (part in _secret_keys() or SECRET_NAME.search(part)) for part in loc)


def _fields_at(loc: Loc) -> list[str]:
    """Allowed keys of the model that loc's parent is (for unknown-key messages)."""
    model: type[BaseModel] | None = Inventory
    keyed = 0  # parts of loc still to come that are list indexes or mapping keys, not fields
    for part in loc[:-1]:
        if model is None:
            return []
        if keyed:
            keyed -= 1
            continue
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return []
        keyed = _container_depth(field.annotation)
        model = _model_of(field.annotation)
    if model is None or keyed:
        return []
    return [k for k in model.model_fields if k != "source_files"]


def _container_depth(annotation: Any) -> int:
    """How many list indexes or mapping keys stand between a field and the model it holds
    (``dict[str, Service]``: 1; ``list[Vm]``: 1; ``Proxmox | None``: 0)."""
    origin = getattr(annotation, "__origin__", None)
    args = [a for a in getattr(annotation, "__args__", ()) if a is not type(None)]
    if origin in (dict, list, tuple) and args:
        return 1 + _container_depth(args[-1])
    if len(args) == 1 or (origin is not None and origin not in (dict, list, tuple) and args):
        return max(_container_depth(a) for a in args)
    return 0


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found:
            return found
    return None


def load_inventory(files: str | Path | Sequence[str | Path], *, check_secrets: bool = False) -> Inventory:
    """Load and validate one or more parameter files.

    Args:
        files: a parameter file, or several layered in order.
        check_secrets: also check that every secret reference resolves (values are not kept).

    Returns:
        The validated, frozen inventory.

    Raises:
        ConfigError: with one Problem (file:line, key path, fix) per fault; SecretError when
            only secret references failed.
    """
    inv, index = _load(files)
    if check_secrets:
        unresolved = [status.as_problem() for status in _check_secrets(inv, index) if not status.resolves]
        if unresolved:
            raise SecretError(_sorted(unresolved))
    return inv


def secret_readiness(files: str | Path | Sequence[str | Path]) -> tuple[Inventory, list[SecretStatus]]:
    """Load and validate parameter files, then try every secret reference (values are not kept).

    Returns:
        The inventory, and one status per reference in inventory order: resolves or not, the
        file:line it is written at, and what to do when it does not.

    Raises:
        ConfigError: the files do not validate (secret references that do not resolve are not errors here).
    """
    inv, index = _load(files)
    return inv, _check_secrets(inv, index)


def _check_secrets(inv: Inventory, index: LineIndex) -> list[SecretStatus]:
    out = []
    for key_path, ref in inv.secrets():
        parts = key_path.replace("[", ".").replace("]", "").split(".")
        where = index.find(tuple(int(p) if p.isdigit() else p for p in parts))
        out.append(check_secret(key_path, ref, where.file, where.line))
    return out


def _load(files: str | Path | Sequence[str | Path]) -> tuple[Inventory, LineIndex]:
    paths = [Path(files)] if isinstance(files, str | Path) else [Path(f) for f in files]
    if not paths:
        raise ConfigError([Problem("(none)", 0, "", "no parameter file given; pass one, e.g. parameters/lab.yaml")])
    index = LineIndex()
    merged: dict[str, Any] = {}
    known: dict[str, Path] = {}
    for path in paths:
        part = LineIndex()
        data = read_yaml(path, part)
        known[shown_path(path)] = path.resolve()
        if not isinstance(data, dict):
            raise ConfigError(
                [Problem(shown_path(path), 1, "", "the file must be a mapping of keys (name:, nodes:, ...)")]
            )
        for key, value in data.items():
            merged[key] = value
            index.drop((key,))
            index.copy_from(part, (key,), (key,))
        index.add((), Where(shown_path(path), 1))

    catalog_index = LineIndex()
    catalog = read_yaml(CATALOG, catalog_index)
    known[shown_path(CATALOG)] = CATALOG
    own = merged.get("services")
    if own is None:
        own = {}
    if isinstance(own, dict):
        services: dict[str, Any] = {}
        for name, entry in catalog.items():
            services[name] = dict(entry)
            index.copy_from(catalog_index, (name,), ("services", name), overwrite=False)
        for name, entry in own.items():
            base = services.get(name, {})
            if isinstance(entry, dict):
                merged_entry = {**base, **entry}
                for key in FIELDWISE:  # an override of these keeps the catalog's other fields
                    if isinstance(base.get(key), dict) and isinstance(entry.get(key), dict):
                        merged_entry[key] = {**base[key], **entry[key]}
                services[name] = merged_entry
            else:
                services[name] = entry
        merged["services"] = services
    merged = _absolutize(merged, (), index, known)
    if isinstance(merged.get("placement_file"), str):  # runbook 05's recorded moves
        merged = apply_moves(merged, read_moves(Path(merged["placement_file"])))
    merged["source_files"] = tuple(p.resolve() for p in paths)

    try:
        inv = Inventory.model_validate(merged)
    except ValidationError as e:
        problems = [
            index.problem(tuple(err["loc"]), _message(err, _fields_at(tuple(err["loc"])))) for err in e.errors()
        ]
        raise ConfigError(_sorted(problems)) from None

    problems = check(inv, index.problem)
    if problems:
        raise ConfigError(_sorted(problems))
    return inv, index


def _sorted(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.file, p.line, p.path))
