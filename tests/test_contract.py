"""The runbook contract: both adapters driven through one generic plan -> apply -> verify function.

``contract.run`` (desired -> observe -> plan -> apply -> verify) drives each
adapter the same way, against real things on this test's own addresses
(127.0.6.0/24):

- **proxmox**: a fakepve served in this process over HTTPS (proxmoxer's real
  https backend) at 127.0.6.1;
- **compose**: two of the rehearsal lab's Docker VMs (their own engines, over real
  SSH, the real Compose v2), under a homelab of the test's own name, with the
  stand-in image the lab's VMs hold (cAdvisor's, which serves ``/healthz``).

One test body runs for both (the ``world`` fixture gives the adapter and the
ways to change the world). The pure parts of the contract (results, plan
documents and their diff, error tables, NotFound) are tested without servers.
"""

from __future__ import annotations

import inspect
import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from ruamel.yaml import YAML

from homelab_lab import vms
from homelab_lib import clients, compose, proxmox
from homelab_lib.core import contract
from homelab_lib.core.contract import DONE, NEEDS_ALLOW_DELETE, ApplyResult, Outcome, VerifyResult
from homelab_lib.core.errors import (
    HomelabError,
    NotFound,
    PlanConflict,
    PlanNotApproved,
    SshError,
    StalePlan,
    VerifyFailed,
    mapped,
    to,
)
from homelab_lib.core.plan import Action, Change, FieldChange, Plan, diff_documents, document_sha256
from homelab_lib.core.progress import Lines
from homelab_lib.inventory import Inventory, load_inventory
from tests.contract_fixtures import served_pve, write_params
from tests.test_proxmox_fixtures import PUBKEY, FakeClock

VMS = {"contract-a": "docker-drowzee", "contract-b": "docker-sleepy"}  # the lab's VMs the test homelab uses
IMAGE = "gcr.io/cadvisor/cadvisor:v0.49.1"  # held by both VMs' engines (their exporters stack)
WEB_PORT = 26080
REMOTE_HOME = PurePosixPath("/root")  # the lab's SSH user's home on its VMs


def quiet() -> Lines:
    return Lines(open("/dev/null", "w"))


# ---------------------------------------------------------------- the worlds


@dataclass
class World:
    """One adapter's world: how to make its adapter, and how to change the world behind its back."""

    name: str
    adapter: Callable[[str], contract.Adapter[Any, Any, Any]]  # variant "base" or "changed"
    creates: set[str]  # the targets the first plan creates
    changed: set[str]  # the targets the "changed" inventory updates
    drift: Callable[[], str]  # change the world after a plan was made; returns the target that moved
    breaks: Callable[[], str]  # make the world miss what an apply promised; returns the target


def proxmox_world(tmp: Path) -> Iterator[World]:
    with served_pve(tmp) as pve:
        name = f"contract-{secrets.token_hex(3)}"

        def adapter(variant: str) -> proxmox.ProxmoxAdapter:
            def edit(data: dict[str, Any]) -> None:
                if variant == "changed":
                    for vm in data["vms"]:
                        if vm["name"] == "docker-sleepy":
                            vm["memory_mib"] = 6144

            return proxmox.adapter(load_inventory(write_params(tmp, pve, name, edit)))

        def drift() -> str:
            pve.pve.vm(110).config["cores"] = 1  # someone changes docker-drowzee by hand
            return "docker-drowzee"

        def breaks() -> str:
            pve.pve.vm(130).status = "stopped"  # docker-hypno stops right after the apply
            return "docker-hypno"

        yield World(
            "proxmox",
            adapter,
            {"docker-drowzee", "docker-sleepy", "docker-hypno", "k3s-nappy"},
            {"docker-sleepy"},
            drift,
            breaks,
        )


@pytest.fixture(scope="module")
def engines(lab: Inventory) -> Iterator[dict[str, Any]]:
    """The docker SDK on each lab VM's own engine, by the test homelab's VM name.

    The test homelab starts on empty VMs: whatever ran there (the lab's own stacks, from an earlier
    test or a rehearsal) is removed first, since every container on a host's engine is that host's
    business and would show in its plan as a conflict.
    """
    clients_ = {name: vms.engine(lab, lab.vm(vm)) for name, vm in VMS.items()}
    for engine in clients_.values():
        for c in engine.containers.list(all=True):
            c.remove(force=True)
    yield clients_
    for c in clients_.values():
        c.close()


