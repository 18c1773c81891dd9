"""Read a compose file as Compose does, keeping the line of every key: the converter's input.

A :class:`ComposeFile` is the file parsed (YAML with the line of each key and item), its
variables interpolated (``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}``,
``${VAR:+alt}``, ``$VAR``, ``$$``), checked against the Compose Specification schema and for the
names it uses (a ``depends_on``, volume, secret or config the file does not define). Every problem
is a :class:`~homelab_lib.core.errors.Problem` with the file and line: :class:`ConvertError` carries them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from homelab_lib.compose.validate import schema_errors
from homelab_lib.core.errors import ConvertError, Problem
from homelab_lib.inventory.load import LineIndex, Loc, Where, dotted, plain, shown_path

_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


@dataclass(frozen=True)
class ComposeFile:
    """A compose file, parsed and checked.

    Attributes:
        path: the file ('' when the document was given in memory).
        shown: the file as messages name it.
        document: the interpolated document (plain dicts and lists).
        raw: the document before interpolation (so a value that came from a variable is known).
        project: the Compose project name (top-level ``name:``, else the file's folder).
        base_dir: the folder relative paths (binds, env_file, secret files) are read from.
        lines: key path -> file:line.
        unset: variables the file uses that had no value (interpolated as empty).
    """

    path: str
    shown: str
    document: Mapping[str, Any]
    raw: Mapping[str, Any]
    project: str
    base_dir: Path
    lines: LineIndex = field(repr=False, compare=False)
    unset: tuple[str, ...] = ()

    @property
    def services(self) -> Mapping[str, Any]:
        """The ``services:`` section."""
        services = self.document.get("services") or {}
        assert isinstance(services, dict)
        return services

    def line(self, loc: Loc) -> int:
        """The line of a key path (or of its nearest ancestor); 0 when unknown."""
        return self.lines.find(loc).line

    def where(self, loc: Loc) -> str:
        """``file:line`` of a key path."""
        line = self.line(loc)
        return f"{self.shown}:{line}" if line else self.shown

    def raw_value(self, loc: Loc) -> Any:
        """The value at a key path before interpolation (None when there is none)."""
        node: Any = self.raw
        for part in loc:
            found = (isinstance(node, dict) and part in node) or (
                isinstance(node, list) and isinstance(part, int) and part < len(node)
            )
            if found:
                node = node[part]
            else:
                return None
        return node


def interpolate(text: str, env: Mapping[str, str], unset: set[str], errors: list[str]) -> str:
    """One string with Compose's variable syntax replaced from env (``$$`` becomes ``$``)."""

    def one(m: re.Match[str]) -> str:
        if m.group("escaped"):
            return "$"
        name = m.group("braced") or m.group("named")
        op, arg = m.group("op"), m.group("arg") or ""
        value = env.get(name)
        empty = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in (":-", "-"):
            return arg if (value is None if op == "-" else empty) else str(value)
        if op in (":?", "?"):
            if value is None if op == "?" else empty:
                errors.append(f"variable {name} is required: {arg or 'it is not set'}")
                return ""
            return str(value)
        if op in (":+", "+"):
            return "" if (value is None if op == "+" else empty) else arg
        if value is None:
            unset.add(name)
            return ""
        return value

    return _VAR.sub(one, text)


def _interpolated(node: Any, env: Mapping[str, str], unset: set[str], errors: list[tuple[Loc, str]], loc: Loc) -> Any:
    if isinstance(node, dict):
        return {k: _interpolated(v, env, unset, errors, (*loc, k)) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolated(v, env, unset, errors, (*loc, i)) for i, v in enumerate(node)]
    if isinstance(node, str):
        found: list[str] = []
        out = interpolate(node, env, unset, found)
        errors.extend((loc, e) for e in found)
        return out
    return node


def _names(value: Any) -> list[str]:
    """The names a short-or-long list/dict of references gives (depends_on, secrets, configs)."""
    if isinstance(value, dict):
        return [str(k) for k in value]
    if isinstance(value, list):
        return [str(v["source"]) if isinstance(v, dict) else str(v) for v in value]
    return []


def _named_volume(spec: Any) -> str | None:
    """The named volume a service's volume entry uses (None for binds, tmpfs, anonymous volumes)."""
    if isinstance(spec, dict):
        if spec.get("type", "volume") == "volume" and spec.get("source"):
            return str(spec["source"])
        return None
    parts = str(spec).split(":")
    if len(parts) >= 2 and parts[0] and not parts[0].startswith((".", "/", "~", "$")):
        return parts[0]
    return None


def _semantic(doc: Mapping[str, Any], problem: Any) -> None:
    services = doc.get("services") or {}
    if not services:
        problem(("services",), "the file defines no services")
    for name, svc in services.items():
        svc = svc or {}
        if "image" not in svc and "build" not in svc:
            problem(("services", name), f"service {name} has neither image nor build")
        for dep in _names(svc.get("depends_on")):
            if dep not in services:
                problem(("services", name, "depends_on"), f"service {name} depends on {dep}, which is not defined")
        for section in ("secrets", "configs"):
            known = doc.get(section) or {}
            for ref in _names(svc.get(section)):
                if ref not in known:
                    problem(
                        ("services", name, section),
                        f"service {name} uses {section[:-1]} {ref}, which the top-level {section}: does not define",
                    )
        volumes = doc.get("volumes") or {}
        for i, spec in enumerate(svc.get("volumes") or []):
            vol = _named_volume(spec)
            if vol is not None and vol not in volumes:
                problem(
                    ("services", name, "volumes", i),
                    f"service {name} uses volume {vol}, which the top-level volumes: does not define",
                )


def parse_compose(
    text: str, *, env: Mapping[str, str] | None = None, path: str = "", base_dir: Path | None = None
) -> ComposeFile:
    """Parse compose text (see :func:`load_compose`); ``path`` names it in messages.

    Args:
        text: the compose document.
        env: the variables interpolated into it.
        path: how messages name it (default ``compose.yaml``).
        base_dir: the folder relative paths are read from (default: the working folder).

    Raises:
        ConvertError: as :func:`load_compose`.
    """
    return _load(text, env or {}, shown=path or "compose.yaml", base_dir=base_dir or Path.cwd(), path=path)


def load_compose(path: str | Path, *, env: Mapping[str, str] | None = None) -> ComposeFile:
    """Read and check a compose file.

    Args:
        path: the compose file.
        env: the variables interpolated into it (the caller chooses: ``homelab convert`` gives
            the file's ``.env`` and its own environment, as Compose does); none: only defaults apply.

    Returns:
        The file, parsed, interpolated and checked.

    Raises:
        ConvertError: not readable, not YAML, not a mapping, breaks the Compose schema, or names a
            service, volume, secret or config it does not define; each problem with its line.
    """
    path = Path(path)
    shown = shown_path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConvertError(
            [Problem(shown, 0, "", f"cannot read the file ({getattr(e, 'strerror', None) or e})")]
        ) from None
    return _load(text, env or {}, shown=shown, base_dir=path.resolve().parent, path=str(path))


def _load(text: str, env: Mapping[str, str], *, shown: str, base_dir: Path, path: str) -> ComposeFile:
    index = LineIndex()
    raw = _read(text, shown, index)
    if not isinstance(raw, dict):
        raise ConvertError([Problem(shown, 1, "", "a compose file is a mapping with a services: key")])
    problems: list[Problem] = []

    def problem(loc: Loc, message: str) -> None:
        problems.append(Problem(shown, index.find(loc).line, dotted(loc), message))

    unset: set[str] = set()
    errors: list[tuple[Loc, str]] = []
    doc = _interpolated(raw, env, unset, errors, ())
    for loc, message in errors:
        problem(loc, message)
    for loc, _json_path, message in schema_errors(doc):
        problem(loc, message)
    if not problems:
        _semantic(doc, problem)
    if problems:
        raise ConvertError(sorted(problems, key=lambda p: (p.line, p.path)))
    project = str(doc.get("name") or base_dir.name or "default")
    return ComposeFile(path, shown, doc, raw, project, base_dir, index, tuple(sorted(unset)))


def _read(text: str, shown: str, index: LineIndex) -> Any:
    """The text as plain data, the line of every key and item in index (merge keys ``<<:`` resolved).

    Raises:
        ConvertError: the text is not YAML (with the line of the fault).
    """
    try:
        data = YAML(typ="rt").load(text)
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        what = " ".join(str(x) for x in (e.context, e.problem) if x)
        raise ConvertError([Problem(shown, mark.line + 1 if mark else 0, "", f"YAML syntax error: {what}")]) from None
    except YAMLError as e:
        raise ConvertError([Problem(shown, 0, "", f"YAML error: {e}")]) from None
    index.add((), Where(shown, 1))
    return plain(data, (), shown, index)


def read_env_file(path: Path) -> dict[str, str]:
    """A ``.env`` / ``env_file`` file as Compose reads it: ``KEY=value`` lines, ``#`` comments, quotes."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :]
        key, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        out[key.strip()] = value
    return out
