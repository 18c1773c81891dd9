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
  files at the same paths; ``configs:`` a ConfigMap mounted the same way;
- **healthcheck** becomes readiness, liveness and startup probes; ``depends_on`` an init container
  that waits for the dependency's Service (ready endpoints, for ``service_healthy``);
- host devices, host networking, ``pid: host``, capabilities, privileged, read-only root, sysctls
  map to the pod and container security settings, each flagged in the report.

Every key of a service is accounted for: what no rule maps is reported as *not mapped*, with why.

A runbook::

    from homelab_lib.migrate import convert_inventory_service, load_compose, convert_compose

    conv = convert_inventory_service(inv, None, "sonarr", "sonarr")   # as runbook 05 applies it
    conv.report_frame()                                               # what is mapped, and how
    conv.volumes                                                      # what the data copy fills
    for c in convert_compose(load_compose("compose.yaml"), namespace="media"):
        print(c.yaml(redact=True))
"""

from __future__ import annotations

import base64
import contextlib
import re
import shlex
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from homelab_lib.convert.source import ComposeFile, parse_compose, read_env_file
from homelab_lib.convert.units import cpu, dns_label, pvc_size, quantity, seconds, size_bytes, whole_seconds
from homelab_lib.core.errors import ConvertError, MigrateError, NotFound, Problem
from homelab_lib.kube.objects import INGRESS_CLASS, STORAGE_CLASS, KubeObject, kubernetes_version, ordered
from homelab_lib.kube.objects import validate as validate_objects

if TYPE_CHECKING:
    import pandas as pd

    from homelab_lib.inventory.model import Inventory

Status = Literal["mapped", "approximated", "not mapped"]
VolumeKind = Literal["pvc-copied", "hostPath", "emptyDir"]

#: The Kubernetes minor the CLI validates for when no inventory names a K3s release (the lab's v1.31.4+k3s1).
DEFAULT_KUBERNETES = "1.31.0"
DEFAULT_PVC = "1Gi"
WAIT_IMAGE = "docker.io/library/busybox:1.37.0"
NODEPORT_RANGE = range(30000, 32768)
SERVICE_ANNOTATION = "homelab.io/compose-service"

SECRET_KEY = re.compile(
    r"(pass(word|wd)?|secret|token|(^|_)keys?($|_)|api_?key|private_?key|credential|auth|salt|cookie|dsn|claim)", re.I
)
SECRET_VALUE = re.compile(
    r"(://[^/\s:@]+:[^/\s@]+@|-----BEGIN [A-Z ]*PRIVATE KEY|(pass(word|wd)?|secret|token)['\"\]]*\s*(=|:|=>)\s*\S)",
    re.I,
)
HOST_PATHS_OF_THE_NODE = (
    "/", "/sys", "/proc", "/dev", "/run", "/var/run", "/var/log", "/lib/modules", "/etc/localtime", "/etc/timezone",
    "/etc/os-release", "/run/udev",
)  # fmt: skip
DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}


@dataclass(frozen=True)
class ReportLine:
    """What became of one key of a Compose service.

    Attributes:
        service: the Compose service.
        key: the key path in the service (``ports[0]``, ``healthcheck.start_period``).
        status: mapped, approximated (works, but behaves differently) or not mapped.
        detail: what it became, or why it could not be mapped; never a secret value.
        line: its line in the compose file (0 when unknown).
    """

    service: str
    key: str
    status: Status
    detail: str
    line: int = 0


@dataclass(frozen=True)
class VolumePlan:
    """One volume, bind mount or tmpfs of a service, as the pod gets it: what the data copy must fill.

    Attributes:
        volume: the pod's volume name.
        container_path: where the container sees it.
        kind: ``pvc-copied`` (a PVC the data copy fills from ``source``), ``hostPath`` (a folder of the
            K3s node, used in place) or ``emptyDir`` (nothing to copy).
        source: the Compose volume's name, or the bind's host path ('' for tmpfs and anonymous volumes).
        source_kind: ``volume``, ``bind``, ``tmpfs`` or ``anonymous``.
        docker_volume: the Docker volume that holds the data (``<project>_<name>`` or its ``name:``); '' for binds.
        pvc: the claim's name ('' unless pvc-copied).
        size: the claim's size ('' unless pvc-copied).
        size_from: how the size was chosen: ``sizes``, ``measured``, ``default``.
        read_only: mounted read-only.
    """

    volume: str
    container_path: str
    kind: VolumeKind
    source: str
    source_kind: Literal["volume", "bind", "tmpfs", "anonymous"]
    docker_volume: str = ""
    pvc: str = ""
    size: str = ""
    size_from: str = ""
    read_only: bool = False


@dataclass(frozen=True, repr=False)
class Conversion:
    """One Compose service converted.

    Attributes:
        service: the Compose service's name.
        k8s_name: its Kubernetes name (the workload, its Service, the prefix of its other objects).
        namespace: the namespace of every object.
        objects: the manifests, in apply order (Namespace, Secrets, ConfigMaps, PVCs, Services, workload, Ingress).
        report: every key of the service, and what became of it.
        volumes: what the pod mounts, and what the data copy must fill.
    """

    service: str
    k8s_name: str
    namespace: str
    objects: list[KubeObject] = field(repr=False)  # Secrets hold values: never in a repr a notebook shows
    report: list[ReportLine] = field(repr=False)
    volumes: list[VolumePlan] = field(repr=False)

    def __repr__(self) -> str:
        kinds = ", ".join(f"{o['kind']}/{o['metadata']['name']}" for o in self.objects)
        counts = ", ".join(f"{len(self.lines(s))} {s}" for s in ("mapped", "approximated", "not mapped"))
        return f"Conversion({self.service!r} -> {self.namespace}/{self.k8s_name}: {kinds}; {counts})"

    def lines(self, status: Status) -> list[ReportLine]:
        """The report's lines of one status."""
        return [r for r in self.report if r.status == status]

    @property
    def pvcs(self) -> list[VolumePlan]:
        """The claims the data copy fills."""
        return [v for v in self.volumes if v.kind == "pvc-copied"]

    def object(self, kind: str, name: str | None = None) -> KubeObject:
        """The first object of a kind (and name).

        Raises:
            NotFound: there is none.
        """
        for obj in self.objects:
            if obj["kind"] == kind and (name is None or obj["metadata"]["name"] == name):
                return obj
        known = [f"{o['kind']}/{o['metadata']['name']}" for o in self.objects]
        raise NotFound(f"{kind}/{name or '*'}", what="object", known=known, where=f"conversion of {self.service}")

    def yaml(self, *, redact: bool = False) -> str:
        """The objects as one YAML stream; ``redact`` replaces every Secret value with ``<redacted>``."""
        objs = redacted(self.objects) if redact else self.objects
        return yaml.dump_all(objs, Dumper=_PlainDumper, sort_keys=False, default_flow_style=False, width=1000)

    def volumes_frame(self) -> pd.DataFrame:
        """The volume plans as a table: what the pod mounts, and what the data copy fills from where."""
        import pandas as pd

        cols = ["volume", "container_path", "kind", "source", "source_kind", "docker_volume", "pvc", "size",
                "size_from", "read_only"]  # fmt: skip
        return pd.DataFrame([vars(v) for v in self.volumes], columns=cols)

    def report_frame(self) -> pd.DataFrame:
        """The report as a table: service, key, status, detail, line."""
        return report_frame([self])

    def markdown(self) -> str:
        """The report of this service as a Markdown section."""
        counts = {s: len(self.lines(s)) for s in ("mapped", "approximated", "not mapped")}
        out = [
            f"## {self.service} -> {self.k8s_name} (namespace {self.namespace})",
            "",
            ", ".join(f"{n} {s}" for s, n in counts.items()),
            "",
            "| key | line | status | detail |",
            "| --- | --- | --- | --- |",
        ]
        for r in self.report:
            detail = r.detail.replace("|", "\\|").replace("\n", " ")
            out.append(f"| `{r.key}` | {r.line or ''} | {r.status} | {detail} |")
        if self.volumes:
            out += [
                "",
                "| volume | kind | source | container path | claim | size |",
                "| --- | --- | --- | --- | --- | --- |",
            ]
            for v in self.volumes:
                size = f"{v.size} ({v.size_from})" if v.size else ""
                out.append(
                    f"| {v.volume} | {v.kind} | {v.source or '-'} | {v.container_path} | {v.pvc or '-'} | {size} |"
                )
        return "\n".join(out) + "\n"


class _PlainDumper(yaml.SafeDumper):
    """Every object written out in full: no ``&id001`` anchors where two probes share one command."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def redacted(objs: Sequence[KubeObject]) -> list[KubeObject]:
    """The objects with every Secret's values replaced by ``<redacted>`` (for showing, never applying)."""
    out = []
    for obj in objs:
        if obj.get("kind") == "Secret":
            obj = {**obj, **{k: dict.fromkeys(obj[k], "<redacted>") for k in ("data", "stringData") if k in obj}}
        out.append(obj)
    return out


def report_frame(conversions: Sequence[Conversion]) -> pd.DataFrame:
    """Every conversion's report as one table: service, k8s_name, key, status, detail, line."""
    import pandas as pd

    rows = [{"k8s_name": c.k8s_name, **vars(r)} for c in conversions for r in c.report]
    cols = ["service", "k8s_name", "key", "status", "detail", "line"]
    return pd.DataFrame(rows, columns=cols)


