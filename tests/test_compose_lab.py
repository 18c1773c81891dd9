"""Runbook 02 against the rehearsal lab: each VM's own Docker Engine behind real OpenSSH, the real Compose v2.

Nothing is mocked. The lab's stacks (the example homelab's whole shape) are deployed
once for the module; fault tests build an inventory variant in tmp (a copy of lab.yaml
with another stack, another known_hosts, or an extra VM served by an sshd started here)
and clean up every container, network, volume and project folder they make.
"""

from __future__ import annotations

import shlex
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nbformat
import pytest
from ruamel.yaml import YAML

from homelab_lib import clients, compose
from homelab_lib.core.contract import ApplyResult
from homelab_lib.core.errors import (
    ComposeMissing,
    EngineUnreachable,
    HostKeyRejected,
    ImagePullFailed,
    PortTaken,
    Unhealthy,
)
from homelab_lib.core.hashkey import KEY_FILE, load_key
from homelab_lib.core.plan import Action, Plan
from homelab_lib.inventory import Inventory, load_inventory
from homelab_lib.runs.runner import run_notebook

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parent.parent
LAB_FILE = REPO / "parameters" / "lab.yaml"
FAULTS = "faults"  # the fault tests' own stack, on docker-sleepy (whose engine holds the *arr images)
FAULT_HOST = "docker-sleepy"
FAULT_ADDRESS = "127.0.0.12"
SERVICES = 18  # the example's 14 services; the exporters run on each of the three Docker VMs
BROKEN_ADDRESS = "127.0.0.61"


# ---------------------------------------------------------------- helpers


def absolute(data: Any, base: Path) -> Any:
    """lab.yaml's relative paths (``../.lab/...``, ``file:../.lab/...``) made absolute, for a copy in tmp."""
    if isinstance(data, dict):
        return {k: absolute(v, base) for k, v in data.items()}
    if isinstance(data, list):
        return [absolute(v, base) for v in data]
    if isinstance(data, str):
        if data.startswith("file:../"):
            return "file:" + str((base / data[5:]).resolve())
        if data.startswith("../"):
            return str((base / data).resolve())
    return data


def make_variant(tmp: Path, edit: Callable[[dict[str, Any]], None], name: str = "variant.yaml") -> Inventory:
    """A copy of lab.yaml in tmp, changed by edit; same homelab name, so it uses the lab's stand-ins, and the
    same hash key beside it (the homelab's: its hashes of secrets are the deployed ones)."""
    data = absolute(YAML(typ="safe").load(LAB_FILE.read_text()), LAB_FILE.parent)
    edit(data)
    key = tmp / KEY_FILE
    if not key.exists():
        key.write_bytes(load_key(LAB_FILE.parent).hex().encode())
        key.chmod(0o600)
    path = tmp / name
    with path.open("w") as f:
        YAML(typ="safe").dump(data, f)
    return load_inventory(path)


def faults_variant(tmp: Path, services: dict[str, Any], stack: list[str], name: str = "variant.yaml") -> Inventory:
    """Only FAULT_HOST carries a stack, FAULTS, of the given services."""

    def edit(d: dict[str, Any]) -> None:
        for vm in d["vms"]:
            if vm["role"] == "docker":
                vm["stacks"] = {FAULTS: stack} if vm["name"] == FAULT_HOST else {}
        d["services"] = {**d.get("services", {}), **services}

    return make_variant(tmp, edit, name)


def ids(hosts: compose.HostPool, inv: Inventory) -> dict[tuple[str, str, str], str]:
    """(host, stack, service) -> container id, for this homelab's containers."""
    observed = compose.observe_all(hosts, inv.name)
    return {(c.host, c.stack, c.service): c.id for s in observed.values() for c in s.of(inv.name)}


def run_02(
    inv: Inventory,
    hosts: compose.HostPool,
    *,
    confirm: bool = True,
    stacks: list[str] | None = None,
    allow_delete: bool = False,
    health_timeout_s: float = 180.0,
) -> tuple[Plan, ApplyResult]:
    """What the notebook does, through the contract: desired (render, validate), observe, plan, apply."""
    runbook = compose.ComposeAdapter(inv, stacks=stacks or [], hosts=hosts, health_timeout_s=health_timeout_s)
    desired = runbook.desired()
    plan = runbook.plan(desired, runbook.observe(desired))
    result = runbook.apply(desired, plan, confirm=confirm, allow_delete=allow_delete)
    return plan, result


