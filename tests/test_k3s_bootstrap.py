"""Runbook 03 against the lab's K3s VM (k3s-nappy): install, no-op re-run, config change and restart,
the kubeconfig's fix, and the faults (SSH unreachable, a failing install script, a downgrade,
credentials refused with 401). Each test leaves K3s as parameters/lab.yaml wants it.

Do not run this beside tests/test_k3s_install.py: that one uninstalls K3s at its end.
"""

from __future__ import annotations

import hashlib
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from homelab_lib import clients
from homelab_lib.core import contract
from homelab_lib.core.errors import K3sAuthError, K3sInstallFailed, PlanConflict, SshError
from homelab_lib.core.plan import Action
from homelab_lib.hosts.docker import DockerHost
from homelab_lib.inventory import Inventory
from homelab_lib.k3s import K3sBootstrap, api
from homelab_lib.kube import api as kube_api

pytestmark = pytest.mark.lab


def with_k3s(inv: Inventory, **changes: object) -> Inventory:
    assert inv.k3s is not None
    return inv.model_copy(update={"k3s": inv.k3s.model_copy(update=changes)})


@pytest.fixture(scope="module")
def nappy(lab: Inventory) -> Iterator[DockerHost]:
    assert lab.k3s is not None
    with DockerHost.open(clients.ssh_target(lab, lab.k3s.vm)) as host:
        yield host


@pytest.fixture(scope="module")
def bootstrapped(lab: Inventory, nappy: DockerHost) -> Inventory:
    """K3s as lab.yaml wants it (installed now if it is not), through the runbook itself."""
    runbook = K3sBootstrap(lab, host=nappy)
    done = contract.run(runbook, confirm=True)
    assert done.verified.ok, done.verified.summary()
    return lab


@pytest.fixture
def converge(bootstrapped: Inventory, nappy: DockerHost) -> Iterator[None]:
    """After the test, K3s back as lab.yaml wants it (the re-run resumes and converges)."""
    yield
    runbook = K3sBootstrap(bootstrapped, host=nappy)
    contract.run(runbook, confirm=True)
    assert runbook.plan(runbook.desired(), runbook.observe(runbook.desired())).empty


def test_a_second_run_plans_only_no_ops_and_changes_nothing(bootstrapped: Inventory, nappy: DockerHost) -> None:
    runbook = K3sBootstrap(bootstrapped, host=nappy)
    before = nappy.run("stat -c %Y /etc/rancher/k3s/config.yaml /usr/local/bin/k3s").stdout
    done = contract.run(runbook, confirm=True)
    assert done.plan.empty, done.plan.summary()
    assert done.result.outcomes == ()
    assert not done.result.applied
    assert done.verified.ok
    assert {c.target for c in done.verified.checks if c.kind == "component"} == {
        "kube-system/coredns",
        "kube-system/local-path-provisioner",
        "kube-system/metrics-server",
        "kube-system/traefik",
    }
    assert nappy.run("stat -c %Y /etc/rancher/k3s/config.yaml /usr/local/bin/k3s").stdout == before


def test_the_kubeconfig_is_kept_0600_points_at_the_vm_and_is_named_after_the_homelab(
    bootstrapped: Inventory,
) -> None:
    assert bootstrapped.k3s is not None
    assert bootstrapped.k3s.kubeconfig is not None
    path = bootstrapped.k3s.kubeconfig
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = yaml.safe_load(path.read_text())
    assert data["current-context"] == "rehearsal"
    assert [c["cluster"]["server"] for c in data["clusters"]] == ["https://127.0.0.14:6443"]
    assert [u["name"] for u in data["users"]] == ["rehearsal"]
    found = api.report(kube_api.client_from(path, where="test"), ("coredns",), where="test")
    assert found.readyz == "ok"
    assert [n.name for n in found.nodes] == ["k3s-nappy"]


def test_the_cluster_token_is_the_one_the_secret_reference_holds(bootstrapped: Inventory, nappy: DockerHost) -> None:
    assert bootstrapped.k3s is not None
    assert bootstrapped.k3s.token is not None
    token = bootstrapped.k3s.token.reveal()
    on_vm = nappy.run("cat /var/lib/rancher/k3s/server/token").stdout
    assert token
    assert token in on_vm
    assert nappy.run(f"test -e {'/root/.homelab-k3s-token'}").exit_code == 1, "the token's handover file is gone"