def report_markdown(conversions: Sequence[Conversion], *, source: str = "") -> str:
    """``report.md``: a summary table, then one section per service."""
    out = [f"# Conversion report{f': {source}' if source else ''}", ""]
    out += ["| service | kubernetes name | objects | mapped | approximated | not mapped |"]
    out += ["| --- | --- | --- | --- | --- | --- |"]
    for c in conversions:
        counts = [len(c.lines(s)) for s in ("mapped", "approximated", "not mapped")]
        out.append(f"| {c.service} | {c.k8s_name} | {len(c.objects)} | " + " | ".join(map(str, counts)) + " |")
    out.append("")
    return "\n".join(out) + "\n" + "\n".join(c.markdown() for c in conversions)


# ------------------------------------------------------------------ parsing Compose's short forms


@dataclass(frozen=True)
class PortSpec:
    """One container port of a service: published on the host (``published``, 0: any) or not."""

    container: int
    protocol: str
    published: int | None = None  # None: not published; 0: published on a port Docker picks
    host_ip: str = ""


def _range(text: str) -> list[int]:
    if "-" in text:
        a, b = text.split("-", 1)
        return list(range(int(a), int(b) + 1))
    return [int(text)]


def parse_port(spec: Any) -> list[PortSpec]:
    """A ``ports:`` entry (short or long syntax; ranges expanded) as port specs.

    Raises:
        ValueError: not a port.
    """
    if isinstance(spec, dict):
        proto = str(spec.get("protocol") or "tcp").lower()
        target = _range(str(spec["target"]))
        pub = spec.get("published")
        published = _range(str(pub)) if pub not in (None, "") else [0] * len(target)
        if len(published) == 1 and len(target) > 1:
            published = [published[0] + i for i in range(len(target))]
        host_ip = str(spec.get("host_ip") or "")
        return [PortSpec(t, proto, p, host_ip) for t, p in zip(target, published, strict=True)]
    text = str(spec)
    proto = "tcp"
    if "/" in text:
        text, proto = text.rsplit("/", 1)
    host_ip = ""
    if text.startswith("["):
        host_ip, text = text[1:].split("]", 1)
        text = text.lstrip(":")
    parts = text.split(":")
    if len(parts) == 3:
        host_ip, host, container = parts
    elif len(parts) == 2:
        host, container = parts
    elif len(parts) == 1:
        host, container = "", parts[0]
    else:
        raise ValueError(f"{spec!r} is not a port")
    targets = _range(container)
    hosts = _range(host) if host else [0] * len(targets)
    if len(hosts) == 1 and len(targets) > 1:
        hosts = [hosts[0] + i for i in range(len(targets))]
    if len(hosts) != len(targets):
        raise ValueError(f"{spec!r}: the host and container ranges differ in length")
    return [PortSpec(t, proto.lower(), h, host_ip) for t, h in zip(targets, hosts, strict=True)]


def service_ports(svc: Mapping[str, Any]) -> list[PortSpec]:
    """Every container port a service serves: its ``ports:`` (published) and ``expose:`` (not), once each."""
    found: dict[tuple[int, str], PortSpec] = {}
    for spec in svc.get("ports") or []:
        for p in parse_port(spec):
            found.setdefault((p.container, p.protocol), p)
    for spec in svc.get("expose") or []:
        text = str(spec)
        proto = "tcp"
        if "/" in text:
            text, proto = text.rsplit("/", 1)
        for port in _range(text):
            found.setdefault((port, proto.lower()), PortSpec(port, proto.lower()))
    return list(found.values())


def _pairs(value: Any, sep: str = "=") -> list[tuple[str, str | None]]:
    """A Compose list-or-mapping (``["A=b", "C"]`` or ``{A: b, C: null}``) as (key, value) pairs."""
    if isinstance(value, dict):
        return [(str(k), None if v is None else _text(v)) for k, v in value.items()]
    out: list[tuple[str, str | None]] = []
    for item in value or []:
        key, found, val = str(item).partition(sep)
        out.append((key, val if found else None))
    return out


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _command(value: Any) -> list[str]:
    """A Compose command/entrypoint (a string is split as a shell would, without running one)."""
    parts = [str(v) for v in value] if isinstance(value, list) else shlex.split(str(value))
    # Kubernetes expands $(VAR) in command and args; Compose does not: keep them literal.
    return [p.replace("$(", "$$(") for p in parts]


# ------------------------------------------------------------------ the converter


@dataclass
class _Context:
    """What the converter needs besides the service: the file, the options."""

    compose: ComposeFile
    namespace: str
    measured_bytes: Mapping[str, int]
    sizes: Mapping[str, str]
    secret_values: Mapping[str, str]
    variables: Mapping[str, str]
    headroom: float
    names: Mapping[str, str]  # every Compose service -> its Kubernetes name
    host_address: str = ""  # the Docker VM's address published ports bind to (runbook 02's rule: not flagged)
    wait_image: str = WAIT_IMAGE


@dataclass
class _Build:
    """A service's conversion under way."""

    name: str
    k8s: str
    ctx: _Context
    svc: Mapping[str, Any]
    report: list[ReportLine] = field(default_factory=list)
    volumes: list[VolumePlan] = field(default_factory=list)
    container: dict[str, Any] = field(default_factory=dict)
    pod: dict[str, Any] = field(default_factory=dict)
    pod_volumes: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)
    env: list[dict[str, Any]] = field(default_factory=list)
    config_data: dict[str, str] = field(default_factory=dict)
    secret_data: dict[str, str] = field(default_factory=dict)
    file_secrets: dict[str, str] = field(default_factory=dict)
    file_configs: dict[str, str] = field(default_factory=dict)
    objects: list[KubeObject] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)
    replicas: int = 1
    ingress_ports: set[int] = field(default_factory=set)
    extra_service_names: list[tuple[str, str]] = field(default_factory=list)

    # -- helpers
    def note(self, key: str, status: Status, detail: str, loc: tuple[str | int, ...] = ()) -> None:
        line = self.ctx.compose.line(("services", self.name, *(loc or tuple(_loc(key)))))
        self.report.append(ReportLine(self.name, key, status, detail, line))

    def meta(self, name: str) -> dict[str, Any]:
        return {
            "name": name,
            "namespace": self.ctx.namespace,
            "labels": {"app.kubernetes.io/name": self.k8s, "app.kubernetes.io/instance": self.k8s},
            "annotations": {SERVICE_ANNOTATION: self.name},
        }

    def security(self) -> dict[str, Any]:
        sc: dict[str, Any] = self.container.setdefault("securityContext", {})
        return sc

    def pod_security(self) -> dict[str, Any]:
        sc: dict[str, Any] = self.pod.setdefault("securityContext", {})
        return sc

    def volume_name(self, base: str) -> str:
        name = dns_label(base, limit=50)
        taken = {v["name"] for v in self.pod_volumes}
        out, i = name, 2
        while out in taken:
            out, i = f"{name}-{i}", i + 1
        return out


def _loc(key: str) -> list[str | int]:
    """``ports[0].target`` -> ["ports", 0, "target"]."""
    out: list[str | int] = []
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", key):
        out.append(int(part[1:-1]) if part.startswith("[") else part)
    return out


Handler = Callable[[_Build, Any], None]
HANDLERS: dict[str, Handler] = {}


def handles(*keys: str) -> Callable[[Handler], Handler]:
    """Register a handler for Compose service keys (a registry, as papermill's engines)."""

    def register(fn: Handler) -> Handler:
        for k in keys:
            HANDLERS[k] = fn
        return fn

    return register


@handles("image")
def _image(b: _Build, value: Any) -> None:
    b.container["image"] = str(value)
    b.note("image", "mapped", f"container image {value}")


@handles("build")
def _build(b: _Build, value: Any) -> None:
    if "image" in b.svc:
        b.note("build", "not mapped", "Kubernetes runs images only: the image named by image: is used, build: is not")
    else:
        b.container["image"] = f"{b.k8s}:built-locally"
        b.note(
            "build",
            "not mapped",
            f"Kubernetes cannot build: build the image, push it to a registry the cluster pulls from (Harbor), "
            f"and set image: (the manifest says {b.k8s}:built-locally until then)",
        )


@handles("pull_policy")
def _pull(b: _Build, value: Any) -> None:
    policy = {"always": "Always", "never": "Never", "missing": "IfNotPresent", "if_not_present": "IfNotPresent"}
    if str(value) in policy:
        b.container["imagePullPolicy"] = policy[str(value)]
        b.note("pull_policy", "mapped", f"imagePullPolicy {policy[str(value)]}")
    else:
        b.note("pull_policy", "not mapped", f"pull_policy {value} has no Kubernetes counterpart (daily: use Always)")


@handles("command", "entrypoint")
def _cmd(b: _Build, _value: Any) -> None:
    if "entrypoint" in b.svc and "command" not in b.container:
        b.container["command"] = _command(b.svc["entrypoint"])
        b.note("entrypoint", "mapped", "container command (replaces the image's ENTRYPOINT)")
    if "command" in b.svc and "args" not in b.container:
        b.container["args"] = _command(b.svc["command"])
        b.note("command", "mapped", "container args (the image's ENTRYPOINT gets them, as in Compose)")
    for key in ("entrypoint", "command"):
        if key in b.svc and _secret_in_argv(_command(b.svc[key])):
            b.note(
                key,
                "approximated",
                "it holds what looks like a secret, which stays in the Deployment's args: pass it as an "
                "environment variable (it goes to the Secret) and refer to it as $(NAME)",
            )


