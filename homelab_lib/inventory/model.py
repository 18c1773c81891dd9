"""The typed model of the homelab, validated by pydantic.

Every model forbids unknown keys and is frozen: the inventory is loaded once
and never changed in place. Cross-field checks (unique vmids, capacity,
placements) live in :mod:`homelab_lib.inventory.checks`, where they can name
the file:line of the offending entry.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from homelab_lib.core.errors import HashKeyUnsafe, NotFound
from homelab_lib.core.secrets import SECRET_NAME, SecretRef

NAME = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
Name = Annotated[str, Field(pattern=NAME, description="lower-case DNS label")]


def _to_ref(value: object, info: ValidationInfo) -> SecretRef:
    if isinstance(value, SecretRef):
        return value
    if not isinstance(value, str):
        raise ValueError("a secret reference is a string, 'env:NAME' or 'file:PATH'")
    base = (info.context or {}).get("base_dir", Path("."))
    return SecretRef.parse(value, base)


Secret = Annotated[SecretRef, BeforeValidator(_to_ref)]


def _to_path(value: object, info: ValidationInfo) -> Path:
    if not isinstance(value, str):
        raise ValueError("a path is a string")
    p = Path(value).expanduser()
    base = (info.context or {}).get("base_dir", Path("."))
    return p if p.is_absolute() else (base / p).resolve()


FilePath = Annotated[Path, BeforeValidator(_to_path)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


Tag = Annotated[str, Field(pattern=r"^[a-z0-9_][a-z0-9_+.-]*$", description="a Proxmox tag (pve-tag)")]


class Snippets(Model):
    """Where role user-data goes: a Proxmox storage with content ``snippets``, and how files reach it.

    The Proxmox API cannot upload snippets (its upload endpoint takes iso, vztmpl and
    import only), so the files are written over SSH (SFTP) to each node, or into a
    folder of this machine where a shared storage is mounted.
    """

    storage: str = Field(default="local", description="a storage whose content includes snippets")
    dir: str = Field(default="/var/lib/vz/snippets", description="the storage's snippets folder, as written to")
    write: Literal["ssh", "local"] = Field(default="ssh", description="ssh: SFTP to each node; local: this machine")
    ssh_user: str = "root"
    ssh_port: Annotated[int, Field(gt=0, lt=65536)] = 22
    hosts: dict[Name, str] = Field(default_factory=dict, description="node -> SSH address (default: the node's name)")

    @field_validator("dir")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"'{v}' is not an absolute path; give the snippets folder from /")
        return v.rstrip("/") or "/"


class Proxmox(Model):
    """How to reach the Proxmox VE API, and how VMs are made from the template.

    Authenticate with an API token (``user@realm!token_id`` and ``token_secret``),
    or with ``password`` for a ticket when no token is given.
    """

    endpoint: Annotated[str, Field(pattern=r"^https://[^/\s]+(:\d+)?/?$")]
    user: Annotated[str, Field(pattern=r"^[^@\s!]+@[^@\s!]+$")] = "root@pam"
    token_id: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9._-]*$")] | None = None
    token_secret: Secret | None = None
    password: Secret | None = None
    verify_tls: bool = True
    ca_file: FilePath | None = None
    template: Name = Field(description="name of the cloud-init template VM on each node")
    template_vmid: Annotated[int, Field(ge=100, le=999_999_999)] = 9000
    storage: str = "local-lvm"
    bridge: str = "vmbr0"
    timeout_s: Annotated[float, Field(gt=0)] = Field(default=30.0, description="per API request")
    clone: Literal["full", "linked"] = Field(default="full", description="linked clones share the template's disk")
    managed_tag: Tag = Field(default="homelab-managed", description="marks the VMs the runbooks may change")
    task_timeout_s: Annotated[float, Field(gt=0)] = Field(default=900.0, description="per Proxmox task")
    agent_timeout_s: Annotated[float, Field(gt=0)] = Field(default=300.0, description="for a VM's guest agent")
    guest_agent: Literal["required", "skip"] = Field(
        default="required",
        description="wait for each started VM's QEMU guest agent and report its IP; skip: take the IP from "
        "ipconfig0 (for templates without qemu-guest-agent)",
    )
    max_parallel: Annotated[int, Field(ge=1, le=64)] = Field(default=4, description="nodes worked on at once")
    snippets: Snippets | None = Field(default=None, description="where role user-data goes; none: ci* only")


class Node(Model):
    """One Proxmox node and what it can hold."""

    name: Name
    cores: Annotated[int, Field(gt=0)]
    memory_gib: Annotated[float, Field(gt=0)]
    reserved_memory_gib: Annotated[float, Field(ge=0)] = 2.0


class Overcommit(Model):
    """How far VMs on one node may exceed it: 1.0 means not at all."""

    cores: Annotated[float, Field(ge=1.0)] = 2.0
    memory: Annotated[float, Field(ge=1.0)] = 1.0


class Network(Model):
    """Addressing shared by the VMs."""

    gateway: ipaddress.IPv4Address | None = None
    dns: list[ipaddress.IPv4Address] = []
    domain: str = "home.arpa"


class Ssh(Model):
    """How the runbooks reach the VMs over SSH (Docker hosts, the K3s VM)."""

    user: str = "root"
    port: Annotated[int, Field(gt=0, lt=65536)] = 22
    private_key: Secret
    known_hosts: FilePath
    public_key: FilePath | None = Field(default=None, description="installed into VMs by cloud-init")


Stacks = dict[Name, Annotated[list[Name], Field(min_length=1)]]


class Vm(Model):
    """A Proxmox VM of the homelab: a Docker host or the K3s server."""

    name: Name
    vmid: Annotated[int, Field(ge=100, le=999_999_999)]
    node: Name
    role: Literal["docker", "k3s"]
    cores: Annotated[int, Field(gt=0, le=512)]
    memory_mib: Annotated[int, Field(ge=512)]
    disk_gib: Annotated[int, Field(gt=0)]
    ip: ipaddress.IPv4Interface
    onboot: bool = True
    stacks: Stacks = Field(default_factory=dict, description="stack name -> services (Docker hosts only)")
    tags: list[Tag] = Field(default_factory=list, description="Proxmox tags besides the managed and role tags")
    description: str = Field(default="", description="the VM's notes in Proxmox")
    packages: list[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9+.-]*$")]] = Field(
        default_factory=list, description="extra Debian packages for the role user-data"
    )

    @field_validator("ip", mode="before")
    @classmethod
    def _needs_prefix(cls, v: object) -> object:
        if isinstance(v, str) and "/" not in v:
            raise ValueError(f"'{v}' has no prefix length; write it as {v}/24 (or the subnet's length)")
        return v

    @property
    def address(self) -> str:
        """The VM's IP address without prefix."""
        return str(self.ip.ip)


