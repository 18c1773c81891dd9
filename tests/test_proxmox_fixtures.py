"""Shared pieces of the Proxmox tests (no tests here): the lab's fakepve, served in this process.

The ``pve_lab`` fixture serves a fresh fakepve built by the lab's own launcher
(:func:`homelab_lab.pve_server.build`, with what it adds to fakepve: disk resize
recorded in the config, a guest agent in clones, API tokens) holding the lab's four
nodes and a cloud-init template on each, exactly as ``homelab lab up`` makes them,
over HTTPS with a certificate from a lab CA made as the lab makes it. Its inventory
(the lab's VMs) points at it and logs in as parameters/lab.yaml does: with the API
token, its secret in a file (the password is there too, for the tests of tickets).
The library talks to it through proxmoxer's real https backend; the test reaches
into the fake for fault switches and for the requests it saw. Time runs at the
``fakepve`` marker's ``time_scale`` (default 0: every task ends before its request
returns, and a started VM's agent answers at once).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fakepve import settle

from homelab_lab import pve_server
from homelab_lab.pve import guests, issue_server_cert
from homelab_lib import clients, proxmox
from homelab_lib.core.contract import ApplyResult
from homelab_lib.core.plan import Action, Plan
from homelab_lib.core.secrets import SecretRef
from homelab_lib.inventory import Inventory, load_inventory
from homelab_lib.inventory.model import Vm
from homelab_lib.proxmox import ProxmoxAdapter, ProxmoxClient

REPO = Path(__file__).resolve().parent.parent
LAB_FILE = REPO / "parameters" / "lab.yaml"
HOST = "127.0.8.1"  # the in-process fakes listen here, each on a port the system picks
PASSWORD = "pve-pass-7c1e9a"  # the fake's root@pam password; must never show up in errors
TOKEN = "3f0c2a9e-5b7d-4e61-a8f4-lab7ok3n5ec1"  # the secret of lab.yaml's API token; never in errors either
PUBKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTheProxmoxTests0000000000 tests@homelab"
START_TIMEOUT_S = 30.0


def lab_inventory() -> Inventory:
    """parameters/lab.yaml, loaded (its secrets are not needed)."""
    return load_inventory(LAB_FILE)


def token_id(inv: Inventory) -> str:
    """The API token an inventory logs in with: ``user@realm!name``."""
    return f"{inv.proxmox.user}!{inv.proxmox.token_id}"


class Served:
    """A server of the lab's launcher on its own event loop in a daemon thread (start() and stop() only)."""

    def __init__(self, pve: pve_server.LabPve, certfile: Path, keyfile: Path) -> None:
        self.pve = pve
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=f"fakepve-{pve.host}", daemon=True)
        self.thread.start()
        try:
            self._call(pve.start(str(certfile), str(keyfile)))
        except BaseException:
            self._halt()
            raise

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(START_TIMEOUT_S)

    def _halt(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(START_TIMEOUT_S)
        if not self.thread.is_alive():
            self.loop.close()

    def stop(self) -> None:
        try:
            self._call(settle())
            self._call(self.pve.stop())
        finally:
            self._halt()


@contextmanager
def lab_server(inv: Inventory, pki: Path, *, time_scale: float = 0.0) -> Iterator[pve_server.LabPve]:
    """The lab's fakepve for inv, built by the launcher as ``homelab lab up`` builds it, served on HOST.

    Its certificate is signed by a lab CA in pki (``pki/ca.pem``), as the lab makes them.
    """
    pve = pve_server.build(
        guests(inv),
        user="root@pam",
        password=PASSWORD,
        host=HOST,
        port=0,
        time_scale=time_scale,
        tokens={token_id(inv): TOKEN},
    )
    certfile, keyfile = issue_server_cert(pki, HOST)
    served = Served(pve, certfile, keyfile)
    try:
        yield pve
    finally:
        served.stop()


class FakeClock:
    """The library's Clock, whose sleep returns at once and moves time on (waits without waiting)."""

    START = datetime(2026, 11, 25, 17, 42, 5, tzinfo=UTC)

    def __init__(self) -> None:
        self.seconds = 0.0
        self.slept = 0.0
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            return self.seconds

    def now(self) -> datetime:
        with self._lock:
            return self.START + timedelta(seconds=self.seconds)

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.seconds += seconds
            self.slept += seconds


class Hook:
    """A Progress that records every step and calls on(vm, note) at each: the tests' fault trigger."""

    def __init__(self, on: Callable[[str, str], None] | None = None) -> None:
        self.on = on
        self.lines: list[str] = []
        self._lock = threading.Lock()

    def task(self, name: str, total: int) -> _HookTask:
        return _HookTask(self, name)


class _HookTask:
    def __init__(self, hook: Hook, name: str) -> None:
        self.hook, self.name = hook, name

    def advance(self, note: str = "") -> None:
        with self.hook._lock:
            self.hook.lines.append(f"{self.name}: {note}")
        if self.hook.on:
            self.hook.on(self.name, note)

    def done(self, note: str = "") -> None:
        with self.hook._lock:
            self.hook.lines.append(f"{self.name}: done {note}".rstrip())


@dataclass
class PveLab:
    """The lab's fakepve served in this process, and an inventory pointing at it."""

    pve: pve_server.LabPve
    base: Inventory
    cafile: str
    tmp: Path
    inv: Inventory = field(init=False)

    def __post_init__(self) -> None:
        (self.tmp / "pve-password").write_text(PASSWORD + "\n")
        (self.tmp / "pve-token").write_text(TOKEN + "\n")
        (self.tmp / "id.pub").write_text(PUBKEY + "\n")
        self.inv = self.configure()

    def configure(self, *, vms: list[Vm] | None = None, ssh: dict[str, Any] | None = None, **px: Any) -> Inventory:
        """The lab inventory pointed at this fake, with proxmox fields (and VMs, ssh fields) replaced.

        It logs in as lab.yaml does, with the API token; ``token_id=None`` makes it use the password.
        """
        updates: dict[str, Any] = {
            "endpoint": self.pve.url,
            "ca_file": Path(self.cafile),
            "token_secret": SecretRef("file", str(self.tmp / "pve-token")),
            "password": SecretRef("file", str(self.tmp / "pve-password")),
            **px,
        }
        proxmox_cfg = self.base.proxmox.model_copy(update=updates)
        ssh_cfg = self.base.ssh.model_copy(update={"public_key": self.tmp / "id.pub", **(ssh or {})})
        return self.base.model_copy(
            update={"proxmox": proxmox_cfg, "ssh": ssh_cfg, "vms": vms if vms is not None else self.base.vms}
        )

    def use(self, **kw: Any) -> Inventory:
        """Reconfigure self.inv (see configure)."""
        self.inv = self.configure(**kw)
        return self.inv

    def client(self, inv: Inventory | None = None) -> ProxmoxClient:
        return clients.proxmox_client(inv or self.inv)

    def adapter(self, inv: Inventory | None = None, only_vms: tuple[str, ...] = ()) -> ProxmoxAdapter:
        """Runbook 01's adapter for inv (default self.inv), as the notebook makes it."""
        return proxmox.adapter(inv or self.inv, only_vms=only_vms)

    def plan(self, inv: Inventory | None = None, only_vms: tuple[str, ...] = ()) -> tuple[proxmox.Desired, Plan]:
        inv = inv or self.inv
        desired = proxmox.desired_state(inv, only_vms=only_vms)
        return desired, proxmox.plan(desired, proxmox.observe(self.client(inv), desired))

    def apply(
        self,
        inv: Inventory | None = None,
        *,
        hook: Hook | None = None,
        confirm: bool = True,
        allow_delete: bool = False,
        only_vms: tuple[str, ...] = (),
        **kw: Any,
    ) -> ApplyResult:
        runbook = self.adapter(inv, only_vms)
        desired = runbook.desired()
        plan = runbook.plan(desired, runbook.observe(desired))
        return runbook.apply(desired, plan, confirm=confirm, allow_delete=allow_delete, progress=hook or Hook(), **kw)

    def mark(self) -> int:
        """A position in the fake's request log."""
        return len(self.pve.requests)

    def writes(self, since: int = 0) -> list[tuple[str, str]]:
        """The requests since a mark that could change something (all but GET and logins)."""
        return [(m, p) for m, p, _ in self.pve.requests[since:] if m != "GET" and not p.endswith("/access/ticket")]


def actions(plan: Plan) -> dict[str, str]:
    """target -> action of a plan."""
    return {c.target: c.action.value for c in plan.changes}


def fields(plan: Plan, target: str) -> set[str]:
    """The field names an update of target changes."""
    return {f.name for c in plan.changes if c.target == target for f in c.fields}


def converged(lab: PveLab, inv: Inventory | None = None) -> Plan:
    """Apply what is left, then check the next plan is all no-ops and makes no writes."""
    lab.apply(inv)
    _, again = lab.plan(inv)
    assert again.empty, again.table().to_string()
    mark = lab.mark()
    result = lab.apply(inv)
    assert not result.applied
    assert lab.writes(mark) == []
    return again


@contextmanager
def make_pve_lab(tmp_path: Path, *, time_scale: float = 0.0) -> Iterator[PveLab]:
    """A fresh lab fakepve (in this process) and its inventory; tests/conftest.py wraps it in ``pve_lab``."""
    inv = lab_inventory()
    pki = tmp_path / "pve"
    with lab_server(inv, pki, time_scale=time_scale) as pve:
        yield PveLab(pve, inv, str(pki / "ca.pem"), tmp_path)


__all__ = [
    "Action",
    "FakeClock",
    "Hook",
    "PveLab",
    "actions",
    "converged",
    "fields",
    "lab_server",
    "make_pve_lab",
    "token_id",
]


ALL = ["docker-drowzee", "docker-sleepy", "docker-hypno", "k3s-nappy"]
