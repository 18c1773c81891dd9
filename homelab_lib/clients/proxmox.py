"""The one door to the Proxmox VE API: proxmoxer's https backend, with errors translated.

:class:`ProxmoxClient` sends requests through proxmoxer and turns every failure
(HTTP errors, TLS, connection, login) into the project's exception tree, naming
the node, vmid and VM, PVE's own message and what to do. It answers with the
API's JSON ``data`` (plain dicts and lists); the rest of the adapter turns that
into frozen dataclasses.

Errors are translated by one table, :data:`PROXMOX_ERRORS` (outside exception
class -> our error), applied with :func:`homelab_lib.core.errors.mapped` around every
request; an HTTP error's status picks the class by a second table
(:data:`BY_STATUS`), and PVE's own words by a third (:data:`BY_MESSAGE`).

Credentials: the client is given a ``connect`` function that builds the
proxmoxer object; secrets are revealed inside it, at the moment the client is
built, and never kept here. With password login a ticket that the server no
longer accepts (expired, revoked) is renewed once by logging in again, and the
request is retried: PVE checks the ticket before it does anything, so a
rejected request changed nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

import requests
from proxmoxer import ProxmoxAPI
from proxmoxer.core import AuthenticationError, ResourceException

from homelab_lib.core.errors import (
    ErrorTable,
    NodeUnreachable,
    PermissionDenied,
    ProxmoxAuthError,
    ProxmoxError,
    QuorumLost,
    mapped,
)

Method = Literal["GET", "POST", "PUT", "DELETE"]


@dataclass(frozen=True)
class At:
    """What a request is about, for error messages: node, vmid and VM name (each optional)."""

    node: str = ""
    vmid: int | None = None
    vm: str = ""


NOWHERE = At()


class ProxmoxClient:
    """Requests to one Proxmox VE cluster, with failures translated to :class:`ProxmoxError`.

    Args:
        connect: builds a ``proxmoxer.ProxmoxAPI`` (https backend); called lazily at the first
            request and again to renew an expired ticket. It reveals the secret it needs.
        endpoint: the API's address, for messages (``https://host:8006``).
        user: the user or token id (``user@realm!token``), for messages.
        auth: ``token`` or ``ticket`` (password login).
        ca_file: the CA file the server is verified against, for messages ('' for the system's).
    """

    def __init__(
        self,
        connect: Callable[[], ProxmoxAPI],
        *,
        endpoint: str,
        user: str,
        auth: Literal["token", "ticket"],
        ca_file: str = "",
    ) -> None:
        self._connect = connect
        self.endpoint = endpoint
        self.user = user
        self.auth = auth
        self.ca_file = ca_file
        self._api: ProxmoxAPI | None = None
        self._generation = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ProxmoxClient({self.endpoint}, {self.user}, {self.auth})"

    # ------------------------------------------------------------------ requests

    def get(self, path: str, at: At = NOWHERE, **params: Any) -> Any:
        """GET path (relative to ``/api2/json``); returns the answer's data."""
        return self.request("GET", path, at, params)

    def post(self, path: str, at: At = NOWHERE, **data: Any) -> Any:
        """POST path with form data; returns the answer's data (often a task's UPID)."""
        return self.request("POST", path, at, data)

    def put(self, path: str, at: At = NOWHERE, **data: Any) -> Any:
        """PUT path with form data; returns the answer's data."""
        return self.request("PUT", path, at, data)

    def delete(self, path: str, at: At = NOWHERE, **params: Any) -> Any:
        """DELETE path; returns the answer's data (often a task's UPID)."""
        return self.request("DELETE", path, at, params)

    def request(self, method: Method, path: str, at: At, args: dict[str, Any]) -> Any:
        """Send one request; renew an expired ticket once; translate every failure.

        Raises:
            ProxmoxError: or a subclass, naming at's node/vmid/VM, PVE's message and what to do.
        """
        with mapped(PROXMOX_ERRORS, where=Request(method, path, at, self)):
            api, generation = self._current(at)
            try:
                return self._send(api, method, path, args)
            except ResourceException as e:
                if e.status_code != 401 or self.auth != "ticket":
                    raise
            api = self._renew(generation, at)  # PVE checked the ticket first: the refused request changed nothing
            return self._send(api, method, path, args)

    @staticmethod
    def _send(api: ProxmoxAPI, method: Method, path: str, args: dict[str, Any]) -> Any:
        return getattr(api(path.strip("/")), method.lower())(**args)

    def _current(self, at: At) -> tuple[ProxmoxAPI, int]:
        with self._lock:
            if self._api is None:
                self._api = self._build(at)
                self._generation += 1
            return self._api, self._generation

    def _renew(self, generation: int, at: At) -> ProxmoxAPI:
        """Log in again, unless another thread already did since generation."""
        with self._lock:
            if self._api is None or self._generation == generation:
                self._api = self._build(at)
                self._generation += 1
            return self._api

    def _build(self, at: At) -> ProxmoxAPI:
        with mapped(PROXMOX_ERRORS, where=Request("POST", "access/ticket", at, self)):  # login, TLS, connection
            return self._connect()

    def auth_hint(self) -> str:
        """What to check when the credentials are refused."""
        if self.auth == "token":
            return (
                "check proxmox.user and proxmox.token_id (the token is USER!TOKENID) and the secret that "
                "proxmox.token_secret points to; a token made with privilege separation also needs its own ACLs"
            )
        return "check proxmox.user and the password that proxmox.password points to"


@dataclass(frozen=True)
class Request:
    """A request, as the error table sees it: what was asked, about what, of which client."""

    method: str
    path: str
    at: At
    client: ProxmoxClient

    @property
    def what(self) -> str:
        return f"{self.method} /{self.path.strip('/')}"

    def error(
        self, cls: type[ProxmoxError], message: str, *, status: int = 0, pve_message: str = "", hint: str = ""
    ) -> ProxmoxError:
        at = self.at
        return cls(message, node=at.node, vmid=at.vmid, vm=at.vm, status=status, pve_message=pve_message, hint=hint)


def _pve_message(e: ResourceException) -> str:
    """PVE's message of an HTTP error, with per-parameter errors appended."""
    message = str(e.content or e.status_message or "").strip()
    errors = e.errors
    if isinstance(errors, dict) and errors:
        message += " (" + "; ".join(f"{k}: {str(v).strip()}" for k, v in sorted(errors.items())) + ")"
    return message


def _hint_for(message: str) -> str:
    low = message.lower()
    if "is locked" in low or "can't lock file" in low:
        return "another task holds the VM (backup, snapshot, clone); wait for it, or `qm unlock VMID` if stale"
    if "does not exist" in low:
        return "the object is gone or on another node; run the plan again"
    if "already exists" in low:
        return "the vmid is taken; run the plan again to see who holds it"
    return "see PVE's message; the task log on the node has details"


HttpError = Callable[[Request, int, str], ProxmoxError]


def _denied(r: Request, status: int, message: str) -> ProxmoxError:
    return r.error(
        PermissionDenied,
        f"{r.what} was refused: {message}",
        status=status,
        pve_message=message,
        hint=f"grant {r.client.user} the privilege named above on that path "
        "(Datacenter > Permissions, or `pveum acl modify PATH -user|-token ... -role ...`)",
    )


def _refused(r: Request, status: int, message: str) -> ProxmoxError:
    return r.error(
        ProxmoxAuthError,
        f"Proxmox refused the credentials of {r.client.user}: {message}",
        status=status,
        pve_message=message,
        hint=r.client.auth_hint(),
    )


def _unreachable(r: Request, status: int, message: str) -> ProxmoxError:
    return r.error(
        NodeUnreachable,
        f"{r.what} failed: {message}",
        status=status,
        pve_message=message,
        hint=f"node {r.at.node or '?'} is offline or unreachable from the cluster; bring it back, then run again",
    )


def _no_quorum(r: Request, status: int, message: str) -> ProxmoxError:
    return r.error(
        QuorumLost,
        f"{r.what} failed: {message}",
        status=status,
        pve_message=message,
        hint="the cluster has lost quorum and /etc/pve is read-only; bring enough nodes back (`pvecm status`), "
        "then run again",
    )


def _failed(r: Request, status: int, message: str) -> ProxmoxError:
    return r.error(
        ProxmoxError, f"{r.what} failed: {message}", status=status, pve_message=message, hint=_hint_for(message)
    )


#: An HTTP error's class by its status.
BY_STATUS: Mapping[int, HttpError] = MappingProxyType({401: _refused, 403: _denied, 595: _unreachable})
#: ... else by words in PVE's message (lower case), else a plain ProxmoxError with a hint from the message.
BY_MESSAGE: tuple[tuple[str, HttpError], ...] = (("no route to host", _unreachable), ("no quorum", _no_quorum))


def _http(e: ResourceException, r: Request) -> ProxmoxError:
    status = int(e.status_code)
    message = _pve_message(e)
    make = BY_STATUS.get(status) or next((f for words, f in BY_MESSAGE if words in message.lower()), _failed)
    return make(r, status, message)


def _login(e: AuthenticationError, r: Request) -> ProxmoxError:
    return r.error(
        ProxmoxAuthError,
        f"Proxmox refused the login of {r.client.user}",
        status=401,
        pve_message="authentication failure",
        hint=r.client.auth_hint(),
    )


def _tls(e: requests.exceptions.SSLError, r: Request) -> ProxmoxError:
    ca = r.client.ca_file
    against = f"the CA file {ca}" if ca else "the system's CA certificates"
    return r.error(
        ProxmoxAuthError,
        f"the TLS certificate of {r.client.endpoint} did not verify against {against}",
        hint="set proxmox.ca_file to the cluster's CA (/etc/pve/pve-root-ca.pem on any node); TLS verification "
        "stays on",
    )


def _timeout(e: requests.exceptions.Timeout, r: Request) -> ProxmoxError:
    return r.error(
        NodeUnreachable,
        f"{r.what}: {r.client.endpoint} did not answer in time",
        hint="check the endpoint and the network, or raise proxmox.timeout_s",
    )


def _no_connection(e: requests.exceptions.ConnectionError, r: Request) -> ProxmoxError:
    return r.error(
        NodeUnreachable,
        f"{r.what}: cannot connect to {r.client.endpoint}",
        hint="check proxmox.endpoint and that the node's API (pveproxy, port 8006) is up",
    )


def _os(e: OSError, r: Request) -> ProxmoxError:
    if r.client.ca_file:  # requests reads the CA file at each request
        return r.error(
            ProxmoxAuthError,
            f"cannot read the CA file {r.client.ca_file}: {e}",
            hint="fix proxmox.ca_file: the cluster's CA certificate (/etc/pve/pve-root-ca.pem on any node)",
        )
    return _other(e, r)


def _other(e: Exception, r: Request) -> ProxmoxError:
    return r.error(ProxmoxError, f"{r.what} failed: {type(e).__name__}: {e}")


#: The Proxmox adapter's boundary: proxmoxer's and requests' exceptions -> ours (most specific class wins).
PROXMOX_ERRORS: ErrorTable[Request] = MappingProxyType(
    {
        ResourceException: _http,
        AuthenticationError: _login,
        requests.exceptions.SSLError: _tls,
        requests.exceptions.ConnectTimeout: _timeout,
        requests.exceptions.Timeout: _timeout,
        requests.exceptions.ConnectionError: _no_connection,
        OSError: _os,
        Exception: _other,
    }
)
