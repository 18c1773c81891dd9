"""`homelab run` as a user runs it: a subprocess, its output as the terminal shows it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.test_runner import write_nb


def homelab(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "homelab_lib.cli", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


def test_log_output_shows_cell_output_redacted(tmp_path: Path, make_params: Callable[..., Path]) -> None:
    nb = write_nb(
        tmp_path / "chatty.ipynb",
        "print('hello from cell one')",
        "from homelab_lib.inventory import load_inventory\n"
        "print('token:', load_inventory(params_file).proxmox.token_secret.reveal())",
    )
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path / "rt")}
    args = ("run", str(nb), "-f", str(make_params()), "--archive", str(tmp_path / "archive"), "-q")
    done = homelab(*args, "--log-output", env=env, cwd=tmp_path)
    shown = done.stdout + done.stderr
    assert done.returncode == 1, shown  # the leak scan refuses to archive it
    assert "hello from cell one" in shown
    assert "token: ********" in shown
    assert "pve-token-value" not in shown

    quiet = homelab(*args, env=env, cwd=tmp_path)  # without --log-output, no cell output
    assert "hello from cell one" not in quiet.stdout + quiet.stderr
