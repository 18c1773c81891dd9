"""Render the monitoring stack's files: Prometheus, its rules, Alertmanager, Grafana provisioning.

Each file is a :class:`ConfigFile`: the component it belongs to, the VM that runs that component,
its absolute path there (inside the folder the catalog's service bind-mounts: the ``binds:`` entry
whose container path is :data:`CONFIG_MOUNTS` ``[component]``), and its text. Secrets never enter
the text: a file that must hold one (Alertmanager's webhook URL: Debian's Alertmanager 0.25 has no
``url_file``) shows a placeholder, and the real bytes are made by :meth:`ConfigFile.content` at
the moment they are checked or written; the bearer token for K3s goes to its own file
(``secrets/k3s_token``), which Prometheus reads through ``credentials_file``. The hash the plan
compares of a file that holds a secret is keyed with the homelab's hash key
(:mod:`homelab_lib.core.hashkey`), so the plan gives no one a way to test guesses of the secret.

The Prometheus config uses only what 2.42 (Debian's) and 3.x (the catalog's image) both accept;
paths in it are relative to the config file (``rules/*.yml``, ``secrets/...``), which Prometheus
resolves against the config file's folder.

:class:`Settings` holds what a run may tune without editing the shipped rules: Alertmanager's
grouping waits and each alert's ``for:`` (tests use seconds).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any

import yaml

from homelab_lib.core.errors import MonitoringError, UnresolvedSecret
from homelab_lib.core.hashkey import keyed
from homelab_lib.core.secrets import SecretRef
from homelab_lib.inventory.model import Inventory, Vm
from homelab_lib.monitoring.targets import K3S_AUTH, ScrapeTarget, Targets, compute, listen_port

RULES_DIR = Path(__file__).with_name("rules")
#: component -> the container path its config folder is bind-mounted at (the catalog's ``binds:``).
CONFIG_MOUNTS = {
    "prometheus": "/etc/prometheus",
    "alertmanager": "/etc/alertmanager",
    "grafana": "/etc/grafana/provisioning",
}
#: component -> its config file's name (the one ``promtool``/``amtool`` check and its reload reads).
MAIN_FILE = {"prometheus": "prometheus.yml", "alertmanager": "alertmanager.yml"}
#: The mode of a rendered file; one that holds a secret's value is then given to the group of the
#: containers' user (nobody) with mode 0640 by the runbook (see MonitoringAdapter).
MODE = 0o644
WEBHOOK_PLACEHOLDER = "<secret alerts.webhook>"
GRAFANA_DASHBOARDS = "dashboards/homelab"

try:  # libyaml's dumper is ~10x faster; PyYAML falls back to its pure-Python one
    from yaml import CSafeDumper as _Dumper
except ImportError:  # pragma: no cover - libyaml is in Debian's and conda-forge's PyYAML
    from yaml import SafeDumper as _Dumper  # type: ignore[assignment]


def dump(doc: Any) -> str:
    """YAML text with sorted keys, stable across runs."""
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=True, default_flow_style=False, width=1000)


@dataclass(frozen=True)
class Settings:
    """What a run may tune without editing the shipped rules.

    Attributes:
        group_wait: Alertmanager's ``group_wait`` (how long it gathers a new group's alerts).
        group_interval: its ``group_interval``.
        repeat_interval: its ``repeat_interval``.
        alert_for: alert name -> ``for:`` to render instead of the shipped one (``{"TargetDown": "5s"}``).
    """

    group_wait: str = "30s"
    group_interval: str = "5m"
    repeat_interval: str = "4h"
    alert_for: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class ConfigFile:
    """One rendered file of the monitoring stack.

    Attributes:
        component: ``prometheus``, ``alertmanager`` or ``grafana``.
        vm: the VM that runs the component.
        folder: the component's config folder on that VM (the catalog's bind source).
        path: the file's path inside the folder (``rules/homelab.yml``).
        text: what is shown and archived (placeholders where secrets go).
        secrets: placeholder -> the reference its value comes from (or, for a whole-file secret, ``""``).
        mode: its file mode on the VM.
        sha256: the hash of the bytes written (secrets included), computed at render time (:meth:`digest`).
        hash_key: for a file that holds a secret, the homelab's hash key its hash is keyed with.
    """

    component: str
    vm: str
    folder: str
    path: str
    text: str
    secrets: tuple[tuple[str, SecretRef], ...] = ()
    mode: int = MODE
    sha256: str = ""
    hash_key: bytes = field(default=b"", repr=False, compare=False)

    def digest(self, data: bytes) -> str:
        """The hash of this file's bytes as the plan compares them: sha256, or, for a file that holds a secret,
        HMAC-SHA256 under the homelab's hash key (:mod:`homelab_lib.core.hashkey`): a plain hash of a token
        could be tested against guesses by whoever reads the plan."""
        return keyed(self.hash_key, data) if self.secrets else hashlib.sha256(data).hexdigest()

    @property
    def remote_path(self) -> str:
        return str(PurePosixPath(self.folder) / self.path)

    @property
    def name(self) -> str:
        """``component/path``: how the plan names the file."""
        return f"{self.component}/{self.path}"

    def content(self) -> bytes:
        """The bytes to write: the text with each secret's value read now.

        Raises:
            MonitoringError: a reference does not resolve (the message names the reference, never a value).
        """
        text = self.text
        for placeholder, ref in self.secrets:
            try:
                value = ref.reveal()
            except UnresolvedSecret as e:
                raise MonitoringError(
                    f"{self.name} needs the secret {ref}, which does not resolve: {e.message}",
                    where=f"{self.vm}:{self.remote_path}",
                    hint=e.hint,
                ) from None
            text = value + "\n" if placeholder == "" else text.replace(placeholder, value)
        return text.encode()

    def __repr__(self) -> str:
        return f"ConfigFile({self.name!r} on {self.vm}, sha256={self.sha256[:12]})"


@dataclass(frozen=True)
class Rendered:
    """Everything the monitoring runbook deploys, and what it expects Prometheus to scrape.

    Attributes:
        homelab: the inventory's name.
        files: every file, component by component (rules before the config that loads them).
        targets: what Prometheus should scrape.
        components: component -> the VM that runs it (those the inventory places).
        notes: what is not done and why (a K3s service without a NodePort...).
    """

    homelab: str
    files: tuple[ConfigFile, ...]
    targets: Targets
    components: Mapping[str, str]
    notes: tuple[str, ...] = ()

    def of(self, component: str) -> tuple[ConfigFile, ...]:
        return tuple(f for f in self.files if f.component == component)

    def file(self, name: str) -> ConfigFile:
        """A file by ``component/path``."""
        for f in self.files:
            if f.name == name:
                return f
        raise KeyError(name)

    def write(self, folder: Path, *, with_secrets: bool = False) -> list[Path]:
        """Write the files under ``folder/<component>/`` (placeholders unless with_secrets); returns them."""
        out = []
        for f in self.files:
            path = folder / f.component / f.path
            path.parent.mkdir(parents=True, exist_ok=True)
            if with_secrets:
                path.write_bytes(f.content())
                path.chmod(0o600)
            else:
                path.write_text(f.text)
            out.append(path)
        return out


# ---------------------------------------------------------------- where things run


def placed_on(inv: Inventory, service: str) -> Vm | None:
    """The first Docker VM whose stacks list service (the monitoring VM for Prometheus), or None."""
    if service == "prometheus" and inv.monitoring:
        return inv.vm(inv.monitoring.prometheus_host)
    for vm in inv.docker_hosts:
        if any(service in services for services in vm.stacks.values()):
            return vm
    return None


def config_folder(inv: Inventory, component: str) -> str:
    """The host folder the catalog's service binds at :data:`CONFIG_MOUNTS` ``[component]``.

    Raises:
        MonitoringError: the service has no such bind.
    """
    mount = CONFIG_MOUNTS[component]
    for bind in inv.services[component].binds:
        if bind.container.rstrip("/") == mount:
            return bind.host.rstrip("/") or "/"
    raise MonitoringError(
        f"service {component} binds no host folder at {mount}: the monitoring runbook has nowhere to write",
        where=f"services.{component}.binds",
        hint=f"add {{host: /srv/homelab/monitoring/{component}, container: {mount}}} (the catalog has it)",
    )


def service_url(inv: Inventory, service: str, override: str | None = None) -> str:
    """How this machine (and the other services) reach a service's HTTP API: ``http://<VM>:<port>``."""
    if override:
        return override.rstrip("/")
    vm = placed_on(inv, service)
    if vm is None:
        raise MonitoringError(f"{service} is placed on no Docker VM", where="vms[].stacks", hint=f"add {service}")
    svc = inv.services[service]
    port = listen_port(vm, svc.model_copy(update={"metrics_port": None}), service, [], "")
    return f"http://{vm.address}:{port}"


