"""Convert a Compose service to Kubernetes manifests, with a report of every key: mapped, approximated, not mapped.

Where kompose leaves the hard parts to its users, this converter does them and says so:

- a **Service for every service** (headless when it has no ports), so its name resolves as it did on
  the Compose network; ``container_name`` and network ``aliases`` get a Service of their own;
- a **published port** becomes a NodePort Service, or an Ingress when traefik labels (or the
  inventory's ``proxy:``) route to it; ``expose`` never becomes a hostPort; UDP is kept;
- **named volumes** become local-path PVCs sized from the measured data (with headroom) and listed as
  :class:`VolumePlan` entries that the data copy fills; **bind mounts** become a hostPath for read-only
  paths, otherwise a PVC filled from the host path; tmpfs and ``shm_size`` become memory emptyDirs;
- **environment** goes to a ConfigMap, and every value that is a secret or named like one to a
  Secret (a password never lands in a ConfigMap); Compose ``secrets:`` become a Secret mounted as
  files at the same paths; ``configs:`` a ConfigMap mounted the same way; a password written in the
  **command**, the **healthcheck** or a **label** moves to the Secret too, read back as ``$(VAR)`` or
  ``${VAR}`` (or, where nothing can read it from a variable, the conversion is refused at its line);
- **healthcheck** becomes readiness, liveness and startup probes; ``depends_on`` an init container
  that waits for the dependency's Service (ready endpoints, for ``service_healthy``);
- host devices, host networking, ``pid: host``, capabilities, privileged, read-only root, sysctls
  map to the pod and container security settings, each flagged in the report.

Every key of a service is accounted for: what no rule maps is reported as *not mapped*, with why.

Where what lives:

- :mod:`.source`: read a compose file as Compose does, with the line of every key; :mod:`.units`:
  sizes, CPUs, durations and names in Kubernetes' forms.
- :mod:`.report`: what a conversion gives back (:class:`Conversion`, :class:`ReportLine`,
  :class:`VolumePlan`) and how it is shown (:func:`report_frame`, :func:`report_markdown`, :func:`redacted`).
- :mod:`.model`: a conversion under way (``Build``, ``Context``) and the :func:`handles` registry of rules.
- the rules, by concern: :mod:`.workload` (container, probes, resources, dependencies, the Deployment),
  :mod:`.network` (ports, Services, Ingress, names, DNS), :mod:`.storage` (volumes, binds, tmpfs, claims),
  :mod:`.secrets` (environment, secrets, configs), :mod:`.security` (users, devices, host namespaces,
  capabilities, sysctls); :mod:`.inline` moves secrets written in commands, healthchecks and labels.
- :mod:`.converter`: :func:`convert_compose` and :func:`convert_service` run the rules and assemble and
  validate the objects; :mod:`.inventory`: :func:`convert_inventory_service`, a service of the inventory.

A runbook::

    from homelab_lib.convert import convert_inventory_service, load_compose, convert_compose

    conv = convert_inventory_service(inv, None, "sonarr", "sonarr")   # as runbook 05 applies it
    conv.report_frame()                                               # what is mapped, and how
    conv.volumes                                                      # what the data copy fills
    for c in convert_compose(load_compose("compose.yaml"), namespace="media"):
        print(c.yaml(redact=True))
"""

from homelab_lib.convert.converter import DEFAULT_KUBERNETES, NOT_MAPPED_WHY, convert_compose, convert_service
from homelab_lib.convert.inventory import convert_inventory_service
from homelab_lib.convert.model import HANDLERS, handles
from homelab_lib.convert.network import PortSpec, parse_port, service_ports
from homelab_lib.convert.report import (
    Conversion,
    ReportLine,
    Status,
    VolumePlan,
    redacted,
    report_frame,
    report_markdown,
)
from homelab_lib.convert.source import ComposeFile, load_compose, parse_compose
from homelab_lib.convert.storage import DOCKER_SOCKETS, HOST_PATHS_OF_THE_NODE

__all__ = [
    "DEFAULT_KUBERNETES",
    "DOCKER_SOCKETS",
    "HANDLERS",
    "HOST_PATHS_OF_THE_NODE",
    "NOT_MAPPED_WHY",
    "ComposeFile",
    "Conversion",
    "PortSpec",
    "ReportLine",
    "Status",
    "VolumePlan",
    "convert_compose",
    "convert_inventory_service",
    "convert_service",
    "handles",
    "load_compose",
    "parse_compose",
    "parse_port",
    "redacted",
    "report_frame",
    "report_markdown",
    "service_ports",
]