_SECRET_FLAG = re.compile(r"^--?[\w-]*(pass(word|wd)?|secret|token|api-?key|requirepass|auth)[\w-]*(=.+)?$", re.I)


def _secret_in_argv(argv: Sequence[str]) -> bool:
    """An argument list with a secret in it: a credential URL or ``password=``, or a value after a secret flag."""
    for i, arg in enumerate(argv):
        if SECRET_VALUE.search(arg):
            return True
        m = _SECRET_FLAG.match(arg)
        if m and (m.group(3) or (i + 1 < len(argv) and not argv[i + 1].startswith(("-", "$")))):
            return True
    return False


@handles("working_dir")
def _workdir(b: _Build, value: Any) -> None:
    b.container["workingDir"] = str(value)
    b.note("working_dir", "mapped", "workingDir")


@handles("user")
def _user(b: _Build, value: Any) -> None:
    user, _, group = str(value).partition(":")
    if not user.isdigit() or (group and not group.isdigit()):
        b.note(
            "user",
            "not mapped",
            f"user {value} is a name: Kubernetes takes numeric ids only (runAsUser/runAsGroup); "
            "look the ids up in the image (id -u NAME) and give them as user: UID:GID",
        )
        return
    sc = b.security()
    sc["runAsUser"] = int(user)
    if group:
        sc["runAsGroup"] = int(group)
    b.note("user", "mapped", f"securityContext runAsUser {user}" + (f", runAsGroup {group}" if group else ""))


@handles("group_add")
def _groups(b: _Build, value: Any) -> None:
    ids = [int(g) for g in value if str(g).isdigit()]
    names = [str(g) for g in value if not str(g).isdigit()]
    if ids:
        b.pod_security()["supplementalGroups"] = ids
        b.note("group_add", "mapped", f"pod supplementalGroups {ids}")
    if names:
        b.note("group_add", "not mapped", f"groups by name {names}: Kubernetes takes numeric group ids only")


def _is_secret(key: str, value: str, raw: Any) -> str:
    """Why an environment value is a secret ('' when it is not)."""
    if key.endswith("_FILE") and value.startswith("/"):
        return ""
    if SECRET_KEY.search(key):
        return "named like a secret"
    if SECRET_VALUE.search(value):
        return "its value holds a credential"
    if isinstance(raw, str):
        for name in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", raw):
            if SECRET_KEY.search(name):
                return f"its value comes from the secret-like variable {name}"
    return ""


@handles("environment", "env_file")
def _env(b: _Build, _value: Any) -> None:
    values: dict[str, tuple[str, str, Any]] = {}  # name -> (value, key path, raw)
    files = b.svc.get("env_file")
    if files is not None:
        entries = files if isinstance(files, list) else [files]
        for i, entry in enumerate(entries):
            path = str(entry["path"] if isinstance(entry, dict) else entry)
            required = not isinstance(entry, dict) or entry.get("required", True)
            key = f"env_file[{i}]" if isinstance(files, list) else "env_file"
            file = (b.ctx.compose.base_dir / path).expanduser()
            if not file.is_file():
                if required:
                    raise ConvertError(
                        [
                            Problem(
                                b.ctx.compose.shown,
                                b.ctx.compose.line(("services", b.name, *_loc(key))),
                                f"services.{b.name}.{key}",
                                f"env_file {path} does not exist next to the compose file ({file})",
                            )
                        ]
                    )
                b.note(key, "mapped", f"{path} is optional and missing: nothing to read")
                continue
            for k, v in read_env_file(file).items():
                values[k] = (v, key, None)
            b.note(key, "mapped", f"{path}: its variables go to the ConfigMap/Secret {b.k8s}-env like environment:")
    env = b.svc.get("environment")
    raw_env = b.ctx.compose.raw_value(("services", b.name, "environment"))
    raw_pairs = dict(_pairs(raw_env)) if raw_env is not None else {}
    for k, given in _pairs(env):
        value = given if given is not None else b.ctx.variables.get(k)
        if value is None:
            b.note(f"environment.{k}", "not mapped", f"{k} takes its value from the shell, which has none here")
            continue
        values[k] = (value, f"environment.{k}", raw_pairs.get(k))
    for k, (v, where, raw) in values.items():
        if not re.fullmatch(r"[-._a-zA-Z0-9]+", k):
            b.note(where, "not mapped", f"{k!r} is not a valid ConfigMap/Secret key")
            continue
        why = _is_secret(k, v, raw)
        if why:
            b.secret_data[k] = v
            ref = {"secretKeyRef": {"name": f"{b.k8s}-env", "key": k}}
            b.report.append(ReportLine(b.name, where, "mapped", f"Secret {b.k8s}-env key {k} ({why})", _line(b, where)))
        else:
            b.config_data[k] = v
            ref = {"configMapKeyRef": {"name": f"{b.k8s}-env", "key": k}}
            b.report.append(ReportLine(b.name, where, "mapped", f"ConfigMap {b.k8s}-env key {k}", _line(b, where)))
        b.env.append({"name": k, "valueFrom": ref})


def _line(b: _Build, key: str) -> int:
    loc = _loc(key)
    if loc and loc[0] == "environment" and isinstance(b.svc.get("environment"), list):
        names = [p[0] for p in _pairs(b.svc["environment"])]
        if len(loc) > 1 and loc[1] in names:
            loc = ["environment", names.index(str(loc[1]))]
    return b.ctx.compose.line(("services", b.name, *loc))


def _file_source(b: _Build, section: str, name: str) -> tuple[str | None, str]:
    """The content of a top-level secret or config, and where it came from (None: not readable here)."""
    spec = (b.ctx.compose.document.get(section) or {}).get(name) or {}
    if section == "secrets" and name in b.ctx.secret_values:
        return b.ctx.secret_values[name], "its reference"
    if "content" in spec:
        return str(spec["content"]), "inline content"
    if "environment" in spec:
        var = str(spec["environment"])
        if var in b.ctx.variables:
            return b.ctx.variables[var], f"variable {var}"
        return None, f"variable {var} is not set here"
    if "file" in spec:
        path = (b.ctx.compose.base_dir / str(spec["file"])).expanduser()
        try:
            return path.read_text(), f"file {spec['file']}"
        except (OSError, UnicodeDecodeError) as e:
            return None, f"file {spec['file']} cannot be read here ({getattr(e, 'strerror', None) or e})"
    if spec.get("external"):
        return None, "it is external (made outside Compose)"
    return None, "it has no file, content or environment"


@handles("secrets", "configs")
def _files(b: _Build, _value: Any) -> None:
    for section, store, kind in (("secrets", b.file_secrets, "Secret"), ("configs", b.file_configs, "ConfigMap")):
        entries = b.svc.get(section) or []
        for i, entry in enumerate(entries):
            source = str(entry["source"] if isinstance(entry, dict) else entry)
            target = str(entry.get("target") or "") if isinstance(entry, dict) else ""
            if section == "secrets":
                path = target if target.startswith("/") else f"/run/secrets/{target or source}"
            else:
                path = target or f"/{source}"
            content, origin = _file_source(b, section, source)
            key = f"{section}[{i}]"
            obj = f"{b.k8s}-{section}"
            if content is None:
                b.note(
                    key,
                    "not mapped",
                    f"{section[:-1]} {source}: {origin}; create {kind} {obj} with key {dns_label(source)} "
                    f"yourself, then mount it at {path}",
                )
                continue
            data_key = re.sub(r"[^-._a-zA-Z0-9]", "-", source)
            store[data_key] = content
            vol = f"compose-{section}"
            mount: dict[str, Any] = {"name": vol, "mountPath": path, "subPath": data_key, "readOnly": True}
            b.mounts.append(mount)
            mode = entry.get("mode") if isinstance(entry, dict) else None
            extra = ""
            if isinstance(entry, dict) and (entry.get("uid") or entry.get("gid")):
                extra = "; uid/gid are not mapped (the file belongs to root, readable by the pod's fsGroup)"
            if mode is not None:
                b.annotations[f"homelab.io/{section}-mode-{data_key}"[:63]] = str(mode)
            status: Status = "approximated" if extra else "mapped"
            b.note(key, status, f"{kind} {obj} key {data_key} ({origin}), mounted as a file at {path}{extra}")
    for section, store, kind in (("secrets", b.file_secrets, "Secret"), ("configs", b.file_configs, "ConfigMap")):
        if not store:
            continue
        vol = f"compose-{section}"
        if kind == "Secret":
            b.pod_volumes.append({"name": vol, "secret": {"secretName": f"{b.k8s}-secrets"}})
        else:
            b.pod_volumes.append({"name": vol, "configMap": {"name": f"{b.k8s}-configs"}})


