r"""What a conversion gives back: the manifests, a report line per Compose key, a volume plan per mount.

:class:`Conversion` is one converted service (its objects in apply order, its :class:`ReportLine`\s
and :class:`VolumePlan`\s) with its renderings (YAML, tables, Markdown); :func:`report_frame` and
:func:`report_markdown` show several at once, :func:`redacted` hides every Secret value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import yaml

from homelab_lib.core.errors import NotFound
from homelab_lib.kube.objects import KubeObject

if TYPE_CHECKING:
    import pandas as pd

Status = Literal["mapped", "approximated", "not mapped"]
VolumeKind = Literal["pvc-copied", "hostPath", "emptyDir"]


@dataclass(frozen=True)
class ReportLine:
    """What became of one key of a Compose service.

    Attributes:
        service: the Compose service.
        key: the key path in the service (``ports[0]``, ``healthcheck.start_period``).
        status: mapped, approximated (works, but behaves differently) or not mapped.
        detail: what it became, or why it could not be mapped; never a secret value.
        line: its line in the compose file (0 when unknown).
    """

    service: str
    key: str
    status: Status
    detail: str
    line: int = 0


@dataclass(frozen=True)
class VolumePlan:
    """One volume, bind mount or tmpfs of a service, as the pod gets it: what the data copy must fill.

    Attributes:
        volume: the pod's volume name.
        container_path: where the container sees it.
        kind: ``pvc-copied`` (a PVC the data copy fills from ``source``), ``hostPath`` (a folder of the
            K3s node, used in place) or ``emptyDir`` (nothing to copy).
        source: the Compose volume's name, or the bind's host path ('' for tmpfs and anonymous volumes).
        source_kind: ``volume``, ``bind``, ``tmpfs`` or ``anonymous``.
        docker_volume: the Docker volume that holds the data (``<project>_<name>`` or its ``name:``); '' for binds.
        pvc: the claim's name ('' unless pvc-copied).
        size: the claim's size ('' unless pvc-copied).
        size_from: how the size was chosen: ``sizes``, ``measured``, ``default``.
        read_only: mounted read-only.
    """

    volume: str
    container_path: str
    kind: VolumeKind
    source: str
    source_kind: Literal["volume", "bind", "tmpfs", "anonymous"]
    docker_volume: str = ""
    pvc: str = ""
    size: str = ""
    size_from: str = ""
    read_only: bool = False


@dataclass(frozen=True, repr=False)
class Conversion:
    """One Compose service converted.

    Attributes:
        service: the Compose service's name.
        k8s_name: its Kubernetes name (the workload, its Service, the prefix of its other objects).
        namespace: the namespace of every object.
        objects: the manifests, in apply order (Namespace, Secrets, ConfigMaps, PVCs, Services, workload, Ingress).
        report: every key of the service, and what became of it.
        volumes: what the pod mounts, and what the data copy must fill.
    """

    service: str
    k8s_name: str
    namespace: str
    objects: list[KubeObject] = field(repr=False)  # Secrets hold values: never in a repr a notebook shows
    report: list[ReportLine] = field(repr=False)
    volumes: list[VolumePlan] = field(repr=False)

    def __repr__(self) -> str:
        kinds = ", ".join(f"{o['kind']}/{o['metadata']['name']}" for o in self.objects)
        counts = ", ".join(f"{len(self.lines(s))} {s}" for s in ("mapped", "approximated", "not mapped"))
        return f"Conversion({self.service!r} -> {self.namespace}/{self.k8s_name}: {kinds}; {counts})"

    def lines(self, status: Status) -> list[ReportLine]:
        """The report's lines of one status."""
        return [r for r in self.report if r.status == status]

    @property
    def pvcs(self) -> list[VolumePlan]:
        """The claims the data copy fills."""
        return [v for v in self.volumes if v.kind == "pvc-copied"]

    def object(self, kind: str, name: str | None = None) -> KubeObject:
        """The first object of a kind (and name).

        Raises:
            NotFound: there is none.
        """
        for obj in self.objects:
            if obj["kind"] == kind and (name is None or obj["metadata"]["name"] == name):
                return obj
        known = [f"{o['kind']}/{o['metadata']['name']}" for o in self.objects]
        raise NotFound(f"{kind}/{name or '*'}", what="object", known=known, where=f"conversion of {self.service}")

    def yaml(self, *, redact: bool = False) -> str:
        """The objects as one YAML stream; ``redact`` replaces every Secret value with ``<redacted>``."""
        objs = redacted(self.objects) if redact else self.objects
        return yaml.dump_all(objs, Dumper=_PlainDumper, sort_keys=False, default_flow_style=False, width=1000)

    def volumes_frame(self) -> pd.DataFrame:
        """The volume plans as a table: what the pod mounts, and what the data copy fills from where."""
        import pandas as pd

        cols = ["volume", "container_path", "kind", "source", "source_kind", "docker_volume", "pvc", "size",
                "size_from", "read_only"]  # fmt: skip
        return pd.DataFrame([vars(v) for v in self.volumes], columns=cols)

    def report_frame(self) -> pd.DataFrame:
        """The report as a table: service, key, status, detail, line."""
        return report_frame([self])

    def markdown(self) -> str:
        """The report of this service as a Markdown section."""
        counts = {s: len(self.lines(s)) for s in ("mapped", "approximated", "not mapped")}
        out = [
            f"## {self.service} -> {self.k8s_name} (namespace {self.namespace})",
            "",
            ", ".join(f"{n} {s}" for s, n in counts.items()),
            "",
            "| key | line | status | detail |",
            "| --- | --- | --- | --- |",
        ]
        for r in self.report:
            detail = r.detail.replace("|", "\\|").replace("\n", " ")
            out.append(f"| `{r.key}` | {r.line or ''} | {r.status} | {detail} |")
        if self.volumes:
            out += [
                "",
                "| volume | kind | source | container path | claim | size |",
                "| --- | --- | --- | --- | --- | --- |",
            ]
            for v in self.volumes:
                size = f"{v.size} ({v.size_from})" if v.size else ""
                out.append(
                    f"| {v.volume} | {v.kind} | {v.source or '-'} | {v.container_path} | {v.pvc or '-'} | {size} |"
                )
        return "\n".join(out) + "\n"


