"""What a move's verify reads: each checkpoint recorded, the workloads ready, both sides' checksums, the probes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from homelab_lib.core.contract import ApplyResult, Check, VerifyResult
from homelab_lib.kube import rollout
from homelab_lib.kube.objects import key
from homelab_lib.kube.runbook import probe
from homelab_lib.migrate import state as records
from homelab_lib.migrate.desired import MoveDesired
from homelab_lib.migrate.reach import Reach
from homelab_lib.migrate.state import CHECKPOINTS

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class MoveReport:
    """What verify read: each checkpoint's state, and each volume's checksums on both sides."""

    checkpoints: tuple[tuple[str, str, str], ...]
    volumes: tuple[tuple[str, str, str, str, str, str], ...] = ()

    def table(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(list(self.checkpoints), columns=["checkpoint", "state", "at"])

    def checksums(self) -> pd.DataFrame:
        """Per volume: PVC, files, bytes, the manifest sha256 at the source and at the copy."""
        import pandas as pd

        return pd.DataFrame(
            list(self.volumes), columns=["volume", "pvc", "files", "bytes", "source sha256", "copy sha256"]
        )


def move_status(
    adapter: str, reach: Reach, desired: MoveDesired, result: ApplyResult, state_dir: Path
) -> VerifyResult[MoveReport]:
    """Every checkpoint recorded; workloads ready; each volume's checksums equal on both sides; probes answer."""
    st = records.load(state_dir, desired.service)
    checks = [
        Check("checkpoint", c, desired.service, c in st.done, "done" if c in st.done else "remaining")
        for c in CHECKPOINTS
    ]
    rows = tuple(
        (c, "done" if c in st.done else "remaining", st.done[c].at if c in st.done else "-") for c in CHECKPOINTS
    )
    vols = []
    for v in desired.volumes:
        src = st.fact("stop", f"volume.{v.volume}.manifest_sha256", "-")
        dst = st.fact("verify", f"volume.{v.volume}.copy_sha256", "-")
        vols.append(
            (
                v.volume,
                v.claim,
                st.fact("verify", f"volume.{v.volume}.files", "-"),
                st.fact("verify", f"volume.{v.volume}.bytes", "-"),
                src,
                dst,
            )
        )
        if "verify" in st.done:
            checks.append(Check("volume", v.volume, v.claim, src == dst, f"manifest {dst[:12]} (source {src[:12]})"))
    if "apply" in st.done:
        for w in desired.workloads:
            now = reach.kube.get(key(w))
            ok, seen = rollout.workload_ready(now) if now is not None else (False, "missing")
            checks.append(Check(w["kind"], key(w).target, "k3s", ok, seen))
        for p in desired.probes:
            answer = probe(p)
            checks.append(Check("ingress", p.host, p.address, answer.startswith("200"), f"GET {p.path}: {answer}"))
    note = f"{len(st.done)} of {len(CHECKPOINTS)} checkpoint(s) done" + (
        f"; next: {st.remaining[0]}" if st.remaining else ""
    )
    return VerifyResult(adapter, result.confirmed, tuple(checks), MoveReport(rows, tuple(vols)), note)


__all__ = ["MoveReport", "move_status"]
