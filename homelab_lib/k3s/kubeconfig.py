"""The kubeconfig K3s writes on its VM, made fit for this machine, and kept private.

K3s writes ``/etc/rancher/k3s/k3s.yaml`` with the server at ``https://127.0.0.1:6443`` (or its
bind address) and the cluster, user and context all named ``default``. :func:`localize` points
the server at the VM's address and renames the three to the homelab's name, so it merges with
other kubeconfigs (``KUBECONFIG=a:b``); :func:`store` keeps it at ``k3s.kubeconfig``, mode 0600.
Its content (client keys) is never shown, logged or put into a plan: plans say only
``current``, ``missing`` or ``stale``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from homelab_lib.core.errors import K3sError

ORIGINAL_NAME = "default"


def localize(text: str, *, homelab: str, address: str, where: str = "") -> str:
    """The VM's kubeconfig with the server at the VM's address and ``default`` renamed to homelab.

    Raises:
        K3sError: the text is not a kubeconfig (its content is not quoted).
    """
    try:
        data: Any = yaml.safe_load(text)
        clusters, users, contexts = data["clusters"], data["users"], data["contexts"]
    except (yaml.YAMLError, TypeError, KeyError) as e:
        raise K3sError(
            f"the VM's kubeconfig is not a kubeconfig ({type(e).__name__})",
            where=where,
            hint="look at /etc/rancher/k3s/k3s.yaml on the VM; restarting k3s rewrites it",
        ) from None

    def rename(name: str) -> str:
        return homelab if name == ORIGINAL_NAME else name

    for cluster in clusters:
        port = urlsplit(cluster["cluster"]["server"]).port or 6443
        cluster["cluster"]["server"] = f"https://{address}:{port}"
        cluster["name"] = rename(cluster["name"])
    for user in users:
        user["name"] = rename(user["name"])
    for context in contexts:
        context["name"] = rename(context["name"])
        context["context"]["cluster"] = rename(context["context"]["cluster"])
        context["context"]["user"] = rename(context["context"]["user"])
    data["current-context"] = rename(str(data.get("current-context", ORIGINAL_NAME)))
    return yaml.safe_dump(data, sort_keys=True, default_flow_style=False)


def state(path: Path | None, wanted: str | None) -> str:
    """The kept kubeconfig against the VM's: ``not kept``, ``no source``, ``missing``, ``stale`` or ``current``."""
    if path is None:
        return "not kept"
    if wanted is None:
        return "no source"
    try:
        have = path.read_text()
    except FileNotFoundError:
        return "missing"
    except OSError:
        return "stale"
    if have != wanted:
        return "stale"
    if stat.S_IMODE(path.stat().st_mode) != 0o600:
        return "stale"
    return "current"


def store(path: Path, text: str) -> None:
    """Write the kubeconfig at path, mode 0600 from its first byte (a temp file renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".homelab-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def describe(path: Path | None) -> str:
    """The kept kubeconfig's path and mode, for reports (``- (not kept)``, ``missing``)."""
    if path is None:
        return "- (not kept)"
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return f"{path} (missing)"
    return f"{path} (mode {mode:04o})"
