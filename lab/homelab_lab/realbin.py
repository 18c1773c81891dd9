"""Lab images of the monitoring stack made of the REAL programs: Debian's Prometheus, Alertmanager, node-exporter.

Every other catalog service runs in the lab as a stand-in (:mod:`homelab_lab.standin_build`).
These three are the real servers: the machine's Debian binaries (``prometheus`` 2.42,
``prometheus-alertmanager``, ``prometheus-node-exporter``), each in an image ``FROM scratch`` with

- busybox (static; ``busybox --install -s /bin``: ``sh`` and ``wget`` for the catalog's healthchecks),
- the binary at the path the real image has it (``/bin/prometheus``, ``/bin/alertmanager``,
  ``/bin/node_exporter``),
- the shared libraries ``ldd`` names and the dynamic loader, at the paths ``ldd`` gives,
- ``/etc/passwd`` with ``nobody``, the data folder owned by it, and a first config file,

and the real image's ``ENTRYPOINT``, ``CMD``, ``USER nobody``, ``WORKDIR``, ``EXPOSE`` (see
:data:`PROGRAMS`), tagged under the catalog's image name. Debian's Prometheus is 2.42 while the
catalog pins 3.x: runbook 07 renders configs both accept.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from homelab_lab.errors import LabError
from homelab_lab.standin_build import BUSYBOX, is_static_elf

LDD_LINE = re.compile(r"^\s*(?:\S+\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)\s*$")
NOBODY = 65534
HINT = "apt-get install prometheus prometheus-alertmanager prometheus-node-exporter busybox-static"


@dataclass(frozen=True)
class Program:
    """One real program and the image layout of its upstream image.

    Attributes:
        source: the Debian binary on this machine.
        path: where the upstream image has it (its ENTRYPOINT).
        cmd: the upstream image's CMD.
        workdir: its WORKDIR ('' for none); made and owned by nobody.
        ports: its EXPOSE.
        config: (path, text) of a first config file, as the upstream image ships one.
        dirs: more folders owned by nobody.
        data: folders of this machine copied as they are (Debian's Alertmanager reads its templates
            from /usr/share/prometheus/alertmanager; Prometheus its web assets from /usr/share/prometheus/web).
    """

    source: str
    path: str
    cmd: tuple[str, ...] = ()
    workdir: str = ""
    ports: tuple[int, ...] = ()
    config: tuple[str, str] | None = None
    dirs: tuple[str, ...] = field(default=())
    data: tuple[str, ...] = field(default=())


PROGRAMS: dict[str, Program] = {
    "prometheus": Program(
        "/usr/bin/prometheus",
        "/bin/prometheus",
        ("--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"),
        "/prometheus",
        (9090,),
        (
            "/etc/prometheus/prometheus.yml",
            "scrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: ['localhost:9090']\n",
        ),
        ("/etc/prometheus",),
        ("/usr/share/prometheus/web",),
    ),
    "alertmanager": Program(
        "/usr/bin/prometheus-alertmanager",
        "/bin/alertmanager",
        ("--config.file=/etc/alertmanager/alertmanager.yml", "--storage.path=/alertmanager"),
        "/alertmanager",
        (9093,),
        ("/etc/alertmanager/alertmanager.yml", "route: {receiver: none}\nreceivers: [{name: none}]\n"),
        ("/etc/alertmanager",),
        ("/usr/share/prometheus/alertmanager",),
    ),
    "node-exporter": Program("/usr/bin/prometheus-node-exporter", "/bin/node_exporter", ports=(9100,)),
}


def libraries(binary: str) -> list[str]:
    """The shared libraries and loader ``ldd`` names for a binary (absolute paths, in ldd's order).

    Raises:
        LabError: ldd fails (not a dynamic ELF, or ldd missing).
    """
    ldd = shutil.which("ldd")
    if not ldd:
        raise LabError("ldd is not installed", where="lab images", hint="apt-get install libc-bin")
    done = subprocess.run([ldd, binary], capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        if "not a dynamic executable" in done.stdout + done.stderr:
            return []
        raise LabError(f"ldd {binary} failed: {done.stderr.strip()}", where="lab images", hint=HINT)
    found = []
    for line in done.stdout.splitlines():
        m = LDD_LINE.match(line)
        if m:
            found.append(m.group(1))
        elif "not found" in line:
            raise LabError(f"{binary} needs a library this machine lacks: {line.strip()}", where="lab images")
    return found


def dockerfile(name: str, program: Program, labels: dict[str, str] | None = None) -> str:
    """The image's Dockerfile: the rootfs copied ``FROM scratch``, then the upstream image's settings."""
    owned = [d for d in (program.workdir, *program.dirs) if d]
    setup = [
        "set -e",
        "/bin/busybox --install -s /bin",
        "/bin/busybox mkdir -p /tmp /etc " + " ".join(owned),
        "chmod 1777 /tmp",
        "echo root:x:0:0:root:/root:/bin/sh >/etc/passwd",
        f"echo nobody:x:{NOBODY}:{NOBODY}:nobody:/home:/bin/false >>/etc/passwd",
        f"printf 'root:x:0:\\nnobody:x:{NOBODY}:\\n' >/etc/group",
    ]
    if owned:
        setup.append(f"chown -R {NOBODY}:{NOBODY} " + " ".join(owned))
    lines = [
        "FROM scratch",
        "COPY rootfs/ /",
        "RUN " + json.dumps(["/bin/busybox", "sh", "-c", "; ".join(setup)]),
        f"LABEL homelab.lab.realbin={json.dumps(name)}"
        + "".join(f" {k}={json.dumps(v)}" for k, v in (labels or {}).items()),
        f"USER {NOBODY}",
    ]
    if program.workdir:
        lines.append(f"WORKDIR {program.workdir}")
        lines.append(f'VOLUME ["{program.workdir}"]')
    if program.ports:
        lines.append("EXPOSE " + " ".join(f"{p}/tcp" for p in program.ports))
    lines.append("ENTRYPOINT " + json.dumps([program.path]))
    if program.cmd:
        lines.append("CMD " + json.dumps(list(program.cmd)))
    return "\n".join(lines) + "\n"


def image_files(
    name: str, *, busybox: Path = BUSYBOX, labels: dict[str, str] | None = None
) -> dict[str, tuple[bytes, int]]:
    """The build context of a real program's image: ``Dockerfile`` and ``rootfs/...``, name -> (content, mode).

    Raises:
        LabError: the program, a library or busybox is missing.
    """
    program = PROGRAMS[name]
    source = Path(program.source)
    if not source.is_file():
        raise LabError(f"{source} is missing (the lab runs the real {name})", where="lab images", hint=HINT)
    try:
        box = busybox.read_bytes()
    except OSError:
        raise LabError(f"{busybox} is missing", where="lab images", hint="apt-get install busybox-static") from None
    if not is_static_elf(box):
        raise LabError(f"{busybox} is not statically linked", where="lab images", hint="apt-get install busybox-static")
    files: dict[str, tuple[bytes, int]] = {
        "Dockerfile": (dockerfile(name, program, labels).encode(), 0o644),
        "rootfs/bin/busybox": (box, 0o755),
        f"rootfs{program.path}": (source.read_bytes(), 0o755),
    }
    for lib in libraries(program.source):
        files[f"rootfs{lib}"] = (Path(lib).read_bytes(), 0o755)
    for folder in program.data:
        for found in sorted(Path(folder).rglob("*")):
            if found.is_file():
                files[f"rootfs{found}"] = (found.read_bytes(), 0o755 if found.stat().st_mode & 0o111 else 0o644)
    if program.config:
        where, text = program.config
        files[f"rootfs{where}"] = (text.encode(), 0o644)
    return files
