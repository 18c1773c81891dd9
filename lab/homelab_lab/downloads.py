"""The lab's download server: what a real homelab fetches from the internet, served on loopback.

Today that is K3s: the installer script (the lab's own ``k3s-install.sh``, at the path
of ``k3s.install_url``) and, per offered release, the ``k3s`` binary with its
``sha256sum-amd64.txt``, laid out as the installer expects. The lab's ``k3s`` is its
Kubernetes API stand-in (:mod:`homelab_lab.kube`), started through this machine's
Python; each release is its own file, so upgrades change the binary's hash as real ones do.

Served by ``python -m http.server`` from ``<state_dir>/downloads`` on the host and
port of ``k3s.install_url``, which must be an ``http://127.x.y.z:PORT/...`` URL.
"""

from __future__ import annotations

import hashlib
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import requests

from homelab_lab import common
from homelab_lab.common import PartStatus, Proc
from homelab_lab.errors import LabError
from homelab_lib.inventory.model import Inventory

KEY = "downloads"
INSTALLER = Path(__file__).with_name("k3s-install.sh")
START_TIMEOUT_S = 20.0


def endpoint(inv: Inventory) -> tuple[str, int, str] | None:
    """(host, port, path) of the install URL, or None when the inventory has no K3s."""
    if inv.k3s is None:
        return None
    url = urlsplit(inv.k3s.install_url)
    if url.scheme != "http" or not url.hostname or not url.port:
        raise LabError(
            f"k3s.install_url is {inv.k3s.install_url}; the lab serves its installer itself",
            where="k3s.install_url",
            hint="give an http://127.x.y.z:PORT/... URL, e.g. http://127.0.0.2:8089/k3s-install.sh",
        )
    common.require_loopback(url.hostname, "k3s.install_url")
    return url.hostname, url.port, url.path or "/"


def folder(inv: Inventory) -> Path:
    return common.lab_settings(inv).state_dir / "downloads"


def k3s_binary(inv: Inventory, version: str) -> str:
    """The lab's ``k3s`` for one release: this machine's Python running the stand-in.

    The node's capacity is the K3s VM's (cores, memory); ``k3s server`` listens on the VM's
    own address unless told otherwise (the lab's VMs share one network namespace, where
    K3s's default 0.0.0.0 would take every VM's port 6443, 80 and 443).
    """
    assert inv.k3s is not None
    vm = inv.vm(inv.k3s.vm)
    q = shlex.quote
    return "\n".join(
        [
            "#!/bin/sh",
            f"# k3s {version} of the rehearsal lab: its Kubernetes API stand-in (homelab_lab.kube).",
            f"HOMELAB_K3S_VERSION={q(version)}",
            f"HOMELAB_K3S_NODE_CPU={vm.cores}",
            f"HOMELAB_K3S_NODE_MEMORY={vm.memory_mib}Mi",
            "export HOMELAB_K3S_VERSION HOMELAB_K3S_NODE_CPU HOMELAB_K3S_NODE_MEMORY",
            'if [ "${1:-}" = server ]; then',
            '    case " $* " in *" --bind-address"*) bound=1 ;; *) bound= ;; esac',
            "    config=/etc/rancher/k3s/config.yaml",
            '    for f in "$config" "$config".d/*.yaml; do',
            '        [ -f "$f" ] && grep -q "^bind-address:" "$f" && bound=1',
            "    done",
            f'    [ -n "$bound" ] || set -- "$@" --bind-address {q(vm.address)}',
            "fi",
            f'exec {q(sys.executable)} -m homelab_lab.kube "$@"',
            "",
        ]
    )


def prepare(inv: Inventory) -> list[str]:
    """Write the installer and each offered release; returns the versions offered."""
    where = endpoint(inv)
    if where is None or inv.k3s is None:
        return []
    host, port, path = where
    root = folder(inv)
    base = f"http://{host}:{port}"
    script = INSTALLER.read_text().replace("@DOWNLOAD_BASE@", base)
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(script)
    versions = sorted({inv.k3s.version, *common.lab_settings(inv).k3s_versions})
    for version in versions:
        release = root / "k3s" / version
        release.mkdir(parents=True, exist_ok=True)
        binary = k3s_binary(inv, version).encode()
        (release / "k3s").write_bytes(binary)
        (release / "sha256sum-amd64.txt").write_text(f"{hashlib.sha256(binary).hexdigest()}  k3s\n")
    (root / "k3s" / "stable.txt").write_text(inv.k3s.version + "\n")
    return versions


def start(inv: Inventory, progress: Callable[[str], None]) -> bool:
    """Serve the downloads (reusing a server with the same inputs that answers); True if started afresh."""
    where = endpoint(inv)
    if where is None:
        return False
    host, port, _ = where
    versions = prepare(inv)
    state_dir = common.lab_settings(inv).state_dir
    argv = [sys.executable, "-m", "http.server", "--bind", host, "--directory", str(folder(inv)), str(port)]
    inputs = common.digest(*argv[1:])
    old = common.load_state(state_dir).get(KEY)
    if old is not None and old.inputs == inputs and common.is_running(old) and _try(inv) is None:
        progress(f"downloads: already serving at http://{host}:{port} (pid {old.pid})")
        return False
    common.stop(old)
    pid = common.spawn(argv, state_dir / "downloads.log")
    common.record(state_dir, KEY, Proc(pid, argv, inputs))
    progress(f"downloads: serving the K3s installer and {', '.join(versions)} at http://{host}:{port} (pid {pid})")
    return True


def _try(inv: Inventory) -> str | None:
    assert inv.k3s is not None
    try:
        answer = requests.get(inv.k3s.install_url, timeout=3)
    except requests.RequestException as e:
        return f"{type(e).__name__}: {e}"
    return None if answer.status_code == 200 else f"HTTP {answer.status_code}"


def wait(inv: Inventory) -> None:
    if endpoint(inv) is None:
        return
    state_dir = common.lab_settings(inv).state_dir
    common.wait_until(
        "the download server to answer",
        lambda: _try(inv),
        START_TIMEOUT_S,
        "k3s.install_url",
        log=state_dir / "downloads.log",
    )


def status(inv: Inventory) -> list[PartStatus]:
    where = endpoint(inv)
    if where is None or inv.k3s is None:
        return []
    proc = common.load_state(common.lab_settings(inv).state_dir).get(KEY)
    url = inv.k3s.install_url
    if proc is None:
        return [PartStatus("downloads", "k3s installer", url, "missing", "not started")]
    if not common.is_running(proc):
        return [PartStatus("downloads", "k3s installer", url, "down", f"pid {proc.pid} is not running")]
    why = _try(inv)
    if why is not None:
        return [PartStatus("downloads", "k3s installer", url, "down", why)]
    return [PartStatus("downloads", "k3s installer", url, "up", f"pid {proc.pid}")]


def stop(inv: Inventory, progress: Callable[[str], None]) -> None:
    proc = common.load_state(common.lab_settings(inv).state_dir).get(KEY)
    if proc is not None and common.stop(proc):
        progress(f"downloads: stopped (pid {proc.pid})")
