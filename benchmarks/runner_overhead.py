"""Benchmark: what the runner's own work (lock, secret scan, archive, hashes) costs.

Times `homelab run notebooks/00_inventory.ipynb -f parameters/lab.yaml` against
plain `papermill` on the same notebook and parameters, alternating the two so
that drift on the machine hits both, and prints the median ratio (target:
<= 1.2x). Also prints the wall time of 00_inventory next to a papermill run of
an empty notebook, so slow imports show.

    .venv/bin/python benchmarks/runner_overhead.py [--rounds 5]

Needs the lab up (`homelab lab up`): 00_inventory checks that its secrets resolve.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
NOTEBOOK = REPO / "notebooks" / "00_inventory.ipynb"
PARAMS = REPO / "parameters" / "lab.yaml"
TARGET = 1.2


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    status = subprocess.run([str(BIN / "homelab"), "lab", "status"], capture_output=True, cwd=REPO)
    if status.returncode != 0:
        print("the lab is not up; starting it (homelab lab up)")
        subprocess.run([str(BIN / "homelab"), "lab", "up"], check=True, cwd=REPO, stdout=subprocess.DEVNULL)

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        empty = out / "empty.ipynb"
        nbformat.write(
            new_notebook(
                cells=[new_code_cell("pass")],
                metadata={"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}},
            ),
            str(empty),
        )
        runner = [
            str(BIN / "homelab"),
            "run",
            str(NOTEBOOK),
            "-f",
            str(PARAMS),
            "--archive",
            str(out / "archive"),
            "-q",
        ]
        plain = [
            str(BIN / "papermill"),
            str(NOTEBOOK),
            str(out / "plain.ipynb"),
            "-p",
            "params_file",
            str(PARAMS),
            "--cwd",
            str(NOTEBOOK.parent),
            "--no-progress-bar",
        ]
        bare = [str(BIN / "papermill"), str(empty), str(out / "empty-out.ipynb"), "--no-progress-bar"]

        timed(plain)  # warm the page cache and the kernel's imports once
        homelab_s, papermill_s, empty_s = [], [], []
        for i in range(args.rounds):
            order = [(runner, homelab_s), (plain, papermill_s)]
            if i % 2:
                order.reverse()
            for cmd, sink in order:
                sink.append(timed(cmd))
            empty_s.append(timed(bare))

    h, p, e = (statistics.median(x) for x in (homelab_s, papermill_s, empty_s))
    ratio = h / p
    print(f"rounds: {args.rounds} (alternating), medians in seconds")
    print(f"  homelab run 00_inventory   {h:7.2f} s")
    print(f"  papermill   00_inventory   {p:7.2f} s")
    print(f"  papermill   empty notebook {e:7.2f} s   (kernel start + papermill itself)")
    print(f"  00_inventory's own work    {p - e:7.2f} s   (imports, loading, tables, chart)")
    print(f"ratio homelab/papermill: {ratio:.3f}x (target <= {TARGET}x): {'met' if ratio <= TARGET else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
