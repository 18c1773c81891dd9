"""Environment, secrets and configs: what is secret goes to a Secret, the rest to a ConfigMap.

``environment`` and ``env_file`` become ``<name>-env`` keys read by ``valueFrom``: a value named like
a secret (:data:`SECRET_KEY`), holding a credential (:data:`SECRET_VALUE`) or read from a secret-like
variable goes to the Secret, never to the ConfigMap. Compose ``secrets:`` become the Secret
``<name>-secrets`` and ``configs:`` the ConfigMap ``<name>-configs``, each mounted as files at the
paths Compose gives them. :func:`env_objects` makes those four objects.
"""

from __future__ import annotations

import base64
import re
from typing import Any

from homelab_lib.convert.model import Build, handles, key_path, pair_list
from homelab_lib.convert.report import ReportLine, Status
from homelab_lib.convert.source import read_env_file
from homelab_lib.convert.units import dns_label
from homelab_lib.core.errors import ConvertError, Problem
from homelab_lib.kube.objects import KubeObject

SECRET_KEY = re.compile(
    r"(pass(word|wd)?|secret|token|(^|_)keys?($|_)|api_?key|private_?key|credential|auth|salt|cookie|dsn|claim)", re.I
)
SECRET_VALUE = re.compile(
    r"(://[^/\s:@]+:[^/\s@]+@|-----BEGIN [A-Z ]*PRIVATE KEY|(pass(word|wd)?|secret|token)['\"\]]*\s*(=|:|=>)\s*\S)",
    re.I,
)


def _is_secret(key: str, value: str, raw: Any) -> str:
    """Why an environment value is a secret ('' when it is not)."""
    if key.endswith("_FILE") and value.startswith("/"):
        return ""
    if SECRET_KEY.search(key):
        return "named like a secret"
    if SECRET_VALUE.search(value):
        return "its value holds a credential"
    if isinstance(raw, str):
        for name in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", raw):
            if SECRET_KEY.search(name):
                return f"its value comes from the secret-like variable {name}"
    return ""


@handles("environment", "env_file")
def _env(b: Build, _value: Any) -> None:
    values: dict[str, tuple[str, str, Any]] = {}  # name -> (value, key path, raw)
    files = b.svc.get("env_file")
    if files is not None:
        entries = files if isinstance(files, list) else [files]
        for i, entry in enumerate(entries):
            path = str(entry["path"] if isinstance(entry, dict) else entry)
            required = not isinstance(entry, dict) or entry.get("required", True)
            key = f"env_file[{i}]" if isinstance(files, list) else "env_file"
            file = (b.ctx.compose.base_dir / path).expanduser()
            if not file.is_file():
                if required:
                    raise ConvertError(
                        [
                            Problem(
                                b.ctx.compose.shown,
                                b.ctx.compose.line(("services", b.name, *key_path(key))),
                                f"services.{b.name}.{key}",
                                f"env_file {path} does not exist next to the compose file ({file})",
                            )
                        ]
                    )
                b.note(key, "mapped", f"{path} is optional and missing: nothing to read")
                continue
            for k, v in read_env_file(file).items():
                values[k] = (v, key, None)
            b.note(key, "mapped", f"{path}: its variables go to the ConfigMap/Secret {b.k8s}-env like environment:")
    env = b.svc.get("environment")
    raw_env = b.ctx.compose.raw_value(("services", b.name, "environment"))
    raw_pairs = dict(pair_list(raw_env)) if raw_env is not None else {}
    for k, given in pair_list(env):
        value = given if given is not None else b.ctx.variables.get(k)
        if value is None:
            b.note(f"environment.{k}", "not mapped", f"{k} takes its value from the shell, which has none here")
            continue
        values[k] = (value, f"environment.{k}", raw_pairs.get(k))
    for k, (v, where, raw) in values.items():
        if not re.fullmatch(r"[-._a-zA-Z0-9]+", k):
            b.note(where, "not mapped", f"{k!r} is not a valid ConfigMap/Secret key")
            continue
        why = _is_secret(k, v, raw)
        if why:
            b.secret_data[k] = v
            ref = {"secretKeyRef": {"name": f"{b.k8s}-env", "key": k}}
            b.report.append(ReportLine(b.name, where, "mapped", f"Secret {b.k8s}-env key {k} ({why})", _line(b, where)))
        else:
            b.config_data[k] = v
            ref = {"configMapKeyRef": {"name": f"{b.k8s}-env", "key": k}}
            b.report.append(ReportLine(b.name, where, "mapped", f"ConfigMap {b.k8s}-env key {k}", _line(b, where)))
        b.env.append({"name": k, "valueFrom": ref})