@handles("ports", "expose")
def _ports(b: _Build, _value: Any) -> None:
    for i, spec in enumerate(b.svc.get("ports") or []):
        try:
            parsed = parse_port(spec)
        except (ValueError, KeyError) as e:
            b.note(f"ports[{i}]", "not mapped", f"cannot read the port {spec!r}: {e}")
            continue
        for p in parsed:
            what = f"{p.container}/{p.protocol}"
            if b.svc.get("network_mode") == "host":
                b.note(f"ports[{i}]", "mapped", f"{what}: the pod uses the node's network, the port is the node's")
            elif p.container in b.ingress_ports and p.protocol == "tcp":
                b.note(f"ports[{i}]", "mapped", f"{what}: Service {b.k8s}, reached from outside through the Ingress")
            elif p.published in NODEPORT_RANGE:
                b.note(f"ports[{i}]", "mapped", f"{what}: Service {b.k8s} and NodePort {p.published} (the same number)")
            else:
                shown = f"host port {p.published}" if p.published else "a host port Docker picks"
                b.note(
                    f"ports[{i}]",
                    "approximated",
                    f"{what}: Service {b.k8s}; {shown} becomes a NodePort that K3s assigns from 30000-32767 "
                    "(NodePort numbers outside that range are refused): reach it there, or through an Ingress",
                )
            if (p.host_ip.startswith("127.") or p.host_ip == "::1") and p.host_ip != b.ctx.host_address:
                b.note(
                    f"ports[{i}]",
                    "approximated",
                    f"published on {p.host_ip} only: a NodePort listens on every address of the node",
                )
    for i, spec in enumerate(b.svc.get("expose") or []):
        b.note(f"expose[{i}]", "mapped", f"{spec}: a port of Service {b.k8s} inside the cluster (never a hostPort)")


def _services(b: _Build) -> None:
    """The Service that makes the name resolve, a NodePort one for published ports, and alias Services."""
    ports = service_ports(b.svc)
    spec_ports: list[dict[str, Any]] = [
        {
            "name": f"{p.protocol}-{p.container}",
            "port": p.container,
            "targetPort": p.container,
            "protocol": p.protocol.upper(),
        }
        for p in ports
    ]
    selector = {"app.kubernetes.io/instance": b.k8s}

    def service(name: str) -> KubeObject:
        spec: dict[str, Any] = {"selector": selector}
        if spec_ports:
            spec["ports"] = spec_ports
        else:
            spec["clusterIP"] = "None"
        return {"apiVersion": "v1", "kind": "Service", "metadata": b.meta(name), "spec": spec}

    b.objects.append(service(b.k8s))
    shown = (
        f" with ports {', '.join(p['name'] for p in spec_ports)}"
        if spec_ports
        else (" (headless: the service has no ports, its name resolves to the pod)")
    )
    b.note("(service)", "mapped", f"Service {b.k8s}{shown}: its name resolves as on the Compose network")
    for name, why in b.extra_service_names:
        b.objects.append(service(name))
        b.note(why, "mapped", f"Service {name}: the name {why.split('.')[0]} gave resolves too")
    nodeports: list[dict[str, Any]] = []
    if b.svc.get("network_mode") != "host":
        for spec in b.svc.get("ports") or []:
            try:
                parsed = parse_port(spec)
            except (ValueError, KeyError):
                continue
            for p in parsed:
                if p.published is None or (p.container in b.ingress_ports and p.protocol == "tcp"):
                    continue
                port: dict[str, Any] = {
                    "name": f"{p.protocol}-{p.container}",
                    "port": p.container,
                    "targetPort": p.container,
                    "protocol": p.protocol.upper(),
                }
                if p.published in NODEPORT_RANGE:
                    port["nodePort"] = p.published
                if all(q["name"] != port["name"] for q in nodeports):
                    nodeports.append(port)
    if nodeports:
        b.objects.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": b.meta(f"{b.k8s}-nodeport"),
                "spec": {"type": "NodePort", "selector": selector, "ports": nodeports},
            }
        )


_RULE_HOST = re.compile(r"Host\(([^)]*)\)")
_RULE_PATH = re.compile(r"(PathPrefix|Path)\(`([^`]*)`\)")


def _label_loc(b: _Build, key: str) -> tuple[str | int, ...]:
    labels = b.svc.get("labels")
    if isinstance(labels, list):
        names = [k for k, _ in _pairs(labels)]
        return ("labels", names.index(key)) if key in names else ("labels",)
    return ("labels", key)


def _traefik(b: _Build, labels: list[tuple[str, str]]) -> None:
    """Ingress objects from traefik labels (one per router with a Host rule)."""
    lab = {k: v for k, v in labels}
    if lab.get("traefik.enable", "true").lower() == "false":
        b.note("labels.traefik.enable", "mapped", "traefik.enable=false: no Ingress", _label_loc(b, "traefik.enable"))
        return
    routers: dict[str, dict[str, str]] = {}
    service_ports_: dict[str, int] = {}
    for k, v in labels:
        m = re.fullmatch(r"traefik\.http\.routers\.([^.]+)\.(.+)", k)
        if m:
            routers.setdefault(m.group(1), {})[m.group(2)] = v
        m = re.fullmatch(r"traefik\.http\.services\.([^.]+)\.loadbalancer\.server\.port", k)
        if m and v.isdigit():
            service_ports_[m.group(1)] = int(v)
    first = service_ports(b.svc)
    used = set()
    for router, attrs in routers.items():
        rule = attrs.get("rule", "")
        hosts = [h.strip().strip("`") for m in _RULE_HOST.finditer(rule) for h in m.group(1).split(",")]
        paths = _RULE_PATH.findall(rule)
        key = f"labels.traefik.http.routers.{router}.rule"
        loc = _label_loc(b, key.removeprefix("labels."))
        if not hosts:
            b.note(
                key,
                "not mapped",
                f"rule {rule!r} has no Host(): an Ingress needs a host (HostRegexp is not mapped)",
                loc,
            )
            continue
        port = service_ports_.get(attrs.get("service", ""), 0) or (
            next(iter(service_ports_.values())) if len(service_ports_) == 1 else 0
        )
        if not port:
            tcp = [p.container for p in first if p.protocol == "tcp"]
            port = tcp[0] if tcp else 0
        if not port:
            b.note(key, "not mapped", "no port to route to: give traefik.http.services.X.loadbalancer.server.port", loc)
            continue
        b.ingress_ports.add(port)
        kind, path = paths[0] if paths else ("PathPrefix", "/")
        path_type = "Exact" if kind == "Path" else "Prefix"
        backend = {"service": {"name": b.k8s, "port": {"number": port}}}
        annotations = {SERVICE_ANNOTATION: b.name}
        used.update({f"traefik.http.routers.{router}.rule", f"traefik.http.routers.{router}.service"})
        if "entrypoints" in attrs:
            annotations["traefik.ingress.kubernetes.io/router.entrypoints"] = attrs["entrypoints"]
            used.add(f"traefik.http.routers.{router}.entrypoints")
        if attrs.get("tls", "").lower() == "true" or "tls.certresolver" in attrs:
            annotations["traefik.ingress.kubernetes.io/router.tls"] = "true"
            used.add(f"traefik.http.routers.{router}.tls")
        if "tls.certresolver" in attrs:
            annotations["traefik.ingress.kubernetes.io/router.tls.certresolver"] = attrs["tls.certresolver"]
            used.add(f"traefik.http.routers.{router}.tls.certresolver")
        name = b.k8s if len(routers) == 1 else dns_label(f"{b.k8s}-{router}")
        meta = b.meta(name)
        meta["annotations"] = annotations
        b.objects.append(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "metadata": meta,
                "spec": {
                    "ingressClassName": INGRESS_CLASS,
                    "rules": [
                        {"host": h, "http": {"paths": [{"path": path, "pathType": path_type, "backend": backend}]}}
                        for h in hosts
                    ],
                },
            }
        )
        b.note(
            key, "mapped", f"Ingress {name} (class traefik): {', '.join(hosts)}{path} -> Service {b.k8s}:{port}", loc
        )
    for k, v in labels:
        if k in used or k == "traefik.enable":
            continue
        if re.fullmatch(r"traefik\.http\.services\.[^.]+\.loadbalancer\.server\.port", k):
            b.note(f"labels.{k}", "mapped", f"the Ingress backend port {v}", _label_loc(b, k))
        elif k == "traefik.docker.network":
            b.note(f"labels.{k}", "mapped", "not needed: traefik on K3s reaches every Service", _label_loc(b, k))
        else:
            b.note(
                f"labels.{k}",
                "not mapped",
                "this traefik setting has no Ingress counterpart here (middlewares become traefik "
                "Middleware objects, made by hand)",
                _label_loc(b, k),
            )
    if lab.get("traefik.enable") is not None:
        b.note("labels.traefik.enable", "mapped", "the Ingress above", _label_loc(b, "traefik.enable"))


@handles("labels")
def _labels(b: _Build, value: Any) -> None:
    labels = [(k, v or "") for k, v in _pairs(value)]
    traefik = [(k, v) for k, v in labels if k.startswith("traefik.")]
    if traefik:
        _traefik(b, traefik)
    for k, v in labels:
        if k.startswith("traefik."):
            continue
        if k.startswith("homelab."):
            b.note(
                f"labels.{k}", "mapped", "Compose bookkeeping of runbook 02: replaced by the app.kubernetes.io labels",
                _label_loc(b, k),
            )  # fmt: skip
            continue
        b.annotations[k] = v
        b.note(f"labels.{k}", "mapped", "an annotation of the workload and its pods", _label_loc(b, k))


@handles("annotations")
def _annotations(b: _Build, value: Any) -> None:
    for k, v in _pairs(value):
        b.annotations[k] = v or ""
    b.note("annotations", "mapped", "annotations of the workload and its pods")


def _claim_size(b: _Build, keys: Sequence[str]) -> tuple[str, str]:
    for k in keys:
        if k and k in b.ctx.sizes:
            return b.ctx.sizes[k], "sizes"
    for k in keys:
        if k and k in b.ctx.measured_bytes:
            return pvc_size(b.ctx.measured_bytes[k], b.ctx.headroom), "measured"
    return DEFAULT_PVC, "default"


