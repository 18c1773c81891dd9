"""The Kubernetes API through the official client: a client from a kubeconfig, /readyz, the error table.

The client's errors are translated at this boundary by :data:`API_ERRORS` (client exception
class -> ours), raised ``from`` the original: a 401 or 403 becomes :class:`K3sAuthError` with
the fix, a refused or timed-out connection :class:`K3sUnreachable`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import urllib3
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from homelab_lib.core.errors import ErrorTable, HomelabError, K3sApiError, K3sAuthError, K3sError, mapped

REQUEST_TIMEOUT_S = 10.0
POLL_S = 2.0
FETCH_AGAIN = (
    "fetch the kubeconfig again: run 03_bootstrap_k3s with confirm=True (its plan shows 'kubeconfig: stale'), "
    "or copy /etc/rancher/k3s/k3s.yaml from the VM"
)


def _api_exception(e: ApiException, where: str) -> HomelabError:
    status = int(e.status or 0)
    reason = e.reason or ""
    if status in (401, 403):
        what = "credentials refused (401 Unauthorized)" if status == 401 else "forbidden (403)"
        return K3sAuthError(f"the Kubernetes API: {what}", status=status, where=where, hint=FETCH_AGAIN)
    return K3sApiError(
        f"the Kubernetes API answered {status} {reason}".strip(),
        status=status,
        where=where,
        hint="see the API server's log on the VM (journalctl -u k3s)",
    )


def _unreachable(e: BaseException, where: str) -> HomelabError:
    from homelab_lib.core.errors import K3sUnreachable

    cause = getattr(e, "reason", None) or e
    return K3sUnreachable(
        f"the Kubernetes API does not answer: {cause}",
        where=where,
        hint="is k3s running on the VM (systemctl is-active k3s) and port 6443 reachable from here?",
    )


def _bad_config(e: BaseException, where: str) -> HomelabError:
    return K3sError(f"the kubeconfig cannot be used: {e}", where=where, hint=FETCH_AGAIN)


#: The kubernetes client's errors -> ours.
API_ERRORS: ErrorTable[str] = {
    ApiException: _api_exception,
    urllib3.exceptions.MaxRetryError: _unreachable,
    urllib3.exceptions.HTTPError: _unreachable,
    ConnectionError: _unreachable,
    TimeoutError: _unreachable,
    ConfigException: _bad_config,
}


def client_from(kubeconfig: Path | str, *, where: str) -> k8s.ApiClient:
    """An API client from a kubeconfig file (a Path) or its text (a str); TLS verified against its CA.

    Raises:
        K3sError: the kubeconfig cannot be used.
    """
    with mapped(API_ERRORS, where=where):
        if isinstance(kubeconfig, Path):
            made: Any = k8s_config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
        else:
            made = k8s_config.new_client_from_config_dict(yaml.safe_load(kubeconfig))  # type: ignore[no-untyped-call]
    return cast(k8s.ApiClient, made)


def readyz(api: k8s.ApiClient, *, where: str) -> str:
    """What /readyz answers: ``ok`` when ready, else its first line (the failing check).

    Raises:
        K3sAuthError, K3sUnreachable: as :data:`API_ERRORS` says.
    """
    with mapped(API_ERRORS, where=where):
        method, url, headers, body, post = api.param_serialize("GET", "/readyz", auth_settings=["BearerToken"])
        answer = api.call_api(method, url, headers, body, post, _request_timeout=REQUEST_TIMEOUT_S)
        answer.read()  # type: ignore[no-untyped-call]
        text = (answer.data or b"").decode(errors="replace").strip()
    if answer.status in (401, 403):
        raise _api_exception(ApiException(status=answer.status, reason=answer.reason), where)
    if answer.status == 200:
        return text or "ok"
    first = text.splitlines()[0] if text else f"HTTP {answer.status}"
    return first[:200]
