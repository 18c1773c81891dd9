"""The Proxmox adapter: the only code that talks to Proxmox VE.

It goes through proxmoxer's https backend (:mod:`.client`), waits for tasks
(:mod:`.tasks`), reads the cluster (:mod:`.observe`), compares it with the
inventory (:mod:`.desired`, :mod:`.plan`) and carries out the plan
(:mod:`.apply`); cloud-init user-data is rendered by :mod:`.cloudinit` and
written as snippets by :mod:`.snippets`. Everything it returns is a small
frozen dataclass; every failure is a :class:`~homelab_lib.core.errors.ProxmoxError`, or an
:class:`~homelab_lib.core.errors.SshError` from writing snippets over SSH.

A runbook, on the contract (:mod:`homelab_lib.core.contract`) as every adapter::

    runbook = proxmox.adapter(inv, only_vms=only_vms)
    desired = runbook.desired()
    plan = runbook.plan(desired, runbook.observe(desired))
    result = runbook.apply(desired, plan, confirm=confirm, allow_delete=allow_delete, approved_plan=approved_plan)
    verified = runbook.verify(desired, result)

The steps' module functions (:func:`desired_state`, :func:`observe`, :func:`plan`,
:func:`vm_status`) stay public: they are pure or read-only, and tests use them.
"""

from typing import TYPE_CHECKING

from homelab_lib.core.lazy import lazy_exports

if TYPE_CHECKING:
    from homelab_lib.clients.proxmox import PROXMOX_ERRORS, At, ProxmoxClient
    from homelab_lib.clients.snippets import LocalSnippets, SnippetStore, SshSnippets
    from homelab_lib.clients.tasks import TaskResult, wait_task
    from homelab_lib.proxmox.apply import config_params
    from homelab_lib.proxmox.cloudinit import snippet_name, user_data
    from homelab_lib.proxmox.desired import desired_state, wait_for_agent
    from homelab_lib.proxmox.observe import observe
    from homelab_lib.proxmox.plan import plan
    from homelab_lib.proxmox.runbook import ProxmoxAdapter, adapter
    from homelab_lib.proxmox.state import MARKER, Cluster, Desired, DesiredVm, VmState
    from homelab_lib.proxmox.status import VmReport, vm_status

__all__ = [
    "MARKER",
    "PROXMOX_ERRORS",
    "At",
    "Cluster",
    "Desired",
    "DesiredVm",
    "LocalSnippets",
    "ProxmoxAdapter",
    "ProxmoxClient",
    "SnippetStore",
    "SshSnippets",
    "TaskResult",
    "VmReport",
    "VmState",
    "adapter",
    "config_params",
    "desired_state",
    "observe",
    "plan",
    "snippet_name",
    "user_data",
    "vm_status",
    "wait_for_agent",
    "wait_task",
]

# Each name is imported from its module when first used (homelab_lib.core.lazy).
lazy_exports(__name__)
