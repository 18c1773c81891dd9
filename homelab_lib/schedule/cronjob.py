"""Scheduled runs on the homelab's K3s: a ``batch/v1`` CronJob that runs ``homelab run`` in the toolkit's image.

``homelab schedule NOTEBOOK --every SPEC --k3s -f PARAMS`` makes, in one namespace (default ``homelab-runs``):

- a ConfigMap ``<name>-params``: the parameter files, with every file they name rewritten to where
  the pod finds it (they hold references, never secret values), and the pod's kubeconfig (below);
- a Secret ``<name>-files``: the files the parameters name (``file:`` secret references and path
  keys: ``ca_file``, ``known_hosts``, ...) and the homelab's hash key (:mod:`homelab_lib.core.hashkey`: the
  pod's hashes of secrets must be the operator's), projected with the ConfigMap into ``/homelab/params``; a
  Secret ``<name>-env`` with the values of the ``env:`` references, given to the pod as those
  variables (values read at apply time, never shown: a plan says ``(set)``);
- a PersistentVolumeClaim ``homelab-archive`` at ``/homelab/archive``: the archive of every run the
  CronJobs of the namespace start;
- a ServiceAccount ``<name>`` the pod runs as, with only the rights its runbook needs
  (:data:`~homelab_lib.schedule.rights.RIGHTS`): a Role and RoleBinding ``<namespace>.<name>`` in each
  namespace it works in, a ClusterRole and ClusterRoleBinding of that name for what is cluster-wide;
- the CronJob ``<name>``: SPEC as cron (``15m``, ``6h``, ``daily``, ``*-*-* 02:00:00``; a SPEC that cron
  cannot say is refused with the ones it can), ``concurrencyPolicy: Forbid``, no retries (a failed run
  is archived and alerts; the next one comes at its time), running ``homelab run`` on the notebook's
  path in the image, named by digest (``k3s.run_image`` or ``--image``; a tag alone is refused for
  ``profile: real``: whoever can push the tag would choose what runs with the parameters' secrets).

What each runbook needs of the cluster, and so what its ServiceAccount may do, is the table of
:mod:`homelab_lib.schedule.rights`; the pod's kubeconfig (``k3s.kubeconfig`` rewritten to it) names the
cluster as the operator's does and that ServiceAccount's mounted token as its user: the cluster-admin
kubeconfig is never carried. With it the pod's run takes the run Lease (:mod:`homelab_lib.kube.lease`),
so a CronJob's run and a laptop's never overlap; the server address must be one the pod reaches (the
VM's address, as runbook 03 writes it).

The audit signing key (``audit.signing_key``) stays off the cluster: it is left out of the pod's
parameters and of every Secret, so the pod's runs are unsigned (its archive has no ``HEAD.sig``, and the
CronJob says so in its ``homelab.io/audit`` annotation); ``homelab audit verify -f PARAMS`` where the key
lives reports that and checks every hash. The objects are applied by the Kubernetes adapter
(:class:`~homelab_lib.kube.runbook.KubeManifests`: server-side apply, plan first).
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from homelab_lib.core.errors import ConfigError, NotFound, Problem
from homelab_lib.core.hashkey import KEY_FILE, key_path
from homelab_lib.core.secrets import REF_PATTERN, SecretRef, literal_secrets
from homelab_lib.inventory import Inventory, load_inventory
from homelab_lib.inventory.load import PATH_KEYS
from homelab_lib.kube.client import Kube
from homelab_lib.kube.objects import MANAGED, MANAGER, PART_OF, KubeObject, ordered, sealed, validate
from homelab_lib.kube.runbook import KubeDesired, KubeManifests
from homelab_lib.schedule.rights import Rule, pod_kubeconfig, rights_of, roles_of
from homelab_lib.schedule.systemd import Every, repo_root, unit_name

NAMESPACE = "homelab-runs"
IMAGE = "homelab-runbooks:latest"
IMAGE_ROOT = "/opt/homelab"
PARAMS_DIR = "/homelab/params"
ARCHIVE_DIR = "/homelab/archive"
ARCHIVE_CLAIM = "homelab-archive"
MAX_FILE = 256 * 1024  # a Secret holds 1 MiB in all; the files a homelab's parameters name are small
KEY = re.compile(r"[^-._a-zA-Z0-9]+")
RUNBOOK_PREFIX = "schedule-"  # the homelab.io/runbook label of a scheduled run's objects: schedule-<name>
#: The label that tells a scheduled run's objects outside its namespace (Roles, a ClusterRole) from those of
#: a schedule of the same name in another namespace: its value is the schedule's namespace.
SCHEDULE_NAMESPACE = "homelab.io/schedule-namespace"
HASH_KEY = "homelab-hash-key"  # the hash key's key in the files Secret (projected as KEY_FILE in PARAMS_DIR)
KUBECONFIG = "kubeconfig.yaml"  # the pod's kubeconfig: a key of the params ConfigMap, a file in PARAMS_DIR
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
UNSIGNED = (
    "unsigned: the audit signing key stays off the cluster; check the archive with homelab audit verify where it lives"
)


@dataclass(frozen=True)
class CronJobSpec:
    """What a scheduled run on K3s is, before it becomes manifests.

    Attributes:
        name: the CronJob's name (``homelab-<stem>[-<name>]``, as the systemd units).
        namespace: where its objects go.
        cron: the five cron fields.
        command: the container's argv.
        params: ConfigMap data: file name -> the parameter file's text, rewritten.
        files: Secret data: key -> (the file on this machine, its path under PARAMS_DIR).
        env: the ``env:`` references' variable names.
        image: the toolkit's image (by digest for profile real).
        archive_size: the archive claim's size.
        roles: the ServiceAccount's rights: (namespace, rules) for a Role there; namespace '' for the ClusterRole.
        kubeconfig: the pod's kubeconfig (the cluster as the operator's names it, the ServiceAccount's token
            as its user); '' when its runbook needs no cluster (no token is mounted either).
    """

    name: str
    namespace: str
    cron: str
    command: tuple[str, ...]
    params: tuple[tuple[str, str], ...]
    files: tuple[tuple[str, Path, str], ...]
    env: tuple[str, ...]
    image: str
    archive_size: str
    roles: tuple[tuple[str, tuple[Rule, ...]], ...] = ()
    kubeconfig: str = ""


def _bad(where: str, message: str) -> ConfigError:
    return ConfigError([Problem(where, 0, "", message)])


def cron_of(every: Every) -> str:
    """SPEC as cron, or a ConfigError saying which SPECs cron can say.

    Raises:
        ConfigError: cron has no way to say it (an interval that does not divide the hour or the day,
            or a calendar expression beyond ``daily``/``hourly``/... and ``*-*-* HH:MM``).
    """
    if not every.cron:
        raise _bad(
            f"--every {every.spec!r}",
            "a CronJob's schedule is cron, which cannot say this; give an interval that divides the hour or "
            "the day (5m, 15m, 1h, 6h, 1d), a named one (hourly, daily, weekly, monthly) or '*-*-* HH:MM:00'",
        )
    return every.cron


def _here(path: Path, folder: Path) -> Path:
    path = path.expanduser()
    return path if path.is_absolute() else (folder / path).resolve()


def _rewrite(
    text: str, folder: Path, carried: dict[Path, tuple[str, str]], where: str, *, cluster: bool
) -> tuple[str, list[str], Path | None]:
    """A parameter file as the pod reads it; the ``env:`` names it reads; the kubeconfig it names (None: none).

    Every file it names is pointed under PARAMS_DIR (and carried), but two: ``k3s.kubeconfig`` points at
    the pod's own kubeconfig (or goes, when the runbook needs no cluster: ``cluster`` False), and
    ``audit.signing_key`` goes (the key stays off the cluster).
    """
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    data = yaml.load(text)
    env: list[str] = []
    kubeconfig: list[Path] = []

    def carry(path: Path) -> str:
        path = _here(path, folder)
        if not path.is_file():
            raise _bad(where, f"{path} is named in the parameters but is not a file here; it cannot be carried")
        if path.stat().st_size > MAX_FILE:
            raise _bad(where, f"{path} is larger than {MAX_FILE // 1024} KiB; a Secret cannot carry it")
        if path not in carried:
            n = len(carried)
            key = KEY.sub("-", f"f{n}-{path.name}")
            carried[path] = (key, f"files/{key}")
        return f"{PARAMS_DIR}/{carried[path][1]}"

    def walk(node: Any, at: tuple[Any, ...]) -> None:
        items = (
            list(node.items()) if isinstance(node, dict) else list(enumerate(node)) if isinstance(node, list) else []
        )
        for k, v in items:
            if (*at, k) == ("audit", "signing_key"):
                del node[k]  # never carried: the pod's runs are unsigned
            elif (*at, k) == ("k3s", "kubeconfig") and isinstance(v, str):
                kubeconfig.append(_here(Path(v), folder))
                if cluster:
                    node[k] = f"{PARAMS_DIR}/{KUBECONFIG}"
                else:
                    del node[k]
            elif isinstance(v, str):
                m = REF_PATTERN.match(v) if v.startswith(("file:", "env:")) else None
                if m is not None and v.startswith("file:"):
                    node[k] = "file:" + carry(Path(v[len("file:") :]))
                elif m is not None and v.startswith("env:"):
                    env.append(v[len("env:") :])
                elif k == "placement_file" and not _here(Path(v), folder).is_file():
                    # no move recorded yet (runbook 05 makes the file): the pod reads no moves either
                    node[k] = f"{PARAMS_DIR}/files/{KEY.sub('-', Path(v).name)}"
                elif k in PATH_KEYS and k != "state_dir":
                    node[k] = carry(Path(v))
            else:
                walk(v, (*at, k))

    walk(data, ())
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue(), env, kubeconfig[-1] if kubeconfig else None


def image_of(inv: Inventory, given: str) -> str:
    """The toolkit's image: ``--image``, else ``k3s.run_image``, else :data:`IMAGE` (profile lab only).

    Raises:
        ConfigError: profile real and the image is not named by digest.
    """
    image = given or (inv.k3s.run_image if inv.k3s is not None else None) or IMAGE
    if inv.profile == "real" and not DIGEST.search(image):
        raise _bad(
            "--image" if given else "k3s.run_image",
            f"the image '{image}' is not named by digest: whoever can push its tag would choose what runs with the "
            "parameters' secrets; give NAME:TAG@sha256:<64 hex> (docker buildx imagetools inspect NAME:TAG prints "
            "it) as k3s.run_image or --image",
        )
    return image


def cronjob_spec(
    notebook: str | Path,
    every: Every,
    *,
    param_files: Sequence[str | Path],
    parameters: Mapping[str, Any] | None = None,
    name: str = "",
    namespace: str = NAMESPACE,
    image: str = "",
    image_root: str = IMAGE_ROOT,
    archive_size: str = "2Gi",
) -> CronJobSpec:
    """The scheduled run of a notebook on K3s, from the parameter files.

    Args:
        notebook: the runbook (its path in the repository is its path under image_root in the image).
        every: when (:func:`homelab_lib.schedule.systemd.parse_every`); must be sayable in cron.
        param_files: the homelab's parameter files (at least one).
        parameters: notebook parameters (``-p``); secrets must be references.
        name: a suffix, to schedule one notebook more than once.
        namespace: where the objects go.
        image: the toolkit's image (this package installed, the repository at image_root); '' for
            ``k3s.run_image``, else :data:`IMAGE` (profile lab only: a real homelab's is named by digest).
        image_root: the repository's folder in the image.
        archive_size: the archive claim's size.

    Raises:
        ConfigError: no such notebook or parameter file, no parameter file, a literal secret, a SPEC
            cron cannot say, a runbook not scheduled on K3s (:data:`RIGHTS`), an image not named by
            digest (profile real), or a file the parameters name that cannot be carried.
    """
    nb = Path(notebook).resolve()
    if not nb.is_file():
        raise _bad(str(notebook), "no such notebook; the runbooks are in notebooks/")
    if not param_files:
        raise _bad("--k3s", "give the homelab's parameter file(s) with -f: the CronJob's runs need them")
    params = dict(parameters or {})
    secret = list(literal_secrets(params))
    if secret:
        raise _bad(f"-p {secret[0]}", "looks like a secret and holds a value; pass a reference (env:NAME or file:PATH)")
    cron = cron_of(every)
    rights = rights_of(nb, params)
    cluster = rights.lease or rights.claims
    carried: dict[Path, tuple[str, str]] = {}
    texts: list[tuple[str, str]] = []
    env: list[str] = []
    source: Path | None = None
    files = [Path(p).resolve() for p in param_files]
    for i, f in enumerate(files):
        if not f.is_file():
            raise _bad(str(f), "no such parameter file")
        text, names, named = _rewrite(f.read_text(), f.parent, carried, str(f), cluster=cluster)
        texts.append((KEY.sub("-", f"p{i}-{f.name}"), text))
        env += names
        source = named or source
    inv = load_inventory(files)
    inv.hash_key()  # made now if it is not yet: the pod's read-only parameters folder cannot make it
    carried[key_path(files[0].parent)] = (HASH_KEY, KEY_FILE)  # beside the pod's first parameter file
    job = unit_name(nb, name).lower().replace("_", "-")[:52].rstrip("-")
    kubeconfig = pod_kubeconfig(source, inv.name, namespace, job) if cluster and source is not None else ""
    root = repo_root(nb)
    try:
        inside = nb.relative_to(root).as_posix()
    except ValueError:
        inside = nb.name
    argv = ["homelab", "run", f"{image_root.rstrip('/')}/{inside}"]
    for key, _ in texts:
        argv += ["-f", f"{PARAMS_DIR}/{key}"]
    for key, value in params.items():
        argv += ["-p", str(key), "true" if value is True else "false" if value is False else str(value)]
    argv += ["--archive", ARCHIVE_DIR, "--log-output", "-q"]
    return CronJobSpec(
        job,
        namespace,
        cron,
        tuple(argv),
        tuple(texts),
        tuple((key, path, rel) for path, (key, rel) in carried.items()),
        tuple(sorted(set(env))),
        image_of(inv, image),
        archive_size,
        roles_of(inv, rights) if kubeconfig else (),
        kubeconfig,
    )


def _meta(name: str, namespace: str, schedule: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {SCHEDULE_NAMESPACE: schedule}}
    if namespace:
        meta["namespace"] = namespace
    return meta


def rbac(spec: CronJobSpec) -> list[KubeObject]:
    """The ServiceAccount the pod runs as, and its Roles and ClusterRole with their bindings (:data:`RIGHTS`)."""
    ns = spec.namespace
    objs: list[KubeObject] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(spec.name, ns, ns),
         "automountServiceAccountToken": False}
    ]  # fmt: skip
    rbac_name = f"{ns}.{spec.name}"  # unique beyond the namespace: schedules of one name in two namespaces differ
    subject = [{"kind": "ServiceAccount", "name": spec.name, "namespace": ns}]
    for space, rules in spec.roles:
        kind = "Role" if space else "ClusterRole"
        objs.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
                     "metadata": _meta(rbac_name, space, ns), "rules": [r.manifest() for r in rules]})  # fmt: skip
        objs.append(
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": f"{kind}Binding",
             "metadata": _meta(rbac_name, space, ns), "subjects": subject,
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": rbac_name}}
        )  # fmt: skip
    return objs


def _cronjob(spec: CronJobSpec) -> KubeObject:
    """The CronJob: its pod runs ``homelab run`` as the ServiceAccount, with the parameters and the archive."""
    params = [{"key": k, "path": k} for k, _ in spec.params]
    if spec.kubeconfig:
        params.append({"key": KUBECONFIG, "path": KUBECONFIG})
    projected: list[dict[str, Any]] = [{"configMap": {"name": f"{spec.name}-params", "items": params}}]
    if spec.files:
        projected.append(
            {
                "secret": {
                    "name": f"{spec.name}-files",
                    "items": [{"key": k, "path": rel, "mode": 0o400} for k, _, rel in spec.files],
                }
            }
        )
    container: dict[str, Any] = {
        "name": "run",
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(spec.command),
        "env": [{"name": "HOMELAB_HEADLESS", "value": "1"}]
        + [{"name": n, "valueFrom": {"secretKeyRef": {"name": f"{spec.name}-env", "key": n}}} for n in spec.env],
        "volumeMounts": [
            {"name": "params", "mountPath": PARAMS_DIR, "readOnly": True},
            {"name": "archive", "mountPath": ARCHIVE_DIR},
        ],
    }
    pod = {
        "restartPolicy": "Never",
        "serviceAccountName": spec.name,
        "automountServiceAccountToken": bool(spec.kubeconfig),  # the token only for a runbook that needs the cluster
        "containers": [container],
        "volumes": [
            {"name": "params", "projected": {"sources": projected}},
            {"name": "archive", "persistentVolumeClaim": {"claimName": ARCHIVE_CLAIM}},
        ],
    }
    meta = _meta(spec.name, spec.namespace, spec.namespace)
    meta["annotations"] = {"homelab.io/audit": UNSIGNED}
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": meta,
        "spec": {
            "schedule": spec.cron,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 600,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "spec": {
                    "backoffLimit": 0,
                    "template": {"metadata": {"labels": {"homelab.io/schedule": spec.name}}, "spec": pod},
                }
            },
        },
    }


def manifests(spec: CronJobSpec, *, reveal: bool = True) -> list[KubeObject]:
    """The objects of a scheduled run (unsealed, in apply order).

    Args:
        spec: the scheduled run.
        reveal: read the carried files and the ``env:`` values into the Secrets (False: placeholders,
            for showing the manifests).

    Raises:
        UnresolvedSecret: an ``env:`` variable is not set here (reveal).
    """
    ns = spec.namespace

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode() if reveal else "KHNldCBhdCBhcHBseSk="  # "(set at apply)"

    files_data = {key: b64(path.read_bytes() if reveal else b"") for key, path, _ in spec.files}
    env_data = {n: b64(SecretRef("env", n).reveal().encode() if reveal else b"") for n in spec.env}
    config = dict(spec.params) | ({KUBECONFIG: spec.kubeconfig} if spec.kubeconfig else {})
    objs: list[KubeObject] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(f"{spec.name}-params", ns, ns), "data": config},
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": ARCHIVE_CLAIM, "namespace": ns},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": spec.archive_size}}},
        },
        *rbac(spec),
        _cronjob(spec),
    ]
    if spec.files:
        objs.append(
            {"apiVersion": "v1", "kind": "Secret", "metadata": _meta(f"{spec.name}-files", ns, ns), "type": "Opaque",
             "data": files_data}
        )  # fmt: skip
    if spec.env:
        objs.append(
            {"apiVersion": "v1", "kind": "Secret", "metadata": _meta(f"{spec.name}-env", ns, ns), "type": "Opaque",
             "data": env_data}
        )  # fmt: skip
    return ordered(objs)


def desired_cronjob(inv: Inventory, spec: CronJobSpec, *, reveal: bool = True) -> KubeDesired:
    """The scheduled run as the Kubernetes adapter applies it: validated, sealed, scoped to its namespace.

    Raises:
        ConfigError: the inventory has no k3s: section, or a manifest does not validate.
    """
    from homelab_lib.kube.objects import kubernetes_version

    if inv.k3s is None:
        raise _bad("--k3s", "the parameters have no k3s: section: there is no cluster to schedule on")
    objs = manifests(spec, reveal=reveal)
    try:
        validate(objs, kubernetes_version(inv.k3s.version))
    except ValueError as e:
        raise _bad(f"CronJob {spec.namespace}/{spec.name}", str(e)) from None
    runbook = RUNBOOK_PREFIX + spec.name
    hash_key = inv.hash_key() if any(o["kind"] == "Secret" for o in objs) else None  # a Secret's hash is keyed
    return KubeDesired(
        inv.name,
        runbook,
        tuple(sealed(o, runbook, hash_key) for o in objs),
        scope=(spec.namespace,),
        owner_labels=((SCHEDULE_NAMESPACE, spec.namespace),),
    )


def _cluster(param_files: Sequence[str | Path]) -> tuple[Inventory, Callable[[], Kube]]:
    inv = load_inventory([Path(f) for f in param_files])
    if inv.k3s is None or inv.k3s.kubeconfig is None or not inv.k3s.kubeconfig.is_file():
        raise _bad("--k3s", "k3s.kubeconfig is not there: run 03_bootstrap_k3s first (it fetches the kubeconfig)")
    kubeconfig = inv.k3s.kubeconfig

    def kube() -> Kube:
        return Kube(kubeconfig, where=f"K3s ({kubeconfig})")

    return inv, kube


def cronjob_adapter(
    param_files: Sequence[str | Path], spec: CronJobSpec, *, force_conflicts: bool = False
) -> KubeManifests:
    """The Kubernetes adapter for a scheduled run, on the inventory's cluster (its kubeconfig).

    Raises:
        ConfigError: no k3s: section, or its kubeconfig is not there (run 03_bootstrap_k3s first).
    """
    inv, kube = _cluster(param_files)
    return KubeManifests(
        lambda: desired_cronjob(inv, spec), kube, name=f"schedule {spec.name}", force_conflicts=force_conflicts
    )


@dataclass(frozen=True)
class ScheduledRun:
    """A CronJob ``homelab schedule --k3s`` made, as the cluster reports it.

    Attributes:
        namespace: its namespace.
        name: the CronJob's name (what ``--remove`` takes).
        cron: its schedule.
        notebook: the runbook it runs (its path in the repository).
        suspended: ``spec.suspend``: the cluster starts no run.
        last_scheduled: when a run last started (``status.lastScheduleTime``), '' if never.
        last_success: when a run last succeeded (``status.lastSuccessfulTime``), '' if never.
        active: runs going on now.
    """

    namespace: str
    name: str
    cron: str
    notebook: str
    suspended: bool
    last_scheduled: str
    last_success: str
    active: int

    def line(self) -> str:
        state = "suspended" if self.suspended else f"last run {self.last_scheduled or 'never'}"
        ok = f", last success {self.last_success}" if self.last_success else ""
        busy = f", {self.active} running" if self.active else ""
        return f"{self.namespace}/{self.name}: '{self.cron}' runs {self.notebook}; {state}{ok}{busy}"


def list_cronjobs(param_files: Sequence[str | Path], namespace: str = "") -> list[ScheduledRun]:
    """The scheduled runs on the inventory's K3s (in one namespace, or in all), by namespace and name.

    Raises:
        ConfigError: no k3s: section, or its kubeconfig is not there.
        KubeError: the cluster cannot be asked.
    """
    _, kube = _cluster(param_files)
    return scheduled_runs(kube(), namespace)


def scheduled_runs(client: Kube, namespace: str = "") -> list[ScheduledRun]:
    """The CronJobs ``homelab schedule --k3s`` made on the cluster ``client`` reaches (one namespace, or all)."""
    found: list[ScheduledRun] = []
    for job in client.list("batch/v1", "CronJob", namespace=namespace, label_selector=f"{MANAGED}={MANAGER}"):
        meta, spec, status = job.get("metadata") or {}, job.get("spec") or {}, job.get("status") or {}
        if not str((meta.get("labels") or {}).get(PART_OF, "")).startswith(RUNBOOK_PREFIX):
            continue
        pod = ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template", {}).get("spec") or {}
        command = ((pod.get("containers") or [{}])[0]).get("command") or []
        notebook = str(command[2]) if len(command) > 2 else "?"
        found.append(
            ScheduledRun(
                str(meta.get("namespace", "")),
                str(meta.get("name", "")),
                str(spec.get("schedule", "")),
                notebook.removeprefix(IMAGE_ROOT.rstrip("/") + "/"),
                bool(spec.get("suspend")),
                str(status.get("lastScheduleTime") or ""),
                str(status.get("lastSuccessfulTime") or ""),
                len(status.get("active") or []),
            )
        )
    return sorted(found, key=lambda r: (r.namespace, r.name))


#: The kinds a scheduled run's removal deletes (its ServiceAccount and rights too, wherever they are); its
#: namespace and the archive claim (every run's archive, shared by the namespace's CronJobs) stay.
REMOVED_KINDS = (
    ("batch/v1", "CronJob"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "ServiceAccount"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
)


def removal_adapter(param_files: Sequence[str | Path], name: str, namespace: str = NAMESPACE) -> KubeManifests:
    """The Kubernetes adapter whose plan deletes a scheduled run: its CronJob, ConfigMap, Secrets, ServiceAccount,
    and its Roles, ClusterRole and bindings (in kube-system, the services' namespaces, cluster-wide).

    The namespace and the archive claim ``homelab-archive`` are kept: the archive is the audit log of
    every run. The plan's deletes are applied with ``allow_delete``.

    Raises:
        ConfigError: no k3s: section, or its kubeconfig is not there.
        NotFound: (from ``desired()``) no scheduled run of that name in the namespace (the ones there are named).
    """
    inv, kube = _cluster(param_files)

    def desired() -> KubeDesired:
        there = [r.name for r in scheduled_runs(adapter.kube, namespace)]
        if name not in there:
            raise NotFound(
                name,
                what="scheduled run",
                known=there,
                where=f"namespace {namespace}",
                hint="see them with: homelab schedule --list --k3s -f PARAMS",
            )
        return KubeDesired(
            inv.name,
            RUNBOOK_PREFIX + name,
            (),
            scope=(namespace,),
            kinds=REMOVED_KINDS,
            owner_labels=((SCHEDULE_NAMESPACE, namespace),),
        )

    adapter = KubeManifests(desired, kube, name=f"remove schedule {name}")
    return adapter


__all__ = [
    "ARCHIVE_CLAIM",
    "IMAGE",
    "NAMESPACE",
    "CronJobSpec",
    "ScheduledRun",
    "cron_of",
    "cronjob_adapter",
    "cronjob_spec",
    "desired_cronjob",
    "image_of",
    "list_cronjobs",
    "manifests",
    "rbac",
    "removal_adapter",
    "scheduled_runs",
]
