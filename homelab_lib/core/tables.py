"""The one table printer: a table is displayed in a notebook and printed as text anywhere else.

The notebooks (:mod:`homelab_lib.notebook.report`'s tables), the contract's results
(:func:`homelab_lib.core.contract.show`) and the ``homelab`` command all show a pandas DataFrame
through :func:`show`. pandas is not imported here: a caller that has a table has it loaded already.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def in_kernel() -> bool:
    """True inside IPython (a Jupyter kernel): there a table is displayed, elsewhere printed."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return get_ipython() is not None


def text(table: pd.DataFrame) -> str:
    """The table as text, without its index; ``(none)`` when it has no rows."""
    return table.to_string(index=False) if not table.empty else "(none)"


def show(table: pd.DataFrame) -> None:
    """Show a table: in a notebook, displayed with every cell in full (pandas would cut text over 50
    characters with '...'); elsewhere printed as :func:`text`."""
    if not in_kernel():
        print(text(table))
        return
    import pandas as pd
    from IPython.display import display

    with pd.option_context("display.max_colwidth", None, "display.width", 250):
        display(table)  # type: ignore[no-untyped-call]


__all__ = ["in_kernel", "show", "text"]
