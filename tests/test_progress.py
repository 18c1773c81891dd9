"""Progress: widgets only where a person looks at the notebook, lines everywhere else; counters under a lock."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

from homelab_lib.core.progress import Lines, interactive

WIDGET = "application/vnd.jupyter.widget-view+json"


def test_plain_papermill_run_gets_lines_not_widgets(tmp_path: Path) -> None:
    nb = tmp_path / "progress.ipynb"
    source = (
        "from homelab_lib.core.progress import auto\n"
        "t = auto().task('steps', 2)\nt.advance('one')\nt.advance('two')\nt.done()"
    )
    nbformat.write(
        new_notebook(
            cells=[new_code_cell(source)],
            metadata={"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}},
        ),
        str(nb),
    )
    out = tmp_path / "out.ipynb"
    env = {k: v for k, v in os.environ.items() if k != "HOMELAB_HEADLESS"}  # papermill as anyone runs it
    done = subprocess.run(
        [sys.executable, "-m", "papermill", str(nb), str(out), "--no-progress-bar"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    outputs = nbformat.read(str(out), as_version=4).cells[0].outputs
    assert not [o for o in outputs if WIDGET in o.get("data", {})], "a widget was shown in a headless run"
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert text == "[steps] 1/2 one\n[steps] 2/2 two\n[steps] done\n"


def test_outside_a_kernel_is_not_interactive() -> None:
    assert not interactive()


def test_counters_advance_under_the_lock() -> None:
    out = io.StringIO()
    task = Lines(out).task("many", 8 * 500)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: a lost update would show
    try:
        threads = [threading.Thread(target=lambda: [task.advance() for _ in range(500)]) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(switch)
    counts = [int(line.split()[1].split("/")[0]) for line in out.getvalue().splitlines()]
    assert counts == list(range(1, 8 * 500 + 1))  # each count once, printed in order


def test_a_front_end_that_allows_stdin_gets_widgets() -> None:
    from jupyter_client.manager import start_new_kernel

    env = {k: v for k, v in os.environ.items() if k != "HOMELAB_HEADLESS"}
    km, kc = start_new_kernel(kernel_name="python3", env=env)
    try:
        shown = []
        for allow_stdin in (True, False):  # as JupyterLab sends it; as papermill and nbval send it
            msg_id = kc.execute(
                "from homelab_lib.core.progress import auto\nauto().task('x', 1).done()", allow_stdin=allow_stdin
            )
            kinds = []
            while True:
                msg = kc.get_iopub_msg(timeout=60)
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                    break
                if msg["msg_type"] == "display_data":
                    kinds += list(msg["content"]["data"])
                elif msg["msg_type"] == "stream":
                    kinds.append("stream")
            shown.append(kinds)
        assert WIDGET in shown[0]
        assert shown[1] == ["stream"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
