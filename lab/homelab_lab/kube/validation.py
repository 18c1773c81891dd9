"""What the apiserver checks before a write: decoding (types, unknown fields) and validation.

Decoding problems answer 400 BadRequest (``strict decoding error: unknown field "spec.x"`` under
``fieldValidation=Strict``); validation problems answer 422 Invalid with one cause per field,
worded as Kubernetes words them.
"""

from __future__ import annotations

import datetime
import json
import re
from typing import Any

from homelab_lab.errors import KubeStatus
from homelab_lab.kube import schema
from homelab_lab.kube.resources import Kind
from homelab_lab.kube.schema import Json

_PY: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "object": dict,
    "array": list,
}


def _go_type(node: Json) -> str:
    t = schema.type_of(node)
    fmt = schema.resolve(node).get("format")
    return {
        "integer": str(fmt or "int64"),
        "number": "float64",
        "boolean": "bool",
        "string": "string",
        "array": "[]interface {}",
        "object": "map[string]interface {}",
    }.get(t, "interface {}")


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


TIME = "io.k8s.apimachinery.pkg.apis.meta.v1.Time"
MICRO_TIME = "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime"
RFC3339 = "2006-01-02T15:04:05Z07:00"  # metav1.Time decodes with Go's time.RFC3339 (a fraction is allowed)
RFC3339_MICRO = "2006-01-02T15:04:05.000000Z07:00"  # metav1.MicroTime: exactly six fraction digits
_ELEMENTS = (
    ("2006", r"\d{4}"), ("-", "-"), ("01", r"\d{2}"), ("-", "-"), ("02", r"\d{2}"), ("T", "T"),
    ("15", r"\d{2}"), (":", ":"), ("04", r"\d{2}"), (":", ":"), ("05", r"\d{2}"),
)  # fmt: skip
_ZONE = re.compile(r"Z|[+-]\d{2}:\d{2}")


def _time_ref(node: Json | None) -> str:
    """TIME or MICRO_TIME when node is (a $ref to) metav1.Time or metav1.MicroTime, else ''."""
    seen = 0
    defs = schema.definitions()
    while node is not None and seen < 50:
        for name in (TIME, MICRO_TIME):
            if node is defs.get(name) or node == defs.get(name):
                return name
        ref = node.get("$ref")
        if ref is None and len(node.get("allOf") or ()) == 1:
            ref = node["allOf"][0].get("$ref")
        if ref is None:
            return ""
        name = str(ref).removeprefix(schema.REF)
        if name in (TIME, MICRO_TIME):
            return name
        node = defs.get(name)
        seen += 1
    return ""


def parse_time(value: str, micro: bool) -> tuple[datetime.datetime | None, str]:
    """(the time, '') as the apiserver decodes a Time or MicroTime, or (None, Go's parse error)."""
    layout = RFC3339_MICRO if micro else RFC3339
    rest = value
    parts: list[str] = []

    def bad(elem: str) -> tuple[None, str]:
        return None, f'parsing time "{value}" as "{layout}": cannot parse "{rest}" as "{elem}"'

    for elem, pattern in _ELEMENTS:
        m = re.match(pattern, rest)
        if m is None:
            return bad(elem)
        parts.append(m.group(0))
        rest = rest[m.end() :]
    frac = re.match(r"[.,](\d+)", rest)
    if micro and (frac is None or len(frac.group(1)) < 6):
        return bad(".000000")
    digits = ""
    if frac is not None:
        digits = frac.group(1)[:6] if micro else frac.group(1)
        rest = rest[(1 + len(digits)) if micro else frac.end() :]
    zone = _ZONE.match(rest)
    if zone is None:
        return bad("Z07:00")
    rest = rest[zone.end() :]
    if rest:
        return None, f'parsing time "{value}": extra text: "{rest}"'
    year, _, month, _, day, _, hour, _, minute, _, second = parts
    for name, number, top in (("month", month, 12), ("day", day, 31), ("hour", hour, 23), ("minute", minute, 59),
                              ("second", second, 59)):  # fmt: skip
        if not (1 if name in ("month", "day") else 0) <= int(number) <= top:
            return None, f'parsing time "{value}": {name} out of range'
    offset = datetime.timedelta()
    if zone.group(0) != "Z":
        sign = 1 if zone.group(0)[0] == "+" else -1
        offset = sign * datetime.timedelta(hours=int(zone.group(0)[1:3]), minutes=int(zone.group(0)[4:6]))
    try:
        when = datetime.datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second),
            int((digits + "000000")[:6]), tzinfo=datetime.timezone(offset),
        )  # fmt: skip
    except ValueError:
        return None, f'parsing time "{value}": day out of range'
    return when, ""


