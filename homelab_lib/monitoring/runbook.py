"""The monitoring adapter on the runbook contract (:mod:`homelab_lib.core.contract`): runbook 07.

desired = the rendered files (:func:`.render.render`: Prometheus config and rules, Alertmanager,
Grafana provisioning) and the targets; observe = each file's sha256 on the VM that runs its
component, read over SSH (SFTP; nothing is changed; a file that holds a secret is hashed with the homelab's
hash key, :mod:`homelab_lib.core.hashkey`); plan = a ``file`` change per file that is
missing or differs, and a ``reload`` change for Prometheus and Alertmanager when any of their
files changes (a no-change run writes and reloads nothing); apply = ``promtool check config``,
``promtool check rules`` and ``amtool check-config`` on this machine first (a rejection stops the
run before anything is copied), then each file copied atomically (SFTP: a temp file made exclusive with
its final mode before any byte, then renamed; one that holds a secret is given to the containers' group
first, or the run stops), then
``POST /-/reload``; verify = the files on the VMs are the rendered ones, Prometheus's last reload
succeeded, every expected target is up and none is unexpected (:func:`.prom.status`); the
alerts that fire are in the report.

Grafana reads provisioned dashboards again every 30 s (its provider's ``updateIntervalSeconds``);
a changed datasource needs a restart of Grafana (runbook 02 restarts it when its config hash moves).
"""

from __future__ import annotations

import contextlib
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

import paramiko

from homelab_lib.core.clock import SYSTEM, Clock
from homelab_lib.core.contract import DONE, Adapter, ApplyResult, BaseAdapter, Carried, Check, Outcome, VerifyResult
from homelab_lib.core.errors import ErrorTable, HomelabError, MonitoringError, NotFound, PrometheusUnreachable, mapped
from homelab_lib.core.plan import Action, Change, FieldChange, Plan
from homelab_lib.core.progress import Progress
from homelab_lib.hosts.docker import DockerHost, HostPool
from homelab_lib.hosts.ssh import sftp_create, sftp_makedirs, sftp_replace
from homelab_lib.monitoring.check import check as check_files
from homelab_lib.monitoring.prom import MonitoringReport, PrometheusApi, status
from homelab_lib.monitoring.render import ConfigFile, Rendered, Settings, render, service_url

if TYPE_CHECKING:
    from homelab_lib.inventory.model import Inventory

#: The components reloaded through POST /-/reload (Grafana re-reads its provisioned dashboards by itself).
RELOADABLE = ("prometheus", "alertmanager")
#: component -> sub-folders whose every file is the runbook's: a file there that is not rendered is deleted
#: (with allow_delete), so a rule file or dashboard taken out of the package leaves the VM too.
MANAGED_DIRS = {"prometheus": ("rules", "secrets"), "grafana": ("dashboards/homelab",)}
#: A file holding a secret's value: readable by its owner and the group of the containers' user (nobody).
SECRET_MODE = 0o640
CONTAINER_GID = 65534
SETTLE_TIMEOUT_S = 60.0
MISSING = ""


@dataclass(frozen=True)
class MonitoringDesired:
    """The rendered files and targets, and where this machine reaches Prometheus and Alertmanager."""

    rendered: Rendered
    urls: Mapping[str, str]


#: What observe reads: file name (``component/path``) -> its hash on the VM ('' when missing; :data:`STRAY` for a
#: file of a managed folder that is not rendered). A file that holds a secret is hashed keyed, as render hashes it.
Observed = Mapping[str, str]
STRAY = "(not rendered)"


def _sftp_error(e: BaseException, where: str) -> HomelabError:
    return MonitoringError(f"SFTP failed ({e or type(e).__name__})", where=where,
                           hint="may the SSH user read and write the config folder? is sftp enabled?")  # fmt: skip


SFTP_ERRORS: ErrorTable[str] = MappingProxyType(
    {OSError: _sftp_error, paramiko.SSHException: _sftp_error, EOFError: _sftp_error}
)


