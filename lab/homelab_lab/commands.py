"""The lab's commands, added to ``homelab`` through the ``homelab.commands`` entry point.

``homelab lab up|down|status`` starts, stops and shows the rehearsal lab; ``homelab rehearse``
brings it up and runs every runbook against it. The library's command line knows none of this:
it asks its entry points for more commands, and this distribution registers :func:`register`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

DEFAULT_LAB = Path("parameters/lab.yaml")
DEFAULT_NOTEBOOKS = Path("notebooks")


def _lab_inventory(args: argparse.Namespace) -> Any:
    from homelab_lib.inventory import load_inventory

    return load_inventory(args.file or [DEFAULT_LAB])


def cmd_lab(args: argparse.Namespace) -> int:
    import pandas as pd

    import homelab_lab as lab
    from homelab_lib.core.tables import show as print_table

    inv = _lab_inventory(args)
    if args.action == "up":
        parts = lab.up(inv)
    elif args.action == "down":
        lab.down(inv)
        print(f"lab {inv.name} is down; its state folder is removed")
        return 0
    else:
        parts = lab.status(inv)
    print_table(pd.DataFrame([vars(p) for p in parts]))
    return 0 if all(p.state == "up" for p in parts) else 1


def cmd_rehearse(args: argparse.Namespace) -> int:
    import homelab_lab as lab
    from homelab_lib.core.tables import show as print_table
    from homelab_lib.runs.rehearse import rehearse

    inv = _lab_inventory(args)
    lab.up(inv)
    summary = rehearse(
        Path(args.notebooks), inv.source_files, archive_dir=Path(args.archive), progress_bar=not args.quiet
    )
    print_table(summary)
    return 0 if (summary["status"] == "ok").all() else 1


def _lab_file_option(p: argparse.ArgumentParser) -> None:
    from homelab_lib.cli.args import params_files_option

    params_files_option(p, f"lab parameter file (default: {DEFAULT_LAB})")


def register(sub: Any) -> None:
    """Add ``lab`` and ``rehearse`` to the ``homelab`` command's subparsers."""
    p = sub.add_parser("lab", help="the rehearsal lab: up, down, status")
    p.add_argument("action", choices=["up", "down", "status"])
    _lab_file_option(p)
    p.set_defaults(func=cmd_lab)

    p = sub.add_parser("rehearse", help="lab up, then every runbook in order with confirm=True; a summary")
    _lab_file_option(p)
    p.add_argument("--notebooks", default=DEFAULT_NOTEBOOKS, type=Path, help="folder of runbooks (default: notebooks/)")
    p.add_argument("--archive", default="archive", type=Path, help="archive folder (default: archive/)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_rehearse)
