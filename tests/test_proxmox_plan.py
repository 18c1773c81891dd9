"""The Proxmox plan as a pure function of (desired, observed): every rule, no server needed."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

import pytest

from homelab_lib import proxmox
from homelab_lib.core.errors import ConfigError
from homelab_lib.core.plan import Action
from homelab_lib.proxmox import config_params
from homelab_lib.proxmox.observe import effective_config
from homelab_lib.proxmox.state import (
    Cluster,
    Desired,
    DesiredVm,
    NodeState,
    StorageState,
    VmState,
    norm_ipconfig,
    parse_size,
    split_tags,
    with_net_option,
    with_size,
)
from tests.test_proxmox_fixtures import PUBKEY, actions, fields, lab_inventory

NODES = ("drowzee", "sleepy", "hypno", "nappy")


@pytest.fixture
def desired(tmp_path: Path) -> Desired:
    (tmp_path / "id.pub").write_text(PUBKEY + "\n")
    inv = lab_inventory()
    inv = inv.model_copy(update={"ssh": inv.ssh.model_copy(update={"public_key": tmp_path / "id.pub"})})
    return proxmox.desired_state(inv)


def templates() -> list[VmState]:
    return [VmState(9000 + i, "debian-12-cloudinit", n, "stopped", True, ()) for i, n in enumerate(NODES)]


def built(vm: DesiredVm, *, status: str = "running", **config: Any) -> VmState:
    """The VM as apply leaves it: its config says exactly what the inventory wants."""
    cfg = {
        "name": vm.name,
        "cores": str(vm.cores),
        "memory": str(vm.memory),
        "scsi0": f"local-lvm:vm-{vm.vmid}-disk-0,iothread=1,size={vm.disk_gib}G",
        "ide2": f"local-lvm:vm-{vm.vmid}-cloudinit,media=cdrom",
        "boot": "order=scsi0",
        "net0": f"virtio=BC:24:11:00:00:01,bridge={vm.bridge}",
        "onboot": "1" if vm.onboot else "0",
        "agent": "1",
        "tags": ";".join(vm.tags),
        "description": vm.description,
        "ciuser": vm.ciuser,
        "sshkeys": quote(vm.sshkeys, safe=""),
        "ipconfig0": vm.ipconfig0,
        "nameserver": vm.nameserver,
        "searchdomain": vm.searchdomain,
    }
    cfg.update({k: str(v) for k, v in config.items() if v is not None})
    for k in [k for k, v in config.items() if v is None]:
        cfg.pop(k, None)
    return VmState(
        vm.vmid,
        vm.name,
        vm.node,
        status,
        False,
        tuple(split_tags(cfg.get("tags", ""))),
        config=MappingProxyType(cfg),
        read=True,
        maxmem=vm.memory * 1024**2,
        maxcpu=vm.cores,
    )


def cluster(*vms: VmState, quorate: bool = True, offline: tuple[str, ...] = ()) -> Cluster:
    nodes = tuple(NodeState(n, n not in offline) for n in NODES)
    stores = tuple(StorageState(n, "local-lvm", ("images", "rootdir"), True, 10**12, False) for n in NODES)
    return Cluster(quorate, nodes, (*templates(), *vms), stores)


def test_empty_cluster_plans_a_create_per_vm_in_vmid_order(desired: Desired) -> None:
    plan = proxmox.plan(desired, cluster())
    assert [(c.action, c.target, c.where) for c in plan.changes] == [
        (Action.CREATE, "docker-drowzee", "drowzee"),
        (Action.CREATE, "docker-sleepy", "sleepy"),
        (Action.CREATE, "docker-hypno", "hypno"),
        (Action.CREATE, "k3s-nappy", "nappy"),
    ]
    assert "full clone of template 9000" in plan.changes[0].reason


def test_built_vms_are_no_ops(desired: Desired) -> None:
    plan = proxmox.plan(desired, cluster(*(built(vm) for vm in desired.vms)))
    assert plan.empty
    assert plan.summary() == "4 no-op"


def test_field_diff_for_every_managed_setting(desired: Desired) -> None:
    vm = desired.vm("docker-sleepy")
    have = built(
        vm,
        status="stopped",
        cores=1,
        memory=2048,
        scsi0="local-lvm:vm-120-disk-0,size=8G",
        net0="virtio=BC:24:11:00:00:01,bridge=vmbr9",
        onboot=0,
        tags="homelab-managed",
        ipconfig0="ip=dhcp",
        sshkeys=None,
        nameserver=None,
    )
    plan = proxmox.plan(desired, cluster(*(built(v) for v in desired.vms if v is not vm), have))
    assert actions(plan)["docker-sleepy"] == "update"
    assert fields(plan, "docker-sleepy") == {
        "cores",
        "memory",
        "disk_gib",
        "bridge",
        "onboot",
        "tags",
        "sshkeys",
        "ipconfig0",
        "nameserver",
        "status",
    }
    change = next(c for c in plan.changes if c.target == "docker-sleepy")
    assert any(str(f) == "disk_gib: 8 -> 32" for f in change.fields)
    assert any(str(f) == "status: 'stopped' -> 'running'" for f in change.fields)


def test_equal_settings_in_other_spellings_are_no_ops(desired: Desired) -> None:
    vm = desired.vm("docker-drowzee")
    have = built(
        vm,
        memory="current=4096",  # PVE 9's memory property string
        tags="Homelab-Managed, docker",  # case, separators
        ipconfig0=",".join(reversed(vm.ipconfig0.split(","))),  # option order
        scsi0="local-lvm:vm-110-disk-0,size=32768M",
        agent="enabled=1,fstrim_cloned_disks=1",
    )
    plan = proxmox.plan(desired, cluster(*(built(v) for v in desired.vms if v is not vm), have))
    assert plan.empty, plan.table().to_string()


def test_unmanaged_vm_on_a_wanted_vmid_is_a_conflict(desired: Desired) -> None:
    stranger = VmState(120, "nas", "sleepy", "running", False, ("media",), config=MappingProxyType({"name": "nas"}))
    stranger = replace(stranger, read=True)
    plan = proxmox.plan(desired, cluster(stranger))
    change = next(c for c in plan.changes if c.target == "docker-sleepy")
    assert change.action == Action.CONFLICT
    assert "held by VM 'nas'" in change.reason
    assert "does not manage" in change.reason


def test_template_on_a_wanted_vmid_is_a_conflict(desired: Desired) -> None:
    tpl = VmState(110, "other-template", "drowzee", "stopped", True, ())
    plan = proxmox.plan(desired, cluster(tpl))
    assert "is the template" in next(c.reason for c in plan.changes if c.target == "docker-drowzee")


def test_node_change_and_disk_shrink_are_conflicts(desired: Desired) -> None:
    moved = replace(built(desired.vm("docker-drowzee")), node="sleepy")
    big = built(desired.vm("docker-hypno"), scsi0="local-lvm:vm-130-disk-0,size=64G")
    plan = proxmox.plan(desired, cluster(moved, big))
    by = {c.target: c for c in plan.changes}
    assert by["docker-drowzee"].action == Action.CONFLICT
    assert "node change: the VM is on sleepy" in by["docker-drowzee"].reason
    assert by["docker-hypno"].action == Action.CONFLICT
    assert "disk shrink: scsi0 is 64 GiB" in by["docker-hypno"].reason


def test_managed_vm_of_the_same_name_with_another_vmid_is_a_conflict(desired: Desired) -> None:
    twin = replace(built(desired.vm("docker-hypno")), vmid=131)
    plan = proxmox.plan(desired, cluster(twin))
    by = {c.target: c for c in plan.changes}
    assert by["docker-hypno"].action == Action.CONFLICT
    assert "already exists as vmid 131" in by["docker-hypno"].reason
    assert len([c for c in plan.changes if c.target == "docker-hypno"]) == 1  # no delete of the twin


def test_offline_and_unknown_nodes_are_conflicts(desired: Desired) -> None:
    offline = replace(built(desired.vm("docker-sleepy")), config=MappingProxyType({}), read=False, status="unknown")
    plan = proxmox.plan(desired, cluster(offline, offline=("sleepy", "hypno")))
    by = {c.target: c for c in plan.changes}
    assert "node sleepy is offline" in by["docker-sleepy"].reason
    assert "node hypno is offline" in by["docker-hypno"].reason
    gone = replace(desired, nodes=desired.nodes, vms=(replace(desired.vms[0], node="ghost"),))
    plan = proxmox.plan(gone, cluster())
    assert "node ghost is not in the cluster" in plan.changes[0].reason


def test_missing_template_or_storage_is_a_conflict_for_creates(desired: Desired) -> None:
    no_tpl = Cluster(True, cluster().nodes, (), cluster().storages)
    plan = proxmox.plan(desired, no_tpl)
    assert all(c.action == Action.CONFLICT for c in plan.changes)
    assert "template 'debian-12-cloudinit' not found on any online node" in plan.changes[0].reason
    no_store = replace(cluster(), storages=())
    assert "storage 'local-lvm'" in proxmox.plan(desired, no_store).changes[0].reason


def test_template_on_another_node_full_clone_yes_linked_no(desired: Desired) -> None:
    only_one = replace(cluster(), vms=(templates()[0],))
    plan = proxmox.plan(desired, only_one)
    assert actions(plan)["docker-sleepy"] == "conflict"  # local storage: PVE cannot clone across nodes to it
    assert "storage 'local-lvm' is not shared" in plan.changes[1].reason
    shared = replace(only_one, storages=tuple(replace(s, shared=True) for s in only_one.storages))
    plan = proxmox.plan(desired, shared)
    assert all(c.action == Action.CREATE for c in plan.changes)
    assert "template 9000 (debian-12-cloudinit on drowzee)" in plan.changes[1].reason
    linked = replace(desired, settings=replace(desired.settings, clone="linked"))
    plan = proxmox.plan(linked, shared)
    assert actions(plan) == {
        "docker-drowzee": "create",
        "docker-sleepy": "conflict",
        "docker-hypno": "conflict",
        "k3s-nappy": "conflict",
    }
    assert "a linked clone must stay on the template's node" in plan.changes[1].reason


def test_capacity_counts_the_vms_already_on_the_node(desired: Desired) -> None:
    # drowzee: 16 GiB less 2 reserved = 14336 MiB; docker-drowzee asks 4096; a stranger holds 12 GiB.
    stranger = VmState(500, "big", "drowzee", "running", False, (), maxmem=12 * 1024**3, maxcpu=2)
    plan = proxmox.plan(desired, cluster(stranger))
    node = next(c for c in plan.changes if c.kind == "node")
    assert node.target == "drowzee"
    assert node.action == Action.CONFLICT
    assert "memory 16384 MiB > 14336 MiB" in node.reason
    assert "not in the inventory" in node.reason
    assert plan.changes[0] is node  # node conflicts come first
    # no work on the node: no capacity conflict (the plan only guards what it would add)
    done = cluster(stranger, *(built(vm) for vm in desired.vms))
    assert not [c for c in proxmox.plan(desired, done).changes if c.kind == "node"]


def test_lost_quorum_is_a_conflict_only_when_there_is_work(desired: Desired) -> None:
    plan = proxmox.plan(desired, cluster(quorate=False))
    assert ("quorum", Action.CONFLICT) in [(c.target, c.action) for c in plan.changes]
    idle = proxmox.plan(desired, cluster(*(built(vm) for vm in desired.vms), quorate=False))
    assert idle.empty


def test_managed_vms_left_out_of_the_inventory_are_deletes_last(desired: Desired) -> None:
    old = replace(built(desired.vm("docker-hypno")), vmid=150, name="docker-old")
    marker_only = replace(built(desired.vm("docker-hypno"), tags=""), vmid=151, name="half-made", tags=())
    stranger = VmState(160, "nas", "hypno", "running", False, (), read=True)
    plan = proxmox.plan(desired, cluster(*(built(vm) for vm in desired.vms), old, marker_only, stranger))
    assert plan.changes[-1].target == "docker-old"
    assert plan.changes[-1].action == Action.DELETE
    assert actions(plan)["half-made"] == "conflict"
    assert "nas" not in actions(plan)  # unmanaged VMs are never touched
    assert plan.applicable() == []
    assert [c.target for c in plan.applicable(allow_delete=True)] == ["docker-old"]


def test_only_vms_limits_the_plan(desired: Desired, tmp_path: Path) -> None:
    (tmp_path / "id.pub").write_text(PUBKEY)
    inv = lab_inventory()
    inv = inv.model_copy(update={"ssh": inv.ssh.model_copy(update={"public_key": tmp_path / "id.pub"})})
    some = proxmox.desired_state(inv, only_vms=["docker-hypno", "docker-old"])
    old = replace(built(desired.vm("docker-hypno")), vmid=150, name="docker-old")
    other = replace(built(desired.vm("docker-hypno")), vmid=151, name="docker-other")
    assert actions(proxmox.plan(some, cluster(old, other))) == {"docker-hypno": "create", "docker-old": "delete"}
    wrong = proxmox.desired_state(inv, only_vms=["docker-typo"])
    with pytest.raises(ConfigError, match=r"only_vms: no VM named docker-typo"):
        proxmox.plan(wrong, cluster())


def test_locks_and_pending_changes_are_noted(desired: Desired) -> None:
    vm = desired.vm("docker-drowzee")
    locked = replace(built(vm, cores=1), lock="backup")
    pending = replace(built(desired.vm("docker-sleepy")), pending=("cores", "memory"))
    plan = proxmox.plan(desired, cluster(locked, pending))
    by = {c.target: c for c in plan.changes}
    assert by["docker-drowzee"].action == Action.UPDATE
    assert "locked (backup)" in by["docker-drowzee"].reason
    assert by["docker-sleepy"].action == Action.NOOP
    assert "pending until the VM reboots: cores, memory" in by["docker-sleepy"].reason


def test_plan_table_is_deterministic_and_short(desired: Desired) -> None:
    vm = desired.vm("docker-drowzee")
    have = built(vm, sshkeys=quote("ssh-ed25519 AAAAold old@host", safe=""), description="hand-written notes")
    plan = proxmox.plan(desired, cluster(have))
    table = plan.table()
    assert list(table.columns) == ["action", "kind", "target", "where", "details"]
    details = table.loc[table.target == "docker-drowzee", "details"].item()
    assert "sshkeys: '1 key(s): old@host' -> '1 key(s): tests@homelab'" in details
    assert "description: 'hand-written notes' -> 'managed by homelab runbooks (01_provision_nodes)'" in details
    assert table.equals(proxmox.plan(desired, cluster(have)).table())


def test_config_params_send_only_what_differs_as_pve_takes_it(desired: Desired) -> None:
    vm = desired.vm("docker-sleepy")
    have = built(vm, cores=1, onboot=0, nameserver="9.9.9.9", net0="e1000=BC:24:11:AA:BB:CC,bridge=vmbr9,firewall=1")
    assert config_params(vm, have) == {
        "cores": 2,
        "onboot": 1,
        "nameserver": "127.0.0.1",
        "net0": "e1000=BC:24:11:AA:BB:CC,bridge=vmbr0,firewall=1",
    }
    fresh = built(vm, sshkeys=None, tags=None, cicustom="user=local:snippets/by-hand.yaml")
    params = config_params(vm, fresh)
    assert params["sshkeys"] == quote(PUBKEY, safe="")
    assert "%20" in params["sshkeys"]
    assert params["tags"] == "docker;homelab-managed"
    assert "cicustom" not in params  # no snippets storage in the inventory: a hand-set cicustom is left alone
    assert config_params(vm, fresh, {"tags"}) == {"tags": "docker;homelab-managed"}


def test_settings_the_inventory_does_not_give_are_left_alone(desired: Desired) -> None:
    vm = replace(desired.vm("docker-hypno"), sshkeys="", nameserver="")
    have = built(vm, sshkeys=quote("ssh-ed25519 AAAAhand by@hand", safe=""), nameserver="9.9.9.9", cicustom="x")
    plan = proxmox.plan(replace(desired, vms=(vm,)), cluster(have))
    assert plan.empty
    assert config_params(vm, have) == {}


def test_normalisers() -> None:
    assert split_tags("B;a, c a") == ["a", "b", "c"]
    assert norm_ipconfig("gw=1.1.1.1,ip=1.1.1.2/24") == "gw=1.1.1.1,ip=1.1.1.2/24"
    assert parse_size("local-lvm:vm-1-disk-0,size=1.5T,ssd=1") == int(1.5 * 1024**4)
    assert parse_size("local-lvm:vm-1-disk-0") == 0
    assert with_size("local-lvm:vm-1-disk-0,size=2G,ssd=1", 32) == "local-lvm:vm-1-disk-0,ssd=1,size=32G"
    assert with_net_option("virtio=AA,bridge=vmbr0", "bridge", "vmbr1") == "virtio=AA,bridge=vmbr1"
    config, pending = effective_config(
        [
            {"key": "cores", "value": 2, "pending": 4},
            {"key": "memory", "value": "2048"},
            {"key": "cicustom", "value": "x", "delete": 1},
        ]
    )
    assert config == {"cores": "4", "memory": "2048"}
    assert pending == ("cicustom", "cores")
