"""Shared fixtures: the repository, valid parameter files in tmp, tiny notebooks."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = Path(__file__).resolve().parent / "notebooks"

pytest_plugins = [
    *(["tests.lab_fixtures"] if (Path(__file__).parent / "lab_fixtures.py").exists() else []),
    "tests.kube_fixtures",
]


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def make_params(tmp_path: Path) -> Callable[..., Path]:
    """Write a valid profile-real parameter file into tmp_path, with its secrets in files there.

    Keyword arguments replace top-level keys; ``edit`` is a function that changes the data in place.
    Returns the file's path. The secret values are in ``tmp_path / 'secrets'``.
    """

    def make(filename: str = "params.yaml", edit: Callable[[dict], None] | None = None, **top: object) -> Path:
        yaml = YAML(typ="rt")
        data = yaml.load((REPO / "parameters" / "example.yaml").read_text())
        secrets = tmp_path / "secrets"
        secrets.mkdir(exist_ok=True)
        (secrets / "pve-token").write_text("pve-token-value-1f2e3d4c\n")
        (secrets / "grafana").write_text("grafana-admin-pw-9a8b7c\n")
        (secrets / "restic").write_text("restic-repo-pw-5e6f7a\n")
        (secrets / "id_ed25519").write_text("ssh-private-key-material-0x42\n")
        (secrets / "postgres-password").write_text("postgres-pw-77aa88bb\n")
        data["proxmox"]["token_secret"] = "file:secrets/pve-token"
        data["proxmox"]["ca_file"] = "secrets/ca.pem"
        data["monitoring"]["grafana_admin_password"] = "file:secrets/grafana"
        data["backups"]["restic_password"] = "file:secrets/restic"
        data["ssh"]["private_key"] = "file:secrets/id_ed25519"
        data["services"]["postgres"]["secrets"]["postgres_password"]["ref"] = "file:secrets/postgres-password"
        for key, value in top.items():
            data[key] = value
        if edit:
            edit(data)
        path = tmp_path / filename
        with path.open("w") as f:
            yaml.dump(data, f)
        return path

    return make


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset the example's secret variables so a test sees exactly what it sets."""
    for name in list(os.environ):
        if name.startswith(("PVE_", "GRAFANA_", "RESTIC_", "POSTGRES_")):
            monkeypatch.delenv(name)


@pytest.fixture
def pve_lab(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """The lab's fakepve (built by its launcher) served in this process, with fault switches at hand, and
    an inventory for it; time runs at ``@pytest.mark.fakepve(time_scale=...)`` (default 0). See
    tests/test_proxmox_fixtures.py."""
    from tests.test_proxmox_fixtures import make_pve_lab

    marker = request.node.get_closest_marker("fakepve")
    time_scale = float(marker.kwargs.get("time_scale", 0)) if marker else 0.0
    with make_pve_lab(tmp_path, time_scale=time_scale) as lab:
        yield lab
