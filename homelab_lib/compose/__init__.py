"""Docker Compose on the Docker VMs (runbook 02): render, validate, plan, deploy, verify.

A runbook, on the contract (:mod:`homelab_lib.core.contract`) as every adapter::

    runbook = compose.adapter(inv, stacks=stacks)
    desired = runbook.desired()                 # render one project per (host, stack), check every file
    observed = runbook.observe(desired)         # SSH (host keys checked), docker SDK over it
    plan = runbook.plan(desired, observed)
    result = runbook.apply(desired, plan, confirm=confirm, allow_delete=allow_delete, approved_plan=approved_plan)
    verified = runbook.verify(desired, result)  # status per service, health probes
    runbook.close()

Modules: :mod:`.render`, :mod:`.validate`, :mod:`.observe`, :mod:`.drift` (the plan),
:mod:`.deploy`, :mod:`.verify`, :mod:`.runbook` (the adapter). Their functions stay public:
they are pure or read-only. SSH and the docker SDK: :mod:`homelab_lib.hosts.docker`; the
names of the labels on what runs: :mod:`homelab_lib.hosts.labels`.
"""

from typing import TYPE_CHECKING

from homelab_lib.core.lazy import lazy_exports

if TYPE_CHECKING:
    from homelab_lib.compose.deploy import UP_ERRORS, carry_out, project_folder
    from homelab_lib.compose.drift import plan, stacks_to_apply, stacks_to_remove
    from homelab_lib.compose.observe import Container, HostState, hosts_of, normal_image, observe, observe_all
    from homelab_lib.compose.render import (
        PROXY_NETWORK,
        DesiredService,
        Project,
        PublishedPort,
        SecretFile,
        project_name,
        remote_dir,
        render,
        write,
    )
    from homelab_lib.compose.runbook import ComposeAdapter, ComposeDesired, adapter
    from homelab_lib.compose.validate import schema_problems, validate
    from homelab_lib.compose.verify import ComposeReport, ProbeResult, ServiceStatus, checks, probe, status
    from homelab_lib.hosts.docker import (
        ENGINE_ERRORS,
        SSH_ERRORS,
        CommandResult,
        DockerHost,
        HostPool,
        compose_command,
    )
    from homelab_lib.hosts.ssh import SshTarget

__all__ = [
    "ENGINE_ERRORS",
    "PROXY_NETWORK",
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
    "Project",
    "PublishedPort",
    "SecretFile",
    "ServiceStatus",
    "SshTarget",
    "adapter",
    "carry_out",
    "checks",
    "compose_command",
    "hosts_of",
    "normal_image",
    "observe",
    "observe_all",
    "plan",
    "probe",
    "project_folder",
    "project_name",
    "remote_dir",
    "render",
    "schema_problems",
    "stacks_to_apply",
    "stacks_to_remove",
    "status",
    "validate",
    "write",
]

# Each name is imported from its module when first used (homelab_lib.core.lazy).
lazy_exports(__name__)
