"""Volumes, bind mounts and tmpfs: what the pod mounts, and the claims the data copy fills.

A named volume becomes a local-path PVC (:data:`~homelab_lib.kube.objects.STORAGE_CLASS`) sized from
the size given, the measured data plus headroom, or :data:`DEFAULT_PVC`; a read-only bind, or one of
the node's own paths (:data:`HOST_PATHS_OF_THE_NODE`), a hostPath; a writable bind a PVC filled from
the host folder; an anonymous volume an emptyDir; tmpfs and ``shm_size`` memory emptyDirs. Each
becomes a :class:`~homelab_lib.convert.report.VolumePlan`. The Docker socket is not mapped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from homelab_lib.convert.model import Build, handles
from homelab_lib.convert.report import Status, VolumePlan
from homelab_lib.convert.units import dns_label, pvc_size, quantity, size_bytes
from homelab_lib.kube.objects import STORAGE_CLASS

DEFAULT_PVC = "1Gi"


HOST_PATHS_OF_THE_NODE = (
    "/", "/sys", "/proc", "/dev", "/run", "/var/run", "/var/log", "/lib/modules", "/etc/localtime", "/etc/timezone",
    "/etc/os-release", "/run/udev",
)  # fmt: skip
DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")


def _claim_size(b: Build, keys: Sequence[str]) -> tuple[str, str]:
    for k in keys:
        if k and k in b.ctx.sizes:
            return b.ctx.sizes[k], "sizes"
    for k in keys:
        if k and k in b.ctx.measured_bytes:
            return pvc_size(b.ctx.measured_bytes[k], b.ctx.headroom), "measured"
    return DEFAULT_PVC, "default"


def _claim(b: Build, base: str, keys: Sequence[str]) -> tuple[str, str, str]:
    name = base if base.startswith(f"{b.k8s}-") else f"{b.k8s}-{base}"
    name = dns_label(name, limit=63)
    taken = {o["metadata"]["name"] for o in b.objects if o["kind"] == "PersistentVolumeClaim"}
    out, i = name, 2
    while out in taken:
        out, i = f"{name}-{i}", i + 1
    size, size_from = _claim_size(b, [*keys, out])  # also by the claim's own name (a move's record)
    b.objects.append(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": b.meta(out),
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": STORAGE_CLASS,
                "resources": {"requests": {"storage": size}},
            },
        }
    )
    return out, size, size_from


def _volume_entry(spec: Any) -> dict[str, Any]:
    """A service's volume entry in long form: type, source, target, read_only, tmpfs size."""
    if isinstance(spec, dict):
        return {"type": "volume", **spec}
    parts = str(spec).split(":")
    if len(parts) == 1:
        return {"type": "volume", "source": "", "target": parts[0]}
    source, target = parts[0], parts[1]
    modes = (parts[2] if len(parts) > 2 else "").split(",")
    kind = "bind" if source.startswith((".", "/", "~")) else "volume"
    out: dict[str, Any] = {"type": kind, "source": source, "target": target, "read_only": "ro" in modes}
    propagation = [m for m in modes if m in PROPAGATION]
    if propagation:
        out["bind"] = {"propagation": propagation[0]}
    if "nocopy" in modes:
        out["volume"] = {"nocopy": True}
    if {"z", "Z"} & set(modes):
        out["bind"] = {**out.get("bind", {}), "selinux": "z"}
    return out


#: bind propagation -> Kubernetes mountPropagation (shared ones need a privileged container)
PROPAGATION = {
    "rslave": "HostToContainer", "slave": "HostToContainer", "rshared": "Bidirectional", "shared": "Bidirectional",
    "rprivate": "None", "private": "None",
}  # fmt: skip


