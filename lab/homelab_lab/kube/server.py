"""The HTTPS transport: a threading HTTP/1.1 server with TLS, bearer-token and client-certificate auth.

Each connection's TLS handshake runs in its own thread (a slow client blocks no one); responses
carry Content-Length, and watches stream as chunked transfer encoding until their timeout or
until the client goes away.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from homelab_lab.errors import KubeStandinError
from homelab_lab.kube.api import UNAUTHORIZED, Api, Request, parse_query, status_response

IDLE_TIMEOUT_S = 300


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "k3s"
    sys_version = ""
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _handle(self) -> None:
        api = self.server.api
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        user = None
        authz = headers.get("authorization", "")
        if authz.lower().startswith("bearer "):
            user = api.authn.from_token(authz[7:].strip(), api.cluster)
            if user is None:
                self._send(status_response(UNAUTHORIZED))
                return
        elif isinstance(self.connection, ssl.SSLSocket):
            cert = self.connection.getpeercert()
            if cert:
                user = api.authn.from_cert(cert.get("subject", ()))  # type: ignore[arg-type]
        req = Request(self.command, url.path, parse_query(url.query), headers, body, user)
        self._send(api.handle(req))

    def _send(self, resp: Any) -> None:
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Cache-Control", resp.headers.pop("Cache-Control", "no-cache, private"))
        for k, v in resp.headers.items():
            self.send_header(k, v)
        if isinstance(resp.body, bytes):
            self.send_header("Content-Length", str(len(resp.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(resp.body)
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        self.connection.settimeout(None)
        try:
            for chunk in resp.body:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            self.close_connection = True
        finally:
            close = getattr(resp.body, "close", None)
            if close is not None:
                close()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], api: Api, context: ssl.SSLContext | None) -> None:
        self.api = api
        self.context = context
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # Headers and body go out in separate writes: without NODELAY, Nagle and the client's
        # delayed ACK hold every response back ~40 ms.
        with contextlib.suppress(OSError):
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.context is not None:
            try:
                request.settimeout(30)
                request = self.context.wrap_socket(request, server_side=True)
                request.settimeout(IDLE_TIMEOUT_S)
            except (ssl.SSLError, OSError):
                with contextlib.suppress(OSError):
                    request.close()
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # a client that went away mid-request is no server error


def tls_context(cert: Path, key: Path, client_ca: Path) -> ssl.SSLContext:
    """The server's TLS: its certificate, and optional client certificates signed by client_ca."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    ctx.load_verify_locations(str(client_ca))
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class HttpServer:
    """An HTTP(S) server for an :class:`Api` on (host, port), served from a daemon thread."""

    def __init__(self, host: str, port: int, api: Api, context: ssl.SSLContext | None) -> None:
        try:
            self._server = _Server((host, port), api, context)
        except OSError as e:
            raise KubeStandinError(
                f"cannot listen on {host}:{port}: {e.strerror or e}",
                where=f"{host}:{port}",
                hint="another k3s (or program) holds the port; stop it or pick another "
                "--https-listen-port / --bind-address",
            ) from None
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"api {host}:{port}", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
