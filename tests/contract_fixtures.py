"""Shared pieces of the contract tests (no tests here): a fakepve served on 127.0.6.x, and a parameter file for it.

The contract tests serve their own servers on 127.0.6.0/24 (never the lab's
addresses): a fakepve in this process, over HTTPS with a certificate for its
address, shaped like the lab (four nodes, a cloud-init template on each); and a
homelab parameter file (profile real, no lab section) that points at it, so a
notebook run by the runner in its own kernel reaches it over the network.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fakepve.certs import make_cert
from ruamel.yaml import YAML

from homelab_lab import pve_server
from homelab_lab.pve import guests
from tests.test_proxmox_fixtures import LAB_FILE, PASSWORD, PUBKEY, lab_inventory

PVE_HOST = "127.0.6.1"


class ServedPve:
    """The lab's fakepve (built by its launcher), on its own event loop in a daemon thread, at https://host:port."""

    def __init__(self, host: str, folder: Path) -> None:
        certfile, keyfile, _ = make_cert(str(folder), name=f"fakepve-{host}", hosts=(host,))
        self.cafile = certfile
        self.pve = pve_server.build(
            guests(lab_inventory()), user="root@pam", password=PASSWORD, host=host, port=0, time_scale=0
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=f"fakepve-{host}", daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.pve.start(certfile, keyfile), self.loop).result(30)

    @property
    def url(self) -> str:
        return str(self.pve.url)

    def mark(self) -> int:
        """A position in the fake's request log."""
        return len(self.pve.requests)

    def writes(self, since: int = 0) -> list[tuple[str, str]]:
        """The requests since a mark that could change something (all but GET and logins)."""
        return [(m, p) for m, p, _ in self.pve.requests[since:] if m != "GET" and not p.endswith("/access/ticket")]

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.pve.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()


@contextmanager
def served_pve(folder: Path, host: str = PVE_HOST) -> Iterator[ServedPve]:
    served = ServedPve(host, folder)
    try:
        yield served
    finally:
        served.stop()


def write_params(
    folder: Path, served: ServedPve, name: str, edit: Callable[[dict[str, Any]], None] | None = None
) -> Path:
    """A homelab parameter file (profile real) with the lab's nodes and VMs, pointing at the served fakepve."""
    yaml = YAML(typ="safe")
    data: dict[str, Any] = yaml.load(LAB_FILE.read_text())
    for key in ("profile", "lab"):
        data.pop(key, None)
    data["k3s"]["kubeconfig"] = str(folder / "kubeconfig.yaml")
    data["k3s"]["install_url"] = "https://get.k3s.io"  # a real homelab fetches the installer over https
    (folder / "pve-password").write_text(PASSWORD + "\n")
    (folder / "id.pub").write_text(PUBKEY + "\n")
    (folder / "id").write_text("not used by runbook 01\n")
    (folder / "known_hosts").write_text("")
    data["name"] = name
    data["proxmox"].update(endpoint=served.url, password=f"file:{folder / 'pve-password'}", ca_file=served.cafile)
    for key in ("token_id", "token_secret"):  # a password login: the served fake knows no token
        data["proxmox"].pop(key, None)
    data.pop("services", None)  # the lab's service overrides reference its own secret files
    data["ssh"] = {
        "user": "root",
        "private_key": f"file:{folder / 'id'}",
        "public_key": str(folder / "id.pub"),
        "known_hosts": str(folder / "known_hosts"),
    }
    if edit:
        edit(data)
    path = folder / f"{name}.yaml"
    with path.open("w") as f:
        yaml.dump(data, f)
    return path
