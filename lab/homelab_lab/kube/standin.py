"""One K3s stand-in server: the pieces put together, started and stopped.

Files under ``<data-dir>``, as K3s keeps them:

    server/token                the cluster token (K10<hash>::server:<secret>), mode 600
    server/cred/passwd          static bearer tokens: token,user,uid,groups (the admin's), mode 600
    server/cred/sa.key          the key that signs ServiceAccount tokens
    server/tls/...              the CAs and certificates (see certs.py)
    server/db/state.db          every object (SQLite)
    storage/pvc-<uid>_<ns>_<name>   local-path volumes
    agent/pods/<uid>/volumes/...    emptyDir, configMap and secret volumes of running pods
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
from pathlib import Path
from typing import Any

import yaml

from homelab_lab.errors import KubeStandinError
from homelab_lab.kube import certs, system
from homelab_lab.kube.admission import Admission
from homelab_lab.kube.api import Api
from homelab_lab.kube.auth import Authenticator
from homelab_lab.kube.cluster import Cluster
from homelab_lab.kube.config import Config
from homelab_lab.kube.controllers import Loop
from homelab_lab.kube.controllers.core import Endpoints, GarbageCollector, LocalPath, Namespaces
from homelab_lab.kube.controllers.jobs import CronJobs, HelmCharts, Jobs
from homelab_lab.kube.controllers.kubelet import Kubelet, Scheduler
from homelab_lab.kube.controllers.workloads import Deployments, ReplicaSets, StatefulSets
from homelab_lab.kube.discovery import Version
from homelab_lab.kube.ingress import Ingress
from homelab_lab.kube.resources import Registry
from homelab_lab.kube.runtime import NoRuntime
from homelab_lab.kube.server import HttpServer, tls_context
from homelab_lab.kube.store import Store


def _write_private(path: Path, text: str, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def _token_secret(token: str) -> str:
    """The secret part of a K3s token (``K10<hash>::server:<secret>`` or a bare secret)."""
    return token.rsplit(":", 1)[-1] if token.startswith("K10") and "::" in token else token


def ensure_token(cfg: Config) -> str:
    """The stored cluster token, written on first start; a different --token is refused as K3s refuses it."""
    path = cfg.server_dir / "token"
    ca = cfg.server_dir / "tls" / "server-ca.crt"
    if path.exists():
        stored = path.read_text().strip()
        if cfg.token and _token_secret(cfg.token) != _token_secret(stored):
            raise KubeStandinError(
                "bootstrap data already found and encrypted with different token",
                where=str(cfg.data_dir),
                hint=f"start with the token in {path} (the one the cluster was created with), "
                "or remove the data dir to start a new cluster",
            )
        return stored
    secret = _token_secret(cfg.token) if cfg.token else secrets.token_hex(16)
    digest = hashlib.sha256(ca.read_bytes()).hexdigest() if ca.exists() else "0" * 64
    full = f"K10{digest}::server:{secret}"
    _write_private(path, full + "\n")
    _write_private(cfg.server_dir / "node-token", full + "\n")
    return full


def _b64(path: Path) -> str:
    import base64

    return base64.b64encode(path.read_bytes()).decode()


def kubeconfig(cfg: Config) -> dict[str, Any]:
    """The kubeconfig K3s writes: server https://127.0.0.1:<port> (or the bind address), all named default."""
    tls = cfg.server_dir / "tls"
    host = cfg.bind_address if cfg.bind_address not in ("", "0.0.0.0", "::") else "127.0.0.1"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "default",
                "cluster": {
                    "certificate-authority-data": _b64(tls / "server-ca.crt"),
                    "server": f"https://{host}:{cfg.https_port}",
                },
            }
        ],
        "contexts": [{"name": "default", "context": {"cluster": "default", "user": "default"}}],
        "current-context": "default",
        "preferences": {},
        "users": [
            {
                "name": "default",
                "user": {
                    "client-certificate-data": _b64(tls / "client-admin.crt"),
                    "client-key-data": _b64(tls / "client-admin.key"),
                },
            }
        ],
    }


def write_kubeconfig(cfg: Config) -> None:
    mode = int(cfg.write_kubeconfig_mode, 8) if cfg.write_kubeconfig_mode else 0o600
    text = yaml.safe_dump(kubeconfig(cfg), sort_keys=False)
    _write_private(cfg.write_kubeconfig, text, mode)


