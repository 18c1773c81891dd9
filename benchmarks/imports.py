"""Benchmark: what each runbook's imports cell costs, and a no-change `homelab run` with the kernel included.

1. The imports cell of every notebook in notebooks/ (the first code cell after the one tagged
   ``parameters``), run in a fresh interpreter the way a kernel runs it: by IPython's shell,
   magics included, with matplotlib's backend set as ipykernel sets it. Baselines measured in
   the same run: a bare ``python -c pass``, and the same interpreter with IPython's shell made
   and nothing run (what a kernel has loaded before its first cell). Each round runs every
   command once, in an order rotated from round to round so that drift on the machine hits
   all of them; medians of ``--runs`` rounds. The cell's own cost is its median wall time minus
   the IPython baseline's, printed with the ratio of the two and, in brackets, the same difference
   in CPU time (which a busy machine moves less). Target: <= 0.5 s per cell (wall time).
2. With ``--runs-of 01,02,04``: a no-change ``homelab run notebooks/NN_....ipynb -f
   parameters/lab.yaml`` of each (a dry run: no ``-p confirm``; into a temporary archive, with
   ``--no-alert``), kernel start included, against papermill running an empty notebook with
   the same kernel (kernel start and papermill alone). Target: <= 5 s each. It needs the
   rehearsal lab up with every runbook applied (``make demo``): ``homelab lab status`` is asked
   first, and each warm-up run's archived plan must change nothing.

    .venv/bin/python benchmarks/imports.py [--runs 5] [--runs-of 01,02,04]

Machine facts (cores, load average before and after) are printed beside the figures. Exits 1
when a target is missed, 2 when part 2 cannot run (the lab is not up, or not rehearsed).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
NOTEBOOKS = REPO / "notebooks"
PARAMS = Path("parameters") / "lab.yaml"  # as a user types it, from the repository
CELL_TARGET_S = 0.5
RUN_TARGET_S = 5.0
KERNEL = {"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}}

# One cell, run as a kernel runs it (IPython's shell: magics work), the cell's text on stdin.
# `%matplotlib inline` asks the shell for no GUI event loop: ipykernel's shell does nothing more there.
# The interpreter then leaves without tearing its modules down: a kernel does not after each cell.
SHELL = """\
import os, sys
os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")  # as ipykernel sets it
from IPython.core.interactiveshell import InteractiveShell
class Shell(InteractiveShell):
    def enable_gui(self, gui=None):
        pass