# ---------------------------------------------------------------- Prometheus


def _job(targets: Sequence[ScrapeTarget], inv: Inventory) -> dict[str, Any]:
    first = targets[0]
    job: dict[str, Any] = {"job_name": first.job}
    if first.metrics_path != "/metrics":
        job["metrics_path"] = first.metrics_path
    if first.scheme != "http":
        job["scheme"] = first.scheme
    if first.params:
        job["params"] = {k: [v] for k, v in first.params}
    if first.auth == K3S_AUTH and inv.monitoring and inv.monitoring.k3s:
        job["authorization"] = {"type": "Bearer", "credentials_file": "secrets/k3s_token"}
        job["tls_config"] = (
            {"ca_file": "secrets/k3s_ca.pem"} if inv.monitoring.k3s.ca_file else {"insecure_skip_verify": True}
        )
    job["static_configs"] = [{"targets": [t.address], "labels": t.labels} for t in targets]
    return job


def prometheus_config(inv: Inventory, targets: Targets, alertmanager: str | None) -> str:
    """prometheus.yml: global settings, rule files, Alertmanager, one job per (job, path, scheme, params, auth)."""
    mon = inv.monitoring
    jobs: dict[tuple[str, str, str, tuple[tuple[str, str], ...], str], list[ScrapeTarget]] = {}
    for t in targets:
        jobs.setdefault((t.job, t.metrics_path, t.scheme, t.params, t.auth), []).append(t)
    names: dict[str, int] = {}
    scrape = []
    for key in sorted(jobs):
        job = _job(jobs[key], inv)
        n = names.get(key[0], 0)
        names[key[0]] = n + 1
        if n:  # the same job name with another path or scheme: Prometheus needs unique job names
            job["job_name"] = f"{key[0]}-{n + 1}"
        scrape.append(job)
    doc: dict[str, Any] = {
        "global": {
            "scrape_interval": mon.scrape_interval if mon else "30s",
            "evaluation_interval": mon.evaluation_interval if mon else "30s",
            "external_labels": {"homelab": inv.name},
        },
        "rule_files": ["rules/*.yml"],
        "scrape_configs": scrape,
    }
    if alertmanager:
        doc["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    header = (
        f"# Prometheus config of homelab '{inv.name}': rendered by homelab_lib.monitoring (runbook 07) from the\n"
        "# inventory; edits here are overwritten. Targets carry platform, node, host and service labels.\n"
    )
    return header + dump(doc)


