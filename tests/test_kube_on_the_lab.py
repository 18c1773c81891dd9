"""The Kubernetes conformance tests, run against the K3s the lab's K3s VM gets when K3s is installed on it.

``tests/test_kube_conformance.py`` runs against a stand-in it starts itself, or against any cluster
``HOMELAB_TEST_KUBECONFIG`` names. Here that cluster is the lab's: K3s installed on the K3s VM the
documented way (``curl -sfL <k3s.install_url> | INSTALL_K3S_VERSION=... sh -s -`` over SSH), its
kubeconfig fetched and pointed at the VM, and the test image put in the VM's own engine (its node
reaches no registry). The whole module runs in a child pytest, as it would against a real cluster.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from homelab_lab import vms
from homelab_lib import clients
from homelab_lib.hosts.docker import DockerHost
from homelab_lib.inventory import Inventory
from tests.test_k3s_install import kubeconfig

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parent.parent


def test_every_conformance_test_passes_against_the_k3s_installed_on_the_lab_vm(lab: Inventory, tmp_path: Path) -> None:
    assert lab.k3s is not None
    with DockerHost.open(clients.ssh_target(lab, lab.k3s.vm)) as nappy:
        if nappy.run("systemctl is-active k3s").stdout.strip() != "active":
            done = nappy.run(
                f"curl -sfL {lab.k3s.install_url} | INSTALL_K3S_VERSION={lab.k3s.version} sh -s -", timeout=300
            )
            assert done.ok, done.stdout + done.stderr
        config = kubeconfig(lab, nappy, tmp_path)
    env = {
        **os.environ,
        "HOMELAB_TEST_KUBECONFIG": str(config),
        "HOMELAB_TEST_NODE_ENGINE": f"unix://{vms.engine_socket(lab, lab.k3s.vm)}",
    }
    child = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:nbval", "-o", "addopts=-ra", "-q", "tests/test_kube_conformance.py"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    tail = "\n".join(child.stdout.splitlines()[-25:])
    assert child.returncode == 0, tail
    assert " passed" in tail
    assert "failed" not in tail
    assert "skipped" not in tail, "every conformance test ran against the lab's K3s"