def down(host: compose.DockerHost, project: compose.Project | str, folder: str = "") -> None:
    name = project if isinstance(project, str) else project.name
    host.run(f"docker compose -p {shlex.quote(name)} down -v --remove-orphans", timeout=120)
    if isinstance(project, compose.Project):
        host.remove_folder(project.remote_dir)
    elif folder:
        host.remove_folder(folder)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def hosts(lab: Inventory) -> Iterator[compose.HostPool]:
    with clients.docker_hosts(lab) as pool:
        yield pool


@pytest.fixture(scope="module")
def deployed(lab: Inventory, hosts: compose.HostPool) -> Iterator[list[compose.Project]]:
    """Every stack of the lab deployed (taken down afterwards unless it ran before the module)."""
    projects = compose.render(lab)
    before = compose.plan(projects, compose.observe_all(hosts, lab.name), homelab=lab.name)
    already = {(c.where, c.target.split("/")[0]) for c in before.changes if c.action != Action.CREATE}
    run_02(lab, hosts, health_timeout_s=120)
    yield projects
    for p in projects:
        if (p.host, p.stack) not in already:
            down(hosts[p.host], p)


@pytest.fixture
def faults(lab: Inventory, hosts: compose.HostPool) -> Iterator[None]:
    """Takes down the FAULTS stack after the test, whatever it left."""
    host = hosts[FAULT_HOST]
    name = compose.project_name(FAULT_HOST, FAULTS)
    yield
    down(host, name, compose.project_folder(host, name) or "")


# ---------------------------------------------------------------- deploy, idempotence, one-service change


def test_every_stack_deploys_healthy_and_answers(
    lab: Inventory, hosts: compose.HostPool, deployed: list[compose.Project]
) -> None:
    rows = compose.status(deployed, compose.observe_all(hosts, lab.name), datetime.now(UTC))
    assert len(rows) == sum(len(p.services) for p in deployed) == SERVICES
    assert len({r.service for r in rows}) == 14
    assert [(r.host, r.service) for r in rows if not r.ok] == []
    for r in rows:
        vm = lab.vm(r.host)
        assert compose.normal_image(r.image) == compose.normal_image(lab.services[r.service].image), r
        if lab.services[r.service].network_mode != "host":
            assert r.ports, r
            assert all(p.startswith(f"{vm.address}:") for p in r.ports), r
    probes = compose.probe(deployed)
    assert [(p.service, p.detail) for p in probes if not p.ok] == []
    assert {p.detail for p in probes} == {"HTTP 200", "connected"}
    through_proxy = [p for p in probes if p.url.startswith("http://127.0.0.13:80/")]
    # prometheus is on the host network in the lab (lab.yaml), reached at its own address
    assert {p.service for p in through_proxy} == {"grafana"}, "traefik routes by Host"


def test_second_run_recreates_nothing_and_its_plan_is_empty(
    lab: Inventory, hosts: compose.HostPool, deployed: list[compose.Project]
) -> None:
    before = ids(hosts, lab)
    assert [p.text for p in compose.render(lab)] == [p.text for p in deployed]  # byte-identical re-render
    plan, result = run_02(lab, hosts)
    assert plan.empty, plan.table()
    assert result.outcomes == ()
    assert not result.applied
    # Compose itself, handed the same files again, keeps every container
    for p in deployed[:2]:
        done = hosts[p.host].run(f"cd {shlex.quote(p.remote_dir)} && docker compose -p {p.name} up -d --remove-orphans")
        assert done.ok, done.stderr
    assert ids(hosts, lab) == before


def env_change(tmp: Path) -> Inventory:
    def edit(d: dict[str, Any]) -> None:
        d["services"]["sonarr"]["environment"] = {"PUID": "1000", "PGID": "1000", "TZ": "Europe/Berlin"}

    return make_variant(tmp, edit)


