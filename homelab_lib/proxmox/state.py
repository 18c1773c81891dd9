"""What the inventory wants and what the cluster has, as small frozen dataclasses.

:class:`Desired` is built from the inventory (:func:`homelab_lib.proxmox.desired.desired_state`);
:class:`Cluster` is what :func:`homelab_lib.proxmox.observe.observe` read from the API.
Both expose the same comparable fields per VM (:data:`FIELDS`), normalised so
that equal settings compare equal however PVE spells them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import unquote

from homelab_lib.core.errors import NotFound

GIB = 1024**3
# The fields a plan compares, in the order its table shows them.
FIELDS = (
    "name",
    "cores",
    "memory",
    "disk_gib",
    "bridge",
    "onboot",
    "agent",
    "tags",
    "description",
    "ciuser",
    "sshkeys",
    "ipconfig0",
    "nameserver",
    "searchdomain",
    "cicustom",
    "status",
)
# Fields that are VM config keys of the same name (set with one config request); the others are
# the disk (resized), the bridge (inside net0) and the power state.
CONFIG_FIELDS = tuple(f for f in FIELDS if f not in ("disk_gib", "bridge", "status"))
DRIVE_KEY = re.compile(r"^(scsi|virtio|sata|ide)\d+$")
MARKER = "managed by homelab runbooks (01_provision_nodes)"


@dataclass(frozen=True)
class DesiredVm:
    """One VM as the inventory wants it, in Proxmox's terms.

    Attributes:
        name: VM name (also its hostname).
        vmid: its id.
        node: the node it lives on.
        role: docker or k3s.
        cores: vCPU cores.
        memory: MiB.
        disk_gib: size of the boot disk, GiB (grown, never shrunk).
        bridge: the bridge of net0.
        onboot: start with the node.
        tags: Proxmox tags, sorted (the managed tag, the role, the inventory's).
        description: the VM's notes; end with :data:`MARKER`.
        ciuser: cloud-init user.
        sshkeys: cloud-init authorised keys, one per line ('' when not given: left as the VM has them).
        ipconfig0: cloud-init IP of net0 (``ip=CIDR,gw=GW``).
        nameserver: DNS servers, space-separated ('' when not given: left as the VM has them).
        searchdomain: DNS search domain.
        cicustom: ``user=STORAGE:snippets/FILE`` when role user-data is delivered, else '' (left alone).
        user_data: the role's ``#cloud-config`` document (always rendered).
        snippet: the snippet file name of user_data ('' when not delivered).
        address: the IP address without prefix.
    """

    name: str
    vmid: int
    node: str
    role: str
    cores: int
    memory: int
    disk_gib: int
    bridge: str
    onboot: bool
    tags: tuple[str, ...]
    description: str
    ciuser: str
    sshkeys: str
    ipconfig0: str
    nameserver: str
    searchdomain: str
    cicustom: str
    user_data: str
    snippet: str
    address: str

    def fields(self) -> dict[str, Any]:
        """The comparable fields (:data:`FIELDS`), normalised; None for a field the inventory leaves
        alone (no SSH key given, no DNS servers, no snippets storage: what the VM has is kept)."""
        return {
            "name": self.name,
            "cores": self.cores,
            "memory": self.memory,
            "disk_gib": self.disk_gib,
            "bridge": self.bridge,
            "onboot": self.onboot,
            "agent": True,
            "tags": ";".join(self.tags),
            "description": self.description,
            "ciuser": self.ciuser,
            "sshkeys": norm_keys(self.sshkeys) or None,
            "ipconfig0": norm_ipconfig(self.ipconfig0),
            "nameserver": " ".join(self.nameserver.split()) or None,
            "searchdomain": self.searchdomain,
            "cicustom": self.cicustom or None,
            "status": "running",
        }


@dataclass(frozen=True)
class NodeLimit:
    """What a node may give its VMs, from the inventory (capacity times overcommit)."""

    name: str
    cores_limit: float
    memory_limit_mib: float


@dataclass(frozen=True)
class Settings:
    """How VMs are made and waited for (from ``proxmox:`` of the inventory)."""

    template: str
    clone: Literal["full", "linked"]
    storage: str
    managed_tag: str
    task_timeout_s: float
    agent_timeout_s: float
    wait_agent: bool
    max_parallel: int
    snippets_storage: str


@dataclass(frozen=True)
class Desired:
    """Everything the plan and apply need from the inventory.

    Attributes:
        vms: the VMs in scope, in inventory order.
        nodes: every node's limits.
        settings: how VMs are made.
        only: the VM names the run is limited to (empty: all).
    """

    vms: tuple[DesiredVm, ...]
    nodes: tuple[NodeLimit, ...]
    settings: Settings
    only: tuple[str, ...] = ()

    def vm(self, name: str) -> DesiredVm:
        """The desired VM of this name.

        Raises:
            NotFound: no VM of that name is in scope (also a KeyError).
        """
        for vm in self.vms:
            if vm.name == name:
                return vm
        raise NotFound(name, what="VM", known=[vm.name for vm in self.vms], where="proxmox desired state")


@dataclass(frozen=True)
class Disk:
    """A VM's boot disk: config key, volume and size."""

    key: str
    volume: str
    size_bytes: int
    value: str


@dataclass(frozen=True)
class VmState:
    """One VM (or template) as the cluster has it.

    Attributes:
        vmid: its id.
        name: its name.
        node: the node it is on.
        status: running, stopped, or unknown (node offline).
        template: True for a template.
        tags: its tags, sorted.
        lock: PVE's lock (clone, backup, snapshot...), '' if none.
        maxmem: memory in bytes (from the cluster's resources).
        maxcpu: vCPUs (from the cluster's resources).
        config: the config with pending values applied ('' keys absent); empty when not read.
        pending: the config keys whose new value waits for a reboot.
        read: True when the config was read (the node was reachable).
    """

    vmid: int
    name: str
    node: str
    status: str
    template: bool
    tags: tuple[str, ...]
    lock: str = ""
    maxmem: int = 0
    maxcpu: int = 0
    config: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    pending: tuple[str, ...] = ()
    read: bool = False

    def managed(self, tag: str) -> bool:
        """True if the runbooks made this VM: it carries the tag, or (a clone whose configuration
        did not happen yet) the marker in its description."""
        return tag in self.tags or MARKER in self.config.get("description", "")

    @property
    def disk(self) -> Disk | None:
        """The boot disk: the first disk of the boot order, else the first non-CD-ROM drive."""
        order = self.config.get("boot", "")
        keys = []
        if order.startswith("order="):
            keys = [k for k in order[len("order=") :].split(";") if DRIVE_KEY.match(k)]
        keys += sorted((k for k in self.config if DRIVE_KEY.match(k)), key=_natural)
        for key in keys:
            value = self.config.get(key, "")
            if not value or "media=cdrom" in value or value.split(",")[0] in ("none", "cdrom"):
                continue
            return Disk(key, value.split(",")[0], parse_size(value), value)
        return None

    def fields(self) -> dict[str, Any]:
        """The comparable fields (:data:`FIELDS`), normalised from the config."""
        c = self.config
        disk = self.disk
        return {
            "name": c.get("name", self.name),
            "cores": _int(c.get("cores"), 1),
            "memory": _memory(c.get("memory")),
            "disk_gib": _gib(disk.size_bytes) if disk else 0,
            "bridge": net_option(c.get("net0", ""), "bridge"),
            "onboot": c.get("onboot", "0") in ("1", "true"),
            "agent": _agent(c.get("agent", "")),
            "tags": ";".join(sorted(split_tags(c.get("tags", "")))),
            "description": c.get("description", "").strip(),
            "ciuser": c.get("ciuser", ""),
            "sshkeys": norm_keys(unquote(c.get("sshkeys", ""))),
            "ipconfig0": norm_ipconfig(c.get("ipconfig0", "")),
            "nameserver": " ".join(c.get("nameserver", "").split()),
            "searchdomain": c.get("searchdomain", ""),
            "cicustom": c.get("cicustom", ""),
            "status": self.status,
        }


@dataclass(frozen=True)
class NodeState:
    """A node as the cluster reports it."""

    name: str
    online: bool
    maxcpu: int = 0
    maxmem: int = 0


@dataclass(frozen=True)
class StorageState:
    """A storage as a node reports it."""

    node: str
    storage: str
    content: tuple[str, ...]
    active: bool
    avail: int
    shared: bool


@dataclass(frozen=True)
class Cluster:
    """What the cluster has: quorum, nodes, every VM and template, the storages."""

    quorate: bool
    nodes: tuple[NodeState, ...]
    vms: tuple[VmState, ...]
    storages: tuple[StorageState, ...]

    def node(self, name: str) -> NodeState | None:
        return next((n for n in self.nodes if n.name == name), None)

    def by_vmid(self, vmid: int) -> VmState | None:
        return next((v for v in self.vms if v.vmid == vmid), None)

    def storage(self, node: str, storage: str) -> StorageState | None:
        return next((s for s in self.storages if s.node == node and s.storage == storage), None)

    def templates(self, name: str) -> list[VmState]:
        return [v for v in self.vms if v.template and v.name == name]


# ----------------------------------------------------------------- normalising


def split_tags(text: str) -> list[str]:
    """PVE's tag list (separated by ``;``, ``,`` or spaces), lower-cased, without duplicates."""
    return sorted({t.lower() for t in re.split(r"[;,\s]+", text) if t})


def norm_keys(text: str) -> str:
    """SSH keys one per line, stripped, blank lines dropped."""
    return "\n".join(line.strip() for line in text.splitlines() if line.strip())


def norm_ipconfig(text: str) -> str:
    """``ip=...,gw=...`` with its options sorted, so order does not matter."""
    parts = sorted(p.strip() for p in text.split(",") if p.strip())
    return ",".join(parts)


def net_option(value: str, key: str) -> str:
    """One option of a net device value (``virtio=MAC,bridge=vmbr0``)."""
    for part in value.split(","):
        k, _, v = part.partition("=")
        if k == key:
            return v
    return ""


def with_net_option(value: str, key: str, new: str) -> str:
    """The net device value with one option replaced (or added), the rest (model, MAC) kept."""
    parts = [p for p in value.split(",") if p]
    out, done = [], False
    for part in parts:
        k, _, _v = part.partition("=")
        if k == key:
            out.append(f"{key}={new}")
            done = True
        else:
            out.append(part)
    if not done:
        out.append(f"{key}={new}")
    return ",".join(out)


SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(drive: str) -> int:
    """Bytes of a drive value's ``size=`` option (``32G``, ``512M``...); 0 when absent."""
    m = re.search(r"(?:^|,)size=(\d+(?:\.\d+)?)([KMGT]?)", drive)
    if not m:
        return 0
    return int(float(m.group(1)) * SIZE_UNITS[m.group(2)])


def with_size(drive: str, gib: int) -> str:
    """The drive value with ``size=<gib>G``."""
    parts = [p for p in drive.split(",") if p and not p.startswith("size=")]
    return ",".join([*parts, f"size={gib}G"])


def _gib(size: int) -> int | float:
    gib = size / GIB
    return int(gib) if gib.is_integer() else round(gib, 2)


def _int(value: object, default: int) -> int:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return default


def _memory(value: object) -> int:
    """Memory in MiB; PVE 9 may write ``current=N`` (with balloon options)."""
    text = str(value or "")
    m = re.search(r"(?:^|current=)(\d+)", text)
    return int(m.group(1)) if m else 512


def _agent(value: str) -> bool:
    first = value.split(",")[0]
    return first.partition("=")[2] == "1" if "=" in first else first == "1"


def _natural(key: str) -> tuple[str, int]:
    m = re.fullmatch(r"(\D+)(\d+)", key)
    return (m.group(1), int(m.group(2))) if m else (key, 0)
