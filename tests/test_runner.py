"""The runner and the audit archive: papermill runs, hash chain, secret scan, lock."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from homelab_lib.cli import main
from homelab_lib.core.errors import ConfigError, LockHeld, NotebookFailed, SecretLeak
from homelab_lib.runs.archive import Archive
from homelab_lib.runs.runner import run_notebook

PARAMS = 'params_file = None\nconfirm = False\nlabel = "none"'


def write_nb(path: Path, *sources: str) -> Path:
    cells = [new_code_cell(PARAMS, metadata={"tags": ["parameters"]})]
    cells += [new_code_cell(s) for s in sources]
    nbformat.write(
        new_notebook(
            cells=cells, metadata={"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}}
        ),
        str(path),
    )
    return path


class FixedClock:
    """The library's Clock, stopped at one wall time (monotonic time still runs, for durations)."""

    def __init__(self, when: str) -> None:
        self.when = datetime.fromisoformat(when).replace(tzinfo=UTC)

    def now(self) -> datetime:
        return self.when

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def fixed_clock(when: str) -> FixedClock:
    return FixedClock(when)


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    return tmp_path / "archive"


@pytest.fixture
def locks(tmp_path: Path) -> Path:
    return tmp_path / "locks"


def test_ok_run_is_archived_and_chained(
    tmp_path: Path, archive: Path, locks: Path, make_params: Callable[..., Path]
) -> None:
    nb = write_nb(tmp_path / "hello.ipynb", 'print(f"confirm={confirm} label={label}")')
    params = make_params()
    result = run_notebook(
        nb,
        param_files=[params],
        parameters={"confirm": True, "label": "x"},
        archive_dir=archive,
        lock_dir=locks,
        clock=fixed_clock("2026-11-25T17:42:05"),
        progress_bar=False,
    )
    assert result.ok
    assert result.archived == archive / "2026/11/25/174205Z-hello-ok.ipynb"
    executed = nbformat.read(str(result.archived), as_version=4)
    assert executed.cells[-1].outputs[0].text == "confirm=True label=x\n"
    rec = result.record
    assert rec.run == "20261125T174205Z-hello"
    assert rec.homelab == "dreamland"
    assert rec.parameters == {"confirm": True, "label": "x", "params_file": str(params)}
    assert rec.parameter_files == [str(params)]
    assert rec.status == "ok"
    assert rec.prev == "0" * 64
    second = run_notebook(
        nb, archive_dir=archive, lock_dir=locks, clock=fixed_clock("2026-11-25T17:42:05"), progress_bar=False
    )
    assert second.record.run == "20261125T174205Z-hello-2"
    assert second.archived == archive / "2026/11/25/174205Z-hello-ok-2.ipynb"
    assert Archive(archive).verify() == []
    lines = (archive / "index.jsonl").read_bytes().splitlines(keepends=True)

    assert json.loads(lines[1])["prev"] == hashlib.sha256(lines[0]).hexdigest()


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_the_archive_is_private_whatever_the_umask(tmp_path: Path, locks: Path, umask: int) -> None:
    """Archived notebooks, the index, HEAD and the lock are 600, every folder made (parents too) 700."""
    archive = tmp_path / "made" / "archive"
    nb = write_nb(tmp_path / "hello.ipynb", 'print("hello")')
    old = os.umask(umask)
    try:
        for when in ("2026-11-25T17:42:05", "2026-11-26T08:00:00"):
            run_notebook(nb, archive_dir=archive, lock_dir=locks, clock=fixed_clock(when), progress_bar=False)
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "made").rglob("*") if p.is_file()]
    folders = [tmp_path / "made", *(p for p in (tmp_path / "made").rglob("*") if p.is_dir())]
    assert {p.name for p in files} >= {"index.jsonl", "HEAD", ".index.lock", "174205Z-hello-ok.ipynb"}
    assert {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in files} == {
        str(p.relative_to(tmp_path)): "0o600" for p in files
    }
    assert {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in folders} == {
        str(p.relative_to(tmp_path)): "0o700" for p in folders
    }
    assert Archive(archive).verify() == []


