"""The one exception tree of homelab_lib.

Every error says what failed, where (file:line, node, VM, service) and what to
do. Errors from outside libraries (proxmoxer, docker, kubernetes, papermill)
are translated at the adapter boundary with ``raise ... from e``.

    HomelabError
    ├── ConfigError                 bad parameters: YAML, types, unknown keys, capacity
    │   └── SecretError             a secret reference that does not resolve
    ├── RunError                    the runner: a notebook that failed, a lock held
    │   ├── NotebookFailed          a cell raised; carries the cell index and exception
    │   ├── LockHeld                another run against the same homelab is under way
    │   └── SecretLeak              a resolved secret value was found in a notebook
    ├── AuditError                  the audit archive: a record or file altered or removed
    ├── LabError                    the rehearsal lab could not start, stop or be reached
    └── AdapterError                an outside system answered with an error
"""

from __future__ import annotations

from dataclasses import dataclass


class HomelabError(Exception):
    """Root of every error homelab_lib raises.

    Args:
        message: what failed, in one sentence.
        where: where it failed (``file:line``, node, VM, service); may be empty.
        hint: what to do about it; may be empty.
    """

    def __init__(self, message: str, *, where: str = "", hint: str = "") -> None:
        self.message = message
        self.where = where
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f" ({self.hint})"
        return text


@dataclass(frozen=True)
class Problem:
    """One problem found in a parameter file.

    Attributes:
        file: the parameter file.
        line: 1-based line of the offending key or value (0 when unknown).
        path: dotted key path, e.g. ``vms[2].memory_mib``.
        message: what is wrong and what to do.
    """

    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(HomelabError):
    """The parameters are wrong; ``problems`` lists each one with its file:line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        lines = "\n".join(str(p) for p in problems)
        super().__init__(f"{len(problems)} problem(s) in the parameters:\n{lines}")

    def __str__(self) -> str:
        return self.message


class SecretError(ConfigError):
    """A secret reference (``env:NAME`` or ``file:PATH``) does not resolve."""


class RunError(HomelabError):
    """A runbook run could not start or did not finish."""


class NotebookFailed(RunError):
    """A notebook cell raised.

    Attributes:
        cell: index of the failing cell (execution order, 0-based among all cells).
        ename: the exception's class name.
        evalue: the exception's message (secrets redacted).
    """

    def __init__(self, notebook: str, cell: int | None, ename: str, evalue: str, archived: str) -> None:
        self.cell = cell
        self.ename = ename
        self.evalue = evalue
        self.archived = archived
        at = f"cell {cell}" if cell is not None else "an unknown cell"
        super().__init__(
            f"{ename}: {evalue}",
            where=f"{notebook} {at}",
            hint=f"the executed notebook is archived at {archived}",
        )


class LockHeld(RunError):
    """Another run against the same homelab holds the lock."""


class SecretLeak(RunError):
    """A resolved secret value appeared in an executed notebook; it was not archived."""


class AuditError(HomelabError):
    """The audit archive does not verify: a record or file was altered or removed."""


class LabError(HomelabError):
    """The rehearsal lab could not be started, stopped or reached."""


class AdapterError(HomelabError):
    """An outside system (Proxmox, Docker, Kubernetes, SSH) answered with an error."""