class MonitoringAdapter(BaseAdapter[MonitoringDesired, Observed, MonitoringReport]):
    """Runbook 07's steps: deploy the monitoring config to its VMs and reload it.

    Args:
        inv: the inventory (``monitoring:``; ``alerts:`` for Alertmanager's receiver).
        settings: Alertmanager's waits and ``for:`` overrides (tests use seconds).
        hosts: open connections to the VMs that run a component, by VM name (default: each opened
            through :func:`homelab_lib.clients.docker_hosts` when first needed, host key checked, into
            one pool this adapter owns and :meth:`close` closes; connections passed in are the caller's).
        require_up: verify wants every expected target up (False: reports them only).
        settle_timeout_s: how long verify waits for Prometheus to have scraped every target once.
        clock: the clock verify waits by.
    """

    name = "monitoring"
    world = "the monitoring VMs"

    def __init__(
        self,
        inv: Inventory,
        *,
        settings: Settings | None = None,
        hosts: Mapping[str, DockerHost] | None = None,
        require_up: bool = True,
        settle_timeout_s: float = SETTLE_TIMEOUT_S,
        clock: Clock = SYSTEM,
    ) -> None:
        self.inv = inv
        self.settings = settings or Settings()
        self._hosts = hosts
        self._own = HostPool()
        self.require_up = require_up
        self.settle_timeout_s = settle_timeout_s
        self.clock = clock
        self.reloads: list[str] = []  # every reload this adapter made, in order (tests and the notebook read it)

    def __repr__(self) -> str:
        return f"MonitoringAdapter({self.inv.name})"

    # ---------------------------------------------------------------- SSH

    def host(self, vm: str) -> DockerHost:
        """The open connection to a VM (opened now into the adapter's pool if it was not passed in).

        Raises:
            SshError: the VM cannot be reached or refuses the login; HostKeyRejected: its key is not known.
            NotFound: connections were passed in, and none to this VM.
        """
        if self._hosts is not None:
            if vm not in self._hosts:
                raise NotFound(
                    vm,
                    what="connected VM",
                    known=list(self._hosts),
                    where=self.world,
                    hint="pass a connection to every VM that runs Prometheus, Alertmanager or Grafana",
                )
            return self._hosts[vm]
        if vm not in self._own:
            from homelab_lib import clients

            self._own.update(clients.docker_hosts(self.inv, [vm]))
        return self._own[vm]

    def _sftp(self, vm: str) -> paramiko.SFTPClient:
        host = self.host(vm)
        with mapped(SFTP_ERRORS, where=host.where):
            return host.open_sftp()

    # ---------------------------------------------------------------- the steps

    def desired(self) -> MonitoringDesired:
        """Render every file (secrets resolved only into hashes) and where Prometheus and Alertmanager answer."""
        rendered = render(self.inv, self.settings)
        mon = self.inv.monitoring
        urls = {"prometheus": service_url(self.inv, "prometheus", mon.prometheus_url if mon else None)}
        if "alertmanager" in rendered.components:
            urls["alertmanager"] = service_url(self.inv, "alertmanager", mon.alertmanager_url if mon else None)
        return MonitoringDesired(rendered, MappingProxyType(urls))

    def observe(self, desired: MonitoringDesired) -> Observed:
        """Each rendered file's hash on its VM ('' when missing; keyed for a file with a secret), and the other
        files of the managed folders (:data:`STRAY`)."""
        found: dict[str, str] = {}
        rendered = desired.rendered
        for component, vm in sorted(rendered.components.items()):
            files = rendered.of(component)
            if not files:
                continue
            folder = files[0].folder
            sftp = self._sftp(vm)
            with contextlib.closing(sftp), mapped(SFTP_ERRORS, where=f"VM {vm}"):
                for f in files:
                    try:
                        with sftp.open(f.remote_path, "rb") as fh:
                            found[f.name] = f.digest(fh.read())
                    except FileNotFoundError:
                        found[f.name] = MISSING
                for sub in MANAGED_DIRS.get(component, ()):
                    try:
                        entries = sftp.listdir_attr(f"{folder}/{sub}")
                    except FileNotFoundError:
                        continue
                    for entry in entries:
                        name = f"{component}/{sub}/{entry.filename}"
                        if name not in found and stat.S_ISREG(entry.st_mode or 0):
                            found[name] = STRAY  # not read: it may hold a secret, and only its removal is planned
        return MappingProxyType(found)

    def plan(self, desired: MonitoringDesired, observed: Observed) -> Plan:
        """A file change per file that is missing or differs; a reload per reloadable component that changes."""
        changes = []
        touched: dict[str, str] = {}
        for f in desired.rendered.files:
            have = observed.get(f.name, MISSING)
            main = f.path.endswith((".yml", ".yaml")) and "/" not in f.path
            order = 11 if main else 10  # rules, secrets and dashboards before the config that loads them
            if have == f.sha256:
                changes.append(Change("file", f.name, Action.NOOP, f.vm, order=order))
                continue
            action = Action.CREATE if have == MISSING else Action.UPDATE
            fields = (FieldChange(_hashed(f), have[:12] or None, f.sha256[:12]),)
            changes.append(Change("file", f.name, action, f.vm, fields, reason=f.remote_path, order=order))
            touched.setdefault(f.component, f.vm)
        wanted = {f.name for f in desired.rendered.files}
        for name in sorted(set(observed) - wanted):
            component = name.split("/", 1)[0]
            vm = desired.rendered.components.get(component, "")
            changes.append(Change("file", name, Action.DELETE, vm, reason="not rendered any more", order=10))
            touched.setdefault(component, vm)
        for component in RELOADABLE:
            if component in touched:
                changes.append(Change("reload", component, Action.UPDATE, touched[component],
                                      reason="POST /-/reload", order=20))  # fmt: skip
        return Plan.of(changes, adapter=self.name)

    def carry_out(
        self,
        desired: MonitoringDesired,
        observed: Observed,
        plan: Plan,
        todo: Sequence[Change],
        *,
        allow_delete: bool,
        progress: Progress,
        clock: Clock,
    ) -> Carried:
        rendered = desired.rendered
        runs = check_files(rendered)  # raises before anything is copied
        steps = [f"{' '.join(r.command)}: ok" for r in runs]
        outcomes: list[Outcome] = []
        task = progress.task("monitoring", len(todo))
        done = 0
        try:
            files = {f.name: f for f in rendered.files}
            for vm in sorted({c.where for c in todo if c.kind == "file"}):
                sftp = self._sftp(vm)
                with contextlib.closing(sftp), mapped(SFTP_ERRORS, where=f"VM {vm}"):
                    for change in todo:
                        if change.kind != "file" or change.where != vm:
                            continue
                        start = clock.monotonic()
                        if change.action == Action.DELETE:
                            component, path = change.target.split("/", 1)
                            sftp.remove(f"{rendered.of(component)[0].folder}/{path}")
                            done += 1
                            outcomes.append(Outcome.of(change, DONE, seconds=clock.monotonic() - start))
                            task.advance(change.target)
                            continue
                        f = files[change.target]
                        folder = f.remote_path.rsplit("/", 1)[0]
                        sftp_makedirs(sftp, folder, 0o755)
                        if "/secrets" in folder:
                            sftp.chmod(folder, 0o711)
                        if f.secrets:
                            _write_secret(sftp, f)
                        else:
                            sftp_replace(sftp, f.remote_path, f.content(), f.mode)
                        done += 1
                        outcomes.append(Outcome.of(change, DONE, seconds=clock.monotonic() - start))
                        task.advance(change.target)
            written = {c.target.split("/", 1)[0] for c in todo if c.kind == "file"}
            for change in todo:
                if change.kind != "reload":
                    continue
                if change.target not in written:  # its only changes were deletes held back (no allow_delete)
                    outcomes.append(Outcome.of(change, "skipped", "none of its files was changed"))
                    continue
                start = clock.monotonic()
                timeout = self.inv.monitoring.reload_timeout_s if self.inv.monitoring else 10.0
                PrometheusApi(desired.urls[change.target], name=change.target, timeout=timeout).reload()
                self.reloads.append(change.target)
                done += 1
                steps.append(f"reloaded {change.target}")
                outcomes.append(Outcome.of(change, DONE, "POST /-/reload: 200", clock.monotonic() - start))
                task.advance(f"reload {change.target}")
        except HomelabError as e:
            raise MonitoringError(
                f"{e.message} (after {done} of {len(todo)} change(s) were done; run again to finish)",
                where=e.where,
                hint=e.hint,
            ) from e
        task.done()
        return Carried(tuple(outcomes), tuple(steps))

    def report(self, desired: MonitoringDesired) -> MonitoringReport:
        """Prometheus's view now: every target's health, the unexpected ones, and the alerts."""
        return status(PrometheusApi(desired.urls["prometheus"]), desired.rendered.targets.targets)

    def settled(self, desired: MonitoringDesired) -> MonitoringReport:
        """The report once Prometheus has scraped every expected target and found it up (or the settle
        timeout ran out): a target down at one scrape (a pod between two readiness probes, a service
        restarting) gets the rest of the window to come back before it counts as down."""
        deadline = self.clock.monotonic() + self.settle_timeout_s
        while True:
            report = self.report(desired)
            waiting = [t for t in report.targets if t.expected and t.health in ("unknown", "missing", "down")]
            if not waiting or self.clock.monotonic() >= deadline:
                return report
            self.clock.sleep(0.5)

    def check(self, desired: MonitoringDesired, result: ApplyResult) -> VerifyResult[MonitoringReport]:
        """The files are the rendered ones; Prometheus reloaded them; every expected target is up, none unexpected."""
        found: list[Check] = []
        observed = self.observe(desired)
        for f in desired.rendered.files:
            have = observed.get(f.name, MISSING)
            ok = have == f.sha256
            found.append(Check("file", f.name, f.vm, ok, "as rendered" if ok else
                               ("missing" if not have else f"differs ({_hashed(f)} {have[:12]})")))  # fmt: skip
        api = PrometheusApi(desired.urls["prometheus"])
        try:
            report = self.settled(desired)
            reload_ok = api.query("prometheus_config_last_reload_successful")
        except PrometheusUnreachable as e:
            found.append(Check("prometheus", "api", desired.urls["prometheus"], False, e.message))
            return VerifyResult(
                self.name, result.confirmed, tuple(found), MonitoringReport(()), "Prometheus does not answer"
            )
        loaded = bool(reload_ok) and all(float(s["value"][1]) == 1 for s in reload_ok)
        said = "last reload succeeded" if loaded else "its last reload FAILED: it runs an older config"
        found.append(Check("prometheus", "config", desired.rendered.components["prometheus"], loaded, said))
        for t in report.targets:
            if not t.expected:
                found.append(Check("target", f"{t.job} {t.address}", t.host, False, "unexpected: not in the inventory"))
            else:
                ok = t.health == "up" or not self.require_up
                detail = t.health + (f": {t.error}" if t.error else "")
                found.append(Check("target", f"{t.job} {t.address}", t.host, ok, detail))
        note = report.summary()
        return VerifyResult(self.name, result.confirmed, tuple(found), report, note)

    def close(self) -> None:
        """Close the SSH connections this adapter opened (not those passed in)."""
        self._own.close()


