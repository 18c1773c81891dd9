# SPDX-License-Identifier: AGPL-3.0-or-later
# This one file extends fakepve (AGPL-3.0-or-later) through its Python API, so it is under fakepve's
# licence; it runs only as its own process and nothing else in homelab_lib imports it (tests/test_packaging.py).
"""The lab's Proxmox VE server: fakepve, built through its Python API, with what fakepve 0.5 lacks.

Run as its own process by :mod:`homelab_lib.lab.pve`::

    python -m homelab_lib.lab.pve_server guests.json --host 127.0.0.2 --port 8006 \\
        --cert cert.pem --key key.pem --time-scale 0 --token root@pam!homelab --token-file token

(``PVE_USER`` and ``PVE_PASS`` in the environment give the password login, as for fakepve's own
command line.) The tests build the same server in their own process with :func:`build`.

What the lab adds to fakepve, so that the library needs nothing a real PVE does not:

- **Disk resize** (:class:`DiskResize`): ``PUT /nodes/{node}/qemu/{vmid}/resize`` is a ``resize``
  task that grows the volume and writes the new size into the drive's line of the VM config, as
  qemu-server does (fakepve 0.5 answers the call and changes nothing).
- **A guest agent in every VM that enables one** (:class:`GuestAgent`): fakepve answers agent
  calls only for VMs given agent answers by hand, so its clones have none. Here a running VM
  whose config has ``agent`` enabled answers ``agent_boot_secs`` PVE seconds after its start
  (its boot, on the fake's time scale), ``network-get-interfaces`` reporting ``lo`` and ``eth0``
  with the MAC of ``net0`` and the addresses of ``ipconfig0`` (a guest configured by cloud-init;
  ``ip=dhcp`` gets no IPv4 address: the lab has no DHCP server). fakepve's own switches still
  work: ``vm.agent`` set by hand wins, ``vm.agent_hangs`` makes it time out.
- **API tokens** (:func:`build`'s ``tokens``): fakepve checks tokens but its command line cannot
  make one; the launcher registers ``--token`` with the secret in ``--token-file`` (made, mode
  600, with a fresh secret when missing). Like a token without privilege separation, it has its
  user's rights.
- **Only the lab's nodes**: fakepve's own node ``pve1`` is dropped unless a guest lives there.

The lab file (``guests.json``) has sections, each loaded by an entry of :data:`SECTIONS`:
``nodes`` (node names) and ``guests`` (as fakepve's guests file). A new area of behaviour is a
mixin here (fakepve registers every ``_routes_<area>`` method's routes in front of its generic
answers; see ``fakepve/routing.py``) plus, when the lab must seed it, a section loader: the way
backup jobs and vzdump archives are meant to come.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import re
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fakepve import FakePve, PveError, TaskError

from homelab_lib.errors import HomelabError
from homelab_lib.lab import common
from homelab_lib.lab.pve import token_secret

AGENT_BOOT_SECS = 15.0
"""PVE seconds from a VM's start until its guest agent answers (the guest's boot)."""

SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
SIZE = re.compile(r"^(\+)?(\d+(?:\.\d+)?)([KMGT])?$")
RESIZE_PATH = "/nodes/{node}/qemu/{vmid}/resize"


# ---------------------------------------------------------------- property strings


def split_drive(value: str) -> tuple[str, list[tuple[str, str]]]:
    """(volume, [(option, value), ...]) of a drive line such as ``local-lvm:vm-110-disk-0,size=2G``."""
    volume, options = "", []
    for n, part in enumerate(str(value).split(",")):
        key, eq, val = part.partition("=")
        if not eq and n == 0:
            volume = part
        elif key == "file" and not volume:
            volume = val
        elif eq:
            options.append((key, val))
    return volume, options


def join_drive(volume: str, options: list[tuple[str, str]]) -> str:
    return ",".join([volume, *(f"{k}={v}" for k, v in options)])


def parse_bytes(text: str) -> int | None:
    """Bytes of a size such as ``32G`` or ``512M`` (no unit: bytes), or None."""
    found = SIZE.match(text.strip())
    if not found or found.group(1):
        return None
    return int(float(found.group(2)) * SIZE_UNITS[found.group(3) or ""])


def format_size(size: int) -> str:
    """PVE's spelling of a size in bytes: the largest unit that divides it (``32G``, ``2560M``)."""
    for unit in "TGMK":
        if size and size % SIZE_UNITS[unit] == 0:
            return f"{size // SIZE_UNITS[unit]}{unit}"
    return str(size)