def test_dry_run_shows_the_plan_and_changes_nothing(
    lab: Inventory, hosts: compose.HostPool, deployed: list[compose.Project], tmp_path: Path
) -> None:
    before = ids(hosts, lab)
    plan, result = run_02(env_change(tmp_path), hosts, confirm=False)
    assert [(c.action, c.target) for c in plan.applicable()] == [(Action.UPDATE, "arr/sonarr")]
    assert [(o.target, o.result) for o in result.outcomes] == [("arr/sonarr", "would update")]
    assert ids(hosts, lab) == before


def test_changing_one_services_environment_recreates_only_it(
    lab: Inventory, hosts: compose.HostPool, deployed: list[compose.Project], tmp_path: Path
) -> None:
    before = ids(hosts, lab)
    plan, result = run_02(env_change(tmp_path), hosts)
    (update,) = plan.applicable()
    assert update.target == "arr/sonarr"
    assert ("environment.TZ", "Etc/UTC", "Europe/Berlin") in [(f.name, f.old, f.new) for f in update.fields]
    assert [(o.where, o.target, o.result) for o in result.outcomes] == [("docker-sleepy", "arr/sonarr", "done")]
    after = ids(hosts, lab)
    changed = {key for key in before if after.get(key) != before[key]}
    assert changed == {("docker-sleepy", "arr", "sonarr")}
    # and back: the inventory as it was recreates sonarr once more, nothing else
    plan, _ = run_02(lab, hosts)
    assert [c.target for c in plan.applicable()] == ["arr/sonarr"]
    final = ids(hosts, lab)
    assert {key for key in after if final.get(key) != after[key]} == {("docker-sleepy", "arr", "sonarr")}


def test_drift_is_scoped_to_each_hosts_own_engine(
    lab: Inventory, hosts: compose.HostPool, deployed: list[compose.Project]
) -> None:
    engine = hosts["docker-drowzee"].docker()  # the VM's own engine, over its SSH connection
    image = lab.services["plex"].image
    labels = {"homelab.homelab": lab.name, "homelab.host": "docker-drowzee", "homelab.stack": "handmade"}
    made = [
        engine.containers.run(image, detach=True, labels={**labels, "homelab.service": "plex"}, name="hl-handmade"),
        engine.containers.run(image, detach=True, name="hl-unlabelled"),
    ]
    try:
        observed = compose.observe_all(hosts, lab.name)
        assert len({s.engine_id for s in observed.values()}) == len(observed), "each VM has its own engine"
        plan = compose.plan(deployed, observed, homelab=lab.name)
        (delete,) = plan.of_action(Action.DELETE)
        assert (delete.kind, delete.target, delete.where) == ("stack", "handmade", "docker-drowzee")
        assert [(c.target, c.where) for c in plan.conflicts] == [("hl-unlabelled", "docker-drowzee")]
        assert len(plan.of_action(Action.NOOP)) == SERVICES
    finally:
        for c in made:
            c.remove(force=True, v=True)


# ---------------------------------------------------------------- faults and bad input


def test_host_key_mismatch_is_refused(lab: Inventory, tmp_path: Path) -> None:
    wrong = tmp_path / "known_hosts"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    other = (tmp_path / "other.pub").read_text().split()[:2]
    wrong.write_text(f"[127.0.0.11]:{lab.ssh.port} {' '.join(other)}\n")
    inv = make_variant(tmp_path, lambda d: d["ssh"].__setitem__("known_hosts", str(wrong)))
    with pytest.raises(HostKeyRejected) as e:
        clients.docker_hosts(inv, ["docker-drowzee"])
    msg = str(e.value)
    assert "host key mismatch" in msg
    assert "refused" in msg
    assert "VM docker-drowzee" in msg
    assert str(wrong) in msg
    assert "ssh-keygen -R" in msg
    # a host known_hosts does not list is refused too: no key is ever accepted unchecked
    with pytest.raises(HostKeyRejected, match="is not in"):
        clients.docker_hosts(inv, ["docker-sleepy"])


