"""The runbook contract: the five steps every adapter offers, with the same names, arguments and results.

Every runbook reads the same way, whichever outside system its adapter talks to::

    runbook = proxmox.adapter(inv, only_vms=only_vms)       # or compose.adapter(inv, stacks=stacks), ...
    desired = runbook.desired()                             # 1. desired state, from the inventory
    observed = runbook.observe(desired)                     # 2. what the world has (reads only)
    plan = runbook.plan(desired, observed)                  # 3. typed changes, a pure function
    contract.show_plan(plan)                                #    the table, and the plan's canonical JSON + sha256
    result = runbook.apply(desired, plan, confirm=confirm, allow_delete=allow_delete,
                           approved_plan=approved_plan)     # 4. carry it out (a dry run without confirm)
    verified = runbook.verify(desired, result)              # 5. is the world what the plan promised?
    runbook.close()

or, in one call (a test, a benchmark, a scheduled job): ``run(runbook, confirm=True)``.

The rules, enforced here once for every adapter by :class:`BaseAdapter`:

- **plan** is pure: a :class:`~homelab_lib.core.plan.Plan` of typed changes, computed from
  (desired, observed) and nothing else; its canonical form has a sha256.
- **apply** with ``approved_plan`` (``{adapter: sha256}`` of a reviewed dry run's plans, or one
  plan's sha256) refuses a plan whose hash differs, or (a mapping) any plan shown that differs or an
  approved one not shown yet (:func:`check_approved`; :class:`~homelab_lib.core.errors.PlanNotApproved`),
  before anything else; without
  ``confirm`` it changes nothing and says what it would do; a delete needs ``allow_delete`` too;
  conflicts are never applied (and refuse the whole plan where the adapter says so); just before it
  changes anything it observes again and refuses a plan the world no longer matches
  (:class:`~homelab_lib.core.errors.StalePlan`, naming what moved); progress goes to a
  :class:`~homelab_lib.core.progress.Progress` and time comes from one :class:`~homelab_lib.core.clock.Clock`.
  It returns an :class:`ApplyResult`: one :class:`Outcome` per change of the plan.
- **verify** reports (a :class:`VerifyResult` of :class:`Check`\\ s) after a dry run, and raises
  :class:`~homelab_lib.core.errors.VerifyFailed` after a confirmed run whose world is not what the plan
  promised.
- Errors at an adapter's boundary are translated by a table
  (:data:`~homelab_lib.core.errors.ErrorTable`, :func:`~homelab_lib.core.errors.mapped`).

Results: members that are data are properties (``ok``, ``applied``, ``confirmed``); renderings
are methods (``summary()``, ``table()``), as on :class:`~homelab_lib.core.plan.Plan`.

Reviewed plans: :func:`show_plan` emits the plan under the MIME type
:data:`~homelab_lib.core.plan.PLAN_MIME` beside its table; the runner finds it in the executed
notebook (every plan, the last per adapter: :func:`plan_in_notebook`) and archives them under one hash,
and ``homelab run NOTEBOOK --approve RUN_ID`` passes ``{adapter: sha256}`` back as ``approved_plan``.
"""

from __future__ import annotations

import html
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from homelab_lib.core import progress as progress_mod
from homelab_lib.core import tables
from homelab_lib.core.clock import SYSTEM, Clock, SystemClock
from homelab_lib.core.errors import (
    ErrorTable,
    PlanConflict,
    PlanNotApproved,
    RunbookError,
    StalePlan,
    VerifyFailed,
    mapped,
)
from homelab_lib.core.plan import PLAN_MIME, Action, Change, Plan, changes_by_key, diff_plans, document_sha256
from homelab_lib.core.progress import Progress

if TYPE_CHECKING:
    import pandas as pd

Approval = str | Mapping[str, str] | None
"""What ``approved_plan`` takes: ``{adapter: sha256}`` of a reviewed run's plans, one plan's sha256, or nothing."""