def agent_enabled(value: object) -> bool:
    """Whether an ``agent`` config value (``1``, ``enabled=1,fstrim_cloned_disks=1``) enables the agent."""
    first = str(value or "").split(",")[0]
    key, eq, val = first.partition("=")
    return (val if eq and key == "enabled" else first) in ("1", "true", "yes", "on")


def _options(value: str) -> dict[str, str]:
    out = {}
    for part in str(value).split(","):
        key, eq, val = part.partition("=")
        if eq:
            out[key] = val
    return out


def _mac(net: str) -> str:
    """The MAC of a ``net0`` value (``virtio=BC:24:11:..,bridge=vmbr0``), lower case as the guest shows it."""
    for part in str(net).split(","):
        key, eq, val = part.partition("=")
        if eq and (key == "macaddr" or re.fullmatch(r"(?:[0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}", val)):
            return val.lower()
    return "00:00:00:00:00:00"


def _link_local(mac: str) -> str:
    """The guest's IPv6 link-local address (EUI-64 from the MAC), as every Linux guest has one."""
    raw = bytearray(int(b, 16) for b in mac.split(":"))
    raw[0] ^= 0x02
    eui = bytes(raw[:3]) + b"\xff\xfe" + bytes(raw[3:])
    return str(ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + eui))