def compose_params(tmp: Path, lab: Inventory, name: str, variant: str) -> Path:
    """A homelab (profile real) with two Docker VMs (the lab's, by address), each with stack web: [hello]."""
    hello: dict[str, Any] = {
        "image": IMAGE,
        "platforms": ["compose"],
        "per_host": True,  # one on each Docker VM
        "ports": [{"container": 8080, "host": WEB_PORT}],
        "health": "/healthz",
        "healthcheck": {
            "test": ["CMD", "wget", "-q", "-O", "/dev/null", "http://localhost:8080/healthz"],
            "interval_s": 1,
            "timeout_s": 3,
            "retries": 3,
            "start_period_s": 0,
        },
        "environment": {"GREETING": "hello" if variant != "changed" else "hello again"},
    }
    extra = {**hello, "per_host": False, "ports": [{"container": 8080, "host": WEB_PORT + 1}]}
    stacks = {"contract-a": {"web": ["hello"]}, "contract-b": {"web": ["hello"]}}
    if variant == "gone":
        stacks["contract-b"] = {}
    if variant == "extra":
        stacks["contract-a"] = {"web": ["hello", "extra"]}
    (tmp / "id.pub").write_text(PUBKEY + "\n")
    data = {
        "name": name,
        "proxmox": {"endpoint": "https://127.0.6.1:8006", "password": "env:UNUSED_PVE_PASSWORD", "template": "tmpl"},
        "nodes": [{"name": "node1", "cores": 8, "memory_gib": 16}],
        "ssh": {
            "user": lab.ssh.user,
            "port": lab.ssh.port,
            "private_key": f"file:{lab.ssh.private_key.path}",
            "public_key": str(tmp / "id.pub"),
            "known_hosts": str(lab.ssh.known_hosts),
        },
        "vms": [
            {"name": vm, "vmid": 200 + i, "node": "node1", "role": "docker", "cores": 1, "memory_mib": 1024,
             "disk_gib": 8, "ip": f"{lab.vm(lab_vm).address}/8", "stacks": stacks[vm]}
            for i, (vm, lab_vm) in enumerate(VMS.items())
        ],
        "services": {"hello": hello, "extra": extra},
    }  # fmt: skip
    path = tmp / f"{name}-{variant}.yaml"
    with path.open("w") as f:
        YAML(typ="safe").dump(data, f)
    return path


def on_vm(lab: Inventory, vm: str, command: str) -> bool:
    """Run a command on a lab VM over SSH; True if it exited 0."""
    with compose.DockerHost.open(clients.ssh_target(lab, vm)) as host:
        return host.run(command, timeout=60).ok


def compose_world(tmp: Path, lab: Inventory, engines: dict[str, Any]) -> Iterator[World]:
    name = f"contract-{secrets.token_hex(3)}"
    made: list[compose.ComposeAdapter] = []

    def adapter(variant: str) -> compose.ComposeAdapter:
        inv = load_inventory(compose_params(tmp, lab, name, variant))
        made.append(compose.ComposeAdapter(inv, health_timeout_s=60, clock=contract.SystemClock()))
        return made[-1]

    def container(host: str) -> Any:
        labels = [f"homelab.homelab={name}", f"homelab.host={host}"]
        (found,) = engines[host].containers.list(all=True, filters={"label": labels})
        return found

    def drift() -> str:
        container("contract-a").stop(timeout=5)  # someone stops a service by hand
        return "web/hello"

    def breaks() -> str:
        container("contract-b").stop(timeout=5)
        return "web/hello"

    try:
        yield World("compose", adapter, {"web/hello"}, {"web/hello"}, drift, breaks)
    finally:
        for a in made:
            a.close()
        for host, engine in engines.items():
            project = compose.project_name(host, "web")
            for c in engine.containers.list(all=True, filters={"label": f"com.docker.compose.project={project}"}):
                c.remove(force=True, v=True)
            for n in engine.networks.list(filters={"label": f"com.docker.compose.project={project}"}):
                n.remove()
            on_vm(lab, VMS[host], f"rm -rf {REMOTE_HOME / compose.remote_dir(project)}")