#: A URL as the install's shell is given it: no character a shell reads (quotes, $, `, parentheses, \, spaces).
URL = re.compile(r"https?://[A-Za-z0-9._~:/?#\[\]@!&+,;=%*-]+")
K3S_COMPONENTS = ("coredns", "traefik", "local-storage", "metrics-server", "servicelb")
LabelKey = Annotated[str, Field(pattern=r"^([a-z0-9.-]+/)?[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")]
Taint = Annotated[str, Field(pattern=r"^[A-Za-z0-9./_-]+(=[A-Za-z0-9._-]*)?:(NoSchedule|PreferNoSchedule|NoExecute)$")]


class DevEnv(Model):
    """One development environment on K3s (code-server with its own volume and Ingress host)."""

    name: Name
    host: str | None = Field(default=None, description="its Ingress host (default <name>.dev.<network.domain>)")
    storage: Annotated[str, Field(pattern=r"^\d+(Mi|Gi|Ti)$")] = "10Gi"


class K3sAirgap(Model):
    """An air-gapped install: the files K3s's releases page offers, on this machine, copied to the VM."""

    binary: FilePath = Field(description="the k3s binary of k3s.version")
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] = Field(description="its sha256 (sha256sum-amd64.txt)")
    install_script: FilePath = Field(description="a copy of the install script (https://get.k3s.io)")