Shell.instance().run_cell(sys.stdin.read(), silent=True).raise_error()
sys.stdout.flush()
os._exit(0)
"""


def machine() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores, load average {load} (1, 5, 15 min)"


def imports_cell(path: Path) -> str:
    """The notebook's imports cell: the first code cell after its ``parameters`` cell."""
    cells = nbformat.read(str(path), as_version=4).cells
    (at,) = [i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", [])]
    return str(next(c.source for c in cells[at + 1 :] if c.cell_type == "code"))


@dataclass(frozen=True)
class Took:
    """One command's medians: wall time, and the CPU time its process used (less moved by a busy machine)."""

    wall: float
    cpu: float


def timed(cmd: list[str], *, stdin: str = "", cwd: Path = REPO) -> Took:
    """One command's wall and CPU time; a failure stops the benchmark with the command's stderr."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, cwd=cwd, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise SystemExit(f"failed (exit {done.returncode}): {' '.join(cmd)}\n{tail}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Took(wall, cpu)


def medians(commands: dict[str, tuple[list[str], str, Path]], runs: int, *, warm_up: bool = True) -> dict[str, Took]:
    """Each command once as a warm-up (page cache, bytecode), then ``runs`` rounds in rotated order."""
    names = list(commands)
    for name in names if warm_up else ():
        cmd, stdin, cwd = commands[name]
        timed(cmd, stdin=stdin, cwd=cwd)
    times: dict[str, list[Took]] = {name: [] for name in names}
    for i in range(runs):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            cmd, stdin, cwd = commands[name]
            times[name].append(timed(cmd, stdin=stdin, cwd=cwd))
    return {
        name: Took(statistics.median(t.wall for t in ts), statistics.median(t.cpu for t in ts))
        for name, ts in times.items()
    }


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def imports_part(runs: int) -> bool:
    """Part 1: every notebook's imports cell against the IPython baseline. True when every target is met."""
    python = [sys.executable]
    commands: dict[str, tuple[list[str], str, Path]] = {
        "python -c pass": ([*python, "-c", "pass"], "", NOTEBOOKS),
        "IPython shell": ([*python, "-c", SHELL], "pass", NOTEBOOKS),
    }
    for path in sorted(NOTEBOOKS.glob("[0-9]*.ipynb")):
        commands[path.stem] = ([*python, "-c", SHELL], imports_cell(path), NOTEBOOKS)
    got = medians(commands, runs)
    base = got.pop("IPython shell")
    bare = got.pop("python -c pass")
    print(f"imports cells: medians of {runs} rounds, each command a fresh interpreter (CPU time in brackets)")
    print(f"  python -c pass            {bare.wall:6.2f} s  ({bare.cpu:.2f} s)")
    print(
        f"  IPython shell, no cell    {base.wall:6.2f} s  ({base.cpu:.2f} s)   "
        "the baseline: what a kernel has loaded before its first cell"
    )
    print(f"  {'notebook':24s}  {'with cell':>9s}  {'own cost (CPU)':>16s}  {'ratio':>6s}  target")
    ok = True
    for name, cell in got.items():
        own = cell.wall - base.wall
        ok &= own <= CELL_TARGET_S
        print(
            f"  {name:24s}  {cell.wall:7.2f} s  {own:6.2f} s ({cell.cpu - base.cpu:.2f} s)  "
            f"{cell.wall / base.wall:5.2f}x  <= {CELL_TARGET_S} s: {verdict(own <= CELL_TARGET_S)}"
        )
    return ok


def runbooks(prefixes: list[str]) -> list[Path]:
    """notebooks/NN_*.ipynb for each NN given; exactly one each."""
    found = []
    for prefix in prefixes:
        matches = sorted(NOTEBOOKS.glob(f"{prefix}_*.ipynb"))
        if len(matches) != 1:
            raise SystemExit(f"--runs-of {prefix}: {len(matches)} notebooks match notebooks/{prefix}_*.ipynb")
        found.append(matches[0])
    return found


def lab_ready() -> bool:
    status = subprocess.run([str(BIN / "homelab"), "lab", "status"], capture_output=True, text=True, cwd=REPO)
    if status.returncode != 0:
        print(
            f"the rehearsal lab is not up (`homelab lab status` exited {status.returncode}): part 2 times no-change "
            "runs, so it needs the lab up with every runbook applied. Run `make demo` (lab up, then every runbook "
            "with confirm), then this again.",
            file=sys.stderr,
        )
    return status.returncode == 0


def changes_planned(archive: Path) -> list[str]:
    """What the last run's archived plan would change (empty: a no-change run)."""
    from homelab_lib.runs.archive import Archive

    record = Archive(archive).records()[-1]
    changes = (record.plan or {}).get("changes", [])
    return [f"{c['action']} {c['kind']} {c['target']}" for c in changes if c["action"] != "no-op"]


def runs_part(notebooks: list[Path], runs: int) -> bool | None:
    """Part 2: no-change `homelab run` of each runbook against papermill on an empty notebook.

    True when every target is met; None when a runbook's dry run would change something.
    """
    with tempfile.TemporaryDirectory(prefix="imports-bench-") as tmp:
        out = Path(tmp)
        empty = out / "empty.ipynb"
        nbformat.write(new_notebook(cells=[new_code_cell("pass")], metadata=KERNEL), str(empty))
        papermill = [str(BIN / "papermill"), str(empty), str(out / "empty-out.ipynb"), "--no-progress-bar"]
        timed(papermill)  # warm-ups: the page cache and the kernel's imports
        commands: dict[str, tuple[list[str], str, Path]] = {"papermill, empty notebook": (papermill, "", REPO)}
        for nb in notebooks:
            archive = out / f"archive-{nb.stem}"
            run = [str(BIN / "homelab"), "run", str(nb.relative_to(REPO)), "-f", str(PARAMS)]
            run += ["--archive", str(archive), "-q", "--no-alert"]
            timed(run)  # and this one must change nothing: the lab is rehearsed
            pending = changes_planned(archive)
            if pending:
                print(
                    f"{nb.stem}'s dry run plans {len(pending)} change(s) ({'; '.join(pending[:3])}): the lab is up "
                    "but not rehearsed. Run `make demo` (every runbook with confirm), then this again.",
                    file=sys.stderr,
                )
                return None
            commands[nb.stem] = (run, "", REPO)
        got = medians(commands, runs, warm_up=False)
    base = got.pop("papermill, empty notebook").wall
    print(f"no-change `homelab run ... -f {PARAMS}` (dry run), kernel start included: medians of {runs} rounds")
    print(f"  papermill, empty notebook    {base:6.2f} s   the baseline: kernel start and papermill alone")
    ok = True
    for name, took in got.items():
        ok &= took.wall <= RUN_TARGET_S
        print(
            f"  homelab run {name:24s} {took.wall:6.2f} s   {took.wall - base:5.2f} s beyond the baseline  "
            f"<= {RUN_TARGET_S} s: {verdict(took.wall <= RUN_TARGET_S)}"
        )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--runs", type=int, default=5, help="rounds measured (after one warm-up); medians")
    parser.add_argument(
        "--runs-of", default="", metavar="NN,NN", help="also time no-change `homelab run`s of these runbooks (lab up)"
    )
    args = parser.parse_args()
    notebooks = runbooks([p.strip() for p in args.runs_of.split(",") if p.strip()])
    if notebooks and not lab_ready():  # before part 1: say so now, not a minute later
        return 2
    print(f"machine: {machine()}; Python {sys.version.split()[0]}")
    ok = imports_part(args.runs)
    if notebooks:
        done = runs_part(notebooks, args.runs)
        if done is None:
            return 2
        ok &= done
    print(f"machine after the runs: {machine()}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
