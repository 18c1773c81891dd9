"""The inventory's VMs as they run now: node, vmid, status, IP, size (for the final table)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from homelab_lib.clients.proxmox import ProxmoxClient
from homelab_lib.proxmox.apply import ask_agent, ipconfig_address
from homelab_lib.proxmox.observe import observe
from homelab_lib.proxmox.state import GIB, Cluster, Desired


@dataclass(frozen=True)
class VmReport:
    """One VM of the inventory as the cluster has it.

    Attributes:
        name: the VM's name.
        node: where it is ('' when missing).
        vmid: its id.
        status: running, stopped, unknown, or missing.
        ip: its address ('-' when unknown).
        ip_source: where the address comes from: ``agent`` (the guest reported it), ``ipconfig0``
            (its cloud-init setting, when the agent is not asked), or ``-``.
        cores: vCPU cores.
        memory_mib: memory in MiB.
        disk_gib: boot disk size in GiB.
        pending: config keys waiting for a reboot.
    """

    name: str
    node: str
    vmid: int
    status: str
    ip: str
    ip_source: str
    cores: int
    memory_mib: int
    disk_gib: float
    pending: tuple[str, ...] = ()


def vm_status(
    client: ProxmoxClient,
    desired: Desired,
    *,
    ips: Mapping[str, str] | None = None,
    cluster: Cluster | None = None,
) -> list[VmReport]:
    """Read each inventory VM's state; only reads.

    Args:
        client: the API.
        desired: the VMs to report (inventory order).
        ips: addresses already reported by the guest agent during apply (VM name -> IP).
        cluster: the cluster as just observed (read here when not given).

    Returns:
        One report per desired VM, in inventory order.

    Raises:
        ProxmoxError: the cluster could not be read.
    """
    cluster = cluster if cluster is not None else observe(client, desired)
    known = dict(ips or {})
    out = []
    for vm in desired.vms:
        have = cluster.by_vmid(vm.vmid)
        if have is None or have.template:
            out.append(VmReport(vm.name, "", vm.vmid, "missing", "-", "-", 0, 0, 0.0))
            continue
        fields = have.fields()
        ip, source = "-", "-"
        if vm.name in known:
            ip, source = known[vm.name], "agent"
        elif desired.settings.wait_agent and have.status == "running":
            found = ask_agent(client, have.node, have.vmid, have.name)
            if found:
                ip, source = (vm.address if vm.address in found else found[0]), "agent"
        elif not desired.settings.wait_agent:
            ip = ipconfig_address(have.config.get("ipconfig0", "")) or "-"
            source = "ipconfig0" if ip != "-" else "-"
        disk = have.disk
        out.append(
            VmReport(
                name=have.name,
                node=have.node,
                vmid=have.vmid,
                status=have.status,
                ip=ip,
                ip_source=source,
                cores=int(fields["cores"]),
                memory_mib=int(fields["memory"]),
                disk_gib=round(disk.size_bytes / GIB, 2) if disk else 0.0,
                pending=have.pending,
            )
        )
    return out
