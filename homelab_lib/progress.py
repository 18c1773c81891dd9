"""Progress for long work: a bar per task in JupyterLab, plain lines headless.

Library functions take a :class:`Progress` (default: :func:`auto`); notebooks
need not care which one they get. Headless runs (papermill, the CLI) print one
line per step so the archived notebook and the log show what happened.
"""

from __future__ import annotations

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
        self.count += 1
        with self._lock:
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

        self.bar = ipywidgets.IntProgress(value=0, min=0, max=max(total, 1), description=name[:20])
        self.label = ipywidgets.Label("")
        display(ipywidgets.HBox([self.bar, self.label]))  # type: ignore[no-untyped-call]

    def advance(self, note: str = "") -> None:
        self.bar.value += 1
        self.label.value = note

    def done(self, note: str = "") -> None:
        self.bar.value = self.bar.max
        self.bar.bar_style = "success"
        self.label.value = note or "done"


class Widgets:
    """Progress as ipywidgets bars, one per task (interactive JupyterLab)."""

    def task(self, name: str, total: int) -> Task:
        return _WidgetTask(name, total)


def interactive() -> bool:
    """True inside a Jupyter kernel started by a front end (not by the runner, papermill or nbval)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None or type(shell).__name__ != "ZMQInteractiveShell":
        return False
    import os

    return not os.environ.get("HOMELAB_HEADLESS")  # set by the runner and the tests for their kernels


def auto() -> Progress:
    """Widgets in an interactive notebook, lines everywhere else."""
    return Widgets() if interactive() else Lines()