def test_a_config_change_rewrites_config_yaml_and_restarts_k3s(
    bootstrapped: Inventory, nappy: DockerHost, converge: None
) -> None:
    changed = with_k3s(bootstrapped, node_labels={"homelab.io/role": "k3s", "homelab.io/tier": "advanced"})
    runbook = K3sBootstrap(changed, host=nappy)
    desired = runbook.desired()
    plan = runbook.plan(desired, runbook.observe(desired))
    assert [(c.kind, c.action) for c in plan.changes if c.action != Action.NOOP] == [
        ("config", Action.UPDATE),
        ("service", Action.UPDATE),
    ]
    (config,) = plan.of_action(Action.UPDATE)[:1]
    assert [f.name for f in config.fields] == ["node-label"]
    result = runbook.apply(desired, plan, confirm=True)
    assert [o.result for o in result.outcomes] == ["done", "done"]
    assert runbook.verify(desired, result).ok
    assert "homelab.io/tier=advanced" in nappy.run("cat /etc/rancher/k3s/config.yaml").stdout
    assert changed.k3s is not None
    assert changed.k3s.kubeconfig is not None
    core = kube_api.k8s.CoreV1Api(kube_api.client_from(changed.k3s.kubeconfig, where="test"))
    (node,) = core.list_node().items
    assert node.metadata.labels["homelab.io/tier"] == "advanced"


def test_a_downgrade_is_refused_in_the_plan_and_nothing_changes(bootstrapped: Inventory, nappy: DockerHost) -> None:
    runbook = K3sBootstrap(with_k3s(bootstrapped, version="v1.30.8+k3s1"), host=nappy)
    desired = runbook.desired()
    plan = runbook.plan(desired, runbook.observe(desired))
    (conflict,) = plan.conflicts
    assert "downgrade from v1.31.4+k3s1 to v1.30.8+k3s1" in conflict.reason
    with pytest.raises(PlanConflict) as e:
        runbook.apply(desired, plan, confirm=True)
    assert "does not support downgrades" in str(e.value)
    assert nappy.run("k3s --version").stdout.startswith("k3s version v1.31.4+k3s1 ")


def test_a_failing_install_script_names_its_exit_code_and_last_lines_and_a_rerun_converges(
    bootstrapped: Inventory, nappy: DockerHost, converge: None
) -> None:
    runbook = K3sBootstrap(with_k3s(bootstrapped, version="v1.31.9+k3s1"), host=nappy)  # a release not offered
    desired = runbook.desired()
    plan = runbook.plan(desired, runbook.observe(desired))
    assert [(c.kind, c.action) for c in plan.of_action(Action.UPDATE)] == [("k3s", Action.UPDATE)]
    with pytest.raises(K3sInstallFailed) as e:
        runbook.apply(desired, plan, confirm=True)
    assert e.value.exit_code == 1
    assert any("no release v1.31.9+k3s1" in line for line in e.value.tail)
    assert "exit code 1" in str(e.value)
    assert e.value.where == "VM k3s-nappy"
    assert bootstrapped.k3s is not None
    assert bootstrapped.k3s.token is not None
    assert bootstrapped.k3s.token.reveal() not in str(e.value)
    assert nappy.run("k3s --version").stdout.startswith("k3s version v1.31.4+k3s1 "), "the old release still runs"


def test_an_install_url_that_does_not_answer_fails_before_any_script_runs(
    bootstrapped: Inventory, nappy: DockerHost, converge: None
) -> None:
    runbook = K3sBootstrap(
        with_k3s(bootstrapped, version="v1.31.5+k3s1", install_url="http://127.0.0.2:8089/no-such-installer.sh"),
        host=nappy,
    )
    desired = runbook.desired()
    with pytest.raises(K3sInstallFailed) as e:
        runbook.apply(desired, runbook.plan(desired, runbook.observe(desired)), confirm=True)
    assert e.value.exit_code == 22
    assert "cannot download the K3s install script from http://127.0.0.2:8089/no-such-installer.sh" in str(e.value)


def test_ssh_unreachable_names_the_vm_and_what_to_check(bootstrapped: Inventory) -> None:
    unreachable = bootstrapped.model_copy(update={"ssh": bootstrapped.ssh.model_copy(update={"port": 1})})
    runbook = K3sBootstrap(unreachable)
    with pytest.raises(SshError) as e:
        runbook.observe(runbook.desired())
    assert "k3s-nappy" in e.value.where
    assert ":1" in e.value.where
    assert "cannot connect" in e.value.message
    assert e.value.hint
    runbook.close()


def test_wrong_credentials_are_a_401_with_the_fix_and_the_runbook_fetches_them_again(
    bootstrapped: Inventory, nappy: DockerHost, tmp_path: Path
) -> None:
    assert bootstrapped.k3s is not None
    assert bootstrapped.k3s.kubeconfig is not None
    data = yaml.safe_load(bootstrapped.k3s.kubeconfig.read_text())
    data["users"][0]["user"] = {"token": "not-a-valid-token"}
    wrong = tmp_path / "kubeconfig.yaml"
    wrong.write_text(yaml.safe_dump(data))
    wrong.chmod(0o600)
    with pytest.raises(K3sAuthError) as e:
        api.report(kube_api.client_from(wrong, where="VM k3s-nappy"), ("coredns",), where="VM k3s-nappy")
    assert e.value.status == 401
    assert "401 Unauthorized" in str(e.value)
    assert "fetch the kubeconfig again" in e.value.hint

    runbook = K3sBootstrap(with_k3s(bootstrapped, kubeconfig=wrong), host=nappy)
    desired = runbook.desired()
    assert desired.kubeconfig == wrong
    plan = runbook.plan(desired, runbook.observe(desired))
    (fetch,) = plan.of_action(Action.UPDATE)
    assert (fetch.kind, fetch.target) == ("kubeconfig", str(wrong))
    result = runbook.apply(desired, plan, confirm=True)
    assert runbook.verify(desired, result).ok
    assert api.report(kube_api.client_from(wrong, where="test"), (), where="test").readyz == "ok"


