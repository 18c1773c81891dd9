"""Reviewed plans: a dry run of runbook 01 archives its plan; `homelab run --approve RUN_ID` applies that plan only.

Runbook 01 runs for real through ``homelab run`` (papermill, its own kernel)
against a fakepve this test serves on 127.0.6.1 over HTTPS, with a temporary
parameter file pointing at it. Nothing is mocked: the notebook's apply step
compares the plan it computes with the approved one and refuses a different one
before any request that changes something.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from homelab_lib.cli import main
from homelab_lib.core.contract import PLANS_FORMAT
from homelab_lib.core.plan import document_sha256
from homelab_lib.runs.archive import Archive
from tests.contract_fixtures import ServedPve, served_pve, write_params
from tests.test_audit import lines, rewrite
from tests.test_audit_report import plan_notebook
from tests.test_runner import write_nb

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "notebooks" / "01_provision_nodes.ipynb"
ALL = ["docker-drowzee", "docker-sleepy", "docker-hypno", "k3s-nappy"]


@pytest.fixture
def pve(tmp_path: Path) -> Iterator[ServedPve]:
    with served_pve(tmp_path) as served:
        yield served


def homelab_run(params: Path, archive: Path, *extra: str) -> int:
    return main(["run", str(NOTEBOOK), "-f", str(params), "--archive", str(archive), "-q", *extra])


def managed(pve: ServedPve) -> dict[str, tuple[str, str]]:
    """name -> (status, memory) of every VM the runbook made."""
    return {v.name: (v.status, str(v.config.get("memory"))) for v in pve.pve.vms if not v.template}


def test_approve_applies_the_reviewed_plan_and_refuses_a_changed_one(
    pve: ServedPve, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"approvals-{secrets.token_hex(3)}"  # its own lock: other runs on this machine never block it
    params = write_params(tmp_path, pve, name)
    archive = tmp_path / "archive"
    index = Archive(archive)

    # 1. a dry run archives its plan and its hash, and changes nothing
    mark = pve.mark()
    assert homelab_run(params, archive) == 0
    dry = index.records()[-1]
    assert dry.status == "ok"
    assert dry.plan is not None
    assert dry.plan["summary"] == "4 create"
    assert [(c["action"], c["target"]) for c in dry.plan["changes"]] == [("create", vm) for vm in ALL]
    assert dry.plan_hash == document_sha256(dry.plan)
    assert dry.approves == ""
    assert pve.writes(mark) == []
    assert managed(pve) == {}

    # 2. --approve applies exactly that plan, and the record says which run it approves
    capsys.readouterr()
    assert homelab_run(params, archive, "--approve", dry.run) == 0
    assert f"applying the plan approved in {dry.run}" in capsys.readouterr().out
    applied = index.records()[-1]
    assert applied.approves == dry.run
    assert applied.plan_hash == dry.plan_hash
    assert applied.parameters["confirm"] is True
    assert applied.parameters["approved_plan"] == {"proxmox": dry.plan_hash}  # one approved plan per adapter
    assert managed(pve) == {vm: ("running", "4096" if vm != "k3s-nappy" else "8192") for vm in ALL}

    # the audit log shows who reviewed what before it was applied
    assert main(["audit", "show", applied.run, "--archive", str(archive)]) == 0
    shown = capsys.readouterr().out
    assert f"approves: {dry.run}" in shown
    assert f"reviewed: plan {dry.plan_hash[:12]} of dry run {dry.run}, by {dry.user}@{dry.host}" in shown
    assert "create   vm docker-sleepy (sleepy)" in shown
    assert main(["audit", "list", "--archive", str(archive)]) == 0
    listed = capsys.readouterr().out
    assert dry.plan_hash[:12] in listed
    assert dry.run in listed  # in the approves column of the apply run

    # an applied run is no dry run: it cannot be approved (bad input, exit 2, nothing run)
    runs = len(index.records())
    assert homelab_run(params, archive, "--approve", applied.run) == 2
    assert "ran with confirm=True; approve a dry run" in capsys.readouterr().err
    assert len(index.records()) == runs

    # 3. a second dry run (nothing to do), then the inventory changes before the approve: refused
    assert homelab_run(params, archive) == 0
    second = index.records()[-1]
    assert second.plan is not None
    assert second.plan["summary"] == "4 no-op"

    def more_memory(data: dict[str, Any]) -> None:
        for vm in data["vms"]:
            if vm["name"] == "docker-sleepy":
                vm["memory_mib"] = 6144

    write_params(tmp_path, pve, name, more_memory)
    mark = pve.mark()
    capsys.readouterr()
    assert homelab_run(params, archive, "--approve", second.run) == 1
    err = capsys.readouterr().err
    assert "REFUSED, nothing was changed" in err
    assert "PlanNotApproved" in err
    assert f"the plan now, against the plan approved in run {second.run}:" in err
    assert "~ vm docker-sleepy (sleepy): was no-op; now update (memory: 4096 -> 6144)" in err
    assert pve.writes(mark) == []  # not one request that could change anything
    assert managed(pve)["docker-sleepy"] == ("running", "4096")
    refused = index.records()[-1]
    assert refused.status == "failed"
    assert refused.approves == second.run
    assert refused.plan_hash != second.plan_hash
    assert "~ vm docker-sleepy (sleepy): was no-op; now update (memory: 4096 -> 6144)" in refused.error
    assert index.verify() == []  # the records with plans chain and seal like any other


# ---------------------------------------------------------------- the archive vouches for the approved record


def small_homelab(tmp_path: Path, make_params: Callable[..., Path]) -> tuple[Path, Path, Path]:
    """A notebook that shows a plan (and would apply it), a homelab of its own (its own lock), an archive."""
    nb = plan_notebook(tmp_path / "provision.ipynb")
    return nb, make_params(name=f"vouch-{secrets.token_hex(3)}"), tmp_path / "archive"


def run_it(nb: Path, params: Path, archive: Path, *extra: str) -> int:
    return main(["run", str(nb), "-f", str(params), "--archive", str(archive), "-q", *extra])


def test_approve_refuses_a_stored_plan_that_was_altered(
    tmp_path: Path, make_params: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    nb, params, archive = small_homelab(tmp_path, make_params)
    assert run_it(nb, params, archive) == 0
    dry = Archive(archive).records()[-1]
    original = lines(archive)
    edited = json.loads(original[-1])
    edited["plan"]["changes"][0]["target"] = "web-666"  # what a reviewer would read is no longer what was shown
    rewrite(archive, [json.dumps(edited).encode() + b"\n"])  # resealed, HEAD rewritten: the chain holds
    assert Archive(archive).verify() == []  # (which is why the approve must look at the plan itself)
    capsys.readouterr()
    assert run_it(nb, params, archive, "--approve", dry.run) == 1
    err = capsys.readouterr().err
    assert f"--approve {dry.run}: the archive does not vouch for that run's record, so nothing was run" in err
    assert f"record 1 (run {dry.run}): its stored plan does not hash to its plan_hash" in err
    assert len(Archive(archive).records()) == 1  # nothing ran

    edited["plan_hash"] = document_sha256(edited["plan"])  # the hash made to match the altered plan, too
    rewrite(archive, [json.dumps(edited).encode() + b"\n"])
    assert run_it(nb, params, archive, "--approve", dry.run) == 1
    err = capsys.readouterr().err
    assert f"the notebook of run {dry.run} shows plan {dry.plan_hash[:12]}, not its record's plan" in err
    assert len(Archive(archive).records()) == 1

    (archive / "index.jsonl").write_bytes(b"".join(original))  # as it was: approved and applied
    (archive / "HEAD").write_text(f"{hashlib.sha256(original[-1]).hexdigest()} 1\n")
    assert run_it(nb, params, archive, "--approve", dry.run) == 0
    assert Archive(archive).records()[-1].approves == dry.run


def test_approve_refuses_a_record_after_a_break_in_the_chain(
    tmp_path: Path, make_params: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    nb, params, archive = small_homelab(tmp_path, make_params)
    hello = write_nb(tmp_path / "hello.ipynb", "print('hello')")
    assert run_it(hello, params, archive) == 0
    assert run_it(hello, params, archive) == 0
    assert run_it(nb, params, archive) == 0
    first, dry = Archive(archive).records()[0], Archive(archive).records()[-1]
    records = lines(archive)
    edited = json.loads(records[0])
    edited["status"] = "failed"  # history altered before the approved record; HEAD (record 3) still matches
    (archive / "index.jsonl").write_bytes(json.dumps(edited).encode() + b"\n" + b"".join(records[1:]))
    capsys.readouterr()
    assert run_it(nb, params, archive, "--approve", dry.run) == 1
    err = capsys.readouterr().err
    assert f"--approve {dry.run}: the archive does not vouch for that run's record, so nothing was run" in err
    assert f"index.jsonl:1: record 1 (run {first.run}) was altered: its seal does not match" in err
    assert len(Archive(archive).records()) == 3  # nothing ran

    (archive / "index.jsonl").write_bytes(records[0] + records[2])  # record 2 taken out, HEAD still on record 3
    (archive / "HEAD").write_text(f"{hashlib.sha256(records[2]).hexdigest()} 2\n")
    assert run_it(nb, params, archive, "--approve", dry.run) == 1
    assert "record 2 (run " in capsys.readouterr().err
    assert "does not chain to the record before it" in Archive(archive).verify()[0]


# ---------------------------------------------------------------- a notebook with two plans: all applied or none

TOY_ADAPTER = """
import json
from pathlib import Path

