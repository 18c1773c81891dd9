"""A runbook adapter over Kubernetes manifests, on the runbook contract (:mod:`homelab_lib.core.contract`).

desired = manifests (sealed with the toolkit's labels and config hash, validated, in apply order);
observed = each object's config hash as the cluster holds it, a server-side dry run for those that
differ (the fields it would change), the toolkit's own objects the manifests no longer name, the
default StorageClass; plan = create / update (fields) / no-op / delete / conflict, pure; apply =
server-side apply (field manager ``homelab``) in kind order, deletes reversed, then every changed
workload, Job and HelmChart waited for; verify = every object as applied, workloads rolled out,
install Jobs Complete, claims Bound (or waiting for their first pod), each Ingress host answering.
"""

from __future__ import annotations

import http.client
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from homelab_lib.core.clock import SYSTEM, Clock
from homelab_lib.core.contract import DONE, ApplyResult, BaseAdapter, Carried, Check, Outcome, VerifyResult
from homelab_lib.core.plan import Action, Change, FieldChange, Plan
from homelab_lib.core.progress import Progress
from homelab_lib.kube import rollout
from homelab_lib.kube.objects import CONFIG_HASH, PART_OF, Key, KubeObject, key, rank

if TYPE_CHECKING:
    import pandas as pd

    from homelab_lib.kube.client import Kube

DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"
SELECTED_NODE = "volume.kubernetes.io/selected-node"  # set on a claim when a pod that uses it is scheduled
WAITED = ("Deployment", "StatefulSet", "Job", "HelmChart")


@dataclass(frozen=True)
class Probe:
    """An HTTP check through the Ingress: GET http://address:port/path with Host: host."""

    service: str
    host: str
    address: str
    path: str
    port: int = 80