def interfaces(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """What ``guest-network-get-interfaces`` reports in a guest that cloud-init configured from ``ipconfig0``."""
    mac = _mac(str(config.get("net0", "")))
    addresses: list[dict[str, Any]] = []
    ipconfig = _options(str(config.get("ipconfig0", "")))
    for key, kind in (("ip", "ipv4"), ("ip6", "ipv6")):
        value = ipconfig.get(key, "")
        if value in ("", "dhcp", "auto", "manual"):
            continue
        try:
            iface = ipaddress.ip_interface(value)
        except ValueError:
            continue
        addresses.append({"ip-address": str(iface.ip), "ip-address-type": kind, "prefix": iface.network.prefixlen})
    addresses.append({"ip-address": _link_local(mac), "ip-address-type": "ipv6", "prefix": 64})
    return [
        {
            "name": "lo",
            "hardware-address": "00:00:00:00:00:00",
            "ip-addresses": [
                {"ip-address": "127.0.0.1", "ip-address-type": "ipv4", "prefix": 8},
                {"ip-address": "::1", "ip-address-type": "ipv6", "prefix": 128},
            ],
        },
        {"name": "eth0", "hardware-address": mac, "ip-addresses": addresses},
    ]


# ---------------------------------------------------------------- behaviour fakepve 0.5 lacks


class DiskResize(FakePve):  # type: ignore[misc]  # fakepve has no type hints
    """``PUT /nodes/{node}/qemu/{vmid}/resize`` as qemu-server does it (``PVE/API2/Qemu.pm``, resize_vm).

    The checks answer at once (as fakepve's error catalogue lists them); the growth itself is a
    ``resize`` task holding the VM's config lock, which sets the volume's size on its storage and
    writes ``size=`` into the drive's config line (for a running VM too: PVE resizes online).
    """

    def _routes_resize(self) -> list[tuple[str, str, Callable[..., Any]]]:
        return [("PUT", RESIZE_PATH, self._lab_resize)]

    def _lab_volume(self, volume: str) -> dict[str, Any] | None:
        sid, _, name = volume.partition(":")
        store = self.storages.get(sid) if name else None
        found = (store or {}).get("volumes", {}).get(name)
        return found if isinstance(found, dict) else None

    async def _lab_resize(self, v: dict[str, Any], user: str) -> str:
        vm = self.find(v["node"], v["vmid"])
        disk, wanted = str(v["disk"]), str(v["size"])
        if v.get("skiplock") and user != "root@pam":
            raise PveError(400, "Parameter verification failed.", {"skiplock": "Only root may use this option."})
        self.need_quorum()
        if v.get("digest") and v["digest"] != vm.digest():
            raise PveError(500, "checksum mismatch (file change by other user?)")
        if vm.lock and not v.get("skiplock"):
            raise PveError(500, f"VM is locked ({vm.lock})")
        line = vm.config.get(disk)
        if not line:
            raise PveError(500, f"disk '{disk}' does not exist")
        volume, options = split_drive(str(line))
        if not volume or volume == "none":
            raise PveError(500, f"disk '{disk}' has no associated volume")
        if volume == "cdrom" or ("media", "cdrom") in options:
            raise PveError(500, "you can't resize a cdrom")
        sid = volume.partition(":")[0]
        self.require(user, f"/storage/{sid}", "Datastore.AllocateSpace")
        held = self._lab_volume(volume)
        size = int(held["size"]) if held and held.get("size") else parse_bytes(dict(options).get("size", ""))
        if not size:
            raise PveError(500, f"Could not determine current size of volume '{volume}'")
        found = SIZE.match(wanted)
        if found is None:
            raise PveError(500, "internal error")
        new = int(float(found.group(2)) * SIZE_UNITS[found.group(3) or ""]) + (size if found.group(1) else 0)
        if new < size:
            raise PveError(500, "shrinking disks is not supported")

        async def body() -> None:
            await self.ceph_io(vm, [disk])
            if new == size:
                return
            store = self.storages.get(sid, {})
            if "avail" in store and held is not None:
                if new - size > store["avail"]:
                    raise TaskError(f"unable to write to storage '{sid}': No space left on device")
                store["avail"] -= new - size
            if held is not None:
                held["size"] = new
            _, current = split_drive(str(vm.config.get(disk, line)))  # as it is now, after any wait for the lock
            now = [(k, format_size(new) if k == "size" else val) for k, val in current]
            if "size" not in dict(current):
                now.append(("size", format_size(new)))
            vm.config[disk] = join_drive(volume, now)

        upid: str = await self.task(vm.node, "resize", vm.vmid, user, body, vm=vm)
        return upid


class GuestAgent(FakePve):  # type: ignore[misc]  # fakepve has no type hints
    """A QEMU guest agent in every running VM whose config enables one, after its boot.

    PVE's own order of refusals (``PVE::QemuServer::Agent``): the VM is not running, no agent is
    configured, the agent does not answer (yet).
    """

    agent_boot_secs: float = AGENT_BOOT_SECS

    def _lab_booted(self, vm: Any) -> bool:
        started = float(vm.started_at or 0.0)
        return time.time() - started >= self.agent_boot_secs * float(self.time_scale)

    async def _agent_call(self, match: Any, values: dict[str, Any]) -> Any:
        vm = self.find(values["node"], values["vmid"])
        if vm.agent is None or vm.agent is getattr(vm, "lab_agent", None):
            # The lab's agent, not answers a test gave by hand: it reports what the guest has now.
            if vm.status != "running":
                raise PveError(500, f"VM {vm.vmid} is not running")
            if not agent_enabled(vm.config.get("agent")):
                raise PveError(500, "No QEMU guest agent configured")
            if not self._lab_booted(vm):
                raise PveError(500, "QEMU guest agent is not running")
            vm.agent = vm.lab_agent = {"interfaces": interfaces(vm.config)}
        return await super()._agent_call(match, values)


class LabPve(DiskResize, GuestAgent):
    """fakepve as the lab serves it; build one with :func:`build`."""


# ---------------------------------------------------------------- building it


def _load_nodes(pve: LabPve, names: Any) -> None:
    for name in names:
        pve.add_node(str(name))


QEMU_KEYS = ("shutdown_secs", "start_secs", "stop_secs", "start_error", "ha_state", "acpi")


def _load_guests(pve: LabPve, guests: Any) -> None:
    """VMs as fakepve's own guests file gives them (the lab has QEMU guests only)."""
    for g in guests:
        if g.get("type", "qemu") != "qemu":
            raise ValueError(f"guest {g.get('vmid')}: the lab serves QEMU guests only, not {g.get('type')}")
        vm = pve.add_vm(
            int(g["vmid"]),
            g["name"],
            node=g.get("node", "pve1"),
            status=g.get("status", "stopped"),
            qmpstatus=g.get("qmpstatus"),
            config=g.get("config", {}),
            template=bool(g.get("template", False)),
            lock=g.get("lock"),
        )
        for key in QEMU_KEYS:
            if key in g:
                setattr(vm, key, g[key])


SECTIONS: dict[str, Callable[[LabPve, Any], None]] = {"nodes": _load_nodes, "guests": _load_guests}
"""Loaders of the lab file's sections, in the order they run."""


def build(
    lab: Mapping[str, Any],
    *,
    password: str,
    user: str = "root@pam",
    host: str = "127.0.0.2",
    port: int = 8006,
    time_scale: float = 0.0,
    tokens: Mapping[str, str] | None = None,
    agent_boot_secs: float = AGENT_BOOT_SECS,
) -> LabPve:
    """The lab's fakepve, not yet started (``await pve.start(certfile, keyfile)`` serves it).

    Args:
        lab: the lab file's data: ``{"nodes": [...], "guests": [...]}`` (see :data:`SECTIONS`).
        password: the password of ``user`` (never fakepve's public default).
        user: the password login.
        host: the address to listen on (loopback).
        port: the port (0: the system picks one; ``pve.port`` tells it once started).
        time_scale: real seconds per PVE second (0: every task ends before its request returns).
        tokens: API tokens, ``user@realm!name`` -> secret.
        agent_boot_secs: PVE seconds from a VM's start until its guest agent answers.

    Raises:
        ValueError: a section this launcher does not know, or a guest it cannot serve.
    """
    unknown = sorted(set(lab) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown sections in the lab file: {', '.join(unknown)} (known: {', '.join(SECTIONS)})")
    if not password:
        raise ValueError("no password: the lab's fakepve never runs with fakepve's public default")
    pve = LabPve(user=user, password=password, host=host, port=port)
    pve.time_scale = time_scale
    pve.agent_boot_secs = agent_boot_secs
    for key, load in SECTIONS.items():
        if key in lab:
            load(pve, lab[key])
    if not any(vm.node == "pve1" for vm in pve.vms) and "pve1" not in lab.get("nodes", []):
        pve.nodes.pop("pve1", None)
    for token_id, secret in (tokens or {}).items():
        pve.apitokens[token_id] = secret
    return pve


# ---------------------------------------------------------------- the program


async def _serve(args: argparse.Namespace) -> None:
    lab = json.loads(Path(args.lab_file).read_text())
    tokens = {args.token: token_secret(Path(args.token_file))} if args.token else {}
    pve = build(
        lab,
        user=os.environ.get("PVE_USER", "root@pam"),
        password=os.environ.get("PVE_PASS", ""),
        host=args.host,
        port=args.port,
        time_scale=args.time_scale,
        tokens=tokens,
        agent_boot_secs=args.agent_boot_secs,
    )
    await pve.start(args.cert, args.key)
    print(f"lab fakepve listening on {pve.url} with {len(pve.nodes)} nodes, {len(pve.vms)} guests", flush=True)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m homelab_lib.lab.pve_server", description=__doc__.splitlines()[0])
    parser.add_argument("lab_file", help="JSON: {'nodes': [...], 'guests': [...]}")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=8006)
    parser.add_argument("--cert", required=True, help="PEM server certificate")
    parser.add_argument("--key", required=True, help="PEM key of --cert")
    parser.add_argument("--time-scale", type=float, default=0.0, help="real seconds per PVE second")
    parser.add_argument("--agent-boot-secs", type=float, default=AGENT_BOOT_SECS)
    parser.add_argument("--token", help="an API token to serve, USER@REALM!NAME")
    parser.add_argument("--token-file", help="the token's secret (made, mode 600, when missing)")
    args = parser.parse_args(argv)
    if bool(args.token) != bool(args.token_file):
        parser.error("--token and --token-file go together")
    try:
        common.require_loopback(args.host, "--host")
        asyncio.run(_serve(args))
    except KeyboardInterrupt:
        pass
    except (OSError, ValueError, HomelabError) as e:
        print(f"lab fakepve: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
