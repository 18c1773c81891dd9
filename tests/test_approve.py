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

import pytest

from homelab_lib.cli import main
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
    assert applied.parameters["approved_plan"] == dry.plan_hash
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
