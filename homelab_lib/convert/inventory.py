"""The inventory's Compose services converted as runbook 05 moves them and runbook 04 deploys them afterwards."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from homelab_lib.convert.converter import DEFAULT_KUBERNETES, convert_compose
from homelab_lib.convert.report import Conversion
from homelab_lib.convert.source import parse_compose
from homelab_lib.core.errors import MigrateError, NotFound, Problem
from homelab_lib.kube.objects import kubernetes_version

if TYPE_CHECKING:
    from homelab_lib.inventory.model import Inventory


def convert_inventory_service(
    inv: Inventory,
    vm: str | None,
    service: str,
    namespace: str,
    *,
    measured_bytes: Mapping[str, int] | None = None,
    sizes: Mapping[str, str] | None = None,
    reveal: bool = True,
) -> Conversion:
    """The manifests of one Compose service of the inventory, as runbook 05 applies them.

    The service is rendered as runbook 02 deploys it (:func:`homelab_lib.compose.render.render_stack`) and
    that Compose definition converted: its traefik labels (the inventory's ``proxy:``) become the Ingress,
    its other published ports NodePorts, its named volumes PVCs the data copy fills.

    Args:
        inv: the inventory.
        vm: the Docker VM that runs it; None: the one VM that does (a per-host service needs the VM). A
            service runbook 05 moved (``inv.moved``) is converted as it ran on its origin, with its claims' sizes.
        service: the service's name.
        namespace: the namespace on K3s.
        measured_bytes: the data's size per volume (``<service>-<volume>``, or the Docker volume's
            ``<project>_<service>-<volume>``) or bind host path.
        sizes: claim sizes given outright, keyed the same way.
        reveal: read each secret's value from its reference into the Secret (False: empty values,
            for a readiness check or a review that must not read secrets).

    Raises:
        NotFound: no Docker VM runs the service (or the VM named does not).
        MigrateError: the service runs on several VMs and none was named.
        UnresolvedSecret: with reveal, a secret reference cannot be read.
    """
    from homelab_lib.compose.render import render_stack

    hosts = [(h, stack) for h in inv.docker_hosts for stack, names in h.stacks.items() if service in names]
    if vm is not None:
        hosts = [(h, s) for h, s in hosts if h.name == vm]
    moved = inv.moved.get(service)
    if not hosts and moved is not None and vm in (None, moved.origin.split("/")[0]):
        # moved to K3s already (placement_file): converted as it ran in its stack, with the claims it got
        origin_vm, origin_stack = moved.origin.split("/")
        hosts = [(inv.vm(origin_vm).model_copy(update={"stacks": {origin_stack: [service]}}), origin_stack)]
        sizes = {**moved.sizes, **(sizes or {})}
    elif not hosts and vm is None and inv.k3s is not None and service in inv.k3s.services:
        # placed on K3s from the start: converted as if it ran alone in a stack of the K3s VM
        k3s_vm = inv.vm(inv.k3s.vm).model_copy(update={"role": "docker", "stacks": {service: [service]}})
        hosts = [(k3s_vm, service)]
    if not hosts:
        known = sorted({s for h in inv.docker_hosts for names in h.stacks.values() for s in names})
        raise NotFound(service, what="Compose service" + (f" on {vm}" if vm else ""), known=known, where="vms.stacks")
    if len(hosts) > 1:
        raise MigrateError(
            f"service {service} runs on {len(hosts)} VMs ({', '.join(h.name for h, _ in hosts)})",
            where=f"service {service}",
            hint="name the VM whose copy moves",
        )
    host, stack = hosts[0]
    problems: list[Problem] = []
    project = render_stack(inv, host, stack, problems)
    compose = parse_compose(project.text, path=f"{project.name}/compose.yaml (rendered)")
    secret_values = {s.name: (s.ref.reveal() if reveal else "") for s in project.secrets if s.service == service}
    version = kubernetes_version(inv.k3s.version) if inv.k3s else DEFAULT_KUBERNETES
    return convert_compose(
        compose,
        [service],
        namespace=namespace,
        measured_bytes=measured_bytes,
        sizes=sizes,
        secret_values=secret_values,
        kubernetes_version=version,
        host_address=host.address,
    )[0]


__all__ = ["convert_inventory_service"]
