"""Request routing and the verbs: from (method, path, query, headers, body) to a response.

Transport-free: :mod:`server` turns HTTP requests into :class:`Request` and writes the
:class:`Response` back (a watch's body is an iterator of newline-delimited JSON events).
"""

from __future__ import annotations

import collections
import copy
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qs

from homelab_lab.errors import KubeStatus
from homelab_lab.kube import auth, discovery, selectors, tables
from homelab_lab.kube.cluster import Cluster, WriteOptions, now
from homelab_lab.kube.resources import Kind
from homelab_lab.kube.schema import Json, OpenAPI
from homelab_lab.kube.selectors import Match

JSON = "application/json"
BOOKMARK_EVERY_S = 5.0
DEFAULT_WATCH_S = 1800


class Logs(Protocol):
    """What serves ``pods/log``: the pod runtime."""

    def logs(self, pod: Json, container: str, tail: int | None) -> bytes: ...


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    user: auth.User | None

    def q(self, name: str, default: str = "") -> str:
        values = self.query.get(name)
        return values[-1] if values else default

    def flag(self, name: str) -> bool:
        return self.q(name).lower() in ("true", "1")

    @property
    def accept(self) -> str:
        return self.headers.get("accept", "")

    @property
    def wants_table(self) -> bool:
        return "as=Table" in self.accept


@dataclass
class Response:
    status: int
    body: bytes | Iterator[bytes]
    content_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)