def _mount_options(b: Build, key: str, v: Mapping[str, Any], mount: dict[str, Any]) -> None:
    """subpath, propagation, SELinux and nocopy of a volume entry: mapped onto the mount, or reported."""
    sub = (v.get("volume") or {}).get("subpath")
    if sub:
        mount["subPath"] = str(sub)
        b.note(f"{key}.volume.subpath", "mapped", f"subPath {sub}")
    if (v.get("volume") or {}).get("nocopy"):
        b.note(
            f"{key}.volume.nocopy", "approximated",
            "nocopy: Kubernetes never copies the image's files into a new volume (as nocopy asks)",
        )  # fmt: skip
    bind = v.get("bind") or {}
    prop = bind.get("propagation")
    if prop:
        mount["mountPropagation"] = PROPAGATION.get(str(prop), "None")
        status: Status = "mapped" if str(prop) in PROPAGATION else "not mapped"
        b.note(f"{key}.bind.propagation", status, f"{prop}: mountPropagation {mount['mountPropagation']}")
        if mount["mountPropagation"] == "Bidirectional":
            b.security()["privileged"] = True
            b.note(f"{key}.bind.propagation", "approximated", "Bidirectional propagation needs privileged: true")
    if bind.get("selinux"):
        b.note(f"{key}.bind.selinux", "not mapped", "SELinux relabelling (:z, :Z) is the node's setting, not the pod's")


def _measured(b: Build, *keys: str) -> int:
    return next((b.ctx.measured_bytes[k] for k in keys if k in b.ctx.measured_bytes), 0)


def _size_text(nbytes: int) -> str:
    return f"{nbytes / 1024**3:.2f} GiB" if nbytes >= 1024**3 else f"{nbytes / 1024**2:.1f} MiB"