class _PlainDumper(yaml.SafeDumper):
    """Every object written out in full: no ``&id001`` anchors where two probes share one command."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def redacted(objs: Sequence[KubeObject]) -> list[KubeObject]:
    """The objects with every Secret's values replaced by ``<redacted>`` (for showing, never applying)."""
    out = []
    for obj in objs:
        if obj.get("kind") == "Secret":
            obj = {**obj, **{k: dict.fromkeys(obj[k], "<redacted>") for k in ("data", "stringData") if k in obj}}
        out.append(obj)
    return out


def report_frame(conversions: Sequence[Conversion]) -> pd.DataFrame:
    """Every conversion's report as one table: service, k8s_name, key, status, detail, line."""
    import pandas as pd

    rows = [{"k8s_name": c.k8s_name, **vars(r)} for c in conversions for r in c.report]
    cols = ["service", "k8s_name", "key", "status", "detail", "line"]
    return pd.DataFrame(rows, columns=cols)


def report_markdown(conversions: Sequence[Conversion], *, source: str = "") -> str:
    """``report.md``: a summary table, then one section per service."""
    out = [f"# Conversion report{f': {source}' if source else ''}", ""]
    out += ["| service | kubernetes name | objects | mapped | approximated | not mapped |"]
    out += ["| --- | --- | --- | --- | --- | --- |"]
    for c in conversions:
        counts = [len(c.lines(s)) for s in ("mapped", "approximated", "not mapped")]
        out.append(f"| {c.service} | {c.k8s_name} | {len(c.objects)} | " + " | ".join(map(str, counts)) + " |")
    out.append("")
    return "\n".join(out) + "\n" + "\n".join(c.markdown() for c in conversions)


__all__ = [
    "Conversion",
    "ReportLine",
    "Status",
    "VolumeKind",
    "VolumePlan",
    "redacted",
    "report_frame",
    "report_markdown",
]
