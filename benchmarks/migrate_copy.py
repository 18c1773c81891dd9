"""Benchmark: runbook 05's copy + verification of a 1 GiB volume, against `tar | ssh | tar` plus `sha256sum` both sides.

Both run on the same data between the same two folders, reached through the same real sshd
(127.0.26.41, standing for the Docker VM and the K3s VM), from this machine:

- ours: :func:`homelab_lib.migrate.copy.stream` (``tar -cf -`` on one host piped through this
  machine's paramiko channels into ``tar -xf -`` on the other, chunked) then
  :func:`homelab_lib.migrate.copy.verify` (the per-file manifest of both folders at once);
- baseline: ``ssh src 'tar -cf - .' | ssh dst 'tar -xf -'`` with OpenSSH, then
  ``find . -type f -print0 | xargs -0 sha256sum`` over ssh on both sides (at once).

The data: 1 GiB in 16 files of 60 MiB and 4096 files of 16 KiB (random bytes, so nothing
compresses), in three folders. Rounds alternate ours and the baseline; the medians give each
one's throughput (GiB of volume data per second, copy and verification together) and the
ratio (target: ours >= 50% of the baseline).

    .venv/bin/python benchmarks/migrate_copy.py [--rounds 3] [--gib 1]
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
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from homelab_lib.hosts.ssh import SshTarget, connect  # noqa: E402
from homelab_lib.migrate import copy as copying  # noqa: E402
from tests.sshd_fixtures import start_sshd  # noqa: E402

ADDRESS = "127.0.26.41"
TARGET = 0.5


def make_data(root: Path, gib: float) -> int:
    total = int(gib * (1 << 30))
    small, n_small = 16 << 10, 4096
    big_total = total - small * n_small
    n_big = 16
    for i in range(n_big):
        folder = root / "media" / f"season-{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / f"episode-{i:02d}.mkv").open("wb") as f:
            left = big_total // n_big
            while left:
                step = min(left, 8 << 20)
                f.write(os.urandom(step))
                left -= step
    for i in range(n_small):
        folder = root / "config" / f"cache-{i % 64:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"item-{i:05d}.bin").write_bytes(os.urandom(small))
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def ssh_argv(t: SshTarget) -> list[str]:
    return [
        "ssh",
        "-i",
        str(t.key.path),
        "-p",
        str(t.port),
        "-o",
        f"UserKnownHostsFile={t.known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        f"{t.user}@{t.address}",
    ]


def baseline(t: SshTarget, src: Path, dst: Path) -> tuple[float, float]:
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir()
    ssh = ssh_argv(t)
    began = time.perf_counter()
    reader = subprocess.Popen([*ssh, f"tar -C {src} -cf - ."], stdout=subprocess.PIPE)
    subprocess.run([*ssh, f"tar -C {dst} -xf -"], stdin=reader.stdout, check=True)
    assert reader.stdout is not None
    reader.stdout.close()
    assert reader.wait() == 0
    copied = time.perf_counter() - began
    sums = [
        subprocess.Popen(
            [*ssh, f"cd {folder} && find . -type f -print0 | xargs -0 sha256sum"],
            stdout=subprocess.PIPE,
        )
        for folder in (src, dst)
    ]
    outs = [p.communicate()[0] for p in sums]
    seconds = time.perf_counter() - began
    assert sorted(outs[0].splitlines()) == sorted(outs[1].splitlines()), "the baseline's copy differs"
    return seconds, copied


def ours(t: SshTarget, src: Path, dst: Path) -> tuple[float, float]:
    shutil.rmtree(dst, ignore_errors=True)
    a, b = connect(t), connect(t)
    try:
        began = time.perf_counter()
        copying.stream(a, str(src), b, str(dst), where="bench")
        copied = time.perf_counter() - began
        got = copying.verify(a, str(src), b, str(dst), where_source="source", where_target="target")
        seconds = time.perf_counter() - began
    finally:
        a.close()
        b.close()
    assert got.ok, got.diff.summary()
    return seconds, copied


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gib", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="migrate-bench-") as tmp:
        root = Path(tmp)
        src, dst = root / "volume", root / "pv"
        size = make_data(src, args.gib)
        print(f"data: {size / (1 << 30):.2f} GiB in {sum(1 for p in src.rglob('*') if p.is_file())} files")
        with start_sshd(root / "sshd", ADDRESS, host="bench") as target:
            mine, base = [], []
            for n in range(args.rounds):
                b_all, b_copy = baseline(target, src, dst)
                m_all, m_copy = ours(target, src, dst)
                base.append(b_all)
                mine.append(m_all)
                print(
                    f"round {n + 1}: tar|ssh|tar + sha256sum {b_all:.1f} s "
                    f"(copy {b_copy:.1f} + sums {b_all - b_copy:.1f}); "
                    f"homelab copy + verify {m_all:.1f} s (copy {m_copy:.1f} + verify {m_all - m_copy:.1f})"
                )
    gib = size / (1 << 30)
    m, b = statistics.median(mine), statistics.median(base)
    print(f"baseline  (tar | ssh | tar + sha256sum both sides): {b:6.1f} s  {gib / b * 1024:7.1f} MiB/s")
    print(f"homelab   (migrate.copy.stream + verify):           {m:6.1f} s  {gib / m * 1024:7.1f} MiB/s")
    ratio = b / m
    print(
        f"ratio: {ratio:.0%} of the baseline's throughput (target >= {TARGET:.0%}): "
        f"{'met' if ratio >= TARGET else 'MISSED'}"
    )
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