def _claim(b: _Build, base: str, keys: Sequence[str]) -> tuple[str, str, str]:
    name = base if base.startswith(f"{b.k8s}-") else f"{b.k8s}-{base}"
    name = dns_label(name, limit=63)
    taken = {o["metadata"]["name"] for o in b.objects if o["kind"] == "PersistentVolumeClaim"}
    out, i = name, 2
    while out in taken:
        out, i = f"{name}-{i}", i + 1
    size, size_from = _claim_size(b, [*keys, out])  # also by the claim's own name (a move's record)
    b.objects.append(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": b.meta(out),
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": STORAGE_CLASS,
                "resources": {"requests": {"storage": size}},
            },
        }
    )
    return out, size, size_from


def _volume_entry(spec: Any) -> dict[str, Any]:
    """A service's volume entry in long form: type, source, target, read_only, tmpfs size."""
    if isinstance(spec, dict):
        return {"type": "volume", **spec}
    parts = str(spec).split(":")
    if len(parts) == 1:
        return {"type": "volume", "source": "", "target": parts[0]}
    source, target = parts[0], parts[1]
    modes = (parts[2] if len(parts) > 2 else "").split(",")
    kind = "bind" if source.startswith((".", "/", "~")) else "volume"
    out: dict[str, Any] = {"type": kind, "source": source, "target": target, "read_only": "ro" in modes}
    propagation = [m for m in modes if m in PROPAGATION]
    if propagation:
        out["bind"] = {"propagation": propagation[0]}
    if "nocopy" in modes:
        out["volume"] = {"nocopy": True}
    if {"z", "Z"} & set(modes):
        out["bind"] = {**out.get("bind", {}), "selinux": "z"}
    return out


#: bind propagation -> Kubernetes mountPropagation (shared ones need a privileged container)
PROPAGATION = {
    "rslave": "HostToContainer", "slave": "HostToContainer", "rshared": "Bidirectional", "shared": "Bidirectional",
    "rprivate": "None", "private": "None",
}  # fmt: skip


def _mount_options(b: _Build, key: str, v: Mapping[str, Any], mount: dict[str, Any]) -> None:
    """subpath, propagation, SELinux and nocopy of a volume entry: mapped onto the mount, or reported."""
    sub = (v.get("volume") or {}).get("subpath")
    if sub:
        mount["subPath"] = str(sub)
        b.note(f"{key}.volume.subpath", "mapped", f"subPath {sub}")
    if (v.get("volume") or {}).get("nocopy"):
        b.note(
            f"{key}.volume.nocopy", "approximated",
            "nocopy: Kubernetes never copies the image's files into a new volume (as nocopy asks)",
        )  # fmt: skip
    bind = v.get("bind") or {}
    prop = bind.get("propagation")
    if prop:
        mount["mountPropagation"] = PROPAGATION.get(str(prop), "None")
        status: Status = "mapped" if str(prop) in PROPAGATION else "not mapped"
        b.note(f"{key}.bind.propagation", status, f"{prop}: mountPropagation {mount['mountPropagation']}")
        if mount["mountPropagation"] == "Bidirectional":
            b.security()["privileged"] = True
            b.note(f"{key}.bind.propagation", "approximated", "Bidirectional propagation needs privileged: true")
    if bind.get("selinux"):
        b.note(f"{key}.bind.selinux", "not mapped", "SELinux relabelling (:z, :Z) is the node's setting, not the pod's")


def _measured(b: _Build, *keys: str) -> int:
    return next((b.ctx.measured_bytes[k] for k in keys if k in b.ctx.measured_bytes), 0)


def _size_text(nbytes: int) -> str:
    return f"{nbytes / 1024**3:.2f} GiB" if nbytes >= 1024**3 else f"{nbytes / 1024**2:.1f} MiB"


@handles("volumes", "tmpfs")
def _volumes(b: _Build, _value: Any) -> None:
    compose = b.ctx.compose
    top = compose.document.get("volumes") or {}
    for i, raw in enumerate(b.svc.get("volumes") or []):
        key = f"volumes[{i}]"
        v = _volume_entry(raw)
        target = str(v.get("target", ""))
        ro = bool(v.get("read_only"))
        kind = v.get("type")
        source = str(v.get("source") or "")
        if kind == "tmpfs":
            size = (v.get("tmpfs") or {}).get("size")
            _memory_dir(b, key, target, size)
            continue
        if kind == "volume" and not source:
            name = b.volume_name(f"anon-{target.strip('/').replace('/', '-') or 'root'}")
            b.pod_volumes.append({"name": name, "emptyDir": {}})
            b.mounts.append({"name": name, "mountPath": target})
            b.volumes.append(VolumePlan(name, target, "emptyDir", "", "anonymous"))
            b.note(key, "approximated", f"anonymous volume: an emptyDir at {target}; its data lives as long as the pod")
            continue
        if kind == "volume":
            spec = top.get(source) or {}
            docker = str(spec.get("name") or (source if spec.get("external") else f"{compose.project}_{source}"))
            pvc, size, size_from = _claim(b, dns_label(source), [source, docker])
            name = b.volume_name(source)
            b.pod_volumes.append({"name": name, "persistentVolumeClaim": {"claimName": pvc}})
            b.mounts.append({"name": name, "mountPath": target, **({"readOnly": True} if ro else {})})
            _mount_options(b, key, v, b.mounts[-1])
            b.volumes.append(VolumePlan(name, target, "pvc-copied", source, "volume", docker, pvc, size, size_from, ro))
            why = {
                "sizes": "the size given",
                "measured": f"the measured {_size_text(_measured(b, source, docker))} + {b.ctx.headroom:.0%}",
                "default": "a default: the migration measures the volume and sizes the claim before the copy",
            }[size_from]
            b.note(key, "mapped", f"PVC {pvc} ({STORAGE_CLASS}, {size}: {why}) filled from Docker volume {docker}")
            if spec.get("driver_opts") or spec.get("driver") not in (None, "local"):
                b.note(
                    f"volumes.{source}", "approximated",
                    f"the volume's driver/driver_opts (NFS, CIFS...) are not kept: its data is copied into {pvc}",
                    ("volumes", source),
                )  # fmt: skip
            continue
        if kind != "bind":
            b.note(key, "not mapped", f"a volume of type {kind} has no Kubernetes counterpart")
            continue
        host = source.rstrip("/") or "/"
        if host.startswith("."):
            host = str((compose.base_dir / host).resolve())
        if host in DOCKER_SOCKETS or target in DOCKER_SOCKETS:
            b.note(
                key,
                "not mapped",
                "the Docker socket: K3s runs containerd, there is no Docker Engine on the node to talk to",
            )
            continue
        name = b.volume_name(Path(host).name or "host-root")
        node_path = host in HOST_PATHS_OF_THE_NODE or host.startswith(("/sys/", "/proc/", "/dev/"))
        if ro or node_path:
            b.pod_volumes.append({"name": name, "hostPath": {"path": host}})
            b.mounts.append({"name": name, "mountPath": target, **({"readOnly": True} if ro else {})})
            _mount_options(b, key, v, b.mounts[-1])
            b.volumes.append(VolumePlan(name, target, "hostPath", host, "bind", read_only=ro))
            if node_path:
                b.note(key, "mapped", f"hostPath {host}: the K3s node's own {host}")
            elif host.startswith("/var/lib/docker"):
                b.note(key, "approximated", f"hostPath {host}: K3s keeps containers under /var/lib/rancher, not here")
            else:
                b.note(
                    key,
                    "approximated",
                    f"hostPath {host} (read-only): the K3s node must have the same folder with the same files "
                    "(a shared NFS mount of the media, say); nothing is copied",
                )
            continue
        pvc, size, size_from = _claim(b, dns_label(Path(host).name or "host"), [host, source])
        b.pod_volumes.append({"name": name, "persistentVolumeClaim": {"claimName": pvc}})
        b.mounts.append({"name": name, "mountPath": target})
        _mount_options(b, key, v, b.mounts[-1])
        b.volumes.append(VolumePlan(name, target, "pvc-copied", host, "bind", "", pvc, size, size_from))
        b.note(
            key,
            "approximated",
            f"bind mount {host} (writable) becomes PVC {pvc} ({STORAGE_CLASS}, {size}, size {size_from}) that the "
            "data copy fills; the folder on the Docker host is no longer shared with anything else",
        )
    tmpfs = b.svc.get("tmpfs")
    if tmpfs is not None:
        for i, entry in enumerate(tmpfs if isinstance(tmpfs, list) else [tmpfs]):
            path, _, opts = str(entry).partition(":")
            size = next((o.split("=", 1)[1] for o in opts.split(",") if o.startswith("size=")), None)
            _memory_dir(b, f"tmpfs[{i}]" if isinstance(tmpfs, list) else "tmpfs", path, size)


def _memory_dir(b: _Build, key: str, target: str, size: Any) -> None:
    name = b.volume_name(f"tmpfs-{target.strip('/').replace('/', '-') or 'root'}")
    spec: dict[str, Any] = {"medium": "Memory"}
    if size:
        spec["sizeLimit"] = quantity(size_bytes(size))
    b.pod_volumes.append({"name": name, "emptyDir": spec})
    b.mounts.append({"name": name, "mountPath": target})
    b.volumes.append(VolumePlan(name, target, "emptyDir", "", "tmpfs"))
    b.note(key, "mapped", f"a memory emptyDir at {target}" + (f" (sizeLimit {spec['sizeLimit']})" if size else ""))


