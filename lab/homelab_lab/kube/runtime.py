"""The pod runtime: pods run as containers in a Docker Engine (never pulling: no registry is reachable).

Each container of a pod is a Docker container named ``k8s_<container>_<pod>_<namespace>_<uid>_0``,
labelled with the pod's namespace, name and uid, the container's name, and :data:`LABEL` =
the server's instance id (so a server only touches its own). The pod's first container owns the
network namespace; the others join it. Restarts reuse the container (``docker start``).

:class:`NoRuntime` is what a server without an engine uses: pods stay Pending, saying why.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import io
import socket
import subprocess
import tarfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from homelab_lab.errors import KubeStandinError
from homelab_lab.kube.schema import Json

LABEL = "homelab.lab.kube"
IMAGE_LABEL = "homelab.lab.kube.image"
BUSYBOX = Path("/bin/busybox")
Mount = tuple[str, str, bool]  # host path, container path, read-only


def _stamp(text: str | None = None) -> str:
    if text:
        return str(text)[:19] + "Z"
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def forget_neighbour(ip: str) -> None:
    """Drop this machine's ARP entry for a new pod's IP.

    A pod recreated on an IP an earlier pod had gets a new MAC address; until the old neighbour
    entry expires, packets to it go nowhere (the Ingress answered 502). A real node's CNI announces
    the new address; the lab's pods are plain containers on a bridge, so the kubelet forgets the
    stale entry as it starts the pod.
    """
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(["ip", "neigh", "flush", "to", ip], capture_output=True, check=False, timeout=10)


@dataclass
class ContainerStatus:
    """What the kubelet reports of one container."""

    name: str
    image: str
    state: Json
    running: bool = False
    exited: int | None = None
    container_id: str = ""
    image_id: str = ""
    last_state: Json = field(default_factory=dict)
    restart_count: int = 0
    ip: str = ""


class NoRuntime:
    """No container engine: every container waits, with the reason given."""

    def __init__(
        self, reason: str = "no container runtime on this node (the stand-in was started without one)"
    ) -> None:
        self.reason = reason

    def sync(self, pod: Json, mounts: dict[str, list[Mount]], env: dict[str, dict[str, str]]) -> list[ContainerStatus]:
        return [
            ContainerStatus(
                c["name"], c.get("image", ""), {"waiting": {"reason": "ContainerCreating", "message": self.reason}}
            )
            for c in (pod.get("spec") or {}).get("containers") or []
        ]

    def kill(self, uid: str) -> None:
        return

    def uids(self) -> set[str]:
        return set()

    def logs(self, pod: Json, container: str, tail: int | None) -> bytes:
        return b""

    def exec_ok(self, pod: Json, container: str, command: list[str]) -> bool:
        return False

    def close(self) -> None:
        return


class DockerRuntime:
    """Pods as containers in the Docker Engine ``docker.from_env()`` reaches.

    Args:
        instance: this server's id, the value of :data:`LABEL` on every container it makes.
        client: a docker SDK client (default: ``docker.from_env()``).
        backoff: seconds before the first restart of a crashed container (doubling, at most 60).
    """

    def __init__(self, instance: str, client: Any = None, backoff: float = 2.0) -> None:
        import docker

        self.instance = instance
        try:
            self.client = client or docker.from_env()
            self.client.ping()
        except Exception as e:
            raise KubeStandinError(
                f"the Docker Engine is not reachable ({e})",
                where="pod runtime",
                hint="start dockerd, set DOCKER_HOST, or run with the runtime 'none'",
            ) from None
        self.errors = docker.errors
        self.backoff = backoff
        self._lock = threading.Lock()
        self._images: dict[str, str] = {}
        self._pull_tries: dict[tuple[str, str], int] = {}
        self._crash: dict[tuple[str, str], tuple[int, float]] = {}

    # ------------------------------------------------------------ images

    def image_id(self, ref: str) -> str | None:
        """The local image id of ref, or None (it is never pulled)."""
        if ref in self._images:
            return self._images[ref]
        try:
            image = self.client.images.get(ref)
        except self.errors.ImageNotFound:
            return None
        except self.errors.APIError:
            return None
        self._images[ref] = str(image.id)
        return str(image.id)

    def build_standins(self, images: dict[str, str], broken: tuple[str, ...]) -> None:
        """Build the system images (coredns, traefik, klipper-helm...) from static busybox, as airgap images.

        ``images`` maps each real image name to its role; the helm job image fails the install of
        the charts named in ``broken`` (and succeeds for the others).
        """
        busybox = BUSYBOX.read_bytes() if BUSYBOX.exists() else b""
        if not busybox:
            raise KubeStandinError(f"{BUSYBOX} is missing", where="pod runtime", hint="apt-get install busybox-static")
        for ref, role in images.items():
            script = _HELM if role == "helm" else _SERVE
            extra = "\n".join(broken) + "\n" if role == "helm" else ""
            # stable across restarts (str's hash() is salted per process: it rebuilt every image, and the
            # changed image ids made the kubelet recreate every system pod after each restart)
            digest = hashlib.sha256(busybox + b"\0" + script.encode() + b"\0" + extra.encode()).hexdigest()[:32]
            with contextlib.suppress(Exception):
                if self.client.images.get(ref).labels.get(IMAGE_LABEL) == digest:
                    continue
            files = {
                "Dockerfile": _DOCKERFILE.format(label=LABEL, image_label=IMAGE_LABEL).encode(),
                "busybox": busybox,
                "entry.sh": script.encode(),
                "broken": extra.encode(),
            }
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as tar:
                for name, data in files.items():
                    info = tarfile.TarInfo(name)
                    info.size, info.mode = len(data), 0o755
                    tar.addfile(info, io.BytesIO(data))
            buf.seek(0)
            _repo, _, _tag = ref.rpartition(":")
            self.client.images.build(
                fileobj=buf,
                custom_context=True,
                tag=ref,
                rm=True,
                forcerm=True,
                labels={LABEL: self.instance, IMAGE_LABEL: digest},
            )
            self._images.pop(ref, None)

    # ------------------------------------------------------------ containers

    def _containers(self, uid: str) -> dict[str, Any]:
        found = self.client.containers.list(
            all=True, filters={"label": [f"{LABEL}={self.instance}", f"io.kubernetes.pod.uid={uid}"]}
        )
        return {c.labels.get("io.kubernetes.container.name"): c for c in found}

    def uids(self) -> set[str]:
        found = self.client.containers.list(all=True, filters={"label": f"{LABEL}={self.instance}"})
        return {c.labels.get("io.kubernetes.pod.uid", "") for c in found}

    def kill(self, uid: str) -> None:
        for c in self._containers(uid).values():
            with contextlib.suppress(self.errors.NotFound, self.errors.APIError):
                c.remove(force=True)
        for key in [k for k in self._crash if k[0] == uid]:
            self._crash.pop(key, None)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()

    def _create(self, pod: Json, c: Json, mounts: list[Mount], env: dict[str, str], net: Any) -> Any:
        meta = pod["metadata"]
        labels = {
            LABEL: self.instance,
            "io.kubernetes.pod.namespace": meta["namespace"],
            "io.kubernetes.pod.name": meta["name"],
            "io.kubernetes.pod.uid": meta["uid"],
            "io.kubernetes.container.name": c["name"],
        }
        kwargs: dict[str, Any] = {
            "name": f"k8s_{c['name']}_{meta['name']}_{meta['namespace']}_{meta['uid']}_0",
            "labels": labels,
            "environment": env,
            "detach": True,
            "volumes": {host: {"bind": path, "mode": "ro" if ro else "rw"} for host, path, ro in mounts},
        }
        if c.get("command"):
            kwargs["entrypoint"] = c["command"]
        if c.get("args"):
            kwargs["command"] = c["args"]
        if c.get("workingDir"):
            kwargs["working_dir"] = c["workingDir"]
        user = (c.get("securityContext") or {}).get("runAsUser")
        if user is not None:
            kwargs["user"] = str(user)
        if net is None:
            kwargs["hostname"] = (pod.get("spec") or {}).get("hostname") or meta["name"]
        else:
            kwargs["network_mode"] = f"container:{net.id}"
        return self.client.containers.create(c["image"], **kwargs)

    def sync(self, pod: Json, mounts: dict[str, list[Mount]], env: dict[str, dict[str, str]]) -> list[ContainerStatus]:
        """Make the pod's containers run as its spec and restart policy say; report their states."""
        uid = pod["metadata"]["uid"]
        spec = pod.get("spec") or {}
        policy = spec.get("restartPolicy", "Always")
        existing = self._containers(uid)
        previous = {s.get("name"): s for s in (pod.get("status") or {}).get("containerStatuses") or []}
        out: list[ContainerStatus] = []
        net = None
        for c in spec.get("containers") or []:
            name, image = c["name"], c.get("image", "")
            restarts = int((previous.get(name) or {}).get("restartCount") or 0)
            last = (previous.get(name) or {}).get("lastState") or {}
            image_id = self.image_id(image)
            if image_id is None:
                tries = self._pull_tries.get((uid, name), 0)
                self._pull_tries[(uid, name)] = tries + 1
                if tries == 0:
                    state = {"waiting": {"reason": "ErrImagePull", "message": _pull_error(image)}}
                else:
                    state = {"waiting": {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{image}"'}}
                out.append(ContainerStatus(name, image, state, restart_count=restarts, last_state=last))
                continue
            self._pull_tries.pop((uid, name), None)
            container = existing.get(name)
            if container is not None and container.image.id != image_id:  # the image changed under it
                container.remove(force=True)
                container = None
            fresh = container is None
            if container is None:
                try:
                    container = self._create(pod, c, mounts.get(name, []), env.get(name, {}), net)
                    container.start()
                except self.errors.APIError as e:
                    with contextlib.suppress(Exception):
                        if container is not None:
                            container.remove(force=True)
                    out.append(
                        ContainerStatus(
                            name,
                            image,
                            {"waiting": {"reason": "CreateContainerError", "message": str(e.explanation or e)}},
                        )
                    )
                    continue
            container.reload()
            st = container.attrs.get("State") or {}
            cid = f"docker://{container.id}"
            if net is None:
                net = container
            ip = str(((container.attrs.get("NetworkSettings") or {}).get("IPAddress")) or "")
            if fresh and net is container and ip:
                forget_neighbour(ip)
            if st.get("Running"):
                state = {"running": {"startedAt": _stamp(st.get("StartedAt"))}}
                out.append(ContainerStatus(name, image, state, True, None, cid, image_id, last, restarts, ip))
                continue
            code = int(st.get("ExitCode") or 0)
            term = {
                "exitCode": code,
                "reason": "Completed" if code == 0 else "Error",
                "containerID": cid,
                "startedAt": _stamp(st.get("StartedAt")),
                "finishedAt": _stamp(st.get("FinishedAt")),
            }
            if policy == "Never" or (policy == "OnFailure" and code == 0):
                out.append(
                    ContainerStatus(name, image, {"terminated": term}, False, code, cid, image_id, last, restarts)
                )
                continue
            key = (uid, name)
            count, since = self._crash.get(key, (restarts, time.monotonic()))
            if key not in self._crash:
                self._crash[key] = (count, since)
            wait = min(60.0, self.backoff * (2 ** min(count, 6)))
            if time.monotonic() - since >= wait:
                container.start()
                self._crash[key] = (count + 1, time.monotonic())
                state = {"running": {"startedAt": _stamp()}}
                out.append(
                    ContainerStatus(name, image, state, True, None, cid, image_id, {"terminated": term}, count + 1, ip)
                )
            else:
                msg = (
                    f"back-off {int(wait)}s restarting failed container={name} "
                    f"pod={pod['metadata']['name']}_{pod['metadata']['namespace']}({uid})"
                )
                out.append(
                    ContainerStatus(
                        name,
                        image,
                        {"waiting": {"reason": "CrashLoopBackOff", "message": msg}},
                        False,
                        code,
                        cid,
                        image_id,
                        {"terminated": term},
                        count,
                    )
                )
        return out

    def logs(self, pod: Json, container: str, tail: int | None) -> bytes:
        c = self._containers(pod["metadata"]["uid"]).get(container)
        if c is None:
            return b""
        return bytes(c.logs(stdout=True, stderr=True, tail=tail if tail is not None else "all"))

    def exec_ok(self, pod: Json, container: str, command: list[str]) -> bool:
        c = self._containers(pod["metadata"]["uid"]).get(container)
        if c is None:
            return False
        try:
            result = c.exec_run(command)
        except self.errors.APIError:
            return False
        return int(result.exit_code or 0) == 0


def http_ok(ip: str, port: int, path: str, timeout: float) -> bool:
    """An HTTP readiness probe: 200-399 from http://ip:port/path."""
    try:
        with urllib.request.urlopen(f"http://{ip}:{port}{path}", timeout=timeout) as r:
            return bool(200 <= int(r.status) < 400)
    except Exception:
        return False


def tcp_ok(ip: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return True
    except OSError:
        return False


def _pull_error(image: str) -> str:
    ref = (
        image
        if "/" in image.split(":")[0] and "." in image.split("/")[0]
        else (f"docker.io/{image}" if "/" in image else f"docker.io/library/{image}")
    )
    if ":" not in ref.rsplit("/", 1)[-1] and "@" not in ref:
        ref += ":latest"
    return (
        f'failed to pull and unpack image "{ref}": failed to resolve reference "{ref}": failed to do request: '
        f'Head "https://{ref.split("/")[0]}/v2/": dial tcp: lookup {ref.split("/")[0]}: no such host'
    )


_DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
COPY entry.sh /entry.sh
COPY broken /etc/broken-charts
RUN ["/bin/busybox", "sh", "-c", "/bin/busybox --install -s /bin && mkdir -p /www /tmp && chmod 1777 /tmp \\
 && for f in ready ping readyz healthz livez health; do echo ok > /www/$f; done"]
LABEL {label}="_system"
ENTRYPOINT ["/bin/busybox", "sh", "/entry.sh"]
"""

_SERVE = """\
# A K3s system component's stand-in: answers its health paths until stopped.
for port in 8080 8181 9000 10250 8443 8000 9153; do httpd -f -p $port -h /www & done
trap 'exit 0' TERM INT
while :; do sleep 3600 & wait $!; done
"""

_HELM = """\
# klipper-helm's stand-in: "installs" the chart unless the lab marked it broken.
echo "+ helm_v3 install --namespace ${TARGET_NAMESPACE} ${NAME} ${CHART} --version ${VERSION}"
while read -r broken; do
  [ -n "$broken" ] || continue
  case "$CHART" in "$broken"|*/"$broken"|*/"$broken".tgz) \
    echo "Error: INSTALLATION FAILED: chart \\"$CHART\\" failed to install" >&2; exit 1;; esac
  [ "$NAME" = "$broken" ] && { echo "Error: INSTALLATION FAILED: release $NAME failed" >&2; exit 1; }
done < /etc/broken-charts
echo "NAME: ${NAME}"; echo "NAMESPACE: ${TARGET_NAMESPACE}"; echo "STATUS: deployed"; echo "REVISION: 1"
"""