def airgap_files(inv: Inventory, folder: Path, version: str) -> tuple[Path, str, Path]:
    """The release's files as an operator downloads them for an air-gapped VM (here: from the lab's server)."""
    import urllib.request

    assert inv.k3s is not None
    base = inv.k3s.install_url.rsplit("/", 1)[0]
    binary, script = folder / "k3s", folder / "install.sh"
    with urllib.request.urlopen(f"{base}/k3s/{version}/k3s", timeout=30) as r:
        binary.write_bytes(r.read())
    with urllib.request.urlopen(f"{base}/k3s/{version}/sha256sum-amd64.txt", timeout=30) as r:
        sha = r.read().decode().split()[0]
    with urllib.request.urlopen(inv.k3s.install_url, timeout=30) as r:
        script.write_bytes(r.read())
    return binary, sha, script


def test_an_airgap_binary_with_another_checksum_installs_nothing(
    bootstrapped: Inventory, nappy: DockerHost, tmp_path: Path, converge: None
) -> None:
    from homelab_lib.inventory.model import K3sAirgap

    binary, _sha, script = airgap_files(bootstrapped, tmp_path, "v1.31.4+k3s1")
    airgap = K3sAirgap(binary=str(binary), sha256="0" * 64, install_script=str(script))
    pinned = hashlib.sha256(script.read_bytes()).hexdigest()
    runbook = K3sBootstrap(
        with_k3s(bootstrapped, version="v1.31.9+k3s1", airgap=airgap, install_sha256=pinned), host=nappy
    )
    desired = runbook.desired()
    with pytest.raises(K3sInstallFailed) as e:
        runbook.apply(desired, runbook.plan(desired, runbook.observe(desired)), confirm=True)
    assert "checksum mismatch" in str(e.value)
    assert "nothing was installed" in str(e.value)
    assert nappy.run("k3s --version").stdout.startswith("k3s version v1.31.4+k3s1 ")
    assert nappy.run("ls /usr/local/bin/k3s.homelab-new /root/.homelab-k3s-install.sh").exit_code != 0


def test_an_airgap_install_on_a_fresh_vm_then_converges_with_the_usual_parameters(
    bootstrapped: Inventory, nappy: DockerHost, tmp_path: Path
) -> None:
    from homelab_lib.inventory.model import K3sAirgap

    binary, sha, script = airgap_files(bootstrapped, tmp_path, "v1.31.4+k3s1")
    assert nappy.run("/usr/local/bin/k3s-uninstall.sh", timeout=120).ok
    runbook = K3sBootstrap(
        with_k3s(
            bootstrapped,
            install_url="http://127.0.0.2:1/unreachable.sh",  # an air-gapped VM reaches no download
            airgap=K3sAirgap(binary=str(binary), sha256=sha, install_script=str(script)),
            install_sha256=hashlib.sha256(script.read_bytes()).hexdigest(),  # checked on the VM before sh runs it
        ),
        host=nappy,
    )
    done = contract.run(runbook, confirm=True)
    assert done.verified.ok, done.verified.summary()
    assert [c.kind for c in done.plan.of_action(Action.CREATE)] == ["config", "k3s", "kubeconfig"]
    again = K3sBootstrap(bootstrapped, host=nappy)
    assert again.plan(again.desired(), again.observe(again.desired())).empty


def test_a_hand_edited_config_is_seen_byte_for_byte_and_rewritten(
    bootstrapped: Inventory, nappy: DockerHost, converge: None
) -> None:
    assert nappy.run(
        'printf %s "$(cat /etc/rancher/k3s/config.yaml)" > /root/c && '
        "cat /root/c > /etc/rancher/k3s/config.yaml && rm /root/c"
    ).ok
    runbook = K3sBootstrap(bootstrapped, host=nappy)
    desired = runbook.desired()
    observed = runbook.observe(desired)
    assert observed.config == desired.config.rstrip("\n"), "the missing last newline is seen"
    plan = runbook.plan(desired, observed)
    assert [(c.kind, c.action) for c in plan.changes if c.action != Action.NOOP] == [
        ("config", Action.UPDATE),
        ("service", Action.UPDATE),
    ]
    assert runbook.verify(desired, runbook.apply(desired, plan, confirm=True)).ok
