"""The K3s bootstrap adapter on the runbook contract (:mod:`homelab_lib.core.contract`): runbook 03.

desired = the inventory's ``k3s:`` section in K3s's terms (:func:`.state.desired_state`);
observed = the VM over SSH (``k3s --version``, config.yaml, ``systemctl is-active k3s``, the
kubeconfig) and the API (``/version``, the node); plan = :func:`.plan.plan`; apply = the
contract's rules, then config.yaml, the install script, a restart, the kubeconfig, and a wait
until the cluster is ready; verify = the release and config as planned, the service active, the
kubeconfig current and mode 0600, ``/readyz`` ok, the node Ready, kube-system's components available.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from homelab_lib.core.clock import SYSTEM, Clock
from homelab_lib.core.contract import DONE, Adapter, ApplyResult, BaseAdapter, Carried, Check, Outcome, VerifyResult
from homelab_lib.core.errors import K3sError
from homelab_lib.core.plan import Change, Plan
from homelab_lib.core.progress import Progress
from homelab_lib.hosts.docker import DockerHost, HostPool
from homelab_lib.k3s import api, kubeconfig, remote
from homelab_lib.k3s.plan import ADAPTER
from homelab_lib.k3s.plan import plan as make_plan
from homelab_lib.k3s.state import ApiState, K3sDesired, K3sObserved, K3sReport, desired_state
from homelab_lib.kube import api as kube_api

if TYPE_CHECKING:
    from collections.abc import Sequence

    from homelab_lib.inventory.model import Inventory


class K3sBootstrap(BaseAdapter[K3sDesired, K3sObserved, K3sReport]):
    """Runbook 03's steps against the inventory's K3s VM.

    Args:
        inv: the inventory.
        host: an open SSH connection to the K3s VM (default: opened at the first observe through
            :func:`homelab_lib.clients.docker_hosts`, host key checked, and closed by :meth:`close`).
        clock: the clock the readiness wait goes by.
    """

    name = ADAPTER
    world = "the K3s VM"
    conflicts_block = True

    def __init__(self, inv: Inventory, *, host: DockerHost | None = None, clock: Clock = SYSTEM) -> None:
        self.inv = inv
        self._host = host
        self._own: HostPool | None = None
        self.clock = clock

    def __repr__(self) -> str:
        return f"K3sBootstrap({self.inv.name})"

    @property
    def host(self) -> DockerHost:
        """The SSH connection to the K3s VM (opened now if needed).

        Raises:
            SshError: the VM cannot be reached or refuses the login; HostKeyRejected: its key is not known.
        """
        if self._host is None:
            from homelab_lib import clients

            assert self.inv.k3s is not None
            self._own = clients.docker_hosts(self.inv, [self.inv.k3s.vm])
            self._host = self._own[self.inv.k3s.vm]
        return self._host

    # ------------------------------------------------------------ the steps

    def desired(self) -> K3sDesired:
        """K3s as the inventory wants it, config.yaml rendered (no I/O)."""
        return desired_state(self.inv)

    def _localized(self, desired: K3sDesired) -> str | None:
        text = remote.remote_kubeconfig(self.host)
        if text is None:
            return None
        return kubeconfig.localize(text, homelab=desired.homelab, address=desired.address, where=desired.where)

    def observe(self, desired: K3sDesired) -> K3sObserved:
        """The VM's K3s (release, config.yaml, service, kubeconfig) and what its API answers; reads only."""
        version, config, running, remote_kubeconfig = remote.snapshot(self.host)
        wanted = None
        if remote_kubeconfig is not None:
            wanted = kubeconfig.localize(
                remote_kubeconfig, homelab=desired.homelab, address=desired.address, where=desired.where
            )
        state = kubeconfig.state(desired.kubeconfig, wanted)
        found = ApiState()
        if wanted is not None and running:
            try:
                found = api.api_state(kube_api.client_from(wanted, where=desired.where), where=desired.where)
            except K3sError as e:
                found = ApiState(False, error=e.message)
        return K3sObserved(desired.vm, version, config, running, state, found)

    def plan(self, desired: K3sDesired, observed: K3sObserved) -> Plan:
        """config.yaml, the release (install, upgrade, or a conflict), the service, the kubeconfig; pure."""
        return make_plan(desired, observed)

    def carry_out(
        self,
        desired: K3sDesired,
        observed: K3sObserved,
        plan: Plan,
        todo: Sequence[Change],
        *,
        allow_delete: bool,
        progress: Progress,
        clock: Clock,
    ) -> Carried:
        outcomes: list[Outcome] = []
        steps: list[str] = []
        task = progress.task(f"k3s on {desired.vm}", len(todo) + 1)
        started = False
        for change in todo:
            began = clock.monotonic()
            if change.kind == "config":
                remote.write_config(self.host, desired)
                detail = f"wrote {change.target}"
            elif change.kind == "k3s":
                last = remote.install(self.host, desired)
                started = True
                detail = f"{change.reason} {desired.version}" + (f": {last[-1]}" if last else "")
            elif change.kind == "service":
                remote.restart(self.host, desired)
                started = True
                detail = "systemctl restart k3s"
            elif change.kind == "kubeconfig":
                self._fetch_kubeconfig(desired, clock)
                detail = f"fetched, server https://{desired.address}, context {desired.homelab}, mode 0600"
            else:  # pragma: no cover - the plan makes no other kind
                raise K3sError(f"unknown change kind {change.kind!r}", where=desired.where)
            seconds = clock.monotonic() - began
            outcomes.append(Outcome.of(change, DONE, detail, seconds))
            steps.append(f"{change.kind} {change.target}: {detail}")
            task.advance(f"{change.kind}: {detail}")
        if started:
            if desired.kubeconfig is not None and not any(c.kind == "kubeconfig" for c in todo):
                self._fetch_kubeconfig(desired, clock)  # an upgrade or restart may renew it: keep it current
            api.wait_ready(
                lambda: self._client(desired),
                desired.components,
                timeout_s=desired.ready_timeout_s,
                clock=clock,
                where=desired.where,
            )
            steps.append(
                "ready: /readyz ok, node Ready, " + (", ".join(desired.components) or "no component") + " available"
            )
        task.done("ready" if started else "done")
        return Carried(tuple(outcomes), tuple(steps))

    def _fetch_kubeconfig(self, desired: K3sDesired, clock: Clock) -> None:
        """Fetch the VM's kubeconfig (waiting for K3s to write it) and keep it at desired.kubeconfig."""
        assert desired.kubeconfig is not None
        deadline = clock.monotonic() + desired.ready_timeout_s
        while (text := self._localized(desired)) is None:
            if clock.monotonic() >= deadline:
                raise K3sError(
                    "K3s did not write /etc/rancher/k3s/k3s.yaml",
                    where=desired.where,
                    hint="is k3s running on the VM? look at its log (journalctl -u k3s)",
                )
            clock.sleep(kube_api.POLL_S)
        kubeconfig.store(desired.kubeconfig, text)

    def _client(self, desired: K3sDesired) -> Any:
        """An API client: from the kept kubeconfig, else from the VM's (localized, in memory)."""
        if desired.kubeconfig is not None and desired.kubeconfig.exists():
            return kube_api.client_from(Path(desired.kubeconfig), where=desired.where)
        text = self._localized(desired)
        if text is None:
            raise K3sError("K3s has written no kubeconfig yet", where=desired.where, hint="is k3s running?")
        return kube_api.client_from(text, where=desired.where)

    def check(self, desired: K3sDesired, result: ApplyResult) -> VerifyResult[K3sReport]:
        """The release, config and service as planned, the kubeconfig current, the cluster ready."""
        where = desired.where
        observed = self.observe(desired)
        config_note = "as rendered" if observed.config == desired.config else "differs from the rendered one"
        if observed.config is None:
            config_note = "missing"
        checks = [
            Check("k3s", "version", where, observed.version == desired.version,
                  f"installed {observed.version or 'nothing'}" + ("" if observed.version == desired.version
                                                                  else f", wanted {desired.version}")),
            Check("config", "config.yaml", where, observed.config == desired.config,
                  config_note),
            Check("service", "k3s", where, observed.active, "active" if observed.active else "not active"),
        ]  # fmt: skip
        if desired.kubeconfig is not None:
            ok = observed.kubeconfig == "current"
            checks.append(
                Check("kubeconfig", "kubeconfig", where, ok, "current, mode 0600" if ok else observed.kubeconfig)
            )
        found = K3sReport(kubeconfig=kubeconfig.describe(desired.kubeconfig))
        if observed.installed and observed.active:
            try:
                found = api.report(self._client(desired), desired.components, where=where,
                                   kubeconfig=kubeconfig.describe(desired.kubeconfig))  # fmt: skip
            except K3sError as e:
                checks.append(Check("api", "kubernetes API", where, False, str(e)))
        if found.version:
            checks.append(Check("api", "/readyz", where, found.readyz == "ok", found.readyz))
            if not found.nodes:
                checks.append(Check("node", desired.vm, where, False, "no node registered"))
            checks += [
                Check("node", n.name, where, n.ready, f"Ready, {n.version}" if n.ready else "not Ready")
                for n in found.nodes
            ]
            checks += [
                Check("component", f"kube-system/{c.name}", where, c.available,
                      f"available ({c.ready})" if c.available else f"not available ({c.ready})")
                for c in found.components
            ]  # fmt: skip
        note = f"API {found.version}" if found.version else "the API was not read"
        return VerifyResult(self.name, result.confirmed, tuple(checks), found, note)

    def close(self) -> None:
        """Close the SSH connection this adapter opened (not one passed in)."""
        if self._own is not None:
            self._own.close()
            self._own = None
            self._host = None


if TYPE_CHECKING:  # mypy proves the class offers the contract's steps, names and arguments
    _contract: type[Adapter[K3sDesired, K3sObserved, K3sReport]] = K3sBootstrap


def adapter(inv: Inventory, *, clock: Clock = SYSTEM) -> K3sBootstrap:
    """Runbook 03's adapter for an inventory (the K3s VM is connected at the first observe)."""
    return K3sBootstrap(inv, clock=clock)