def test_failed_notebook_is_archived_with_its_cell(tmp_path: Path, archive: Path, locks: Path) -> None:
    nb = write_nb(tmp_path / "broken.ipynb", "x = 1", 'raise ValueError("boom at step 2")', "print('never')")
    with pytest.raises(NotebookFailed) as e:
        run_notebook(nb, archive_dir=archive, lock_dir=locks, progress_bar=False)
    assert e.value.ename == "ValueError"
    assert "boom at step 2" in str(e.value)
    (rec,) = Archive(archive).records()
    assert rec.status == "failed"
    assert rec.failed_cell == 2  # index in the executed (archived) notebook
    assert rec.error == "ValueError: boom at step 2"
    assert rec.archived.endswith("-broken-failed.ipynb")
    assert (archive / rec.archived).exists()
    assert Archive(archive).verify() == []


def test_secret_printed_by_a_notebook_is_not_archived(
    tmp_path: Path, archive: Path, locks: Path, make_params: Callable[..., Path]
) -> None:
    nb = write_nb(
        tmp_path / "leaky.ipynb",
        "from homelab_lib.inventory import load_inventory\ninv = load_inventory(params_file)",
        "print('token is', inv.proxmox.token_secret.reveal())",
    )
    with pytest.raises(SecretLeak) as e:
        run_notebook(nb, param_files=[make_params()], archive_dir=archive, lock_dir=locks, progress_bar=False)
    assert "NOT archived" in str(e.value)
    assert "cell 3 outputs" in str(e.value)
    assert list(archive.rglob("*.ipynb")) == []
    (rec,) = Archive(archive).records()
    assert rec.status == "leak"
    assert rec.archived == ""
    everything = b"".join(p.read_bytes() for p in archive.rglob("*") if p.is_file())
    assert b"pve-token-value" not in everything
    assert Archive(archive).verify() == []


def test_secret_value_as_parameter_is_refused(tmp_path: Path, archive: Path, locks: Path) -> None:
    nb = write_nb(tmp_path / "p.ipynb", "pass")
    with pytest.raises(ConfigError) as e:
        run_notebook(nb, parameters={"api_token": "abc123"}, archive_dir=archive, lock_dir=locks)
    assert "abc123" not in str(e.value)
    assert "api_token" in str(e.value)
    run_notebook(
        nb, parameters={"api_token": "env:SOME_TOKEN"}, archive_dir=archive, lock_dir=locks, progress_bar=False
    )


def test_tampering_is_detected(tmp_path: Path, archive: Path, locks: Path) -> None:
    nb = write_nb(tmp_path / "t.ipynb", "print(1)")
    runs = [run_notebook(nb, archive_dir=archive, lock_dir=locks, progress_bar=False) for _ in range(3)]
    arch = Archive(archive)
    assert arch.verify() == []

    target = runs[1].archived
    assert target is not None
    original = target.read_bytes()
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0x01
    target.write_bytes(bytes(flipped))
    problems = arch.verify()
    assert len(problems) == 1
    assert str(target) in problems[0]
    assert "record 2" in problems[0]
    assert "altered" in problems[0]
    target.write_bytes(original)

    index = archive / "index.jsonl"
    lines = index.read_bytes().splitlines(keepends=True)
    index.write_bytes(lines[0] + lines[2])  # remove the middle record
    problems = arch.verify()
    assert "record 2" in problems[0]
    assert "does not chain" in problems[0]
    assert any("no record lists" in p for p in problems)

    index.write_bytes(b"".join(lines[:2]))  # cut the last record
    assert any("records were removed from or altered at its end" in p for p in arch.verify())

    edited = json.loads(lines[0])
    edited["status"] = "ok-but-edited"
    index.write_bytes(json.dumps(edited).encode() + b"\n" + b"".join(lines[1:]))
    assert arch.verify()[0].startswith(f"{index}:1: record 1 (run {runs[0].record.run}) was altered")

    index.write_bytes(b"".join(lines))
    runs[2].archived.unlink()  # type: ignore[union-attr]
    problems = arch.verify()
    assert problems == [f"{runs[2].archived}: archived notebook of run {runs[2].record.run} (record 3) was removed"]


