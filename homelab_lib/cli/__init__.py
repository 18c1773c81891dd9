"""The ``homelab`` command: thin over the library.

Exit codes: 0 success; 1 a run, check or audit failed; 2 bad input (parameters,
arguments); 3 another run against the same homelab holds the lock.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from homelab_lib.core.errors import (
    ApprovalRefused,
    AuditError,
    ConfigError,
    HomelabError,
    LockHeld,
    NotebookFailed,
    Problem,
)
from homelab_lib.runs.archive import Archive

if TYPE_CHECKING:
    import pandas as pd

# pandas, matplotlib and papermill are imported by the commands that need them, so that
# `homelab run` costs no more start-up than papermill itself (benchmarks/runner_overhead.py).

DEFAULT_LAB = Path("parameters/lab.yaml")
DEFAULT_NOTEBOOKS = Path("notebooks")


def print_table(df: pd.DataFrame) -> None:
    import pandas as pd

    with pd.option_context("display.max_colwidth", 80, "display.width", 200):
        print(df.to_string(index=False) if not df.empty else "(none)")


def _parse_value(text: str) -> Any:
    """A -p value as YAML scalar (true, 3, [a, b]); plain text otherwise."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


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
    params = {k: _parse_value(v) for k, v in args.param}
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
    print_table(pd.DataFrame(rows))
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
    if record.plan:
        print(f"{'plan':>16}: {record.plan.get('summary', '')} (sha256 {record.plan_hash})")
        for change in record.plan.get("changes", []):
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


def cmd_schedule(args: argparse.Namespace) -> int:
    from homelab_lib.schedule import systemd as sched

    if args.k3s and (args.list or args.remove):
        return _schedule_k3s_list_or_remove(args)
    if args.list:
        found = sched.list_schedules(args.unit_dir)
        for s in found:
            print(s.line())
        print(f"{len(found)} schedule(s) in {args.unit_dir or sched.default_unit_dir()}")
        return 0
    if args.remove:
        gone = sched.remove_schedule(args.remove, args.unit_dir)
        print(f"removed {gone.timer} and {gone.service}")
        print(f"then: systemctl --user disable --now {gone.timer.name}; systemctl --user daemon-reload")
        return 0
    if args.notebook is None or args.every is None:
        print("homelab schedule: give NOTEBOOK --every SPEC, or --list, or --remove NAME", file=sys.stderr)
        return 2
    if args.k3s:
        return _schedule_k3s(args)
    planned = sched.plan_schedule(
        args.notebook,
        sched.parse_every(args.every),
        param_files=args.file,
        parameters={k: _parse_value(v) for k, v in args.param},
        name=args.name,
        archive_dir=args.archive,
        unit_dir=args.unit_dir,
        env_file=args.env_file,
    )
    sched.write_schedule(planned, delay=args.delay)
    print(f"wrote {planned.service}\nwrote {planned.timer}")
    names = sched.env_references(args.file)
    if names and planned.env_file is None:
        print(f"note: the parameters read {', '.join(names)} from the environment, which a timer's service does "
              "not have: put NAME=value lines in a file (mode 600) and give it with --env-file")  # fmt: skip
    print(f"enable: {planned.enable_hint()}")
    if planned.crontab:
        print(f"or, with cron instead (crontab -e):\n{planned.crontab}")
    else:
        print(f"(cron cannot say 'every {args.every}': use the timer, or a calendar expression cron can say)")
    return 0


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
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it may hold Secrets
        with os.fdopen(fd, "w") as f:
            f.write(conv.yaml())
        counts = ", ".join(f"{len(conv.lines(s))} {s}" for s in ("mapped", "approximated", "not mapped"))
        print(f"{path}: {conv.service} -> {len(conv.objects)} objects ({counts})")
    (out / "report.md").write_text(report_markdown(conversions, source=compose.shown))
    print(f"{out / 'report.md'}: every key of {len(conversions)} service(s), mapped or why not")
    return 0


def _schedule_k3s(args: argparse.Namespace) -> int:
    """``homelab schedule NOTEBOOK --every SPEC --k3s``: plan the CronJob and its objects; apply with --confirm."""
    import shlex

    from homelab_lib.core.progress import auto
    from homelab_lib.schedule import cronjob
    from homelab_lib.schedule.systemd import parse_every

    spec = cronjob.cronjob_spec(
        args.notebook,
        parse_every(args.every),
        param_files=args.file,
        parameters={k: _parse_value(v) for k, v in args.param},
        name=args.name,
        namespace=args.namespace or cronjob.NAMESPACE,
        image=args.image,
        archive_size=args.archive_size,
    )
    if args.archive is not None or args.env_file is not None:
        print("note: --archive and --env-file are for timers; a CronJob's archive is its PVC, its env: values a Secret")
    adapter = cronjob.cronjob_adapter(args.file, spec)
    try:
        desired = adapter.desired()
        plan = adapter.plan(desired, adapter.observe(desired))
        print(f"CronJob {spec.namespace}/{spec.name}: schedule '{spec.cron}' (every {args.every}), "
              f"concurrencyPolicy Forbid, image {spec.image}")  # fmt: skip
        print(f"runs: {shlex.join(spec.command)}")
        print(f"plan: {plan.summary()}")
        print_table(plan.table())
        if not args.confirm:
            print("dry run: nothing applied; run again with --confirm to apply this plan")
            return 0
        result = adapter.apply(desired, plan, confirm=True, progress=auto())
        for outcome in result.outcomes:
            print(f"{outcome.kind} {outcome.target}: {outcome.result} {outcome.detail}".rstrip())
        return 0 if result.ok else 1
    finally:
        adapter.close()


