"""The rehearsal lab: the homelab's shape on one machine, reached over the same protocols.

- Proxmox VE: fakepve, run as its own process, over HTTPS with a lab CA (:mod:`.pve`).
- VMs: one real OpenSSH server per VM on the VM's 127.x address, all backed by this
  machine's Docker Engine (:mod:`.ssh`).
- Images: a locally built busybox stand-in per placed service, since no registry is
  reachable (:mod:`.images`).

Everything the lab makes lives in ``inv.lab.state_dir``::

    lab.json            the processes the lab started: pid, argv, inputs hash
    lab.lock            held while up/down run
    pve/                password, ca.pem, ca.key, cert.pem, key.pem, guests.json, log
    ssh/                authorized_keys (and, in parameters/lab.yaml, the client key and known_hosts)
    sshd/<vm>/          sshd_config, ssh_host_ed25519_key(.pub), sshd.pid, log

``up`` is idempotent: what runs and answers with the same inputs is reused, what
died or changed is restarted, images are rebuilt only when their inputs change.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import filelock

from homelab_lib.errors import LabError
from homelab_lib.inventory.model import Inventory
from homelab_lib.lab import common, images, pve, ssh
from homelab_lib.lab.common import PartStatus
from homelab_lib.lab.images import image_map, standin_image

__all__ = ["PartStatus", "down", "image_map", "standin_image", "status", "up"]

LOCK_TIMEOUT_S = 900.0


def _lock(inv: Inventory) -> filelock.BaseFileLock:
    state_dir = common.lab_settings(inv).state_dir
    return filelock.FileLock(state_dir / common.LOCK_FILE, timeout=LOCK_TIMEOUT_S)


def _check(inv: Inventory) -> None:
    """Everything that can be checked before starting anything."""
    common.lab_settings(inv)
    pve.endpoint(inv)
    ssh.check(inv)
    ssh.key_paths(inv)


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
        client = images.engine()
        try:
            progress(f"docker: engine {client.version().get('Version', '?')} reachable")
            pve_fresh = pve.start(inv, progress)
            ssh_fresh = ssh.start(inv, progress)
            images.ensure(inv, client, progress)
        finally:
            client.close()
        if pve_fresh:
            pve.wait(inv)
        ssh.wait(inv, ssh_fresh)
    parts = status(inv)
    down_parts = [p for p in parts if p.state != "up"]
    if down_parts:
        lines = "; ".join(f"{p.part} {p.name}: {p.state} ({p.detail})" for p in down_parts)
        raise LabError(f"the lab is not fully up: {lines}", where=f"lab {inv.name}", hint="run `up` again")
    progress(f"lab {inv.name} is up: {len(parts)} parts")
    return parts


def status(inv: Inventory) -> list[PartStatus]:
    """The state of every part: docker engine, proxmox, each SSH endpoint, each stand-in image.

    Raises:
        LabError: the inventory is not a lab's.
    """
    _check(inv)
    engine, client = images.engine_status()
    try:
        return [engine, pve.status(inv), *ssh.status(inv), *images.status(inv, client)]
    finally:
        if client is not None:
            client.close()


def down(inv: Inventory, progress: Callable[[str], None] = print) -> None:
    """Stop the lab: its processes, its containers and image tags, and delete its state dir.

    The shared stand-in images are removed only when no other lab on this machine
    still uses them (see :mod:`homelab_lib.lab.images`). Safe to call when the lab is
    not up.

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
            ssh.stop(inv, progress)
    try:
        client = images.engine()
    except LabError as e:
        progress(f"docker: {e.message}; containers and images left in place")
    else:
        from homelab_lib.compose import remove_projects  # compose uses the lab's image map: import late

        try:
            removed = remove_projects(client, inv)
            progress(
                f"compose: removed {removed.containers} containers, {removed.networks} networks and "
                f"{removed.volumes} volumes of the lab's stacks"
            )
            images.remove(inv, client, progress)
        finally:
            client.close()
    if state_dir.exists():
        shutil.rmtree(state_dir)
        progress(f"lab {inv.name}: removed {state_dir}")