def test_second_run_against_the_same_homelab_is_refused(
    tmp_path: Path, archive: Path, locks: Path, make_params: Callable[..., Path]
) -> None:
    params = make_params()
    slow = write_nb(tmp_path / "slow.ipynb", "import time\ntime.sleep(60)")
    env_lock = {"XDG_RUNTIME_DIR": str(tmp_path / "rt")}
    first = subprocess.Popen(
        [sys.executable, "-m", "homelab_lib.cli", "run", str(slow), "-f", str(params), "--archive", str(archive), "-q"],
        env={**os.environ, **env_lock},
    )
    holder = tmp_path / "rt" / f"homelab-locks-{os.getuid()}" / "dreamland.holder"
    try:
        deadline = time.monotonic() + 60
        while not holder.exists():
            assert first.poll() is None, "the first run ended early"
            assert time.monotonic() < deadline
            time.sleep(0.1)
        with pytest.raises(LockHeld) as e:
            run_notebook(
                write_nb(tmp_path / "quick.ipynb", "pass"),
                param_files=[params],
                archive_dir=archive,
                lock_dir=holder.parent,
            )
        assert "another run against homelab 'dreamland' is under way (slow.ipynb, pid" in str(e.value)
        other = make_params("other.yaml", name="otherlab")
        run_notebook(
            write_nb(tmp_path / "quick2.ipynb", "pass"),
            param_files=[other],
            archive_dir=archive,
            lock_dir=holder.parent,
            progress_bar=False,
        )  # another homelab is not blocked
    finally:
        first.kill()
        first.wait()


def test_cli_run_audit_list_show_verify(
    tmp_path: Path, archive: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "rt"))
    ok = write_nb(tmp_path / "fine.ipynb", "print('fine')")
    bad = write_nb(tmp_path / "bad.ipynb", "1/0")
    assert main(["run", str(ok), "--archive", str(archive), "-q", "-p", "confirm", "true"]) == 0
    assert main(["run", str(bad), "--archive", str(archive), "-q"]) == 1
    err = capsys.readouterr().err
    assert "ZeroDivisionError" in err
    assert main(["audit", "list", "--archive", str(archive)]) == 0
    out = capsys.readouterr().out
    assert "fine" in out
    assert "failed" in out
    assert main(["audit", "show", "#2", "--archive", str(archive)]) == 0
    out = capsys.readouterr().out
    assert "ZeroDivisionError" in out
    assert "failed_cell: 1" in out
    assert main(["audit", "verify", "--archive", str(archive)]) == 0
    (victim,) = list(archive.rglob("*-fine-ok.ipynb"))
    data = bytearray(victim.read_bytes())
    data[100] = ord("X") if data[100] != ord("X") else ord("Y")
    victim.write_bytes(bytes(data))
    assert main(["audit", "verify", "--archive", str(archive)]) == 1
    assert f"{victim}: archived notebook of run" in capsys.readouterr().err
    assert main(["audit", "show", "nope", "--archive", str(archive)]) == 1


def test_without_f_the_notebooks_own_params_file_is_locked_and_scanned(
    tmp_path: Path, archive: Path, locks: Path, make_params: Callable[..., Path]
) -> None:
    params = make_params()
    nb = tmp_path / "default.ipynb"
    write_nb(
        nb,
        "from homelab_lib.inventory import load_inventory\ninv = load_inventory(params_file)",
        "print(inv.proxmox.token_secret.reveal())",
    )
    text = nb.read_text().replace("params_file = None", f"params_file = '{params.name}'")
    nb.write_text(text)
    with pytest.raises(SecretLeak):
        run_notebook(nb, archive_dir=archive, lock_dir=locks, progress_bar=False)
    (rec,) = Archive(archive).records()
    assert rec.homelab == "dreamland"
    assert rec.parameter_files == [str(params)]