def _schedule_k3s_list_or_remove(args: argparse.Namespace) -> int:
    """``homelab schedule --k3s --list`` (the CronJobs it made) or ``--remove NAME`` (plan; apply with --confirm)."""
    from homelab_lib.core.progress import auto
    from homelab_lib.schedule import cronjob

    if not args.file:
        print("homelab schedule --k3s: give the homelab's parameter file(s) with -f", file=sys.stderr)
        return 2
    if args.list:
        found = cronjob.list_cronjobs(args.file, args.namespace or "")
        for r in found:
            print(r.line())
        print(f"{len(found)} scheduled run(s) on K3s" + (f" in namespace {args.namespace}" if args.namespace else ""))
        return 0
    namespace = args.namespace or cronjob.NAMESPACE
    adapter = cronjob.removal_adapter(args.file, args.remove, namespace)
    try:
        desired = adapter.desired()
        plan = adapter.plan(desired, adapter.observe(desired))
        print(f"plan: {plan.summary()}")
        print_table(plan.table())
        print(f"kept: namespace {namespace} and the claim {cronjob.ARCHIVE_CLAIM} (the archive of every run)")
        if not args.confirm:
            print("dry run: nothing deleted; run again with --confirm to apply this plan")
            return 0
        result = adapter.apply(desired, plan, confirm=True, allow_delete=True, progress=auto())
        for outcome in result.outcomes:
            print(f"{outcome.kind} {outcome.target}: {outcome.result} {outcome.detail}".rstrip())
        return 0 if result.ok else 1
    finally:
        adapter.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="homelab",
        description="Runbooks for a Proxmox homelab: Compose core on VMs, advanced services on K3s.",
        epilog="exit codes: 0 ok, 1 failed, 2 bad input, 3 another run holds the homelab's lock. "
        "Installed plugins add commands (the rehearsal lab, homelab-lab, adds `lab` and `rehearse`).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check parameter files; print FILE:LINE: key: problem")
    p.add_argument("files", nargs="*", type=Path, help="parameter files (default: parameters/*.yaml)")
    p.add_argument("--offline", action="store_true", help="do not check that secret references resolve")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("run", help="run a notebook with papermill and archive it")
    p.add_argument("notebook", type=Path)
    p.add_argument(
        "-f",
        "--file",
        action="append",
        default=[],
        type=Path,
        metavar="PARAMS",
        help="homelab parameter file (repeat to layer); passed as params_file",
    )
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
            a.add_argument(
                "-f",
                "--file",
                action="append",
                default=[],
                type=Path,
                metavar="PARAMS",
                help="parameter file: its audit: section signs HEAD (repair), names allowed signers (verify, report)",
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

    p = sub.add_parser("schedule", help="run a notebook on a schedule: systemd timer + service (and a crontab line)")
    p.add_argument("notebook", type=Path, nargs="?")
    p.add_argument("--every", metavar="SPEC", help="systemd calendar (daily, hourly, '*-*-* 02:00:00') or 15m / 6h")
    p.add_argument("-f", "--file", action="append", default=[], type=Path, metavar="PARAMS", help="parameter file")
    p.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"))
    p.add_argument("--name", default="", help="suffix of the units' name (to schedule a notebook twice)")
    p.add_argument("--archive", type=Path, help="archive folder (default: archive/ in the repository)")
    p.add_argument("--delay", default="5min", help="RandomizedDelaySec= (default: 5min)")
    p.add_argument("--env-file", type=Path, help="NAME=value lines for env: references (EnvironmentFile=)")
    p.add_argument("--unit-dir", type=Path, help="unit folder (default: ~/.config/systemd/user)")
    p.add_argument("--list", action="store_true", help="the schedules written by `homelab schedule` (--k3s: CronJobs)")
    p.add_argument("--remove", metavar="NAME", help="remove a schedule's timer and service (--k3s: its CronJob)")
    k3s = p.add_argument_group("on the homelab's K3s instead (a CronJob; needs -f PARAMS with k3s:)")
    k3s.add_argument("--k3s", action="store_true", help="a CronJob on K3s instead of a systemd timer (plan only)")
    k3s.add_argument("--confirm", action="store_true", help="(--k3s) apply the plan shown")
    k3s.add_argument("--image", default="homelab-runbooks:latest", help="(--k3s) the toolkit's image")
    k3s.add_argument("--namespace", help="(--k3s) the namespace (default: homelab-runs; --list: all)")
    k3s.add_argument("--archive-size", default="2Gi", help="(--k3s) the archive claim's size (default: 2Gi)")
    p.set_defaults(func=cmd_schedule)

    p = sub.add_parser("jupyter", help="the interactive walkthrough: JupyterLab on loopback, with a token")
    p.add_argument("-f", "--file", default=DEFAULT_LAB, type=Path, metavar="PARAMS",
                   help=f"the params-file picker's first choice (default: {DEFAULT_LAB})")  # fmt: skip
    p.add_argument("--ip", default="127.0.0.1", help="loopback address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    p.add_argument("--archive", default=Path("archive"), type=Path, help="archive of confirmed runs (default archive/)")
    p.add_argument("--notebook", default=DEFAULT_NOTEBOOKS / "00_inventory.ipynb", type=Path, help="the page to open")
    p.set_defaults(func=cmd_jupyter)
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