@pytest.fixture(scope="module")
def broken_vm(lab: Inventory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Inventory]:
    """A VM whose sshd answers but whose Docker Engine does not (and that has no Compose plugin)."""
    folder = tmp_path_factory.mktemp("broken-vm")
    key = folder / "host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    assert lab.ssh.public_key is not None
    (folder / "authorized_keys").write_text(lab.ssh.public_key.read_text())
    (folder / "sshd_config").write_text(
        "\n".join(
            [
                f"ListenAddress {BROKEN_ADDRESS}:{lab.ssh.port}",
                f"HostKey {key}",
                f"PidFile {folder / 'sshd.pid'}",
                f"AuthorizedKeysFile {folder / 'authorized_keys'}",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "PermitRootLogin prohibit-password",
                "UseDNS no",
                # the VM's engine is stopped: its socket is not there; and its CLI has no plugins
                "SetEnv DOCKER_HOST=unix:///nonexistent/docker.sock DOCKER_CONFIG=/nonexistent/docker-config",
                "Subsystem sftp internal-sftp",
                "",
            ]
        )
    )
    sshd = subprocess.Popen(
        ["/usr/sbin/sshd", "-D", "-e", "-f", str(folder / "sshd_config")], stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection((BROKEN_ADDRESS, lab.ssh.port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "the test sshd did not start"
            time.sleep(0.1)
    known = folder / "known_hosts"
    known.write_text(f"[{BROKEN_ADDRESS}]:{lab.ssh.port} {' '.join(key.with_suffix('.pub').read_text().split()[:2])}\n")

    def edit(d: dict[str, Any]) -> None:
        d["ssh"]["known_hosts"] = str(known)
        for vm in d["vms"]:
            vm["stacks"] = {} if vm["role"] == "docker" else vm.get("stacks", {})
        d["vms"].append(
            {
                "name": "docker-broken",
                "vmid": 150,
                "node": "nappy",
                "role": "docker",
                "cores": 1,
                "memory_mib": 1024,
                "disk_gib": 8,
                "ip": f"{BROKEN_ADDRESS}/8",
                "stacks": {"cache": ["redis"]},
            }
        )

    try:
        yield make_variant(folder, edit)
    finally:
        sshd.terminate()
        sshd.wait(timeout=10)


def test_engine_not_reachable_on_a_host(broken_vm: Inventory) -> None:
    with clients.docker_hosts(broken_vm, ["docker-broken"]) as pool, pytest.raises(EngineUnreachable) as e:
        compose.observe_all(pool, broken_vm.name)
    msg = str(e.value)
    assert "VM docker-broken" in msg
    assert "Cannot connect to the Docker daemon" in msg
    assert "systemctl start docker" in msg


def test_no_compose_on_a_host(broken_vm: Inventory) -> None:
    with (
        clients.docker_hosts(broken_vm, ["docker-broken"]) as pool,
        pytest.raises(ComposeMissing, match="docker-broken"),
    ):
        pool["docker-broken"].compose()


RADARR = {"radarr": {"ports": [{"container": 7878, "host": 17878}]}}


def test_a_port_already_taken(
    lab: Inventory, hosts: compose.HostPool, deployed: list[compose.Project], tmp_path: Path, faults: None
) -> None:
    before = ids(hosts, lab)
    inv = faults_variant(tmp_path, RADARR, ["radarr"])
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind((FAULT_ADDRESS, 17878))
    holder.listen()
    try:
        with pytest.raises(PortTaken) as e:
            run_02(inv, hosts, stacks=[FAULTS], health_timeout_s=30)
    finally:
        holder.close()
    msg = str(e.value)
    assert f"{FAULT_HOST}/faults" in msg
    assert f"{FAULT_ADDRESS}:17878" in msg
    assert "already in use" in msg
    assert e.value.states[(FAULT_HOST, FAULTS, "radarr")] != "running (healthy)"
    assert "state of each service" in msg
    assert ids(hosts, lab).items() >= before.items()  # the other stacks are untouched


def test_an_image_that_does_not_exist_leaves_the_stack_as_it_was(
    lab: Inventory, hosts: compose.HostPool, deployed: list[compose.Project], tmp_path: Path, faults: None
) -> None:
    run_02(faults_variant(tmp_path, RADARR, ["radarr"]), hosts, stacks=[FAULTS], health_timeout_s=60)
    before = ids(hosts, lab)
    ghost = {"image": "registry.invalid/homelab/ghost:1.0", "ports": [{"container": 8080, "host": 18080}]}
    inv = faults_variant(tmp_path, {**RADARR, "ghost": ghost}, ["radarr", "ghost"], "ghost.yaml")
    with pytest.raises(ImagePullFailed) as e:
        run_02(inv, hosts, stacks=[FAULTS])
    msg = str(e.value)
    assert "service ghost: image " in msg
    assert "registry.invalid/homelab/ghost:1.0" in msg
    assert "cannot be pulled" in msg
    assert e.value.states[(FAULT_HOST, FAULTS, "radarr")] == "previous container kept: running (healthy)"
    assert e.value.states[(FAULT_HOST, FAULTS, "ghost")] == "not deployed"
    assert ids(hosts, lab) == before  # radarr kept its container; every other stack untouched


def test_a_container_that_never_gets_healthy(
    lab: Inventory, hosts: compose.HostPool, deployed: list[compose.Project], tmp_path: Path, faults: None
) -> None:
    never = ["CMD", "curl", "-fsS", "-o", "/dev/null", "http://localhost:9696/never-there"]
    sick = {
        "prowlarr": {
            "ports": [{"container": 9696, "host": 19696}],
            "healthcheck": {"test": never, "interval_s": 1, "start_period_s": 0},
        }
    }
    inv = faults_variant(tmp_path, sick, ["prowlarr"])
    with pytest.raises(Unhealthy) as e:
        run_02(inv, hosts, stacks=[FAULTS], health_timeout_s=5)
    msg = str(e.value)
    assert f"container {FAULT_HOST}-faults-prowlarr-1 of service prowlarr is not healthy after 5s" in msg
    assert "--- health log (last probes) ---" in msg
    assert "404" in msg
    assert "--- container log" in msg
    assert "standin prowlarr" in msg  # the container's own log, as the error shows it
    assert e.value.states[(FAULT_HOST, FAULTS, "prowlarr")].startswith("running (")


def test_a_removed_stack_goes_only_with_allow_delete(
    lab: Inventory, hosts: compose.HostPool, deployed: list[compose.Project], tmp_path: Path, faults: None
) -> None:
    run_02(faults_variant(tmp_path, RADARR, ["radarr"]), hosts, stacks=[FAULTS], health_timeout_s=60)
    gone = make_variant(tmp_path, lambda d: None, "gone.yaml")  # the lab as it is: no FAULTS stack
    plan, result = run_02(gone, hosts, stacks=[FAULTS])
    assert [(c.kind, c.target, c.action) for c in plan.changes] == [("stack", FAULTS, Action.DELETE)]
    assert [o.result for o in result.outcomes] == ["needs allow_delete"]
    assert (FAULT_HOST, FAULTS, "radarr") in ids(hosts, lab)
    folder = compose.project_folder(hosts[FAULT_HOST], compose.project_name(FAULT_HOST, FAULTS))
    assert folder is not None
    assert hosts[FAULT_HOST].run(f"test -d {folder}").ok
    _, result = run_02(gone, hosts, stacks=[FAULTS], allow_delete=True)
    assert [o.result for o in result.outcomes] == ["done"]
    assert (FAULT_HOST, FAULTS, "radarr") not in ids(hosts, lab)
    assert not hosts[FAULT_HOST].run(f"test -e {folder}").ok, "the folder is gone from the VM"
    assert not Path(folder).exists(), "and it never was on the machine"


def test_the_notebook_deploys_and_its_second_run_changes_nothing(
    lab: Inventory, hosts: compose.HostPool, deployed: list[compose.Project], tmp_path: Path
) -> None:
    def run() -> str:
        result = run_notebook(
            REPO / "notebooks" / "02_deploy_compose_core.ipynb",
            param_files=[LAB_FILE],
            parameters={"confirm": True},
            archive_dir=tmp_path / "archive",
            lock_dir=tmp_path / "locks",
            progress_bar=False,
        )
        assert result.ok
        assert result.archived is not None
        nb = nbformat.read(str(result.archived), as_version=4)
        return "\n".join(
            str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
            for c in nb.cells
            for o in c.get("outputs", [])
        )

    before = ids(hosts, lab)
    first = run()
    assert f"verified: {SERVICES} service(s) as the plan promised" in first
    second = run()
    assert f"{SERVICES} no-op" in second
    assert "nothing to do: everything is as the inventory says" in second
    assert ids(hosts, lab) == before
