"""pytest plugin: the rehearsal lab for the session (``pytest_plugins = ["tests.lab_fixtures"]``).

The ``lab`` fixture loads ``parameters/lab.yaml``, brings the lab up (reusing
whatever already runs) and yields its inventory. nbval's notebook cells cannot
request fixtures, so the first notebook cell brings the lab up the same way.
At the end of the session the lab is taken down only if the session started
it: a developer's running lab (its processes up before the session) survives.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import homelab_lab as lab_api
from homelab_lib.inventory import Inventory, load_inventory

LAB_FILE = Path(__file__).resolve().parent.parent / "parameters" / "lab.yaml"
os.environ["HOMELAB_HEADLESS"] = "1"  # kernels started by nbval show progress as lines, not widgets


class _LabSession:
    """Brings the lab up once per session; remembers whether it must take it down."""

    def __init__(self) -> None:
        self.inv: Inventory | None = None
        self.started = False

    def ensure(self) -> Inventory:
        if self.inv is None:
            inv = load_inventory(LAB_FILE)
            was_running = any(p.state == "up" for p in lab_api.status(inv) if p.part in ("proxmox", "ssh"))
            lab_api.up(inv)
            self.inv, self.started = inv, not was_running
        return self.inv

    def finish(self) -> None:
        if self.inv is not None and self.started and not os.environ.get("HOMELAB_KEEP_LAB"):
            lab_api.down(self.inv)
        self.inv = None


_session = _LabSession()


@pytest.fixture(scope="session")
def lab() -> Inventory:
    """The rehearsal lab's inventory, with the lab up for the whole session (down at session end)."""
    return _session.ensure()


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.nodeid.split("::")[0].endswith(".ipynb"):
        _session.ensure()


def pytest_sessionfinish(session: pytest.Session) -> None:
    _session.finish()
