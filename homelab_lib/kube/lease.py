"""The run lock on the homelab's K3s: a ``coordination.k8s.io/v1`` Lease every run can see.

A run from a laptop, a systemd timer and a K3s CronJob all reach the same cluster, so one Lease
(``kube-system/homelab-run-<homelab>``) serialises them. Its ``holderIdentity`` says who holds it
(``user@host pid N run RUN``); ``leaseDurationSeconds`` how long it holds without renewal; a
background thread renews ``renewTime`` every third of that while the run lasts, so a crashed run's
Lease simply expires.

Acquire: create the Lease (201: ours; 409 AlreadyExists: someone was first), or, when the one there
is released (no holder) or expired (``renewTime + leaseDurationSeconds`` in the past), replace it
with our holder, sending the ``resourceVersion`` we read: the API server takes the write only if
nobody wrote in between (compare-and-swap), so of two runs that race for an expired Lease one gets
409 Conflict and loses. Renew and release are compare-and-swaps too: a run whose Lease was taken
over after it failed to renew in time learns it (``lost``) and never overwrites the new holder.

Expiry is judged by this machine's clock against ``renewTime``: keep the hosts' clocks in NTP sync
(a skew larger than the Lease's duration would let a run take over a live Lease).
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from homelab_lib.core.clock import SYSTEM, Clock
from homelab_lib.core.errors import K3sApiError, K3sError, LockHeld, mapped
from homelab_lib.kube.api import client_from, readyz
from homelab_lib.kube.client import KUBE_ERRORS, REQUEST_TIMEOUT_S, Kube
from homelab_lib.kube.objects import Key

API_VERSION = "coordination.k8s.io/v1"
NAMESPACE = "kube-system"
DEFAULT_DURATION_S = 60
MICRO = "%Y-%m-%dT%H:%M:%S.%fZ"  # Kubernetes MicroTime (RFC 3339, microseconds, UTC)

log = logging.getLogger(__name__)


def lease_name(homelab: str) -> str:
    """``homelab-run-<homelab>``, made a valid object name (lower case, ``-`` for anything else)."""
    safe = "".join(c if c.isalnum() else "-" for c in homelab.lower()).strip("-") or "default"
    return f"homelab-run-{safe}"[:63].rstrip("-")


def holder_identity(run: str) -> str:
    """Who a run is: ``user@host pid N run RUN`` (``uid N`` for a user without a name, as in a container)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid {os.getuid()}"
    return f"{user}@{socket.gethostname()} pid {os.getpid()} run {run}"


def micro(when: datetime) -> str:
    """A time as Kubernetes MicroTime."""
    return when.astimezone(UTC).strftime(MICRO)


def parse_time(text: Any) -> datetime | None:
    """A MicroTime or Time (as the client hands it back: a string or a datetime), in UTC; None when absent."""
    if isinstance(text, datetime):
        return text if text.tzinfo else text.replace(tzinfo=UTC)
    if not text:
        return None
    value = str(text).replace("Z", "+00:00")
    try:
        found = datetime.fromisoformat(value)
    except ValueError:
        return None
    return found if found.tzinfo else found.replace(tzinfo=UTC)


@dataclass(frozen=True)
class LeaseState:
    """A Lease as read: its holder ('' when released), until when it holds, its resourceVersion.

    Attributes:
        holder: ``holderIdentity`` ('' when released or never held).
        renewed: ``renewTime`` (or ``acquireTime``), None when absent.
        duration_s: ``leaseDurationSeconds``.
        transitions: ``leaseTransitions``.
        resource_version: the version a compare-and-swap sends.
    """

    holder: str
    renewed: datetime | None
    duration_s: int
    transitions: int
    resource_version: str

    @property
    def until(self) -> datetime | None:
        """When it expires unless renewed."""
        return self.renewed + timedelta(seconds=self.duration_s) if self.renewed else None

    def free(self, now: datetime) -> bool:
        """Released (no holder) or expired at ``now``."""
        return not self.holder or self.until is None or self.until <= now

    @classmethod
    def of(cls, obj: dict[str, Any]) -> LeaseState:
        spec = obj.get("spec") or {}
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            renewed=parse_time(spec.get("renewTime") or spec.get("acquireTime")),
            duration_s=int(spec.get("leaseDurationSeconds") or 0),
            transitions=int(spec.get("leaseTransitions") or 0),
            resource_version=str((obj.get("metadata") or {}).get("resourceVersion") or ""),
        )


