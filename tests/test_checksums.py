"""Checksum manifests, taken here and over SSH on a real sshd (127.0.7.31), compared with sha256sum."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from homelab_lib.core.errors import ManifestError
from homelab_lib.hosts import checksums
from homelab_lib.hosts.ssh import SshTarget, connect
from tests.sshd_fixtures import start_sshd

ADDRESS = "127.0.7.31"


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshTarget]:
    with start_sshd(tmp_path_factory.mktemp("sshd"), ADDRESS) as target:
        yield target


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "sub dir" / "deeper").mkdir(parents=True)
    (root / "a.txt").write_text("alpha\n")
    (root / "sub dir" / "b with spaces.bin").write_bytes(os.urandom(300_000))
    (root / "sub dir" / "deeper" / "empty").write_bytes(b"")
    (root / "back\\slash\nnewline").write_text("odd names are kept as they are\n")
    (root / "link").symlink_to("a.txt")
    # both sides of the 1 MiB line between files hashed one per process and in batches
    big = (("big exactly 1 MiB", 1 << 20), ("big 1 MiB + 1", (1 << 20) + 1), ("big\\odd\nname 3 MiB", 3 << 20))
    for name, size in big:
        (root / "sub dir" / name).write_bytes(os.urandom(size))
    return root


def test_the_manifest_matches_sha256sum_file_by_file(tree: Path) -> None:
    m = checksums.local_manifest(tree)
    assert m.files == 7
    assert m.total_bytes == sum(p.stat().st_size for p in tree.rglob("*") if p.is_file() and not p.is_symlink())
    for path, entry in m.entries.items():
        if entry.kind == "f":
            assert entry.sha256 == hashlib.sha256((tree / path).read_bytes()).hexdigest(), path
    out = subprocess.run(["sha256sum", str(tree / "a.txt")], capture_output=True, text=True, check=True).stdout
    assert m.entries["a.txt"].sha256 == out.split()[0]
    assert m.entries["link"].kind == "l"


def test_without_openssl_sha256sum_hashes_the_big_files_to_the_same_manifest(tree: Path, tmp_path: Path) -> None:
    tools = tmp_path / "bin"  # the tools the command needs, openssl left out
    tools.mkdir()
    for tool in ("sh", "find", "xargs", "sha256sum", "mktemp", "cat", "rm", "printf"):
        found = shutil.which(tool)
        assert found is not None, f"{tool} is not on this machine"
        (tools / tool).symlink_to(found)
    assert shutil.which("openssl") is not None, "openssl is not on this machine: the other branch is not tested"
    done = subprocess.run(
        ["sh", "-c", checksums.manifest_command(str(tree))], capture_output=True, env={"PATH": str(tools)}, check=True
    )
    assert checksums.parse_raw(done.stdout.decode(), where="test") == checksums.local_manifest(tree)


def test_the_text_form_reads_back_equal(tree: Path) -> None:
    m = checksums.local_manifest(tree)
    assert checksums.Manifest.parse(m.text(), where="test") == m
    assert checksums.compare(m, checksums.Manifest.parse(m.text(), where="test")).ok


def test_compare_names_missing_extra_and_changed(tree: Path) -> None:
    before = checksums.local_manifest(tree)
    (tree / "a.txt").write_text("changed\n")
    (tree / "sub dir" / "deeper" / "empty").unlink()
    (tree / "new").write_text("new\n")
    diff = checksums.compare(before, checksums.local_manifest(tree))
    assert diff.changed == ("a.txt",)
    assert diff.missing == ("sub dir/deeper/empty",)
    assert diff.extra == ("new",)
    assert "1 changed (a.txt)" in diff.summary()


def test_a_same_size_change_is_found(tree: Path) -> None:
    before = checksums.local_manifest(tree)
    (tree / "a.txt").write_text("alphA\n")
    assert checksums.compare(before, checksums.local_manifest(tree)).changed == ("a.txt",)


def test_over_ssh_the_manifest_is_the_same_as_here(sshd: SshTarget, tree: Path) -> None:
    client = connect(sshd)
    try:
        remote = checksums.remote_manifest(client, str(tree), where="testvm")
        with pytest.raises(ManifestError, match="does not exist"):
            checksums.remote_manifest(client, str(tree / "nope"), where="testvm")
    finally:
        client.close()
    assert remote == checksums.local_manifest(tree)


def test_a_damaged_manifest_line_is_named() -> None:
    with pytest.raises(ManifestError, match="line 2") as e:
        checksums.Manifest.parse(f"{'0' * 64} 1 f ok\nnot a line\n", where="snap:manifest")
    assert "snap:manifest:2" in str(e.value)
