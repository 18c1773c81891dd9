"""Runbook 03's pure parts, no VM: the plan's every rule, config.yaml rendering, the kubeconfig's
localizing, the token made once and reused, the install command and its redacted tail."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from homelab_lib.core.errors import K3sError
from homelab_lib.core.plan import Action
from homelab_lib.core.secrets import SecretRef
from homelab_lib.inventory import load_inventory
from homelab_lib.k3s import desired_state, localize, parse_version, plan, remote, render_config
from homelab_lib.k3s import kubeconfig as kc
from homelab_lib.k3s.state import ApiState, K3sDesired, K3sObserved

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def desired() -> K3sDesired:
    return desired_state(load_inventory(REPO / "parameters" / "lab.yaml"))


def observed(d: K3sDesired, **changes: object) -> K3sObserved:
    """What a VM with K3s as desired shows; changes override fields."""
    base = K3sObserved(d.vm, d.version, d.config, True, "current", ApiState(True, d.version, d.vm, True))
    return replace(base, **changes)  # type: ignore[arg-type]


def actions(d: K3sDesired, o: K3sObserved) -> dict[str, Action]:
    return {c.kind: c.action for c in plan(d, o).changes}


def test_a_vm_as_desired_plans_only_no_ops(desired: K3sDesired) -> None:
    made = plan(desired, observed(desired))
    assert made.empty
    assert [c.kind for c in made.changes] == ["config", "k3s", "service", "kubeconfig"]
    assert made.adapter == "k3s"


def test_a_fresh_vm_plans_config_install_and_kubeconfig_in_that_order(desired: K3sDesired) -> None:
    made = plan(desired, observed(desired, version="", config=None, active=False, kubeconfig="no source"))
    assert [(c.kind, c.action) for c in made.changes] == [
        ("config", Action.CREATE),
        ("k3s", Action.CREATE),
        ("service", Action.NOOP),
        ("kubeconfig", Action.CREATE),
    ]
    (install,) = made.of_action(Action.CREATE)[1:2]
    assert [(f.name, f.old, f.new) for f in install.fields] == [("version", None, "v1.31.4+k3s1")]


def test_a_newer_patch_or_the_next_minor_is_an_upgrade(desired: K3sDesired) -> None:
    for older in ("v1.31.2+k3s1", "v1.31.4+k3s0", "v1.30.8+k3s1"):
        made = plan(desired, observed(desired, version=older))
        (upgrade,) = made.of_action(Action.UPDATE)
        assert upgrade.kind == "k3s"
        assert [(f.old, f.new) for f in upgrade.fields] == [(older, "v1.31.4+k3s1")]
        assert actions(desired, observed(desired, version=older))["service"] == Action.NOOP  # the install restarts it


def test_a_downgrade_is_a_conflict_that_names_both_versions(desired: K3sDesired) -> None:
    made = plan(desired, observed(desired, version="v1.32.1+k3s1"))
    (conflict,) = made.conflicts
    assert conflict.kind == "k3s"
    assert "downgrade from v1.32.1+k3s1 to v1.31.4+k3s1" in conflict.reason
    assert "does not support downgrades" in conflict.reason


def test_skipping_a_minor_is_a_conflict_that_names_the_step_between(desired: K3sDesired) -> None:
    made = plan(desired, observed(desired, version="v1.29.9+k3s1"))
    (conflict,) = made.conflicts
    assert "skips a minor" in conflict.reason
    assert "latest v1.30.x release first" in conflict.reason


def test_an_unknown_installed_version_is_a_conflict(desired: K3sDesired) -> None:
    (conflict,) = plan(desired, observed(desired, version="something else")).conflicts
    assert "not a K3s release name" in conflict.reason


def test_a_changed_config_is_rewritten_naming_each_key_and_k3s_restarted(desired: K3sDesired) -> None:
    edited = desired.config.replace("homelab.io/role=k3s", "homelab.io/role=other").replace(
        "10.43.0.0/16", "10.53.0.0/16"
    )
    made = plan(desired, observed(desired, config=edited))
    config = next(c for c in made.changes if c.kind == "config")
    assert config.action == Action.UPDATE
    assert {f.name: (f.old, f.new) for f in config.fields} == {
        "service-cidr": ("10.53.0.0/16", "10.43.0.0/16"),
        "node-label": (["homelab.io/role=other"], ["homelab.io/role=k3s"]),
    }
    assert actions(desired, observed(desired, config=edited))["service"] == Action.UPDATE


def test_a_config_edited_only_in_comments_is_rewritten_too(desired: K3sDesired) -> None:
    config = next(c for c in plan(desired, observed(desired, config=desired.config + "# mine\n")).changes)
    assert config.action == Action.UPDATE
    assert config.fields[0].name == "content"


def test_a_stopped_service_is_started(desired: K3sDesired) -> None:
    made = plan(desired, observed(desired, active=False))
    (start,) = made.of_action(Action.UPDATE)
    assert (start.kind, start.reason) == ("service", "start")


def test_a_missing_or_stale_kubeconfig_is_fetched(desired: K3sDesired) -> None:
    assert actions(desired, observed(desired, kubeconfig="missing"))["kubeconfig"] == Action.CREATE
    made = plan(desired, observed(desired, kubeconfig="stale"))
    (fetch,) = made.of_action(Action.UPDATE)
    assert fetch.kind == "kubeconfig"
    assert "stale" in str(fetch.fields[0])


def test_no_kubeconfig_row_when_none_is_kept(desired: K3sDesired) -> None:
    made = plan(replace(desired, kubeconfig=None), observed(desired, kubeconfig="not kept"))
    assert "kubeconfig" not in [c.kind for c in made.changes]


def test_equal_inputs_make_equal_plans(desired: K3sDesired) -> None:
    o = observed(desired, version="v1.30.8+k3s1")
    assert plan(desired, o).sha256 == plan(desired, o).sha256


def test_versions_parse_and_order() -> None:
    assert parse_version("v1.31.4+k3s1") == (1, 31, 4, 1)
    assert parse_version("v1.31.4+k3s2") > parse_version("v1.31.4+k3s1")  # type: ignore[operator]
    assert parse_version("1.31.4") is None


def test_config_yaml_holds_every_setting() -> None:
    inv = load_inventory(REPO / "parameters" / "lab.yaml")
    assert inv.k3s is not None
    k3s = inv.k3s.model_copy(
        update={
            "disable": ["traefik", "servicelb"],
            "node_taints": ["dedicated=ci:NoSchedule"],
            "tls_san": ["k3s.lab.home.arpa"],
            "data_dir": "/srv/k3s",
        }
    )
    data = yaml.safe_load(render_config(inv.model_copy(update={"k3s": k3s})))
    assert data == {
        "write-kubeconfig-mode": "0600",
        "node-name": "k3s-nappy",
        "tls-san": ["127.0.0.14", "k3s-nappy", "k3s.lab.home.arpa"],
        "data-dir": "/srv/k3s",
        "cluster-cidr": "10.42.0.0/16",
        "service-cidr": "10.43.0.0/16",
        "node-label": ["homelab.io/role=k3s"],
        "node-taint": ["dedicated=ci:NoSchedule"],
        "disable": ["servicelb", "traefik"],
    }
    d = desired_state(inv.model_copy(update={"k3s": k3s}))
    assert "traefik" not in d.components
    assert "coredns" in d.components


K3S_YAML = """apiVersion: v1
clusters:
- cluster: {certificate-authority-data: Q0E=, server: 'https://127.0.0.1:6443'}
  name: default
