"""The inventory's VMs in Proxmox's terms: what each VM's config should be."""

from __future__ import annotations

from collections.abc import Sequence

from homelab_lib.core.errors import ConfigError, Problem
from homelab_lib.inventory.checks import node_loads
from homelab_lib.inventory.model import Inventory, Vm
from homelab_lib.proxmox import cloudinit
from homelab_lib.proxmox.state import MARKER, Desired, DesiredVm, NodeLimit, Settings


def wait_for_agent(inv: Inventory) -> bool:
    """Whether apply waits for each started VM's guest agent (``proxmox.guest_agent``, default ``required``)."""
    return inv.proxmox.guest_agent == "required"


def ssh_keys(inv: Inventory) -> list[str]:
    """The public keys cloud-init authorises (from ``ssh.public_key``); none when not given.

    Raises:
        ConfigError: the public key file is named but cannot be read.
    """
    path = inv.ssh.public_key
    if path is None:
        return []
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(
            [Problem(str(path), 0, "ssh.public_key", f"cannot read the public key ({e.strerror}); fix the path")]
        ) from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def desired_vm(inv: Inventory, vm: Vm, keys: Sequence[str]) -> DesiredVm:
    """One VM's wanted settings."""
    px = inv.proxmox
    network = inv.network
    gateway = f",gw={network.gateway}" if network.gateway else ""
    document = cloudinit.user_data(inv, vm, list(keys))
    snippet = cloudinit.snippet_name(vm, document) if px.snippets else ""
    notes = (vm.description.strip() + "\n\n" if vm.description.strip() else "") + MARKER
    return DesiredVm(
        name=vm.name,
        vmid=vm.vmid,
        node=vm.node,
        role=vm.role,
        cores=vm.cores,
        memory=vm.memory_mib,
        disk_gib=vm.disk_gib,
        bridge=px.bridge,
        onboot=vm.onboot,
        tags=tuple(sorted({px.managed_tag, vm.role, *vm.tags})),
        description=notes,
        ciuser=inv.ssh.user,
        sshkeys="\n".join(keys),
        ipconfig0=f"ip={vm.ip}{gateway}",
        nameserver=" ".join(str(d) for d in network.dns),
        searchdomain=network.domain,
        cicustom=f"user={px.snippets.storage}:snippets/{snippet}" if px.snippets else "",
        user_data=document,
        snippet=snippet,
        address=vm.address,
    )


def desired_state(inv: Inventory, *, only_vms: Sequence[str] = ()) -> Desired:
    """What the inventory wants of the cluster.

    Args:
        inv: the inventory.
        only_vms: limit the run to these VM names (empty: every VM). A name that is not in the
            inventory is kept: it may be a VM to decommission.

    Returns:
        The desired VMs (in inventory order), node limits and settings.

    Raises:
        ConfigError: the SSH public key cannot be read.
    """
    keys = ssh_keys(inv)
    only = tuple(dict.fromkeys(only_vms))
    vms = tuple(desired_vm(inv, vm, keys) for vm in inv.vms if not only or vm.name in only)
    px = inv.proxmox
    settings = Settings(
        template=px.template,
        clone=px.clone,
        storage=px.storage,
        managed_tag=px.managed_tag,
        task_timeout_s=px.task_timeout_s,
        agent_timeout_s=px.agent_timeout_s,
        wait_agent=wait_for_agent(inv),
        max_parallel=px.max_parallel,
        snippets_storage=px.snippets.storage if px.snippets else "",
    )
    limits = tuple(NodeLimit(n.node, n.cores_limit, n.memory_limit_mib) for n in node_loads(inv))
    return Desired(vms, limits, settings, only)
