"""`homelab jupyter`: JupyterLab on loopback with a token, the walkthrough's URL printed; refused elsewhere.

The token is on no command line (a test reads the server's ``/proc/<pid>/cmdline``), and the command stops
on SIGINT or SIGTERM within 5 s even when it was started with SIGINT ignored, as a background job is.
Each test starts the command in a process group of its own and kills that group if it fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from tests.widget_fixtures import make_toy

IP = "127.0.25.2"


@contextmanager
def homelab_jupyter(root: Path, archive: Path, *, ignore_sigint: bool = False) -> Iterator[subprocess.Popen[str]]:
    """`homelab jupyter` in a process group of its own (SIGINT ignored, if asked, as in a background job);
    what is left of that group killed on the way out, whatever happened."""

    def dispositions() -> None:
        if ignore_sigint:
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    env = {k: v for k, v in os.environ.items() if k not in ("HOMELAB_HEADLESS", "JUPYTER_TOKEN")}
    child = subprocess.Popen(
        [sys.executable, "-m", "homelab_lib.cli", "jupyter", "-f", "parameters/example.yaml", "--ip", IP,
         "--archive", str(archive), "--notebook", "tests/widget_notebooks/toy_runbook.ipynb"],
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        process_group=0, preexec_fn=dispositions,
    )  # fmt: skip
    try:
        yield child
    finally:
        with suppress(ProcessLookupError):  # the command and whatever it left behind (its server, if it died)
            os.killpg(child.pid, signal.SIGKILL)
        child.wait(30)
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()


def url_of(child: subprocess.Popen[str]) -> str:
    assert child.stdout is not None
    lines = [child.stdout.readline() for _ in range(2)]
    url = lines[1].removeprefix("open: ").strip()
    assert url.startswith(f"http://{IP}:"), lines
    return url


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_homelab_jupyter_serves_on_loopback_with_a_token_and_prints_the_url(tmp_path: Path) -> None:
    toy = make_toy(tmp_path / "root")
    with homelab_jupyter(toy.root, toy.archive) as child:
        url = url_of(child)
        assert "/lab/tree/tests/widget_notebooks/toy_runbook.ipynb?token=" in url
        base, token = url.split("/lab/")[0], url.split("token=")[1]
        with pytest.raises(urllib.error.HTTPError, match="403"):
            urllib.request.urlopen(f"{base}/api/contents/tests/widget_notebooks", timeout=10)
        with urllib.request.urlopen(f"{base}/api/contents/tests/widget_notebooks?token={token}", timeout=10) as r:
            names = {c["name"] for c in json.load(r)["content"]}
        assert names >= {"toy_runbook.ipynb", "toy.py"}
        with urllib.request.urlopen(f"{base}/api/kernelspecs?token={token}", timeout=10) as r:
            assert "python3" in json.load(r)["kernelspecs"]
        child.send_signal(signal.SIGINT)
        assert child.wait(60) == 0


def test_the_token_is_on_no_command_line_and_in_no_environment(tmp_path: Path) -> None:
    toy = make_toy(tmp_path / "root")
    with homelab_jupyter(toy.root, toy.archive) as child:
        token = url_of(child).split("token=")[1]
        (server,) = children(child.pid)
        for pid in (child.pid, server):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()  # what any local user can read
            assert token.encode() not in cmdline
            assert b"jupyterlab" in cmdline or pid == child.pid
            assert token.encode() not in Path(f"/proc/{pid}/environ").read_bytes()
        environ = dict(
            line.split("=", 1) for line in Path(f"/proc/{server}/environ").read_text().split("\0") if "=" in line
        )
        assert not Path(environ["JUPYTER_TOKEN_FILE"]).exists()  # read at start, gone once the server answered
        assert not Path(environ["JUPYTER_TOKEN_FILE"]).parent.exists()


@pytest.mark.parametrize("stop_with", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_homelab_jupyter_stops_within_5_s_even_with_sigint_inherited_as_ignored(
    tmp_path: Path, stop_with: signal.Signals
) -> None:
    toy = make_toy(tmp_path / "root")
    with homelab_jupyter(toy.root, toy.archive, ignore_sigint=True) as child:
        url_of(child)
        (server,) = children(child.pid)
        asked = time.monotonic()
        child.send_signal(stop_with)  # to the command alone, as `kill -INT <pid>` does to a background job
        assert child.wait(10) == 0
        assert time.monotonic() - asked < 5
        assert not alive(server)  # and its server stopped with it


def test_homelab_jupyter_refuses_an_address_that_is_not_loopback(tmp_path: Path) -> None:
    toy = make_toy(tmp_path / "root")
    done = subprocess.run(
        [sys.executable, "-m", "homelab_lib.cli", "jupyter", "-f", "parameters/example.yaml", "--ip", "0.0.0.0"],
        cwd=toy.root, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert "not a loopback address" in done.stderr