@handles("volumes", "tmpfs")
def _volumes(b: Build, _value: Any) -> None:
    compose = b.ctx.compose
    top = compose.document.get("volumes") or {}
    for i, raw in enumerate(b.svc.get("volumes") or []):
        key = f"volumes[{i}]"
        v = _volume_entry(raw)
        target = str(v.get("target", ""))
        ro = bool(v.get("read_only"))
        kind = v.get("type")
        source = str(v.get("source") or "")
        if kind == "tmpfs":
            size = (v.get("tmpfs") or {}).get("size")
            _memory_dir(b, key, target, size)
            continue
        if kind == "volume" and not source:
            name = b.volume_name(f"anon-{target.strip('/').replace('/', '-') or 'root'}")
            b.pod_volumes.append({"name": name, "emptyDir": {}})
            b.mounts.append({"name": name, "mountPath": target})
            b.volumes.append(VolumePlan(name, target, "emptyDir", "", "anonymous"))
            b.note(key, "approximated", f"anonymous volume: an emptyDir at {target}; its data lives as long as the pod")
            continue
        if kind == "volume":
            spec = top.get(source) or {}
            docker = str(spec.get("name") or (source if spec.get("external") else f"{compose.project}_{source}"))
            pvc, size, size_from = _claim(b, dns_label(source), [source, docker])
            name = b.volume_name(source)
            b.pod_volumes.append({"name": name, "persistentVolumeClaim": {"claimName": pvc}})
            b.mounts.append({"name": name, "mountPath": target, **({"readOnly": True} if ro else {})})
            _mount_options(b, key, v, b.mounts[-1])
            b.volumes.append(VolumePlan(name, target, "pvc-copied", source, "volume", docker, pvc, size, size_from, ro))
            why = {
                "sizes": "the size given",
                "measured": f"the measured {_size_text(_measured(b, source, docker))} + {b.ctx.headroom:.0%}",
                "default": "a default: the migration measures the volume and sizes the claim before the copy",
            }[size_from]
            b.note(key, "mapped", f"PVC {pvc} ({STORAGE_CLASS}, {size}: {why}) filled from Docker volume {docker}")
            if spec.get("driver_opts") or spec.get("driver") not in (None, "local"):
                b.note(
                    f"volumes.{source}", "approximated",
                    f"the volume's driver/driver_opts (NFS, CIFS...) are not kept: its data is copied into {pvc}",
                    ("volumes", source),
                )  # fmt: skip
            continue
        if kind != "bind":
            b.note(key, "not mapped", f"a volume of type {kind} has no Kubernetes counterpart")
            continue
        host = source.rstrip("/") or "/"
        if host.startswith("."):
            host = str((compose.base_dir / host).resolve())
        if host in DOCKER_SOCKETS or target in DOCKER_SOCKETS:
            b.note(
                key,
                "not mapped",
                "the Docker socket: K3s runs containerd, there is no Docker Engine on the node to talk to",
            )
            continue
        name = b.volume_name(Path(host).name or "host-root")
        node_path = host in HOST_PATHS_OF_THE_NODE or host.startswith(("/sys/", "/proc/", "/dev/"))
        if ro or node_path:
            b.pod_volumes.append({"name": name, "hostPath": {"path": host}})
            b.mounts.append({"name": name, "mountPath": target, **({"readOnly": True} if ro else {})})
            _mount_options(b, key, v, b.mounts[-1])
            b.volumes.append(VolumePlan(name, target, "hostPath", host, "bind", read_only=ro))
            if node_path:
                b.note(key, "mapped", f"hostPath {host}: the K3s node's own {host}")
            elif host.startswith("/var/lib/docker"):
                b.note(key, "approximated", f"hostPath {host}: K3s keeps containers under /var/lib/rancher, not here")
            else:
                b.note(
                    key,
                    "approximated",
                    f"hostPath {host} (read-only): the K3s node must have the same folder with the same files "
                    "(a shared NFS mount of the media, say); nothing is copied",
                )
            continue
        pvc, size, size_from = _claim(b, dns_label(Path(host).name or "host"), [host, source])
        b.pod_volumes.append({"name": name, "persistentVolumeClaim": {"claimName": pvc}})
        b.mounts.append({"name": name, "mountPath": target})
        _mount_options(b, key, v, b.mounts[-1])
        b.volumes.append(VolumePlan(name, target, "pvc-copied", host, "bind", "", pvc, size, size_from))
        b.note(
            key,
            "approximated",
            f"bind mount {host} (writable) becomes PVC {pvc} ({STORAGE_CLASS}, {size}, size {size_from}) that the "
            "data copy fills; the folder on the Docker host is no longer shared with anything else",
        )
    tmpfs = b.svc.get("tmpfs")
    if tmpfs is not None:
        for i, entry in enumerate(tmpfs if isinstance(tmpfs, list) else [tmpfs]):
            path, _, opts = str(entry).partition(":")
            size = next((o.split("=", 1)[1] for o in opts.split(",") if o.startswith("size=")), None)
            _memory_dir(b, f"tmpfs[{i}]" if isinstance(tmpfs, list) else "tmpfs", path, size)


def _memory_dir(b: Build, key: str, target: str, size: Any) -> None:
    name = b.volume_name(f"tmpfs-{target.strip('/').replace('/', '-') or 'root'}")
    spec: dict[str, Any] = {"medium": "Memory"}
    if size:
        spec["sizeLimit"] = quantity(size_bytes(size))
    b.pod_volumes.append({"name": name, "emptyDir": spec})
    b.mounts.append({"name": name, "mountPath": target})
    b.volumes.append(VolumePlan(name, target, "emptyDir", "", "tmpfs"))
    b.note(key, "mapped", f"a memory emptyDir at {target}" + (f" (sizeLimit {spec['sizeLimit']})" if size else ""))


@handles("shm_size")
def _shm(b: Build, value: Any) -> None:
    limit = quantity(size_bytes(value))
    b.pod_volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": limit}})
    b.mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    b.note("shm_size", "mapped", f"a memory emptyDir at /dev/shm, sizeLimit {limit}")


__all__ = ["DEFAULT_PVC", "DOCKER_SOCKETS", "HOST_PATHS_OF_THE_NODE", "PROPAGATION"]
