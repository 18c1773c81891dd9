"""Cloud-init for the VMs: the API's ``ci*`` options, and role user-data documents.

Every VM gets its cloud-init settings through the Proxmox API's ``ci*`` options
(user, SSH keys, IP, DNS). A role that needs more (Docker hosts install Docker
Engine and the Compose plugin; the K3s VM loads the kernel modules and sysctls
K3s needs) gets a ``#cloud-config`` user-data document, rendered here and
delivered as a snippet (see :mod:`homelab_lib.clients.snippets`) referenced by
``cicustom``. Proxmox then uses that document *instead of* the user part it
would generate, so the document carries the user and keys as well.

The snippet's file name holds a hash of its content: a changed document is a
new file and a changed ``cicustom``, which the plan shows as a field diff; and
since Proxmox derives the NoCloud instance-id from the cloud-init settings,
cloud-init applies the new document at the next boot.
"""

from __future__ import annotations

import hashlib

import yaml

from homelab_lib.inventory.model import Inventory, Vm

DOCKER_REPO = "deb [signed-by=$KEY_FILE] https://download.docker.com/linux/debian $RELEASE stable"
DOCKER_KEY = "9DC858229FC7DD38854AE2D88D81803C0EBFCD88"  # Docker's release key, as docs.docker.com gives it
DOCKER_PACKAGES = ["docker-ce", "docker-ce-cli", "containerd.io", "docker-compose-plugin"]
K3S_PACKAGES = ["curl", "nfs-common", "open-iscsi"]
K3S_MODULES = ["overlay", "br_netfilter"]
K3S_SYSCTL = {
    "net.ipv4.ip_forward": "1",
    "net.bridge.bridge-nf-call-iptables": "1",
    "net.bridge.bridge-nf-call-ip6tables": "1",
}


def user_data(inv: Inventory, vm: Vm, ssh_keys: list[str]) -> str:
    """The ``#cloud-config`` document for a VM's role.

    Args:
        inv: the inventory (SSH user, network domain).
        vm: the VM.
        ssh_keys: the public keys to authorise for the SSH user.

    Returns:
        The document, starting with ``#cloud-config``; deterministic for the same inputs.
    """
    user = inv.ssh.user
    doc: dict[str, object] = {
        "hostname": vm.name,
        "fqdn": f"{vm.name}.{inv.network.domain}",
        "manage_etc_hosts": True,
    }
    if user == "root":
        doc["disable_root"] = False
        doc["users"] = [{"name": "root", "ssh_authorized_keys": ssh_keys}] if ssh_keys else ["default"]
    else:
        entry: dict[str, object] = {
            "name": user,
            "groups": ["sudo"] + (["docker"] if vm.role == "docker" else []),
            "shell": "/bin/bash",
            "sudo": "ALL=(ALL) NOPASSWD:ALL",
            "lock_passwd": True,
        }
        if ssh_keys:
            entry["ssh_authorized_keys"] = ssh_keys
        doc["users"] = [entry]
    packages = ["qemu-guest-agent"]
    runcmd: list[list[str]] = [["systemctl", "enable", "--now", "qemu-guest-agent"]]
    files: list[dict[str, str]] = [
        {"path": "/etc/homelab/role", "content": f"{vm.role}\n", "permissions": "0644"},
    ]
    if vm.role == "docker":
        if user != "root":
            doc["groups"] = ["docker"]  # made before the users, so the user can join it
        doc["apt"] = {"sources": {"docker.list": {"source": DOCKER_REPO, "keyid": DOCKER_KEY}}}
        packages += DOCKER_PACKAGES
        runcmd.append(["systemctl", "enable", "--now", "docker"])
    else:
        packages += K3S_PACKAGES
        files.append(
            {"path": "/etc/modules-load.d/k3s.conf", "content": "".join(m + "\n" for m in K3S_MODULES)},
        )
        files.append(
            {"path": "/etc/sysctl.d/90-k3s.conf", "content": "".join(f"{k} = {v}\n" for k, v in K3S_SYSCTL.items())},
        )
        runcmd += [["modprobe", m] for m in K3S_MODULES]
        runcmd += [["sysctl", "--system"], ["swapoff", "-a"], ["sed", "-i", "/\\sswap\\s/d", "/etc/fstab"]]
    packages += [p for p in vm.packages if p not in packages]
    doc["package_update"] = True
    doc["packages"] = packages
    doc["write_files"] = files
    doc["runcmd"] = runcmd
    body = yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=200)
    return "#cloud-config\n" + body


def snippet_name(vm: Vm, document: str) -> str:
    """The snippet's file name: the VM's name and a hash of the document (a change is a new file)."""
    digest = hashlib.sha256(document.encode()).hexdigest()[:12]
    return f"homelab-{vm.name}-{digest}.yaml"
