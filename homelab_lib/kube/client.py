"""The Kubernetes API through the official client's DynamicClient: get, server-side apply, delete, list.

One :class:`Kube` per cluster. Its errors are translated by :data:`KUBE_ERRORS` (the client's
exception class -> ours), raised ``from`` the original: 401/403 are :class:`K3sAuthError` with
the fix, 409 on apply is :class:`K3sFieldConflict` naming the other field manager, anything
else the API refuses is :class:`K3sApiError` with its status and the API's message.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import urllib3
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic import exceptions as dyn

from homelab_lib.core.errors import ErrorTable, HomelabError, K3sApiError, K3sFieldConflict, mapped
from homelab_lib.kube.api import API_ERRORS, FETCH_AGAIN, client_from
from homelab_lib.kube.objects import MANAGER, Key, KubeObject, key

REQUEST_TIMEOUT_S = 30.0


def _message(e: Any) -> str:
    body = getattr(e, "body", None) or getattr(e, "summary", lambda: "")()
    try:
        data = json.loads(body) if isinstance(body, str | bytes) else {}
    except ValueError:
        data = {}
    return str(data.get("message") or getattr(e, "reason", "") or e)


def _conflict(e: Any, where: str) -> HomelabError:
    text = _message(e)
    return K3sFieldConflict(
        f"server-side apply conflict: {text}",
        status=409,
        where=where,
        hint="another field manager owns these fields: change them back there, or re-run with force_conflicts=True "
        "to take them over for the homelab",
    )


def _api(e: Any, where: str) -> HomelabError:
    status = int(getattr(e, "status", 0) or 0)
    if status in (401, 403):
        from homelab_lib.core.errors import K3sAuthError

        what = "credentials refused (401 Unauthorized)" if status == 401 else f"forbidden (403): {_message(e)}"
        return K3sAuthError(f"the Kubernetes API: {what}", status=status, where=where, hint=FETCH_AGAIN)
    if status == 409:
        return _conflict(e, where)
    return K3sApiError(
        f"the Kubernetes API answered {status}: {_message(e)}",
        status=status,
        where=where,
        hint="fix the object named here (its manifest comes from the parameters), then run again",
    )


#: The client's errors -> ours (the readiness table of :mod:`homelab_lib.kube.api`, plus the DynamicClient's).
KUBE_ERRORS: ErrorTable[str] = {
    **API_ERRORS,
    dyn.DynamicApiError: _api,
    dyn.ConflictError: _conflict,
    ApiException: _api,
    urllib3.exceptions.HTTPError: API_ERRORS[urllib3.exceptions.HTTPError],
    ConfigException: API_ERRORS[ConfigException],
}


class Kube:
    """One cluster, reached with a kubeconfig.

    Args:
        kubeconfig: the kubeconfig file.
        where: the cluster, for messages.
    """

    def __init__(self, kubeconfig: Path, *, where: str) -> None:
        self.where = where
        self.api = client_from(kubeconfig, where=where)
        with mapped(KUBE_ERRORS, where=where):
            self.dyn: Any = DynamicClient(self.api)  # type: ignore[no-untyped-call]
        self._resources: dict[tuple[str, str], Any] = {}

    def resource(self, api_version: str, kind: str) -> Any:
        """The API resource for a kind (discovery, cached)."""
        found = self._resources.get((api_version, kind))
        if found is None:
            with mapped(KUBE_ERRORS, where=self.where):
                found = self.dyn.resources.get(api_version=api_version, kind=kind)
            self._resources[(api_version, kind)] = found
        return found

    def get(self, k: Key) -> KubeObject | None:
        """The object now, or None."""
        res = self.resource(k.api_version, k.kind)
        try:
            with mapped(KUBE_ERRORS, where=f"{self.where}: {k}"):
                got = res.get(name=k.name, namespace=k.namespace or None, _request_timeout=REQUEST_TIMEOUT_S)
        except K3sApiError as e:
            if e.status == 404:
                return None
            raise
        return dict(got.to_dict())

    def apply(self, obj: KubeObject, *, dry_run: bool = False, force_conflicts: bool = False) -> KubeObject:
        """Server-side apply with field manager ``homelab``; with dry_run the server only says what it would store.

        Raises:
            K3sFieldConflict: another manager owns a field (unless force_conflicts).
            K3sApiError: the object is refused (invalid, forbidden...).
        """
        k = key(obj)
        res = self.resource(k.api_version, k.kind)
        with mapped(KUBE_ERRORS, where=f"{self.where}: {k}"):
            done = self.dyn.server_side_apply(
                res,
                body=obj,
                name=k.name,
                namespace=k.namespace or None,
                field_manager=MANAGER,
                force_conflicts=force_conflicts or None,
                dry_run="All" if dry_run else None,
                _request_timeout=REQUEST_TIMEOUT_S,
            )
        return dict(done.to_dict())

    def scale(self, k: Key, replicas: int, *, field_manager: str = MANAGER) -> None:
        """Set a Deployment's or StatefulSet's replicas through its ``scale`` subresource (a merge patch).

        Raises:
            K3sApiError: the object is not there or the change is refused.
        """
        res = self.resource(k.api_version, k.kind)
        with mapped(KUBE_ERRORS, where=f"{self.where}: {k}"):
            res.subresources["scale"].patch(
                body={"spec": {"replicas": replicas}},
                name=k.name,
                namespace=k.namespace or None,
                content_type="application/merge-patch+json",
                field_manager=field_manager,
                _request_timeout=REQUEST_TIMEOUT_S,
            )

    def delete(self, k: Key) -> None:
        """Delete an object (background propagation); gone already is fine."""
        res = self.resource(k.api_version, k.kind)
        try:
            with mapped(KUBE_ERRORS, where=f"{self.where}: {k}"):
                res.delete(
                    name=k.name,
                    namespace=k.namespace or None,
                    propagation_policy="Background",
                    _request_timeout=REQUEST_TIMEOUT_S,
                )
        except K3sApiError as e:
            if e.status != 404:
                raise

    def list(
        self, api_version: str, kind: str, *, namespace: str = "", label_selector: str = ""
    ) -> Iterator[KubeObject]:
        """Objects of a kind (in a namespace, or all), by label selector."""
        res = self.resource(api_version, kind)
        with mapped(KUBE_ERRORS, where=self.where):
            got = res.get(
                namespace=namespace or None, label_selector=label_selector or None, _request_timeout=REQUEST_TIMEOUT_S
            )
        for item in got.to_dict().get("items") or []:
            yield dict(item)
