"""The one clock of the library: monotonic time, wall time and sleep, as one injectable object.

Every function that waits, times or stamps takes a :class:`Clock` (default
:data:`SYSTEM`): Proxmox task waits, Compose health waits and probes, the
runner's start time and duration. A test passes its own (a clock whose
``sleep`` moves time on at once), so no test depends on real time.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """Time for waiting, timing and stamping."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for timeouts and durations)."""
        ...

    def now(self) -> datetime:
        """The current wall time, timezone-aware UTC (for stamps and uptimes)."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait this long."""
        ...


class SystemClock:
    """The real clock: :func:`time.monotonic`, :func:`datetime.now` in UTC, :func:`time.sleep`."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM: Clock = SystemClock()

__all__ = ["SYSTEM", "Clock", "SystemClock"]
