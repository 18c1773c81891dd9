"""Docker Compose on the Docker VMs (runbook 02): render, validate, plan, deploy, verify.

The steps, each a function the notebook calls once::

    projects = render(inv, stacks)              # one project per (host, stack), byte-stable
    validate(projects, clients.local_compose()) # Compose schema + `docker compose config`
    hosts = clients.docker_hosts(inv)           # SSH, host keys checked against known_hosts
    observed = observe_all(hosts, inv.name)     # docker SDK over the same SSH connections
    changes = plan(projects, observed, homelab=inv.name)
    deploy(changes, projects, hosts, confirm=True)
    status(projects, observe_all(hosts, inv.name), now), probe(projects)

Modules: :mod:`.render`, :mod:`.validate`, :mod:`.transport` (SSH + SDK),
:mod:`.observe`, :mod:`.drift` (the plan), :mod:`.deploy`, :mod:`.verify`.
"""

from homelab_lib.compose.deploy import DeployResult, StackOutcome, deploy
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
from homelab_lib.compose.transport import CommandResult, DockerHost, HostPool, compose_command
from homelab_lib.compose.validate import schema_problems, validate
from homelab_lib.compose.verify import ProbeResult, ServiceStatus, probe, status, verdict
from homelab_lib.ssh import SshTarget

__all__ = [
    "PROXY_NETWORK",
    "CommandResult",
    "Container",
    "DeployResult",
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
    "StackOutcome",
    "compose_command",
    "deploy",
    "hosts_of",
    "normal_image",
    "observe",
    "observe_all",
    "plan",
    "probe",
    "project_name",
    "remote_dir",
    "render",
    "schema_problems",
    "stacks_to_apply",
    "stacks_to_remove",
    "status",
    "validate",
    "verdict",
    "write",
]
