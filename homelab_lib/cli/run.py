"""``homelab validate`` (parameter files, FILE:LINE problems) and ``homelab run`` (a notebook, archived)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from homelab_lib.cli.args import parameters, params_files_option
from homelab_lib.core.errors import ApprovalRefused, NotebookFailed

if TYPE_CHECKING:
    from homelab_lib.cli.args import Subparsers


def cmd_validate(args: argparse.Namespace) -> int:
    from homelab_lib.notebook.report import validate

    files = args.files or sorted(Path("parameters").glob("*.yaml"))
    if not files:
        print("no parameter files given and none in parameters/", file=sys.stderr)
        return 2
    bad = 0
    for f in files:
        result = validate(f, check_secrets=not args.offline)
        if result.ok:
            print(f"{f}: valid")
        else:
            bad += 1
            for p in result.problems:
                print(str(p), file=sys.stderr)
    return 2 if bad else 0


def _show_cell_output() -> None:
    """For --log-output: print what papermill logs of each cell (stdout to stdout, stderr to stderr).

    papermill logs cell output on its ``papermill`` logger, where the runner's filter masks every
    secret value; nothing shows it unless a handler is attached.
    """
    import logging

    class Message(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return record.getMessage().rstrip("\n")

    out = logging.StreamHandler(sys.stdout)
    out.addFilter(lambda record: record.levelno < logging.WARNING)
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(logging.WARNING)
    log = logging.getLogger("papermill")
    for handler in (out, err):
        handler.setFormatter(Message())
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def cmd_run(args: argparse.Namespace) -> int:
    from homelab_lib.runs.archive import Record
    from homelab_lib.runs.runner import run_notebook
    from homelab_lib.schedule import alerts

    if args.log_output:
        _show_cell_output()
    params = parameters(args)
    deliveries: list[alerts.Delivery] = []

    def alert(record: Record, root: Path) -> None:  # a failed run, or drift found by a dry run
        delivery = alerts.after_run(record, root)
        if delivery is not None:
            deliveries.append(delivery)

    try:
        result = run_notebook(
            args.notebook,
            param_files=args.file,
            parameters=params,
            archive_dir=args.archive,
            progress_bar=not args.quiet,
            log_output=args.log_output,
            approve=args.approve,
            on_record=None if args.no_alert else alert,
        )
    except ApprovalRefused as e:
        print(f"REFUSED, nothing was changed: {e}", file=sys.stderr)
        return 1
    except NotebookFailed as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    finally:
        for delivery in deliveries:  # never changes the exit code
            print(delivery, file=sys.stderr if not delivery.sent else sys.stdout)
    approves = f", applying the plan approved in {result.record.approves}" if result.record.approves else ""
    print(f"ok: {result.record.run} archived at {result.archived}{approves}")
    return 0


def register(sub: Subparsers) -> None:
    """Add ``validate`` and ``run``."""
    p = sub.add_parser("validate", help="check parameter files; print FILE:LINE: key: problem")
    p.add_argument("files", nargs="*", type=Path, help="parameter files (default: parameters/*.yaml)")
    p.add_argument("--offline", action="store_true", help="do not check that secret references resolve")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("run", help="run a notebook with papermill and archive it")
    p.add_argument("notebook", type=Path)
    params_files_option(p, "homelab parameter file (repeat to layer); passed as params_file")
    p.add_argument(
        "-p",
        "--param",
        nargs=2,
        action="append",
        default=[],
        metavar=("KEY", "VALUE"),
        help="notebook parameter, VALUE read as YAML (-p confirm true)",
    )
    p.add_argument("--archive", default="archive", type=Path, help="archive folder (default: archive/)")
    p.add_argument("--log-output", action="store_true", help="echo cell outputs (headless runs)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--no-alert", action="store_true", help="post no alert for this run (a dry run you review yourself)")
    p.add_argument(
        "--approve",
        metavar="RUN_ID",
        help="apply the plan archived by this dry run, and only it: confirm=True, and the run fails (exit 1, "
        "nothing changed, the difference shown) if the plan computed now differs",
    )
    p.set_defaults(func=cmd_run)