class K3s(Model):
    """The single-node K3s cluster and what runs on it.

    The keys from ``tls_san`` to ``service_cidr`` are written into the VM's
    ``/etc/rancher/k3s/config.yaml`` (the VM's address and name are always in ``tls-san``).
    """

    vm: Name
    version: Annotated[str, Field(pattern=r"^v\d+\.\d+\.\d+\+k3s\d+$")]
    services: list[Name] = []
    kubeconfig: FilePath | None = Field(default=None, description="where the fetched kubeconfig is kept")
    run_lease_s: Annotated[int, Field(ge=2, le=3600)] = Field(
        default=60,
        description="the run Lease's duration: a crashed run's lock frees after this (renewed every third of it)",
    )
    install_url: str = Field(
        default="https://get.k3s.io",
        description="the K3s install script (curl -sfL URL | sh -s -); https:// for profile real",
    )
    install_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = Field(
        default=None,
        description="the install script's sha256, checked on the VM before sh runs it (needed with airgap)",
    )
    token: Secret | None = Field(
        default=None,
        description="the cluster token (file: reference: made once if missing, then reused); none: K3s makes one",
    )
    tls_san: list[str] = Field(default_factory=list, description="extra names and addresses for the API certificate")
    node_labels: dict[LabelKey, str] = Field(default_factory=dict, description="node labels (node-label)")
    node_taints: list[Taint] = Field(default_factory=list, description="node taints, key=value:Effect")
    disable: list[Literal["coredns", "traefik", "local-storage", "metrics-server", "servicelb"]] = Field(
        default_factory=list, description="packaged components K3s does not deploy"
    )
    data_dir: Annotated[str, Field(pattern=r"^/\S*$")] = "/var/lib/rancher/k3s"
    cluster_cidr: ipaddress.IPv4Network = ipaddress.IPv4Network("10.42.0.0/16")
    service_cidr: ipaddress.IPv4Network = ipaddress.IPv4Network("10.43.0.0/16")
    ready_timeout_s: Annotated[float, Field(gt=0)] = Field(
        default=300.0, description="how long the API, the node and kube-system may take to be ready"
    )
    airgap: K3sAirgap | None = Field(
        default=None, description="install from local files (INSTALL_K3S_SKIP_DOWNLOAD=true) instead of install_url"
    )
    devenvs: list[DevEnv] = Field(default_factory=list, description="development environments (runbook 04)")
    run_image: Annotated[str, Field(pattern=r"^[a-z0-9][A-Za-z0-9_./:-]*(@sha256:[0-9a-f]{64})?$")] | None = Field(
        default=None,
        description="the toolkit's image that scheduled runs on K3s run in (homelab schedule --k3s), by digest "
        "for profile real: registry/homelab-runbooks:1.0@sha256:...",
    )
    gitlab_root_password: Secret | None = Field(default=None, description="GitLab's initial root password")
    harbor_admin_password: Secret | None = Field(default=None, description="Harbor's admin password")
    harbor_chart_version: str = Field(default="1.16.0", description="the goharbor/harbor chart (Harbor v2.12.0)")
    rollout_timeout_s: Annotated[float, Field(gt=0)] = Field(
        default=600.0, description="how long a service of runbook 04 may take to roll out (install Jobs too)"
    )

    @field_validator("install_url")
    @classmethod
    def _plain_url(cls, v: str) -> str:
        if not URL.fullmatch(v):
            raise ValueError(
                "install_url must be a plain http(s) URL of letters, digits and -._~:/?#[]@!&+,;=%* only: a quote, "
                "$, `, (, ), \\ or a space would be read by the VM's shell, which runs the download as root"
            )
        return v


