"""The run Lease on K3s: one lock for runs from anywhere, held, renewed, expired, taken over.

The cluster is a stand-in of its own (127.0.24.10, no container engine: Leases need none), or the
real cluster of HOMELAB_TEST_KUBECONFIG. Runs from two processes share nothing but the cluster:
each has its own lock folder and archive.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from homelab_lib.core.errors import LockHeld
from homelab_lib.kube.client import Kube as KubeClient
from homelab_lib.kube.lease import RunLease, lease_name, micro
from homelab_lib.runs.archive import Archive
from homelab_lib.runs.runner import run_notebook
from tests.kube_fixtures import Kube, api_cluster, wait_for
from tests.test_runner import write_nb

ADDRESS = "127.0.24.10"
NAMESPACE = "kube-system"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    with api_cluster(tmp_path_factory, ADDRESS, "k3s-lease") as kube:
        yield kube


@pytest.fixture
def homelab() -> str:
    """A homelab name of its own per test, so each test has its own Lease."""
    return f"lease-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def params(cluster: Kube, make_params: Callable[..., Path], homelab: str) -> Callable[..., Path]:
    def make(lease_s: int = 60) -> Path:
        def edit(data: dict[str, Any]) -> None:
            data["name"] = homelab
            data["k3s"]["kubeconfig"] = str(cluster.kubeconfig)
            data["k3s"]["run_lease_s"] = lease_s

        return make_params(edit=edit)

    return make


def lease_of(cluster: Kube, homelab: str) -> dict[str, Any]:
    got = cluster.kubectl("get", "lease", lease_name(homelab), "-n", NAMESPACE, "-o", "json", check=False)
    return json.loads(got.stdout) if got.returncode == 0 else {}


def holder(cluster: Kube, homelab: str) -> str:
    return str((lease_of(cluster, homelab).get("spec") or {}).get("holderIdentity") or "")


@pytest.fixture(autouse=True)
def _remove_lease(cluster: Kube, homelab: str) -> Iterator[None]:
    yield
    cluster.kubectl("delete", "lease", lease_name(homelab), "-n", NAMESPACE, "--ignore-not-found", check=False)


def homelab_run(tmp_path: Path, tag: str, nb: Path, params: Path, *extra: str) -> subprocess.Popen[str]:
    """`homelab run` in its own process, with its own lock folder (XDG_RUNTIME_DIR) and archive."""
    runtime = tmp_path / f"runtime-{tag}"
    runtime.mkdir(mode=0o700)
    return subprocess.Popen(
        [sys.executable, "-m", "homelab_lib.cli", "run", str(nb), "-f", str(params), "--archive",
         str(tmp_path / f"archive-{tag}"), "-q", "--no-alert", *extra],
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )  # fmt: skip


def test_the_stand_in_refuses_a_stale_resource_version_as_an_api_server_does(cluster: Kube, homelab: str) -> None:
    kube = KubeClient(cluster.kubeconfig, where="test")
    try:
        res = kube.resource("coordination.k8s.io/v1", "Lease")
        name = lease_name(homelab)
        spec = {"holderIdentity": "a", "leaseDurationSeconds": 30, "renewTime": micro(datetime.now(UTC))}
        made = res.create(body={"metadata": {"name": name}, "spec": spec}, namespace=NAMESPACE).to_dict()
        rv = made["metadata"]["resourceVersion"]
        with pytest.raises(ApiException) as taken:  # a second create: 409 AlreadyExists
            res.create(body={"metadata": {"name": name}, "spec": spec}, namespace=NAMESPACE)
        assert getattr(taken.value, "status", 0) == 409
        first = {"metadata": {"name": name, "resourceVersion": rv}, "spec": {**spec, "holderIdentity": "b"}}
        done = res.replace(body=first, name=name, namespace=NAMESPACE).to_dict()
        assert done["spec"]["holderIdentity"] == "b"
        assert done["metadata"]["resourceVersion"] != rv
        stale = {"metadata": {"name": name, "resourceVersion": rv}, "spec": {**spec, "holderIdentity": "c"}}
        with pytest.raises(ApiException) as conflict:
            res.replace(body=stale, name=name, namespace=NAMESPACE)
        assert getattr(conflict.value, "status", 0) == 409
        assert "the object has been modified" in str(getattr(conflict.value, "body", ""))
        assert holder(cluster, homelab) == "b"
    finally:
        kube.api.close()


def test_two_runs_at_once_from_two_processes_are_serialised_by_the_lease(
    tmp_path: Path, cluster: Kube, params: Callable[..., Path], homelab: str
) -> None:
    marker = tmp_path / "inside"
    nb = write_nb(
        tmp_path / "slow.ipynb",
        f"import os, time\nopen({str(marker)!r}, 'a').write(f'{{os.getpid()}} in\\n')\ntime.sleep(6)\n"
        f"open({str(marker)!r}, 'a').write(f'{{os.getpid()}} out\\n')",
    )
    p = params()
    runs = [homelab_run(tmp_path, tag, nb, p) for tag in ("a", "b")]
    outs = [r.communicate(timeout=180) for r in runs]
    codes = sorted(r.returncode for r in runs)
    assert codes == [0, 3], outs  # one ran; the other found the Lease held (exit 3, as for the local lock)
    refused = outs[[r.returncode for r in runs].index(3)][1]
    assert "holds the run Lease" in refused
    assert f"Lease {NAMESPACE}/{lease_name(homelab)}" in refused
    assert " run " in refused  # who: user@host pid N run RUN
    assert "until " in refused  # and until when
    lines = marker.read_text().splitlines()
    assert [line.split()[1] for line in lines] == ["in", "out"]  # only one was ever inside
    ran = [Archive(tmp_path / f"archive-{t}").records() for t in ("a", "b") if (tmp_path / f"archive-{t}").exists()]
    assert sorted(len(r) for r in ran) == [1]
    assert holder(cluster, homelab) == ""  # released at the end of the run
    # and released, it is taken by the next run
    again = homelab_run(tmp_path, "c", nb, p)
    assert again.wait(timeout=120) == 0, again.communicate()


def test_a_held_lease_refuses_a_run_naming_its_holder(
    tmp_path: Path, cluster: Kube, params: Callable[..., Path], homelab: str
) -> None:
    p = params()
    until = datetime.now(UTC) + timedelta(seconds=300)
    cluster.kubectl(
        "apply", "-f", "-",
        stdin=json.dumps({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": lease_name(homelab), "namespace": NAMESPACE},
            "spec": {"holderIdentity": "cron@k3s pid 7 run 20261126T010000Z-06_verify_backups",
                     "leaseDurationSeconds": 300, "renewTime": micro(until - timedelta(seconds=300))},
        }),
    )  # fmt: skip
    nb = write_nb(tmp_path / "quick.ipynb", "print('ran')")
    with pytest.raises(LockHeld) as held:
        run_notebook(nb, param_files=[p], archive_dir=tmp_path / "archive", lock_dir=tmp_path / "locks")
    assert "cron@k3s pid 7 run 20261126T010000Z-06_verify_backups" in str(held.value)
    assert until.isoformat(timespec="seconds")[:16] in str(held.value)  # until when (to the minute)
    assert held.value.hint
    assert not (tmp_path / "archive").exists() or Archive(tmp_path / "archive").records() == []
    assert holder(cluster, homelab).startswith("cron@k3s")  # untouched


def test_an_expired_lease_is_taken_over(
    tmp_path: Path, cluster: Kube, params: Callable[..., Path], homelab: str
) -> None:
    p = params()
    crashed = datetime.now(UTC) - timedelta(minutes=10)
    cluster.kubectl(
        "apply", "-f", "-",
        stdin=json.dumps({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": lease_name(homelab), "namespace": NAMESPACE},
            "spec": {"holderIdentity": "laptop pid 99 run crashed", "leaseDurationSeconds": 60,
                     "renewTime": micro(crashed), "leaseTransitions": 4},
        }),
    )  # fmt: skip
    seen = tmp_path / "seen"
    nb = write_nb(
        tmp_path / "peek.ipynb",
        "import subprocess, os\n"
        f"out = subprocess.run(['kubectl', '--kubeconfig', {str(cluster.kubeconfig)!r}, 'get', 'lease', "
        f"{lease_name(homelab)!r}, '-n', {NAMESPACE!r}, '-o', 'jsonpath={{.spec.holderIdentity}}'], "
        "capture_output=True, text=True).stdout\n"
        f"open({str(seen)!r}, 'w').write(out)",
    )
    result = run_notebook(nb, param_files=[p], archive_dir=tmp_path / "archive", lock_dir=tmp_path / "locks")
    assert result.ok
    during = seen.read_text()
    assert f"pid {os.getpid()} run " in during  # this run held it while it ran
    assert during.endswith("-peek")
    after = lease_of(cluster, homelab)["spec"]
    assert after.get("leaseTransitions") == 5  # taken over: one more transition
    assert not after.get("holderIdentity")  # and released


def test_renewal_keeps_a_long_runs_lease(
    tmp_path: Path, cluster: Kube, params: Callable[..., Path], homelab: str
) -> None:
    p = params(lease_s=2)  # renewed every 2/3 s; the run lasts many times the duration
    nb = write_nb(tmp_path / "long.ipynb", "import time\ntime.sleep(9)")
    long = homelab_run(tmp_path, "long", nb, p)
    try:
        first = wait_for("the long run to hold the Lease", lambda: lease_of(cluster, homelab) if holder(
            cluster, homelab) else None, timeout=60, every=0.2)  # fmt: skip
        time.sleep(5)  # more than twice the duration: without renewal it would have expired
        now = lease_of(cluster, homelab)
        assert now["spec"]["holderIdentity"] == first["spec"]["holderIdentity"]
        assert now["spec"]["renewTime"] != first["spec"]["renewTime"]
        assert now["spec"]["acquireTime"] == first["spec"]["acquireTime"]
        quick = write_nb(tmp_path / "quick.ipynb", "print('ran')")
        with pytest.raises(LockHeld):
            run_notebook(quick, param_files=[p], archive_dir=tmp_path / "archive", lock_dir=tmp_path / "locks")
    finally:
        out = long.communicate(timeout=120)
    assert long.returncode == 0, out
    assert holder(cluster, homelab) == ""


def test_a_lease_taken_over_is_reported_lost_and_left_to_its_new_holder(cluster: Kube, homelab: str) -> None:
    kube = KubeClient(cluster.kubeconfig, where="test")
    try:
        mine = RunLease(kube, homelab, "me pid 1 run r1", duration_s=30)
        mine.acquire()
        assert mine.renew()
        theirs = RunLease(kube, homelab, "them pid 2 run r2", duration_s=30)
        with pytest.raises(LockHeld):
            theirs.acquire()
        # the other run takes it over (as after our renewals had stopped for longer than the duration)
        _, obj = theirs.read() or (None, {})
        obj["spec"]["holderIdentity"] = "them pid 2 run r2"
        kube.resource("coordination.k8s.io/v1", "Lease").replace(body=obj, name=mine.name, namespace=NAMESPACE)
        assert not mine.renew()
        assert mine.lost
        mine.release()
        assert holder(cluster, homelab) == "them pid 2 run r2"  # never overwritten
    finally:
        kube.api.close()


@pytest.mark.parametrize("fault", ["does not answer", "refuses the kubeconfig"])
def test_a_cluster_that_cannot_hold_the_lease_leaves_the_run_to_the_local_lock(
    tmp_path: Path, cluster: Kube, make_params: Callable[..., Path], caplog: pytest.LogCaptureFixture, fault: str
) -> None:
    import yaml

    config = yaml.safe_load(cluster.kubeconfig.read_text())
    if fault == "does not answer":
        config["clusters"][0]["cluster"]["server"] = "https://127.0.24.99:6443"  # nothing listens there
    else:  # a kubeconfig gone stale (K3s reinstalled): its credentials are refused; runbook 03 fetches a new one
        config["users"][0]["user"] = {"token": "stale-" + uuid.uuid4().hex}
    bad = tmp_path / "kubeconfig.yaml"
    bad.write_text(yaml.safe_dump(config))

    def edit(data: dict[str, Any]) -> None:
        data["k3s"]["kubeconfig"] = str(bad)

    nb = write_nb(tmp_path / "quick.ipynb", "print('ran')")
    locks = tmp_path / "locks"
    with caplog.at_level("WARNING", logger="homelab_lib.runs.runner"):
        result = run_notebook(
            nb, param_files=[make_params(edit=edit)], archive_dir=tmp_path / "archive", lock_dir=locks
        )
    assert result.ok
    assert any("the run Lease is not taken (the local lock is)" in r.getMessage() for r in caplog.records)
    assert ("does not answer" if fault == "does not answer" else "credentials refused (401") in caplog.text


@pytest.mark.parametrize(
    ("renew", "answer"),
    [
        ("2026-11-26T01:00:00.123456Z", "2026-11-26T01:00:00.123456Z"),
        ("2026-11-26T03:00:00.123456+02:00", "2026-11-26T01:00:00.123456Z"),  # stored in UTC
        ("2026-11-26T01:00:00Z", 'cannot parse "Z" as ".000000"'),  # MicroTime: six fraction digits, always
        ("yesterday", 'parsing time "yesterday" as "2006-01-02T15:04:05.000000Z07:00": cannot parse "yesterday"'),
        ("2026-13-26T01:00:00.123456Z", "month out of range"),
    ],
)
def test_lease_times_decode_as_an_api_server_decodes_micro_time(
    cluster: Kube, homelab: str, renew: str, answer: str
) -> None:
    body = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": lease_name(homelab), "namespace": NAMESPACE},
        "spec": {"holderIdentity": "t", "leaseDurationSeconds": 10, "renewTime": renew},
    }
    done = cluster.kubectl("create", "-f", "-", stdin=json.dumps(body), check=False)
    if answer.startswith("2026"):
        assert done.returncode == 0, done.stderr
        assert lease_of(cluster, homelab)["spec"]["renewTime"] == answer
    else:
        assert done.returncode != 0
        assert "BadRequest" in done.stderr
        assert "cannot be handled as a Lease" in done.stderr
        assert answer in done.stderr


def test_a_crashed_runs_lease_expires_and_the_next_run_takes_it_over(
    tmp_path: Path, cluster: Kube, params: Callable[..., Path], homelab: str
) -> None:
    import signal

    p = params(lease_s=3)
    nb = write_nb(tmp_path / "hangs.ipynb", "import time\ntime.sleep(600)")
    runtime = tmp_path / "runtime-crash"
    runtime.mkdir(mode=0o700)
    crashing = subprocess.Popen(
        [sys.executable, "-m", "homelab_lib.cli", "run", str(nb), "-f", str(p), "--archive", str(tmp_path / "a1"),
         "-q", "--no-alert"],
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the run and its kernel, killed together below
    )  # fmt: skip
    try:
        wait_for("the run to hold the Lease", lambda: holder(cluster, homelab), timeout=60, every=0.2)
        crashed_holder = holder(cluster, homelab)
        assert f"pid {crashing.pid} run " in crashed_holder
    finally:
        os.killpg(crashing.pid, signal.SIGKILL)  # a crash: no release, no more renewals
        crashing.wait(timeout=30)
    assert holder(cluster, homelab) == crashed_holder  # nobody released it
    quick = write_nb(tmp_path / "quick.ipynb", "print('ran')")

    def next_run_goes_through() -> bool:
        try:
            run_notebook(quick, param_files=[p], archive_dir=tmp_path / "a2", lock_dir=tmp_path / "locks")
        except LockHeld:
            return False
        return True

    wait_for("the crashed run's Lease to expire", next_run_goes_through, timeout=60, every=0.5)
    after = lease_of(cluster, homelab)["spec"]
    assert after.get("leaseTransitions") == 1  # taken over from the crashed holder
    assert not after.get("holderIdentity")
