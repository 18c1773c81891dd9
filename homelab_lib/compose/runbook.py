"""The Compose adapter on the runbook contract (:mod:`homelab_lib.core.contract`): runbook 02.

desired = the inventory's stacks rendered (one project per host and stack) and
checked (Compose schema and ``docker compose config``); observed = what runs on
every Docker host (docker SDK over SSH); plan = :func:`.drift.plan`; apply = the
contract's rules, then :func:`.deploy.carry_out`; verify = every service runs
healthy as rendered and its health endpoint answers through its published port,
and every stack taken down is gone.

Conflicts (a container on a host that belongs to no stack, a stack name no host
has) never block a deploy: they are reported and left to the operator.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from homelab_lib.compose.deploy import HEALTH_TIMEOUT_S, carry_out
from homelab_lib.compose.drift import plan as make_plan
from homelab_lib.compose.observe import HostState, observe_all
from homelab_lib.compose.render import Project, render
from homelab_lib.compose.validate import validate
from homelab_lib.compose.verify import PROBE_TIMEOUT_S, ComposeReport, checks, probe, status
from homelab_lib.core.clock import SYSTEM, Clock
from homelab_lib.core.contract import DONE, Adapter, ApplyResult, BaseAdapter, Carried, Check, VerifyResult
from homelab_lib.core.plan import Action, Change, Plan
from homelab_lib.core.progress import Progress
from homelab_lib.hosts.docker import DockerHost, HostPool

if TYPE_CHECKING:
    from homelab_lib.inventory.model import Inventory

Observed = Mapping[str, HostState]


@dataclass(frozen=True)
class ComposeDesired:
    """The stacks as rendered and checked: what the plan compares with what runs.

    Attributes:
        homelab: the inventory's name (the ``homelab.homelab`` label).
        projects: one per (host, stack), in inventory order.
        stacks: the stacks the run is limited to (empty: all); stacks outside it are neither
            deployed nor proposed for removal.
    """

    homelab: str
    projects: tuple[Project, ...]
    stacks: tuple[str, ...] = ()


class ComposeAdapter(BaseAdapter[ComposeDesired, Observed, ComposeReport]):
    """Runbook 02's steps against the inventory's Docker hosts.

    Args:
        inv: the inventory.
        stacks: limit the run to these stacks (``media``, or ``docker-sleepy/arr``); empty for all.
        hosts: open Docker hosts by name (default: every Docker host of the inventory, connected at
            the first observe and closed by :meth:`close`).
        local_compose: the Compose v2 command of this machine, for ``compose config`` checks
            (default :func:`homelab_lib.clients.local_compose`).
        health_timeout_s: how long a stack may take to become healthy.
        probe_timeout_s: seconds per health probe.
        clock: the clock health waits, probes and uptimes go by.
    """

    name = "compose"
    world = "the Docker hosts"
    conflicts_block = False

    def __init__(
        self,
        inv: Inventory,
        *,
        stacks: Sequence[str] = (),
        hosts: Mapping[str, DockerHost] | None = None,
        local_compose: Sequence[str] | None = None,
        health_timeout_s: float = HEALTH_TIMEOUT_S,
        probe_timeout_s: float = PROBE_TIMEOUT_S,
        clock: Clock = SYSTEM,
    ) -> None:
        self.inv = inv
        self.stacks = tuple(stacks)
        self._hosts = hosts
        self._own: HostPool | None = None
        self._local = tuple(local_compose) if local_compose is not None else None
        self.health_timeout_s = health_timeout_s
        self.probe_timeout_s = probe_timeout_s
        self.clock = clock

    def __repr__(self) -> str:
        return f"ComposeAdapter({self.inv.name}, stacks={list(self.stacks)})"

    @property
    def hosts(self) -> Mapping[str, DockerHost]:
        """The open Docker hosts (every Docker host of the inventory: connected now, host keys checked)."""
        if self._hosts is None:
            from homelab_lib import clients

            self._own = clients.docker_hosts(self.inv)
            self._hosts = self._own
        return self._hosts

    def desired(self) -> ComposeDesired:
        """Render the stacks, then check every file (schema and ``docker compose config``) before any host is touched.

        Raises:
            ConfigError: a stack cannot be rendered (a secret without a reference...).
            ComposeInvalid: a rendered file is rejected.
        """
        projects = render(self.inv, self.stacks)
        if self._local is None:
            from homelab_lib import clients

            self._local = clients.local_compose()
        validate(projects, self._local)
        return ComposeDesired(self.inv.name, tuple(projects), self.stacks)

    def observe(self, desired: ComposeDesired) -> Observed:
        """What runs on every Docker host (in parallel); reads only."""
        return observe_all(self.hosts, desired.homelab)

    def plan(self, desired: ComposeDesired, observed: Observed) -> Plan:
        """Create, update (with the fields that differ), no-op, delete per service and stack; conflicts for strays."""
        made = make_plan(desired.projects, observed, homelab=desired.homelab, stacks=desired.stacks)
        return Plan(made.changes, self.name)

    def carry_out(
        self,
        desired: ComposeDesired,
        observed: Observed,
        plan: Plan,
        todo: Sequence[Change],
        *,
        allow_delete: bool,
        progress: Progress,
        clock: Clock,
    ) -> Carried:
        return carry_out(
            desired.projects,
            self.hosts,
            plan,
            todo,
            allow_delete=allow_delete,
            progress=progress,
            clock=clock,
            health_timeout_s=self.health_timeout_s,
        )

    def check(self, desired: ComposeDesired, result: ApplyResult) -> VerifyResult[ComposeReport]:
        """Each service runs healthy as rendered and answers; each stack taken down is gone."""
        observed = observe_all(self.hosts, desired.homelab)
        rows = tuple(status(desired.projects, observed, self.clock.now()))
        probes = tuple(probe(desired.projects, timeout=self.probe_timeout_s, clock=self.clock))
        found = checks(rows, probes)
        for o in result.outcomes:
            if o.kind == "stack" and o.action == Action.DELETE and o.result == DONE:
                state = observed.get(o.where)
                left = [c.name for c in state.of(desired.homelab) if c.stack == o.target] if state else []
                found.append(
                    Check("stack", o.target, o.where, not left, f"still runs: {', '.join(left)}" if left else "removed")
                )
        answering = sum(p.ok for p in probes)
        note = f"{answering} of {len(probes)} health endpoint(s) answer"
        return VerifyResult(self.name, result.confirmed, tuple(found), ComposeReport(rows, probes), note)

    def close(self) -> None:
        """Close the SSH connections this adapter opened."""
        if self._own is not None:
            self._own.close()
            self._own = None
            self._hosts = None


if TYPE_CHECKING:  # mypy proves the class offers the contract's steps, names and arguments
    _contract: type[Adapter[ComposeDesired, Observed, ComposeReport]] = ComposeAdapter


def adapter(inv: Inventory, *, stacks: Sequence[str] = ()) -> ComposeAdapter:
    """Runbook 02's adapter for an inventory (hosts are connected at the first observe)."""
    return ComposeAdapter(inv, stacks=stacks)
