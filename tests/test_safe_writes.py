"""Files written safely: monitoring secrets never left readable by all, ``homelab convert -o`` never
following a planted link, migrate's path checks never taking the storage root for a PV folder.

The monitoring tests talk SFTP to a real OpenSSH server of their own (tests/sshd_fixtures.py): as root,
which may give a file to the containers' group, and as a user who may not (``daemon`` when the tests run
as root, else this user).
"""

from __future__ import annotations

import getpass
import io
import os
import pwd
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from homelab_lib.cli import main
from homelab_lib.core.errors import MonitoringError
from homelab_lib.core.plan import Action
from homelab_lib.core.progress import Lines
from homelab_lib.hosts.docker import DockerHost
from homelab_lib.inventory import Inventory, load_inventory
from homelab_lib.monitoring.runbook import CONTAINER_GID, MonitoringAdapter
from tests.sshd_fixtures import free_port, start_sshd

COMPOSE = Path(__file__).resolve().parent / "data" / "compose"
TOKEN = "k3s-scrape-token-0x6b"
ROOT_ADDRESS = "127.0.7.31"
USER_ADDRESS = "127.0.7.32"
#: A login that may not give a file to group 65534: a system user when the tests run as root.
UNPRIVILEGED = "daemon" if os.geteuid() == 0 else getpass.getuser()


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder every user may enter (the sshd's keys, the VM's config folders): /tmp/homelab-safe-XXXX."""
    base = Path(tempfile.mkdtemp(prefix="homelab-safe-", dir="/tmp"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def monitoring_inv(make_params: Callable[..., Path], tmp_path: Path, config: Path) -> Inventory:
    """example.yaml with the K3s scrape's token in a file, and the monitoring config folders under config."""
    (tmp_path / "secrets").mkdir(exist_ok=True)
    (tmp_path / "secrets" / "token").write_text(TOKEN + "\n")
    (tmp_path / "secrets" / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n")

    def edit(d: dict[str, Any]) -> None:
        d["monitoring"]["k3s"] = {"token": "file:secrets/token", "ca_file": "secrets/ca.pem"}
        nothing = f"http://127.0.0.1:{free_port('127.0.0.1')}"  # no reload answers: it comes after the files
        d["monitoring"]["prometheus_url"] = d["monitoring"]["alertmanager_url"] = nothing
        mounts = {"prometheus": "/etc/prometheus", "alertmanager": "/etc/alertmanager",
                  "grafana": "/etc/grafana/provisioning"}  # fmt: skip
        d["services"] = {
            name: {"binds": [{"host": str(config / name), "container": mount, "read_only": True}]}
            for name, mount in mounts.items()
        }

    return load_inventory(make_params(edit=edit))


def deploy(inv: Inventory, host: DockerHost) -> None:
    adapter = MonitoringAdapter(inv, hosts={"docker-hypno": host})
    desired = adapter.desired()
    plan = adapter.plan(desired, adapter.observe(desired))
    assert plan.of_action(Action.CREATE)
    adapter.apply(desired, plan, confirm=True, progress=Lines(io.StringIO()))


def holding(folder: Path, value: str) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and value.encode() in p.read_bytes()]


@pytest.mark.timeout(120)
def test_a_monitoring_secret_is_refused_when_it_cannot_be_given_to_the_containers_group(
    make_params: Callable[..., Path], tmp_path: Path, shared: Path
) -> None:
    config = shared / "vm"
    config.mkdir()
    account = pwd.getpwnam(UNPRIVILEGED)
    os.chown(config, account.pw_uid, account.pw_gid)
    assert CONTAINER_GID not in os.getgrouplist(UNPRIVILEGED, account.pw_gid)  # it may not chgrp to nogroup
    inv = monitoring_inv(make_params, tmp_path, config)
    sshd = start_sshd(shared / "sshd", USER_ADDRESS, host="docker-hypno", user=UNPRIVILEGED)
    with sshd as target, DockerHost.open(target) as host, pytest.raises(MonitoringError) as e:
        deploy(inv, host)
    assert "prometheus/secrets/k3s_token holds a secret" in e.value.message
    assert e.value.where == f"docker-hypno:{config}/prometheus/secrets/k3s_token"
    assert "log in as root" in e.value.hint
    assert "usermod -aG nogroup" in e.value.hint
    assert TOKEN not in str(e.value)
    assert holding(config, TOKEN) == []  # not written at all: neither 0644 nor as a temp file
    assert not list(config.rglob("k3s_token*"))
    assert (config / "prometheus" / "rules").is_dir()  # the files before it were written


