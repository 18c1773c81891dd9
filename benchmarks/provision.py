"""Benchmark: provisioning 12 VMs over 4 nodes, and a no-change re-run of runbook 01.

Serves its own fakepve in this process (never the lab's) with the lab's four
nodes and a template on each, whose disks sit on a Ceph-like storage made slow,
so that fakepve's clone and start tasks take real time; every response also
gets a little network latency. Then it measures, in the same run, a warm-up
round first (discarded: imports, TLS, page cache) and then ``--rounds`` rounds,
printing each round and the medians:

1. each node's share: that node's 3 VMs provisioned alone (the others idle),
   on a fresh fake per round;
2. the wall time of provisioning all 12 VMs at once (a fresh fake), against the
   slowest share of the same round (target <= 1.5x: work on different nodes
   runs concurrently), and against the sum of the shares (what one node after
   the other would take);
3. a no-change re-run of notebooks/01_provision_nodes.ipynb with papermill
   (confirm=True) for the 12 VMs, against papermill running an empty notebook
   (the kernel's start), alternating: target <= 3 s beyond it; and the library's
   own no-change pass (the contract's desired -> observe -> plan -> apply ->
   verify) without a kernel.

Machine facts (cores, load average before and after) are printed beside the
figures: a loaded machine shows in them.

    .venv/bin/python benchmarks/provision.py [--time-scale 0.01] [--task-secs 20] [--rounds 3]

Figures only: nothing here is asserted by the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nbformat
import papermill
from fakepve import FakePve
from fakepve.certs import make_cert
from nbformat.v4 import new_code_cell, new_notebook
from ruamel.yaml import YAML

from homelab_lib import proxmox
from homelab_lib.core import contract
from homelab_lib.core.progress import Lines
from homelab_lib.inventory import Inventory, load_inventory

REPO = Path(__file__).resolve().parent.parent
LAB = REPO / "parameters" / "lab.yaml"
NOTEBOOK = REPO / "notebooks" / "01_provision_nodes.ipynb"
PASSWORD = "bench-password-1"
STORAGE = "ceph-vm"


class Served:
    """A FakePve on its own event loop in a daemon thread."""

    def __init__(self, inv: Inventory, certfile: str, keyfile: str, time_scale: float, task_secs: float) -> None:
        self.pve = FakePve(password=PASSWORD, host="127.0.0.1", port=0)
        self.pve.time_scale = time_scale
        self.pve.nodes.pop("pve1", None)
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
    (folder / "id.pub").write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBenchmarkKey bench@homelab\n")
    (folder / "id").write_text("not used\n")
    (folder / "known_hosts").write_text("")
    data["name"] = "bench"
    data["proxmox"]["password"] = f"file:{folder / 'password'}"
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
    """Seconds of runbook 01's apply step (the contract's: re-observe, then carry out) for the VMs of only."""
    runbook = proxmox.adapter(inv, only_vms=only)
    desired = runbook.desired()
    plan = runbook.plan(desired, runbook.observe(desired))
    t0 = time.perf_counter()
    runbook.apply(desired, plan, confirm=True, progress=Quiet())
    return time.perf_counter() - t0


def no_change(inv: Inventory) -> float:
    """Seconds of one pass of the contract (desired -> observe -> plan -> apply -> verify) with nothing to do."""
    t0 = time.perf_counter()
    done = contract.run(proxmox.adapter(inv), confirm=True, progress=Quiet())
    if not done.plan.empty or done.result.applied:
        raise RuntimeError(f"the re-run was not a no-change run:\n{done.plan.table().to_string()}")
    return time.perf_counter() - t0


def machine() -> str:
    """Cores and load average, to print beside the figures."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores ({usable} usable), load average {load} (1, 5, 15 min)"


def median(values: list[float]) -> float:
    return statistics.median(values)


