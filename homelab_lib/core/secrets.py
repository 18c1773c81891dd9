"""Secret references: ``env:NAME`` and ``file:PATH``, resolved at use, never stored in clear.

Parameter files hold references, never values. A :class:`SecretRef` knows where
its value lives; :meth:`SecretRef.reveal` reads it at the moment of use. Its
``repr`` and ``str`` show the reference only, so a ref can appear in tables,
logs and exceptions. :class:`Redactor` masks resolved values in any text, and
:func:`find_leaks` is the runner's last check before a notebook is archived.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from homelab_lib.core.errors import Problem
from homelab_lib.core.errors import UnresolvedSecret as UnresolvedSecret  # re-exported: it lives in the one error tree

REF_PATTERN = re.compile(r"^(env|file):(.+)$")
MASK = "********"
# Names of notebook parameters or keys whose values are secrets and must be references.
SECRET_NAME = re.compile(r"(pass(word)?|secret|token|api_?key|private_?key|credential)", re.I)


@dataclass(frozen=True)
class SecretRef:
    """Where a secret lives: an environment variable or a file.

    Attributes:
        kind: ``env`` or ``file``.
        target: the variable name, or the file path as written.
        base_dir: folder that a relative ``file:`` path is relative to (the parameter file's folder).
    """

    kind: str
    target: str
    base_dir: Path = field(default=Path("."), compare=False)

    @classmethod
    def parse(cls, text: str, base_dir: Path) -> SecretRef:
        """Parse ``env:NAME`` or ``file:PATH``.

        Raises:
            ValueError: the text is not a reference (a literal secret, say).
        """
        m = REF_PATTERN.match(text.strip())
        if not m:
            raise ValueError(
                "a secret must be a reference, 'env:NAME' or 'file:PATH', never the value itself; "
                "put the value in an environment variable or a file readable only by you"
            )
        kind, target = m.group(1), m.group(2).strip()
        if kind == "env" and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", target):
            raise ValueError(  # the text may be a value pasted after env:, so it is not echoed
                "what follows 'env:' is not an environment variable name (letters, digits and _, "
                "not starting with a digit)"
            )
        return cls(kind, target, base_dir)

    @property
    def path(self) -> Path:
        """The resolved file path of a ``file:`` reference."""
        p = Path(self.target).expanduser()
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    def reveal(self) -> str:
        """Read the secret's value now. Trailing newlines of a file are dropped.

        Raises:
            UnresolvedSecret: the variable is unset or empty, or the file is missing or unreadable.
        """
        if self.kind == "env":
            value = os.environ.get(self.target, "")
            if not value:
                raise UnresolvedSecret(
                    f"environment variable {self.target} is not set",
                    hint=f"export {self.target}=... before the run",
                )
            return value
        try:
            value = self.path.read_text().rstrip("\r\n")
        except OSError as e:
            raise UnresolvedSecret(
                f"secret file {self.path} cannot be read ({e.strerror})",
                hint="create it (mode 600) or fix the path",
            ) from None
        if not value:
            raise UnresolvedSecret(f"secret file {self.path} is empty", hint="write the secret into it")
        return value

    def __str__(self) -> str:
        return f"{self.kind}:{self.target}"

    def __repr__(self) -> str:
        return f"SecretRef('{self}')"


class Redactor:
    """Masks every known secret value in text.

    Values are matched as written and as they appear inside JSON strings, so a
    secret in a notebook's JSON is found as well as in a log line.
    """

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._values: set[str] = set()
        for v in values:
            self.add(v)

    def add(self, value: str) -> None:
        """Remember one secret value."""
        if value:
            self._values.add(value)
            self._values.add(json.dumps(value)[1:-1])

    def __bool__(self) -> bool:
        return bool(self._values)

    def redact(self, text: str) -> str:
        """Return text with every secret value replaced by a mask."""
        for v in sorted(self._values, key=len, reverse=True):
            text = text.replace(v, MASK)
        return text

    def found_in(self, text: str) -> bool:
        """True if any secret value occurs in text."""
        return any(v in text for v in self._values)


def find_leaks(notebook: Mapping[str, object], redactor: Redactor) -> list[str]:
    """Where resolved secret values occur in a notebook (as nbformat JSON).

    Returns:
        A list of places (``cell 3 outputs``, ``metadata``) where a value was found;
        the values themselves are never returned.
    """
    places = []
    cells = notebook.get("cells", [])
    assert isinstance(cells, list)
    for i, cell in enumerate(cells):
        for part in ("source", "outputs", "metadata"):
            if part in cell and redactor.found_in(json.dumps(cell[part])):
                places.append(f"cell {i} {part}")
    if redactor.found_in(json.dumps(notebook.get("metadata", {}))):
        places.append("notebook metadata")
    return places


def literal_secrets(params: Mapping[str, object]) -> list[str]:
    """Names of parameters that look like secrets (by name) and hold a value, not a reference."""
    return [k for k, v in params.items() if SECRET_NAME.search(k) and not (isinstance(v, str) and REF_PATTERN.match(v))]


def redact_params(params: Mapping[str, object]) -> dict[str, object]:
    """Notebook parameters for the audit record: secret-looking names that hold a literal are masked."""
    hidden = set(literal_secrets(params))
    return {k: MASK if k in hidden else v for k, v in params.items()}


@dataclass(frozen=True)
class SecretStatus:
    """Whether one secret reference resolves on this machine now; never its value.

    Attributes:
        key: where in the inventory the reference is (``proxmox.token_secret``).
        reference: the reference as written (``env:PVE_TOKEN_SECRET``).
        file: the parameter file it is written in.
        line: its line there (0 when unknown).
        problem: why it does not resolve ('' when it does).
        fix: what to do about it ('' when it resolves).
    """

    key: str
    reference: str
    file: str
    line: int
    problem: str = ""
    fix: str = ""

    @property
    def resolves(self) -> bool:
        return not self.problem

    @property
    def defined_at(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file

    def as_problem(self) -> Problem:
        """The unresolved reference as a located parameter problem."""
        why = f"{self.problem} ({self.fix})" if self.fix else self.problem
        return Problem(self.file, self.line, self.key, f"secret {self.reference} does not resolve: {why}")


def check_secret(key: str, ref: SecretRef, file: str, line: int) -> SecretStatus:
    """Try to resolve one reference now (the value is dropped at once); its status."""
    try:
        ref.reveal()
    except UnresolvedSecret as e:
        return SecretStatus(key, str(ref), file, line, e.message, e.hint)
    return SecretStatus(key, str(ref), file, line)
