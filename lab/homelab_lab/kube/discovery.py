"""The non-resource documents: /version, /api, /apis, group-version resource lists, the OpenAPI v3 index."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from homelab_lab.kube.resources import VERBS, Kind, Registry
from homelab_lab.kube.schema import Json

# Known K3s releases: version -> (commit, go version, build date).
RELEASES = {
    "v1.31.4+k3s1": ("a562d090b2a2a2e4b7f3f1d5d2d5ad1c5f6e7d28", "go1.22.9", "2024-12-13T21:12:14Z"),
    "v1.31.5+k3s1": ("56ec5dd4f3d1ab1e0a6a7e3c2b1d0f9e8a7b6c5d", "go1.22.10", "2025-01-23T20:31:29Z"),
    "v1.30.8+k3s1": ("4a8c3d86e3b5b7e0b5c4a6b7c8d9e0f1a2b3c4d5", "go1.22.9", "2024-12-13T21:11:45Z"),
    "v1.32.1+k3s1": ("6a322f122f2a7b5a2fb1d9e3c4b5a6d7e8f9a0b1", "go1.23.4", "2025-01-23T21:02:11Z"),
}


@dataclass(frozen=True)
class Version:
    """A K3s release as ``/version`` and ``k3s --version`` report it."""

    git_version: str

    def _release(self) -> tuple[str, str, str]:
        known = RELEASES.get(self.git_version)
        if known is not None:
            return known
        commit = hashlib.sha1(self.git_version.encode()).hexdigest()
        return commit, "go1.22.9", "2024-12-13T21:12:14Z"

    @property
    def major(self) -> str:
        return self.git_version.lstrip("v").split(".")[0]

    @property
    def minor(self) -> str:
        parts = self.git_version.lstrip("v").split(".")
        return parts[1] if len(parts) > 1 else "0"

    @property
    def commit(self) -> str:
        return self._release()[0]

    @property
    def go(self) -> str:
        return self._release()[1]

    def document(self) -> Json:
        commit, go, built = self._release()
        return {
            "major": self.major,
            "minor": self.minor,
            "gitVersion": self.git_version,
            "gitCommit": commit,
            "gitTreeState": "clean",
            "buildDate": built,
            "goVersion": go,
            "compiler": "gc",
            "platform": "linux/amd64",
        }

    def cli(self) -> str:
        """What ``k3s --version`` prints."""
        return f"k3s version {self.git_version} ({self.commit[:8]})\ngo version {self.go}\n"


def _hash(kind: Kind) -> str:
    return base64.b64encode(hashlib.sha256(f"{kind.api_version}/{kind.kind}".encode()).digest()[:8]).decode()


def api_versions(address: str) -> Json:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
    }


def _group(name: str, versions: list[str]) -> Json:
    gvs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": gvs, "preferredVersion": gvs[0]}


def api_groups(registry: Registry) -> Json:
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_group(g, vs) for g, vs in registry.groups()]}


def api_group(registry: Registry, name: str) -> Json | None:
    for g, vs in registry.groups():
        if g == name:
            return {"kind": "APIGroup", "apiVersion": "v1", **_group(g, vs)}
    return None


def resource_list(registry: Registry, group: str, version: str) -> Json | None:
    kinds = registry.in_group_version(group, version)
    if not kinds:
        return None
    resources: list[Json] = []
    for k in kinds:
        entry: Json = {
            "name": k.plural,
            "singularName": k.singular,
            "namespaced": k.namespaced,
            "kind": k.kind,
            "verbs": list(VERBS),
            "storageVersionHash": _hash(k),
        }
        if k.short:
            entry["shortNames"] = list(k.short)
        if k.categories:
            entry["categories"] = list(k.categories)
        resources.append(entry)
        if k.status:
            resources.append(
                {
                    "name": f"{k.plural}/status",
                    "singularName": "",
                    "namespaced": k.namespaced,
                    "kind": k.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
        if k.scale:
            resources.append(
                {
                    "name": f"{k.plural}/scale",
                    "singularName": "",
                    "namespaced": k.namespaced,
                    "group": "autoscaling",
                    "version": "v1",
                    "kind": "Scale",
                    "verbs": ["get", "patch", "update"],
                }
            )
        if k.kind == "Pod":
            resources.append(
                {"name": "pods/log", "singularName": "", "namespaced": True, "kind": "Pod", "verbs": ["get"]}
            )
        if k.kind == "ServiceAccount":
            resources.append(
                {
                    "name": "serviceaccounts/token",
                    "singularName": "",
                    "namespaced": True,
                    "group": "authentication.k8s.io",
                    "version": "v1",
                    "kind": "TokenRequest",
                    "verbs": ["create"],
                }
            )
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}


def openapi_index(registry: Registry, hashes: dict[str, str]) -> Json:
    paths: Json = {}
    groups = [("", ["v1"]), *registry.groups()]
    for g, vs in groups:
        for v in vs:
            key = f"apis/{g}/{v}" if g else f"api/{v}"
            h = hashes.get(key, "0")
            paths[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={h}"}
    return {"paths": paths}