def format_time(when: datetime.datetime, micro: bool) -> str:
    """A time as the apiserver encodes it: UTC; Time to the second, MicroTime to the microsecond."""
    utc = when.astimezone(datetime.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


def normalise_times(value: Any, node: Json) -> Any:
    """value with every Time and MicroTime re-encoded as the apiserver stores them (UTC; seconds or micros).

    Times that do not decode are left as they are (:func:`decode` has refused them already).
    """
    ref = _time_ref(node)
    if ref and isinstance(value, str):
        when, _ = parse_time(value, ref == MICRO_TIME)
        return format_time(when, ref == MICRO_TIME) if when is not None else value
    node = schema.resolve(node)
    if isinstance(value, dict) and not (schema.preserves(node) and not node.get("properties")):
        out = {}
        for key, sub in value.items():
            child = schema.child(node, key)
            out[key] = normalise_times(sub, child) if child is not None else sub
        return out
    if isinstance(value, list) and "items" in node:
        elem = schema.items(node)
        return [normalise_times(x, elem) for x in value]
    return value


def decode_problems(value: Any, node: Json, path: str, unknown: list[str], types: list[str]) -> None:
    """Collect unknown fields (as dotted paths) and type mismatches below value."""
    ref = _time_ref(node)
    if ref and isinstance(value, str):
        _, problem = parse_time(value, ref == MICRO_TIME)
        if problem:
            types.append(problem)
        return
    node = schema.resolve(node)
    if value is None or (schema.preserves(node) and not node.get("properties")):
        return
    fmt = node.get("format")
    if fmt == "int-or-string" or node.get("x-kubernetes-int-or-string"):
        if not isinstance(value, int | str) or isinstance(value, bool):
            types.append(f"{path}: expected int or string, got {_json_type(value)}")
        return
    if fmt == "quantity":
        if not isinstance(value, int | float | str) or isinstance(value, bool):
            types.append(f"{path}: quantities must match the regular expression")
        return
    t = schema.type_of(node)
    expected = _PY.get(t)
    wrong = expected is not None and (not isinstance(value, expected) or (t != "boolean" and isinstance(value, bool)))
    if wrong and not (t == "integer" and isinstance(value, float) and value.is_integer()):
        types.append(f"json: cannot unmarshal {_json_type(value)} into Go struct field {path} of type {_go_type(node)}")
        return
    if isinstance(value, dict):
        for key, sub in value.items():
            child = schema.child(node, key)
            where = f"{path}.{key}" if path else key
            if child is None:
                unknown.append(where)
            else:
                decode_problems(sub, child, where, unknown, types)
    elif isinstance(value, list):
        elem = schema.items(node)
        for i, sub in enumerate(value):
            decode_problems(sub, elem, f"{path}[{i}]", unknown, types)


def decode(kind: Kind, obj: Json, validation: str) -> list[str]:
    """Check obj decodes as kind; returns warnings (fieldValidation=Warn), raises 400 when it must."""
    unknown: list[str] = []
    types: list[str] = []
    decode_problems(obj, schema.kind_schema(kind), "", unknown, types)
    what = f'{kind.kind} in version "{kind.version}" cannot be handled as a {kind.kind}'
    if types:
        raise KubeStatus(400, "BadRequest", f"{what}: {types[0]}")
    if unknown and validation == "Strict":
        listed = ", ".join(f'unknown field "{u}"' for u in unknown)
        raise KubeStatus(400, "BadRequest", f"{what}: strict decoding error: {listed}")
    if unknown and validation == "Warn":
        return [f'unknown field "{u}"' for u in unknown]
    return []


def strip_unknown(value: Any, node: Json) -> Any:
    """value without undeclared fields (fieldValidation Ignore/Warn drops them, as decoding does)."""
    node = schema.resolve(node)
    if isinstance(value, dict) and not schema.preserves(node):
        out = {}
        for key, sub in value.items():
            child = schema.child(node, key)
            if child is not None:
                out[key] = strip_unknown(sub, child)
        return out
    if isinstance(value, list) and "items" in node:
        elem = schema.items(node)
        return [strip_unknown(x, elem) for x in value]
    return value


class Problems:
    """Field errors gathered for one 422 Invalid answer."""

    def __init__(self) -> None:
        self.causes: list[Json] = []

    def required(self, field: str, detail: str = "") -> None:
        msg = "Required value" + (f": {detail}" if detail else "")
        self.causes.append({"reason": "FieldValueRequired", "message": msg, "field": field})

    def invalid(self, field: str, value: Any, detail: str) -> None:
        shown = json.dumps(value) if not isinstance(value, dict) else _go_map(value)
        self.causes.append(
            {"reason": "FieldValueInvalid", "message": f"Invalid value: {shown}: {detail}", "field": field}
        )

    def unsupported(self, field: str, value: Any, allowed: list[str]) -> None:
        options = ", ".join(json.dumps(a) for a in allowed)
        self.causes.append(
            {
                "reason": "FieldValueNotSupported",
                "message": f"Unsupported value: {json.dumps(value)}: supported values: {options}",
                "field": field,
            }
        )

    def forbidden(self, field: str, detail: str) -> None:
        self.causes.append({"reason": "FieldValueForbidden", "message": f"Forbidden: {detail}", "field": field})

    def raise_if_any(self, kind: Kind, name: str) -> None:
        if not self.causes:
            return
        listed = ", ".join(f"{c['field']}: {c['message']}" for c in self.causes)
        if len(self.causes) > 1:
            listed = f"[{listed}]"
        what = f"{kind.kind}.{kind.group}" if kind.group else kind.kind
        details: dict[str, object] = {"name": name, "group": kind.group, "kind": kind.kind, "causes": self.causes}
        raise KubeStatus(422, "Invalid", f'{what} "{name}" is invalid: {listed}', details)


def _go_map(value: Json) -> str:
    inner = ", ".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in sorted(value.items()))
    return f"map[string]string{{{inner}}}"


