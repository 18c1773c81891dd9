"""The Compose plan: rendered projects (desired) against what runs (observed), a pure function.

Per service: ``create`` (nothing runs), ``update`` (another image, another image id
behind the same tag, another config hash, or not running) with the fields that
differ, ``no-op`` otherwise; ``delete`` for a service dropped from its stack, and for
a whole stack this homelab ran on the host but the inventory no longer lists.

Drift outside the stacks: a container on the host's engine that belongs to no stack
of the inventory is a ``conflict`` (never applied: the operator decides). Every
rendered service carries ``homelab.homelab`` and ``homelab.host`` labels; each
Docker VM has its own engine, so every container on it is the host's business.

Image references are compared in one normal form (:func:`normal_image`):
``docker.io/library/postgres:16.6`` is what Docker lists as ``postgres:16.6``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

from homelab_lib.compose.observe import Container, HostState, normal_image
from homelab_lib.compose.render import Project
from homelab_lib.core.plan import Action, Change, FieldChange, Plan


def _short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


def _service_change(project: Project, index: int, name: str, running: list[Container], state: HostState) -> Change:
    want = project.service(name)
    target = f"{project.stack}/{name}"
    if not running:
        return Change("service", target, Action.CREATE, project.host, reason=f"image {want.image}", order=index)
    c = sorted(running, key=lambda c: (c.state != "running", c.name))[0]
    fields: list[FieldChange] = []
    wanted = normal_image(want.image)
    if normal_image(c.image) != wanted:
        fields.append(FieldChange("image", c.image, want.image))
    elif wanted in state.images and c.image_id and state.images[wanted] != c.image_id:
        fields.append(FieldChange("image id", _short(c.image_id), _short(state.images[wanted])))
    if c.config_hash != want.config_hash:
        for key in sorted(want.environment):
            if c.env.get(key) != want.environment[key]:
                fields.append(FieldChange(f"environment.{key}", c.env.get(key), want.environment[key]))
        fields.append(FieldChange("config-hash", c.config_hash or None, want.config_hash))
    if c.state != "running":
        fields.append(FieldChange("state", c.state, "running"))
    if fields:
        return Change("service", target, Action.UPDATE, project.host, fields=tuple(fields), order=index)
    return Change(
        "service", target, Action.NOOP, project.host, reason=f"{c.short_id} {c.state} ({c.health})", order=index
    )


def plan(
    projects: Sequence[Project],
    observed: Mapping[str, HostState],
    *,
    homelab: str,
    stacks: Sequence[str] = (),
) -> Plan:
    """What deploying the projects would change on the observed hosts.

    Args:
        projects: the rendered projects (desired state).
        observed: what runs, by host name (every host the projects go to).
        homelab: the inventory's name (the ``homelab.homelab`` label).
        stacks: the stacks this run is limited to (empty: all); stacks outside it are neither
            updated nor proposed for deletion.

    Returns:
        The plan: service changes, stack deletes, and conflicts for containers of no stack.
    """
    changes: list[Change] = []
    host_order = {h: i for i, h in enumerate(dict.fromkeys(p.host for p in projects))}
    desired = {(p.host, p.stack) for p in projects}
    for project in projects:
        state = observed[project.host]
        index = host_order[project.host]
        mine: dict[str, list[Container]] = defaultdict(list)
        for c in state.of(homelab):
            if c.stack == project.stack:
                mine[c.service].append(c)
        for svc in project.services:
            changes.append(_service_change(project, index, svc.name, mine.get(svc.name, []), state))
        wanted = {s.name for s in project.services}
        for name in sorted(set(mine) - wanted):
            ids = ", ".join(c.short_id for c in mine[name])
            changes.append(
                Change(
                    "service",
                    f"{project.stack}/{name}",
                    Action.DELETE,
                    project.host,
                    reason=f"no longer in stack {project.stack} ({ids}); removed with the stack (--remove-orphans)",
                    order=index,
                )
            )

    wanted_stacks = set(stacks)
    seen = {f"{h}/{c.stack}" for h, st in observed.items() for c in st.of(homelab)}
    seen |= (
        {name.split("/", 1)[1] for name in seen}
        | {p.stack for p in projects}
        | {f"{p.host}/{p.stack}" for p in projects}
    )
    for name in sorted(wanted_stacks - seen):
        changes.append(
            Change(
                "stack",
                name,
                Action.CONFLICT,
                reason="no host has this stack in the inventory and none runs it; check the name",
            )
        )
    for host, state in observed.items():
        index = host_order.get(host, len(host_order))
        running_stacks: dict[str, list[Container]] = defaultdict(list)
        for c in state.of(homelab):
            running_stacks[c.stack].append(c)
        for stack in sorted(running_stacks):
            if (host, stack) in desired:
                continue
            if wanted_stacks and stack not in wanted_stacks and f"{host}/{stack}" not in wanted_stacks:
                continue
            names = ", ".join(sorted({c.service for c in running_stacks[stack]}))
            changes.append(
                Change(
                    "stack",
                    stack,
                    Action.DELETE,
                    host,
                    reason=f"runs ({names}) but is no longer in the inventory; `docker compose down` keeps volumes",
                    order=index,
                )
            )
        for c in state.containers:
            if c.homelab == homelab and c.host == host:
                continue
            changes.append(
                Change(
                    "container",
                    c.name,
                    Action.CONFLICT,
                    host,
                    reason=f"runs on the host ({c.image}, {c.state}) but belongs to no stack in the inventory; "
                    "add it to a stack or remove it",
                    order=index,
                )
            )
    return Plan.of(changes)


def stacks_to_apply(plan: Plan, *, allow_delete: bool = False) -> list[tuple[str, str]]:
    """(host, stack) of every stack that a deploy runs ``compose up`` for, in plan order."""
    out: dict[tuple[str, str], None] = {}
    for c in plan.changes:
        if c.kind != "service":
            continue
        if c.action in (Action.CREATE, Action.UPDATE) or (c.action == Action.DELETE and allow_delete):
            out.setdefault((c.where, c.target.split("/", 1)[0]))
    return list(out)


def stacks_to_remove(plan: Plan) -> list[tuple[str, str]]:
    """(host, stack) of every stack the plan proposes to take down."""
    return [(c.where, c.target) for c in plan.changes if c.kind == "stack" and c.action == Action.DELETE]