def _hashed(f: ConfigFile) -> str:
    """How the plan names a file's hash: ``hmac-sha256`` for one that holds a secret (keyed), else ``sha256``."""
    return "hmac-sha256" if f.secrets else "sha256"


def _write_secret(sftp: paramiko.SFTPClient, f: ConfigFile) -> None:
    """Write a file that holds a secret: readable by its owner and the group of the containers' user (nobody).

    The temp file is made exclusive with mode 0600 (:func:`~homelab_lib.hosts.ssh.sftp_create`) and given to
    that group before any byte is written; then it is written, made 0640 and renamed into place. When the SSH
    user may not give it to that group, it is removed and nothing is written: readable by all, the secret
    would be anyone's on the VM; 0600, the containers could not read it.

    Raises:
        MonitoringError: the SSH user may not give the file to group 65534 (names the fix).
        OSError: SFTP failed.
    """
    tmp = f"{f.remote_path}.homelab-tmp"
    with contextlib.suppress(FileNotFoundError):
        sftp.remove(tmp)
    denied: OSError | None = None
    with sftp_create(sftp, tmp, 0o600) as fh:
        try:
            fh.chown(fh.stat().st_uid or 0, CONTAINER_GID)
        except OSError as e:
            denied = e
        else:
            fh.write(f.content())
            fh.chmod(SECRET_MODE)
    if denied is not None:
        sftp.remove(tmp)
        raise MonitoringError(
            f"{f.name} holds a secret, and the SSH user may not give it to group {CONTAINER_GID} (nogroup), whose "
            f"containers read it ({denied}); nothing was written: readable by all it would be anyone's on the VM",
            where=f"{f.vm}:{f.remote_path}",
            hint=f"log in as root (ssh.user), or add the SSH user to group {CONTAINER_GID} on {f.vm} "
            "(usermod -aG nogroup USER), then run again",
        ) from denied
    sftp.posix_rename(tmp, f.remote_path)


if TYPE_CHECKING:  # mypy proves the class offers the contract's steps, names and arguments
    _contract: type[Adapter[MonitoringDesired, Observed, MonitoringReport]] = MonitoringAdapter


def adapter(inv: Inventory, *, settings: Settings | None = None) -> MonitoringAdapter:
    """Runbook 07's adapter for an inventory (VMs are connected at the first observe)."""
    return MonitoringAdapter(inv, settings=settings)
