"""The run lock's folder and files: private to the user, never written through a link."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from homelab_lib.core.errors import HomelabError, RunError
from homelab_lib.runs.archive import Archive
from homelab_lib.runs.runner import run_notebook
from tests.test_runner import write_nb


def run(tmp_path: Path, lock_dir: Path) -> None:
    nb = write_nb(tmp_path / "lockme.ipynb", "print('ran')")
    run_notebook(nb, archive_dir=tmp_path / "archive", lock_dir=lock_dir, progress_bar=False)


def refused(tmp_path: Path, lock_dir: Path) -> HomelabError:
    with pytest.raises(RunError) as e:
        run(tmp_path, lock_dir)
    assert not (tmp_path / "archive").exists() or Archive(tmp_path / "archive").records() == []  # nothing ran
    assert e.value.where
    assert e.value.hint
    return e.value


def test_a_new_lock_folder_is_private(tmp_path: Path) -> None:
    old = os.umask(0)  # the mode must not depend on the caller's umask
    try:
        run(tmp_path, tmp_path / "locks")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.lstat(tmp_path / "locks").st_mode) == 0o700
    assert stat.S_IMODE(os.lstat(tmp_path / "locks" / "default.lock").st_mode) & 0o077 == 0


def test_a_folder_others_may_write_to_is_refused(tmp_path: Path) -> None:
    locks = tmp_path / "locks"
    locks.mkdir()
    locks.chmod(0o777)
    error = refused(tmp_path, locks)
    assert "others may write to the run-lock folder (mode 0777)" in str(error)
    assert error.where == str(locks)
    assert "chmod 700" in error.hint


def test_a_symlinked_holder_file_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    locks = tmp_path / "locks"
    locks.mkdir(mode=0o700)
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me\n")
    (locks / "default.holder").symlink_to(victim)
    error = refused(tmp_path, locks)
    assert "default.holder in the run-lock folder is a symbolic link" in str(error)
    assert victim.read_text() == "keep me\n"


def test_a_symlinked_lock_file_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    locks = tmp_path / "locks"
    locks.mkdir(mode=0o700)
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me\n")
    (locks / "default.lock").symlink_to(victim)
    refused(tmp_path, locks)
    assert victim.read_text() == "keep me\n"


def test_a_symlinked_folder_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere"
    real.mkdir(mode=0o700)
    (tmp_path / "locks").symlink_to(real)
    assert "is a symbolic link" in str(refused(tmp_path, tmp_path / "locks"))


@pytest.mark.skipif(os.getuid() != 0, reason="giving a folder to another user needs root")
def test_a_folder_of_another_user_is_refused(tmp_path: Path) -> None:
    locks = tmp_path / "locks"
    locks.mkdir(mode=0o700)
    os.chown(locks, 65534, 65534)
    assert "belongs to " in str(refused(tmp_path, locks))
    assert "uid 65534" in str(refused(tmp_path, locks))
