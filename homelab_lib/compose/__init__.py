"""Docker Compose on the Docker VMs (runbook 02): render, validate, plan, deploy, verify.

The steps, each a function the notebook calls once::

    projects = render(inv, stacks)              # one project per (host, stack), byte-stable
    validate(projects, clients.local_compose()) # Compose schema + `docker compose config`
    hosts = clients.docker_hosts(inv)           # SSH, host keys checked against known_hosts
    observed = observe_all(hosts, inv.name)     # docker SDK over the same SSH connections
    changes = plan(projects, observed, homelab=inv.name)
    deploy(changes, projects, hosts, profile=profile_for(inv), confirm=True)
    status(projects, observe_all(hosts, inv.name), now), probe(projects)

Modules: :mod:`.render`, :mod:`.validate`, :mod:`.transport` (SSH + SDK),
:mod:`.observe`, :mod:`.drift` (the plan), :mod:`.deploy`, :mod:`.verify`, :mod:`.cleanup`
(the lab's teardown of its projects on its one engine).
"""

from homelab_lib.compose.cleanup import Removed, project_names, remove_projects
from homelab_lib.compose.deploy import DeployResult, StackOutcome, compose_command, deploy
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
from homelab_lib.compose.transport import CommandResult, DockerHost, HostPool
from homelab_lib.compose.validate import schema_problems, validate
from homelab_lib.compose.verify import ProbeResult, ServiceStatus, probe, status, verdict
from homelab_lib.ssh import SshTarget

__all__ = [
    "CommandResult",
    "Container",
    "DeployResult",
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
    "StackOutcome",
    "compose_command",
    "deploy",
    "hosts_of",
    "observe",
    "observe_all",
    "plan",
    "probe",
    "profile_for",
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
    "verdict",
    "write",
]
