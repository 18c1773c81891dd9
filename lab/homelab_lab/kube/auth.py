"""Who is calling, and may they: client certificates, bearer tokens, RBAC.

- Client certificates signed by the client CA: the user is the subject's CN, the groups its Os
  (the kubeconfig's ``system:admin`` is in ``system:masters``).
- Static bearer tokens from ``<data-dir>/server/cred/passwd`` (``token,user,uid,group1;group2``).
- ServiceAccount tokens from the TokenRequest API (``serviceaccounts/<name>/token``): signed JWTs,
  valid while the ServiceAccount exists and until they expire.

``system:masters`` may do anything; everyone else is judged by the stored Roles, ClusterRoles and
their bindings. Discovery, ``/version`` and the health endpoints are open to every authenticated user.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from homelab_lab.errors import KubeStatus
from homelab_lab.kube.cluster import Cluster
from homelab_lab.kube.schema import Json

MASTERS = "system:masters"


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...]
    uid: str = ""

    @property
    def is_admin(self) -> bool:
        return MASTERS in self.groups


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Authenticator:
    """Tokens (static and ServiceAccount) and client certificates to users."""

    def __init__(self, passwd: Path, signing_key: bytes, issuer: str = "https://kubernetes.default.svc.cluster.local"):
        self.passwd = passwd
        self.key = signing_key
        self.issuer = issuer
        self._static: dict[str, User] = {}
        self._mtime = -1.0

    def _load(self) -> None:
        try:
            mtime = self.passwd.stat().st_mtime
        except OSError:
            self._static = {}
            return
        if mtime == self._mtime:
            return
        users = {}
        for line in self.passwd.read_text().splitlines():
            parts = line.strip().split(",")
            if len(parts) >= 3 and parts[0]:
                groups = tuple(g for g in (parts[3].split(";") if len(parts) > 3 else []) if g)
                users[parts[0]] = User(parts[1], (*groups, "system:authenticated"), parts[2])
        self._static, self._mtime = users, mtime

    def issue(self, namespace: str, sa: Json, seconds: int, audiences: list[str]) -> tuple[str, int]:
        """A signed token for a ServiceAccount; (token, expiry unix time)."""
        exp = int(time.time()) + seconds
        claims = {
            "iss": self.issuer,
            "aud": audiences,
            "exp": exp,
            "iat": int(time.time()),
            "sub": f"system:serviceaccount:{namespace}:{sa['metadata']['name']}",
            "kubernetes.io": {
                "namespace": namespace,
                "serviceaccount": {"name": sa["metadata"]["name"], "uid": sa["metadata"]["uid"]},
            },
        }
        head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = _b64(json.dumps(claims, separators=(",", ":")).encode())
        sig = _b64(hmac.new(self.key, f"{head}.{body}".encode(), hashlib.sha256).digest())
        return f"{head}.{body}.{sig}", exp

    def from_token(self, token: str, cluster: Cluster) -> User | None:
        self._load()
        if token in self._static:
            return self._static[token]
        parts = token.split(".")
        if len(parts) != 3:
            return None
        expected = _b64(hmac.new(self.key, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(expected, parts[2]):
            return None
        try:
            claims: dict[str, Any] = json.loads(_unb64(parts[1]))
        except ValueError:
            return None
        if int(claims.get("exp", 0)) < time.time():
            return None
        info = claims.get("kubernetes.io") or {}
        ns, sa = str(info.get("namespace", "")), info.get("serviceaccount") or {}
        kind = cluster.registry.by_gvk("v1", "ServiceAccount")
        live = cluster.find(kind, ns, str(sa.get("name"))) if kind else None
        if live is None or live["metadata"].get("uid") != sa.get("uid"):
            return None
        groups = ("system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated")
        return User(str(claims.get("sub")), groups, str(sa.get("uid")))

    @staticmethod
    def from_cert(subject: tuple[tuple[tuple[str, str], ...], ...]) -> User | None:
        cn, orgs = "", []
        for rdn in subject:
            for key, value in rdn:
                if key == "commonName":
                    cn = value
                elif key == "organizationName":
                    orgs.append(value)
        return User(cn, (*orgs, "system:authenticated")) if cn else None


def _rule_allows(rule: Json, verb: str, group: str, resource: str, sub: str, name: str) -> bool:
    if not ({verb, "*"} & set(rule.get("verbs") or [])):
        return False
    if not ({group, "*"} & set(rule.get("apiGroups") or [])):
        return False
    wanted = {f"{resource}/{sub}" if sub else resource, "*", f"*/{sub}" if sub else "*"}
    if not (wanted & set(rule.get("resources") or [])):
        return False
    names = rule.get("resourceNames") or []
    return not names or name in names


def _subject_is(subject: Json, user: User, namespace: str) -> bool:
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "User":
        return bool(name == user.name)
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        return user.name == f"system:serviceaccount:{subject.get('namespace') or namespace}:{name}"
    return False


def allowed(
    cluster: Cluster, user: User, verb: str, group: str, resource: str, namespace: str, name: str, sub: str = ""
) -> bool:
    """RBAC: may user do verb on group/resource[/sub] (name) in namespace?"""
    if user.is_admin:
        return True
    reg = cluster.registry
    kinds = {
        k: reg.by_gvk("rbac.authorization.k8s.io/v1", k)
        for k in ("ClusterRoleBinding", "ClusterRole", "RoleBinding", "Role")
    }
    if any(v is None for v in kinds.values()):
        return False

    def rules(ref: Json, ns: str) -> list[Json]:
        role_kind = kinds["Role"] if ref.get("kind") == "Role" else kinds["ClusterRole"]
        assert role_kind is not None
        role = cluster.find(role_kind, ns, str(ref.get("name")))
        return list((role or {}).get("rules") or [])

    crb_kind, rb_kind = kinds["ClusterRoleBinding"], kinds["RoleBinding"]
    assert crb_kind is not None
    assert rb_kind is not None
    bindings = [(b, "") for b in cluster.list(crb_kind)[0]]
    if namespace:
        bindings += [(b, namespace) for b in cluster.list(rb_kind, namespace)[0]]
    for binding, ns in bindings:
        if not any(_subject_is(s, user, ns) for s in binding.get("subjects") or []):
            continue
        if any(_rule_allows(r, verb, group, resource, sub, name) for r in rules(binding.get("roleRef") or {}, ns)):
            return True
    return False


def allowed_path(cluster: Cluster, user: User, verb: str, path: str) -> bool:
    """RBAC for a non-resource URL (``/metrics``): a ClusterRole rule's ``nonResourceURLs``."""
    if user.is_admin:
        return True
    crb, cr = (
        cluster.registry.by_gvk("rbac.authorization.k8s.io/v1", k) for k in ("ClusterRoleBinding", "ClusterRole")
    )
    if crb is None or cr is None:
        return False
    for binding in cluster.list(crb)[0]:
        if not any(_subject_is(s, user, "") for s in binding.get("subjects") or []):
            continue
        ref = binding.get("roleRef") or {}
        role = cluster.find(cr, "", str(ref.get("name"))) if ref.get("kind") == "ClusterRole" else None
        for rule in (role or {}).get("rules") or []:
            urls = rule.get("nonResourceURLs") or []
            verbs = set(rule.get("verbs") or [])
            if {verb, "*"} & verbs and any(u == path or (u.endswith("*") and path.startswith(u[:-1])) for u in urls):
                return True
    return False


def forbidden(user: User, verb: str, group: str, resource: str, namespace: str, name: str, sub: str = "") -> KubeStatus:
    res = f"{resource}/{sub}" if sub else resource
    shown = f"{resource}.{group}" if group else resource
    subject = f'{shown} "{name}"' if name else shown
    scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    message = (
        f'{subject} is forbidden: User "{user.name}" cannot {verb} resource "{res}" in API group "{group}" {scope}'
    )
    details: Json = {"group": group, "kind": resource}
    if name:
        details["name"] = name
    return KubeStatus(403, "Forbidden", message, details)