class Port(Model):
    """A container port, published on the host (on the VM's own address) as ``host`` or the same number."""

    container: Annotated[int, Field(gt=0, lt=65536)]
    host: Annotated[int, Field(gt=0, lt=65536)] | None = None
    protocol: Literal["tcp", "udp"] = "tcp"
    publish: bool = Field(default=True, description="false: reachable from the stack's network only")

    @property
    def published(self) -> int:
        return self.host or self.container


ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class Healthcheck(Model):
    """How the container checks itself (Compose ``healthcheck:``); ``test`` runs inside the container."""

    test: Annotated[list[str], Field(min_length=1)] = Field(
        description='e.g. ["CMD", "curl", "-fsS", "http://localhost:8989/ping"]'
    )
    interval_s: Annotated[float, Field(gt=0)] = 30.0
    timeout_s: Annotated[float, Field(gt=0)] = 10.0
    retries: Annotated[int, Field(ge=1)] = 3
    start_period_s: Annotated[float, Field(ge=0)] = 30.0

    @field_validator("test")
    @classmethod
    def _form(cls, v: list[str]) -> list[str]:
        if v[0] not in ("CMD", "CMD-SHELL", "NONE"):
            raise ValueError("a healthcheck test starts with CMD, CMD-SHELL or NONE")
        return v


class Resources(Model):
    """Limits for one container (Compose ``deploy.resources.limits``)."""

    memory_mib: Annotated[int, Field(ge=6)] | None = None
    cpus: Annotated[float, Field(gt=0, le=512)] | None = None


class BindMount(Model):
    """A folder of the Docker host mounted into the container (media, downloads)."""

    host: Annotated[str, Field(pattern=r"^/")] = Field(description="absolute path on the Docker host")
    container: Annotated[str, Field(pattern=r"^/")]
    read_only: bool = False
    seed: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")], str] = Field(
        default_factory=dict,
        description="files the deploy writes into the host folder when missing, never over an existing one "
        "(a first config, so the service starts before the runbook that owns the folder writes its own)",
    )


class ServiceSecret(Model):
    """A secret a service needs: Compose ``secrets:``, mounted at /run/secrets/<name>, never a literal.

    ``ref`` says where the value lives on the machine that runs the runbooks; the value is
    written to a file on the Docker host (in a mode 700 folder), never into the rendered project.
    """

    ref: Secret | None = Field(default=None, description="env:NAME or file:PATH; required ones must be given")
    env: Annotated[str, Field(pattern=ENV_NAME)] | None = Field(
        default=None, description="variable that gets the secret's path (default: <NAME>_FILE, upper case)"
    )
    required: bool = True


class ServiceBackup(Model):
    """How a service's volumes are made consistent for a backup (catalog ``backup:``).

    ``hook``: ``none`` copies the volume with the service running (the copy must not change while
    it is taken); ``stop`` stops the container for the backup and always starts it again;
    ``pg_dumpall`` dumps the cluster in the container (``pg_dumpall -U $POSTGRES_USER``) into
    ``.homelab-dump/`` of its first volume, and only that dump is backed up; ``redis_bgsave`` runs
    BGSAVE and waits for LASTSAVE to move. ``query`` is what the restore test runs against the
    dump loaded into a scratch database (``pg_dumpall`` only).
    """

    hook: Literal["none", "stop", "pg_dumpall", "redis_bgsave"] = "none"
    query: str = "SELECT count(*) FROM pg_database"


