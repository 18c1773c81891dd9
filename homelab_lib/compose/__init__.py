"""Docker Compose on the Docker VMs (runbook 02): render, validate, plan, deploy, verify.

A runbook, on the contract (:mod:`homelab_lib.contract`) as every adapter::

    runbook = compose.adapter(inv, stacks=stacks)
    desired = runbook.desired()                 # render one project per (host, stack), check every file
    observed = runbook.observe(desired)         # SSH (host keys checked), docker SDK over it
    plan = runbook.plan(desired, observed)
    result = runbook.apply(desired, plan, confirm=confirm, allow_delete=allow_delete, approved_plan=approved_plan)
    verified = runbook.verify(desired, result)  # status per service, health probes
    runbook.close()

Modules: :mod:`.render`, :mod:`.validate`, :mod:`.transport` (SSH + SDK),
:mod:`.observe`, :mod:`.drift` (the plan), :mod:`.deploy`, :mod:`.verify`,
:mod:`.runbook` (the adapter), :mod:`.cleanup` (the lab's teardown of its projects
on its one engine). Their functions stay public: they are pure or read-only.
"""

from homelab_lib.compose.cleanup import Removed, project_names, remove_projects
from homelab_lib.compose.deploy import UP_ERRORS, carry_out, compose_command, project_folder
from homelab_lib.compose.drift import plan, shared_engines, stacks_to_apply, stacks_to_remove
from homelab_lib.compose.observe import Container, HostState, hosts_of, observe, observe_all
from homelab_lib.compose.render import (
    DesiredService,
    Profile,
    Project,
    PublishedPort,
    SecretFile,
    profile_for,
    project_name,
    render,
    write,
)
from homelab_lib.compose.runbook import ComposeAdapter, ComposeDesired, adapter
from homelab_lib.compose.transport import ENGINE_ERRORS, SSH_ERRORS, CommandResult, DockerHost, HostPool
from homelab_lib.compose.validate import schema_problems, validate
from homelab_lib.compose.verify import ComposeReport, ProbeResult, ServiceStatus, checks, probe, status
from homelab_lib.ssh import SshTarget

__all__ = [
    "ENGINE_ERRORS",
    "SSH_ERRORS",
    "UP_ERRORS",
    "CommandResult",
    "ComposeAdapter",
    "ComposeDesired",
    "ComposeReport",
    "Container",
    "DesiredService",
    "DockerHost",
    "HostPool",
    "HostState",
    "ProbeResult",
    "Profile",
    "Project",
    "PublishedPort",
    "Removed",
    "SecretFile",
    "ServiceStatus",
    "SshTarget",
    "adapter",
    "carry_out",
    "checks",
    "compose_command",
    "hosts_of",
    "observe",
    "observe_all",
    "plan",
    "probe",
    "profile_for",
    "project_folder",
    "project_name",
    "project_names",
    "remove_projects",
    "render",
    "schema_problems",
    "shared_engines",
    "stacks_to_apply",
    "stacks_to_remove",
    "status",
    "validate",
    "write",
]