def rule_files(settings: Settings) -> dict[str, str]:
    """The shipped rule files (``rules/*.yml``), with ``for:`` replaced where settings say so."""
    out = {}
    for path in sorted(RULES_DIR.glob("*.yml")):
        text = path.read_text()
        if settings.alert_for:
            doc = yaml.safe_load(text)
            for group in doc["groups"]:
                for rule in group["rules"]:
                    if rule.get("alert") in settings.alert_for:
                        rule["for"] = settings.alert_for[rule["alert"]]
            text = "# rendered from the shipped rules, with for: from the run's settings\n" + dump(doc)
        out[f"rules/{path.name}"] = text
    return out


# ---------------------------------------------------------------- Alertmanager


def alertmanager_config(inv: Inventory, settings: Settings) -> str:
    """alertmanager.yml: every alert to the webhook of ``alerts.webhook`` (its URL as a placeholder)."""
    route: dict[str, Any] = {
        "receiver": "homelab",
        "group_by": ["alertname", "service", "host"],
        "group_wait": settings.group_wait,
        "group_interval": settings.group_interval,
        "repeat_interval": settings.repeat_interval,
    }
    receiver: dict[str, Any] = {"name": "homelab"}
    if inv.alerts is not None:
        if inv.alerts.kind == "slack":
            receiver["slack_configs"] = [{"api_url": WEBHOOK_PLACEHOLDER, "send_resolved": True}]
        else:  # Alertmanager's own webhook JSON; ntfy takes it as the message body, the json kind as is
            receiver["webhook_configs"] = [{"url": WEBHOOK_PLACEHOLDER, "send_resolved": True}]
    doc = {"route": route, "receivers": [receiver]}
    header = (
        f"# Alertmanager config of homelab '{inv.name}': rendered by homelab_lib.monitoring (runbook 07).\n"
        "# The webhook URL comes from alerts.webhook (a secret reference) when the file is written.\n"
    )
    return header + dump(doc)


# ---------------------------------------------------------------- Grafana


def grafana_files(inv: Inventory, prometheus_url: str) -> dict[str, str]:
    """Grafana provisioning: the Prometheus datasource, a dashboard provider and the dashboards (JSON)."""
    from homelab_lib.monitoring import dashboards

    datasource = {
        "apiVersion": 1,
        "datasources": [
            {
                "name": "Prometheus",
                "uid": dashboards.DATASOURCE_UID,
                "type": "prometheus",
                "access": "proxy",
                "url": prometheus_url,
                "isDefault": True,
                "editable": False,
            }
        ],
    }
    provider = {
        "apiVersion": 1,
        "providers": [
            {
                "name": "homelab",
                "folder": "Homelab",
                "type": "file",
                "disableDeletion": True,
                "allowUiUpdates": False,
                "updateIntervalSeconds": 30,
                "options": {"path": f"{CONFIG_MOUNTS['grafana']}/{GRAFANA_DASHBOARDS}"},
            }
        ],
    }
    out = {"datasources/homelab.yml": dump(datasource), "dashboards/homelab.yml": dump(provider)}
    for name, doc in dashboards.documents(inv).items():
        out[f"{GRAFANA_DASHBOARDS}/{name}.json"] = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    return out


