"""Compose's units (durations, byte sizes, cpus) as Kubernetes wants them, and valid Kubernetes names."""

from __future__ import annotations

import hashlib
import math
import re

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)")
_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_BYTES = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.I)
_POWER = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}
GiB = 1024**3


def seconds(value: object) -> float:
    """A Compose duration (``1m30s``, ``500ms``, ``10s``; a bare number is seconds) in seconds.

    Raises:
        ValueError: not a duration.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{value!r} is not a duration (e.g. 30s, 1m30s, 500ms)")
    return sum(float(n) * _SECONDS[u] for n, u in parts)


def whole_seconds(value: object, minimum: int = 1) -> int:
    """A duration rounded up to whole seconds, at least ``minimum`` (probes count in seconds)."""
    return max(minimum, math.ceil(seconds(value) - 1e-9))


def size_bytes(value: object) -> int:
    """A Compose byte size (``512m``, ``1gb``, ``2G``, ``1024``; binary units) in bytes.

    Raises:
        ValueError: not a size.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = _BYTES.match(str(value))
    if not m:
        raise ValueError(f"{value!r} is not a byte size (e.g. 512m, 1g)")
    return int(float(m.group(1)) * 1024 ** _POWER[m.group(2).lower()])


def quantity(nbytes: int) -> str:
    """Bytes as a Kubernetes quantity: the largest binary unit that divides it (``Gi``, ``Mi``, ``Ki``)."""
    for unit, power in (("Ti", 4), ("Gi", 3), ("Mi", 2), ("Ki", 1)):
        if nbytes and nbytes % 1024**power == 0:
            return f"{nbytes // 1024**power}{unit}"
    return str(nbytes)


def cpu(value: object) -> str:
    """Compose cpus (``0.5``, ``"2"``) as a Kubernetes CPU quantity (``500m``, ``2``).

    Raises:
        ValueError: not a number of cpus.
    """
    cpus = float(str(value))
    if cpus <= 0:
        raise ValueError(f"{value!r} is not a positive number of cpus")
    milli = round(cpus * 1000)
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def pvc_size(measured: int, headroom: float = 0.25) -> str:
    """A claim size for ``measured`` bytes: plus the headroom, rounded up to whole GiB, at least 1Gi."""
    return f"{max(1, math.ceil(measured * (1 + headroom) / GiB))}Gi"


def dns_label(name: str, *, limit: int = 63) -> str:
    """A valid Kubernetes name (RFC 1035 label: lower case, digits, ``-``; starts with a letter) for ``name``.

    ``_`` and ``.`` (and anything else) become ``-``; a leading digit gets an ``s-`` prefix; a name longer
    than ``limit`` is cut and ends with a short hash of the whole, so two long names stay distinct.
    """
    out = re.sub(r"[^a-z0-9-]+", "-", name.lower())
    out = re.sub(r"-{2,}", "-", out).strip("-") or "x"
    if not out[0].isalpha():
        out = f"s-{out}"
    if len(out) > limit:
        digest = hashlib.sha256(name.encode()).hexdigest()[:6]
        out = f"{out[: limit - 7].rstrip('-')}-{digest}"
    return out
