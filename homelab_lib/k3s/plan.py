"""Runbook 03's plan: a pure function of (desired, observed).

Four changes, in the order apply makes them:

1. ``config`` ``/etc/rancher/k3s/config.yaml``: create, or update with the keys that differ;
2. ``k3s`` (the release): install (create), upgrade (update), or a **conflict** for a downgrade or
   a skipped minor, which K3s does not support (upgrade one minor at a time);
3. ``service`` ``k3s``: restart when only the config changed, start when it is not active
   (an install or upgrade starts it itself);
4. ``kubeconfig``: fetch it when the kept copy is missing or no longer the VM's.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from homelab_lib.core.plan import Action, Change, FieldChange, Plan
from homelab_lib.k3s.state import CONFIG_PATH, K3sDesired, K3sObserved

ADAPTER = "k3s"
VERSION = re.compile(r"^v(\d+)\.(\d+)\.(\d+)\+k3s(\d+)$")
ORDER = {"config": 10, "k3s": 20, "service": 30, "kubeconfig": 40}


def parse_version(text: str) -> tuple[int, int, int, int] | None:
    """``v1.31.4+k3s1`` as (1, 31, 4, 1); None when it is not a K3s release name."""
    m = VERSION.match(text.strip())
    return (int(m[1]), int(m[2]), int(m[3]), int(m[4])) if m else None


def version_change(desired: K3sDesired, observed: K3sObserved) -> Change:
    """Install, upgrade, no-op, or a conflict (downgrade, skipped minor, unknown installed version)."""
    where = desired.where

    def change(action: Action, reason: str = "", fields: tuple[FieldChange, ...] = ()) -> Change:
        return Change("k3s", "k3s", action, where, fields, reason, ORDER["k3s"])

    if not observed.installed:
        return change(Action.CREATE, "install", (FieldChange("version", None, desired.version),))
    if observed.version == desired.version:
        return change(Action.NOOP, "installed")
    have, want = parse_version(observed.version), parse_version(desired.version)
    if have is None or want is None:
        return change(
            Action.CONFLICT,
            f"the installed version {observed.version!r} is not a K3s release name; check `k3s --version` on the VM",
        )
    if want < have:
        return change(
            Action.CONFLICT,
            f"downgrade from {observed.version} to {desired.version}: K3s does not support downgrades; "
            f"set k3s.version to {observed.version} (or newer), or restore the data dir from a backup",
        )
    if want[0] != have[0] or want[1] > have[1] + 1:
        step = f"v{have[0]}.{have[1] + 1}"
        return change(
            Action.CONFLICT,
            f"upgrade from {observed.version} to {desired.version} skips a minor: K3s upgrades one minor at a time; "
            f"set k3s.version to the latest {step}.x release first",
        )
    return change(Action.UPDATE, "upgrade", (FieldChange("version", observed.version, desired.version),))


def _settings(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


def config_change(desired: K3sDesired, observed: K3sObserved) -> Change:
    """Create config.yaml, update it (the keys that differ), or no-op."""
    order, where = ORDER["config"], desired.where
    if observed.config is None:
        keys = len(desired.settings())
        return Change("config", CONFIG_PATH, Action.CREATE, where, (), f"write {keys} key(s)", order)
    if observed.config == desired.config:
        return Change("config", CONFIG_PATH, Action.NOOP, where, (), "as rendered", order)
    have, want = _settings(observed.config), desired.settings()
    if have is None:
        fields: tuple[FieldChange, ...] = (FieldChange("content", "not a YAML mapping", "rendered"),)
    else:
        fields = tuple(
            FieldChange(key, have.get(key), want.get(key))
            for key in [*want, *(k for k in have if k not in want)]
            if have.get(key) != want.get(key)
        )
        if not fields:
            fields = (FieldChange("content", "edited (comments, layout)", "rendered"),)
    return Change("config", CONFIG_PATH, Action.UPDATE, where, fields, "rewrite", order)


def service_change(desired: K3sDesired, observed: K3sObserved, version: Change, config: Change) -> Change:
    """Restart (config changed), start (not active), or no-op (an install or upgrade starts it)."""
    order, where = ORDER["service"], desired.where
    if version.action in (Action.CREATE, Action.UPDATE):
        return Change("service", "k3s", Action.NOOP, where, (), "started by the install", order)
    if version.action == Action.CONFLICT:
        return Change("service", "k3s", Action.NOOP, where, (), "left as it is (see the k3s conflict)", order)
    if config.action != Action.NOOP:
        return Change("service", "k3s", Action.UPDATE, where, (), "restart: read the new config.yaml", order)
    if not observed.active:
        fields = (FieldChange("state", "not active", "active"),)
        return Change("service", "k3s", Action.UPDATE, where, fields, "start", order)
    return Change("service", "k3s", Action.NOOP, where, (), "active", order)


def kubeconfig_change(desired: K3sDesired, observed: K3sObserved, version: Change) -> Change | None:
    """Fetch the kubeconfig (create/update) or no-op; None when none is kept."""
    if desired.kubeconfig is None:
        return None
    order, target, where = ORDER["kubeconfig"], str(desired.kubeconfig), desired.where
    state = observed.kubeconfig
    if version.action == Action.CREATE or state == "no source":
        return Change("kubeconfig", target, Action.CREATE, where, (), "fetch after the install", order)
    if state == "missing":
        return Change("kubeconfig", target, Action.CREATE, where, (), "fetch from the VM", order)
    if state == "current":
        return Change("kubeconfig", target, Action.NOOP, where, (), "current", order)
    fields = (FieldChange("kubeconfig", state, "the VM's, fetched again"),)
    return Change("kubeconfig", target, Action.UPDATE, where, fields, "fetch again", order)


def plan(desired: K3sDesired, observed: K3sObserved) -> Plan:
    """The changes that make the VM's K3s the inventory's; pure."""
    version = version_change(desired, observed)
    config = config_change(desired, observed)
    changes = [config, version, service_change(desired, observed, version, config)]
    kubeconfig = kubeconfig_change(desired, observed, version)
    if kubeconfig is not None:
        changes.append(kubeconfig)
    return Plan.of(changes, adapter=ADAPTER)