from homelab_lib.core import contract
from homelab_lib.core.contract import DONE, BaseAdapter, Carried, Check, Outcome, VerifyResult
from homelab_lib.core.plan import Action, Change, FieldChange, Plan


class Toy(BaseAdapter):
    \"\"\"A world of keys and values in world-NAME.json; the inventory wants want-NAME.json.\"\"\"

    def __init__(self, name):
        self.name, self.world = name, f"the {name} world"
        self.path, self.want = Path(f"world-{name}.json"), Path(f"want-{name}.json")

    def desired(self):
        return json.loads(self.want.read_text())

    def observe(self, desired):
        return json.loads(self.path.read_text()) if self.path.exists() else {}

    def plan(self, desired, observed):
        changes = [
            Change("key", k, Action.UPDATE if k in observed else Action.CREATE,
                   fields=(FieldChange("value", observed.get(k), v),))
            for k, v in sorted(desired.items()) if observed.get(k) != v
        ]
        return Plan.of(changes, adapter=self.name)

    def carry_out(self, desired, observed, plan, todo, *, allow_delete, progress, clock):
        self.path.write_text(json.dumps({**observed, **{c.target: desired[c.target] for c in todo}}))
        return Carried(tuple(Outcome.of(c, DONE) for c in todo))

    def check(self, desired, result):
        now = self.observe(desired)
        return VerifyResult(self.name, result.confirmed,
                            tuple(Check("key", k, "", now.get(k) == v, str(now.get(k))) for k, v in desired.items()),
                            None)