_SHOWN: dict[str, str] = {}  # adapter -> sha256 of the last plan show_plan showed for it, in this process


def shown_plans() -> dict[str, str]:
    """``{adapter: sha256}`` of the last plan :func:`show_plan` showed for each adapter in this process."""
    return dict(_SHOWN)


def forget_shown_plans() -> None:
    """Forget the plans shown so far (a test, or a notebook that starts its plans over)."""
    _SHOWN.clear()


def check_approved(adapter: str, digest: str, approved: Approval) -> None:
    """Refuse to apply adapter's plan (sha256 digest) unless it, and every plan shown, is an approved one.

    A str approves one plan (this one). A mapping ``{adapter: sha256}`` approves a reviewed run's plans
    all together: this adapter's plan and every plan :func:`show_plan` showed must be its adapter's approved
    one, no plan may be shown that was not reviewed, and every approved adapter must have shown its plan before
    the first apply, so a notebook under ``--approve`` applies all its plans or none.

    Raises:
        PlanNotApproved: naming the adapter whose plan is not the approved one (or not shown yet).
    """
    if not approved:
        return
    if isinstance(approved, str):
        if approved != digest:
            raise PlanNotApproved(planned=digest, approved=approved, where=adapter)
        return
    now = {**_SHOWN, adapter: digest}
    for name in sorted(approved.keys() | now.keys()):
        if now.get(name) != approved.get(name):
            planned = now.get(name) or "not-shown"
            raise PlanNotApproved(planned=planned, approved=approved.get(name) or "none", where=name)


PLANS_FORMAT = "homelab-plans/1"  # a run's record of the plans of several adapters

D = TypeVar("D")
O = TypeVar("O")  # noqa: E741 - the observed state, beside D and R
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)

# What happened to a change (Outcome.result).
DONE = "done"
FAILED = "failed"
NOT_STARTED = "not started"
NEEDS_ALLOW_DELETE = "needs allow_delete"
CONFLICT = "conflict"


def would(action: Action) -> str:
    """The result of a change in a dry run: ``would create``, ``would update``, ``would delete``."""
    return f"would {action.value}"


def _details(change: Change) -> str:
    return "; ".join(str(f) for f in change.fields) or change.reason


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class Outcome:
    """What apply did (or would do) with one change of the plan.

    Attributes:
        kind: what sort of thing (``vm``, ``service``, ``stack``...), as in the plan.
        target: its name, as in the plan.
        where: node, host..., as in the plan.
        action: what the plan said: create, update, delete, conflict.
        result: ``done``, ``failed``, ``not started`` (after another change failed),
            ``would create|update|delete`` (dry run), ``needs allow_delete``, ``conflict``.
        detail: the fields, steps or error, in words.
        seconds: how long it took (0 when nothing was done).
    """

    kind: str
    target: str
    where: str
    action: Action
    result: str
    detail: str = ""
    seconds: float = 0.0

    @classmethod
    def of(cls, change: Change, result: str, detail: str | None = None, seconds: float = 0.0) -> Outcome:
        """The outcome of change; detail defaults to the change's field diff or reason."""
        return cls(
            change.kind,
            change.target,
            change.where,
            change.action,
            result,
            _details(change) if detail is None else detail,
            seconds,
        )

    @property
    def ok(self) -> bool:
        return self.result != FAILED


