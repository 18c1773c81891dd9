"""The rehearsal lab: the homelab's shape on one machine, reached over the same protocols.

The lab makes itself look like a homelab; the library never knows it is in one.
``parameters/lab.yaml`` is an ordinary parameter file whose addresses point here:

- Proxmox VE: fakepve, run by the lab's launcher (:mod:`.pve_server`: disk resizes recorded,
  a guest agent in clones, an API token) as its own process, over HTTPS with a lab CA (:mod:`.pve`).
- VMs: each VM is its own host (:mod:`.vms`): a mount and UTS namespace whose
  ``/etc``, ``/srv``, ``/var/lib``... land in the VM's folder, its own Docker Engine,
  and an OpenSSH server on the VM's 127.x address.
- Images: each VM's engine holds stand-ins for its services under their real
  names, since no registry is reachable (:mod:`.images`).
- Downloads: what a homelab fetches from the internet (the K3s installer and
  releases at ``k3s.install_url``), served on loopback (:mod:`.downloads`).
- Secrets: the files the parameters' ``file:`` references name under the lab's
  state dir are generated once (:mod:`.secrets`).

Everything the lab makes lives in ``inv.lab.state_dir``::

    lab.json            the processes the lab started: pid, argv, inputs hash
    lab.lock            held while up/down run
    pve/                password, token (the API token's secret), ca.pem, ca.key, cert.pem, key.pem, guests.json, log
    ssh/                authorized_keys (and, in parameters/lab.yaml, the client key and known_hosts)
    vms/<vm>/           the VM: sshd_config, host key, log, its engine's data-root and socket, fs/
    downloads/          the K3s installer and releases the download server serves
    secrets/            generated service secrets (mode 600)
    build/              the stand-in program, compiled

``up`` is idempotent: what runs and answers with the same inputs is reused, what
died or changed is restarted, images are rebuilt only when their inputs change.
``down`` stops every VM (engine first), fakepve, removes the VMs' bridges and the state dir.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import filelock

from homelab_lab import common, downloads, images, pve, secrets, vms
from homelab_lab.common import PartStatus
from homelab_lab.errors import LabError
from homelab_lib.inventory.model import Inventory

__all__ = ["PartStatus", "down", "status", "up"]

LOCK_TIMEOUT_S = 900.0


def _lock(inv: Inventory) -> filelock.BaseFileLock:
    state_dir = common.lab_settings(inv).state_dir
    return filelock.FileLock(state_dir / common.LOCK_FILE, timeout=LOCK_TIMEOUT_S)


def _check(inv: Inventory) -> None:
    """Everything that can be checked before starting anything."""
    common.lab_settings(inv)
    pve.endpoint(inv)
    vms.check(inv)
    vms.key_paths(inv)


def _foreign(state_dir: Path) -> bool:
    """True if state_dir looks like something else than a lab's folder, which `down` must not delete.

    A lab's folder has the state file, or holds only folders (parts made before `up`,
    such as ssh/ or k3s/); a home or project folder has files at its top.
    """
    if not state_dir.exists() or (state_dir / common.STATE_FILE).exists():
        return False
    return state_dir == Path.home() or any(p.is_file() or p.name == ".git" for p in state_dir.iterdir())


def _prepare_state_dir(inv: Inventory) -> None:
    """Create the state dir and its state file; refuse a folder that is not a lab's."""
    state_dir = common.lab_settings(inv).state_dir
    if _foreign(state_dir):
        raise LabError(
            f"{state_dir} holds files that are not a lab's",
            where="lab.state_dir",
            hint="give lab.state_dir a new or empty folder: `down` deletes it",
        )
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not (state_dir / common.STATE_FILE).exists():
        common.save_state(state_dir, {})


def up(inv: Inventory, progress: Callable[[str], None] = print) -> list[PartStatus]:
    """Start the lab, or bring what is missing or dead back up.

    Args:
        inv: a lab inventory (profile ``lab``), e.g. ``load_inventory("parameters/lab.yaml")``.
        progress: called with one line per step.

    Returns:
        The status of every part, as :func:`status` gives it.

    Raises:
        LabError: the inventory is not a lab's, or a part could not be started (what, where, what to do).
    """
    _check(inv)
    _prepare_state_dir(inv)
    with _lock(inv):
        secrets.ensure(inv, progress)
        pve_fresh = pve.start(inv, progress)
        if downloads.start(inv, progress):
            downloads.wait(inv)
        vms_fresh = vms.start(inv, progress)
        if pve_fresh:
            pve.wait(inv)
        vms.wait(inv, vms_fresh)
        images.ensure(inv, progress)
    parts = status(inv)
    down_parts = [p for p in parts if p.state != "up"]
    if down_parts:
        lines = "; ".join(f"{p.part} {p.name}: {p.state} ({p.detail})" for p in down_parts)
        raise LabError(f"the lab is not fully up: {lines}", where=f"lab {inv.name}", hint="run `up` again")
    progress(f"lab {inv.name} is up: {len(parts)} parts")
    return parts


def status(inv: Inventory) -> list[PartStatus]:
    """The state of every part: proxmox, each VM (its SSH and its engine), each stand-in image.

    Raises:
        LabError: the inventory is not a lab's.
    """
    _check(inv)
    return [pve.status(inv), *downloads.status(inv), *vms.status(inv), *images.status(inv)]


def down(inv: Inventory, progress: Callable[[str], None] = print) -> None:
    """Stop the lab: every VM (its engine, containers and mounts go with it), fakepve; delete the state dir.

    Safe to call when the lab is not up.

    Raises:
        LabError: the inventory is not a lab's.
    """
    state_dir = common.lab_settings(inv).state_dir
    if _foreign(state_dir):
        raise LabError(
            f"{state_dir} is not a lab's state dir; not deleting it", where="lab.state_dir", hint="check lab.state_dir"
        )
    if state_dir.exists():
        with _lock(inv):
            pve.stop(inv, progress)
            downloads.stop(inv, progress)
            vms.stop(inv, progress)
    if state_dir.exists():
        shutil.rmtree(state_dir)
        progress(f"lab {inv.name}: removed {state_dir}")