@handles("shm_size")
def _shm(b: _Build, value: Any) -> None:
    limit = quantity(size_bytes(value))
    b.pod_volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": limit}})
    b.mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    b.note("shm_size", "mapped", f"a memory emptyDir at /dev/shm, sizeLimit {limit}")


def _probe_test(test: Any) -> list[str] | None:
    if isinstance(test, str):
        return ["/bin/sh", "-c", test]
    parts = [str(t) for t in test]
    if not parts or parts[0] == "NONE":
        return None
    if parts[0] == "CMD":
        return parts[1:]
    if parts[0] == "CMD-SHELL":
        return ["/bin/sh", "-c", " ".join(parts[1:])]
    return parts


@handles("healthcheck")
def _health(b: _Build, value: Any) -> None:
    hc = dict(value or {})
    if hc.get("disable") or "test" not in hc or _probe_test(hc["test"]) is None:
        b.note("healthcheck", "mapped", "disabled: no probes (the pod is ready once it runs)")
        return
    command = _probe_test(hc["test"])
    interval = whole_seconds(hc.get("interval", "30s"))
    timeout = whole_seconds(hc.get("timeout", "30s"))
    retries = int(hc.get("retries", 3))
    start = seconds(hc.get("start_period", 0))
    probe = {
        "exec": {"command": command},
        "periodSeconds": interval,
        "timeoutSeconds": timeout,
        "failureThreshold": retries,
    }
    b.container["readinessProbe"] = dict(probe)
    b.container["livenessProbe"] = dict(probe)
    form = "CMD-SHELL (run by /bin/sh -c)" if command and command[:2] == ["/bin/sh", "-c"] else "CMD"
    b.note("healthcheck.test", "mapped", f"exec readiness and liveness probes ({form})")
    for k, what in (("interval", f"periodSeconds {interval}"), ("timeout", f"timeoutSeconds {timeout}"),
                    ("retries", f"failureThreshold {retries}")):  # fmt: skip
        if k in hc:
            b.note(f"healthcheck.{k}", "mapped", what)
    if start or "start_interval" in hc:
        period = whole_seconds(hc.get("start_interval", min(interval, 5)))
        threshold = max(1, -(-int(start) // period)) + retries
        b.container["startupProbe"] = {**probe, "periodSeconds": period, "failureThreshold": threshold}
        b.note(
            "healthcheck.start_period",
            "mapped",
            f"a startupProbe every {period}s, {threshold} tries: {start:g}s of grace before liveness counts",
        )
        if "start_interval" in hc:
            b.note("healthcheck.start_interval", "mapped", f"the startupProbe's periodSeconds {period}")
    b.note(
        "healthcheck",
        "mapped",
        f"liveness restarts the container after {retries} failures (Docker only marks it unhealthy)",
    )


@handles("restart")
def _restart(b: _Build, value: Any) -> None:
    policy = str(value)
    if policy in ("always", "unless-stopped"):
        b.note("restart", "mapped", f"restartPolicy Always ({policy})")
    else:
        b.note(
            "restart",
            "approximated",
            f"restart: {policy}: a Deployment's pods always restart (restartPolicy Always); a one-off task is a Job",
        )


def _resources(b: _Build, section: str, spec: Mapping[str, Any], key: str) -> None:
    res = b.container.setdefault("resources", {})
    for k, v in spec.items():
        if k == "cpus":
            res.setdefault(section, {})["cpu"] = cpu(v)
            b.note(f"{key}.{k}", "mapped", f"resources.{section}.cpu {cpu(v)}")
        elif k == "memory":
            res.setdefault(section, {})["memory"] = quantity(size_bytes(v))
            b.note(f"{key}.{k}", "mapped", f"resources.{section}.memory {quantity(size_bytes(v))}")
        elif k == "devices":
            b.note(
                f"{key}.{k}", "not mapped",
                "device reservations (GPUs) need the vendor's device plugin on K3s (nvidia.com/gpu resources)",
            )  # fmt: skip
        else:
            b.note(f"{key}.{k}", "not mapped", f"{k} has no per-container Kubernetes limit")


@handles("deploy")
def _deploy(b: _Build, value: Any) -> None:
    for k, v in (value or {}).items():
        key = f"deploy.{k}"
        if k == "replicas":
            b.replicas = int(v)
            b.note(key, "mapped", f"replicas {v}")
        elif k == "resources":
            for section, kube in (("limits", "limits"), ("reservations", "requests")):
                if section in (v or {}):
                    _resources(b, kube, v[section] or {}, f"{key}.{section}")
        elif k == "restart_policy":
            cond = (v or {}).get("condition", "any")
            b.note(key, "mapped" if cond == "any" else "approximated", f"condition {cond}: restartPolicy Always")
        elif k == "labels":
            for lk, lv in _pairs(v):
                b.annotations[lk] = lv or ""
            b.note(key, "mapped", "annotations of the workload")
        elif k == "mode" and v == "replicated":
            b.note(key, "mapped", "a Deployment")
        else:
            b.note(key, "not mapped", f"deploy.{k} is a Swarm setting with no counterpart on single-node K3s")


@handles("mem_limit", "mem_reservation", "cpus")
def _legacy_resources(b: _Build, _value: Any) -> None:
    res = b.container.setdefault("resources", {})
    if "mem_limit" in b.svc:
        res.setdefault("limits", {})["memory"] = quantity(size_bytes(b.svc["mem_limit"]))
        b.note("mem_limit", "mapped", f"resources.limits.memory {res['limits']['memory']}")
    if "mem_reservation" in b.svc:
        res.setdefault("requests", {})["memory"] = quantity(size_bytes(b.svc["mem_reservation"]))
        b.note("mem_reservation", "mapped", f"resources.requests.memory {res['requests']['memory']}")
    if "cpus" in b.svc:
        res.setdefault("limits", {})["cpu"] = cpu(b.svc["cpus"])
        b.note("cpus", "mapped", f"resources.limits.cpu {res['limits']['cpu']}")


@handles("scale")
def _scale(b: _Build, value: Any) -> None:
    b.replicas = int(value)
    b.note("scale", "mapped", f"replicas {value}")


@handles("depends_on", "links")
def _depends(b: _Build, _value: Any) -> None:
    deps = b.svc.get("depends_on") or {}
    entries = deps if isinstance(deps, dict) else {d: {"condition": "service_started"} for d in deps}
    services = b.ctx.compose.services
    inits = []
    for dep, spec in entries.items():
        cond = (spec or {}).get("condition", "service_started")
        target = b.ctx.names.get(dep, dns_label(dep))
        key = f"depends_on.{dep}"
        if cond == "service_completed_successfully":
            b.note(
                key, "not mapped",
                f"waiting for {dep} to finish: make {dep} a Job, or an init container of this pod",
            )  # fmt: skip
            continue
        ports = [p for p in service_ports(services.get(dep) or {}) if p.protocol == "tcp"]
        if ports:
            check = f"nc -z -w 2 {target} {ports[0].container}"
            how = f"until {target}:{ports[0].container} accepts connections through its Service"
        else:
            check = f"nslookup {target}.{b.ctx.namespace}.svc.cluster.local"
            how = f"until the name {target} resolves (headless Service: only ready pods are in it)"
        healthy = "healthcheck" in (services.get(dep) or {})
        inits.append(
            {
                "name": dns_label(f"wait-for-{target}"),
                "image": b.ctx.wait_image,
                "command": ["sh", "-c", f"until {check}; do echo waiting for {target}; sleep 2; done"],
            }
        )
        if cond == "service_healthy":
            status: Status = "mapped" if healthy else "approximated"
            extra = "" if healthy else f"; {dep} has no healthcheck, so ready means running"
            b.note(key, status, f"init container waits {how}: a Service sends only to ready pods{extra}")
        else:
            b.note(
                key,
                "approximated",
                f"init container waits {how}: stricter than service_started (it waits for ready)",
            )
        if (spec or {}).get("restart"):
            b.note(f"{key}.restart", "not mapped", "restarting with the dependency is not kept")
    if inits:
        b.pod["initContainers"] = inits
    for i, link in enumerate(b.svc.get("links") or []):
        name, _, alias = str(link).partition(":")
        b.note(
            f"links[{i}]",
            "mapped" if not alias else "approximated",
            f"{name} resolves by its Service {b.ctx.names.get(name, dns_label(name))}"
            + (f"; the alias {alias} does not" if alias else ""),
        )


@handles("extra_hosts")
def _extra_hosts(b: _Build, value: Any) -> None:
    by_ip: dict[str, list[str]] = {}
    pairs = _pairs(value, sep="=") if isinstance(value, dict) else []
    if isinstance(value, list):
        for item in value:
            text = str(item)
            host, _, ip = text.partition("=") if "=" in text else text.partition(":")
            pairs.append((host, ip))
    for host, given in pairs:
        ip = (given or "").strip("[]")
        if ip == "host-gateway":
            b.note(f"extra_hosts.{host}", "not mapped", "host-gateway is Docker's: use the node's address")
            continue
        by_ip.setdefault(ip, []).append(host)
    if by_ip:
        b.pod["hostAliases"] = [{"ip": ip, "hostnames": names} for ip, names in by_ip.items()]
        b.note("extra_hosts", "mapped", f"hostAliases {', '.join(f'{h}={ip}' for ip, hs in by_ip.items() for h in hs)}")


@handles("network_mode")
def _network_mode(b: _Build, value: Any) -> None:
    mode = str(value)
    if mode == "host":
        b.pod["hostNetwork"] = True
        b.pod["dnsPolicy"] = "ClusterFirstWithHostNet"
        b.note(
            "network_mode",
            "approximated",
            "hostNetwork with dnsPolicy ClusterFirstWithHostNet: the pod listens on the K3s node's addresses, "
            "its ports must be free there",
        )
    elif mode in ("bridge", "default"):
        b.note("network_mode", "mapped", "the pod network")
    else:
        b.note(
            "network_mode",
            "not mapped",
            f"network_mode {mode}: sharing another container's network is a sidecar in the same pod, made by hand",
        )


@handles("networks")
def _networks(b: _Build, value: Any) -> None:
    nets = value if isinstance(value, dict) else dict.fromkeys(value or [])
    top = b.ctx.compose.document.get("networks") or {}
    labels = dict(_pairs(b.svc.get("labels")))
    for net, spec in nets.items():
        driver = str((top.get(net) or {}).get("driver") or "bridge")
        lost = "" if driver in ("bridge", "overlay") else f"; its {driver} driver (an address on the LAN) is not kept"
        if net == "default" and not lost:
            b.note(f"networks.{net}", "mapped", "the project's network: the pod network, as for every service")
        elif labels.get("traefik.docker.network") in {net, (top.get(net) or {}).get("name") or net} and not lost:
            b.note(f"networks.{net}", "mapped", "the reverse proxy's network: traefik on K3s reaches every Service")
        else:
            b.note(
                f"networks.{net}",
                "approximated",
                "one flat pod network: every pod reaches every Service (the network's isolation is not kept; "
                f"a NetworkPolicy would restore it){lost}",
            )
        for k, v in (spec or {}).items():
            if k == "aliases":
                for alias in v:
                    name = dns_label(str(alias))
                    if name != b.k8s and all(n != name for n, _ in b.extra_service_names):
                        b.extra_service_names.append((name, f"networks.{net}.aliases"))
            else:
                b.note(f"networks.{net}.{k}", "not mapped", f"{k}: pod addresses are the cluster's to give")


@handles("container_name")
def _container_name(b: _Build, value: Any) -> None:
    name = dns_label(str(value))
    if name != b.k8s:
        b.extra_service_names.append((name, "container_name"))
    else:
        b.note("container_name", "mapped", f"the pod's name starts with {b.k8s}; Service {b.k8s} is its stable name")


@handles("hostname")
def _hostname(b: _Build, value: Any) -> None:
    host = str(value)
    first = dns_label(host.split(".")[0])
    b.pod["hostname"] = first
    if "." in host or first != host:
        b.note(
            "hostname",
            "approximated",
            f"pod hostname {first}: the pod's full name is not {host} (set the application's external URL instead)",
        )
    else:
        b.note("hostname", "mapped", f"pod hostname {first}")


@handles("devices")
def _devices(b: _Build, value: Any) -> None:
    for i, entry in enumerate(value or []):
        if isinstance(entry, dict):
            source, target = str(entry.get("source")), str(entry.get("target") or entry.get("source"))
        else:
            parts = str(entry).split(":")
            source, target = parts[0], parts[1] if len(parts) > 1 else parts[0]
        name = b.volume_name(f"dev-{source.strip('/').replace('/', '-')}")
        b.pod_volumes.append({"name": name, "hostPath": {"path": source}})
        b.mounts.append({"name": name, "mountPath": target})
        b.security()["privileged"] = True
        b.note(
            f"devices[{i}]",
            "approximated",
            f"hostPath {source} mounted at {target}, with privileged: true (the device cgroup allows it only then); "
            "FLAGGED: a device plugin (Intel GPU, USB) is the narrower way; the pod must run on the node with it",
        )


@handles("pid")
def _pid(b: _Build, value: Any) -> None:
    if str(value) == "host":
        b.pod["hostPID"] = True
        b.note("pid", "mapped", "hostPID: true (sees the K3s node's processes)")
    else:
        b.note(
            "pid",
            "not mapped",
            f"pid {value}: sharing another container's processes is one pod's shareProcessNamespace",
        )


@handles("ipc")
def _ipc(b: _Build, value: Any) -> None:
    if str(value) == "host":
        b.pod["hostIPC"] = True
        b.note("ipc", "mapped", "hostIPC: true")
    else:
        b.note("ipc", "not mapped", f"ipc {value}: containers of one pod share IPC; other modes have no counterpart")


@handles("cap_add", "cap_drop")
def _caps(b: _Build, _value: Any) -> None:
    for key, field_ in (("cap_add", "add"), ("cap_drop", "drop")):
        caps = [str(c).upper().removeprefix("CAP_") for c in b.svc.get(key) or []]
        if caps:
            b.security().setdefault("capabilities", {})[field_] = caps
            b.note(key, "mapped", f"securityContext.capabilities.{field_} {caps}")


@handles("privileged")
def _privileged(b: _Build, value: Any) -> None:
    if value:
        b.security()["privileged"] = True
        b.note("privileged", "approximated", "privileged: true; FLAGGED: full access to the K3s node")
    else:
        b.note("privileged", "mapped", "not privileged")


@handles("read_only")
def _read_only(b: _Build, value: Any) -> None:
    b.security()["readOnlyRootFilesystem"] = bool(value)
    b.note("read_only", "mapped", f"readOnlyRootFilesystem {bool(value)}")


@handles("security_opt")
def _security_opt(b: _Build, value: Any) -> None:
    for i, opt in enumerate(value or []):
        text = str(opt).replace("=", ":")
        key = f"security_opt[{i}]"
        if text in ("no-new-privileges", "no-new-privileges:true"):
            b.security()["allowPrivilegeEscalation"] = False
            b.note(key, "mapped", "allowPrivilegeEscalation: false")
        elif text == "seccomp:unconfined":
            b.security()["seccompProfile"] = {"type": "Unconfined"}
            b.note(key, "mapped", "seccompProfile Unconfined")
        elif text == "apparmor:unconfined":
            b.security()["appArmorProfile"] = {"type": "Unconfined"}
            b.note(key, "mapped", "appArmorProfile Unconfined")
        else:
            b.note(key, "not mapped", f"{opt} has no securityContext counterpart here")


@handles("sysctls")
def _sysctls(b: _Build, value: Any) -> None:
    for k, v in _pairs(value):
        key = f"sysctls.{k}"
        if b.svc.get("network_mode") == "host" and k.startswith("net."):
            b.note(key, "not mapped", "a net.* sysctl cannot be set on a pod that uses the node's network")
            continue
        b.pod_security().setdefault("sysctls", []).append({"name": k, "value": v or ""})
        if k in SAFE_SYSCTLS:
            b.note(key, "mapped", "pod securityContext.sysctls (a safe sysctl)")
        else:
            b.note(
                key,
                "approximated",
                "pod securityContext.sysctls: an unsafe sysctl, refused unless the kubelet allows it "
                "(K3s: kubelet-arg allowed-unsafe-sysctls)",
            )


@handles("stop_grace_period")
def _grace(b: _Build, value: Any) -> None:
    b.pod["terminationGracePeriodSeconds"] = whole_seconds(value, 0)
    b.note("stop_grace_period", "mapped", f"terminationGracePeriodSeconds {whole_seconds(value, 0)}")


@handles("tty", "stdin_open")
def _tty(b: _Build, _value: Any) -> None:
    for key, field_ in (("tty", "tty"), ("stdin_open", "stdin")):
        if key in b.svc:
            b.container[field_] = bool(b.svc[key])
            b.note(key, "mapped", f"{field_} {bool(b.svc[key])}")


@handles("dns", "dns_search", "dns_opt")
def _dns(b: _Build, _value: Any) -> None:
    cfg = b.pod.setdefault("dnsConfig", {})
    for key, field_ in (("dns", "nameservers"), ("dns_search", "searches")):
        if key in b.svc:
            v = b.svc[key]
            cfg[field_] = [str(x) for x in (v if isinstance(v, list) else [v])]
            b.note(key, "approximated", f"dnsConfig.{field_}: added to the cluster's DNS, not instead of it")
    if "dns_opt" in b.svc:
        opts = []
        for o in b.svc["dns_opt"]:
            name, _, val = str(o).partition(":")
            opts.append({"name": name, **({"value": val} if val else {})})
        cfg["options"] = opts
        b.note("dns_opt", "mapped", "dnsConfig.options")


@handles("platform")
def _platform(b: _Build, value: Any) -> None:
    arch = str(value).split("/")[1] if "/" in str(value) else ""
    if arch:
        b.pod["nodeSelector"] = {"kubernetes.io/arch": arch}
        b.note("platform", "mapped", f"nodeSelector kubernetes.io/arch={arch}")
    else:
        b.note("platform", "not mapped", f"platform {value} names no architecture")


NOT_MAPPED_WHY = {
    "logging": "the kubelet keeps the container's output (kubectl logs); log drivers have no counterpart",
    "init": "Kubernetes runs no init for the container: use an image with tini, or shareProcessNamespace",
    "ulimits": "Kubernetes sets no per-pod ulimits; they are the container runtime's defaults",
    "stop_signal": "Kubernetes sends SIGTERM (Kubernetes 1.31 has no per-container stop signal)",
    "profiles": "profiles select services in Compose; the service is converted regardless",
    "domainname": "the pod's domain is the cluster's (namespace.svc.cluster.local)",
    "volumes_from": "sharing another container's volumes is a shared volume of one pod, made by hand",
    "external_links": "links to containers outside the project have no counterpart",
    "userns_mode": "user namespaces are the pod's hostUsers setting (off by default), not mapped",
    "cgroup_parent": "the kubelet places pods in cgroups",
    "oom_score_adj": "the kubelet sets OOM scores from the pod's QoS class (its requests and limits)",
    "pids_limit": "the kubelet's podPidsLimit applies to every pod",
    "runtime": "a RuntimeClass, made on the node by hand",
    "mac_address": "pod addresses are the cluster's to give",
    "memswap_limit": "Kubernetes has no swap limit per container",
    "cpu_shares": "the kubelet derives CPU shares from requests: give deploy.resources.reservations.cpus",
    "cpu_quota": "give deploy.resources.limits.cpus",
    "cpuset": "CPU pinning is the kubelet's CPU manager, not a pod setting",
}


def _prepare(b: _Build) -> None:
    """Handlers that others depend on run first: traefik labels before ports (which ports the Ingress serves)."""
    if "labels" in b.svc:
        _labels(b, b.svc["labels"])


def convert_service(compose: ComposeFile, service: str, **options: Any) -> Conversion:
    """Convert one service of a compose file (see :func:`convert_compose` for the options).

    Raises:
        NotFound: the file has no such service.
        ConvertError: a file the service reads (env_file) is missing, or a manifest does not validate.
    """
    conversions = convert_compose(compose, [service], **options)
    return conversions[0]


def convert_compose(
    compose: ComposeFile,
    services: Sequence[str] = (),
    *,
    namespace: str = "default",
    measured_bytes: Mapping[str, int] | None = None,
    sizes: Mapping[str, str] | None = None,
    secret_values: Mapping[str, str] | None = None,
    variables: Mapping[str, str] | None = None,
    headroom: float = 0.25,
    kubernetes_version: str = DEFAULT_KUBERNETES,
    with_namespace: bool = True,
    host_address: str = "",
    wait_image: str = WAIT_IMAGE,
) -> list[Conversion]:
    """Convert the services of a compose file to Kubernetes manifests, each with its report.

    Args:
        compose: the parsed file (:func:`~homelab_lib.convert.source.load_compose`).
        services: the services to convert, in this order; empty: every service, in the file's order.
        namespace: the namespace of every object.
        measured_bytes: the data's size per volume (its Compose name or Docker name) or bind (host path);
            a claim gets that plus ``headroom``, rounded up to whole GiB.
        sizes: a claim size given outright (``"20Gi"``) per volume or host path; wins over measured_bytes.
        secret_values: the value of a Compose secret, by name (instead of its file or variable).
        variables: the environment a ``KEY`` without a value (or a secret's ``environment:``) reads.
        headroom: the fraction added to measured sizes.
        kubernetes_version: the schemas every manifest is validated against (``1.31.0``).
        with_namespace: put the Namespace object first in each conversion's objects.
        host_address: the Docker host's own address; ports published on it alone are not flagged
            (runbook 02 binds every published port to its VM's address).
        wait_image: the image of the init containers that wait for a dependency (``sh`` and ``nc``,
            ``nslookup``): busybox, or a copy of it in a registry the cluster reaches.

    Returns:
        One :class:`Conversion` per service.

    Raises:
        NotFound: a service the file does not have.
        ConvertError: two services whose Kubernetes names clash, a missing env_file, an invalid manifest.
    """
    if services:
        for s in services:
            if s not in compose.services:
                raise NotFound(s, what="service", known=list(compose.services), where=compose.shown)
    chosen = list(services) or list(compose.services)
    names = {s: dns_label(s, limit=47) for s in compose.services}
    clashes: dict[str, list[str]] = {}
    for s, n in names.items():
        clashes.setdefault(n, []).append(s)
    problems = [
        Problem(
            compose.shown,
            compose.line(("services", group[1])),
            f"services.{group[1]}",
            f"services {', '.join(group)} all become {n} in Kubernetes: rename one",
        )
        for n, group in clashes.items()
        if len(group) > 1
    ]
    if problems:
        raise ConvertError(problems)
    ns = dns_label(namespace)
    ctx = _Context(
        compose,
        ns,
        measured_bytes or {},
        sizes or {},
        secret_values or {},
        variables or {},
        headroom,
        names,
        host_address,
        wait_image,
    )
    out = []
    for s in chosen:
        conv = _convert(ctx, s, with_namespace=with_namespace)
        if ns != namespace:
            conv.report.append(
                ReportLine(s, "(namespace)", "mapped", f"namespace {namespace!r} is not a valid name: it is {ns!r}")
            )
        try:
            validate_objects(conv.objects, kubernetes_version)
        except ValueError as e:
            raise ConvertError(
                [Problem(compose.shown, compose.line(("services", s)), f"services.{s}", f"invalid manifest: {e}")]
            ) from None
        out.append(conv)
    return out


@contextlib.contextmanager
def _unreadable(compose: ComposeFile, service: str, key: str) -> Iterator[None]:
    """A value Compose's schema lets through but no reading of it makes sense: a ConvertError at its line."""
    try:
        yield
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        where = compose.line(("services", service, key))
        message = f"cannot read services.{service}.{key}: {e}"
        raise ConvertError([Problem(compose.shown, where, f"services.{service}.{key}", message)]) from e


def _convert(ctx: _Context, name: str, *, with_namespace: bool) -> Conversion:
    svc = ctx.compose.services[name] or {}
    k8s = ctx.names[name]
    b = _Build(name, k8s, ctx, svc)
    if k8s != name:
        b.note("(name)", "mapped", f"{name!r} is not a valid Kubernetes name: it becomes {k8s!r} "
               "(other services must reach it by that name)")  # fmt: skip
    with _unreadable(ctx.compose, name, "ports"):
        service_ports(svc)
    with _unreadable(ctx.compose, name, "labels"):
        _prepare(b)
    called: set[Handler] = {_labels}
    for key in svc:
        handler = HANDLERS.get(key)
        if handler is not None:
            if handler not in called:  # a handler of several keys (command and entrypoint) runs once
                called.add(handler)
                with _unreadable(ctx.compose, name, key):
                    handler(b, svc[key])
        elif key.startswith("x-"):
            b.note(key, "not mapped", "an extension field (x-): Compose itself ignores it")
        elif key in NOT_MAPPED_WHY:
            b.note(key, "not mapped", NOT_MAPPED_WHY[key])
        else:
            b.note(key, "not mapped", f"{key} has no Kubernetes counterpart this converter knows")
    if "restart" not in svc:
        b.note("restart", "approximated", "no restart: (Compose: never); a Deployment's pods always restart")
    return _assemble(b, with_namespace=with_namespace)


def _assemble(b: _Build, *, with_namespace: bool) -> Conversion:
    _services(b)
    objects: list[KubeObject] = []
    if with_namespace:
        objects.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": b.ctx.namespace}})
    for kind, name, data, secret in (
        ("Secret", f"{b.k8s}-env", b.secret_data, True),
        ("ConfigMap", f"{b.k8s}-env", b.config_data, False),
        ("Secret", f"{b.k8s}-secrets", b.file_secrets, True),
        ("ConfigMap", f"{b.k8s}-configs", b.file_configs, False),
    ):
        if not data:
            continue
        obj: KubeObject = {"apiVersion": "v1", "kind": kind, "metadata": b.meta(name)}
        if secret:
            obj["type"] = "Opaque"
            obj["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in sorted(data.items())}
        else:
            obj["data"] = dict(sorted(data.items()))
        objects.append(obj)
    container = {"name": b.k8s, **b.container}
    container.setdefault("image", f"{b.k8s}:unknown")
    ports = [
        {"name": f"{p.protocol}-{p.container}", "containerPort": p.container, "protocol": p.protocol.upper()}
        for p in service_ports(b.svc)
    ]
    if ports:
        container["ports"] = ports
    if b.env:
        container["env"] = b.env
    if b.mounts:
        container["volumeMounts"] = b.mounts
    if not container.get("securityContext"):
        container.pop("securityContext", None)
    if not container.get("resources"):
        container.pop("resources", None)
    pod: dict[str, Any] = {**b.pod, "containers": [container]}
    if b.pod_volumes:
        pod["volumes"] = b.pod_volumes
    if not pod.get("dnsConfig"):
        pod.pop("dnsConfig", None)
    labels = {"app.kubernetes.io/name": b.k8s, "app.kubernetes.io/instance": b.k8s}
    template_meta: dict[str, Any] = {"labels": labels}
    if b.annotations:
        template_meta["annotations"] = dict(b.annotations)
    has_claims = any(v.kind == "pvc-copied" for v in b.volumes)
    spec: dict[str, Any] = {
        "replicas": b.replicas,
        "selector": {"matchLabels": {"app.kubernetes.io/instance": b.k8s}},
        "template": {"metadata": template_meta, "spec": pod},
    }
    if has_claims:
        spec["strategy"] = {"type": "Recreate"}
        b.note(
            "(workload)",
            "mapped",
            "a Deployment, strategy Recreate: the old pod lets go of its ReadWriteOnce claims before the next starts",
        )
        if b.replicas > 1:
            b.note(
                "deploy.replicas",
                "approximated",
                f"{b.replicas} replicas share ReadWriteOnce local-path claims: all run on the one K3s node",
            )
    else:
        b.note("(workload)", "mapped", "a Deployment")
    meta = b.meta(b.k8s)
    meta["annotations"].update(b.annotations)
    workload = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": spec}
    objects += [*b.objects, workload]
    return Conversion(b.name, b.k8s, b.ctx.namespace, ordered(objects), b.report, b.volumes)


# ------------------------------------------------------------------ the inventory's catalog services


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
