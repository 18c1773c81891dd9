"""The API's semantics over the store: create, get, list, update, patch, apply, delete.

Both the HTTP handlers and the controllers write through :class:`Cluster`, so every object
gets the same treatment: defaults, validation, ``uid``, ``creationTimestamp``, a numeric
cluster-wide ``resourceVersion``, ``generation`` bumped on spec changes only, ``managedFields``
per field manager, finalizers and namespace termination.
"""

from __future__ import annotations

import copy
import datetime
import json
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from homelab_lab.errors import KubeStatus
from homelab_lab.kube import defaults, fields, patch, schema, validation
from homelab_lab.kube.resources import Kind, Registry
from homelab_lab.kube.schema import Json
from homelab_lab.kube.selectors import Match
from homelab_lab.kube.store import Store

List = list

_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_SKIP_META = ("resourceVersion", "managedFields")


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def random_suffix(n: int = 5) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(n))


def what(kind: Kind) -> str:
    """``deployments.apps`` / ``pods``: how messages name a resource."""
    return kind.resource


def not_found(kind: Kind, name: str) -> KubeStatus:
    return KubeStatus(
        404, "NotFound", f'{what(kind)} "{name}" not found', {"name": name, "group": kind.group, "kind": kind.plural}
    )


def stale(kind: Kind, name: str) -> KubeStatus:
    return KubeStatus(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {what(kind)} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        {"name": name, "group": kind.group, "kind": kind.plural},
    )


@dataclass
class WriteOptions:
    """Query options of a write: ``fieldManager``, ``dryRun``, ``fieldValidation``, ``force``."""

    manager: str = ""
    dry_run: bool = False
    validation: str = "Strict"
    force: bool = False
    warnings: list[str] = field(default_factory=list)


def _spec_part(obj: Json) -> Json:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _comparable(obj: Json) -> Json:
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _SKIP_META}
    mf = [{k: v for k, v in e.items() if k != "time"} for e in (obj.get("metadata") or {}).get("managedFields") or []]
    return {**obj, "metadata": meta, "_mf": mf}


