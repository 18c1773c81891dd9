"""SSH commands against a real OpenSSH server on 127.0.7.x, started by this module in tmp (not the lab)."""

from __future__ import annotations

import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from homelab_lib.clients.snippets import SshSnippets
from homelab_lib.core.errors import ComposeError, SshError
from homelab_lib.hosts.docker import DockerHost, check_stack_name
from homelab_lib.hosts.ssh import SshTarget, connect, run_command
from tests.sshd_fixtures import start_sshd

ADDRESS = "127.0.7.21"
CHATTY = "sh -c 'head -c 3000000 /dev/zero | tr \"\\0\" x >&2; echo done'"


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshTarget]:
    """An sshd of our own on ADDRESS, logging in this user with a key made here, its SFTP requests logged; its
    target."""
    d = tmp_path_factory.mktemp("sshd")
    with start_sshd(d, ADDRESS, sftp_log=d / "sftp.log") as target:
        yield target


def sftp_requests(sshd: SshTarget) -> list[str]:
    """The SFTP requests the server was asked, in order, as sftp-server logs them (``open "PATH" flags ...``)."""
    log = Path(sshd.key.target).parent / "sftp.log"
    return [line.strip() for line in log.read_text().splitlines()]


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


def test_sftp_files_are_made_exclusive_with_their_final_mode_before_any_byte(
    sshd: SshTarget, host: DockerHost, tmp_path: Path
) -> None:
    """Each temp file is opened O_CREAT|O_EXCL with its final mode in the open itself (as the server logs the
    request), and no chmod follows: it is never 0644 (the server's default) while the bytes go in."""
    proj = tmp_path / "excl"
    host.put_files(str(proj), {"secrets/pw": (b"pw-0x11", 0o600), "compose.yaml": (b"{}\n", 0o644)},
                   private_dirs=("secrets",))  # fmt: skip
    seed = tmp_path / "seeded" / "first.yml"
    host.seed_files({str(seed): b"seed\n"}, 0o640)
    snippets = SshSnippets("local", str(tmp_path / "snippets"), {"pve1": sshd.address}, sshd.user, sshd.port,
                           sshd.key, sshd.known_hosts)  # fmt: skip
    snippets.put("pve1", "user-data.yaml", "#cloud-config\n")
    log = sftp_requests(sshd)
    written = ((proj / "secrets" / "pw", 0o600), (proj / "compose.yaml", 0o644), (seed, 0o640),
               (tmp_path / "snippets" / "user-data.yaml", 0o644))  # fmt: skip
    for path, mode in written:
        tmp = f"{path}.homelab-tmp"
        assert [line for line in log if line.startswith(f'open "{tmp}"')] == [
            f'open "{tmp}" flags WRITE,CREATE,EXCL mode 0{mode:o}'
        ], "\n".join(log)
        assert not [line for line in log if line.startswith(f'set "{tmp}"')]  # no chmod once the bytes are in
        assert stat.S_IMODE(path.stat().st_mode) == mode
    assert not list(tmp_path.rglob("*.homelab-tmp"))


def test_a_link_planted_at_the_temp_name_is_never_written_through(host: DockerHost, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    victim.chmod(0o600)
    proj = tmp_path / "planted"
    proj.mkdir()
    (proj / "compose.yaml.homelab-tmp").symlink_to(victim)
    assert host.put_files(str(proj), {"compose.yaml": (b"new\n", 0o644)}) == 1
    assert victim.read_text() == "keep\n"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600
    assert (proj / "compose.yaml").read_bytes() == b"new\n"
    assert not (proj / "compose.yaml").is_symlink()


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
