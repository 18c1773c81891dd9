"""`homelab jupyter`: JupyterLab on loopback with a token, the walkthrough's URL printed; refused elsewhere."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.widget_fixtures import make_toy

IP = "127.0.25.2"


def test_homelab_jupyter_serves_on_loopback_with_a_token_and_prints_the_url(tmp_path: Path) -> None:
    toy = make_toy(tmp_path / "root")
    env = {k: v for k, v in os.environ.items() if k != "HOMELAB_HEADLESS"}
    child = subprocess.Popen(
        [sys.executable, "-m", "homelab_lib.cli", "jupyter", "-f", "parameters/example.yaml", "--ip", IP,
         "--archive", str(toy.archive), "--notebook", "tests/widget_notebooks/toy_runbook.ipynb"],
        cwd=toy.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None
        lines = [child.stdout.readline() for _ in range(2)]
        url = lines[1].removeprefix("open: ").strip()
        assert url.startswith(f"http://{IP}:"), lines
        assert "/lab/tree/tests/widget_notebooks/toy_runbook.ipynb?token=" in url
        base, token = url.split("/lab/")[0], url.split("token=")[1]
        with pytest.raises(urllib.error.HTTPError, match="403"):
            urllib.request.urlopen(f"{base}/api/contents/tests/widget_notebooks", timeout=10)
        with urllib.request.urlopen(f"{base}/api/contents/tests/widget_notebooks?token={token}", timeout=10) as r:
            names = {c["name"] for c in json.load(r)["content"]}
        assert names >= {"toy_runbook.ipynb", "toy.py"}
        with urllib.request.urlopen(f"{base}/api/kernelspecs?token={token}", timeout=10) as r:
            assert "python3" in json.load(r)["kernelspecs"]
    finally:
        child.send_signal(signal.SIGINT)
        code = child.wait(60)
    assert code == 0


def test_homelab_jupyter_refuses_an_address_that_is_not_loopback(tmp_path: Path) -> None:
    toy = make_toy(tmp_path / "root")
    done = subprocess.run(
        [sys.executable, "-m", "homelab_lib.cli", "jupyter", "-f", "parameters/example.yaml", "--ip", "0.0.0.0"],
        cwd=toy.root, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert "not a loopback address" in done.stderr