@dataclass(frozen=True)
class ApplyResult:
    """The result of every adapter's apply: one outcome per change of the plan that is not a no-op.

    Attributes:
        adapter: the adapter (``proxmox``, ``compose``...).
        confirmed: apply was allowed to change things (``confirm=True``).
        plan_sha256: the sha256 of the plan it was given.
        outcomes: per change, in plan order (then deletes left out, conflicts).
        steps: one line per completed step, in the order they ended.
        facts: what apply learned, by target (Proxmox: the IP each started VM's agent reported).
    """

    adapter: str
    confirmed: bool
    plan_sha256: str
    outcomes: tuple[Outcome, ...] = ()
    steps: tuple[str, ...] = ()
    facts: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def applied(self) -> bool:
        """True if anything was changed."""
        return any(o.result == DONE for o in self.outcomes)

    @property
    def ok(self) -> bool:
        """True if no change failed."""
        return all(o.ok for o in self.outcomes)

    @property
    def not_done(self) -> tuple[str, ...]:
        """One line per change left out on purpose or because of another's failure."""
        out = []
        for o in self.outcomes:
            if o.result == NEEDS_ALLOW_DELETE:
                out.append(f"{o.target}: delete needs allow_delete=True")
            elif o.result == CONFLICT:
                out.append(f"{o.target}: conflict, left to you: {o.detail}")
            elif o.result == NOT_STARTED:
                out.append(f"{o.target}: not started (another change failed)")
        return tuple(out)

    def _count(self, results: Sequence[str]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for o in self.outcomes:
            if o.result in results:
                key = o.action.value if o.result.startswith("would ") or o.result == DONE else o.result
                counts[key] = counts.get(key, 0) + 1
        return counts

    def summary(self) -> str:
        """One line for people: what was (or would be) done, and what was left out."""
        if not self.outcomes:
            return "nothing to do: everything is as the inventory says"
        wanted = [would(a) for a in (Action.CREATE, Action.UPDATE, Action.DELETE)]
        left = []
        held = sum(o.result == NEEDS_ALLOW_DELETE for o in self.outcomes)
        if held:
            left.append(f"{held} delete(s) need allow_delete")
        conflicts = sum(o.result == CONFLICT for o in self.outcomes)
        if conflicts:
            left.append(
                f"{conflicts} conflict(s) to resolve first" if not self.confirmed else f"{conflicts} conflict(s)"
            )
        failed = sum(o.result == FAILED for o in self.outcomes)
        if failed:
            left.append(f"{failed} failed")
        later = "; " + "; ".join(left) if left else ""
        if not self.confirmed:
            counts = self._count(wanted)
            what = ", ".join(f"{n} {a}" for a, n in counts.items()) or "nothing to apply"
            return f"dry run: nothing changed ({what}{later}); run with confirm=True to apply"
        done = sum(o.result == DONE for o in self.outcomes)
        if not done:
            return f"nothing done{later or ': nothing to apply'}"
        return f"applied: {done} change(s), {len(self.steps)} step(s){later}"

    def table(self) -> pd.DataFrame:
        """One row per outcome: action, kind, target, where, result, detail, seconds."""
        import pandas as pd

        return pd.DataFrame(
            [
                {
                    "action": o.action.value,
                    "kind": o.kind,
                    "target": o.target,
                    "where": o.where or "-",
                    "result": o.result,
                    "detail": o.detail or "-",
                    "seconds": round(o.seconds, 1),
                }
                for o in self.outcomes
            ],
            columns=["action", "kind", "target", "where", "result", "detail", "seconds"],
        )


@dataclass(frozen=True)
class Check:
    """One thing verify checked.

    Attributes:
        kind: what sort of thing, as in the plan (``vm``, ``service``...).
        target: its name.
        where: node, host...
        ok: it is as the plan promised.
        detail: what was seen.
    """

    kind: str
    target: str
    where: str
    ok: bool
    detail: str

    def __str__(self) -> str:
        at = f" ({self.where})" if self.where else ""
        return f"{self.kind} {self.target}{at}: {self.detail}"


@dataclass(frozen=True)
class VerifyResult(Generic[R_co]):
    """The result of every adapter's verify.

    Attributes:
        adapter: the adapter.
        confirmed: the apply it checks was confirmed (then a failed check raised instead).
        checks: one per thing checked.
        report: the adapter's own report for its tables and charts (Proxmox: the VMs as they run;
            Compose: each service's status and probe).
        note: an extra line for the summary (``8 health endpoint(s) answer``).
    """

    adapter: str
    confirmed: bool
    checks: tuple[Check, ...]
    report: R_co
    note: str = ""

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def problems(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.ok)

    def _counts(self) -> str:
        counts: dict[str, int] = {}
        for c in self.checks:
            counts[c.kind] = counts.get(c.kind, 0) + 1
        return ", ".join(f"{n} {kind}(s)" for kind, n in counts.items()) or "nothing"

    def summary(self) -> str:
        """One line: all as promised, or how many checks fail (and the first ones)."""
        note = f"; {self.note}" if self.note else ""
        if not self.checks:
            return f"nothing to verify{note}"
        if self.ok:
            return f"verified: {self._counts()} as the plan promised{note}"
        bad = self.problems
        shown = "; ".join(str(c) for c in bad[:3]) + ("; ..." if len(bad) > 3 else "")
        lead = "FAILED" if self.confirmed else "dry run"
        return f"{lead}: {len(bad)} of {len(self.checks)} check(s) fail now ({shown}){note}"

    def table(self) -> pd.DataFrame:
        """One row per check: ok, kind, target, where, detail (failures first)."""
        import pandas as pd

        rows = sorted(self.checks, key=lambda c: c.ok)
        return pd.DataFrame(
            [{"ok": "yes" if c.ok else "NO", "kind": c.kind, "target": c.target, "where": c.where or "-",
              "detail": c.detail} for c in rows],
            columns=["ok", "kind", "target", "where", "detail"],
        )  # fmt: skip


@dataclass(frozen=True)
class Carried:
    """What an adapter's :meth:`BaseAdapter.carry_out` did: outcomes of the changes it was given, steps, facts."""

    outcomes: tuple[Outcome, ...]
    steps: tuple[str, ...] = ()
    facts: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


# ---------------------------------------------------------------- the contract


class Adapter(Protocol[D, O, R_co]):
    """What every runbook adapter offers: five steps, the same names, arguments and results.

    ``D`` is the adapter's desired state, ``O`` its observed state, ``R`` the report its verify
    returns for tables and charts. Clients and the run's scope (``only_vms``, ``stacks``...) are
    given when the adapter is made (``proxmox.adapter(inv, ...)``), never read from the environment.
    """

    @property
    def name(self) -> str:
        """The adapter's name (``proxmox``, ``compose``...); plans carry it."""
        ...

    def desired(self) -> D:
        """The desired state, from the inventory (may check it: render, validate)."""
        ...

    def observe(self, desired: D) -> O:
        """What the world has, for what desired touches; reads only."""
        ...

    def plan(self, desired: D, observed: O) -> Plan:
        """The changes that make observed desired; a pure function."""
        ...

    def apply(
        self,
        desired: D,
        plan: Plan,
        *,
        confirm: bool = False,
        allow_delete: bool = False,
        approved_plan: Approval = None,
        progress: Progress | None = None,
        clock: Clock | None = None,
    ) -> ApplyResult:
        """Carry out plan (see :meth:`BaseAdapter.apply` for the rules)."""
        ...

    def verify(self, desired: D, result: ApplyResult) -> VerifyResult[R_co]:
        """Check the world against the plan's promise; raises after a confirmed run that missed it."""
        ...

    def close(self) -> None:
        """Release what the adapter opened (SSH connections...)."""
        ...


class BaseAdapter(ABC, Generic[D, O, R]):
    """The contract's rules, once: subclasses give the steps, this class gives ``apply`` and ``verify``.

    A subclass sets :attr:`name` and :attr:`world`, and implements :meth:`desired`, :meth:`observe`,
    :meth:`plan`, :meth:`carry_out` (the actual changes) and :meth:`check` (what verify reads).

    Attributes:
        name: the adapter's name.
        world: what it changes, for messages (``the cluster``, ``the Docker hosts``).
        conflicts_block: a plan with any conflict is refused whole (True), or its conflicts are
            left out and reported while the rest is applied (False: a stray container on a
            Docker host need not stop a deploy).
        clock: the adapter's clock (apply's ``clock`` argument overrides it for one apply).
    """

    name: str = ""
    world: str = "the world"
    conflicts_block: bool = True
    clock: Clock = SYSTEM

    # --------------------------------------------------------- the adapter's part

    @abstractmethod
    def desired(self) -> D: ...

    @abstractmethod
    def observe(self, desired: D) -> O: ...

    @abstractmethod
    def plan(self, desired: D, observed: O) -> Plan: ...

    @abstractmethod
    def carry_out(
        self,
        desired: D,
        observed: O,
        plan: Plan,
        todo: Sequence[Change],
        *,
        allow_delete: bool,
        progress: Progress,
        clock: Clock,
    ) -> Carried:
        """Make the changes of todo (creates, updates; deletes only when allowed), in order.

        Called by :meth:`apply` after every check passed, with the world as read just before
        (observed: it matches the plan). Raises the adapter's failure (naming what failed and what
        was done) when a change fails; otherwise returns an outcome per change of todo.
        """

    @abstractmethod
    def check(self, desired: D, result: ApplyResult) -> VerifyResult[R]:
        """Read the world and check it against desired (and what result says was done); never raises for a miss."""

    def close(self) -> None:
        """Release what the adapter opened."""

    def refuse_conflicts(self, plan: Plan) -> None:
        """Raise the adapter's error for a plan with conflicts (default :class:`PlanConflict`)."""
        raise PlanConflict.of([f"{c.kind} {c.target} ({c.where or '-'}): {c.reason}" for c in plan.conflicts])

    # --------------------------------------------------------- the contract's part

    def apply(
        self,
        desired: D,
        plan: Plan,
        *,
        confirm: bool = False,
        allow_delete: bool = False,
        approved_plan: Approval = None,
        progress: Progress | None = None,
        clock: Clock | None = None,
    ) -> ApplyResult:
        """Carry out plan, by the contract's rules.

        Args:
            desired: what the plan was made from.
            plan: the plan shown to the operator.
            confirm: really change things; without it this is a dry run.
            allow_delete: also carry out deletes.
            approved_plan: the reviewed plans: ``{adapter: sha256}`` of every plan a reviewed dry run
                showed (``homelab run --approve`` passes it), or one plan's sha256. The plan must be exactly
                this adapter's approved one and (a mapping) every plan shown so far by :func:`show_plan` must be
                its adapter's approved one, and every approved adapter must have shown its plan already: a
                notebook shows all its plans before applying any, so all are applied or none.
                Empty or None: no approval asked for.
            progress: where progress goes (default :func:`homelab_lib.core.progress.auto`).
            clock: the clock to wait by (default the adapter's).

        Returns:
            An outcome per change that is not a no-op.

        Raises:
            PlanNotApproved: approved_plan is given and this plan, or another shown (or not yet shown), is not
                the approved one; nothing was changed.
            PlanConflict: (confirmed) the plan has conflicts and they block; nothing was changed.
            StalePlan: (confirmed) the world changed since the plan was made; nothing was changed.
            RunbookError: the plan was made by another adapter.
            HomelabError: the adapter's own failure of a change (what was done is in the error).
        """
        digest = plan.sha256
        check_approved(self.name, digest, approved_plan)
        if plan.adapter and plan.adapter != self.name:
            raise RunbookError(
                f"this plan was made by the {plan.adapter} adapter, not {self.name}",
                where=self.name,
                hint="apply a plan with the adapter that made it",
            )
        left_out = [Outcome.of(c, NEEDS_ALLOW_DELETE) for c in plan.of_action(Action.DELETE) if not allow_delete]
        conflicts = [Outcome.of(c, CONFLICT) for c in plan.conflicts]
        if plan.empty:
            return ApplyResult(self.name, confirm, digest)
        if not confirm:
            wanted = [Outcome.of(c, would(c.action)) for c in plan.applicable(allow_delete=allow_delete)]
            return ApplyResult(self.name, False, digest, (*wanted, *left_out, *conflicts))
        if plan.conflicts and self.conflicts_block:
            self.refuse_conflicts(plan)
        todo = plan.applicable(allow_delete=allow_delete)
        if not todo:
            return ApplyResult(self.name, True, digest, (*left_out, *conflicts))
        observed = self.observe(desired)
        again = self.plan(desired, observed)
        if again.sha256 != digest:
            moved = diff_plans(plan, again)
            was, now = changes_by_key(plan.document()), changes_by_key(again.document())
            targets = sorted({key[2] for key in was.keys() | now.keys() if was.get(key) != now.get(key)})
            raise StalePlan(
                f"{self.world} changed since the plan was made (for {', '.join(targets) or 'its order'}); "
                "nothing was changed:",
                moved=moved,
                where=self.name,
                hint="make the plan again, check it, then apply",
            )
        carried = self.carry_out(
            desired,
            observed,
            plan,
            todo,
            allow_delete=allow_delete,
            progress=progress or progress_mod.auto(),
            clock=clock or self.clock,
        )
        return ApplyResult(
            self.name,
            True,
            digest,
            (*carried.outcomes, *left_out, *conflicts),
            carried.steps,
            MappingProxyType(dict(carried.facts)),
        )

    def verify(self, desired: D, result: ApplyResult) -> VerifyResult[R]:
        """Check the world against desired: a report after a dry run, an error after a confirmed one that missed.

        Raises:
            VerifyFailed: result was confirmed and a check fails; the error carries the result.
        """
        verified = self.check(desired, result)
        if result.confirmed and not verified.ok:
            raise VerifyFailed(
                f"{len(verified.problems)} of {len(verified.checks)} check(s) fail after the apply: "
                f"{self.world} is not what the plan promised:",
                problems=[str(c) for c in verified.problems],
                where=", ".join(sorted({c.where for c in verified.problems if c.where})) or self.name,
                hint="see the checks above; run again to retry (its plan shows what is left)",
                result=verified,
            )
        return verified


# ---------------------------------------------------------------- driving it


@dataclass(frozen=True)
class Run(Generic[D, O, R]):
    """Everything one pass of plan -> apply -> verify produced."""

    desired: D
    observed: O
    plan: Plan
    result: ApplyResult
    verified: VerifyResult[R]


def run(
    adapter: Adapter[D, O, R],
    *,
    confirm: bool = False,
    allow_delete: bool = False,
    approved_plan: Approval = None,
    progress: Progress | None = None,
    clock: Clock | None = None,
) -> Run[D, O, R]:
    """One pass of the contract: desired -> observe -> plan -> apply -> verify, with the same arguments everywhere.

    Raises:
        Whatever a step raises (see :meth:`BaseAdapter.apply` and :meth:`BaseAdapter.verify`).
    """
    desired = adapter.desired()
    observed = adapter.observe(desired)
    plan = adapter.plan(desired, observed)
    result = adapter.apply(
        desired,
        plan,
        confirm=confirm,
        allow_delete=allow_delete,
        approved_plan=approved_plan,
        progress=progress,
        clock=clock,
    )
    verified = adapter.verify(desired, result)
    return Run(desired, observed, plan, result, verified)


# ---------------------------------------------------------------- notebooks


def plan_bundle(plan: Plan) -> dict[str, Any]:
    """The display bundle :func:`show_plan` emits: text, HTML table, and the plan's canonical JSON with its sha256."""
    digest = plan.sha256
    table = plan.table()
    summary = f"{plan.summary()}   (plan sha256 {digest[:12]})"
    text = summary + ("\n" + table.to_string(index=False) if not table.empty else "")
    markup = f"<p>{html.escape(plan.summary())} <small>plan sha256 <code>{digest}</code></small></p>"
    if not table.empty:
        markup += table.to_html(index=False)
    return {"text/plain": text, "text/html": markup, PLAN_MIME: {**plan.document(), "sha256": digest}}


def show_plan(plan: Plan) -> None:
    """Show a plan in a notebook: its table, and (for the runner's archive) its JSON and sha256.

    Outside a notebook the text is printed. The plan's hash is remembered by its adapter's name
    (:func:`shown_plans`): an apply under a reviewed run's approval checks every plan shown.
    """
    bundle = plan_bundle(plan)
    _SHOWN[plan.adapter] = plan.sha256
    if tables.in_kernel():
        from IPython.display import display

        display(bundle, raw=True)  # type: ignore[no-untyped-call]
    else:
        print(bundle["text/plain"])


def show(result: ApplyResult | VerifyResult[Any]) -> None:
    """Show an apply or verify result: its summary line, then its table (when it has rows) by :func:`tables.show`."""
    print(result.summary())
    table = result.table()
    if not table.empty:
        tables.show(table)


def plans_in_notebook(notebook: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Every plan a notebook emitted with :func:`show_plan` (nbformat JSON): the last one per adapter, in the
    order first shown, each with ``sha256`` set to the hash of its canonical form (what was shown is not trusted)."""
    found: dict[str, Mapping[str, Any]] = {}
    for cell in notebook.get("cells", []):
        for output in cell.get("outputs", []) or []:
            data = output.get("data") or {}
            if PLAN_MIME in data and isinstance(data[PLAN_MIME], Mapping):
                found[str(data[PLAN_MIME].get("adapter") or "")] = data[PLAN_MIME]
    out = {}
    for adapter, shown in found.items():
        body = {k: v for k, v in shown.items() if k != "sha256"}
        out[adapter] = {**body, "sha256": document_sha256(body)}
    return out


def plan_in_notebook(notebook: Mapping[str, Any]) -> dict[str, Any] | None:
    """What a run records of the plans its notebook showed (:func:`plans_in_notebook`), with one ``sha256``.

    Returns:
        None when the notebook showed no plan; the plan document itself when it showed one; when it showed
        plans of several adapters, ``{"format": PLANS_FORMAT, "plans": {adapter: plan document}}``, its
        ``sha256`` that of its canonical form (so one hash covers every plan). :func:`recorded_plans` reads
        either shape back.
    """
    plans = plans_in_notebook(notebook)
    if not plans:
        return None
    if len(plans) == 1:
        return next(iter(plans.values()))
    body = {"format": PLANS_FORMAT, "plans": plans}
    return {**body, "sha256": document_sha256(body)}


def recorded_plans(recorded: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """``{adapter: plan document}`` of what :func:`plan_in_notebook` returned (either shape), {} for None."""
    if not recorded:
        return {}
    if recorded.get("format") == PLANS_FORMAT:
        return {str(k): dict(v) for k, v in (recorded.get("plans") or {}).items()}
    return {str(recorded.get("adapter") or ""): dict(recorded)}


def approval(recorded: Mapping[str, Any] | None) -> dict[str, str]:
    """``{adapter: sha256}`` of a recorded run's plans: the ``approved_plan`` that applies them, all or none."""
    return {name: str(doc.get("sha256") or document_sha256(doc)) for name, doc in recorded_plans(recorded).items()}


__all__ = [
    "CONFLICT",
    "DONE",
    "FAILED",
    "NEEDS_ALLOW_DELETE",
    "NOT_STARTED",
    "PLANS_FORMAT",
    "PLAN_MIME",
    "Action",
    "Adapter",
    "ApplyResult",
    "Approval",
    "BaseAdapter",
    "Carried",
    "Change",
    "Check",
    "Clock",
    "ErrorTable",
    "Outcome",
    "Plan",
    "Run",
    "SystemClock",
    "VerifyResult",
    "approval",
    "check_approved",
    "forget_shown_plans",
    "mapped",
    "plan_bundle",
    "plan_in_notebook",
    "plans_in_notebook",
    "recorded_plans",
    "run",
    "show",
    "show_plan",
    "shown_plans",
    "would",
]
