"""What the command groups share: the subparsers type, ``-f PARAMS`` (repeatable), ``-p KEY VALUE`` read as YAML."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import yaml

if TYPE_CHECKING:
    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


def parse_value(text: str) -> Any:
    """A -p value as YAML scalar (true, 3, [a, b]); plain text otherwise."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parameters(args: argparse.Namespace) -> dict[str, Any]:
    """The notebook parameters of ``-p KEY VALUE`` (repeated), each value read by :func:`parse_value`."""
    return {k: parse_value(v) for k, v in args.param}


def params_files_option(p: argparse.ArgumentParser, help: str) -> None:
    """``-f/--file PARAMS``, repeatable (later files layer over earlier ones), into ``args.file``."""
    p.add_argument("-f", "--file", action="append", default=[], type=Path, metavar="PARAMS", help=help)
