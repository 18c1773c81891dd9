"""traefik's stand-in: routes HTTP(S) on <address>:80/443 by Host and path to a Service's ready
endpoints (pod IPs on the engine's bridge); NodePort Services listen on <address>:<nodePort>."""

from __future__ import annotations

import contextlib
import http.client
import itertools
import select
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from homelab_lab.errors import KubeStandinError
from homelab_lab.kube.cluster import Cluster
from homelab_lab.kube.controllers.base import MANAGER, kind
from homelab_lab.kube.schema import Json

HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


class Router:
    """Finds the backend (ip, port) of a request from the stored Ingresses, Services and Endpoints."""

    def __init__(self, cluster: Cluster) -> None:
        self.c = cluster
        self.ing = kind(cluster, "networking.k8s.io/v1", "Ingress")
        self.svc = kind(cluster, "v1", "Service")
        self.ep = kind(cluster, "v1", "Endpoints")
        self._rr = itertools.count()

    def backend(self, host: str, path: str) -> tuple[str, int] | None:
        host = host.split(":")[0].lower()
        best: tuple[int, Json, str] | None = None
        for ing in self.c.list(self.ing)[0]:
            spec = ing.get("spec") or {}
            cls = spec.get("ingressClassName")
            if cls not in (None, "traefik"):
                continue
            for rule in spec.get("rules") or []:
                rh = str(rule.get("host") or "").lower()
                if rh and not (rh == host or (rh.startswith("*.") and host.endswith(rh[1:]))):
                    continue
                for p in (rule.get("http") or {}).get("paths") or []:
                    want = str(p.get("path") or "/")
                    exact = p.get("pathType") == "Exact"
                    if (exact and path.split("?")[0] != want) or (
                        not exact and not path.startswith(want.rstrip("/") or "/")
                    ):
                        continue
                    score = len(want) + (1000 if rh else 0) + (1 if exact else 0)
                    if best is None or score > best[0]:
                        best = (score, p.get("backend") or {}, ing["metadata"]["namespace"])
            if best is None and spec.get("defaultBackend"):
                best = (0, spec["defaultBackend"], ing["metadata"]["namespace"])
        if best is None:
            return None
        return self._resolve(best[1], best[2])

    def _resolve(self, backend: Json, ns: str) -> tuple[str, int] | None:
        svc_ref = backend.get("service") or {}
        svc = self.c.find(self.svc, ns, str(svc_ref.get("name")))
        if svc is None:
            return None
        port_ref = svc_ref.get("port") or {}
        sport = next(
            (
                p
                for p in svc["spec"].get("ports") or []
                if p.get("port") == port_ref.get("number")
                or (port_ref.get("name") and p.get("name") == port_ref.get("name"))
            ),
            None,
        )
        if sport is None:
            return None
        return self.endpoint(ns, svc, sport)

    def endpoint(self, ns: str, svc: Json, sport: Json) -> tuple[str, int] | None:
        ep = self.c.find(self.ep, ns, svc["metadata"]["name"])
        choices = []
        for sub in (ep or {}).get("subsets") or []:
            ports = sub.get("ports") or []
            port = next((p["port"] for p in ports if p.get("name", "") == sport.get("name", "")), None)
            if port is None and len(ports) == 1:
                port = ports[0]["port"]
            if port is not None:
                choices += [(a["ip"], int(port)) for a in sub.get("addresses") or []]
        if not choices:
            return None
        return choices[next(self._rr) % len(choices)]