# ---------------------------------------------------------------- all of it


def _file(
    component: str,
    vm: str,
    folder: str,
    path: str,
    text: str,
    secrets: tuple[tuple[str, SecretRef], ...] = (),
    hash_key: bytes = b"",
) -> ConfigFile:
    draft = ConfigFile(component, vm, folder, path, text, secrets, hash_key=hash_key)
    return replace(draft, sha256=draft.digest(draft.content()))


def render(inv: Inventory, settings: Settings | None = None) -> Rendered:
    """Render every file of the monitoring stack from the inventory.

    Args:
        inv: the inventory (needs ``monitoring:``).
        settings: Alertmanager waits and ``for:`` overrides (default :class:`Settings`).

    Returns:
        The files, the targets, where each component runs, and notes.

    Raises:
        MonitoringError: no ``monitoring:`` section, a component without a config bind, or a secret
            that does not resolve.
        ConfigError: a service's metrics cannot be scraped (no such port).
    """
    settings = settings or Settings()
    if inv.monitoring is None:
        raise MonitoringError(
            "the inventory has no monitoring: section", where="parameters", hint="add monitoring: prometheus_host: VM"
        )
    targets = compute(inv)
    files: list[ConfigFile] = []
    components: dict[str, str] = {}
    notes = [f"{svc}: not scraped ({why})" for svc, why in targets.unscraped]

    prom_vm = inv.vm(inv.monitoring.prometheus_host)
    components["prometheus"] = prom_vm.name
    am_vm = placed_on(inv, "alertmanager")
    am_address = None
    if am_vm is not None:
        am_address = service_url(inv, "alertmanager", None).removeprefix("http://")
    else:
        notes.append("alertmanager is placed on no Docker VM: alerts are evaluated but not sent")
    folder = config_folder(inv, "prometheus")
    for path, text in rule_files(settings).items():
        files.append(_file("prometheus", prom_vm.name, folder, path, text))
    if inv.monitoring.k3s is not None:
        if inv.monitoring.k3s.ca_file is None and inv.profile == "real":  # the inventory's checks say so first
            raise MonitoringError(
                "the K3s scrape would send its bearer token without verifying TLS (no monitoring.k3s.ca_file)",
                where="monitoring.k3s.ca_file",
                hint="give ca_file: the cluster's CA (/var/lib/rancher/k3s/server/tls/server-ca.crt on the K3s VM)",
            )
        token = (("", inv.monitoring.k3s.token),)
        files.append(_file("prometheus", prom_vm.name, folder, "secrets/k3s_token", "", token, inv.hash_key()))
        if inv.monitoring.k3s.ca_file:
            ca = inv.monitoring.k3s.ca_file
            try:
                files.append(_file("prometheus", prom_vm.name, folder, "secrets/k3s_ca.pem", ca.read_text()))
            except OSError as e:
                raise MonitoringError(
                    f"the K3s CA file {ca} cannot be read ({e.strerror})", where="monitoring.k3s.ca_file"
                ) from e
    files.append(_file("prometheus", prom_vm.name, folder, MAIN_FILE["prometheus"],
                       prometheus_config(inv, targets, am_address)))  # fmt: skip

    if am_vm is not None:
        components["alertmanager"] = am_vm.name
        secrets = ((WEBHOOK_PLACEHOLDER, inv.alerts.webhook),) if inv.alerts else ()
        if not inv.alerts:
            notes.append("no alerts: section: Alertmanager has no receiver to send to")
        key = inv.hash_key() if secrets else b""
        files.append(_file("alertmanager", am_vm.name, config_folder(inv, "alertmanager"), MAIN_FILE["alertmanager"],
                           alertmanager_config(inv, settings), secrets, key))  # fmt: skip
    graf_vm = placed_on(inv, "grafana")
    if graf_vm is not None:
        components["grafana"] = graf_vm.name
        gfolder = config_folder(inv, "grafana")
        prom_url = service_url(inv, "prometheus", None)
        for path, text in grafana_files(inv, prom_url).items():
            files.append(_file("grafana", graf_vm.name, gfolder, path, text))
    return Rendered(inv.name, tuple(files), targets, MappingProxyType(components), tuple(notes))
