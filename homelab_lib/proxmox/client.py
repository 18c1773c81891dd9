"""The one door to the Proxmox VE API: proxmoxer's https backend, with errors translated.

:class:`ProxmoxClient` sends requests through proxmoxer and turns every failure
(HTTP errors, TLS, connection, login) into the project's exception tree, naming
the node, vmid and VM, PVE's own message and what to do. It answers with the
API's JSON ``data`` (plain dicts and lists); the rest of the adapter turns that
into frozen dataclasses.

Credentials: the client is given a ``connect`` function that builds the
proxmoxer object; secrets are revealed inside it, at the moment the client is
built, and never kept here. With password login a ticket that the server no
longer accepts (expired, revoked) is renewed once by logging in again, and the
request is retried: PVE checks the ticket before it does anything, so a
rejected request changed nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import requests
from proxmoxer import ProxmoxAPI
from proxmoxer.core import AuthenticationError, ResourceException

from homelab_lib.errors import (
    NodeUnreachable,
    PermissionDenied,
    ProxmoxAuthError,
    ProxmoxError,
    QuorumLost,
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
        api, generation = self._current(at)
        try:
            return self._send(api, method, path, args)
        except ResourceException as e:
            if e.status_code == 401 and self.auth == "ticket":
                api = self._renew(generation, at)
                try:
                    return self._send(api, method, path, args)
                except Exception as again:
                    raise self.translate(again, method, path, at) from again
            raise self.translate(e, method, path, at) from e
        except Exception as e:  # every failure leaves as a ProxmoxError
            raise self.translate(e, method, path, at) from e

    @staticmethod
    def _send(api: ProxmoxAPI, method: Method, path: str, args: dict[str, Any]) -> Any:
        resource = api(path.strip("/"))
        if method == "GET":
            return resource.get(**args)
        if method == "POST":
            return resource.post(**args)
        if method == "PUT":
            return resource.put(**args)
        return resource.delete(**args)

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
        try:
            return self._connect()
        except ProxmoxError:
            raise
        except Exception as e:  # login failures, TLS, connection
            raise self.translate(e, "POST", "access/ticket", at) from e

    # --------------------------------------------------------------- translation

    def translate(self, e: BaseException, method: str, path: str, at: At) -> ProxmoxError:
        """The project's error for an exception raised by proxmoxer or requests."""
        what = f"{method} /{path.strip('/')}"
        if isinstance(e, ProxmoxError):
            return e
        if isinstance(e, ResourceException):
            status = int(e.status_code)
            message = _pve_message(e)
            if status == 401:
                return _make(
                    ProxmoxAuthError,
                    f"Proxmox refused the credentials of {self.user}: {message}",
                    at,
                    status=status,
                    pve_message=message,
                    hint=self._auth_hint(),
                )
            if status == 403:
                return _make(
                    PermissionDenied,
                    f"{what} was refused: {message}",
                    at,
                    status=status,
                    pve_message=message,
                    hint=f"grant {self.user} the privilege named above on that path "
                    "(Datacenter > Permissions, or `pveum acl modify PATH -user|-token ... -role ...`)",
                )
            if status == 595 or "no route to host" in message.lower():
                return _make(
                    NodeUnreachable,
                    f"{what} failed: {message}",
                    at,
                    status=status,
                    pve_message=message,
                    hint=f"node {at.node or '?'} is offline or unreachable from the cluster; bring it back, "
                    "then run again",
                )
            if "no quorum" in message.lower():
                return _make(
                    QuorumLost,
                    f"{what} failed: {message}",
                    at,
                    status=status,
                    pve_message=message,
                    hint="the cluster has lost quorum and /etc/pve is read-only; bring enough nodes back "
                    "(`pvecm status`), then run again",
                )
            return _make(
                ProxmoxError,
                f"{what} failed: {message}",
                at,
                status=status,
                pve_message=message,
                hint=_hint_for(message),
            )
        if isinstance(e, AuthenticationError):
            return _make(
                ProxmoxAuthError,
                f"Proxmox refused the login of {self.user}",
                at,
                status=401,
                pve_message="authentication failure",
                hint=self._auth_hint(),
            )
        if isinstance(e, requests.exceptions.SSLError):
            against = f"the CA file {self.ca_file}" if self.ca_file else "the system's CA certificates"
            return _make(
                ProxmoxAuthError,
                f"the TLS certificate of {self.endpoint} did not verify against {against}",
                at,
                hint="set proxmox.ca_file to the cluster's CA (/etc/pve/pve-root-ca.pem on any node); "
                "TLS verification stays on",
            )
        if isinstance(e, requests.exceptions.Timeout):
            return _make(
                NodeUnreachable,
                f"{what}: {self.endpoint} did not answer in time",
                at,
                hint="check the endpoint and the network, or raise proxmox.timeout_s",
            )
        if isinstance(e, requests.exceptions.ConnectionError):
            return _make(
                NodeUnreachable,
                f"{what}: cannot connect to {self.endpoint}",
                at,
                hint="check proxmox.endpoint and that the node's API (pveproxy, port 8006) is up",
            )
        if isinstance(e, OSError) and self.ca_file:
            return _make(
                ProxmoxAuthError,
                f"cannot read the CA file {self.ca_file}: {e}",
                at,
                hint="fix proxmox.ca_file (for the lab: `homelab lab up` writes it)",
            )
        return _make(ProxmoxError, f"{what} failed: {type(e).__name__}: {e}", at)

    def _auth_hint(self) -> str:
        if self.auth == "token":
            return (
                "check proxmox.user and proxmox.token_id (the token is USER!TOKENID) and the secret that "
                "proxmox.token_secret points to; a token made with privilege separation also needs its own ACLs"
            )
        return "check proxmox.user and the password that proxmox.password points to"


def _make(
    cls: type[ProxmoxError], message: str, at: At, *, status: int = 0, pve_message: str = "", hint: str = ""
) -> ProxmoxError:
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