class _Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = ""
    sys_version = ""
    server: Any

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _relay(self) -> None:
        router: Router = self.server.router
        target = router.backend(self.headers.get("Host", ""), self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        if target is None:
            self._plain(404, b"404 page not found\n")
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        headers["X-Forwarded-For"] = self.client_address[0]
        headers["X-Forwarded-Proto"] = "https" if isinstance(self.connection, ssl.SSLSocket) else "http"
        conn = http.client.HTTPConnection(target[0], target[1], timeout=30)
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except OSError:
            self._plain(502, b"Bad Gateway")
            return
        finally:
            conn.close()
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in HOP and k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _plain(self, code: int, text: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _relay


class _HTTP(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], router: Router, context: ssl.SSLContext | None) -> None:
        self.router = router
        self.context = context
        super().__init__(address, _Proxy)

    def finish_request(self, request: Any, client_address: Any) -> None:
        with contextlib.suppress(OSError):
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.context is not None:
            try:
                request = self.context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        return


def _pump(a: socket.socket, b: socket.socket) -> None:
    try:
        while True:
            ready, _, _ = select.select([a, b], [], [], 60)
            if not ready:
                return
            for s in ready:
                data = s.recv(65536)
                if not data:
                    return
                (b if s is a else a).sendall(data)
    except OSError:
        return
    finally:
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.close()


class _NodePort:
    def __init__(self, host: str, port: int, router: Router, ns: str, name: str, sport: Json) -> None:
        self.key = (ns, name, sport.get("port"))
        self.router, self.sport = router, sport
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(64)
        threading.Thread(target=self._accept, daemon=True, name=f"nodeport {port}").start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            ns, name, _ = self.key
            svc = self.router.c.find(self.router.svc, ns, name)
            target = self.router.endpoint(ns, svc, self.sport) if svc else None
            if target is None:
                client.close()
                continue
            try:
                upstream = socket.create_connection(target, timeout=5)
            except OSError:
                client.close()
                continue
            threading.Thread(target=_pump, args=(client, upstream), daemon=True).start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


class Ingress:
    """The traefik stand-in and the NodePort listeners; a controller too (Ingress status, listeners).

    Args:
        cluster: the objects.
        host: the address to listen on.
        ports: (http, https); 0 disables one.
        context: TLS for the https port.
        host_ip: the address Ingress status reports.
        enabled: False when traefik is disabled (NodePorts are still served).
    """

    def __init__(
        self,
        cluster: Cluster,
        host: str,
        ports: tuple[int, int],
        context: ssl.SSLContext | None,
        host_ip: str,
        enabled: bool = True,
    ) -> None:
        self.c = cluster
        self.host = host
        self.host_ip = host_ip
        self.router = Router(cluster)
        self.servers: list[_HTTP] = []
        self.nodeports: dict[int, _NodePort] = {}
        self.enabled = enabled
        if enabled:
            for port, ctx in ((ports[0], None), (ports[1], context)):
                if port:
                    try:
                        self.servers.append(_HTTP((host, port), self.router, ctx))
                    except OSError as e:
                        raise KubeStandinError(
                            f"traefik cannot listen on {host}:{port}: {e.strerror}",
                            where=f"{host}:{port}",
                            hint="free the port or start with --disable traefik",
                        ) from None

    def start(self) -> None:
        for s in self.servers:
            threading.Thread(target=s.serve_forever, daemon=True, name=f"traefik {s.server_address}").start()

    def stop(self) -> None:
        for s in self.servers:
            s.shutdown()
            s.server_close()
        for n in self.nodeports.values():
            n.close()

    def reconcile(self) -> None:
        if self.enabled:
            for ing in self.c.list(self.router.ing)[0]:
                status = {"loadBalancer": {"ingress": [{"ip": self.host_ip}]}}
                self.c.set_status(self.router.ing, ing, status, "traefik")
        wanted: dict[int, tuple[str, str, Json]] = {}
        for svc in self.c.list(self.router.svc)[0]:
            if (svc.get("spec") or {}).get("type") not in ("NodePort", "LoadBalancer"):
                continue
            if svc["metadata"]["name"] == "traefik" and svc["metadata"]["namespace"] == "kube-system":
                continue
            for p in svc["spec"].get("ports") or []:
                if p.get("nodePort") and p.get("protocol", "TCP") == "TCP":
                    wanted[int(p["nodePort"])] = (svc["metadata"]["namespace"], svc["metadata"]["name"], p)
        for port in list(self.nodeports):
            if port not in wanted or self.nodeports[port].sport != wanted[port][2]:
                self.nodeports.pop(port).close()
        for port, (ns, name, p) in wanted.items():
            if port not in self.nodeports:
                with contextlib.suppress(OSError):
                    self.nodeports[port] = _NodePort(self.host, port, self.router, ns, name, p)
        _ = MANAGER
