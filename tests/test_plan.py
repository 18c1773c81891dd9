"""Plans: ordering, summary, what may be applied."""

from __future__ import annotations

from homelab_lib.core.plan import Action, Change, FieldChange, Plan, diff


def test_plan_orders_by_dependency_and_deletes_last_in_reverse() -> None:
    plan = Plan.of(
        [
            Change("vm", "b", Action.DELETE, order=2),
            Change("stack", "media", Action.CREATE, order=2),
            Change("vm", "a", Action.UPDATE, order=1, fields=(FieldChange("cores", 2, 4),)),
            Change("network", "n", Action.DELETE, order=1),
            Change("vm", "c", Action.NOOP, order=1),
        ]
    )
    assert [(c.kind, c.target) for c in plan.changes] == [
        ("vm", "a"),
        ("vm", "c"),
        ("stack", "media"),
        ("vm", "b"),
        ("network", "n"),
    ]
    assert plan.summary() == "1 create, 1 update, 2 delete, 1 no-op"
    assert [c.target for c in plan.applicable()] == ["a", "media"]
    assert [c.target for c in plan.applicable(allow_delete=True)] == ["a", "media", "b", "n"]
    assert plan.table().loc[0, "details"] == "cores: 2 -> 4"
    assert not plan.empty


def test_only_noops_is_empty_and_conflicts_are_never_applicable() -> None:
    assert Plan.of([Change("vm", "a", Action.NOOP)]).empty
    assert Plan().summary() == "nothing planned"
    plan = Plan.of([Change("vm", "a", Action.CONFLICT, reason="disk would shrink")])
    assert plan.conflicts[0].reason == "disk would shrink"
    assert plan.applicable(allow_delete=True) == []
    assert not plan.empty


def test_diff_keeps_field_order() -> None:
    assert diff({"a": 1, "b": 2, "c": 3}, {"c": 4, "a": 1, "b": 5}) == (FieldChange("c", 3, 4), FieldChange("b", 2, 5))
    assert diff({"a": 1}, {"a": 1, "b": 2}, names=["a"]) == ()