class Standin:
    """A running stand-in: the API on <address>:<port>, the controllers, the runtime and the ingress.

    Args:
        cfg: the settings.
        runtime: the pod runtime (None: pods stay Pending, as on a node with no container runtime).
    """

    def __init__(self, cfg: Config, runtime: Any = None) -> None:
        self.cfg = cfg
        self.runtime = runtime
        self._stop = threading.Event()
        cfg.server_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tls = cfg.server_dir / "tls"
        certs.ensure(
            tls,
            [cfg.address, cfg.host_ip, *cfg.tls_san, cfg.node_name]
            + ([cfg.bind_address] if cfg.bind_address not in ("", "0.0.0.0", "::") else []),
        )
        self.token = ensure_token(cfg)
        cred = cfg.server_dir / "cred"
        passwd = cred / "passwd"
        if not passwd.exists():
            _write_private(passwd, f"{secrets.token_hex(16)},admin,admin,system:masters\n")
        key_file = cred / "sa.key"
        if not key_file.exists():
            _write_private(key_file, secrets.token_hex(32))
        self.store = Store(cfg.server_dir / "db" / "state.db")
        self.registry = Registry()
        self.cluster = Cluster(self.store, self.registry, graceful_pods=runtime is not None)
        crd_kind = self.registry.by_gvk("apiextensions.k8s.io/v1", "CustomResourceDefinition")
        assert crd_kind is not None
        for crd in self.store.list(crd_kind.key):
            self.registry.set_crd(crd["metadata"]["name"], crd)
        self.authn = Authenticator(passwd, key_file.read_text().strip().encode())
        self.version = Version(cfg.version)
        self.api = Api(
            self.cluster,
            self.authn,
            self.version,
            f"{cfg.address}:{cfg.https_port}",
            logs=runtime,
            ready=lambda: self._ready.is_set(),
        )
        self._ready = threading.Event()
        context = tls_context(
            tls / "serving-kube-apiserver.crt", tls / "serving-kube-apiserver.key", tls / "client-ca.crt"
        )
        self.http = HttpServer(cfg.bind_address or "0.0.0.0", cfg.https_port, self.api, context)
        Admission(self.cluster, cfg)
        c = self.cluster
        ca_pem = (tls / "server-ca.crt").read_text()
        self.ingress = Ingress(
            c,
            cfg.bind_address if cfg.bind_address not in ("", "0.0.0.0") else "0.0.0.0",
            cfg.ingress_ports,
            context_plain(tls),
            cfg.host_ip,
            not cfg.disabled("traefik"),
        )
        controllers: list[Any] = [
            Namespaces(c, ca_pem),
            Deployments(c),
            ReplicaSets(c),
            StatefulSets(c),
            Jobs(c),
            CronJobs(),
            HelmCharts(c),
            Scheduler(c, cfg.node_name),
            LocalPath(c, cfg.storage_dir, cfg.node_name),
            Endpoints(c),
            GarbageCollector(c),
            self.ingress,
        ]
        self.loop = Loop(c, controllers)
        self.kubelet = Loop(
            c,
            [Kubelet(c, runtime or NoRuntime(), cfg.node_name, cfg.pods_dir, cfg.host_ip)],
            name="kubelet",
            period=1.0,
        )
        self.extras: list[Any] = [self.ingress, self.loop, self.kubelet]

    def start(self) -> None:
        """Serve: system objects, then the API, then controllers, runtime and ingress."""
        if self.runtime is not None and hasattr(self.runtime, "build_standins"):
            roles = {ref: name for name, ref in system.IMAGES.items()}
            self.runtime.build_standins(roles, self.cfg.broken_charts)
        system.ensure(self.cluster, self.cfg)
        self.http.start()
        for extra in self.extras:
            extra.start()
        write_kubeconfig(self.cfg)
        self._ready.set()

    def stop(self) -> None:
        self._ready.clear()
        for extra in reversed(self.extras):
            extra.stop()
        self.http.stop()
        if self.runtime is not None:
            self.runtime.close()
        self.store.close()


def context_plain(tls: Path) -> Any:
    """TLS for the ingress's https port: the serving certificate (the lab CA signs it)."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(tls / "serving-kube-apiserver.crt"), str(tls / "serving-kube-apiserver.key"))
    return ctx