@pytest.fixture(params=["proxmox", "compose"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    if request.param == "proxmox":
        yield from proxmox_world(tmp_path)
    else:
        yield from compose_world(tmp_path, request.getfixturevalue("lab"), request.getfixturevalue("engines"))


# ---------------------------------------------------------------- one body, both adapters


def test_one_generic_plan_apply_verify_drives_both_adapters(world: World) -> None:
    runbook = world.adapter("base")

    # a dry run: the plan, what would be done, and verify reports (never raises) what is missing
    dry = contract.run(runbook, progress=quiet())
    assert dry.plan.adapter == world.name
    assert {c.target for c in dry.plan.of_action(Action.CREATE)} == world.creates
    assert not dry.result.confirmed
    assert not dry.result.applied
    assert dry.result.summary().startswith("dry run: nothing changed (")
    assert {o.result for o in dry.result.outcomes} == {"would create"}
    assert dry.result.plan_sha256 == dry.plan.sha256
    assert not dry.verified.ok
    assert dry.verified.summary().startswith("dry run: ")

    # confirmed: done, and verified as the plan promised
    done = contract.run(runbook, confirm=True, progress=quiet())
    assert done.result.applied
    assert {o.result for o in done.result.outcomes} == {DONE}
    assert {o.target for o in done.result.outcomes} == world.creates
    assert done.verified.ok, done.verified.table().to_string()
    assert done.verified.summary().startswith("verified: ")

    # idempotent: the second pass plans only no-ops and changes nothing
    again = contract.run(runbook, confirm=True, progress=quiet())
    assert again.plan.empty
    assert not again.result.applied
    assert again.result.summary() == "nothing to do: everything is as the inventory says"
    assert again.verified.ok

    # a reviewed plan: another plan is refused before anything happens
    changed = world.adapter("changed")
    desired = changed.desired()
    plan = changed.plan(desired, changed.observe(desired))
    assert {c.target for c in plan.of_action(Action.UPDATE)} == world.changed
    with pytest.raises(PlanNotApproved, match="is not the approved plan"):
        changed.apply(desired, plan, confirm=True, approved_plan=again.plan.sha256, progress=quiet())

    # the world moves between the plan and the apply: refused, naming what moved, nothing done
    moved = world.drift()
    with pytest.raises(StalePlan) as stale:
        changed.apply(desired, plan, confirm=True, approved_plan=plan.sha256, progress=quiet())
    assert moved in str(stale.value)
    assert stale.value.moved

    # a fresh plan applies; then the world misses the promise before verify: verify raises
    desired = changed.desired()
    plan = changed.plan(desired, changed.observe(desired))
    result = changed.apply(desired, plan, confirm=True, progress=quiet())
    assert result.applied
    target = world.breaks()
    with pytest.raises(VerifyFailed) as missed:
        changed.verify(desired, result)
    assert target in str(missed.value)
    assert isinstance(missed.value.result, VerifyResult)
    assert not missed.value.result.ok
    # and the contract's next pass repairs it
    assert contract.run(changed, confirm=True, progress=quiet()).verified.ok


@pytest.mark.lab
def test_a_stack_taken_down_only_with_allow_delete(tmp_path: Path, lab: Inventory, engines: dict[str, Any]) -> None:
    """Compose's deletes through the contract: left out without allow_delete, then taken down, folder and all."""
    worlds = compose_world(tmp_path, lab, engines)
    world = next(worlds)
    try:
        assert contract.run(world.adapter("base"), confirm=True, progress=quiet()).verified.ok
        folder = REMOTE_HOME / compose.remote_dir(compose.project_name("contract-b", "web"))
        assert on_vm(lab, VMS["contract-b"], f"test -f {folder / 'compose.yaml'}")
        gone = world.adapter("gone")
        kept = contract.run(gone, confirm=True, progress=quiet())
        assert [(o.kind, o.target, o.where, o.result) for o in kept.result.outcomes] == [
            ("stack", "web", "contract-b", NEEDS_ALLOW_DELETE)
        ]
        assert kept.result.not_done == ("web: delete needs allow_delete=True",)
        assert on_vm(lab, VMS["contract-b"], f"test -d {folder}")
        removed = contract.run(gone, confirm=True, allow_delete=True, progress=quiet())
        (outcome,) = removed.result.outcomes
        assert (outcome.result, outcome.detail) == (DONE, f"compose down (volumes kept); {folder} removed")
        assert [(c.kind, c.where, c.ok, c.detail) for c in removed.verified.checks if c.kind == "stack"] == [
            ("stack", "contract-b", True, "removed")
        ]
        assert not on_vm(lab, VMS["contract-b"], f"test -e {folder}")
    finally:
        worlds.close()


@pytest.mark.lab
def test_a_service_dropped_from_a_stack_goes_only_with_allow_delete(
    tmp_path: Path, lab: Inventory, engines: dict[str, Any]
) -> None:
    """A stack that changes and also lost a service: updated, but its old service kept until allow_delete."""
    worlds = compose_world(tmp_path, lab, engines)
    world = next(worlds)
    try:
        assert contract.run(world.adapter("extra"), confirm=True, progress=quiet()).verified.ok
        name = world.adapter("base").inv.name  # type: ignore[attr-defined]

        def extra_runs() -> bool:
            labels = [f"homelab.homelab={name}", "homelab.service=extra"]
            return bool(engines["contract-a"].containers.list(filters={"label": labels}))

        assert extra_runs()
        changed = world.adapter("changed")
        kept = contract.run(changed, confirm=True, progress=quiet())
        assert sorted((o.where, o.target, o.result) for o in kept.result.outcomes) == [
            ("contract-a", "web/extra", NEEDS_ALLOW_DELETE),
            ("contract-a", "web/hello", DONE),
            ("contract-b", "web/hello", DONE),
        ]
        assert extra_runs()  # compose up ran without --remove-orphans
        removed = contract.run(changed, confirm=True, allow_delete=True, progress=quiet())
        assert [(o.target, o.result) for o in removed.result.outcomes] == [("web/extra", DONE)]
        assert not extra_runs()
        assert removed.verified.ok
    finally:
        worlds.close()


# ---------------------------------------------------------------- the pure parts


def change(target: str, action: Action, *fields: tuple[str, Any, Any], reason: str = "") -> Change:
    return Change("vm", target, action, "node1", tuple(FieldChange(*f) for f in fields), reason)


def test_plan_documents_are_canonical_and_diff_says_what_moved() -> None:
    a = Plan.of([change("x", Action.CREATE, reason="clone"), change("y", Action.NOOP, reason="up 3 s")], adapter="t")
    b = Plan.of([change("x", Action.CREATE, reason="clone"), change("y", Action.NOOP, reason="up 9 s")], adapter="t")
    assert a.sha256 == b.sha256  # a no-op's reason is volatile, not part of the plan
    doc = json.loads(json.dumps(a.document()))  # as a notebook stores it and the runner reads it back
    assert document_sha256(doc) == a.sha256
    assert document_sha256({**doc, "sha256": "anything"}) == a.sha256
    c = Plan.of(
        [change("y", Action.UPDATE, ("memory", 4096, 6144)), change("z", Action.DELETE, reason="gone")], adapter="t"
    )
    assert diff_documents(a.document(), c.document()) == [
        "+ vm z (node1): delete (gone)",
        "- vm x (node1): create (clone)",
        "~ vm y (node1): was no-op; now update (memory: 4096 -> 6144)",
    ]
    assert diff_documents(a.document(), b.document()) == []
    assert Plan.of([change("x", Action.CREATE)], adapter="u").sha256 != Plan.of([change("x", Action.CREATE)]).sha256


def test_apply_result_members_are_the_same_everywhere() -> None:
    c = change("x", Action.CREATE, reason="clone")
    d = change("y", Action.DELETE, reason="gone")
    dry = ApplyResult("t", False, "h", (Outcome.of(c, "would create"), Outcome.of(d, NEEDS_ALLOW_DELETE)))
    assert not dry.applied
    assert dry.ok
    assert dry.summary() == (
        "dry run: nothing changed (1 create; 1 delete(s) need allow_delete); run with confirm=True to apply"
    )
    assert dry.not_done == ("y: delete needs allow_delete=True",)
    assert list(dry.table().columns) == ["action", "kind", "target", "where", "result", "detail", "seconds"]
    done = ApplyResult("t", True, "h", (Outcome.of(c, DONE, "cloned", 1.5),), ("x: cloned",))
    assert done.applied
    assert done.summary() == "applied: 1 change(s), 1 step(s)"


class Refusing(contract.BaseAdapter[str, str, None]):
    """The smallest adapter: desired and observed are strings; conflicts block."""

    name = "t"
    world = "the test world"

    def __init__(self, plan: Plan) -> None:
        self.made = plan
        self.carried: list[str] = []

    def desired(self) -> str:
        return "d"

    def observe(self, desired: str) -> str:
        return "o"

    def plan(self, desired: str, observed: str) -> Plan:
        return self.made

    def carry_out(self, desired: str, observed: str, plan: Plan, todo: Any, **kw: Any) -> contract.Carried:
        self.carried += [c.target for c in todo]
        return contract.Carried(tuple(Outcome.of(c, DONE) for c in todo))

    def check(self, desired: str, result: ApplyResult) -> VerifyResult[None]:
        return VerifyResult(self.name, result.confirmed, (), None)


def test_the_contract_refuses_conflicts_and_foreign_plans_before_anything() -> None:
    plan = Plan.of([change("x", Action.CREATE), change("q", Action.CONFLICT, reason="held by another")], adapter="t")
    runbook = Refusing(plan)
    with pytest.raises(PlanConflict, match="held by another"):
        runbook.apply("d", plan, confirm=True, clock=FakeClock())
    assert runbook.carried == []
    with pytest.raises(HomelabError, match="made by the other adapter"):
        runbook.apply("d", Plan(plan.changes, "other"), confirm=True)
    ok = Plan.of([change("x", Action.CREATE)], adapter="t")
    assert Refusing(ok).apply("d", ok, confirm=True).applied


def test_error_tables_translate_by_the_most_specific_class() -> None:
    table = {OSError: to(HomelabError, message="os: "), ConnectionRefusedError: to(SshError, hint="is sshd up?")}
    with pytest.raises(HomelabError, match=r"^here: os: disk$") as e, mapped(table, where="here"):
        raise OSError("disk")
    assert type(e.value) is HomelabError
    assert isinstance(e.value.__cause__, OSError)
    with pytest.raises(SshError, match=r"^there: refused \(is sshd up\?\)$"), mapped(table, where="there"):
        raise ConnectionRefusedError("refused")  # its class before its base OSError
    with pytest.raises(KeyError), mapped(table, where="x"):
        raise KeyError("not in the table: passes through")
    with pytest.raises(NotFound), mapped(table, where="x"):
        raise NotFound("n", what="VM")  # ours pass through untouched


def test_lookups_raise_not_found_with_where_and_hint(tmp_path: Path) -> None:
    inv: Inventory = load_inventory(Path(__file__).resolve().parent.parent / "parameters" / "example.yaml")
    with pytest.raises(NotFound) as e:
        inv.vm("docker-nowhere")
    assert isinstance(e.value, KeyError)
    assert "no VM named 'docker-nowhere' (there are: docker-drowzee, docker-hypno, docker-sleepy, k3s-nappy)" in str(
        e.value
    )
    assert "example.yaml: vms" in str(e.value)
    with pytest.raises(NotFound, match="no node named 'pve9'"):
        inv.node("pve9")


def test_every_adapter_offers_the_same_steps_with_the_same_arguments() -> None:
    """What the next adapters copy: the Protocol's five steps, same names, same argument order, same defaults."""
    steps = ["desired", "observe", "plan", "apply", "verify", "close"]
    for cls in (proxmox.ProxmoxAdapter, compose.ComposeAdapter):
        for step in steps:
            want = inspect.signature(getattr(contract.Adapter, step))
            have = inspect.signature(getattr(cls, step))
            assert [(p.name, p.kind, p.default) for p in have.parameters.values()] == [
                (p.name, p.kind, p.default) for p in want.parameters.values()
            ], f"{cls.__name__}.{step}"
    assert all(hasattr(contract, name) for name in contract.__all__)


def test_a_mapping_approval_checks_every_plan_shown_and_every_plan_approved(capsys: pytest.CaptureFixture[str]) -> None:
    """Under {adapter: sha256}, an apply refuses unless its plan, every plan shown, and every approved plan agree."""
    one = Plan.of([Change("vm", "a", Action.CREATE)], adapter="one")
    two = Plan.of([Change("vm", "b", Action.CREATE)], adapter="two")
    moved = Plan.of([Change("vm", "b", Action.UPDATE, fields=(FieldChange("memory", 1, 2),))], adapter="two")
    approved = {"one": one.sha256, "two": two.sha256}
    contract.forget_shown_plans()
    try:
        contract.show_plan(one)
        with pytest.raises(PlanNotApproved) as not_yet:  # two's plan is approved but not shown before this apply
            contract.check_approved("one", one.sha256, approved)
        assert not_yet.value.where == "two"
        contract.show_plan(moved)
        with pytest.raises(PlanNotApproved) as other:  # one's own plan is right, another shown is not
            contract.check_approved("one", one.sha256, approved)
        assert other.value.where == "two"
        contract.show_plan(two)
        contract.check_approved("one", one.sha256, approved)  # all as reviewed
        contract.check_approved("two", two.sha256, approved)
        with pytest.raises(PlanNotApproved):  # an adapter the reviewed run had no plan of
            contract.check_approved("three", one.sha256, approved)
        contract.check_approved("one", one.sha256, one.sha256)  # one plan's sha256: that plan only
        with pytest.raises(PlanNotApproved):
            contract.check_approved("two", two.sha256, one.sha256)
        assert contract.shown_plans() == approved
    finally:
        contract.forget_shown_plans()
    capsys.readouterr()
