"""Runbook 06's figures, measured in one run (printed, never asserted).

1. Checksum-manifest throughput (:func:`homelab_lib.hosts.checksums.local_manifest`) against
   ``sha256sum`` on the same 1 GiB of files (page cache warm for both): the baseline is
   ``sha256sum FILE...`` over all files in one process, as one would check them by hand; the
   parallel ``xargs -P4 sha256sum`` is printed beside it. Target (issue 12): >= 80 % of
   ``sha256sum``'s throughput.
2. A restore test of 1 GiB (:func:`homelab_lib.backup.volumes.restore_test`: restore the latest
   snapshot into scratch, take the scratch's manifest while reading the stored one, compare, remove
   scratch) against ``restic restore`` of the same snapshot alone (same host, same SSH connection,
   same scratch disk). Target: <= 1.5x. Also printed: the restore test given the snapshot, as
   runbook 06 calls it (the stored manifest is then read while restic restores).

Rounds alternate which goes first; medians and ratios are printed. Starts its own sshd on
127.0.22.9 (the "VM" is this machine) and uses the machine's restic; needs no lab.

    .venv/bin/python benchmarks/backups.py [--runs 3] [--gib 1] [--dir /var/tmp]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from homelab_lib.backup import volumes
from homelab_lib.backup.restic import Repository, Restic
from homelab_lib.backup.targets import Located, VolumeTarget
from homelab_lib.core.secrets import SecretRef
from homelab_lib.hosts.checksums import local_manifest
from homelab_lib.hosts.docker import DockerHost

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.sshd_fixtures import start_sshd  # noqa: E402 - the tests' sshd, started the same way

ADDRESS = "127.0.22.9"


def make_files(folder: Path, total: int) -> None:
    """``total`` bytes of random data: 48 files of sizes from 1 to 40 MiB, and 2000 small ones (4 KiB)."""
    small = 2000 * 4096
    for i in range(2000):
        (folder / "small" / f"{i % 20}").mkdir(parents=True, exist_ok=True)
        (folder / "small" / f"{i % 20}" / f"f{i}").write_bytes(os.urandom(4096))
    left = total - small
    sizes = [(i % 40 + 1) for i in range(48)]
    unit = left // sum(sizes)
    chunk = os.urandom(1 << 20)
    for i, size in enumerate(sizes):
        with (folder / f"big{i:02}.bin").open("wb") as f:
            n = size * unit
            while n > 0:
                f.write(os.urandom(min(n, 1 << 16)) + chunk[: max(0, min(n, 1 << 20) - (1 << 16))])
                n -= min(n, 1 << 20)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def alternate(a: Callable[[], object], b: Callable[[], object], runs: int) -> tuple[list[float], list[float]]:
    ta: list[float] = []
    tb: list[float] = []
    for i in range(runs):
        if i % 2 == 0:
            ta.append(timed(a))
            tb.append(timed(b))
        else:
            tb.append(timed(b))
            ta.append(timed(a))
    return ta, tb


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--dir", default="/var/tmp", help="where the data, the repository and scratch go")
    args = parser.parse_args()
    total = int(args.gib * (1 << 30))
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; restic {restic_version()}")
    with tempfile.TemporaryDirectory(prefix="homelab-bench-backups-", dir=args.dir) as tmp:
        base = Path(tmp)
        data = base / "data"
        data.mkdir()
        make_files(data, total)
        files = sorted(str(p) for p in data.rglob("*") if p.is_file())
        size = sum(Path(p).stat().st_size for p in files)
        print(f"data: {len(files)} files, {size / 2**30:.2f} GiB in {data}")

        # 1. manifest throughput against sha256sum
        def serial() -> None:
            subprocess.run(["sha256sum", *files], check=True, stdout=subprocess.DEVNULL)

        def parallel() -> None:
            subprocess.run(
                f"find {data} -type f -print0 | xargs -0 -n 256 -P 4 sha256sum >/dev/null", shell=True, check=True
            )

        serial()  # warm the page cache
        tm, ts = alternate(lambda: local_manifest(data), serial, args.runs)
        _, tp = alternate(lambda: None, parallel, args.runs)
        mm, ms, mp = statistics.median(tm), statistics.median(ts), statistics.median(tp)
        mib = size / 2**20
        print(f"manifest:                 median {mm:.2f} s = {mib / mm:.0f} MiB/s")
        print(f"sha256sum (one process):  median {ms:.2f} s = {mib / ms:.0f} MiB/s")
        print(f"sha256sum (xargs -P4):    median {mp:.2f} s = {mib / mp:.0f} MiB/s")
        print(f"manifest throughput / sha256sum: {ms / mm:.0%} (target >= 80%); / xargs -P4 sha256sum: {mp / mm:.0%}")

        # 2. restore test against restic restore alone
        password = base / "pw"
        password.write_text("bench-password\n")
        with start_sshd(base / "sshd", ADDRESS, host="benchvm") as target, DockerHost.open(target) as host:
            restic = Restic(host, Repository(str(base / "repo"), SecretRef("file", str(password))))
            volumes.ensure_repository(restic, confirm=True)
            t = VolumeTarget("docker", "benchvm", "bench", "app", "data", 24.0)
            located = Located(t, str(data))
            start = time.perf_counter()
            done = volumes.backup_target(restic, located)
            print(f"backup of {size / 2**30:.2f} GiB (two manifests, restic backup, manifest stored): "
                  f"{time.perf_counter() - start:.1f} s, snapshot {done.snapshot}")  # fmt: skip
            scratch = base / "scratch"
            scratch.mkdir()
            snap = volumes.latest(restic, t)
            assert snap is not None

            def restore_alone() -> None:
                out = scratch / "alone"
                restic.restore(snap.id, str(out), what="restore alone")
                shutil.rmtree(out)

            def restore_test() -> None:
                result = volumes.restore_test(restic, located, scratch_root=str(scratch))
                if not result.ok:
                    raise SystemExit(f"the restore test failed: {result.detail}")

            tt, tr = alternate(restore_test, restore_alone, args.runs)
            mt, mr = statistics.median(tt), statistics.median(tr)
            print(f"restore test:             median {mt:.2f} s (of {', '.join(f'{x:.2f}' for x in tt)})")
            print(f"restic restore alone:     median {mr:.2f} s (of {', '.join(f'{x:.2f}' for x in tr)})"
                  " (+ rm of the restored tree)")  # fmt: skip
            print(f"restore test / restic restore: {mt / mr:.2f}x (target <= 1.5x)")

            # where the restore test's time goes, one part at a time (after a restore, cache as in the test)
            out = scratch / "parts"
            parts = {
                "restic restore": timed(lambda: restic.restore(snap.id, str(out), what="restore")),
                "manifest of the restored files": timed(lambda: local_manifest(out)),
                "restic dump of the stored manifest": timed(lambda: volumes.stored_manifest(restic, t, snap)),
                "rm of the restored files": timed(lambda: shutil.rmtree(out)),
            }
            print("parts: " + "; ".join(f"{k} {v:.2f} s" for k, v in parts.items()))
            tt2 = [timed(lambda: volumes.restore_test(restic, located, scratch_root=str(scratch), snapshot=snap))
                   for _ in range(args.runs)]  # fmt: skip
            print(f"restore test given the snapshot (as the runbook calls it, one listing for all targets): "
                  f"median {statistics.median(tt2):.2f} s = {statistics.median(tt2) / mr:.2f}x")  # fmt: skip
    return 0


def restic_version() -> str:
    out = subprocess.run(["restic", "version"], capture_output=True, text=True, check=False).stdout.split()
    return out[1] if len(out) > 1 else "?"


if __name__ == "__main__":
    sys.exit(main())
