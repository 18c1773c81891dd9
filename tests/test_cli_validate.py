"""`homelab validate`: exit 0, or exit 2 with FILE:LINE: key: message lines."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from homelab_lib.cli import main

BAD = {
    "wrong-type": (lambda d: d["vms"][0].__setitem__("memory_mib", "lots"), "vms[0].memory_mib", "lots"),
    "unknown-key": (lambda d: d["proxmox"].__setitem__("tokenid", "x"), "proxmox.tokenid", "unknown key"),
    "missing-secret": (
        lambda d: d["proxmox"].__setitem__("token_secret", "env:HOMELAB_TEST_UNSET"),
        "proxmox.token_secret",
        "HOMELAB_TEST_UNSET is not set",
    ),
    "over-capacity": (lambda d: d["vms"][3].__setitem__("memory_mib", 131072), "nodes[3].memory_gib", "over capacity"),
    "duplicate-vmid": (lambda d: d["vms"][1].__setitem__("vmid", 130), "vms[2].vmid", "duplicate vmid"),
    "duplicate-ip": (lambda d: d["vms"][3].__setitem__("ip", "192.168.1.21/24"), "vms[3].ip", "duplicate IP"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_file_exits_2_with_file_line(
    case: str, make_params: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    edit, key, words = BAD[case]
    path = make_params(f"{case}.yaml", edit=edit)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    file, line, rest = err[0].split(":", 2)
    assert file == str(path)
    assert int(line) > 0
    assert rest.startswith(f" {key}: ")
    assert words in rest


def test_yaml_syntax_error_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "syntax.yaml"
    path.write_text("name: lab\nnodes:\n  - {name: a, cores: 2\n")
    assert main(["validate", str(path)]) == 2
    assert capsys.readouterr().err.startswith(f"{path}:")


def test_valid_file_exits_0(make_params: Callable[..., Path], capsys: pytest.CaptureFixture[str]) -> None:
    path = make_params()
    assert main(["validate", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: valid\n"


def test_offline_skips_secret_resolution(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PVE_TOKEN_SECRET", raising=False)
    example = repo / "parameters" / "example.yaml"
    assert main(["validate", "--offline", str(example)]) == 0
    assert main(["validate", str(example)]) == 2
    assert "PVE_TOKEN_SECRET is not set" in capsys.readouterr().err


def test_validate_as_a_command(make_params: Callable[..., Path]) -> None:
    path = make_params(edit=BAD["wrong-type"][0])
    done = subprocess.run(
        [sys.executable, "-m", "homelab_lib.cli", "validate", str(path)], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr.startswith(f"{path}:")
