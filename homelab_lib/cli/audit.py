"""``homelab audit``: the run archive listed, shown, verified, repaired, reported as HTML."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from homelab_lib.cli.args import params_files_option
from homelab_lib.core import tables
from homelab_lib.core.contract import recorded_plans
from homelab_lib.runs.archive import Archive

if TYPE_CHECKING:
    from homelab_lib.cli.args import Subparsers


def cmd_audit_list(args: argparse.Namespace) -> int:
    import pandas as pd

    records = Archive(Path(args.archive)).records()
    rows = [
        {
            "#": i,
            "run": r.run,
            "homelab": r.homelab or "-",
            "status": r.status,
            "start": r.start,
            "duration s": r.duration_s,
            "failed cell": "-" if r.failed_cell is None else r.failed_cell,
            "plan": r.plan_hash[:12] or "-",
            "approves": r.approves or "-",
            "error": (r.error[:60] + "...") if len(r.error) > 60 else (r.error or "-"),
        }
        for i, r in enumerate(records, 1)
    ]
    tables.show(pd.DataFrame(rows))
    return 0


def cmd_audit_show(args: argparse.Namespace) -> int:
    archive = Archive(Path(args.archive))
    record = archive.find(args.run)
    for key, value in vars(record).items():
        if key not in ("plan", "sig"):
            print(f"{key:>16}: {value}")
    print(f"{'signed':>16}: {'yes (audit verify -f PARAMS checks it)' if record.sig else 'no'}")
    if record.approves:
        approved = archive.find(record.approves)
        print(f"{'reviewed':>16}: plan {approved.plan_hash[:12]} of dry run {approved.run}, "
              f"by {approved.user}@{approved.host} at {approved.start}")  # fmt: skip
    plans = recorded_plans(record.plan)
    if len(plans) > 1:
        print(f"{'plans':>16}: {len(plans)} (sha256 {record.plan_hash})")
    for adapter, plan in plans.items():
        named = f"{adapter}: " if len(plans) > 1 else ""
        print(f"{'plan':>16}: {named}{plan.get('summary', '')} (sha256 {plan.get('sha256', record.plan_hash)})")
        for change in plan.get("changes", []):
            fields = "; ".join(f"{n}: {old!r} -> {new!r}" for n, old, new in change.get("fields", []))
            detail = fields or change.get("reason") or ""
            print(
                f"{'':>18}{change['action']:8} {change['kind']} {change['target']} ({change['where'] or '-'}) {detail}"
            )
    return 0


def _audit_archive(args: argparse.Namespace) -> Archive:
    """The archive, with the signing settings of -f PARAMS' audit: section (none without -f)."""
    from dataclasses import replace

    from homelab_lib.runs.signing import Signing, signing_of

    files = getattr(args, "file", [])
    signing = Signing()
    if files:
        from homelab_lib.inventory import load_inventory

        signing = signing_of(load_inventory(files).audit)
    if args.audit_command in ("verify", "report"):
        if files and signing.allowed_signers is None:
            print(f"note: {', '.join(map(str, files))} names no audit.allowed_signers: HEAD.sig is not checked")
        signing = replace(signing, key=None)  # verify only checks
    return Archive(Path(args.archive), signing)


def cmd_audit_head(args: argparse.Namespace) -> int:
    check = _audit_archive(args).check_head()
    print(check.chain)
    if check.state != "ok":
        print(f"note: HEAD does not match: {check.detail}", file=sys.stderr)
        return 1
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from homelab_lib.runs.archive import Head

    archive = _audit_archive(args)
    anchor = Head.parse(args.head) if args.head else None
    problems = archive.verify(anchor)
    if problems:
        for p in problems:
            print(p, file=sys.stderr)
        print(f"audit verify: FAILED ({len(problems)} problem(s); the first is the first break)", file=sys.stderr)
        from homelab_lib.schedule.alerts import after_verify

        delivery = after_verify(getattr(args, "file", []), problems, archive.root)
        if delivery is not None:
            print(delivery, file=sys.stderr)
        return 1
    extra = []
    if anchor is not None:
        extra.append(f"the anchored head {anchor.short()} is in the chain")
    if archive.signing.allowed_signers is not None and archive.head_sig.exists():
        extra.append(f"HEAD signed by {archive.signing.identity}")
    elif archive.head_sig.exists():
        extra.append("HEAD.sig not checked: give -f PARAMS with audit.allowed_signers")
    more = "; " + "; ".join(extra) if extra else ""
    print(f"audit verify: ok ({len(archive.records())} runs, every notebook and record intact{more})")
    return 0


def cmd_audit_report(args: argparse.Namespace) -> int:
    from homelab_lib.runs.auditweb import write_report

    done = write_report(_audit_archive(args), args.out)
    print(f"audit report: {done.index} ({len(done.written)} page(s) written, {len(done.skipped)} unchanged)")
    if done.problems:
        print(f"audit verify: FAILED ({len(done.problems)} problem(s), shown at the top of the index)", file=sys.stderr)
        return 1
    return 0


def cmd_audit_repair(args: argparse.Namespace) -> int:
    print(_audit_archive(args).repair(accept=args.accept))
    return 0


def register(sub: Subparsers) -> None:
    """Add ``audit`` and its actions: list, show, head, verify, repair, report."""
    audit = sub.add_parser("audit", help="the run archive: list, show, verify, report")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    for name, func, text in (
        ("list", cmd_audit_list, "every run as a table"),
        ("show", cmd_audit_show, "one run's record"),
        ("head", cmd_audit_head, "print the chain head (<sha256> <count>): keep a copy elsewhere"),
        ("verify", cmd_audit_verify, "recompute every hash; exit 1 naming the first record or file altered"),
        ("repair", cmd_audit_repair, "bring HEAD up to date after a run stopped before writing it"),
        ("report", cmd_audit_report, "the archive as static HTML: verify result, charts, a page per runbook and run"),
    ):
        a = audit_sub.add_parser(name, help=text)
        a.add_argument("--archive", default="archive", type=Path, help="archive folder (default: archive/)")
        if name == "show":
            a.add_argument("run", help="run id, a unique prefix of it, or #N")
        if name == "report":
            a.add_argument("-o", "--out", required=True, type=Path, metavar="DIR", help="the report's folder")
        if name in ("verify", "repair", "report"):
            params_files_option(
                a, "parameter file: its audit: section signs HEAD (repair), names allowed signers (verify, report)"
            )
        if name == "verify":
            a.add_argument("--head", metavar="VALUE", help="a chain head kept elsewhere (from `audit head`)")
        if name == "repair":
            a.add_argument(
                "--accept",
                action="store_true",
                help="also when HEAD differs for another reason: make it the index's end (after looking into it)",
            )
        a.set_defaults(func=func)
