"""SSH commands against a real OpenSSH server on 127.0.7.x, started by this module in tmp (not the lab)."""

from __future__ import annotations

import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from homelab_lib.core.errors import ComposeError, SshError
from homelab_lib.hosts.docker import DockerHost, check_stack_name
from homelab_lib.hosts.ssh import SshTarget, connect, run_command
from tests.sshd_fixtures import start_sshd

ADDRESS = "127.0.7.21"
CHATTY = "sh -c 'head -c 3000000 /dev/zero | tr \"\\0\" x >&2; echo done'"


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshTarget]:
    """An sshd of our own on ADDRESS, logging in this user with a key made here; its target."""
    with start_sshd(tmp_path_factory.mktemp("sshd"), ADDRESS) as target:
        yield target


@pytest.fixture
def host(sshd: SshTarget) -> Iterator[DockerHost]:
    with DockerHost.open(sshd) as h:
        yield h


@pytest.mark.timeout(120)
def test_chatty_stderr_does_not_deadlock(host: DockerHost) -> None:
    result = host.run(CHATTY, timeout=30)
    assert result.ok
    assert result.stdout == "done\n"
    assert len(result.stderr) == 3_000_000
    assert set(result.stderr) == {"x"}


@pytest.mark.timeout(120)
def test_run_command_keeps_stdout_and_stderr_apart(sshd: SshTarget) -> None:
    client = connect(sshd)
    try:
        big = "sh -c 'head -c 3000000 /dev/zero | tr \"\\0\" o; echo err >&2; exit 3'"
        result = run_command(client, big, timeout=30, where="VM testvm")
        assert result.exit_code == 3
        assert result.stdout == "o" * 3_000_000
        assert result.stderr == "err\n"
    finally:
        client.close()


@pytest.mark.timeout(60)
def test_a_command_past_its_timeout_raises(host: DockerHost) -> None:
    t0 = time.monotonic()
    with pytest.raises(SshError) as e:
        host.run("sleep 30", timeout=1)
    assert "timed out" in str(e.value)
    assert "VM testvm" in str(e.value)
    assert time.monotonic() - t0 < 25  # it did not wait for the command


def test_put_files_writes_what_differs_atomically_and_seed_files_never_overwrites(
    host: DockerHost, tmp_path: Path
) -> None:
    proj = tmp_path / "proj"
    files = {"a.txt": (b"one", 0o640), "sub/b.txt": (b"two", 0o600)}
    assert host.put_files(str(proj), files, private_dirs=("secrets",)) == 2
    assert host.put_files(str(proj), files) == 0
    assert host.put_files(str(proj), {"a.txt": (b"ONE", 0o644)}) == 1
    assert (proj / "a.txt").read_bytes() == b"ONE"
    assert stat.S_IMODE((proj / "a.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((proj / "sub" / "b.txt").stat().st_mode) == 0o600
    assert stat.S_IMODE((proj / "secrets").stat().st_mode) == 0o700
    seed = tmp_path / "seed" / "x" / "c.txt"
    assert host.seed_files({str(seed): b"three"}, 0o600) == 1
    assert host.seed_files({str(seed): b"other"}) == 0
    assert seed.read_bytes() == b"three"
    assert stat.S_IMODE(seed.stat().st_mode) == 0o600
    assert not list(tmp_path.rglob("*.homelab-tmp"))


def test_remove_folder_removes_a_project_folder(host: DockerHost, tmp_path: Path) -> None:
    project = tmp_path / "homelab" / "compose" / "docker-a-media"
    (project / "secrets").mkdir(parents=True)
    (project / "compose.yaml").write_text("services: {}\n")
    host.remove_folder(str(project))
    assert not project.exists()
    assert project.parent.exists()


@pytest.mark.parametrize(
    "stack", ["x/../..", "..", "media/../../../important", "media/..", ".", "a b", "UPPER", "x;rm -rf ~"]
)
def test_remove_folder_refuses_a_path_made_from_a_bad_stack_label(host: DockerHost, tmp_path: Path, stack: str) -> None:
    root = tmp_path / "homelab" / "compose"
    (root / "docker-a-x").mkdir(parents=True)
    important = tmp_path / "important"
    important.mkdir()
    (important / "data").write_text("keep\n")
    folder = f"{root}/docker-a-{stack}"  # as deploy builds it: remote_dir(host, project_name(host, stack))
    with pytest.raises(ComposeError) as e:
        host.remove_folder(folder)
    assert "refusing to remove" in str(e.value)
    assert e.value.where == host.where
    assert (important / "data").read_text() == "keep\n"
    assert (root / "docker-a-x").is_dir()
    with pytest.raises(ComposeError):
        check_stack_name(stack, where="VM testvm")


def test_check_stack_name_accepts_inventory_names_only() -> None:
    for stack in ("media", "arr", "exporters", "a", "k3s-core"):
        assert check_stack_name(stack, where="VM testvm") == stack
    for bad in ("-lead", "trail-", "", "a/b", "x" * 64):
        with pytest.raises(ComposeError, match="is not a stack name"):
            check_stack_name(bad, where="VM testvm")
