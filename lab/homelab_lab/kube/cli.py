"""The ``k3s`` command of the stand-in: ``--version``, ``server [flags]``, ``kubectl ...``."""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from homelab_lab.errors import KubeStandinError
from homelab_lab.kube.config import DEFAULT_CONFIG, DEFAULT_KUBECONFIG, Config
from homelab_lab.kube.discovery import Version
from homelab_lib.core.errors import HomelabError

LISTS = (
    "tls-san",
    "disable",
    "node-label",
    "node-taint",
    "lab-broken-charts",
    "kube-apiserver-arg",
    "kubelet-arg",
    "kube-controller-manager-arg",
    "kube-scheduler-arg",
    "kube-proxy-arg",
    "node-external-ip",
)
SCALARS = (
    "data-dir",
    "bind-address",
    "advertise-address",
    "node-ip",
    "https-listen-port",
    "node-name",
    "cluster-cidr",
    "service-cidr",
    "token",
    "token-file",
    "write-kubeconfig",
    "write-kubeconfig-mode",
    "lab-node-cpu",
    "lab-node-memory",
    "lab-runtime",
    "lab-ingress-ports",
    "cluster-dns",
    "cluster-domain",
    "flannel-backend",
    "default-local-storage-path",
    "system-default-registry",
    "egress-selector-mode",
    "selinux",
    "secrets-encryption",
    "cluster-init",
    "disable-network-policy",
    "disable-helm-controller",
    "protect-kernel-defaults",
    "debug",
    "agent-token",
    "server",
    "prefer-bundled-bin",
    "write-kubeconfig-group",
)
FLAGS = (
    "selinux",
    "secrets-encryption",
    "cluster-init",
    "disable-network-policy",
    "disable-helm-controller",
    "protect-kernel-defaults",
    "debug",
    "prefer-bundled-bin",
)
SHORT = {"-c": "--config", "-d": "--data-dir", "-o": "--write-kubeconfig", "-t": "--token", "-v": "--v"}


