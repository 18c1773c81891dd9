"""Build the stand-in program (``lab/standin/*.go``) into a static binary for the lab's images.

Go's standard library only, compiled with Debian's ``golang-go`` (``CGO_ENABLED=0``:
a static binary that runs in an image ``FROM scratch``). The build is cached in the
folder given, keyed by a hash of the sources, and never writes to ``$HOME``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
from pathlib import Path

from homelab_lib.errors import LabError

SOURCES = Path(__file__).with_name("standin")
HINT = "apt-get install golang-go (Debian's Go compiler builds the lab's stand-in program)"


def sources_digest() -> str:
    """sha256 over the stand-in's sources (names and contents)."""
    h = hashlib.sha256()
    for path in sorted(SOURCES.glob("*")):
        if path.is_file():
            h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def build_binary(out_dir: Path) -> Path:
    """Compile the stand-in into ``out_dir/standin-<digest>`` unless it is there already.

    Raises:
        LabError: Go is missing, or the build failed (with the compiler's output).
    """
    binary = out_dir / f"standin-{sources_digest()[:16]}"
    if binary.exists():
        return binary
    go = shutil.which("go") or ("/usr/lib/go/bin/go" if Path("/usr/lib/go/bin/go").exists() else None)
    if go is None:
        raise LabError("the Go compiler is not installed", where="stand-in images", hint=HINT)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = out_dir / "go"
    env = {
        **os.environ,
        "CGO_ENABLED": "0",
        "GOCACHE": str(cache / "cache"),
        "GOPATH": str(cache / "path"),
        "GOFLAGS": "-mod=mod",
        "GO111MODULE": "off",
        "HOME": str(cache),
    }
    tmp = binary.with_suffix(".tmp")
    files = sorted(str(p) for p in SOURCES.glob("*.go") if not p.name.endswith("_test.go"))
    done = subprocess.run(
        [go, "build", "-trimpath", "-ldflags=-s -w", "-o", str(tmp), *files],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=600,
    )
    if done.returncode != 0:
        raise LabError(
            f"building the stand-in program failed:\n{(done.stderr or done.stdout)[-2000:]}",
            where=str(SOURCES),
            hint=HINT,
        )
    if not is_static_elf(tmp.read_bytes()):
        raise LabError(
            "the stand-in program was not linked statically", where=str(tmp), hint="build with CGO_ENABLED=0"
        )
    tmp.replace(binary)
    for old in out_dir.glob("standin-*"):
        if old != binary and old.is_file():
            old.unlink()
    return binary


def is_static_elf(data: bytes) -> bool:
    """True for an ELF executable with no program interpreter (PT_INTERP), i.e. statically linked."""
    if data[:4] != b"\x7fELF" or len(data) < 64:
        return False
    end = "<" if data[5] == 1 else ">"
    if data[4] == 2:  # 64-bit
        (phoff,) = struct.unpack_from(end + "Q", data, 32)
        phentsize, phnum = struct.unpack_from(end + "HH", data, 54)
    else:
        (phoff,) = struct.unpack_from(end + "I", data, 28)
        phentsize, phnum = struct.unpack_from(end + "HH", data, 42)
    for i in range(phnum):
        at = phoff + i * phentsize
        if at + 4 > len(data):
            return False
        (p_type,) = struct.unpack_from(end + "I", data, at)
        if p_type == 3:  # PT_INTERP: needs a dynamic loader
            return False
    return True
