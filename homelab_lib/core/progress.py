"""Progress for long work: a bar per task in JupyterLab, plain lines headless.

Library functions take a :class:`Progress` (default: :func:`auto`); notebooks
need not care which one they get. Headless runs (papermill, nbval, the CLI)
print one line per step so the archived notebook and the log show what happened.

Which one :func:`auto` picks is decided by the request that runs the current
cell: a front end a person uses (JupyterLab, Notebook, VS Code) sends its
execute requests with ``allow_stdin`` true, since it can answer ``input()``;
executors without a person (papermill and nbclient, nbval) send false. So a
plain ``papermill`` run gets lines without any environment variable.
``HOMELAB_HEADLESS=1`` still forces lines.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Protocol, TextIO


class Task(Protocol):
    def advance(self, note: str = "") -> None: ...
    def done(self, note: str = "") -> None: ...


class Progress(Protocol):
    def task(self, name: str, total: int) -> Task: ...


class _LineTask:
    def __init__(self, out: TextIO, lock: threading.Lock, name: str, total: int) -> None:
        self._out, self._lock, self.name, self.total, self.count = out, lock, name, total, 0

    def advance(self, note: str = "") -> None:
        with self._lock:
            self.count += 1
            print(f"[{self.name}] {self.count}/{self.total} {note}".rstrip(), file=self._out, flush=True)

    def done(self, note: str = "") -> None:
        with self._lock:
            print(f"[{self.name}] done {note}".rstrip(), file=self._out, flush=True)


class Lines:
    """Progress as plain lines (headless runs, logs); thread-safe."""

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out or sys.stdout
        self._lock = threading.Lock()

    def task(self, name: str, total: int) -> Task:
        return _LineTask(self._out, self._lock, name, total)


class _WidgetTask:
    def __init__(self, name: str, total: int) -> None:
        import ipywidgets
        from IPython.display import display

        self._lock = threading.Lock()
        self.count = 0
        self.bar = ipywidgets.IntProgress(value=0, min=0, max=max(total, 1), description=name[:20])
        self.label = ipywidgets.Label("")
        display(ipywidgets.HBox([self.bar, self.label]))  # type: ignore[no-untyped-call]

    def advance(self, note: str = "") -> None:
        with self._lock:
            self.count += 1
            self.bar.value = self.count
            self.label.value = note

    def done(self, note: str = "") -> None:
        with self._lock:
            self.bar.value = self.bar.max
            self.bar.bar_style = "success"
            self.label.value = note or "done"


class Widgets:
    """Progress as ipywidgets bars, one per task (interactive JupyterLab)."""

    def task(self, name: str, total: int) -> Task:
        return _WidgetTask(name, total)


def interactive() -> bool:
    """True when a person's front end runs the current cell: widgets can be seen there.

    False outside a Jupyter kernel, when ``HOMELAB_HEADLESS`` is set (not ``0``), and when the
    request running the cell does not allow stdin: papermill, nbclient and nbval send
    ``allow_stdin: false`` (no one is there to answer), JupyterLab, Notebook and VS Code true.
    """
    if os.environ.get("HOMELAB_HEADLESS", "0") not in ("", "0"):
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    kernel = getattr(shell, "kernel", None)
    if kernel is None or type(shell).__name__ != "ZMQInteractiveShell":
        return False
    return _allows_stdin(kernel)


def _allows_stdin(kernel: object) -> bool:
    """Whether the execute request that runs the current cell allows stdin (a front end a person uses)."""
    get_parent = getattr(kernel, "get_parent", None)
    if callable(get_parent):
        try:
            content = get_parent("shell").get("content") or {}
        except Exception:  # an older or other kernel: fall back on what it recorded
            content = {}
        if "allow_stdin" in content:
            return bool(content["allow_stdin"])
    return bool(getattr(kernel, "_allow_stdin", False))


def auto() -> Progress:
    """Widgets in an interactive notebook, lines everywhere else."""
    return Widgets() if interactive() else Lines()
