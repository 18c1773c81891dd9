"""Benchmark: provisioning 12 VMs over 4 nodes, and a no-change re-run of runbook 01.

Serves its own fakepve in this process (never the lab's), built by the lab's
launcher (resizes recorded, a guest agent in clones, the API token, as on
PVE), with the lab's four nodes and a template on each, whose disks sit on a
Ceph-like storage made slow, so that fakepve's clone and start tasks take real
time; every response also gets a little network latency. Then it measures, in the same run:

1. each node's share: that node's 3 VMs provisioned alone (the others idle);
2. the wall time of provisioning all 12 VMs at once, against the slowest share
   (target <= 1.5x: work on different nodes runs concurrently), and against
   the sum of the shares (what one node after the other would take);
3. a no-change re-run of notebooks/01_provision_nodes.ipynb with papermill
   (confirm=True) for the 12 VMs, against papermill running an empty notebook
   (the kernel's start): target <= 3 s beyond it; and the library's own
   no-change pass (observe + plan + apply) without a kernel.

    .venv/bin/python benchmarks/provision.py [--time-scale 0.01] [--task-secs 20]

Figures only: nothing here is asserted by the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nbformat
import papermill
from fakepve.certs import make_cert
from nbformat.v4 import new_code_cell, new_notebook
from ruamel.yaml import YAML

from homelab_lib import clients, proxmox
from homelab_lib.inventory import Inventory, load_inventory
from homelab_lib.lab import pve_server
from homelab_lib.progress import Lines

REPO = Path(__file__).resolve().parent.parent
LAB = REPO / "parameters" / "lab.yaml"
NOTEBOOK = REPO / "notebooks" / "01_provision_nodes.ipynb"
PASSWORD = "bench-password-1"
TOKEN = "bench-token-0b5e6c1d"
HOST = "127.0.0.1"
STORAGE = "ceph-vm"


class Served:
    """The lab launcher's fakepve on its own event loop in a daemon thread."""

    def __init__(self, inv: Inventory, certfile: str, keyfile: str, time_scale: float, task_secs: float) -> None:
        tokens = {f"{inv.proxmox.user}!{inv.proxmox.token_id}": TOKEN}
        lab = {"nodes": [n.name for n in inv.nodes]}
        self.pve = pve_server.build(lab, password=PASSWORD, host=HOST, port=0, time_scale=time_scale, tokens=tokens)
        self.pve.add_ceph_storage(STORAGE)
        self.pve.ceph_slow(task_secs, health="HEALTH_OK")  # clone and start take task_secs each
        self.pve.slow_network(0.5)  # 0.5 PVE seconds per response
        for i, node in enumerate(inv.nodes):
            vmid = inv.proxmox.template_vmid + i
            config = {
                "cores": 2,
                "memory": 2048,
                "scsihw": "virtio-scsi-single",
                "scsi0": f"{STORAGE}:base-{vmid}-disk-0,size=2G",
                "ide2": f"{STORAGE}:vm-{vmid}-cloudinit,media=cdrom",
                "boot": "order=scsi0",
                "net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0",
                "agent": "1",
                "template": 1,
            }
            self.pve.add_vm(vmid, inv.proxmox.template, node=node.name, config=config, template=True)
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(self.pve.start(certfile, keyfile), self.loop).result(30)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.pve.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)


def write_params(folder: Path, certfile: str) -> Path:
    """The lab's parameters with 12 VMs (3 per node), pointing at a served fake."""
    yaml = YAML(typ="rt")
    data: Any = yaml.load(LAB.read_text())
    (folder / "password").write_text(PASSWORD + "\n")
    (folder / "token").write_text(TOKEN + "\n")
    (folder / "id.pub").write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBenchmarkKey bench@homelab\n")
    (folder / "id").write_text("not used\n")
    (folder / "known_hosts").write_text("")
    data["name"] = "bench"
    data["proxmox"]["password"] = f"file:{folder / 'password'}"
    data["proxmox"]["token_secret"] = f"file:{folder / 'token'}"
    data["proxmox"]["ca_file"] = certfile
    data["proxmox"]["storage"] = STORAGE
    data["proxmox"]["endpoint"] = "https://127.0.0.1:1"  # set per run
    data["lab"]["state_dir"] = str(folder / "state")
    data["ssh"]["private_key"] = f"file:{folder / 'id'}"
    data["ssh"]["public_key"] = str(folder / "id.pub")
    data["ssh"]["known_hosts"] = str(folder / "known_hosts")
    data["k3s"]["kubeconfig"] = str(folder / "kubeconfig")
    vms = data["vms"]
    for i, node in enumerate(["drowzee", "sleepy", "hypno", "nappy"]):
        for j in (2, 3):
            vms.append(
                {
                    "name": f"docker-{node}-{j}",
                    "vmid": 100 + 10 * (i + 1) + j,
                    "node": node,
                    "role": "docker",
                    "cores": 1,
                    "memory_mib": 2048,
                    "disk_gib": 16,
                    "ip": f"127.0.1.{10 * (i + 1) + j}/8",
                }
            )
    path = folder / "bench.yaml"
    with path.open("w") as f:
        yaml.dump(data, f)
    return path