def _required_fields(value: Any, node: Json, path: str, problems: Problems) -> None:
    node = schema.resolve(node)
    if isinstance(value, dict):
        for req in node.get("required") or ():
            if value.get(req) in (None, "") and req not in ("apiVersion", "kind", "metadata"):
                problems.required(f"{path}.{req}" if path else req)
        for key, sub in value.items():
            child = schema.child(node, key)
            if child is not None and key not in ("metadata", "status"):
                _required_fields(sub, child, f"{path}.{key}" if path else key, problems)
    elif isinstance(value, list) and "items" in node:
        elem = schema.items(node)
        for i, sub in enumerate(value):
            _required_fields(sub, elem, f"{path}[{i}]", problems)


def _selector_matches(selector: Json, labels: Json) -> bool:
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _pod_spec(
    spec: Json, path: str, problems: Problems, restart: list[str] | None = None, claims: tuple[str, ...] = ()
) -> None:
    containers = spec.get("containers")
    if not containers:
        problems.required(f"{path}.containers")
    names: set[str] = set()
    for group in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(group) or []):
            where = f"{path}.{group}[{i}]"
            name = str(c.get("name") or "")
            if not name:
                problems.required(f"{where}.name")
            elif schema.name_problem(_LABEL_KIND, name):
                problems.invalid(f"{where}.name", name, str(schema.name_problem(_LABEL_KIND, name)))
            elif name in names:
                problems.causes.append(
                    {
                        "reason": "FieldValueDuplicate",
                        "message": f"Duplicate value: {json.dumps(name)}",
                        "field": f"{where}.name",
                    }
                )
            names.add(name)
            if not c.get("image"):
                problems.required(f"{where}.image")
    if restart is not None and spec.get("restartPolicy") not in restart:
        problems.unsupported(f"{path}.restartPolicy", spec.get("restartPolicy"), restart)
    vols = [str(v.get("name")) for v in spec.get("volumes") or []] + list(claims)
    for group in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(group) or []):
            for j, m in enumerate(c.get("volumeMounts") or []):
                if m.get("name") not in vols:
                    problems.causes.append(
                        {
                            "reason": "FieldValueNotFound",
                            "message": f"Not found: {json.dumps(m.get('name'))}",
                            "field": f"{path}.{group}[{i}].volumeMounts[{j}].name",
                        }
                    )