def test_log_output_is_redacted(
    tmp_path: Path, archive: Path, locks: Path, make_params: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    nb = write_nb(
        tmp_path / "loud.ipynb",
        "from homelab_lib.inventory import load_inventory\n"
        "print(load_inventory(params_file).proxmox.token_secret.reveal())",
    )
    caplog.set_level("INFO", logger="papermill")
    with pytest.raises(SecretLeak):
        run_notebook(
            nb, param_files=[make_params()], archive_dir=archive, lock_dir=locks, progress_bar=False, log_output=True
        )
    assert "pve-token-value" not in caplog.text
    assert "********" in caplog.text


def test_malformed_head_is_a_problem_not_a_crash(tmp_path: Path, archive: Path, locks: Path) -> None:
    run_notebook(write_nb(tmp_path / "h.ipynb", "pass"), archive_dir=archive, lock_dir=locks, progress_bar=False)
    (archive / "HEAD").write_text("abc def\n")
    assert Archive(archive).verify() == [
        f"{archive / 'HEAD'}: missing or unreadable; the index's end cannot be checked"
    ]


KERNEL_PROBE = """\
import json, os, stat
from ipykernel import get_connection_file

connection = get_connection_file()
info = json.load(open(connection))
folder = os.path.dirname(connection)
sockets = set()
for fd in os.listdir("/proc/self/fd"):
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        continue
    if target.startswith("socket:["):
        sockets.add(target[len("socket:["):-1])
listening = []
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    with open(table) as f:
        for row in list(f)[1:]:
            cols = row.split()
            if cols[3] == "0A" and cols[9] in sockets:  # LISTEN, and this process's socket
                listening.append(int(cols[1].split(":")[1], 16))
from ipykernel.kernelapp import IPKernelApp

pipe = IPKernelApp.instance().iopub_thread._pipe_port
print(json.dumps({
    "transport": info["transport"], "ip": info["ip"], "folder": folder, "files": sorted(os.listdir(folder)),
    "mode": stat.S_IMODE(os.stat(folder).st_mode), "owner": os.stat(folder).st_uid, "tcp_listening": listening,
    "iopub_pipe": pipe,
}))
"""


def test_the_kernel_of_a_run_is_on_ipc_in_a_private_folder_and_listens_on_no_tcp_port(
    tmp_path: Path, archive: Path
) -> None:
    nb = write_nb(tmp_path / "probe.ipynb", KERNEL_PROBE)
    done = subprocess.run(
        [sys.executable, "-m", "homelab_lib.cli", "run", str(nb), "--archive", str(archive), "-q"],
        env={**os.environ, "XDG_RUNTIME_DIR": str(tmp_path / "rt")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "Kernel is running over TCP" not in done.stderr  # the warning went because its cause went
    (record,) = Archive(archive).records()
    executed = nbformat.read(str(archive / record.archived), as_version=4)
    seen = json.loads(executed.cells[-1].outputs[0].text)
    assert seen["transport"] == "ipc"
    # no kernel channel on TCP: what is left is ipykernel's IOPub pipe for forked subprocesses, which it binds
    # to loopback whatever the transport; a PULL socket that forwards only messages with its random token
    assert [port for port in seen["tcp_listening"] if port != seen["iopub_pipe"]] == []
    assert len(seen["tcp_listening"]) <= 1
    assert seen["mode"] & 0o777 == 0o700  # (jupyter_client adds the sticky bit)
    assert seen["owner"] == os.getuid()
    assert seen["ip"].startswith(seen["folder"] + "/")  # the sockets are in that folder too
    assert {"kernel.json", "kernel-1", "kernel-2", "kernel-3", "kernel-4", "kernel-5"} <= set(seen["files"])
    assert not Path(seen["folder"]).exists()  # removed with the run's temporary folder
