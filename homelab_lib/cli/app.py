"""The ``homelab`` parser and entry point: each command group adds its subcommands, then installed plugins theirs.

Exit codes: 0 success; 1 a run, check or audit failed; 2 bad input (parameters,
arguments); 3 another run against the same homelab holds the lock.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from homelab_lib.cli import audit, convert, jupyter, run, schedule
from homelab_lib.core.errors import AuditError, ConfigError, HomelabError, LockHeld

#: The command groups, in the order ``homelab --help`` lists their commands; each has ``register(sub)``.
GROUPS = (run, audit, schedule, jupyter, convert)


def build_parser() -> argparse.ArgumentParser:
    """The ``homelab`` parser: every group's commands, then those of the ``homelab.commands`` entry points."""
    parser = argparse.ArgumentParser(
        prog="homelab",
        description="Runbooks for a Proxmox homelab: Compose core on VMs, advanced services on K3s.",
        epilog="exit codes: 0 ok, 1 failed, 2 bad input, 3 another run holds the homelab's lock. "
        "Installed plugins add commands (the rehearsal lab, homelab-lab, adds `lab` and `rehearse`).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    for plugin in entry_points(group="homelab.commands"):  # the lab's `lab` and `rehearse`, when installed
        plugin.load()(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``homelab``; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except ConfigError as e:
        for p in e.problems:
            print(str(p), file=sys.stderr)
        return 2
    except LockHeld as e:
        print(f"refused: {e}", file=sys.stderr)
        return 3
    except AuditError as e:
        print(f"audit: {e}", file=sys.stderr)
        return 1
    except HomelabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `homelab audit list | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
