"""Runbook 05's data move against real things: a Compose service in the host's Docker Engine (SDK containers
labelled as Compose labels them, a named volume of real files), the Kubernetes stand-in on 127.0.26.14
(pods in the same engine, local-path folders in its data dir), and a real sshd on 127.0.26.31 standing for
both the Docker VM and the K3s VM. The faults of issue 11, each a test: the copy cut (resume), a checksum
mismatch and a rollout never ready (rollback: Compose healthy on unchanged data), the K3s API unreachable
(nothing stopped), not enough space (refused in the plan).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml

from homelab_lib.core.errors import CopyFailed, K3sRolloutFailed, K3sUnreachable, MigrateRefused, RolledBack
from homelab_lib.core.plan import Action
from homelab_lib.core.progress import Lines
from homelab_lib.hosts import checksums
from homelab_lib.hosts.docker import DockerHost, HostPool
from homelab_lib.hosts.ssh import SshTarget
from homelab_lib.kube.client import Kube
from homelab_lib.kube.runbook import Probe, probe
from homelab_lib.migrate import state as records
from homelab_lib.migrate.checkpoints import Faults
from homelab_lib.migrate.desired import MoveDesired, PlacementEdit, VolumeMove, desired_of
from homelab_lib.migrate.move import MoveAdapter
from tests.kube_fixtures import (
    IMAGE,
    _build_test_image,
    remove_engine_leftovers,
    start_standin,
    stop_standin,
    wait_for,
)
from tests.sshd_fixtures import start_sshd

KUBE_ADDRESS = "127.0.26.14"
SSHD_ADDRESS = "127.0.26.31"


@dataclass
class World:
    sshd: SshTarget
    host: DockerHost  # the Docker VM (docker-a), in hosts
    hosts: HostPool  # the Docker VM and the K3s VM (k3s-a: the same sshd), as a move is given them
    kubeconfig: Path
    storage: Path
    engine: Any


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    engine = docker.from_env()
    try:
        engine.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        _build_test_image(engine)
    data_dir = tmp_path_factory.mktemp("k3s")
    proc, kubeconfig = start_standin(data_dir, KUBE_ADDRESS)
    try:
        with start_sshd(tmp_path_factory.mktemp("sshd"), SSHD_ADDRESS, host="docker-a") as target, HostPool() as hosts:
            hosts["docker-a"] = DockerHost.open(target)
            hosts["k3s-a"] = DockerHost.open(replace(target, host="k3s-a"))
            yield World(target, hosts["docker-a"], hosts, kubeconfig, data_dir / "storage", engine)
    finally:
        stop_standin(proc)
        remove_engine_leftovers(data_dir)
        engine.close()


@dataclass
class Service:
    """A Compose service of one test: its project, containers and volumes (removed after the test)."""

    project: str
    container: Any
    volumes: dict[str, Path]
    namespace: str

    def state(self) -> tuple[str, str]:
        self.container.reload()
        return self.container.status, ((self.container.attrs["State"].get("Health") or {}).get("Status", ""))


def fill(folder: Path, seed: str, big: int = 0) -> None:
    (folder / "config" / "deep").mkdir(parents=True, exist_ok=True)
    (folder / "index.html").write_text(f"served from the moved volume {seed}\n")
    (folder / "config" / "settings.xml").write_text(f"<settings seed='{seed}'/>\n")
    (folder / "config" / "deep" / "db.sqlite").write_bytes(os.urandom(300_000))
    (folder / "config" / "empty").write_bytes(b"")
    (folder / "name with spaces.txt").write_text("kept\n")
    (folder / "link").symlink_to("index.html")
    os.chmod(folder / "config" / "settings.xml", 0o600)
    os.chown(folder / "config" / "deep" / "db.sqlite", 1000, 1000)
    if big:
        (folder / "big.bin").write_bytes(os.urandom(big))


@pytest.fixture
def service(world: World) -> Iterator[Service]:
    uid = uuid.uuid4().hex[:8]
    project = f"mig{uid}"
    made_volumes = []
    volumes: dict[str, Path] = {}
    for name, big in (("config", 0), ("media", 64 << 20)):
        v = world.engine.volumes.create(f"{project}_{name}", labels={"com.docker.compose.project": project})
        made_volumes.append(v)
        folder = Path(v.attrs["Mountpoint"])
        fill(folder, f"{uid}-{name}", big)
        volumes[v.name] = folder
    container = world.engine.containers.run(
        IMAGE,
        name=f"{project}-web-1",
        detach=True,
        labels={"com.docker.compose.project": project, "com.docker.compose.service": "web"},
        volumes={f"{project}_config": {"bind": "/www", "mode": "rw"}, f"{project}_media": {"bind": "/data"}},
        healthcheck={"test": ["CMD", "true"], "interval": 1_000_000_000, "start_period": 0},
    )
    svc = Service(project, container, volumes, f"mig-{uid}")
    wait_for("the Compose container healthy", lambda: svc.state() == ("running", "healthy"), 60)
    try:
        yield svc
    finally:
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True)
        for v in made_volumes:
            with contextlib.suppress(docker.errors.APIError):
                v.remove(force=True)
        kube = Kube(world.kubeconfig, where="k3s")
        from homelab_lib.kube.objects import Key

        kube.delete(Key("v1", "Namespace", "", svc.namespace))
        kube.api.close()  # type: ignore[no-untyped-call]


def manifests(svc: Service, *, ready: bool = True) -> list[dict[str, Any]]:
    """What the converter makes for the service: Namespace, two PVCs, Deployment (Recreate), Service, Ingress."""
    ns, labels = svc.namespace, {"app": "web"}
    probe_cmd = ["true"] if ready else ["false"]
    claims = [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": f"web-{name}", "namespace": ns},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "local-path",
                "resources": {"requests": {"storage": "1Gi"}},
            },
        }
        for name in ("config", "media")
    ]
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        *claims,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {
                "replicas": 1,
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [
                            {
                                "name": "web",
                                "image": IMAGE,
                                "ports": [{"containerPort": 80}],
                                "readinessProbe": {"exec": {"command": probe_cmd}, "periodSeconds": 1},
                                "volumeMounts": [
                                    {"name": "config", "mountPath": "/www"},
                                    {"name": "media", "mountPath": "/data"},
                                ],
                            }
                        ],
                        "volumes": [
                            {"name": "config", "persistentVolumeClaim": {"claimName": "web-config"}},
                            {"name": "media", "persistentVolumeClaim": {"claimName": "web-media"}},
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": 80}]},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {
                "rules": [
                    {
                        "host": f"{ns}.lab.test",
                        "http": {
                            "paths": [
                                {
                                    "path": "/",
                                    "pathType": "Prefix",
                                    "backend": {"service": {"name": "web", "port": {"number": 80}}},
                                }
                            ]
                        },
                    }
                ]
            },
        },
    ]


def desired(world: World, svc: Service, *, ready: bool = True, **options: Any) -> MoveDesired:
    return desired_of(
        f"media/{svc.project}",
        docker_host="docker-a",
        project=svc.project,
        compose_service="web",
        manifests=manifests(svc, ready=ready),
        volumes=[
            VolumeMove(f"{svc.project}_config", svc.namespace, "web-config", "/www"),
            VolumeMove(f"{svc.project}_media", svc.namespace, "web-media", "/data"),
        ],
        storage_root=str(world.storage),
        probes=[Probe("web", f"{svc.namespace}.lab.test", KUBE_ADDRESS, "/index.html")],
        **options,
    )


def adapter(world: World, state_dir: Path, kubeconfig: Path | None = None, **kw: Any) -> MoveAdapter:
    config = kubeconfig or world.kubeconfig
    return MoveAdapter(
        kw.pop("desired"),
        hosts=world.hosts,
        k3s="k3s-a",
        kube=lambda: Kube(config, where="k3s"),
        state_dir=state_dir,
        **kw,
    )


def pv_folder(state_dir: Path, d: MoveDesired, claim: str) -> Path:
    return Path(records.load(state_dir, d.service).fact("pvcs", f"pvc.{claim}.folder"))


def assert_rolled_back(world: World, svc: Service, before: dict[str, checksums.Manifest], d: MoveDesired) -> None:
    assert svc.state() == ("running", "healthy")
    for name, folder in svc.volumes.items():
        assert checksums.local_manifest(folder) == before[name], name
    kube = Kube(world.kubeconfig, where="k3s")
    from homelab_lib.kube.objects import key

    try:
        for obj in d.manifests:
            if obj["kind"] != "Namespace":
                assert kube.get(key(obj)) is None, key(obj)
    finally:
        kube.api.close()  # type: ignore[no-untyped-call]
    assert not [p for p in world.storage.glob(f"*_{svc.namespace}_*")], "PV folders left behind"


def test_a_move_copies_verifies_applies_and_cleans_up(world: World, svc_state: Path, service: Service) -> None:
    before = {name: checksums.local_manifest(folder) for name, folder in service.volumes.items()}
    inventory = svc_state.parent / "params.yaml"
    inventory.write_text(f"stacks:\n  media:\n    services: [{service.project}]\nk3s:\n  services: []\n")
    edit = PlacementEdit(
        inventory,
        f"services: [{service.project}]\nk3s:\n  services: []",
        f"services: []\nk3s:\n  services: [{service.project}]",
    )
    d = desired(world, service, placement=edit)
    made: list[str] = []

    def backup(m: MoveDesired) -> str:
        made.append(m.service)
        return "snap-1"

    move = adapter(world, svc_state, desired=d, backup=backup, write_placement=True)
    try:
        observed = move.observe(d)
        plan = move.plan(d, observed)
        assert [c.target for c in plan.changes if c.kind == "checkpoint"] == list(records.CHECKPOINTS)
        assert {c.action for c in plan.changes if c.kind == "checkpoint"} == {Action.CREATE}
        assert sorted(c.target for c in plan.of_action(Action.DELETE)) == sorted(service.volumes)
        dry = move.apply(d, plan)
        assert not dry.applied
        assert service.state()[0] == "running"

        result = move.apply(d, plan, confirm=True, progress=Lines())
        assert result.ok
        assert made == [d.service]
        assert result.facts["backup.backup"] == "snap-1"
        assert result.facts["apply.manifests_sha256"] == d.manifests_sha256
        assert sorted(result.not_done) == [f"{v}: delete needs allow_delete=True" for v in sorted(service.volumes)]
        verified = move.verify(d, result)
        assert verified.ok, verified.summary()
        table = verified.report.checksums()
        assert list(table["source sha256"]) == list(table["copy sha256"])

        for v in d.volumes:
            copy = checksums.local_manifest(pv_folder(svc_state, d, v.claim))
            assert copy == before[v.volume], v.volume
            assert copy.files >= 5
        folder = pv_folder(svc_state, d, f"{service.namespace}/web-config")
        assert (folder / "config" / "settings.xml").stat().st_mode & 0o777 == 0o600
        assert (folder / "config" / "deep" / "db.sqlite").stat().st_uid == 1000
        assert probe(d.probes[0]).startswith("200")
        with pytest.raises(docker.errors.NotFound):
            world.engine.containers.get(service.container.id)
        assert all(world.engine.volumes.get(name) for name in service.volumes)  # kept
        assert f"services: [{service.project}]" in inventory.read_text().split("k3s:")[1]

        again = move.plan(d, move.observe(d))
        assert {c.action for c in again.changes if c.kind == "checkpoint"} == {Action.NOOP}
        assert not again.applicable()
        assert len(again.of_action(Action.DELETE)) == 2
        kept = move.apply(d, again, confirm=True)
        assert not kept.applied  # the volumes stay without allow_delete
        removed = move.apply(d, again, confirm=True, allow_delete=True)
        assert sorted(o.target for o in removed.outcomes if o.result == "done") == sorted(service.volumes)
        for name in service.volumes:
            with pytest.raises(docker.errors.NotFound):
                world.engine.volumes.get(name)
        assert move.plan(d, move.observe(d)).empty
    finally:
        move.close()


@pytest.fixture
def svc_state(tmp_path: Path) -> Path:
    return tmp_path / "archive"


def test_an_interrupted_copy_resumes_from_its_checkpoint(world: World, svc_state: Path, service: Service) -> None:
    before = {name: checksums.local_manifest(folder) for name, folder in service.volumes.items()}
    d = desired(world, service)
    media = f"{service.project}_media"
    move = adapter(world, svc_state, desired=d)

    def cut(volume: str, sent: int) -> None:
        # 64 MiB of media > the 32 MiB channel window: the source tar is still sending when the link dies
        if volume == media and sent > 1 << 20:  # kill the Docker VM's SSH connection mid-stream
            world.host.ssh().close()

    move.faults = Faults(on_chunk=cut)
    try:
        with pytest.raises(CopyFailed, match="run again to resume") as failed:
            move.apply(d, move.plan(d, move.observe(d)), confirm=True, progress=Lines())
        assert media in failed.value.where
        st = records.load(svc_state, d.service)
        assert st.last == "pvcs"
        assert st.copied == (f"{service.project}_config",)
        assert service.state()[0] == "exited"  # stays stopped: nothing rolled back, resumable
        partial = pv_folder(svc_state, d, f"{service.namespace}/web-media")
        assert not checksums.compare(before[media], checksums.local_manifest(partial)).ok
    finally:
        move.close()

    again = adapter(world, svc_state, desired=d)
    try:
        plan = again.plan(d, again.observe(d))
        state = {c.target: c.action for c in plan.changes if c.kind == "checkpoint"}
        assert [c for c, a in state.items() if a == Action.NOOP] == ["backup", "stop", "pvcs"]
        assert "1 already copied: skipped" in next(c.reason for c in plan.changes if c.target == "copy")
        result = again.apply(d, plan, confirm=True, progress=Lines())
        assert result.facts[f"copy.volume.{service.project}_config"] == "copied by an earlier run: skipped"
        assert "bytes streamed" in result.facts[f"copy.volume.{media}"]
        assert again.verify(d, result).ok
        assert checksums.local_manifest(partial) == before[media]
    finally:
        again.close()


def test_a_stopped_move_is_rolled_back_on_demand(world: World, svc_state: Path, service: Service) -> None:
    """rollback=True in notebook 05: after a copy cut short, the operator brings the Compose service back."""
    before = {name: checksums.local_manifest(folder) for name, folder in service.volumes.items()}
    d = desired(world, service)
    move = adapter(world, svc_state, desired=d)

    def cut(volume: str, sent: int) -> None:
        if volume.endswith("_media") and sent > 1 << 20:
            world.host.ssh().close()

    move.faults = Faults(on_chunk=cut)
    try:
        with pytest.raises(CopyFailed):
            move.apply(d, move.plan(d, move.observe(d)), confirm=True)
        assert service.state()[0] == "exited"
        undone = move.rollback(d)
        assert any("started 1 Compose container" in line for line in undone)
        assert_rolled_back(world, service, before, d)
        assert move.rollback(d) == ()  # nothing stopped any more: nothing to do
        plan = move.plan(d, move.observe(d))
        assert {c.action for c in plan.changes if c.kind == "checkpoint"} == {Action.CREATE}  # starts over
    finally:
        move.close()


def test_a_checksum_mismatch_rolls_back(world: World, svc_state: Path, service: Service) -> None:
    before = {name: checksums.local_manifest(folder) for name, folder in service.volumes.items()}
    d = desired(world, service)

    def tamper(volume: str, folder: str) -> None:
        if volume.endswith("_config"):
            Path(folder, "config", "settings.xml").write_text("<settings seed='tampered'/>\n")

    move = adapter(world, svc_state, desired=d, faults=Faults(after_copy=tamper))
    try:
        with pytest.raises(RolledBack) as failed:
            move.apply(d, move.plan(d, move.observe(d)), confirm=True, progress=Lines())
        assert failed.value.checkpoint == "verify"
        assert "config/settings.xml" in str(failed.value.cause)
        assert any("unchanged" in line for line in failed.value.undone)
        assert_rolled_back(world, service, before, d)
        st = records.load(svc_state, d.service)
        assert not st.done
        assert st.rolled_back
    finally:
        move.close()


def test_a_rollout_never_ready_rolls_back(world: World, svc_state: Path, service: Service) -> None:
    before = {name: checksums.local_manifest(folder) for name, folder in service.volumes.items()}
    d = desired(world, service, ready=False, rollout_timeout_s=8.0)
    move = adapter(world, svc_state, desired=d)
    try:
        with pytest.raises(RolledBack) as failed:
            move.apply(d, move.plan(d, move.observe(d)), confirm=True, progress=Lines())
        assert failed.value.checkpoint == "apply"
        assert isinstance(failed.value.cause, K3sRolloutFailed)
        assert_rolled_back(world, service, before, d)
    finally:
        move.close()


def test_the_k3s_api_unreachable_stops_nothing(world: World, svc_state: Path, service: Service, tmp_path: Path) -> None:
    config = yaml.safe_load(world.kubeconfig.read_text())
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = "https://127.0.26.99:6443"
    dead = tmp_path / "dead.yaml"
    dead.write_text(yaml.safe_dump(config))
    d = desired(world, service)
    move = adapter(world, svc_state, dead, desired=d)
    try:
        with pytest.raises(K3sUnreachable):
            move.observe(d)
        assert service.state() == ("running", "healthy")
        assert not records.state_path(svc_state, d.service).exists()
    finally:
        move.close()


def test_not_enough_space_is_refused_in_the_plan(
    world: World, svc_state: Path, service: Service, tmp_path: Path
) -> None:
    small = tmp_path / "small-storage"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)], check=False).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        d = desired(world, service)
        d = replace(d, storage_root=str(small))
        move = adapter(world, svc_state, desired=d)
        try:
            plan = move.plan(d, move.observe(d))
            refused = [c for c in plan.conflicts if c.kind == "storage"]
            assert refused
            assert "not enough space" in refused[0].reason
            assert "GiB free" in refused[0].reason
            with pytest.raises(MigrateRefused, match="not enough space"):
                move.apply(d, plan, confirm=True)
            assert service.state() == ("running", "healthy")
            assert not records.state_path(svc_state, d.service).exists()
        finally:
            move.close()
    finally:
        subprocess.run(["umount", str(small)], check=False)
        shutil.rmtree(small, ignore_errors=True)


def test_a_manifest_of_thousands_of_small_files_is_whole(tmp_path: Path) -> None:
    """sha256sum batches run in parallel: their records must not interleave (a volume of many small files)."""
    import hashlib

    for i in range(4096):
        folder = tmp_path / f"cache-{i % 32:02d}"
        folder.mkdir(exist_ok=True)
        (folder / f"item-with-a-longish-name-{i:05d}.bin").write_bytes(os.urandom(100))
    m = checksums.local_manifest(tmp_path)
    assert m.files == 4096
    entry = m.entries["cache-07/item-with-a-longish-name-00007.bin"]
    assert (
        entry.sha256
        == hashlib.sha256((tmp_path / "cache-07" / "item-with-a-longish-name-00007.bin").read_bytes()).hexdigest()
    )


def test_the_state_record_reads_back_and_the_plan_marks_what_is_done(tmp_path: Path) -> None:
    from homelab_lib.migrate.observe import MoveObserved, VolumeState
    from homelab_lib.migrate.plan import plan_move

    d = desired_of(
        "media/sonarr",
        docker_host="docker-a",
        project="media",
        compose_service="sonarr",
        manifests=[
            {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "config", "namespace": "media"}}
        ],
        volumes=[VolumeMove("media_config", "media", "config")],
        storage_root="/var/lib/rancher/k3s/storage/",
    )
    st = (
        records.MoveState(d.service)
        .with_done("backup", "t1", {"backup": "snap"})
        .with_done("stop", "t2", {"containers": "[]"})
    )
    records.save(tmp_path, st.with_copied("media_config"))
    back = records.load(tmp_path, d.service)
    assert back == st.with_copied("media_config")
    assert back.last == "stop"
    assert back.remaining == records.CHECKPOINTS[2:]
    observed = MoveObserved(back, (), (VolumeState("media_config", "/v", 5 << 30),), 1 << 30)
    plan = plan_move("migrate", d, observed, backup=False, write=False)
    actions = {c.target: c.action for c in plan.changes if c.kind == "checkpoint"}
    assert [c for c, a in actions.items() if a == Action.NOOP] == ["backup", "stop"]
    assert not plan.conflicts  # the only volume was copied already: no space needed, service stopped by the move
    fresh = MoveObserved(records.MoveState(d.service), (), observed.volumes, 1 << 30)
    reasons = [c.reason for c in plan_move("migrate", d, fresh, backup=False, write=False).conflicts]
    assert any("no Compose container" in r for r in reasons)
    assert any("not enough space" in r and "5.50 GiB" in r for r in reasons)


def test_the_move_offers_the_contract_steps_and_its_errors_are_in_the_tree() -> None:
    import inspect

    from homelab_lib.core import contract, errors

    for step in ["desired", "observe", "plan", "apply", "verify", "close"]:
        want = inspect.signature(getattr(contract.Adapter, step))
        have = inspect.signature(getattr(MoveAdapter, step))
        assert [(p.name, p.kind, p.default) for p in have.parameters.values()] == [
            (p.name, p.kind, p.default) for p in want.parameters.values()
        ], step
    tree = errors.__doc__ or ""
    for cls in (
        errors.MigrateError,
        errors.MigrateRefused,
        errors.CopyFailed,
        errors.ChecksumMismatch,
        errors.RolledBack,
        errors.RollbackFailed,
    ):
        assert issubclass(cls, errors.AdapterError)
        assert f"── {cls.__name__} " in tree, cls.__name__
    assert issubclass(errors.MigrateRefused, errors.PlanConflict)
    e = errors.RolledBack("x", checkpoint="apply", cause=ValueError("y"), undone=["a", "b"], where="w", hint="h")
    assert str(e) == "w: x (h)\n  rolled back:\n    a\n    b"
