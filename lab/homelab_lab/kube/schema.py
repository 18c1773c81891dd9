"""The Kubernetes 1.31 schemas: navigation for validation, merges and managed fields; OpenAPI v3 documents.

The definitions come from ``kubernetes-validate``'s strict 1.31 schema set (the same one the
tests validate against), normalised once: ``type: [T, "null"]`` becomes ``type: T`` and refs point
at ``#/components/schemas/NAME``. K3s's HelmChart and HelmChartConfig are added here; kinds of
stored CRDs are navigated through their ``openAPIV3Schema``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import threading
from functools import cache
from importlib import resources
from typing import Any

from homelab_lab.kube.resources import Kind

Json = dict[str, Any]
REF = "#/components/schemas/"
SCHEMA_SET = "kubernetes-json-schema/v1.31.0-local-strict/_definitions.json"
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
_lock = threading.Lock()

_HELM_SPEC: Json = {
    "type": "object",
    "properties": {
        "chart": {"type": "string"},
        "chartContent": {"type": "string"},
        "repo": {"type": "string"},
        "repoCA": {"type": "string"},
        "repoCAConfigMap": {"type": "object", "properties": {"name": {"type": "string"}}},
        "authSecret": {"type": "object", "properties": {"name": {"type": "string"}}},
        "authPassCredentials": {"type": "boolean"},
        "dockerRegistrySecret": {"type": "object", "properties": {"name": {"type": "string"}}},
        "insecureSkipTLSVerify": {"type": "boolean"},
        "plainHTTP": {"type": "boolean"},
        "targetNamespace": {"type": "string"},
        "createNamespace": {"type": "boolean"},
        "version": {"type": "string"},
        "helmVersion": {"type": "string"},
        "bootstrap": {"type": "boolean"},
        "backOffLimit": {"type": "integer", "format": "int32"},
        "timeout": {"type": "string"},
        "failurePolicy": {"type": "string"},
        "jobImage": {"type": "string"},
        "podSecurityContext": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "securityContext": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "set": {"type": "object", "additionalProperties": {"x-kubernetes-int-or-string": True}},
        "valuesContent": {"type": "string"},
        "valuesSecrets": {"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
    },
}
_HELM_STATUS: Json = {
    "type": "object",
    "properties": {
        "jobName": {"type": "string"},
        "conditions": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "type": {"type": "string"},
                    "status": {"type": "string"},
                    "reason": {"type": "string"},
                    "message": {"type": "string"},
                },
            },
        },
    },
}


def _kind_schema(description: str, spec: Json, status: Json | None) -> Json:
    props: Json = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"$ref": REF + OBJECT_META},
        "spec": spec,
    }
    if status is not None:
        props["status"] = status
    return {"description": description, "type": "object", "properties": props}


def _normalise(node: Any) -> Any:
    """type [T, null] -> T, $defs refs -> components refs, recursively."""
    if isinstance(node, list):
        return [_normalise(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "type" and isinstance(value, list):
            kinds = [t for t in value if t != "null"]
            value = kinds[0] if len(kinds) == 1 else kinds
        elif key == "$ref" and isinstance(value, str):
            value = REF + value.rsplit("/", 1)[-1]
        else:
            value = _normalise(value)
        out[key] = value
    return out


@cache
def definitions() -> dict[str, Json]:
    """Every definition by name (loaded and normalised once)."""
    raw = resources.files("kubernetes_validate").joinpath(SCHEMA_SET).read_text()
    defs: dict[str, Json] = _normalise(json.loads(raw)["$defs"])
    defs["io.k8s.apimachinery.pkg.util.intstr.IntOrString"] = {"type": "string", "format": "int-or-string"}
    defs["io.k8s.apimachinery.pkg.api.resource.Quantity"] = {"type": "string", "format": "quantity"}
    defs["io.cattle.helm.v1.HelmChart"] = _kind_schema(
        "A Helm chart K3s's helm-controller installs", _HELM_SPEC, _HELM_STATUS
    )
    cfg = {"type": "object", "properties": {k: _HELM_SPEC["properties"][k] for k in ("valuesContent", "failurePolicy")}}
    defs["io.cattle.helm.v1.HelmChartConfig"] = _kind_schema("Values for a packaged HelmChart", cfg, None)
    return defs


def resolve(node: Json | None) -> Json:
    """A schema node with its $ref (or single allOf ref) followed; {} for None."""
    seen = 0
    while node is not None and seen < 50:
        ref = node.get("$ref")
        if ref is None and len(node.get("allOf") or ()) == 1:
            ref = node["allOf"][0].get("$ref")
        if ref is None:
            return node
        node = definitions().get(str(ref).removeprefix(REF), {})
        seen += 1
    return node or {}


def kind_schema(kind: Kind) -> Json:
    """The root schema node of a kind (a CRD's openAPIV3Schema with metadata typed as ObjectMeta)."""
    if kind.crd is not None:
        root = dict(kind.crd)
        props = dict(root.get("properties") or {})
        props["metadata"] = {"$ref": REF + OBJECT_META}
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        root["properties"] = props
        return root
    return resolve({"$ref": REF + kind.schema})


def child(node: Json, key: str) -> Json | None:
    """The schema of field ``key`` of an object node; None when the field is not declared."""
    node = resolve(node)
    props = node.get("properties")
    if props and key in props:
        return resolve(props[key])
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        return resolve(extra)
    if extra is True or node.get("x-kubernetes-preserve-unknown-fields") or preserves(node):
        return {}
    return None


def preserves(node: Json) -> bool:
    """True when a node accepts anything below it (no declared shape)."""
    node = resolve(node)
    if node.get("x-kubernetes-preserve-unknown-fields"):
        return True
    return (
        "properties" not in node
        and "additionalProperties" not in node
        and "items" not in node
        and (node.get("type") in (None, "object"))
    )


def items(node: Json) -> Json:
    return resolve(resolve(node).get("items") or {})


def list_type(node: Json) -> str:
    """'map', 'set' or 'atomic', as structured merge sees a list."""
    node = resolve(node)
    kind = node.get("x-kubernetes-list-type")
    if kind in ("map", "set", "atomic"):
        return str(kind)
    if node.get("x-kubernetes-patch-merge-key"):
        return "map"
    return "atomic"


def map_keys(node: Json) -> list[str]:
    node = resolve(node)
    keys = node.get("x-kubernetes-list-map-keys")
    if keys:
        return [str(k) for k in keys]
    key = node.get("x-kubernetes-patch-merge-key")
    return [str(key)] if key else []


def patch_merge_key(node: Json) -> str | None:
    node = resolve(node)
    if "merge" not in str(node.get("x-kubernetes-patch-strategy") or ""):
        return None
    key = node.get("x-kubernetes-patch-merge-key")
    return str(key) if key else None


def patch_strategy(node: Json) -> str:
    return str(resolve(node).get("x-kubernetes-patch-strategy") or "")


def type_of(node: Json) -> str:
    node = resolve(node)
    t = node.get("type")
    if isinstance(t, str):
        return t
    if "properties" in node or "additionalProperties" in node:
        return "object"
    if "items" in node:
        return "array"
    return ""


# ---------------------------------------------------------------- OpenAPI v3


def _refs(node: Any, out: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(REF):
            name = ref.removeprefix(REF)
            if name not in out:
                out.add(name)
                _refs(definitions().get(name), out)
        for value in node.values():
            _refs(value, out)
    elif isinstance(node, list):
        for value in node:
            _refs(value, out)


def _gvk(kind: Kind) -> list[Json]:
    return [{"group": kind.group, "kind": kind.kind, "version": kind.version}]


def _param(name: str, schema_type: str = "string", description: str = "") -> Json:
    return {
        "name": name,
        "in": "query",
        "description": description,
        "schema": {"type": schema_type},
        "uniqueItems": True,
    }


_WRITE_PARAMS = [
    _param("dryRun", description="When present, indicates that modifications should not be persisted."),
    _param("fieldManager", description="a name associated with the actor or entity that is making these changes."),
    _param("fieldValidation", description="Ignore, Warn or Strict: how to treat unknown or duplicate fields."),
]
_JSON = {"application/json": {"schema": {"$ref": ""}}}


def _op(kind: Kind, action: str, ref: str, params: list[Json], body: bool) -> Json:
    content = {"application/json": {"schema": {"$ref": ref}}, "application/yaml": {"schema": {"$ref": ref}}}
    op: Json = {
        "tags": [kind.group or "core"],
        "operationId": f"{action}{kind.kind}",
        "parameters": params,
        "responses": {"200": {"description": "OK", "content": content}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": kind.group, "kind": kind.kind, "version": kind.version},
    }
    if body:
        op["requestBody"] = {"content": {"*/*": {"schema": {"$ref": ref}}}, "required": True}
    return op


def _kind_paths(kind: Kind, name: str) -> dict[str, Json]:
    base = f"/api/{kind.version}" if not kind.group else f"/apis/{kind.group}/{kind.version}"
    coll = f"{base}/namespaces/{{namespace}}/{kind.plural}" if kind.namespaced else f"{base}/{kind.plural}"
    ref = REF + name
    patch_params = [*_WRITE_PARAMS, _param("force", "boolean", "Force is going to force Apply requests.")]
    path_params = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
    if kind.namespaced:
        path_params.append({"name": "namespace", "in": "path", "required": True, "schema": {"type": "string"}})
    item: Json = {
        "get": _op(kind, "get", ref, [], False),
        "put": _op(kind, "put", ref, list(_WRITE_PARAMS), True),
        "patch": _op(kind, "patch", ref, patch_params, True),
        "delete": _op(kind, "delete", ref, [_param("dryRun")], False),
        "parameters": path_params,
    }
    item["patch"]["requestBody"] = {
        "content": {
            t: {"schema": {"type": "object"}}
            for t in (
                "application/apply-patch+yaml",
                "application/json-patch+json",
                "application/merge-patch+json",
                "application/strategic-merge-patch+json",
            )
        },
        "required": True,
    }
    collection: Json = {
        "get": _op(
            kind, "list", ref, [_param("labelSelector"), _param("fieldSelector"), _param("watch", "boolean")], False
        ),
        "post": _op(kind, "post", ref, list(_WRITE_PARAMS), True),
        "parameters": path_params[1:],
    }
    paths = {coll: collection, f"{coll}/{{name}}": item}
    if kind.status:
        status: Json = {
            m: _op(kind, a, ref, patch_params if m == "patch" else list(_WRITE_PARAMS), m != "get")
            for m, a in (("get", "get"), ("put", "put"), ("patch", "patch"))
        }
        status["parameters"] = path_params
        paths[f"{coll}/{{name}}/status"] = status
    return paths


class OpenAPI:
    """Builds and caches the /openapi/v3 index and one document per group-version."""

    def __init__(self) -> None:
        self._docs: dict[tuple[str, str], tuple[bytes, str]] = {}

    def clear(self) -> None:
        with _lock:
            self._docs.clear()

    def document(self, group: str, version: str, kinds: list[Kind]) -> tuple[bytes, str]:
        """(JSON body, hash) of one group-version's OpenAPI v3 document."""
        key = (group, version)
        with _lock:
            cached = self._docs.get(key)
        if cached is not None:
            return cached
        schemas: dict[str, Json] = {}
        paths: dict[str, Json] = {}
        for kind in kinds:
            name = kind.schema or f"{'.'.join(reversed(kind.group.split('.')))}.{kind.version}.{kind.kind}"
            root = copy.deepcopy(definitions().get(kind.schema)) if kind.schema else kind_schema(kind)
            root = root or {"type": "object"}
            root["x-kubernetes-group-version-kind"] = _gvk(kind)
            schemas[name] = root
            paths.update(_kind_paths(kind, name))
        names: set[str] = set()
        _refs(schemas, names)
        for extra in (
            "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
            "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
        ):
            names.add(extra)
            _refs(definitions().get(extra), names)
        for n in sorted(names):
            schemas.setdefault(n, definitions()[n])
        title = "Kubernetes"
        doc = {
            "openapi": "3.0.0",
            "info": {"title": title, "version": "v1.31.4+k3s1"},
            "paths": paths,
            "components": {"schemas": schemas},
        }
        body = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
        digest = hashlib.sha512(body).hexdigest()[:128].upper()
        with _lock:
            self._docs[key] = (body, digest)
        return body, digest


_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def name_problem(kind: Kind, name: str) -> str | None:
    """Why a name is invalid for a kind (Kubernetes' message), or None."""
    if kind.kind in ("Namespace", "Service"):
        if kind.kind == "Service":
            ok, rule = _DNS1035_LABEL.match(name), "RFC 1035 label"
            example = "'my-name',  or 'abc-123'"
            regex = "[a-z]([-a-z0-9]*[a-z0-9])?"
            first = "start with an alphabetic character"
        else:
            ok, rule = _DNS1123_LABEL.match(name), "RFC 1123 label"
            example = "'my-name',  or '123-abc'"
            regex = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
            first = "start with an alphanumeric character"
        if len(name) > 63:
            return "must be no more than 63 characters"
        if not ok:
            return (
                f"a lowercase {rule} must consist of lower case alphanumeric characters or '-', "
                f"{first}, and end with an alphanumeric character (e.g. {example}, regex used for validation "
                f"is '{regex}')"
            )
        return None
    if kind.kind in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
        return (
            None
            if name and "/" not in name and "%" not in name and name not in (".", "..")
            else ("may not contain '/' or '%'")
        )
    if len(name) > 253:
        return "must be no more than 253 characters"
    if not _DNS1123_SUBDOMAIN.match(name):
        return (
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and "
            "must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
            "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        )
    return None