def _log(level: str, text: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(f'time="{stamp}" level={level} msg="{text}"', file=sys.stderr, flush=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="k3s server", add_help=True, allow_abbrev=False)
    p.add_argument("--config", default=None)
    p.add_argument("--v", default=None)
    for name in LISTS:
        p.add_argument(f"--{name}", action="append", default=None)
    for name in SCALARS:
        if name in FLAGS:
            p.add_argument(f"--{name}", nargs="?", const="true", default=None)
        else:
            p.add_argument(f"--{name}", default=None)
    return p


def _split(values: Any) -> list[str]:
    if values is None:
        return []
    items = values if isinstance(values, list) else [values]
    return [part.strip() for v in items for part in str(v).split(",") if part.strip()]


def _config_file(path: Path, explicit: bool) -> dict[str, Any]:
    files = [path] + (sorted((path.parent / (path.name + ".d")).glob("*.yaml")) if path.exists() else [])
    merged: dict[str, Any] = {}
    if not path.exists():
        if explicit:
            raise KubeStandinError(f"config file {path} does not exist", where="--config")
        return merged
    for f in files:
        try:
            data = yaml.safe_load(f.read_text()) or {}
        except yaml.YAMLError as e:
            raise KubeStandinError(f"{f} is not valid YAML: {e}", where=str(f)) from None
        if not isinstance(data, dict):
            raise KubeStandinError(f"{f} must be a mapping of flag names to values", where=str(f))
        for key, value in data.items():
            key = str(key)
            append = key.endswith("+")
            key = key.rstrip("+")
            if key not in LISTS and key not in SCALARS:
                raise KubeStandinError(
                    f"unknown key {key!r} in {f}",
                    where=str(f),
                    hint="keys are k3s server flag names without the leading dashes",
                )
            if key in LISTS:
                merged[key] = (merged.get(key, []) if append else []) + _split(value)
            else:
                merged[key] = value
    return merged


def config_from(argv: Sequence[str]) -> Config:
    """Parse ``k3s server`` flags and the config file into a :class:`Config`."""
    argv = [SHORT.get(a, a) for a in argv]
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:
        raise KubeStandinError(
            "Incorrect Usage: " + " ".join(argv), where="k3s server", hint="see `k3s server --help`"
        ) from e
    path = Path(args.config or os.environ.get("K3S_CONFIG_FILE") or DEFAULT_CONFIG)
    values = _config_file(path, explicit=args.config is not None)
    for name in LISTS:
        cli = getattr(args, name.replace("-", "_"))
        if cli is not None:
            values[name] = values.get(name, []) + _split(cli)
    for name in SCALARS:
        cli = getattr(args, name.replace("-", "_"))
        if cli is not None:
            values[name] = cli
    env = os.environ
    token = str(values.get("token") or env.get("K3S_TOKEN") or "")
    if not token and (values.get("token-file") or env.get("K3S_TOKEN_FILE")):
        token = Path(str(values.get("token-file") or env.get("K3S_TOKEN_FILE"))).read_text().strip()
    broken = _split(values.get("lab-broken-charts")) or _split(env.get("HOMELAB_K3S_BROKEN_CHARTS"))
    ports = _split(values.get("lab-ingress-ports") or env.get("HOMELAB_K3S_INGRESS_PORTS") or "80,443")
    kw: dict[str, Any] = {
        "tls_san": tuple(_split(values.get("tls-san"))),
        "disable": tuple(_split(values.get("disable"))),
        "node_labels": tuple(_split(values.get("node-label"))),
        "node_taints": tuple(_split(values.get("node-taint"))),
        "broken_charts": tuple(broken),
        "token": token,
        "ingress_ports": (int(ports[0]), int(ports[1]) if len(ports) > 1 else 0),
        "runtime": str(values.get("lab-runtime") or env.get("HOMELAB_K3S_RUNTIME") or "docker"),
        "node_cpu": str(values.get("lab-node-cpu") or env.get("HOMELAB_K3S_NODE_CPU") or "2"),
        "node_memory": str(values.get("lab-node-memory") or env.get("HOMELAB_K3S_NODE_MEMORY") or "4Gi"),
        "write_kubeconfig": Path(
            str(values.get("write-kubeconfig") or env.get("K3S_KUBECONFIG_OUTPUT") or DEFAULT_KUBECONFIG)
        ),
        "write_kubeconfig_mode": str(values.get("write-kubeconfig-mode") or env.get("K3S_KUBECONFIG_MODE") or ""),
    }
    for key, attr in (
        ("data-dir", "data_dir"),
        ("bind-address", "bind_address"),
        ("advertise-address", "advertise_address"),
        ("node-ip", "node_ip"),
        ("node-name", "node_name"),
        ("cluster-cidr", "cluster_cidr"),
        ("service-cidr", "service_cidr"),
    ):
        if values.get(key) not in (None, ""):
            kw[attr] = Path(str(values[key])) if attr == "data_dir" else str(values[key])
    if values.get("node-name") in (None, "") and env.get("K3S_NODE_NAME"):
        kw["node_name"] = env["K3S_NODE_NAME"]
    if values.get("https-listen-port") not in (None, ""):
        kw["https_port"] = int(values["https-listen-port"])
    if kw["runtime"] not in ("docker", "none"):
        raise KubeStandinError(f"lab-runtime must be docker or none, not {kw['runtime']!r}", where="lab-runtime")
    return Config(**kw)


def instance_id(cfg: Config) -> str:
    """This server's id in the labels of the containers it runs."""
    return "k3s-" + hashlib.sha256(f"{cfg.data_dir.resolve()}|{cfg.node_name}".encode()).hexdigest()[:12]


def serve(cfg: Config, stop: threading.Event | None = None) -> None:
    """Run a server until SIGTERM/SIGINT (or ``stop`` is set)."""
    from homelab_lab.kube.runtime import DockerRuntime
    from homelab_lab.kube.standin import Standin

    version = Version(cfg.version)
    _log("info", f"Starting k3s {version.git_version} ({version.commit[:8]})")
    runtime = DockerRuntime(instance_id(cfg)) if cfg.runtime == "docker" else None
    server = Standin(cfg, runtime)
    stop = stop or threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    _log("info", f"Running kube-apiserver on https://{cfg.address}:{cfg.https_port}")
    _log("info", f"Wrote kubeconfig {cfg.write_kubeconfig}")
    _log("info", f"k3s is up and running (node {cfg.node_name}, data dir {cfg.data_dir})")
    stop.wait()
    _log("info", "Shutting down k3s")
    server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(
            "usage: k3s [--version] <server|kubectl> [flags]\n  server   run the K3s server (the lab's stand-in)\n"
            "  kubectl  run kubectl against this server's kubeconfig"
        )
        return 0
    if args[0] in ("--version", "-v", "version"):
        sys.stdout.write(Version(os.environ.get("HOMELAB_K3S_VERSION") or Config().version).cli())
        return 0
    if args[0] == "kubectl":
        env = dict(os.environ)
        env.setdefault("KUBECONFIG", str(DEFAULT_KUBECONFIG))
        os.execvpe("kubectl", ["kubectl", *args[1:]], env)
    if args[0] != "server":
        print(f"Incorrect Usage: command {args[0]!r} is not supported by this k3s", file=sys.stderr)
        return 1
    try:
        serve(config_from(args[1:]))
    except HomelabError as e:
        _log("fatal", str(e))
        return 1
    return 0