def _json(status: int, obj: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(status, json.dumps(obj, separators=(",", ":")).encode(), JSON, headers or {})


def status_response(error: KubeStatus) -> Response:
    return _json(error.code, error.status())


def parse_query(text: str) -> dict[str, list[str]]:
    return parse_qs(text, keep_blank_values=True)


UNAUTHORIZED = KubeStatus(401, "Unauthorized", "Unauthorized")


@dataclass
class Target:
    """What a resource URL names."""

    kind: Kind
    namespace: str
    name: str
    sub: str


class Api:
    """The API's request handler.

    Args:
        cluster: the objects.
        authn: the authenticator (for ServiceAccount tokens).
        version: the K3s version served at /version.
        address: ``host:port`` announced in /api.
        logs: what serves pods/log (None: 400 for logs).
        ready: a callable telling whether the server is ready (for /readyz).
    """

    def __init__(
        self,
        cluster: Cluster,
        authn: auth.Authenticator,
        version: discovery.Version,
        address: str,
        logs: Logs | None = None,
        ready: Callable[[], bool] = lambda: True,
    ) -> None:
        self.cluster = cluster
        self.authn = authn
        self.version = version
        self.address = address
        self.logs = logs
        self.ready = ready
        self.openapi = OpenAPI()
        self.requests: collections.Counter[tuple[str, int]] = collections.Counter()
        self.started = time.time()
        cluster.on_crd = self.openapi.clear

    # ------------------------------------------------------------ entry

    def handle(self, req: Request) -> Response:
        try:
            response = self._handle(req)
        except KubeStatus as e:
            response = status_response(e)
        self.requests[(req.method, response.status)] += 1
        return response

    def _metrics(self, req: Request) -> Response:
        """``/metrics`` in the Prometheus text format, as kube-apiserver serves it (a few of its series)."""
        assert req.user is not None
        if not auth.allowed_path(self.cluster, req.user, "get", "/metrics"):
            raise KubeStatus(403, "Forbidden", f'forbidden: User "{req.user.name}" cannot get path "/metrics"', {})
        lines = [
            "# HELP apiserver_request_total Counter of apiserver requests by verb and HTTP response code.",
            "# TYPE apiserver_request_total counter",
        ]
        for (method, code), n in sorted(self.requests.items()):
            lines.append(f'apiserver_request_total{{code="{code}",verb="{method}"}} {n}')
        lines += [
            "# HELP apiserver_storage_objects Number of stored objects at the time of last check split by kind.",
            "# TYPE apiserver_storage_objects gauge",
        ]
        for kind in self.cluster.registry.all():
            resource = f"{kind.plural}.{kind.group}" if kind.group else kind.plural
            lines.append(f'apiserver_storage_objects{{resource="{resource}"}} {len(self.cluster.list(kind)[0])}')
        lines += [
            "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.",
            "# TYPE process_start_time_seconds gauge",
            f"process_start_time_seconds {self.started:.3f}",
            "",
        ]
        return Response(200, "\n".join(lines).encode(), "text/plain; version=0.0.4; charset=utf-8")

    def _handle(self, req: Request) -> Response:
        path = req.path.rstrip("/") or "/"
        if req.user is None:
            raise UNAUTHORIZED
        if path in ("/healthz", "/livez", "/readyz"):
            ok = path != "/readyz" or self.ready()
            if req.q("verbose") != "" or "verbose" in req.query:
                text = "[+]ping ok\n[+]etcd ok\n[+]informer-sync ok\n" + (
                    f"{path[1:]} check passed\n" if ok else f"{path[1:]} check failed\n"
                )
            else:
                text = "ok" if ok else "[-]informer-sync failed: not synced\nreadyz check failed"
            return Response(200 if ok else 500, text.encode(), "text/plain; charset=utf-8")
        if path == "/version":
            return _json(200, self.version.document())
        if path == "/metrics":
            return self._metrics(req)
        if path == "/api":
            return _json(200, discovery.api_versions(self.address))
        if path == "/apis":
            return _json(200, discovery.api_groups(self.cluster.registry))
        if path.startswith("/openapi/v3"):
            return self._openapi(path)
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) == 2:
            return self._resource_list("", parts[1])
        if parts[0] == "apis" and len(parts) == 2:
            group = discovery.api_group(self.cluster.registry, parts[1])
            if group is None:
                raise _no_resource()
            return _json(200, group)
        if parts[0] == "apis" and len(parts) == 3:
            return self._resource_list(parts[1], parts[2])
        target = self._target(parts)
        return self._resource(req, target)

    def _resource_list(self, group: str, version: str) -> Response:
        found = discovery.resource_list(self.cluster.registry, group, version)
        if found is None:
            raise _no_resource()
        return _json(200, found)

    def _openapi(self, path: str) -> Response:
        reg = self.cluster.registry
        gvs = [("", "v1"), *((g, v) for g, vs in reg.groups() for v in vs)]
        docs = {(f"apis/{g}/{v}" if g else f"api/{v}"): (g, v) for g, vs in [("", ["v1"]), *reg.groups()] for v in vs}
        if path == "/openapi/v3":
            hashes = {}
            for key, (g, v) in docs.items():
                _, hashes[key] = self.openapi.document(g, v, reg.in_group_version(g, v))
            del gvs
            return _json(200, discovery.openapi_index(reg, hashes))
        key = path.removeprefix("/openapi/v3/")
        if key not in docs:
            raise _no_resource()
        g, v = docs[key]
        body, digest = self.openapi.document(g, v, reg.in_group_version(g, v))
        return Response(200, body, JSON, {"Etag": f'"{digest}"', "Cache-Control": "public, immutable"})

    def _target(self, parts: list[str]) -> Target:
        if parts[0] == "api" and len(parts) >= 3:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 4:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise _no_resource()
        reg = self.cluster.registry
        namespace = ""
        if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
            namespace, rest = rest[1], rest[2:]
        kind = reg.lookup(group, version, rest[0])
        if kind is None or (namespace and not kind.namespaced) or len(rest) > 3:
            raise _no_resource()
        name = rest[1] if len(rest) > 1 else ""
        sub = rest[2] if len(rest) > 2 else ""
        if sub and not (
            (sub == "status" and kind.status)
            or (sub == "scale" and kind.scale)
            or (sub == "log" and kind.kind == "Pod")
            or (sub == "token" and kind.kind == "ServiceAccount")
            or (sub == "finalize" and kind.kind == "Namespace")
        ):
            raise _no_resource()
        return Target(kind, namespace, name, sub)

    # ------------------------------------------------------------ resources

    def _verb(self, req: Request, t: Target) -> str:
        m = req.method
        if m == "GET":
            if t.name:
                return "get"
            return "watch" if req.flag("watch") else "list"
        return {
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete" if t.name else "deletecollection",
        }.get(m, "")

    def _authorize(self, req: Request, t: Target, verb: str) -> None:
        assert req.user is not None
        if not auth.allowed(self.cluster, req.user, verb, t.kind.group, t.kind.plural, t.namespace, t.name, t.sub):
            raise auth.forbidden(req.user, verb, t.kind.group, t.kind.plural, t.namespace, t.name, t.sub)

    def _opts(self, req: Request) -> WriteOptions:
        manager = req.q("fieldManager")
        if not manager and req.headers.get("content-type", "").split(";")[0] != "application/apply-patch+yaml":
            manager = req.headers.get("user-agent", "unknown").split("/")[0].strip() or "unknown"
        validation = req.q(
            "fieldValidation",
            "Strict"
            if req.method == "PATCH" and req.headers.get("content-type", "").startswith("application/apply-patch")
            else "Warn",
        )
        if validation not in ("Ignore", "Warn", "Strict"):
            raise KubeStatus(400, "BadRequest", f"fieldValidation parameter unsupported: {validation}")
        return WriteOptions(manager, req.q("dryRun") == "All", validation, req.flag("force"))

    def _resource(self, req: Request, t: Target) -> Response:
        verb = self._verb(req, t)
        if not verb:
            raise KubeStatus(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        if t.kind.kind == "ServiceAccount" and t.sub == "token":
            verb = "create"
        self._authorize(req, t, verb)
        c, k = self.cluster, t.kind
        if verb == "watch":
            return self._watch(req, t)
        if verb == "list":
            return self._list(req, t)
        if verb == "get":
            if t.sub == "log":
                return self._log(req, t)
            obj = c.get(k, t.namespace, t.name)
            if t.sub == "scale":
                return _json(200, _scale(obj))
            return self._one(req, 200, k, obj)
        if t.sub == "token":
            return self._token(req, t)
        opts = self._opts(req)
        headers = {}
        if verb == "create":
            if t.name:
                raise _no_resource()
            obj = c.create(k, t.namespace, _body(req), opts)
            code = 201
        elif verb == "update":
            body = _body(req)
            if t.sub == "scale":
                return self._set_scale(t, body, opts)
            obj = c.update(k, t.namespace, t.name, body, opts, t.sub if t.sub == "status" else "")
            code = 200
        elif verb == "patch":
            ctype = req.headers.get("content-type", "").split(";")[0].strip()
            if t.sub == "scale":
                current = _scale(c.get(k, t.namespace, t.name))
                from homelab_lab.kube import patch as patches

                body = (
                    patches.merge_patch(current, json.loads(req.body or b"{}"))
                    if ctype != "application/json-patch+json"
                    else patches.json_patch(current, json.loads(req.body or b"[]"))
                )
                return self._set_scale(t, body, opts)
            existed = c.find(k, t.namespace, t.name) is not None
            obj = c.patch(k, t.namespace, t.name, ctype, req.body, opts, t.sub if t.sub == "status" else "")
            code = 200 if existed or ctype != "application/apply-patch+yaml" else 201
        elif verb == "delete":
            return self._delete(req, t)
        else:
            return self._delete_collection(req, t)
        if opts.warnings:
            headers["Warning"] = ", ".join(f'299 - "{w}"' for w in opts.warnings)
        response = self._one(req, code, k, obj)
        response.headers.update(headers)
        return response

    def _one(self, req: Request, code: int, kind: Kind, obj: Json) -> Response:
        if req.wants_table:
            return _json(
                code,
                tables.table(
                    kind, [obj], obj["metadata"].get("resourceVersion", ""), req.q("includeObject", "Metadata")
                ),
            )
        return _json(code, obj)

    def _matches(self, req: Request, t: Target) -> list[Match]:
        out: list[Match] = []
        if req.q("labelSelector"):
            out.append(selectors.label_selector(req.q("labelSelector")))
        if req.q("fieldSelector"):
            out.append(selectors.field_selector(req.q("fieldSelector")))
        return out

    def _list(self, req: Request, t: Target) -> Response:
        items, rv = self.cluster.list(t.kind, t.namespace or None, *self._matches(req, t))
        if req.wants_table:
            return _json(200, tables.table(t.kind, items, rv, req.q("includeObject", "Metadata")))
        return _json(
            200,
            {
                "kind": f"{t.kind.kind}List",
                "apiVersion": t.kind.api_version,
                "metadata": {"resourceVersion": str(rv)},
                "items": items,
            },
        )

    def _delete(self, req: Request, t: Target) -> Response:
        opts: Json = {}
        if req.body.strip():
            try:
                opts = json.loads(req.body)
            except ValueError:
                raise KubeStatus(400, "BadRequest", "the body of the request was in an unknown format") from None
        grace = req.q("gracePeriodSeconds") or opts.get("gracePeriodSeconds")
        dry = req.q("dryRun") == "All" or "All" in (opts.get("dryRun") or [])
        obj, gone = self.cluster.delete(
            t.kind,
            t.namespace,
            t.name,
            dry_run=dry,
            grace=int(grace) if grace not in (None, "") else None,
            preconditions=opts.get("preconditions"),
        )
        if gone and t.kind.kind != "Pod":
            meta = obj["metadata"]
            return _json(
                200,
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": {
                        "name": meta["name"],
                        "group": t.kind.group,
                        "kind": t.kind.plural,
                        "uid": meta.get("uid"),
                    },
                },
            )
        return _json(200, obj)

    def _delete_collection(self, req: Request, t: Target) -> Response:
        items, _ = self.cluster.list(t.kind, t.namespace or None, *self._matches(req, t))
        for obj in items:
            self.cluster.delete(t.kind, t.namespace, obj["metadata"]["name"], dry_run=req.q("dryRun") == "All")
        return _json(200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})

    def _set_scale(self, t: Target, body: Any, opts: WriteOptions) -> Response:
        replicas = ((body or {}).get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise KubeStatus(
                422,
                "Invalid",
                f'Scale.autoscaling "{t.name}" is invalid: spec.replicas: Invalid value: '
                f"{replicas}: must be greater than or equal to 0",
            )
        with self.cluster.store.lock:
            obj = copy.deepcopy(self.cluster.get(t.kind, t.namespace, t.name))
            obj["spec"]["replicas"] = replicas
            obj["metadata"].pop("resourceVersion", None)
            new = self.cluster.update(t.kind, t.namespace, t.name, obj, opts)
        return _json(200, _scale(new))

    def _token(self, req: Request, t: Target) -> Response:
        sa = self.cluster.get(t.kind, t.namespace, t.name)
        body = _body(req) if req.body.strip() else {}
        spec = body.get("spec") or {}
        seconds = int(spec.get("expirationSeconds") or 3600)
        audiences = list(spec.get("audiences") or ["https://kubernetes.default.svc.cluster.local", "k3s"])
        token, exp = self.authn.issue(t.namespace, sa, seconds, audiences)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(exp))
        return _json(
            201,
            {
                "kind": "TokenRequest",
                "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"name": t.name, "namespace": t.namespace, "creationTimestamp": now()},
                "spec": {"audiences": audiences, "expirationSeconds": seconds, "boundObjectRef": None},
                "status": {"token": token, "expirationTimestamp": stamp},
            },
        )

    def _log(self, req: Request, t: Target) -> Response:
        pod = self.cluster.get(t.kind, t.namespace, t.name)
        containers = [c["name"] for c in (pod.get("spec") or {}).get("containers") or []]
        container = req.q("container") or (containers[0] if len(containers) == 1 else "")
        if not container:
            raise KubeStatus(
                400,
                "BadRequest",
                f"a container name must be specified for pod {t.name}, choose one of: [{' '.join(containers)}]",
            )
        if self.logs is None:
            raise KubeStatus(
                400,
                "BadRequest",
                f'container "{container}" in pod "{t.name}" is waiting to start: no container runtime',
            )
        tail = req.q("tailLines")
        return Response(200, self.logs.logs(pod, container, int(tail) if tail else None), "text/plain")

    # ------------------------------------------------------------ watch

    def _watch(self, req: Request, t: Target) -> Response:
        store = self.cluster.store
        matches = self._matches(req, t)
        rv_text = req.q("resourceVersion")
        timeout = float(req.q("timeoutSeconds") or DEFAULT_WATCH_S)
        bookmarks = req.flag("allowWatchBookmarks")
        table = req.wants_table
        initial: list[Json] = []
        with store.lock:
            if rv_text in ("", "0") or req.flag("sendInitialEvents"):
                initial, start = self.cluster.list(t.kind, t.namespace or None, *matches)
            else:
                try:
                    start = int(rv_text)
                except ValueError:
                    raise KubeStatus(400, "BadRequest", f"invalid resource version: {rv_text}") from None
                if store.too_old(start):
                    gone = KubeStatus(410, "Expired", f"too old resource version: {start} ({store.rv})")
                    return Response(200, iter([_line({"type": "ERROR", "object": gone.status()})]))
        send_end = req.flag("sendInitialEvents") and bookmarks

        def stream() -> Iterator[bytes]:
            seen: set[tuple[str, str]] = set()
            first = [True]

            def wrap(obj: Json) -> Json:
                if not table:
                    return obj
                out = tables.table(
                    t.kind, [obj], obj["metadata"].get("resourceVersion", ""), req.q("includeObject", "Metadata")
                )
                if not first[0]:
                    out["columnDefinitions"] = []
                first[0] = False
                return out

            for obj in initial:
                seen.add((obj["metadata"].get("namespace", ""), obj["metadata"]["name"]))
                yield _line({"type": "ADDED", "object": wrap(obj)})
            if send_end:
                yield _line(_bookmark(t.kind, start, initial_end=True))
            last, deadline, quiet_since = start, time.monotonic() + timeout, time.monotonic()
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                store.wait(last, min(left, 1.0))
                for ev in store.events_after(last):
                    last = ev.rv
                    if ev.key != t.kind.key:
                        continue
                    meta = ev.obj["metadata"]
                    ident = (meta.get("namespace", ""), meta["name"])
                    if t.namespace and ident[0] != t.namespace:
                        continue
                    if t.name and ident[1] != t.name:
                        continue
                    kind = ev.type
                    if all(m(ev.obj) for m in matches):
                        if kind == "DELETED":
                            seen.discard(ident)
                        else:
                            kind = "MODIFIED" if ident in seen and kind == "ADDED" else kind
                            seen.add(ident)
                    elif ident in seen:
                        seen.discard(ident)
                        kind = "DELETED"
                    else:
                        continue
                    quiet_since = time.monotonic()
                    yield _line({"type": kind, "object": wrap(ev.obj)})
                if bookmarks and time.monotonic() - quiet_since >= BOOKMARK_EVERY_S:
                    quiet_since = time.monotonic()
                    yield _line(_bookmark(t.kind, max(last, store.rv)))

        return Response(200, stream(), JSON)


def _line(obj: Json) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def _bookmark(kind: Kind, rv: int, initial_end: bool = False) -> Json:
    meta: Json = {"resourceVersion": str(rv)}
    if initial_end:
        meta["annotations"] = {"k8s.io/initial-events-end": "true"}
    return {"type": "BOOKMARK", "object": {"kind": kind.kind, "apiVersion": kind.api_version, "metadata": meta}}


def _no_resource() -> KubeStatus:
    return KubeStatus(404, "NotFound", "the server could not find the requested resource", {})


def _body(req: Request) -> Json:
    try:
        body = json.loads(req.body or b"null")
    except ValueError:
        import yaml

        try:
            body = yaml.safe_load(req.body)
        except yaml.YAMLError:
            raise KubeStatus(400, "BadRequest", "the body of the request was in an unknown format") from None
    if not isinstance(body, dict):
        raise KubeStatus(400, "BadRequest", "the body of the request must be an object")
    return body


def _scale(obj: Json) -> Json:
    meta = obj["metadata"]
    selector = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if k in meta
        },
        "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
        "status": {
            "replicas": (obj.get("status") or {}).get("replicas", 0),
            "selector": ",".join(f"{k}={v}" for k, v in selector.items()),
        },
    }