@dataclass(frozen=True)
class KubeDesired:
    """Manifests as the toolkit applies them.

    Attributes:
        homelab: the inventory's name.
        runbook: the value of the ``homelab.io/runbook`` label the objects carry.
        objects: the manifests, sealed, in apply order.
        probes: the Ingress checks verify makes.
        rollout_timeout_s: how long a workload, Job or install Job may take.
        scope: the namespaces the run is limited to (empty: all); the homelab's objects elsewhere are
            neither applied nor proposed for deletion.
        kinds: more (apiVersion, kind) pairs whose objects of this runbook are proposed for deletion when
            not wanted, besides the kinds of ``objects`` (a removal wants none of a kind any more).
        owner_labels: labels that make an object of this runbook outside ``scope`` its own too (all of them,
            with their values): a scheduled run's Roles in kube-system and its ClusterRole, whose runbook
            label alone another namespace's schedule of the same name shares.
    """

    homelab: str
    runbook: str
    objects: tuple[KubeObject, ...]
    probes: tuple[Probe, ...] = ()
    rollout_timeout_s: float = 600.0
    scope: tuple[str, ...] = ()
    kinds: tuple[tuple[str, str], ...] = ()
    owner_labels: tuple[tuple[str, str], ...] = ()

    def owns(self, found: KubeObject) -> bool:
        """Whether an object of this runbook's label is this desired state's to delete: in scope, or marked."""
        k = key(found)
        if not self.scope or (k.namespace or k.name) in self.scope:
            return True
        labels = (found.get("metadata") or {}).get("labels") or {}
        return bool(self.owner_labels) and all(labels.get(name) == value for name, value in self.owner_labels)

    def table(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(
            [
                {"kind": o["kind"], "namespace": key(o).namespace or "-", "name": key(o).name,
                 "config hash": o["metadata"]["annotations"][CONFIG_HASH][:12]}
                for o in self.objects
            ],
            columns=["kind", "namespace", "name", "config hash"],
        )  # fmt: skip


@dataclass(frozen=True)
class ObjectState:
    """One object as the cluster holds it.

    Attributes:
        exists: it is there.
        config_hash: its config hash annotation ('' when none).
        fields: for an object whose hash differs, the fields a server-side dry run would change
            (top-level paths under spec/data...; values of Secrets never).
        job_uid: for a HelmChart, its install Job's uid ('' when none).
    """

    exists: bool
    config_hash: str = ""
    fields: tuple[tuple[str, str, str], ...] = ()
    job_uid: str = ""


@dataclass(frozen=True)
class KubeObserved:
    """The cluster for desired: each object's state, the homelab's objects no longer wanted, the default class."""

    objects: dict[Key, ObjectState]
    strays: tuple[Key, ...] = ()
    default_class: str = ""


@dataclass(frozen=True)
class KubeReport:
    """What verify read: one row per object (kind, namespace, name, state)."""

    rows: tuple[tuple[str, str, str, str], ...] = ()
    probes: tuple[tuple[str, str, str], ...] = ()

    def table(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(list(self.rows), columns=["kind", "namespace", "name", "state"])

    def probes_table(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(list(self.probes), columns=["service", "url", "answer"])


def _summ(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _leaves(path: str, a: Any, b: Any, out: list[tuple[str, Any, Any]]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for name in sorted(set(a) | set(b)):
            if a.get(name) != b.get(name):
                _leaves(f"{path}.{name}", a.get(name), b.get(name), out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                _leaves(f"{path}[{i}]", x, y, out)
    else:
        out.append((path, a, b))


def dry_run_fields(now: KubeObject, would: KubeObject) -> tuple[tuple[str, str, str], ...]:
    """The fields a dry run would change, as (path, old, new), down to the leaves under spec/data/stringData.

    A Secret's values are never shown: ``(set)`` -> ``(changed)``.
    """
    found: list[tuple[str, Any, Any]] = []
    for part in ("spec", "data", "stringData"):
        a, b = now.get(part), would.get(part)
        if a != b:
            _leaves(part, a, b, found)
    if now.get("kind") == "Secret":
        return tuple((path, "(set)", "(changed)") for path, _, _ in found)
    return tuple((path, _summ(a), _summ(b)) for path, a, b in found[:10])


class KubeManifests(BaseAdapter[KubeDesired, KubeObserved, KubeReport]):
    """Apply a set of manifests to a cluster, by the contract's rules.

    Args:
        make: builds the desired state (from the inventory).
        kube: opens the cluster client (called at the first observe).
        name: the adapter's name (plans carry it).
        force_conflicts: take over fields another manager owns (409), instead of stopping.
        clock: the clock rollouts are waited by.
    """

    world = "the cluster"
    conflicts_block = True

    def __init__(
        self,
        make: Callable[[], KubeDesired],
        kube: Callable[[], Kube],
        *,
        name: str,
        force_conflicts: bool = False,
        clock: Clock = SYSTEM,
    ) -> None:
        self._make = make
        self._open = kube
        self._kube: Kube | None = None
        self.name = name
        self.force_conflicts = force_conflicts
        self.clock = clock

    @property
    def kube(self) -> Kube:
        if self._kube is None:
            self._kube = self._open()
        return self._kube

    def desired(self) -> KubeDesired:
        return self._make()

    def observe(self, desired: KubeDesired) -> KubeObserved:
        """Each object's config hash; a server-side dry run for those that differ; strays; the default class."""
        states: dict[Key, ObjectState] = {}
        for obj in desired.objects:
            k = key(obj)
            now = self.kube.get(k)
            if now is None:
                states[k] = ObjectState(False)
                continue
            have = ((now.get("metadata") or {}).get("annotations") or {}).get(CONFIG_HASH, "")
            want = obj["metadata"]["annotations"][CONFIG_HASH]
            fields: tuple[tuple[str, str, str], ...] = ()
            if have != want:
                would = self.kube.apply(obj, dry_run=True, force_conflicts=self.force_conflicts)
                fields = dry_run_fields(now, would) or (("metadata.annotations", "config hash", "new"),)
            job = ""
            if k.kind == "HelmChart":
                got = self.kube.get(Key("batch/v1", "Job", k.namespace, f"helm-install-{k.name}"))
                job = str(got["metadata"].get("uid", "")) if got else ""
            states[k] = ObjectState(True, have, fields, job)
        wanted = set(states)
        strays: set[Key] = set()
        kinds = {(o["apiVersion"], o["kind"]) for o in desired.objects} | set(desired.kinds)
        for api_version, kind in sorted(kinds):
            for found in self.kube.list(api_version, kind, label_selector=f"{PART_OF}={desired.runbook}"):
                found.setdefault("apiVersion", api_version)
                found.setdefault("kind", kind)
                k = key(found)
                if (
                    desired.owns(found)
                    and k not in wanted
                    and not (found.get("metadata") or {}).get("deletionTimestamp")
                ):
                    strays.add(k)
        return KubeObserved(states, tuple(sorted(strays)), self._default_class())

    def _default_class(self) -> str:
        """The name of the cluster's default StorageClass ('' when none is)."""
        default = ""
        for sc in self.kube.list("storage.k8s.io/v1", "StorageClass"):
            if ((sc.get("metadata") or {}).get("annotations") or {}).get(DEFAULT_CLASS) == "true":
                default = sc["metadata"]["name"]
        return default

    def _claim_state(self, claim: KubeObject) -> tuple[bool, str]:
        """Bound; or Pending and as applied while its class binds at first use (WaitForFirstConsumer) and no
        pod has used it yet (no node selected): a CronJob's archive claim until its first run."""
        phase = str((claim.get("status") or {}).get("phase", "Pending"))
        if phase == "Bound":
            return True, phase
        annotations = (claim.get("metadata") or {}).get("annotations") or {}
        if phase != "Pending" or SELECTED_NODE in annotations:
            return False, phase
        name = (claim.get("spec") or {}).get("storageClassName") or self._default_class()
        sc = self.kube.get(Key("storage.k8s.io/v1", "StorageClass", "", name)) if name else None
        if sc is not None and sc.get("volumeBindingMode") == "WaitForFirstConsumer":
            return True, "Pending until its first pod (WaitForFirstConsumer)"
        return False, phase

    def plan(self, desired: KubeDesired, observed: KubeObserved) -> Plan:
        """Per object: create, update (the dry run's fields), no-op; strays deleted; no default class: conflict."""
        return plan_objects(self.name, desired, observed)

    def carry_out(
        self,
        desired: KubeDesired,
        observed: KubeObserved,
        plan: Plan,
        todo: Sequence[Change],
        *,
        allow_delete: bool,
        progress: Progress,
        clock: Clock,
    ) -> Carried:
        by_target = {(o["kind"], key(o).target): o for o in desired.objects}
        outcomes: list[Outcome] = []
        steps: list[str] = []
        applied: list[tuple[Change, KubeObject, float]] = []
        task = progress.task(f"{self.name}: apply", len(todo))
        for change in todo:
            began = clock.monotonic()
            if change.action == Action.DELETE:
                ns, _, name = change.target.rpartition("/")
                stray = next(k for k in observed.strays if k.kind == change.kind and k.target == change.target)
                self.kube.delete(stray)
                outcomes.append(Outcome.of(change, DONE, f"deleted {change.kind} {ns}/{name}".replace(" /", " ")))
                task.advance(f"deleted {change.kind} {change.target}")
                continue
            obj = by_target[(change.kind, change.target)]
            self.kube.apply(obj, force_conflicts=self.force_conflicts)
            applied.append((change, obj, began))
            steps.append(f"applied {change.kind} {change.target}")
            task.advance(f"applied {change.kind} {change.target}")
        task.done()
        waiting = [a for a in applied if a[1]["kind"] in WAITED]
        task = progress.task(f"{self.name}: rollout", len(waiting))
        for change, obj, began in applied:
            seen = "applied"
            if obj["kind"] in WAITED:
                previous = observed.objects.get(key(obj), ObjectState(False)).job_uid
                seen = rollout.wait(
                    self.kube, obj, timeout_s=desired.rollout_timeout_s, clock=clock, previous_job=previous
                )
                steps.append(f"{change.kind} {change.target}: {seen}")
                task.advance(f"{change.kind} {change.target}: {seen}")
            outcomes.append(Outcome.of(change, DONE, seen, clock.monotonic() - began))
        task.done()
        return Carried(tuple(outcomes), tuple(steps))

    def check(self, desired: KubeDesired, result: ApplyResult) -> VerifyResult[KubeReport]:
        """Each object as applied (config hash), rolled out, Complete or Bound (or waiting for its first pod); each
        Ingress host answers."""
        checks: list[Check] = []
        rows: list[tuple[str, str, str, str]] = []
        for obj in desired.objects:
            k = key(obj)
            now = self.kube.get(k)
            want = obj["metadata"]["annotations"][CONFIG_HASH]
            if now is None:
                checks.append(Check(k.kind, k.target, "", False, "missing"))
                rows.append((k.kind, k.namespace or "-", k.name, "missing"))
                continue
            have = ((now.get("metadata") or {}).get("annotations") or {}).get(CONFIG_HASH, "")
            ok, state = have == want, "as applied" if have == want else "differs from the manifest"
            if ok and k.kind in ("Deployment", "StatefulSet"):
                ok, state = rollout.workload_ready(now)
            elif ok and k.kind == "HelmChart":
                job = self.kube.get(Key("batch/v1", "Job", k.namespace, f"helm-install-{k.name}"))
                state = f"helm-install-{k.name}: " + (rollout.job_state(job) if job else "no job")
                ok = job is not None and rollout.job_state(job) == "Complete"
            elif ok and k.kind == "PersistentVolumeClaim":
                ok, state = self._claim_state(now)
            checks.append(Check(k.kind, k.target, "", ok, state))
            rows.append((k.kind, k.namespace or "-", k.name, state))
        answers = []
        for p in desired.probes:
            status = probe(p)
            url = f"http://{p.host}{p.path}"
            answers.append((p.service, url, status))
            checks.append(Check("ingress", p.host, p.address, status.startswith("200"), f"GET {url}: {status}"))
        note = f"{sum(a[2].startswith('200') for a in answers)} of {len(answers)} Ingress host(s) answer"
        return VerifyResult(self.name, result.confirmed, tuple(checks), KubeReport(tuple(rows), tuple(answers)), note)

    def close(self) -> None:
        if self._kube is not None:
            self._kube.api.close()  # type: ignore[no-untyped-call]
            self._kube = None


def plan_objects(adapter: str, desired: KubeDesired, observed: KubeObserved) -> Plan:
    """The plan of :class:`KubeManifests` (pure)."""
    changes: list[Change] = []
    if not observed.default_class:
        changes.append(
            Change(
                "StorageClass",
                "(default)",
                Action.CONFLICT,
                reason="no default StorageClass: PVCs would never bind; K3s's local-path is the default unless "
                "local-storage is disabled",
                order=-1,
            )
        )
    else:
        changes.append(Change("StorageClass", "(default)", Action.NOOP, reason=observed.default_class, order=-1))
    for obj in desired.objects:
        k = key(obj)
        state = observed.objects.get(k, ObjectState(False))
        order = rank(obj)
        want = obj["metadata"]["annotations"][CONFIG_HASH]
        if not state.exists:
            changes.append(Change(k.kind, k.target, Action.CREATE, reason="apply", order=order))
        elif state.config_hash == want:
            changes.append(Change(k.kind, k.target, Action.NOOP, reason="as applied", order=order))
        else:
            fields = tuple(FieldChange(p, a, b) for p, a, b in state.fields)
            changes.append(Change(k.kind, k.target, Action.UPDATE, "", fields, "apply", order))
    rank_of = {"Namespace": 0}
    for k in observed.strays:
        order = rank_of.get(k.kind, 5)
        changes.append(
            Change(k.kind, k.target, Action.DELETE, reason="the homelab's, no longer in the parameters", order=order)
        )
    return Plan.of(changes, adapter=adapter)


def probe(p: Probe, timeout: float = 10.0) -> str:
    """``200 OK`` (or the status, or the error) of GET http://address:port/path with the Ingress host's name."""
    conn = http.client.HTTPConnection(p.address, p.port, timeout=timeout)
    try:
        conn.request("GET", p.path, headers={"Host": p.host})
        answer = conn.getresponse()
        answer.read()
        return f"{answer.status} {answer.reason}"
    except OSError as e:
        return f"no answer ({e.strerror or e})"
    finally:
        conn.close()


__all__ = [
    "KubeDesired",
    "KubeManifests",
    "KubeObserved",
    "KubeReport",
    "ObjectState",
    "Probe",
    "dry_run_fields",
    "plan_objects",
    "probe",
]