class Service(Model):
    """A service of the catalog, or one the inventory defines."""

    description: str = ""
    image: str
    platforms: list[Literal["compose", "k3s"]] = ["compose", "k3s"]
    ports: list[Port] = []
    health: str = Field(default="tcp", description="HTTP path on the first port, or 'tcp'")
    volumes: dict[Name, str] = {}
    per_host: bool = False
    environment: dict[Annotated[str, Field(pattern=ENV_NAME)], str] = Field(
        default_factory=dict, description="plain settings (PUID, PGID, TZ...); secrets go under secrets:"
    )
    secrets: dict[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_]*$")], ServiceSecret] = Field(default_factory=dict)
    healthcheck: Healthcheck | None = None
    restart: Literal["no", "always", "unless-stopped", "on-failure"] = "unless-stopped"
    resources: Resources = Resources()
    devices: list[Annotated[str, Field(pattern=r"^/dev/\S+$")]] = Field(
        default_factory=list, description="host devices, e.g. /dev/dri for hardware transcoding"
    )
    network_mode: Literal["bridge", "host"] = "bridge"
    binds: list[BindMount] = Field(default_factory=list, description="host folders (media paths)")
    labels: dict[str, str] = Field(default_factory=dict)
    proxy: Annotated[str, Field(pattern=NAME)] | None = Field(
        default=None, description="sub-domain the reverse proxy routes to the first port (<proxy>.<network.domain>)"
    )
    reverse_proxy: bool = Field(
        default=False, description="this service is the reverse proxy: proxied services of its host join its network"
    )
    command: list[str] = Field(
        default_factory=list, description="arguments for the image's entrypoint; {address} is the VM's address"
    )
    metrics: str | None = Field(
        default=None, description="the path of the service's own Prometheus metrics (runbook 07 scrapes it)"
    )
    metrics_port: Annotated[int, Field(gt=0, lt=65536)] | None = Field(
        default=None, description="the container port that serves metrics (default: the first port)"
    )
    backup: ServiceBackup = Field(default_factory=ServiceBackup, description="consistency hook for backups")

    @field_validator("image")
    @classmethod
    def _pinned(cls, v: str) -> str:
        tail = v.rsplit("/", 1)[-1]
        if "@sha256:" in v:
            return v
        if ":" not in tail or tail.endswith(":latest"):
            raise ValueError(f"image '{v}' is not pinned; give a version tag or digest, never latest")
        return v

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/"):
            raise ValueError("metrics is an HTTP path starting with '/'")
        return v

    @field_validator("health")
    @classmethod
    def _health(cls, v: str) -> str:
        if v != "tcp" and not v.startswith("/"):
            raise ValueError("health is an HTTP path starting with '/', or 'tcp'")
        return v

    @field_validator("environment")
    @classmethod
    def _no_literal_secrets(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if SECRET_NAME.search(key) and not key.endswith("_FILE"):
                raise ValueError(
                    f"environment variable {key} looks like a secret; give it under secrets: "
                    "(a reference, env:NAME or file:PATH) with env: set to the variable the image reads"
                )
        return v


_SPECIAL_EVENTS = "minutely|hourly|daily|weekly|monthly|yearly|annually|quarterly|semiannually|semi-annually"
_EVENT_FIELD = r"(?:\*|[0-9]+(?:\.\.[0-9]+)?(?:/[0-9]+)?)(?:,(?:[0-9]+(?:\.\.[0-9]+)?(?:/[0-9]+)?))*"
_WEEKDAYS = r"(?:mon|tue|wed|thu|fri|sat|sun)(?:\.\.(?:mon|tue|wed|thu|fri|sat|sun))?"
CALENDAR_EVENT = re.compile(
    rf"^(?:(?:{_SPECIAL_EVENTS})"
    rf"|(?=\S)(?:{_WEEKDAYS}(?:,{_WEEKDAYS})*)?\s*(?:(?:{_EVENT_FIELD}-)?{_EVENT_FIELD}-{_EVENT_FIELD})?\s*"
    rf"(?:{_EVENT_FIELD}:{_EVENT_FIELD}(?::{_EVENT_FIELD})?)?)$"
)
"""PVE's calendar events (systemd-like, as in a backup job's Schedule), roughly: shape, not ranges."""


class VzdumpPolicy(Model):
    """Proxmox's own VM backups: the one backup job (``cluster/backup``) that covers every managed VM."""

    storage: str = Field(description="a storage with content type 'backup' (a PBS datastore, NFS, local)")
    schedule: str = Field(default="02:00", description="a PVE calendar event, as in the job's Schedule")
    rpo_hours: Annotated[float, Field(gt=0)] = 26
    keep_daily: Annotated[int, Field(ge=1)] = 7
    job_id: Annotated[str, Field(pattern=r"^\S+$", max_length=50)] = Field(
        default="homelab-vzdump", description="the backup job's id in Datacenter > Backup"
    )
    mode: Literal["snapshot", "suspend", "stop"] = "snapshot"
    notes_template: str = Field(default="{{guestname}}", description="each backup's notes ({{guestname}}, {{vmid}})")

    @field_validator("schedule")
    @classmethod
    def _calendar_event(cls, v: str) -> str:
        if not CALENDAR_EVENT.match(v.strip()):
            raise ValueError(
                f"'{v}' is not a calendar event PVE takes: [WEEKDAY] [[YEARS-]MONTHS-DAYS] [HOURS:MINUTES], "
                "or one word alone (daily, weekly...); e.g. '02:00' (every day), 'mon..fri 21:30', 'sat 03:00'"
            )
        return v.strip()


class Backups(Model):
    """Backup approach per platform, and the RPO each target must meet."""

    vzdump: VzdumpPolicy | None = None
    restic_repository: str | None = None
    restic_password: Secret | None = None
    restore_scratch: Annotated[str, Field(pattern=r"^/\S+$")] = Field(
        default="/var/tmp/homelab-restore-test",
        description="folder on each host where restore tests restore (never inside a source)",
    )
    default_rpo_hours: Annotated[float, Field(gt=0)] = 24
    rpo_hours: dict[Name, Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict, description="service or VM name -> RPO in hours"
    )


Duration = Annotated[str, Field(pattern=r"^\d+[smh]$", description="a Prometheus duration: 15s, 5m, 1h")]
HostPort = Annotated[str, Field(pattern=r"^[^\s:/]+:\d{1,5}$", description="address:port")]


class PveExporter(Model):
    """prometheus-pve-exporter: scraped at ``<vm>:<port>/pve?target=<proxmox host>`` (runbook 07)."""

    vm: Name = Field(description="the VM it runs on (a Docker VM)")
    port: Annotated[int, Field(gt=0, lt=65536)] = 9221
    module: str = Field(default="default", description="the exporter's module (its pve.yml section)")
    target: str | None = Field(default=None, description="the PVE host it asks (default: proxmox.endpoint's host)")


class K3sScrape(Model):
    """How Prometheus scrapes the K3s cluster: kubelet/cAdvisor, the API server, kube-state-metrics.

    ``token`` is a bearer token (a ServiceAccount's, with ``get`` on ``/metrics``, ``nodes/metrics``)
    by reference; it is written next to the Prometheus config as a file, never into it.
    """

    token: Secret = Field(description="env:NAME or file:PATH: a bearer token allowed to read the metrics")
    ca_file: FilePath | None = Field(
        default=None, description="the cluster CA (required for profile real; without it, lab only: TLS not verified)"
    )
    kubelet: bool = Field(default=True, description="scrape the kubelet (:10250/metrics and /metrics/cadvisor)")
    apiserver: bool = Field(default=True, description="scrape the API server (:6443/metrics)")
    kube_state_metrics_port: Annotated[int, Field(ge=30000, le=32767)] | None = Field(
        default=None, description="the NodePort of kube-state-metrics on the K3s VM (none: not scraped)"
    )


class Monitoring(Model):
    """One Prometheus/Grafana view over both platforms (runbook 07)."""

    prometheus_host: Name
    scrape_interval: Duration = "30s"
    evaluation_interval: Duration = "30s"
    grafana_admin_password: Secret | None = None
    prometheus_url: Annotated[str, Field(pattern=r"^https?://\S+$")] | None = Field(
        default=None, description="how this machine reaches Prometheus (default http://<prometheus_host>:<port>)"
    )
    alertmanager_url: Annotated[str, Field(pattern=r"^https?://\S+$")] | None = Field(
        default=None, description="how this machine reaches Alertmanager (default http://<its VM>:<port>)"
    )
    node_exporters: dict[Name, HostPort] = Field(
        default_factory=dict, description="Proxmox node -> address:port of a node-exporter running on it"
    )
    pve_exporter: PveExporter | None = None
    k3s_node_exporter_port: Annotated[int, Field(gt=0, lt=65536)] | None = Field(
        default=9100, description="node-exporter on the K3s VM, scraped when k3s: is set (none: not scraped)"
    )
    k3s_node_ports: dict[Name, Annotated[int, Field(ge=30000, le=32767)]] = Field(
        default_factory=dict,
        description="service -> the NodePort on the K3s VM its metrics are scraped through (k3s.services)",
    )
    k3s: K3sScrape | None = Field(default=None, description="scrape the K3s cluster (needs a bearer token)")
    reload_timeout_s: Annotated[float, Field(gt=0)] = 10.0


class Audit(Model):
    """Anchoring of the audit archive: every run signs HEAD with the operator's SSH key; verify checks it.

    ``signing_key`` signs each record and HEAD (``ssh-keygen -Y sign -n homelab-audit``): a private key
    without passphrase, or the public key of one held by ssh-agent. ``allowed_signers`` (``identity
    keytype key`` lines, as ssh-keygen's ALLOWED SIGNERS) and ``identity`` are what ``homelab audit
    verify -f`` checks with. ``witness`` is where the signer notes the last head it signed, per archive
    (:mod:`homelab_lib.runs.signing`).
    """

    signing_key: Secret | None = Field(default=None, description="file:~/.ssh/id_ed25519, or a .pub with ssh-agent")
    allowed_signers: FilePath | None = Field(default=None, description="keep a copy off the archive's machine")
    identity: Annotated[str, Field(pattern=r"^\S+$")] | None = Field(
        default=None, description="the signer's name in allowed_signers, e.g. you@example.org"
    )
    witness: Path | None = Field(
        default=None,
        description="the signer's note of the last head it signed, per archive, kept off the archive "
        "(default $XDG_STATE_HOME/homelab/audit-witness.json): an archive rolled back to an older copy shows",
    )

    @model_validator(mode="after")
    def _identity_with_signers(self) -> Audit:
        if self.allowed_signers is not None and self.identity is None:
            raise ValueError("allowed_signers needs identity: the name the signing key has in that file")
        return self


class Alerts(Model):
    """Where failed runs, drift and tampering are reported (:mod:`homelab_lib.schedule.alerts`).

    ``webhook`` is a secret reference: the URL may hold a token (Gotify's ``?token=``, a Slack
    hook's path, an ntfy topic), so it never reaches a log, an error or the archive.
    """

    webhook: Secret = Field(description="env:NAME or file:PATH holding the webhook URL")
    kind: Literal["ntfy", "gotify", "slack", "alertmanager", "json"] = Field(
        default="json", description="payload shape: ntfy, gotify, slack (also Discord's /slack), alertmanager, json"
    )
    on: tuple[Literal["failure", "drift", "tamper"], ...] = Field(
        default=("failure", "drift", "tamper"), description="which events are sent"
    )
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0


class Lab(Model):
    """The rehearsal lab's own settings (profile ``lab`` only)."""

    state_dir: FilePath
    pve_time_scale: Annotated[float, Field(ge=0)] = 0.0
    k3s_versions: list[Annotated[str, Field(pattern=r"^v\d+\.\d+\.\d+\+k3s\d+$")]] = Field(
        default_factory=list, description="K3s releases the lab offers besides k3s.version (upgrade rehearsals)"
    )


class MovedService(Model):
    """A service runbook 05 moved to K3s, as its ``placement_file`` records it (never written by hand)."""

    origin: Annotated[str, Field(pattern=r"^[^/\s]+/[^/\s]+$")] = Field(description="vm/stack it ran in")
    sizes: dict[str, Annotated[str, Field(pattern=r"^\d+(Mi|Gi|Ti)$")]] = Field(
        default_factory=dict, description="its claims' sizes (PVC name -> size), as the move made them"
    )
    run: str = ""


class Inventory(Model):
    """The whole homelab, as the parameter files describe it."""

    name: Name
    profile: Literal["real", "lab"] = "real"
    proxmox: Proxmox
    overcommit: Overcommit = Overcommit()
    network: Network = Network()
    nodes: Annotated[list[Node], Field(min_length=1)]
    ssh: Ssh
    vms: list[Vm] = []
    k3s: K3s | None = None
    services: dict[Name, Service] = Field(default_factory=dict, description="catalog additions/overrides")
    backups: Backups = Backups()
    monitoring: Monitoring | None = None
    audit: Audit | None = None
    alerts: Alerts | None = None
    lab: Lab | None = None
    placement_file: FilePath | None = Field(
        default=None, description="where runbook 05 records the services it moved (applied on every load)"
    )
    moved: dict[Name, MovedService] = Field(
        default_factory=dict, description="read from placement_file on load: the services moved to K3s"
    )
    source_files: tuple[Path, ...] = ()

    def vm(self, name: str) -> Vm:
        """The VM with this name (:class:`~homelab_lib.core.errors.NotFound`, also a KeyError, if none)."""
        for vm in self.vms:
            if vm.name == name:
                return vm
        raise NotFound(name, what="VM", known=[vm.name for vm in self.vms], where=self._where("vms"))

    def node(self, name: str) -> Node:
        """The node with this name (:class:`~homelab_lib.core.errors.NotFound`, also a KeyError, if none)."""
        for node in self.nodes:
            if node.name == name:
                return node
        raise NotFound(name, what="node", known=[n.name for n in self.nodes], where=self._where("nodes"))

    def hash_key(self) -> bytes:
        """The homelab's key for every hash that covers a secret (:mod:`homelab_lib.core.hashkey`), kept beside
        its first parameter file and made there at its first use.

        Raises:
            HashKeyUnsafe: the inventory was read from no file, or the key cannot be made or read, or
                others may read it (the message names the file and the fix).
        """
        from homelab_lib.core.hashkey import load_key

        if not self.source_files:
            raise HashKeyUnsafe(
                "the inventory was read from no parameter file: there is no folder to keep its hash key in",
                where=f"inventory {self.name}",
                hint="load the inventory from its parameter file (load_inventory(PATH))",
            )
        return load_key(self.source_files[0].parent)

    def _where(self, key: str) -> str:
        files = ", ".join(str(f) for f in self.source_files) or f"inventory {self.name}"
        return f"{files}: {key}"

    @property
    def docker_hosts(self) -> list[Vm]:
        return [vm for vm in self.vms if vm.role == "docker"]

    def placed(self, platform: Literal["compose", "k3s"] | None = None) -> list[str]:
        """The services placed in Compose stacks, on K3s, or (None) on either; sorted, each once."""
        names: set[str] = set()
        if platform in (None, "compose"):
            names.update(svc for vm in self.vms for services in vm.stacks.values() for svc in services)
        if platform in (None, "k3s") and self.k3s:
            names.update(self.k3s.services)
        return sorted(names)

    def secrets(self) -> list[tuple[str, SecretRef]]:
        """Every secret reference of the inventory, with its key path."""
        found: list[tuple[str, SecretRef]] = []

        def walk(obj: object, path: str) -> None:
            if isinstance(obj, SecretRef):
                found.append((path, obj))
            elif isinstance(obj, BaseModel):
                for name in type(obj).model_fields:
                    walk(getattr(obj, name), f"{path}.{name}" if path else name)
            elif isinstance(obj, dict):
                for k, v in obj.items():
                    walk(v, f"{path}.{k}")
            elif isinstance(obj, list | tuple):
                for i, v in enumerate(obj):
                    walk(v, f"{path}[{i}]")

        walk(self, "")
        return found


def slug(text: str) -> str:
    """A file-name-safe form of text."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")
