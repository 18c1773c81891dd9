"""The error tree drawn in errors' docstring is the tree of classes, in the order the module defines them."""

from __future__ import annotations

import inspect
import re

from homelab_lib.core import errors

LINE = re.compile(r"^    (?:(?P<rails>[│ ]*)[├└]── )?(?P<name>[A-Z]\w+)\b")


def drawn() -> list[tuple[str, str]]:
    """(class, the class it is drawn under) for every line of the drawing, top to bottom."""
    found: list[tuple[str, str]] = []
    parents: list[str] = []
    for line in (errors.__doc__ or "").splitlines():
        m = LINE.match(line)
        if not m or (m["rails"] is None and m["name"] != "HomelabError"):
            continue
        depth = 0 if m["rails"] is None else len(m["rails"]) // 4 + 1
        del parents[depth:]
        found.append((m["name"], parents[-1] if parents else ""))
        parents.append(m["name"])
    return found


def test_the_drawing_is_the_tree_in_the_order_of_the_module() -> None:
    tree = drawn()
    defined = [
        name
        for name, cls in vars(errors).items()
        if inspect.isclass(cls) and issubclass(cls, errors.HomelabError) and cls.__module__ == errors.__name__
    ]
    assert [name for name, _ in tree] == defined
    for name, parent in tree[1:]:
        assert getattr(errors, parent) in getattr(errors, name).__bases__, f"{name} is drawn under {parent}"
