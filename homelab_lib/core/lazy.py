"""Lazy re-exports: a package's names are imported from their modules when first looked up.

An adapter package gathers its modules' names (``compose.adapter``, ``compose.render``), and
those modules stand on heavy libraries (the docker SDK, the kubernetes client, pandas,
matplotlib). Imported eagerly, a notebook's imports cell would load all of them before the
reader sees a widget, and a runbook would pay for clients it never builds. So such a package
says what it exports in an ``if TYPE_CHECKING:`` block, and :func:`lazy_exports` reads that
block from the package's source and makes each name import its module on first use::

    from typing import TYPE_CHECKING

    from homelab_lib.core.lazy import lazy_exports

    if TYPE_CHECKING:  # what type checkers and readers see, and what lazy_exports reads
        from homelab_lib.compose.runbook import ComposeAdapter, adapter

    __all__ = ["ComposeAdapter", "adapter"]

    lazy_exports(__name__)

``from homelab_lib.compose import adapter`` and ``compose.adapter`` then behave as with an eager
``from .runbook import adapter``, including where a name is spelt as one of the package's modules
(``compose.render`` is the function of ``compose/render.py``, whenever that module is loaded), and
a module of the package is there by its name (``monitoring.targets``) as the eager imports left it.
``tests/test_imports.py`` checks that each package's ``TYPE_CHECKING`` imports and ``__all__``
agree; ``benchmarks/imports.py`` measures what the notebooks' imports cells cost.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from types import ModuleType
from typing import Any

TABLE = "__lazy_exports__"  # the package's attribute that holds {name: module}


class LazyPackage(ModuleType):
    """A package module whose re-exported names are looked up in their modules on first use."""

    def __getattr__(self, name: str) -> Any:  # called only when the name is not set yet
        module = self.__dict__.get(TABLE, {}).get(name)
        if module is not None:
            value = getattr(importlib.import_module(module), name)
            super().__setattr__(name, value)  # kept: the next look-up is a plain attribute
            return value
        submodule = f"{self.__name__}.{name}"
        if not name.startswith("__") and importlib.util.find_spec(submodule) is not None:
            return importlib.import_module(submodule)  # `monitoring.targets`, as the eager package had it loaded
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        # The import system sets each submodule it loads on its package. Where the package exports
        # a name spelt as that submodule (compose.render, the function of compose/render.py), the
        # name keeps what the package exports, as an eager `from .render import render` left it.
        if (
            isinstance(value, ModuleType)
            and value.__name__ == f"{self.__name__}.{name}"
            and name in self.__dict__.get(TABLE, {})
        ):
            return
        super().__setattr__(name, value)

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *self.__dict__.get(TABLE, {})})


def declared(source: str) -> dict[str, str]:
    """What a package's ``if TYPE_CHECKING:`` block imports: name -> module.

    Raises:
        ValueError: the source has no such block, or a name is imported from two modules.
    """
    tree = ast.parse(source)
    blocks = [n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING"]
    if len(blocks) != 1:
        raise ValueError("a lazy package declares its exports in one `if TYPE_CHECKING:` block")
    where: dict[str, str] = {}
    for node in blocks[0].body:
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                name = alias.asname or alias.name
                if where.setdefault(name, node.module) != node.module:
                    raise ValueError(f"{name!r} is imported from both {where[name]} and {node.module}")
    return where


def lazy_exports(package: str) -> None:
    """Make a package's exported names import their modules on first look-up.

    Args:
        package: the package's ``__name__`` (its ``__init__`` calls this); its ``if TYPE_CHECKING:``
            block says which name comes from which module.

    Raises:
        ValueError: no such block, or a name is imported from two modules.
    """
    mod = sys.modules[package]
    origin = mod.__spec__.origin if mod.__spec__ else None
    if origin is None:
        raise ValueError(f"{package}: a lazy package is read from its source file, and it has none")
    with open(origin, encoding="utf-8") as f:
        where = declared(f.read())
    mod.__dict__[TABLE] = where
    mod.__class__ = LazyPackage