contexts:
- context: {cluster: default, user: default}
  name: default
current-context: default
kind: Config
preferences: {}
users:
- name: default
  user: {client-certificate-data: Q0VSVA==, client-key-data: S0VZ}
"""


def test_the_kubeconfig_points_at_the_vm_and_is_named_after_the_homelab() -> None:
    data = yaml.safe_load(localize(K3S_YAML, homelab="rehearsal", address="127.0.0.14"))
    assert data["clusters"][0]["cluster"]["server"] == "https://127.0.0.14:6443"
    assert data["clusters"][0]["name"] == data["users"][0]["name"] == data["contexts"][0]["name"] == "rehearsal"
    assert data["contexts"][0]["context"] == {"cluster": "rehearsal", "user": "rehearsal"}
    assert data["current-context"] == "rehearsal"
    assert data["users"][0]["user"]["client-key-data"] == "S0VZ"


def test_a_broken_kubeconfig_is_an_error_that_does_not_quote_it() -> None:
    with pytest.raises(K3sError) as e:
        localize("client-key-data: S0VZ\n", homelab="h", address="10.0.0.1", where="VM k3s")
    assert "S0VZ" not in str(e.value)


def test_the_kept_kubeconfig_is_mode_0600_and_its_state_is_judged(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "kubeconfig.yaml"
    assert kc.state(path, "x") == "missing"
    kc.store(path, "x")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert kc.state(path, "x") == "current"
    assert kc.state(path, "y") == "stale"
    path.chmod(0o644)
    assert kc.state(path, "x") == "stale"
    assert kc.state(path, None) == "no source"
    assert kc.state(None, "x") == "not kept"


def test_the_token_file_is_made_once_mode_600_and_reused(tmp_path: Path) -> None:
    ref = SecretRef.parse("file:secrets/k3s_token", tmp_path)
    first = remote.token_value(ref, where="VM k3s")
    assert len(first) == 64
    assert stat.S_IMODE(ref.path.stat().st_mode) == 0o600
    assert remote.token_value(ref, where="VM k3s") == first


def test_an_unset_env_token_is_never_made(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOMELAB_TEST_K3S_TOKEN", raising=False)
    with pytest.raises(K3sError) as e:
        remote.token_value(SecretRef.parse("env:HOMELAB_TEST_K3S_TOKEN", Path(".")), where="VM k3s")
    assert "env:HOMELAB_TEST_K3S_TOKEN" in str(e.value)
    assert "never made for you" in e.value.hint


def test_the_install_command_downloads_first_and_keeps_the_token_off_the_command_line(
    desired: K3sDesired,
) -> None:
    command = remote.install_command(desired, with_token=True)
    assert command.index('curl -sfL -o "$script" http://127.0.0.2:8089/k3s-install.sh') < command.index("sh -s -")
    assert "INSTALL_K3S_VERSION=v1.31.4+k3s1 INSTALL_K3S_EXEC=server" in command
    assert f"exit {remote.DOWNLOAD_FAILED}" in command
    assert f'K3S_TOKEN="$(cat {remote.TOKEN_FILE})"; rm -f {remote.TOKEN_FILE}' in command
    assert "sha256sum" not in command  # no install_sha256: nothing to check against


def run_locally(command: str, folder: Path) -> subprocess.CompletedProcess[str]:
    """The remote command run by bash here, in folder (its temporary files there too)."""
    env = {"PATH": os.environ["PATH"], "HOME": str(folder), "TMPDIR": str(folder)}
    return subprocess.run(["bash", "-c", command], cwd=folder, env=env, capture_output=True, text=True, timeout=60)


def test_an_install_url_with_shell_in_it_runs_nothing_on_the_vm(desired: K3sDesired, tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    url = f"https://x/'$(touch {pwned})'`touch {pwned}`"  # "x" resolves nowhere: the download fails, the message runs
    for pinned in ({}, {"install_sha256": "0" * 64}):
        command = remote.install_command(replace(desired, install_url=url, **pinned), with_token=False)
        done = run_locally(command, tmp_path)
        assert done.returncode == remote.DOWNLOAD_FAILED, done
        assert not pwned.exists(), "the URL was run as shell"
        assert f"cannot download the K3s install script from {url}" in done.stderr  # said as given, not run
        assert list(tmp_path.iterdir()) == []  # the temporary script is gone too


def test_the_script_runs_only_when_its_sha256_matches(desired: K3sDesired, tmp_path: Path) -> None:
    served = tmp_path / "served"
    served.mkdir()
    ran = tmp_path / "ran"
    script = served / "install.sh"
    script.write_text(f'echo "$INSTALL_K3S_VERSION $INSTALL_K3S_EXEC" > {ran}\n')
    url = script.as_uri()  # curl reads a file: URL as it reads an https: one
    good = hashlib.sha256(script.read_bytes()).hexdigest()
    work = tmp_path / "work"
    work.mkdir()
    bad = run_locally(remote.install_command(replace(desired, install_url=url, install_sha256="0" * 64),
                                              with_token=False), work)  # fmt: skip
    assert bad.returncode == remote.CHECKSUM_FAILED, bad
    assert "sha256 is not k3s.install_sha256" in bad.stderr
    assert not ran.exists()
    assert list(work.iterdir()) == []
    ok = run_locally(remote.install_command(replace(desired, install_url=url, install_sha256=good),
                                             with_token=False), work)  # fmt: skip
    assert ok.returncode == 0, ok
    assert ran.read_text() == "v1.31.4+k3s1 server\n"
    assert list(work.iterdir()) == []


def test_the_airgap_command_checks_the_script_before_sh_runs_it(desired: K3sDesired) -> None:
    sha = "ab" * 32
    command = remote.airgap_command(replace(desired, install_sha256=sha), with_token=False)
    check = command.index(f"printf '%s  %s\\n' {sha} {remote.AIRGAP_SCRIPT} | sha256sum -c -")
    assert check < command.index(f"sh {remote.AIRGAP_SCRIPT}")
    assert f"exit {remote.CHECKSUM_FAILED}" in command


def test_the_tail_is_the_last_lines_with_secrets_redacted() -> None:
    text = "\n".join(f"line {i}" for i in range(30)) + "\nbad token s3cr3t-value here"
    last = remote.tail(text, ["s3cr3t-value"])
    assert len(last) == remote.TAIL_LINES
    assert last[-1] == "bad token *** here"


def test_the_k3s_client_wants_runbook_03s_kubeconfig(tmp_path: Path) -> None:
    from homelab_lib import clients

    inv = load_inventory(REPO / "parameters" / "lab.yaml")
    assert inv.k3s is not None
    for kubeconfig, message in ((tmp_path / "absent", f"no kubeconfig at {tmp_path / 'absent'}"), (None, "not set")):
        k3s = inv.k3s.model_copy(update={"kubeconfig": kubeconfig})
        with pytest.raises(K3sError, match=message) as e:
            clients.k3s_kube(inv.model_copy(update={"k3s": k3s}))
        assert e.value.where == f"VM {inv.k3s.vm}"
        assert "03_bootstrap_k3s" in (e.value.hint or "")