class RunLease:
    """One homelab's run Lease on a cluster: acquire, renew (a thread), release.

    Args:
        kube: the cluster.
        homelab: the inventory's name (one Lease per homelab).
        identity: this run's holder identity (:func:`holder_identity`).
        duration_s: how long the Lease holds without renewal (a crashed run's Lease frees after this).
        namespace: the Lease's namespace.
        clock: the wall clock expiry and renewTime are taken from.
    """

    def __init__(
        self,
        kube: Kube,
        homelab: str,
        identity: str,
        *,
        duration_s: int = DEFAULT_DURATION_S,
        namespace: str = NAMESPACE,
        clock: Clock = SYSTEM,
    ) -> None:
        self.kube = kube
        self.homelab = homelab
        self.name = lease_name(homelab)
        self.identity = identity
        self.duration_s = max(int(duration_s), 1)
        self.namespace = namespace
        self.clock = clock
        self.where = f"{kube.where}: Lease {namespace}/{self.name}"
        self._rv = ""
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.renewals = 0
        self.why = ""  # why the Lease was lost, when it was

    @property
    def lost(self) -> bool:
        """The Lease was taken over (we failed to renew before it expired)."""
        return self._lost.is_set()

    def _res(self) -> Any:
        return self.kube.resource(API_VERSION, "Lease")

    def read(self) -> tuple[LeaseState, dict[str, Any]] | None:
        """The Lease now (state, object), or None when there is none."""
        obj = self.kube.get(Key(API_VERSION, "Lease", self.namespace, self.name))
        return (LeaseState.of(obj), obj) if obj is not None else None

    def _body(self, now: datetime, transitions: int, acquired: datetime, rv: str = "") -> dict[str, Any]:
        meta: dict[str, Any] = {
            "name": self.name,
            "namespace": self.namespace,
            "labels": {"app.kubernetes.io/managed-by": "homelab"},
        }
        if rv:
            meta["resourceVersion"] = rv
        return {
            "apiVersion": API_VERSION,
            "kind": "Lease",
            "metadata": meta,
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self.duration_s,
                "acquireTime": micro(acquired),
                "renewTime": micro(now),
                "leaseTransitions": transitions,
            },
        }

    def _write(self, body: dict[str, Any], *, create: bool) -> dict[str, Any] | None:
        """Create or replace (compare-and-swap); None when the API answers 409 (someone else wrote first)."""
        try:
            with mapped(KUBE_ERRORS, where=self.where):
                if create:
                    done = self._res().create(body=body, namespace=self.namespace, _request_timeout=REQUEST_TIMEOUT_S)
                else:
                    done = self._res().replace(
                        body=body, name=self.name, namespace=self.namespace, _request_timeout=REQUEST_TIMEOUT_S
                    )
        except K3sApiError as e:
            if e.status == 409:
                return None
            raise
        return dict(done.to_dict())

    def held_error(self, state: LeaseState) -> LockHeld:
        until = state.until.isoformat(timespec="seconds") if state.until else "unknown"
        return LockHeld(
            f"another run against homelab '{self.homelab}' holds the run Lease: {state.holder}, "
            f"until {until} unless renewed",
            where=self.where,
            hint="wait for it to finish (runs against one homelab never overlap); a run that crashed frees it "
            f"within {state.duration_s} s",
        )

    def acquire(self) -> LeaseState:
        """Take the Lease: create it, or take over a released or expired one by compare-and-swap.

        Raises:
            LockHeld: another run holds it (and it has not expired), or won the race for it.
            K3sError: the API cannot be reached or refuses (not a 409).
        """
        now = self.clock.now()
        found = self.read()
        if found is None:
            done = self._write(self._body(now, 0, now), create=True)
        else:
            state, _ = found
            if not state.free(now):
                raise self.held_error(state)
            transitions = state.transitions + (1 if state.holder != self.identity else 0)
            done = self._write(self._body(now, transitions, now, state.resource_version), create=False)
        if done is None:  # 409: another run created or took it over between our read and our write
            again = self.read()
            if again is None:
                raise LockHeld(
                    f"another run against homelab '{self.homelab}' raced for the run Lease and it is gone again",
                    where=self.where,
                    hint="run again",
                )
            raise self.held_error(again[0])
        mine = LeaseState.of(done)
        self._rv = mine.resource_version
        self._lost.clear()
        return mine

    def renew(self) -> bool:
        """Move renewTime to now (compare-and-swap on the version we last wrote); False when lost.

        Raises:
            K3sError: the API cannot be reached (the caller retries until the Lease would expire).
        """
        found = self.read()
        if found is None:
            self.why = "the run Lease is gone (deleted, or the cluster was reset)"
            self._lost.set()
            return False
        state, obj = found
        if state.holder != self.identity or state.resource_version != self._rv:
            self.why = f"the run Lease was taken over ({state.holder or 'released'})"
            self._lost.set()
            return False
        acquired = parse_time((obj.get("spec") or {}).get("acquireTime")) or self.clock.now()
        done = self._write(self._body(self.clock.now(), state.transitions, acquired, self._rv), create=False)
        if done is None:
            self.why = "the run Lease was written by another run at the same moment (409)"
            self._lost.set()
            return False
        self._rv = LeaseState.of(done).resource_version
        self.renewals += 1
        return True

    def release(self) -> None:
        """Give the Lease up (holder cleared, compare-and-swap); a Lease taken over by another run is left alone."""
        with contextlib.suppress(K3sError):
            found = self.read()
            if found is None or found[0].holder != self.identity or found[0].resource_version != self._rv:
                return
            state, _ = found
            now = self.clock.now()
            body = self._body(now, state.transitions, state.renewed or now, self._rv)
            body["spec"].pop("holderIdentity")
            body["spec"].pop("acquireTime")
            self._write(body, create=False)

    def _renew_loop(self) -> None:
        every = self.duration_s / 3
        expires = self.clock.monotonic() + self.duration_s
        while not self._stop.wait(every):
            try:
                if not self.renew():
                    log.error("%s: %s; this run holds it no more", self.where, self.why)
                    return
                expires = self.clock.monotonic() + self.duration_s
            except K3sError as e:
                if self.clock.monotonic() >= expires:
                    self._lost.set()
                    log.error("%s: could not renew the run Lease before it expired: %s", self.where, e)
                    return
                log.warning("%s: renewing the run Lease failed (will retry): %s", self.where, e)

    @contextlib.contextmanager
    def held(self) -> Iterator[LeaseState]:
        """Hold the Lease for the block: acquire, renew in the background, release at the end.

        Raises:
            LockHeld: another run holds it.
        """
        state = self.acquire()
        self._stop.clear()
        self._thread = threading.Thread(target=self._renew_loop, name=f"lease-{self.name}", daemon=True)
        self._thread.start()
        try:
            yield state
        finally:
            self._stop.set()
            self._thread.join(timeout=REQUEST_TIMEOUT_S + 5)
            self.release()


def open_lease(
    kubeconfig: Path,
    homelab: str,
    run: str,
    *,
    duration_s: int = DEFAULT_DURATION_S,
    namespace: str = NAMESPACE,
    clock: Clock = SYSTEM,
) -> RunLease:
    """The run Lease of a homelab on the cluster of a kubeconfig.

    Raises:
        K3sUnreachable: the API does not answer (refused, timed out: a quick probe of /readyz first).
        K3sError: the kubeconfig cannot be used.
    """
    where = f"K3s ({kubeconfig})"
    probe = client_from(kubeconfig, where=where)
    try:
        readyz(probe, where=where)  # a cluster that does not answer fails here, in seconds, not in discovery
    finally:
        probe.close()  # type: ignore[no-untyped-call]
    kube = Kube(kubeconfig, where=where)
    return RunLease(kube, homelab, holder_identity(run), duration_s=duration_s, namespace=namespace, clock=clock)


__all__ = [
    "API_VERSION",
    "DEFAULT_DURATION_S",
    "NAMESPACE",
    "LeaseState",
    "RunLease",
    "holder_identity",
    "lease_name",
    "micro",
    "open_lease",
    "parse_time",
]
