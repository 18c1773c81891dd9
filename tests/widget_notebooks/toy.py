"""A toy runbook adapter that needs no lab: its world is a folder with one file per VM of the inventory.

Desired: for each VM in scope, a file named after it holding ``cores=N memory_mib=M``. Observe reads the
folder; plan is create / update (field ``spec``) / no-op, and delete for a file of no VM in the inventory;
carry_out writes (and removes) the files, one progress step each. Everything else (approved plans, the
re-observe before apply, the dry run) is :class:`homelab_lib.core.contract.BaseAdapter`'s, as for every adapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from homelab_lib.core import contract
from homelab_lib.core.clock import Clock
from homelab_lib.core.contract import DONE, ApplyResult, Carried, Check, Outcome, VerifyResult
from homelab_lib.core.plan import Action, Change, FieldChange, Plan
from homelab_lib.core.progress import Progress
from homelab_lib.inventory import Inventory

State = dict[str, str]


class FilesAdapter(contract.BaseAdapter[State, State, State]):
    name = "files"
    world = "the files folder"

    def __init__(self, inv: Inventory, folder: str | Path, *, only_vms: Sequence[str] = ()) -> None:
        self.inv, self.folder, self.only = inv, Path(folder), set(only_vms)

    def desired(self) -> State:
        return {
            vm.name: f"cores={vm.cores} memory_mib={vm.memory_mib}"
            for vm in self.inv.vms
            if not self.only or vm.name in self.only
        }

    def observe(self, desired: State) -> State:
        self.folder.mkdir(parents=True, exist_ok=True)
        return {p.name: p.read_text() for p in sorted(self.folder.iterdir()) if p.is_file()}

    def plan(self, desired: State, observed: State) -> Plan:
        known = {vm.name for vm in self.inv.vms}
        changes = []
        for name, spec in desired.items():
            if name not in observed:
                changes.append(Change("file", name, Action.CREATE, str(self.folder.name)))
            elif observed[name] != spec:
                changes.append(
                    Change(
                        "file", name, Action.UPDATE, str(self.folder.name), (FieldChange("spec", observed[name], spec),)
                    )
                )
            else:
                changes.append(Change("file", name, Action.NOOP, str(self.folder.name)))
        for name in observed:
            if name not in known:
                changes.append(Change("file", name, Action.DELETE, str(self.folder.name), reason="no such VM"))
        return Plan.of(changes, adapter=self.name)

    def carry_out(
        self,
        desired: State,
        observed: State,
        plan: Plan,
        todo: Sequence[Change],
        *,
        allow_delete: bool,
        progress: Progress,
        clock: Clock,
    ) -> Carried:
        task = progress.task("files", len(todo))
        for change in todo:
            path = self.folder / change.target
            if change.action == Action.DELETE:
                path.unlink()
            else:
                path.write_text(desired[change.target])
            task.advance(f"{change.action.value} {change.target}")
        task.done()
        return Carried(tuple(Outcome.of(c, DONE) for c in todo), tuple(f"{c.action.value} {c.target}" for c in todo))

    def check(self, desired: State, result: ApplyResult) -> VerifyResult[State]:
        seen = self.observe(desired)
        checks = tuple(
            Check("file", name, self.folder.name, seen.get(name) == spec, seen.get(name, "missing"))
            for name, spec in desired.items()
        )
        return VerifyResult(self.name, result.confirmed, checks, seen)