def _line(b: Build, key: str) -> int:
    loc = key_path(key)
    if loc and loc[0] == "environment" and isinstance(b.svc.get("environment"), list):
        names = [p[0] for p in pair_list(b.svc["environment"])]
        if len(loc) > 1 and loc[1] in names:
            loc = ["environment", names.index(str(loc[1]))]
    return b.ctx.compose.line(("services", b.name, *loc))


def _file_source(b: Build, section: str, name: str) -> tuple[str | None, str]:
    """The content of a top-level secret or config, and where it came from (None: not readable here)."""
    spec = (b.ctx.compose.document.get(section) or {}).get(name) or {}
    if section == "secrets" and name in b.ctx.secret_values:
        return b.ctx.secret_values[name], "its reference"
    if "content" in spec:
        return str(spec["content"]), "inline content"
    if "environment" in spec:
        var = str(spec["environment"])
        if var in b.ctx.variables:
            return b.ctx.variables[var], f"variable {var}"
        return None, f"variable {var} is not set here"
    if "file" in spec:
        path = (b.ctx.compose.base_dir / str(spec["file"])).expanduser()
        try:
            return path.read_text(), f"file {spec['file']}"
        except (OSError, UnicodeDecodeError) as e:
            return None, f"file {spec['file']} cannot be read here ({getattr(e, 'strerror', None) or e})"
    if spec.get("external"):
        return None, "it is external (made outside Compose)"
    return None, "it has no file, content or environment"


@handles("secrets", "configs")
def _files(b: Build, _value: Any) -> None:
    for section, store, kind in (("secrets", b.file_secrets, "Secret"), ("configs", b.file_configs, "ConfigMap")):
        entries = b.svc.get(section) or []
        for i, entry in enumerate(entries):
            source = str(entry["source"] if isinstance(entry, dict) else entry)
            target = str(entry.get("target") or "") if isinstance(entry, dict) else ""
            if section == "secrets":
                path = target if target.startswith("/") else f"/run/secrets/{target or source}"
            else:
                path = target or f"/{source}"
            content, origin = _file_source(b, section, source)
            key = f"{section}[{i}]"
            obj = f"{b.k8s}-{section}"
            if content is None:
                b.note(
                    key,
                    "not mapped",
                    f"{section[:-1]} {source}: {origin}; create {kind} {obj} with key {dns_label(source)} "
                    f"yourself, then mount it at {path}",
                )
                continue
            data_key = re.sub(r"[^-._a-zA-Z0-9]", "-", source)
            store[data_key] = content
            vol = f"compose-{section}"
            mount: dict[str, Any] = {"name": vol, "mountPath": path, "subPath": data_key, "readOnly": True}
            b.mounts.append(mount)
            mode = entry.get("mode") if isinstance(entry, dict) else None
            extra = ""
            if isinstance(entry, dict) and (entry.get("uid") or entry.get("gid")):
                extra = "; uid/gid are not mapped (the file belongs to root, readable by the pod's fsGroup)"
            if mode is not None:
                b.annotations[f"homelab.io/{section}-mode-{data_key}"[:63]] = str(mode)
            status: Status = "approximated" if extra else "mapped"
            b.note(key, status, f"{kind} {obj} key {data_key} ({origin}), mounted as a file at {path}{extra}")
    for section, store, kind in (("secrets", b.file_secrets, "Secret"), ("configs", b.file_configs, "ConfigMap")):
        if not store:
            continue
        vol = f"compose-{section}"
        if kind == "Secret":
            b.pod_volumes.append({"name": vol, "secret": {"secretName": f"{b.k8s}-secrets"}})
        else:
            b.pod_volumes.append({"name": vol, "configMap": {"name": f"{b.k8s}-configs"}})


def env_objects(b: Build) -> list[KubeObject]:
    """The Secrets and ConfigMaps of the environment (``<name>-env``) and of the files (``-secrets``, ``-configs``)."""
    objects: list[KubeObject] = []
    for kind, name, data, secret in (
        ("Secret", f"{b.k8s}-env", b.secret_data, True),
        ("ConfigMap", f"{b.k8s}-env", b.config_data, False),
        ("Secret", f"{b.k8s}-secrets", b.file_secrets, True),
        ("ConfigMap", f"{b.k8s}-configs", b.file_configs, False),
    ):
        if not data:
            continue
        obj: KubeObject = {"apiVersion": "v1", "kind": kind, "metadata": b.meta(name)}
        if secret:
            obj["type"] = "Opaque"
            obj["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in sorted(data.items())}
        else:
            obj["data"] = dict(sorted(data.items()))
        objects.append(obj)
    return objects


__all__ = ["SECRET_KEY", "SECRET_VALUE", "env_objects"]
