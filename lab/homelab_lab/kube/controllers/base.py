"""The controller loop and the helpers controllers share (conditions, owner references, kinds)."""

from __future__ import annotations

import copy
import sys
import threading
import traceback
from typing import Protocol

from homelab_lab.errors import KubeStatus
from homelab_lab.kube.cluster import Cluster, now
from homelab_lab.kube.resources import Kind
from homelab_lab.kube.schema import Json

MANAGER = "k3s"


class Controller(Protocol):
    """Something that moves objects towards their spec; reconcile is called often and must be idempotent."""

    def reconcile(self) -> None: ...


class Loop:
    """Runs controllers in one daemon thread, on every store change and at least every ``period`` seconds."""

    def __init__(
        self, cluster: Cluster, controllers: list[Controller], name: str = "controllers", period: float = 0.5
    ) -> None:
        self.cluster = cluster
        self.controllers = controllers
        self.period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def run_once(self) -> None:
        for c in self.controllers:
            if self._stop.is_set():
                return
            try:
                c.reconcile()
            except KubeStatus as e:  # a race with a client (409, 404): the next round sees the new state
                if e.code not in (404, 409):
                    print(f"controller {type(c).__name__}: {e}", file=sys.stderr)
            except Exception:
                traceback.print_exc()

    def _run(self) -> None:
        seen = -1
        while not self._stop.is_set():
            rv = self.cluster.store.rv
            if rv == seen:
                self.cluster.store.wait(rv, self.period)
            seen = self.cluster.store.rv
            self.run_once()


def kind(cluster: Cluster, api_version: str, name: str) -> Kind:
    found = cluster.registry.by_gvk(api_version, name)
    assert found is not None, f"{api_version} {name} is built in"
    return found


def owner_ref(obj: Json, controller: bool = True) -> Json:
    meta = obj["metadata"]
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def owned_by(obj: Json, owner: Json) -> bool:
    uid = owner["metadata"]["uid"]
    return any(r.get("uid") == uid and r.get("controller") for r in obj["metadata"].get("ownerReferences") or [])


def condition(
    conds: list[Json], type_: str, status: str, reason: str = "", message: str = "", probe_times: bool = False
) -> list[Json]:
    """conds with type_ set; lastTransitionTime (and lastUpdateTime) kept when nothing changed."""
    out = [copy.deepcopy(c) for c in conds]
    old = next((c for c in out if c.get("type") == type_), None)
    stamp = now()
    new: Json = {"type": type_, "status": status}
    if reason:
        new["reason"] = reason
    if message:
        new["message"] = message
    if old is not None and old.get("status") == status:
        new["lastTransitionTime"] = old.get("lastTransitionTime", stamp)
        if probe_times:
            same = old.get("reason") == reason and old.get("message") == message
            new["lastUpdateTime"] = old.get("lastUpdateTime", stamp) if same else stamp
    else:
        new["lastTransitionTime"] = stamp
        if probe_times:
            new["lastUpdateTime"] = stamp
    if probe_times:
        new = {
            "type": type_,
            "status": status,
            "lastUpdateTime": new["lastUpdateTime"],
            "lastTransitionTime": new["lastTransitionTime"],
            **({"reason": reason} if reason else {}),
            **({"message": message} if message else {}),
        }
    if old is None:
        out.append(new)
    else:
        out[out.index(old)] = new
    return out


def get_condition(obj: Json, type_: str) -> Json | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == type_), None)


def pod_ready(pod: Json) -> bool:
    c = get_condition(pod, "Ready")
    return bool(c and c.get("status") == "True") and not pod["metadata"].get("deletionTimestamp")


def template_hash(template: Json) -> str:
    """A pod-template-hash, as the ReplicaSet names carry it (10 safe characters)."""
    import hashlib
    import json

    digest = int(hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:15], 16)
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    out = ""
    for _ in range(10):
        digest, r = divmod(digest, len(alphabet))
        out += alphabet[r]
    return out
