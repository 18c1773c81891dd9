"""Installing K3s on the lab's K3s VM the documented way, over SSH: the lab's installer and K3s stand-in.

``curl -sfL <k3s.install_url> | INSTALL_K3S_VERSION=... sh -s -`` on the VM, exactly as on a real
VM, installs the lab's ``k3s`` (its Kubernetes API stand-in), the ``k3s`` service (``systemctl`` on
the VM) and the kubeconfig; kubectl and the kubernetes client then use it unchanged. What the
installer and the service write lands in the VM's own folders only.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from homelab_lab import vms
from homelab_lib import clients
from homelab_lib.hosts.docker import DockerHost
from homelab_lib.inventory import Inventory

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def nappy(lab: Inventory) -> Iterator[DockerHost]:
    """An SSH connection to the K3s VM; K3s is uninstalled afterwards (as its uninstall script does)."""
    assert lab.k3s is not None
    uninstall = "test -x /usr/local/bin/k3s-uninstall.sh && /usr/local/bin/k3s-uninstall.sh"
    with DockerHost.open(clients.ssh_target(lab, lab.k3s.vm)) as host:
        host.run(uninstall, timeout=120)  # a K3s left by an earlier session: start from a fresh VM
        yield host
        host.run(uninstall, timeout=120)


@pytest.fixture(scope="module")
def installed(lab: Inventory, nappy: DockerHost) -> str:
    assert lab.k3s is not None
    done = nappy.run(
        f"curl -sfL {lab.k3s.install_url} | INSTALL_K3S_VERSION={lab.k3s.version} sh -s - "
        f"--tls-san {lab.vm(lab.k3s.vm).address} --node-label homelab.io/role=k3s",
        timeout=300,
    )
    assert done.ok, done.stdout + done.stderr
    return done.stdout


def kubeconfig(lab: Inventory, nappy: DockerHost, folder: Path) -> Path:
    """The VM's kubeconfig, fetched, its server pointed at the VM's address (what runbook 03 does)."""
    assert lab.k3s is not None
    text = nappy.run("cat /etc/rancher/k3s/k3s.yaml").stdout
    data = yaml.safe_load(text)
    for cluster in data["clusters"]:
        port = urlsplit(cluster["cluster"]["server"]).port or 6443
        cluster["cluster"]["server"] = f"https://{lab.vm(lab.k3s.vm).address}:{port}"
    path = folder / "kubeconfig.yaml"
    path.write_text(yaml.safe_dump(data))
    path.chmod(0o600)
    return path


def test_the_installer_installs_and_starts_k3s_as_on_a_real_vm(
    lab: Inventory, nappy: DockerHost, installed: str
) -> None:
    assert lab.k3s is not None
    for line in ("[INFO]  Using v1.31.4+k3s1 as release", "[INFO]  Verifying binary download", "systemd: Starting k3s"):
        assert line in installed
    assert nappy.run("systemctl is-active k3s").stdout.strip() == "active"
    assert nappy.run("systemctl is-enabled k3s").stdout.strip() == "enabled"
    version = nappy.run("k3s --version").stdout
    assert version.startswith(f"k3s version {lab.k3s.version} (")
    mode = nappy.run("stat -c %a /etc/rancher/k3s/k3s.yaml").stdout.strip()
    assert mode == "600"
    vm_folder = vms.vm_dir(lab, lab.k3s.vm) / "fs"
    assert (vm_folder / "usr/local/bin/k3s").exists()
    assert stat.S_IMODE((vm_folder / "etc/rancher/k3s/k3s.yaml").stat().st_mode) == 0o600
    assert not Path("/usr/local/bin/k3s").exists(), "nothing landed on the machine itself"
    assert not Path("/etc/rancher/k3s/k3s.yaml").exists()


def test_kubectl_and_the_client_use_it_and_a_restart_keeps_every_object(
    lab: Inventory, nappy: DockerHost, installed: str, tmp_path: Path
) -> None:
    path = kubeconfig(lab, nappy, tmp_path)
    api = k8s.CoreV1Api(k8s_config.new_client_from_config(str(path)))
    (node,) = api.list_node().items
    assert node.metadata.name == "k3s-nappy"
    assert node.metadata.labels["homelab.io/role"] == "k3s"
    assert {c.type: c.status for c in node.status.conditions}["Ready"] == "True"
    assert node.status.capacity["cpu"] == str(lab.vm("k3s-nappy").cores)
    made = api.create_namespaced_config_map(
        "default", k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="survives-restart"), data={"k": "v"})
    )
    restarted = nappy.run("systemctl restart k3s", timeout=120)
    assert restarted.ok, restarted.stderr
    api = k8s.CoreV1Api(k8s_config.new_client_from_config(str(path)))
    kept = api.read_namespaced_config_map("survives-restart", "default")
    assert kept.metadata.uid == made.metadata.uid
    assert kept.metadata.resource_version == made.metadata.resource_version


def test_a_second_install_with_another_token_is_refused_as_k3s_refuses_it(
    lab: Inventory, nappy: DockerHost, installed: str
) -> None:
    assert lab.k3s is not None
    done = nappy.run(
        f"curl -sfL {lab.k3s.install_url} | INSTALL_K3S_VERSION={lab.k3s.version} K3S_TOKEN=another-token sh -s -",
        timeout=300,
    )
    assert not done.ok
    log = nappy.run("tail -n 20 /var/log/k3s.service.log").stdout
    assert "bootstrap data already found and encrypted with different token" in done.stderr + log
    fixed = nappy.run("rm -f /etc/systemd/system/k3s.service.env && systemctl restart k3s", timeout=120)
    assert fixed.ok, fixed.stderr


def test_a_pvc_binds_on_first_use_and_its_folder_on_the_vm_holds_what_the_pod_wrote(
    lab: Inventory, nappy: DockerHost, installed: str, tmp_path: Path
) -> None:
    """local-path, as K3s: Pending until a pod uses it, then Bound to a folder on the VM the pod writes into."""
    assert lab.k3s is not None
    api = k8s.CoreV1Api(k8s_config.new_client_from_config(str(kubeconfig(lab, nappy, tmp_path))))
    claim = k8s.V1PersistentVolumeClaim(
        metadata=k8s.V1ObjectMeta(name="home"),
        spec=k8s.V1PersistentVolumeClaimSpec(
            access_modes=["ReadWriteOnce"], resources=k8s.V1VolumeResourceRequirements(requests={"storage": "1Gi"})
        ),
    )
    made = api.create_namespaced_persistent_volume_claim("default", claim)
    assert api.read_namespaced_persistent_volume_claim("home", "default").status.phase == "Pending"
    image = lab.services["devenv"].image  # a stand-in the K3s VM's engine holds; it writes into its volume
    pod = k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name="devenv"),
        spec=k8s.V1PodSpec(
            containers=[
                k8s.V1Container(
                    name="devenv",
                    image=image,
                    volume_mounts=[k8s.V1VolumeMount(name="home", mount_path="/home/coder")],
                )
            ],
            volumes=[
                k8s.V1Volume(
                    name="home", persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(claim_name="home")
                )
            ],
        ),
    )
    api.create_namespaced_pod("default", pod)
    waited = nappy.run(
        f"kubectl --kubeconfig /etc/rancher/k3s/k3s.yaml wait --for=condition=Ready pod/devenv --timeout=90s"
        f" --server https://{lab.vm(lab.k3s.vm).address}:6443",
        timeout=120,
    )
    assert waited.ok, waited.stdout + waited.stderr
    bound = api.read_namespaced_persistent_volume_claim("home", "default")
    assert bound.status.phase == "Bound"
    folder = f"pvc-{made.metadata.uid}_default_home"
    on_vm = nappy.run(f"cat /var/lib/rancher/k3s/storage/{folder}/boots.log")
    assert on_vm.ok, on_vm.stderr
    assert "boot of devenv stand-in" in on_vm.stdout, on_vm.stdout
    storage = vms.vm_dir(lab, lab.k3s.vm) / "fs" / "var" / "lib" / "rancher" / "k3s" / "storage" / folder
    assert (storage / "boots.log").read_text() == on_vm.stdout, "the VM's folder of the lab's state holds it"