_LABEL_KIND = Kind("", "v1", "Namespace", "namespaces", False)


def validate(kind: Kind, obj: Json, old: Json | None) -> None:
    """422 Invalid when obj breaks Kubernetes' validation for its kind (old: the object it replaces)."""
    problems = Problems()
    meta = obj.get("metadata") or {}
    name = str(meta.get("name") or "")
    if not name:
        problems.required("metadata.name", "name or generateName is required")
    elif (why := schema.name_problem(kind, name)) is not None:
        problems.invalid("metadata.name", name, why)
    _required_fields(obj, schema.kind_schema(kind), "", problems)
    spec = obj.get("spec") or {}
    if kind.kind in ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet"):
        selector = spec.get("selector") or {}
        labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        if selector and not _selector_matches(selector, labels):
            problems.invalid("spec.template.metadata.labels", labels, "`selector` does not match template `labels`")
        if selector and not (selector.get("matchLabels") or selector.get("matchExpressions")):
            problems.invalid("spec.selector", selector, "empty selector is invalid for deployment")
        claims = tuple(str((t.get("metadata") or {}).get("name")) for t in spec.get("volumeClaimTemplates") or [])
        _pod_spec((spec.get("template") or {}).get("spec") or {}, "spec.template.spec", problems, ["Always"], claims)
        if old is not None and (old.get("spec") or {}).get("selector") != spec.get("selector"):
            problems.invalid("spec.selector", selector, "field is immutable")
    elif kind.kind == "Job":
        _pod_spec(
            (spec.get("template") or {}).get("spec") or {}, "spec.template.spec", problems, ["OnFailure", "Never"]
        )
    elif kind.kind == "CronJob":
        job = ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}
        _pod_spec(job.get("spec") or {}, "spec.jobTemplate.spec.template.spec", problems, ["OnFailure", "Never"])
    elif kind.kind == "Pod":
        _pod_spec(spec, "spec", problems, ["Always", "OnFailure", "Never"])
    elif kind.kind == "Service":
        for i, p in enumerate(spec.get("ports") or []):
            if not p.get("port"):
                problems.required(f"spec.ports[{i}].port")
        if old is not None:
            before = (old.get("spec") or {}).get("clusterIP")
            if spec.get("clusterIP") not in (None, "", before):
                problems.invalid("spec.clusterIP", spec.get("clusterIP"), "field is immutable")
    elif kind.kind == "PersistentVolumeClaim":
        if not spec.get("accessModes"):
            problems.required("spec.accessModes")
        if not ((spec.get("resources") or {}).get("requests") or {}).get("storage"):
            problems.required("spec.resources[storage]")
    problems.raise_if_any(kind, name)
