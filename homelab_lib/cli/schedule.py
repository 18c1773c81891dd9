"""``homelab schedule``: a notebook run on a schedule, by a systemd timer (and a crontab line) or,
with ``--k3s``, by a CronJob on the homelab's K3s, planned and applied by the contract
(:func:`homelab_lib.core.contract.run`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from homelab_lib.cli.args import parameters, params_files_option
from homelab_lib.core import tables

if TYPE_CHECKING:
    from homelab_lib.cli.args import Subparsers
    from homelab_lib.core.contract import Run


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
        parameters=parameters(args),
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


def _applied(done: Run[Any, Any, Any], *, nothing: str) -> int:
    """After the plan is shown: the dry run's note, or each outcome of the confirmed apply (exit 1 if one failed)."""
    if not done.result.confirmed:
        print(f"dry run: nothing {nothing}; run again with --confirm to apply this plan")
        return 0
    for outcome in done.result.outcomes:
        print(f"{outcome.kind} {outcome.target}: {outcome.result} {outcome.detail}".rstrip())
    return 0 if done.result.ok else 1


def _schedule_k3s(args: argparse.Namespace) -> int:
    """``homelab schedule NOTEBOOK --every SPEC --k3s``: plan the CronJob and its objects; apply with --confirm."""
    import shlex

    from homelab_lib.core import contract
    from homelab_lib.core.progress import auto
    from homelab_lib.schedule import cronjob
    from homelab_lib.schedule.systemd import parse_every

    spec = cronjob.cronjob_spec(
        args.notebook,
        parse_every(args.every),
        param_files=args.file,
        parameters=parameters(args),
        name=args.name,
        namespace=args.namespace or cronjob.NAMESPACE,
        image=args.image,
        archive_size=args.archive_size,
    )
    if args.archive is not None or args.env_file is not None:
        print("note: --archive and --env-file are for timers; a CronJob's archive is its PVC, its env: values a Secret")
    adapter = cronjob.cronjob_adapter(args.file, spec)
    try:
        done = contract.run(adapter, confirm=args.confirm, progress=auto())
    finally:
        adapter.close()
    print(f"CronJob {spec.namespace}/{spec.name}: schedule '{spec.cron}' (every {args.every}), "
          f"concurrencyPolicy Forbid, image {spec.image}")  # fmt: skip
    print(f"runs: {shlex.join(spec.command)}")
    print(f"plan: {done.plan.summary()}")
    tables.show(done.plan.table())
    return _applied(done, nothing="applied")


def _schedule_k3s_list_or_remove(args: argparse.Namespace) -> int:
    """``homelab schedule --k3s --list`` (the CronJobs it made) or ``--remove NAME`` (plan; apply with --confirm)."""
    from homelab_lib.core import contract
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
        done = contract.run(adapter, confirm=args.confirm, allow_delete=True, progress=auto())
    finally:
        adapter.close()
    print(f"plan: {done.plan.summary()}")
    tables.show(done.plan.table())
    print(f"kept: namespace {namespace} and the claim {cronjob.ARCHIVE_CLAIM} (the archive of every run)")
    return _applied(done, nothing="deleted")


def register(sub: Subparsers) -> None:
    """Add ``schedule`` (systemd timers; CronJobs on K3s with --k3s)."""
    p = sub.add_parser("schedule", help="run a notebook on a schedule: systemd timer + service (and a crontab line)")
    p.add_argument("notebook", type=Path, nargs="?")
    p.add_argument("--every", metavar="SPEC", help="systemd calendar (daily, hourly, '*-*-* 02:00:00') or 15m / 6h")
    params_files_option(p, "parameter file")
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
    k3s.add_argument("--image", default="", help="(--k3s) the toolkit's image (default: k3s.run_image; by digest)")
    k3s.add_argument("--namespace", help="(--k3s) the namespace (default: homelab-runs; --list: all)")
    k3s.add_argument("--archive-size", default="2Gi", help="(--k3s) the archive claim's size (default: 2Gi)")
    p.set_defaults(func=cmd_schedule)
