"""Remove every Compose project an inventory's stacks make, from one engine (for the lab's ``down``).

``docker compose down`` needs each host; the rehearsal lab has one engine behind
all its VMs, so its teardown can remove the projects' containers, networks and
named volumes directly, by the Compose project label, with the docker SDK.
"""

from __future__ import annotations

from dataclasses import dataclass

import docker

from homelab_lib.compose.observe import COMPOSE_PROJECT
from homelab_lib.compose.render import project_name
from homelab_lib.compose.transport import DockerClient
from homelab_lib.inventory.model import Inventory


@dataclass(frozen=True)
class Removed:
    """What :func:`remove_projects` removed."""

    containers: int
    networks: int
    volumes: int


def project_names(inv: Inventory) -> list[str]:
    """The Compose project names of every stack of the inventory."""
    return [project_name(vm.name, stack) for vm in inv.docker_hosts for stack in vm.stacks]


def remove_projects(client: DockerClient, inv: Inventory) -> Removed:
    """Remove the containers, networks and named volumes of the inventory's Compose projects from an engine.

    Args:
        client: a docker SDK client of the engine (the lab's local one).
        inv: the inventory whose stacks' projects go.

    Returns:
        How many of each were removed.
    """
    counts = [0, 0, 0]
    for name in project_names(inv):
        selector = {"label": f"{COMPOSE_PROJECT}={name}"}
        for container in client.containers.list(all=True, filters=selector):
            try:
                container.remove(force=True, v=True)
                counts[0] += 1
            except docker.errors.NotFound:
                pass
        for network in client.networks.list(filters=selector):
            try:
                network.remove()
                counts[1] += 1
            except docker.errors.NotFound:
                pass
        for volume in client.volumes.list(filters=selector):
            try:
                volume.remove(force=True)
                counts[2] += 1
            except docker.errors.NotFound:
                pass
    return Removed(*counts)
