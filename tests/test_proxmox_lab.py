"""Runbook 01's library against the rehearsal lab: its fakepve process over HTTPS with the lab CA.

The lab's fakepve is shared by the session (and by notebook 01, which provisions the
lab's own VMs), so these tests provision a copy of the lab's VMs under other vmids
and names with their own managed tag: to them, the lab's VMs are unmanaged and
never touched. The lab's fakepve runs in another process, so "no write calls" is
checked through what PVE itself records: every node's task list and every VM's
config digest stay the same (the in-process test in test_proxmox_api.py checks the
requests fakepve saw).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from homelab_lib import clients, proxmox
from homelab_lib.core.contract import ApplyResult
from homelab_lib.core.errors import HostKeyRejected, ProvisionFailed
from homelab_lib.core.plan import Plan
from homelab_lib.inventory import Inventory
from homelab_lib.proxmox import ProxmoxClient, SshSnippets
from tests.test_proxmox_fixtures import Hook, actions

pytestmark = pytest.mark.lab

TAG = "homelab-test"


def copy_of(lab: Inventory, vms: bool = True) -> Inventory:
    """The lab's VMs as t-NAME with vmid + 1000, managed under their own tag."""
    copies = [vm.model_copy(update={"name": f"t-{vm.name}", "vmid": vm.vmid + 1000}) for vm in lab.vms] if vms else []
    return lab.model_copy(update={"vms": copies, "proxmox": lab.proxmox.model_copy(update={"managed_tag": TAG})})


def apply(
    client: ProxmoxClient,
    inv: Inventory,
    desired: proxmox.Desired,
    plan: Plan,
    *,
    allow_delete: bool = False,
    hook: Hook | None = None,
) -> ApplyResult:
    """Runbook 01's apply step (the contract's), with confirm."""
    runbook = proxmox.ProxmoxAdapter(inv, client)
    return runbook.apply(desired, plan, confirm=True, allow_delete=allow_delete, progress=hook or Hook())


def run(client: ProxmoxClient, inv: Inventory, *, allow_delete: bool = False) -> ApplyResult:
    desired = proxmox.desired_state(inv)
    plan = proxmox.plan(desired, proxmox.observe(client, desired))
    return apply(client, inv, desired, plan, allow_delete=allow_delete)


def footprint(client: ProxmoxClient, lab: Inventory) -> tuple[dict[str, int], dict[int, str]]:
    """Every node's task count and every VM's config digest: what any change would alter."""
    tasks = {n.name: len(client.get(f"nodes/{n.name}/tasks", limit=10000) or []) for n in lab.nodes}
    digests = {
        int(r["vmid"]): str(client.get(f"nodes/{r['node']}/qemu/{r['vmid']}/config")["digest"])
        for r in client.get("cluster/resources", type="vm")
    }
    return tasks, digests


@pytest.fixture
def lab_client(lab: Inventory) -> Iterator[ProxmoxClient]:
    client = clients.proxmox_client(lab)
    run(client, copy_of(lab, vms=False), allow_delete=True)  # leftovers of an interrupted session
    yield client
    run(client, copy_of(lab, vms=False), allow_delete=True)


