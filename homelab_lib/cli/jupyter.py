"""``homelab jupyter``: the interactive walkthrough, JupyterLab on loopback with a token."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from homelab_lib.core.errors import ConfigError, Problem

if TYPE_CHECKING:
    from homelab_lib.cli.args import Subparsers

DEFAULT_LAB = Path("parameters/lab.yaml")
DEFAULT_NOTEBOOKS = Path("notebooks")


def cmd_jupyter(args: argparse.Namespace) -> int:
    from homelab_lib.notebook import jupyter

    params = args.file.resolve()
    if not params.is_file():
        raise ConfigError([Problem(str(args.file), 0, "", "no such parameter file (give one with -f)")])
    root = Path.cwd()

    def ready(server: jupyter.Server) -> None:
        print(f"JupyterLab serves {root}; parameters {params}; runs confirmed there are archived in {args.archive}/")
        print(f"open: {server.url(str(args.notebook))}", flush=True)
        print("stop with Ctrl-C", flush=True)

    return jupyter.serve(root, ip=args.ip, port=args.port, params_file=params, archive_dir=args.archive, on_ready=ready)


def register(sub: Subparsers) -> None:
    """Add ``jupyter``."""
    p = sub.add_parser("jupyter", help="the interactive walkthrough: JupyterLab on loopback, with a token")
    p.add_argument("-f", "--file", default=DEFAULT_LAB, type=Path, metavar="PARAMS",
                   help=f"the params-file picker's first choice (default: {DEFAULT_LAB})")  # fmt: skip
    p.add_argument("--ip", default="127.0.0.1", help="loopback address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    p.add_argument("--archive", default=Path("archive"), type=Path, help="archive of confirmed runs (default archive/)")
    p.add_argument("--notebook", default=DEFAULT_NOTEBOOKS / "00_inventory.ipynb", type=Path, help="the page to open")
    p.set_defaults(func=cmd_jupyter)
