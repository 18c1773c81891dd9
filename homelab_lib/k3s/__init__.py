"""K3s on the homelab's K3s VM: install, configure, upgrade, kubeconfig, verify (runbook 03).

The only code that talks to K3s's VM (over SSH, :mod:`.remote`) and to its API for readiness
(the official kubernetes client, :mod:`.api`). On the runbook contract (:mod:`homelab_lib.core.contract`).

A runbook::

    from homelab_lib import k3s

    from homelab_lib.core import contract
    from homelab_lib.inventory import load_inventory

    inv = load_inventory(params_file)
    runbook = k3s.adapter(inv)
    desired = runbook.desired()              # version, install source, config.yaml rendered
    observed = runbook.observe(desired)      # k3s --version, config.yaml, systemctl, kubeconfig, API
    plan = runbook.plan(desired, observed)   # config, install/upgrade (never a downgrade), restart, kubeconfig
    contract.show_plan(plan)
    result = runbook.apply(desired, plan, confirm=confirm, allow_delete=allow_delete, approved_plan=approved_plan)
    verified = runbook.verify(desired, result)   # /readyz, node Ready, kube-system available
    runbook.close()

Modules: ``state`` (frozen desired, observed, report; config.yaml rendering), ``plan`` (pure),
``remote`` (SSH: version, files, install script, restart, token), ``kubeconfig`` (localize,
store mode 0600), ``api`` (readiness through the kubernetes client; its errors' table),
``runbook`` (the adapter).
"""

from typing import TYPE_CHECKING

from homelab_lib.core.lazy import lazy_exports

if TYPE_CHECKING:
    from homelab_lib.k3s.kubeconfig import localize
    from homelab_lib.k3s.plan import parse_version, plan
    from homelab_lib.k3s.runbook import K3sBootstrap, adapter
    from homelab_lib.k3s.state import (
        ApiState,
        ComponentRow,
        K3sDesired,
        K3sObserved,
        K3sReport,
        NodeRow,
        desired_state,
        render_config,
    )
    from homelab_lib.kube.api import API_ERRORS

__all__ = [
    "API_ERRORS",
    "ApiState",
    "ComponentRow",
    "K3sBootstrap",
    "K3sDesired",
    "K3sObserved",
    "K3sReport",
    "NodeRow",
    "adapter",
    "desired_state",
    "localize",
    "parse_version",
    "plan",
    "render_config",
]

# Each name is imported from its module when first used (homelab_lib.core.lazy).
lazy_exports(__name__)
