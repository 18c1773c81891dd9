"""The ``homelab`` command: thin over the library.

One module per command group, each adding its subcommands with ``register(sub)``: run (validate,
run), audit, schedule (systemd timers; CronJobs on K3s), jupyter, convert. :mod:`~homelab_lib.cli.app`
assembles the parser, with the commands installed plugins add through the ``homelab.commands``
entry points, and runs it (:func:`main`, the console script; ``python -m homelab_lib.cli``).

Exit codes: 0 success; 1 a run, check or audit failed; 2 bad input (parameters,
arguments); 3 another run against the same homelab holds the lock.
"""

# pandas, matplotlib and papermill are imported by the commands that need them, so that
# `homelab run` costs no more start-up than papermill itself (benchmarks/runner_overhead.py).

from homelab_lib.cli.app import build_parser, main
from homelab_lib.core.tables import show as print_table  # the one table printer; plugins print with it

__all__ = ["build_parser", "main", "print_table"]
