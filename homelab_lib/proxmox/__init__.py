"""The Proxmox adapter: the only code that talks to Proxmox VE.

It goes through proxmoxer's https backend (:mod:`.client`), waits for tasks
(:mod:`.tasks`), reads the cluster (:mod:`.observe`), compares it with the
inventory (:mod:`.desired`, :mod:`.plan`) and carries out the plan
(:mod:`.apply`); cloud-init user-data is rendered by :mod:`.cloudinit` and
written as snippets by :mod:`.snippets`. Everything it returns is a small
frozen dataclass; every failure is a :class:`~homelab_lib.errors.ProxmoxError`, or an
:class:`~homelab_lib.errors.SshError` from writing snippets over SSH.

A runbook::

    client = clients.proxmox_client(inv)
    desired = proxmox.desired_state(inv, only_vms=only_vms)
    plan = proxmox.plan(desired, proxmox.observe(client, desired))
    result = proxmox.apply(client, desired, plan, confirm=confirm, allow_delete=allow_delete)
"""

from homelab_lib.proxmox.apply import ApplyResult, apply, config_params
from homelab_lib.proxmox.client import At, ProxmoxClient
from homelab_lib.proxmox.cloudinit import snippet_name, user_data
from homelab_lib.proxmox.desired import desired_state, wait_for_agent
from homelab_lib.proxmox.observe import observe
from homelab_lib.proxmox.plan import plan
from homelab_lib.proxmox.snippets import LocalSnippets, SnippetStore, SshSnippets
from homelab_lib.proxmox.state import MARKER, Cluster, Desired, DesiredVm, VmState
from homelab_lib.proxmox.status import VmReport, vm_status
from homelab_lib.proxmox.tasks import Clock, SystemClock, TaskResult, wait_task

__all__ = [
    "MARKER",
    "ApplyResult",
    "At",
    "Clock",
    "Cluster",
    "Desired",
    "DesiredVm",
    "LocalSnippets",
    "ProxmoxClient",
    "SnippetStore",
    "SshSnippets",
    "SystemClock",
    "TaskResult",
    "VmReport",
    "VmState",
    "apply",
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