def rounds(label: str, warmup: int, n: int, measure: Callable[[], float]) -> list[float]:
    """Run measure warmup + n times; print each; return the n figures after the warm-up."""
    figures = []
    for i in range(warmup + n):
        value = measure()
        tag = "warm-up" if i < warmup else f"round {i - warmup + 1}"
        print(f"    {label}, {tag}: {value:.2f} s", flush=True)
        if i >= warmup:
            figures.append(value)
    return figures


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
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds of each figure (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=1, help="rounds run first and discarded")
    args = parser.parse_args()
    os.environ["HOMELAB_HEADLESS"] = "1"
    print(f"machine: {machine()}; Python {platform.python_version()} on {platform.system()} {platform.machine()}")
    with tempfile.TemporaryDirectory(prefix="homelab-bench-") as tmp:
        folder = Path(tmp)
        cert, key, _ = make_cert(tmp, hosts=("127.0.0.1",))
        params = write_params(folder, cert)
        inv = load_inventory(params)
        nodes = [n.name for n in inv.nodes]
        print(f"12 VMs over {len(nodes)} nodes; clone and start take {args.task_secs:g} PVE s each, "
              f"time scale {args.time_scale:g} (= {args.task_secs * args.time_scale:.2f} s real); "
              f"{args.warmup} warm-up round(s), then {args.rounds} measured; medians")  # fmt: skip

        shares: dict[str, list[float]] = {node: [] for node in nodes}
        walls: list[float] = []
        for i in range(args.warmup + args.rounds):
            tag = "warm-up" if i < args.warmup else f"round {i - args.warmup + 1}"
            with served(params, (cert, key), args) as (_, live):
                share = {}
                for node in nodes:
                    share[node] = provision(live, tuple(vm.name for vm in live.vms if vm.node == node))
            with served(params, (cert, key), args) as (_, live):
                wall = provision(live)
            line = ", ".join(f"{node} {t:.2f}" for node, t in share.items())
            print(f"    provisioning, {tag}: shares {line} s; all 12 at once {wall:.2f} s "
                  f"({wall / max(share.values()):.2f}x the slowest share)", flush=True)  # fmt: skip
            if i >= args.warmup:
                for node, t in share.items():
                    shares[node].append(t)
                walls.append(wall)
        for node in nodes:
            print(f"  share of {node:8s} (its 3 VMs alone): median {median(shares[node]):6.2f} s")
        slowest = max(median(v) for v in shares.values())
        total = sum(median(v) for v in shares.values())
        wall = median(walls)
        print(f"all 12 VMs at once:                       median {wall:6.2f} s")
        print(f"  / slowest node's share ({slowest:.2f} s):      {wall / slowest:5.2f}x   (target <= 1.5x)")
        print(f"  / sum of the shares ({total:.2f} s):        {wall / total:5.2f}x   "
              "(one node after the other would be 1.0x)")  # fmt: skip

        with served(params, (cert, key), args) as (fake, live):
            provision(live)
            library = rounds("no-change pass, library", args.warmup, args.rounds, lambda: no_change(live))
            print(f"no-change pass, library only (desired, observe, plan, apply, verify): median "
                  f"{median(library):.2f} s")  # fmt: skip

            empty = folder / "empty.ipynb"
            kernelspec = {"name": "python3", "language": "python", "display_name": "Python 3"}
            nbformat.write(new_notebook(cells=[new_code_cell("pass")], metadata={"kernelspec": kernelspec}), str(empty))
            live_params = at(params, fake.pve.port)
            kernel, rerun = [], []
            last = folder / "01.ipynb"
            for i in range(args.warmup + args.rounds):  # alternating, so a slow spell hits both
                k = papermill_run(empty, folder / "empty-out.ipynb", {})
                r = papermill_run(NOTEBOOK, last, {"params_file": str(live_params), "confirm": True})
                tag = "warm-up" if i < args.warmup else f"round {i - args.warmup + 1}"
                print(f"    papermill, {tag}: empty {k:.2f} s, 01 re-run {r:.2f} s", flush=True)
                if i >= args.warmup:
                    kernel.append(k)
                    rerun.append(r)
            k, r = median(kernel), median(rerun)
            cells = cell_times(last)
            imports = next(t for source, t in cells if "import" in source)
            print(f"papermill, empty notebook (kernel start):           median {k:.2f} s")
            print(f"papermill, 01_provision_nodes no-change re-run:     median {r:.2f} s")
            print(f"  beyond kernel start:                              {r - k:.2f} s   (target <= 3 s)")
            print(f"  of which the imports cell (last round):           {imports:.2f} s")
            print(f"  of which the other cells (last round):            {sum(t for _, t in cells) - imports:.2f} s")
    print(f"machine after: {machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