def at(params: Path, port: int) -> Path:
    """The parameter file with the endpoint of the fake on port."""
    text = params.read_text().replace("https://127.0.0.1:1\n", f"https://127.0.0.1:{port}\n")
    out = params.with_name(f"bench-{port}.yaml")
    out.write_text(text)
    return out


@contextmanager
def served(params: Path, pki: tuple[str, str], args: argparse.Namespace) -> Iterator[tuple[Served, Inventory]]:
    base = load_inventory(params)
    fake = Served(base, pki[0], pki[1], args.time_scale, args.task_secs)
    try:
        yield fake, load_inventory(at(params, fake.pve.port))
    finally:
        fake.stop()


class Quiet(Lines):
    def __init__(self) -> None:
        super().__init__(open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the run


def provision(inv: Inventory, only: tuple[str, ...] = ()) -> float:
    client = clients.proxmox_client(inv)
    desired = proxmox.desired_state(inv, only_vms=only)
    plan = proxmox.plan(desired, proxmox.observe(client, desired))
    t0 = time.perf_counter()
    proxmox.apply(client, desired, plan, confirm=True, progress=Quiet())
    return time.perf_counter() - t0


def no_change(inv: Inventory) -> float:
    t0 = time.perf_counter()
    client = clients.proxmox_client(inv)
    desired = proxmox.desired_state(inv)
    plan = proxmox.plan(desired, proxmox.observe(client, desired))
    result = proxmox.apply(client, desired, plan, confirm=True, progress=Quiet())
    if not plan.empty or result.applied:
        raise RuntimeError(f"the re-run was not a no-change run:\n{plan.table().to_string()}")
    return time.perf_counter() - t0


def papermill_run(notebook: Path, out: Path, params: dict[str, Any]) -> float:
    t0 = time.perf_counter()
    papermill.execute_notebook(
        str(notebook), str(out), parameters=params, cwd=str(NOTEBOOK.parent), progress_bar=False, kernel_name="python3"
    )
    return time.perf_counter() - t0


def cell_times(path: Path) -> list[tuple[str, float]]:
    """(source, seconds) of each code cell of an executed notebook, from papermill's metadata."""
    nb = nbformat.read(str(path), as_version=4)
    return [
        (cell.source, float(cell.metadata.get("papermill", {}).get("duration") or 0.0))
        for cell in nb.cells
        if cell.cell_type == "code"
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-scale", type=float, default=0.01, help="real seconds per PVE second")
    parser.add_argument("--task-secs", type=float, default=20.0, help="PVE seconds a clone or a start takes")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each no-change measurement")
    args = parser.parse_args()
    os.environ["HOMELAB_HEADLESS"] = "1"
    with tempfile.TemporaryDirectory(prefix="homelab-bench-") as tmp:
        folder = Path(tmp)
        cert, key, _ = make_cert(tmp, hosts=("127.0.0.1",))
        params = write_params(folder, cert)
        inv = load_inventory(params)
        nodes = [n.name for n in inv.nodes]
        print(f"12 VMs over {len(nodes)} nodes; clone and start take {args.task_secs:g} PVE s each, "
              f"time scale {args.time_scale:g} (= {args.task_secs * args.time_scale:.2f} s real)")  # fmt: skip

        shares = {}
        with served(params, (cert, key), args) as (_, live):
            for node in nodes:
                only = tuple(vm.name for vm in live.vms if vm.node == node)
                shares[node] = provision(live, only)
                print(f"  share of {node:8s} ({len(only)} VMs alone): {shares[node]:6.2f} s")
        slowest = max(shares.values())
        with served(params, (cert, key), args) as (fake, live):
            wall = provision(live)
            print(f"all 12 VMs at once:                {wall:6.2f} s")
            print(f"  / slowest node's share ({slowest:.2f} s):  {wall / slowest:5.2f}x   (target <= 1.5x)")
            print(f"  / sum of the shares ({sum(shares.values()):.2f} s):     {wall / sum(shares.values()):5.2f}x "
                  "  (one node after the other would be 1.0x)")  # fmt: skip

            library = [no_change(live) for _ in range(args.rounds)]
            print(f"no-change pass, library only (observe + plan + apply): {statistics.median(library):.2f} s")

            empty = folder / "empty.ipynb"
            kernelspec = {"name": "python3", "language": "python", "display_name": "Python 3"}
            nbformat.write(new_notebook(cells=[new_code_cell("pass")], metadata={"kernelspec": kernelspec}), str(empty))
            live_params = at(params, fake.pve.port)
            kernel, rerun = [], []
            for i in range(args.rounds):
                kernel.append(papermill_run(empty, folder / f"empty-{i}.ipynb", {}))
                rerun.append(
                    papermill_run(
                        NOTEBOOK, folder / f"01-{i}.ipynb", {"params_file": str(live_params), "confirm": True}
                    )
                )
            k, r = statistics.median(kernel), statistics.median(rerun)
            cells = cell_times(folder / f"01-{args.rounds - 1}.ipynb")
            imports = next(t for source, t in cells if "import" in source)
            print(f"papermill, empty notebook (kernel start):           {k:.2f} s")
            print(f"papermill, 01_provision_nodes no-change re-run:     {r:.2f} s")
            print(f"  beyond kernel start:                              {r - k:.2f} s   (target <= 3 s)")
            print(f"  of which the imports cell:                        {imports:.2f} s")
            print(f"  of which the other cells:                         {sum(t for _, t in cells) - imports:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