def test_first_run_creates_every_vm_second_run_changes_nothing_then_decommission(
    lab: Inventory, lab_client: ProxmoxClient
) -> None:
    inv = copy_of(lab)
    desired = proxmox.desired_state(inv)
    plan = proxmox.plan(desired, proxmox.observe(lab_client, desired))
    assert actions(plan) == {f"t-{vm.name}": "create" for vm in lab.vms}
    first = apply(lab_client, inv, desired, plan)
    assert first.applied
    assert len(first.steps) == 5 * len(lab.vms)  # clone, configure, grow, start, the guest agent's IP
    assert dict(first.facts) == {f"t-{vm.name}": vm.address for vm in lab.vms}

    before = footprint(lab_client, lab)
    again = proxmox.plan(desired, proxmox.observe(lab_client, desired))
    assert again.empty, again.table().to_string()
    second = apply(lab_client, inv, desired, again)
    assert not second.applied
    report = proxmox.vm_status(lab_client, desired)
    assert footprint(lab_client, lab) == before  # no task started, no config written
    assert [(r.name, r.status, r.ip) for r in report] == [(f"t-{vm.name}", "running", vm.address) for vm in lab.vms]

    others = {vmid: digest for vmid, digest in before[1].items() if vmid < 1000 or vmid >= 9000}
    result = run(lab_client, copy_of(lab, vms=False), allow_delete=True)
    assert sum("destroyed" in step for step in result.steps) == len(lab.vms)
    _tasks, digests = footprint(lab_client, lab)
    assert not [vmid for vmid in digests if 1000 <= vmid < 9000]
    assert {vmid: d for vmid, d in digests.items() if vmid in others} == others  # the lab's own VMs untouched


def test_a_fault_mid_run_then_a_clean_re_run_converges(lab: Inventory, lab_client: ProxmoxClient) -> None:
    """The lab's fakepve has no fault switch over HTTP; the fault here is the run itself dying right
    after a clone (as a killed kernel would), which leaves the most awkward half-made VM."""
    base = copy_of(lab)
    inv = base.model_copy(update={"proxmox": base.proxmox.model_copy(update={"max_parallel": 1})})
    victim = f"t-{lab.vms[1].name}"

    def crash(vm: str, note: str) -> None:
        if vm == victim and note.startswith("cloned"):
            raise RuntimeError("the kernel died")

    desired = proxmox.desired_state(inv)
    plan = proxmox.plan(desired, proxmox.observe(lab_client, desired))
    with pytest.raises(ProvisionFailed) as failed:
        apply(lab_client, inv, desired, plan, hook=Hook(crash))
    assert f"VM {victim}" in str(failed.value)
    assert "unexpected RuntimeError: the kernel died" in str(failed.value)
    left = proxmox.plan(desired, proxmox.observe(lab_client, desired))
    expected = {f"t-{vm.name}": "create" for vm in lab.vms}
    expected[f"t-{lab.vms[0].name}"] = "no-op"
    expected[victim] = "update"  # cloned but never configured: still known as ours, by its description
    assert actions(left) == expected
    assert {"tags", "disk_gib", "status"} <= {f.name for c in left.changes if c.target == victim for f in c.fields}
    apply(lab_client, inv, desired, left)
    assert proxmox.plan(desired, proxmox.observe(lab_client, desired)).empty


def test_snippets_over_ssh_to_a_lab_endpoint(lab: Inventory, tmp_path: Path) -> None:
    vm = lab.vms[0]  # the lab's SSH endpoints are real OpenSSH servers on this machine
    store = SshSnippets(
        storage="local",
        folder=str(tmp_path / "snippets"),
        hosts={vm.node: vm.address},
        user=lab.ssh.user,
        port=lab.ssh.port,
        private_key=lab.ssh.private_key,
        known_hosts=lab.ssh.known_hosts,
    )
    document = proxmox.desired_state(lab).vm(vm.name).user_data
    store.put(vm.node, "homelab-test.yaml", document)
    store.put(vm.node, "homelab-test.yaml", document)  # idempotent
    assert (tmp_path / "snippets" / "homelab-test.yaml").read_text() == document
    assert oct((tmp_path / "snippets" / "homelab-test.yaml").stat().st_mode)[-3:] == "644"

    (tmp_path / "empty_known_hosts").write_text("")
    stranger = SshSnippets(
        storage="local",
        folder=str(tmp_path / "snippets"),
        hosts={vm.node: vm.address},
        user=lab.ssh.user,
        port=lab.ssh.port,
        private_key=lab.ssh.private_key,
        known_hosts=tmp_path / "empty_known_hosts",
    )
    with pytest.raises(HostKeyRejected, match=rf"node {vm.node} \(ssh .*@{vm.address}:{lab.ssh.port}\)"):
        stranger.put(vm.node, "x.yaml", document)