class Cluster:
    """The object API over a :class:`Store`, shared by the HTTP server and the controllers.

    Args:
        store: where objects live.
        registry: the served kinds.
        graceful_pods: True when a kubelet (a pod runtime) finishes pod deletion; False removes at once.
    """

    def __init__(self, store: Store, registry: Registry, *, graceful_pods: bool = False) -> None:
        self.store = store
        self.registry = registry
        self.graceful_pods = graceful_pods
        self.on_crd: Callable[[], None] = lambda: None
        self.admit: list[Callable[[Kind, Json, Json | None], None]] = []

    # ------------------------------------------------------------ reads

    def get(self, kind: Kind, namespace: str, name: str) -> Json:
        obj = self.store.get(kind.key, namespace if kind.namespaced else "", name)
        if obj is None:
            raise not_found(kind, name)
        return obj

    def find(self, kind: Kind, namespace: str, name: str) -> Json | None:
        return self.store.get(kind.key, namespace if kind.namespaced else "", name)

    def list(self, kind: Kind, namespace: str | None = None, *matches: Match) -> tuple[list[Json], int]:
        with self.store.lock:
            items = self.store.list(kind.key, namespace if kind.namespaced else None)
            rv = self.store.rv
        return [o for o in items if all(m(o) for m in matches)], rv

    def kind(self, api_version: str, kind: str) -> Kind:
        found = self.registry.by_gvk(api_version, kind)
        if found is None:
            raise KubeStatus(
                404, "NotFound", f"the server could not find the requested resource ({kind} {api_version})"
            )
        return found

    # ------------------------------------------------------------ writes

    def _check_namespace(self, kind: Kind, namespace: str) -> None:
        if not kind.namespaced:
            return
        ns = self.store.get("/namespaces", "", namespace)
        if ns is None:
            raise KubeStatus(
                404, "NotFound", f'namespaces "{namespace}" not found', {"name": namespace, "kind": "namespaces"}
            )
        if (ns.get("metadata") or {}).get("deletionTimestamp"):
            raise KubeStatus(
                403,
                "Forbidden",
                f"{what(kind)} is forbidden: unable to create new content in namespace "
                f"{namespace} because it is being terminated",
                {
                    "kind": kind.plural,
                    "group": kind.group,
                    "causes": [
                        {
                            "reason": "NamespaceTerminating",
                            "field": "metadata.namespace",
                            "message": f"namespace {namespace} is being terminated",
                        }
                    ],
                },
            )

    def _identity(self, kind: Kind, namespace: str, body: Json, name: str | None) -> Json:
        if not isinstance(body, dict):
            raise KubeStatus(400, "BadRequest", "the body of the request was in an unknown format")
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise KubeStatus(400, "BadRequest", "metadata must be an object")
        if obj.get("kind") not in (None, "", kind.kind) or obj.get("apiVersion") not in (None, "", kind.api_version):
            raise KubeStatus(
                400,
                "BadRequest",
                f"the API version in the data ({obj.get('apiVersion')}) does not match "
                f"the expected API version ({kind.api_version})",
            )
        obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
        if name is not None and meta.get("name") not in (None, name):
            raise KubeStatus(
                400,
                "BadRequest",
                f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})",
            )
        if name is not None:
            meta["name"] = name
        if kind.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise KubeStatus(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        return obj

    def _prepare(self, kind: Kind, obj: Json, opts: WriteOptions) -> Json:
        opts.warnings += validation.decode(kind, obj, opts.validation)
        if opts.validation != "Strict":
            obj = validation.strip_unknown(obj, schema.kind_schema(kind))
        stored: Json = validation.normalise_times(obj, schema.kind_schema(kind))  # as the apiserver encodes times
        return stored

    def create(
        self,
        kind: Kind,
        namespace: str,
        body: Json,
        opts: WriteOptions,
        *,
        keep_status: bool = False,
        managed_fields: List[Json] | None = None,
    ) -> Json:
        """POST: a new object (409 AlreadyExists when the name is taken)."""
        obj = self._prepare(kind, self._identity(kind, namespace, body, None), opts)
        meta = obj["metadata"]
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = f"{meta['generateName']}{random_suffix()}"
        for k in (
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "deletionTimestamp",
            "generation",
            "managedFields",
            "selfLink",
        ):
            meta.pop(k, None)
        if managed_fields is not None:
            meta["managedFields"] = managed_fields
        if kind.status and not keep_status:
            obj.pop("status", None)
        meta["uid"] = str(uuid.uuid4())
        defaults.apply_defaults(kind.kind, obj)
        with self.store.lock:
            for hook in self.admit:
                hook(kind, obj, None)
            validation.validate(kind, obj, None)
            self._check_namespace(kind, namespace)
            if self.find(kind, namespace, meta["name"]) is not None:
                raise KubeStatus(
                    409,
                    "AlreadyExists",
                    f'{what(kind)} "{meta["name"]}" already exists',
                    {"name": meta["name"], "group": kind.group, "kind": kind.plural},
                )
            meta["creationTimestamp"] = now()
            if kind.generation:
                meta["generation"] = 1
            if opts.manager and "managedFields" not in meta:
                fields.record_update(None, obj, schema.kind_schema(kind), opts.manager)
                if keep_status and kind.status and "status" in obj:
                    fields.record_update(None, obj, schema.kind_schema(kind), opts.manager, "status")
            return self._store(kind, obj, None, opts.dry_run)

    def _store(self, kind: Kind, obj: Json, old: Json | None, dry_run: bool) -> Json:
        if old is not None and _comparable(obj) == _comparable(old):
            return old
        if dry_run:
            if old is not None:
                obj["metadata"]["resourceVersion"] = old["metadata"].get("resourceVersion")
            return obj
        meta = obj["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and kind.kind != "Namespace":
            meta["resourceVersion"] = str(self.store.next_rv())
            self.store.remove(kind.key, obj)
            self._removed(kind, obj)
            return obj
        meta["resourceVersion"] = str(self.store.next_rv())
        self.store.put(kind.key, obj, "ADDED" if old is None else "MODIFIED")
        if kind.kind == "CustomResourceDefinition":
            self.registry.set_crd(meta["name"], obj)
            self.on_crd()
        return obj

    def _removed(self, kind: Kind, obj: Json) -> None:
        if kind.kind == "CustomResourceDefinition":
            self.registry.set_crd(obj["metadata"]["name"], None)
            self.on_crd()

    def _finish(
        self, kind: Kind, old: Json, new: Json, opts: WriteOptions, subresource: str, managed: bool = False
    ) -> Json:
        """Carry identity and the other half (spec or status) over from old; defaults, validation, generation."""
        meta, old_meta = new.setdefault("metadata", {}), old["metadata"]
        rv = meta.get("resourceVersion")
        if rv not in (None, "") and str(rv) != str(old_meta.get("resourceVersion")):
            raise stale(kind, old_meta["name"])
        for k in (
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "name",
            "namespace",
        ):
            if k in old_meta:
                meta[k] = old_meta[k]
            else:
                meta.pop(k, None)
        if subresource == "status":
            status = new.get("status")
            new = {**copy.deepcopy(old), "status": status} if status is not None else copy.deepcopy(old)
            if managed:
                new["metadata"]["managedFields"] = meta.get("managedFields", [])
            meta = new["metadata"]
        elif kind.status:
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        if meta.get("deletionTimestamp") and meta.get("finalizers") is None:
            meta.pop("finalizers", None)
        defaults.apply_defaults(kind.kind, new)
        for hook in self.admit:
            hook(kind, new, old)
        validation.validate(kind, new, old)
        if kind.generation and _spec_part(new) != _spec_part(old):
            meta["generation"] = int(old_meta.get("generation") or 1) + 1
        if not managed:
            meta["managedFields"] = copy.deepcopy(old_meta.get("managedFields") or [])
            if opts.manager:
                fields.record_update(old, new, schema.kind_schema(kind), opts.manager, subresource)
        return new

    def update(
        self, kind: Kind, namespace: str, name: str, body: Json, opts: WriteOptions, subresource: str = ""
    ) -> Json:
        """PUT: replace an object (409 Conflict when body's resourceVersion is not the current one)."""
        obj = self._prepare(kind, self._identity(kind, namespace, body, name), opts)
        with self.store.lock:
            old = self.get(kind, namespace, name)
            new = self._finish(kind, old, obj, opts, subresource)
            return self._store(kind, new, old, opts.dry_run)

    def patch(
        self,
        kind: Kind,
        namespace: str,
        name: str,
        content_type: str,
        raw: bytes,
        opts: WriteOptions,
        subresource: str = "",
    ) -> Json:
        """PATCH: merge, strategic merge, JSON patch, or server-side apply (which creates when absent)."""
        body = _parse(raw, content_type)
        with self.store.lock:
            if content_type == "application/apply-patch+yaml":
                return self._apply(kind, namespace, name, body, opts, subresource)
            old = self.get(kind, namespace, name)
            base = copy.deepcopy(old)
            if content_type == "application/json-patch+json":
                new = patch.json_patch(base, body)
            elif content_type == "application/merge-patch+json":
                new = patch.merge_patch(base, body)
            elif content_type == "application/strategic-merge-patch+json":
                if kind.crd is not None:
                    raise KubeStatus(
                        415,
                        "UnsupportedMediaType",
                        "the body of the request was in an unknown format - "
                        "accepted media types include: application/json-patch+json, "
                        "application/merge-patch+json, application/apply-patch+yaml",
                    )
                new = patch.strategic_merge(base, body, schema.kind_schema(kind))
            else:
                raise KubeStatus(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - "
                    "accepted media types include: application/json-patch+json, application/merge-patch+json, "
                    "application/apply-patch+yaml, application/strategic-merge-patch+json",
                )
            if not isinstance(new, dict):
                raise KubeStatus(400, "BadRequest", "the patch did not produce an object")
            new = self._prepare(kind, self._identity(kind, namespace, new, name), opts)
            if str(new["metadata"].get("resourceVersion")) == str(old["metadata"].get("resourceVersion")):
                new["metadata"].pop("resourceVersion", None)
            new = self._finish(kind, old, new, opts, subresource)
            return self._store(kind, new, old, opts.dry_run)

    def _apply(self, kind: Kind, namespace: str, name: str, body: Any, opts: WriteOptions, subresource: str) -> Json:
        if not isinstance(body, dict):
            raise KubeStatus(400, "BadRequest", "the apply configuration must be an object")
        if not opts.manager:
            raise KubeStatus(
                400,
                "BadRequest",
                'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch',
            )
        for k in ("apiVersion", "kind"):
            if not body.get(k):
                raise KubeStatus(400, "BadRequest", f"invalid object type: {k} not set")
        applied = self._prepare(kind, self._identity(kind, namespace, body, name), opts)
        old = self.find(kind, namespace, name)
        root = schema.kind_schema(kind)
        if old is None:
            if subresource:
                raise not_found(kind, name)
            merged = fields.apply(None, applied, root, opts.manager, opts.force)
            meta = merged["metadata"]
            meta.update({k: v for k, v in applied["metadata"].items() if k not in meta})
            return self.create(
                kind,
                namespace,
                merged,
                WriteOptions(opts.manager, opts.dry_run, "Ignore"),
                managed_fields=meta.pop("managedFields"),
            )
        merged = fields.apply(old, applied, root, opts.manager, opts.force, subresource)
        new = self._finish(kind, old, merged, opts, subresource, managed=True)
        return self._store(kind, new, old, opts.dry_run)

    # ------------------------------------------------------------ internal writes (controllers)

    def write(self, kind: Kind, new: Json, manager: str, subresource: str = "") -> Json:
        """Update (or create, when absent) on behalf of a controller; no-op when nothing changed."""
        meta = new["metadata"]
        ns, name = str(meta.get("namespace") or ""), str(meta["name"])
        opts = WriteOptions(manager, False, "Ignore")
        with self.store.lock:
            old = self.find(kind, ns, name)
            if old is None:
                return self.create(kind, ns, new, opts, keep_status=True)
            body = copy.deepcopy(new)
            body["metadata"].pop("resourceVersion", None)
            done = self._finish(kind, old, body, opts, subresource)
            return self._store(kind, done, old, False)

    def set_status(self, kind: Kind, obj: Json, status: Json, manager: str) -> Json:
        """Write only status (no-op when unchanged)."""
        if obj.get("status") == status:
            return obj
        return self.write(kind, {**obj, "status": status}, manager, "status" if kind.status else "")

    # ------------------------------------------------------------ delete

    def delete(
        self,
        kind: Kind,
        namespace: str,
        name: str,
        *,
        dry_run: bool = False,
        grace: int | None = None,
        preconditions: Json | None = None,
    ) -> tuple[Json, bool]:
        """DELETE: (object, gone). Objects with finalizers, namespaces and running pods are marked first."""
        with self.store.lock:
            old = self.get(kind, namespace, name)
            pre = preconditions or {}
            if pre.get("uid") and pre["uid"] != old["metadata"].get("uid"):
                raise KubeStatus(
                    409,
                    "Conflict",
                    f"Precondition failed: UID in precondition: {pre['uid']}, "
                    f"UID in object meta: {old['metadata'].get('uid')}",
                )
            if pre.get("resourceVersion") and str(pre["resourceVersion"]) != old["metadata"].get("resourceVersion"):
                raise stale(kind, name)
            meta = old["metadata"]
            pod_grace = (
                kind.kind == "Pod" and self.graceful_pods and grace != 0 and (old.get("spec") or {}).get("nodeName")
            )
            if meta.get("finalizers") or kind.kind == "Namespace" or pod_grace:
                if meta.get("deletionTimestamp"):
                    return old, False
                new = copy.deepcopy(old)
                new["metadata"]["deletionTimestamp"] = now()
                if kind.kind == "Pod":
                    new["metadata"]["deletionGracePeriodSeconds"] = int(
                        grace if grace is not None else (old.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
                    )
                if kind.kind == "Namespace":
                    new.setdefault("status", {})["phase"] = "Terminating"
                if dry_run:
                    return new, False
                new["metadata"]["resourceVersion"] = str(self.store.next_rv())
                self.store.put(kind.key, new, "MODIFIED")
                return new, False
            if dry_run:
                return old, True
            gone = copy.deepcopy(old)
            gone["metadata"]["resourceVersion"] = str(self.store.next_rv())
            self.store.remove(kind.key, gone)
            self._removed(kind, gone)
            return gone, True

    def remove_now(self, kind: Kind, obj: Json) -> None:
        """Remove an object at once (a kubelet finishing a pod, a namespace emptied)."""
        with self.store.lock:
            current = self.find(kind, str(obj["metadata"].get("namespace") or ""), obj["metadata"]["name"])
            if current is None:
                return
            gone = copy.deepcopy(current)
            gone["metadata"]["resourceVersion"] = str(self.store.next_rv())
            self.store.remove(kind.key, gone)
            self._removed(kind, gone)

    # ------------------------------------------------------------ events

    def event(self, obj: Json, reason: str, message: str, type_: str = "Normal", component: str = "kubelet") -> None:
        """Record (or count again) an Event about obj in its namespace."""
        meta = obj.get("metadata") or {}
        ns = str(meta.get("namespace") or "default")
        kind = self.registry.by_gvk("v1", "Event")
        if kind is None or self.store.get("/namespaces", "", ns) is None:
            return
        with self.store.lock:
            for ev in self.store.list(kind.key, ns):
                inv = ev.get("involvedObject") or {}
                if inv.get("uid") == meta.get("uid") and ev.get("reason") == reason and ev.get("message") == message:
                    self.write(kind, {**ev, "count": int(ev.get("count") or 1) + 1, "lastTimestamp": now()}, component)
                    return
            stamp = now()
            self.create(
                kind,
                ns,
                {
                    "metadata": {"name": f"{meta.get('name')}.{secrets.token_hex(8)}", "namespace": ns},
                    "involvedObject": {
                        "kind": obj.get("kind"),
                        "namespace": meta.get("namespace"),
                        "name": meta.get("name"),
                        "uid": meta.get("uid"),
                        "apiVersion": obj.get("apiVersion"),
                        "resourceVersion": meta.get("resourceVersion"),
                    },
                    "reason": reason,
                    "message": message,
                    "type": type_,
                    "count": 1,
                    "firstTimestamp": stamp,
                    "lastTimestamp": stamp,
                    "source": {"component": component},
                    "reportingComponent": component,
                    "reportingInstance": "",
                },
                WriteOptions(component, False, "Ignore"),
            )


def _parse(raw: bytes, content_type: str) -> Any:
    try:
        return json.loads(raw or b"null")
    except ValueError:
        pass
    if content_type == "application/apply-patch+yaml":
        try:
            return yaml.load(raw, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        except yaml.YAMLError as e:
            raise KubeStatus(400, "BadRequest", f"error decoding YAML: {e}") from None
    raise KubeStatus(400, "BadRequest", "the body of the request was in an unknown format")