@pytest.mark.timeout(120)
@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to group 65534 needs root (the lab's VMs log in as root)")
def test_a_monitoring_secret_is_made_0600_then_given_to_the_group_and_made_0640(
    make_params: Callable[..., Path], tmp_path: Path, shared: Path
) -> None:
    config = shared / "vm"
    log = shared / "sftp.log"
    inv = monitoring_inv(make_params, tmp_path, config)
    sshd = start_sshd(shared / "sshd", ROOT_ADDRESS, host="docker-hypno", sftp_log=log)
    with sshd as target, DockerHost.open(target) as host, pytest.raises(MonitoringError, match="reload"):
        deploy(inv, host)  # every file written, then the reload finds no Prometheus
    token = config / "prometheus" / "secrets" / "k3s_token"
    assert token.read_text() == TOKEN + "\n"
    assert stat.S_IMODE(token.stat().st_mode) == 0o640
    assert token.stat().st_gid == CONTAINER_GID
    assert holding(config, TOKEN) == [token]
    requests = log.read_text()
    tmp = f"{token}.homelab-tmp"
    assert f'open "{tmp}" flags WRITE,CREATE,EXCL mode 0600' in requests
    assert requests.index(f'open "{tmp}"') < requests.index(f'set "{tmp}" owner 0 group {CONTAINER_GID}')


# ------------------------------------------------------------------ homelab convert -o


def test_convert_o_replaces_a_planted_link_and_never_writes_through_it(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    victim.chmod(0o644)
    for name in ("postgres.yaml", "report.md"):  # links someone who may write the output folder planted
        (out / name).symlink_to(victim)
    assert main(["convert", str(COMPOSE / "databases.yaml"), "-o", str(out)]) == 0
    assert victim.read_text() == "keep\n"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644
    assert sorted(p.name for p in out.iterdir()) == ["app-backend-v2.yaml", "postgres.yaml", "redis.yaml", "report.md"]
    for name, mode in (("postgres.yaml", 0o600), ("report.md", 0o644)):
        assert not (out / name).is_symlink()
        assert stat.S_IMODE((out / name).stat().st_mode) == mode
    assert "kind: Deployment" in (out / "postgres.yaml").read_text()


# ------------------------------------------------------------------ migrate: what may be emptied or removed

ROOT = "/var/lib/rancher/k3s/storage"


@pytest.mark.parametrize(
    "folder",
    [ROOT, f"{ROOT}/", f"{ROOT}//", f"{ROOT}///", f"{ROOT}/.", f"{ROOT}/./", f"{ROOT}/..", f"{ROOT}/pvc-1/..",
     f"{ROOT}/pvc-1/../..", f"{ROOT}//pvc-1", f"{ROOT}/pvc-1/", f"{ROOT}-other/pvc-1", "/var/lib/rancher", "", "/"],
)  # fmt: skip
def test_the_storage_root_in_disguise_is_never_a_pv_folder(folder: str) -> None:
    """What the copy empties (``find . -mindepth 1 -delete``) and a rollback removes (``rm -rf``) is a PV
    folder strictly under the root: ``<root>/`` and ``<root>//`` are the root itself."""
    from homelab_lib.migrate.checkpoints import under

    assert not under(folder, ROOT)
    assert not under(folder, ROOT + "/")


def test_a_pv_folder_under_the_root_is_one() -> None:
    from homelab_lib.migrate.checkpoints import under

    for folder in (f"{ROOT}/pvc-1_media_config", f"{ROOT}/pvc-1/sub", f"{ROOT}/.hidden-pvc"):
        assert under(folder, ROOT)
    assert under("/pvc-1", "/")
    assert not under("/", "/")
    assert not under("//", "/")
