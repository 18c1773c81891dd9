"""Shared pieces of the Proxmox tests (no tests here): a fakepve shaped like the lab, in this process.

The ``pve_lab`` fixture serves a fresh fakepve (fakepve's pytest plugin: HTTPS on
127.0.0.1 with its own CA) holding the lab's four nodes and a cloud-init template
on each, exactly as ``homelab lab up`` makes them, and an inventory (the lab's VMs)
that points at it with a password in a file. The library talks to it through
proxmoxer's real https backend; the test reaches into the fake for fault switches
and for the requests it saw.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fakepve import FakePve

from homelab_lib import clients, proxmox
from homelab_lib.contract import ApplyResult
from homelab_lib.inventory import Inventory, load_inventory
from homelab_lib.inventory.model import Vm
from homelab_lib.lab.pve import guests
from homelab_lib.plan import Action, Plan
from homelab_lib.proxmox import ProxmoxAdapter, ProxmoxClient
from homelab_lib.secrets import SecretRef

REPO = Path(__file__).resolve().parent.parent
LAB_FILE = REPO / "parameters" / "lab.yaml"
PASSWORD = "pve-pass-7c1e9a"  # the fake's root@pam password; must never show up in errors
PUBKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTheProxmoxTests0000000000 tests@homelab"


def lab_inventory() -> Inventory:
    """parameters/lab.yaml, loaded (its secrets are not needed)."""
    return load_inventory(LAB_FILE)


def serve_lab_shape(pve: FakePve, inv: Inventory) -> None:
    """Give the fake the lab's nodes and templates (as homelab_lib.lab.pve makes its guests.json)."""
    pve.nodes.pop("pve1", None)
    pve.password = PASSWORD
    for g in guests(inv)["guests"]:
        pve.add_vm(g["vmid"], g["name"], node=g["node"], status=g["status"], config=g["config"], template=True)


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
    """An in-process fakepve with the lab's shape, and an inventory pointing at it."""

    pve: FakePve
    base: Inventory
    cafile: str
    tmp: Path
    inv: Inventory = field(init=False)

    def __post_init__(self) -> None:
        (self.tmp / "pve-password").write_text(PASSWORD + "\n")
        (self.tmp / "id.pub").write_text(PUBKEY + "\n")
        self.inv = self.configure()

    def configure(self, *, vms: list[Vm] | None = None, ssh: dict[str, Any] | None = None, **px: Any) -> Inventory:
        """The lab inventory pointed at this fake, with proxmox fields (and VMs, ssh fields) replaced."""
        updates: dict[str, Any] = {
            "endpoint": self.pve.url,
            "ca_file": Path(self.cafile),
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


def make_pve_lab(fakepve: FakePve, cafile: str, tmp_path: Path) -> PveLab:
    """A fresh lab-shaped fakepve and its inventory; test modules wrap it in a ``pve_lab`` fixture
    over fakepve's ``fakepve`` fixture (time_scale from the fakepve marker, default 0)."""
    serve_lab_shape(fakepve, lab_inventory())
    return PveLab(fakepve, lab_inventory(), cafile, tmp_path)


__all__ = ["Action", "FakeClock", "Hook", "PveLab", "actions", "converged", "fields", "make_pve_lab", "serve_lab_shape"]


ALL = ["docker-drowzee", "docker-sleepy", "docker-hypno", "k3s-nappy"]