"""

TWO_PLANS = [
    TOY_ADAPTER,
    "first, second = Toy('first'), Toy('second')\n"
    "d1, d2 = first.desired(), second.desired()\n"
    "p1, p2 = first.plan(d1, first.observe(d1)), second.plan(d2, second.observe(d2))\n"
    "contract.show_plan(p1)\ncontract.show_plan(p2)",
    "try:\n"
    "    first.apply(d1, p1, confirm=confirm, approved_plan=approved_plan)\n"
    "    second.apply(d2, p2, confirm=confirm, approved_plan=approved_plan)\n"
    "finally:\n"
    "    first.close()\n    second.close()",
]


def test_approve_covers_every_plan_a_notebook_shows_and_applies_all_or_none(
    tmp_path: Path, make_params: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cells = [
        new_code_cell("params_file = None\nconfirm = False\napproved_plan = None", metadata={"tags": ["parameters"]})
    ]
    kernel = {"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}}
    nb = tmp_path / "two.ipynb"
    nbformat.write(new_notebook(cells=cells + [new_code_cell(s) for s in TWO_PLANS], metadata=kernel), str(nb))
    params, archive = make_params(name=f"two-{secrets.token_hex(3)}"), tmp_path / "archive"
    (tmp_path / "want-first.json").write_text('{"a": 1}')
    (tmp_path / "want-second.json").write_text('{"b": 2}')
    world = tmp_path / "world-second.json"

    # the dry run archives both plans under one hash
    assert run_it(nb, params, archive) == 0
    dry = Archive(archive).records()[-1]
    assert dry.plan is not None
    assert dry.plan["format"] == PLANS_FORMAT
    assert {k: p["summary"] for k, p in dry.plan["plans"].items()} == {"first": "1 create", "second": "1 create"}
    assert dry.plan_hash == document_sha256(dry.plan)
    assert not (tmp_path / "world-first.json").exists()
    assert not world.exists()

    # the second plan's world changes before the approve: the run fails, and the first plan is not applied either
    world.write_text('{"b": 5}')
    capsys.readouterr()
    assert run_it(nb, params, archive, "--approve", dry.run) == 1
    refused = Archive(archive).records()[-1]
    assert refused.status == "failed"
    assert refused.approves == dry.run
    assert refused.parameters["approved_plan"] == {k: p["sha256"] for k, p in dry.plan["plans"].items()}
    assert refused.error.startswith("PlanNotApproved")
    assert "second: ~ key b" in refused.error  # the difference, named by its adapter
    assert not (tmp_path / "world-first.json").exists()  # neither applied
    assert json.loads(world.read_text()) == {"b": 5}

    # a fresh dry run of the world as it is now, approved: both are applied
    assert run_it(nb, params, archive) == 0
    again = Archive(archive).records()[-1]
    assert run_it(nb, params, archive, "--approve", again.run) == 0
    assert json.loads((tmp_path / "world-first.json").read_text()) == {"a": 1}
    assert json.loads(world.read_text()) == {"b": 2}
    assert Archive(archive).records()[-1].plan_hash == again.plan_hash
