"""``homelab convert``: a compose file to Kubernetes manifests (one YAML per service) and report.md."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from homelab_lib.cli.args import Subparsers


def write_replacing(path: Path, text: str, mode: int) -> None:
    """Write path whole, atomically: a new file beside it (``O_CREAT|O_EXCL|O_NOFOLLOW``, made ``mode`` before
    any byte), then renamed over it. A link planted at path is replaced, never followed: nothing outside
    the output folder is written, and no one reads a half-written file or one with a looser mode."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # O_EXCL|O_NOFOLLOW, 0600
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def cmd_convert(args: argparse.Namespace) -> int:
    from homelab_lib.convert.source import read_env_file
    from homelab_lib.core.errors import NotFound
    from homelab_lib.migrate import convert_compose, load_compose, report_markdown

    compose_file: Path = args.compose_file
    dotenv = compose_file.parent / ".env"
    # as Compose does: the file's .env, then this shell's variables over it
    variables = {**(read_env_file(dotenv) if dotenv.is_file() else {}), **os.environ}
    compose = load_compose(compose_file, env=variables)
    try:
        conversions = convert_compose(
            compose,
            args.service,
            namespace=args.namespace,
            variables=variables,
            kubernetes_version=args.kubernetes_version,
        )
    except NotFound as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out: Path = args.output
    out.mkdir(parents=True, exist_ok=True)
    for conv in conversions:
        path = out / f"{conv.k8s_name}.yaml"
        write_replacing(path, conv.yaml(), 0o600)  # it may hold Secrets
        counts = ", ".join(f"{len(conv.lines(s))} {s}" for s in ("mapped", "approximated", "not mapped"))
        print(f"{path}: {conv.service} -> {len(conv.objects)} objects ({counts})")
    write_replacing(out / "report.md", report_markdown(conversions, source=compose.shown), 0o644)  # no values
    print(f"{out / 'report.md'}: every key of {len(conversions)} service(s), mapped or why not")
    return 0


def register(sub: Subparsers) -> None:
    """Add ``convert``."""
    p = sub.add_parser("convert", help="a compose file to Kubernetes manifests (one YAML per service) + report.md")
    p.add_argument("compose_file", type=Path, metavar="COMPOSE_FILE")
    p.add_argument("--service", action="append", default=[], metavar="NAME", help="convert this service (repeat)")
    p.add_argument("--namespace", default="default", metavar="NS", help="namespace of every object (default: default)")
    p.add_argument("-o", "--output", required=True, type=Path, metavar="DIR", help="folder for the YAML files")
    p.add_argument(
        "--kubernetes-version",
        default="1.31.0",
        metavar="X.Y.Z",
        help="validate the manifests against this Kubernetes release's schemas (default: 1.31.0, K3s v1.31)",
    )
    p.set_defaults(func=cmd_convert)
