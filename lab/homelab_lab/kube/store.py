"""The object store: every object in memory, written through to SQLite, with a watch history.

One cluster-wide ``resourceVersion`` counter orders every write, as etcd's revision does.
Objects handed out are shared, never to be mutated: writers build a new dict and ``put`` it.
The database is ``<data-dir>/server/db/state.db`` (K3s's kine keeps its SQLite there too).
"""

from __future__ import annotations

import collections
import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

List = list

Json = dict[str, Any]
HISTORY = 50_000


@dataclass(frozen=True)
class Event:
    """One change: ``ADDED``, ``MODIFIED`` or ``DELETED`` of an object, at a resourceVersion."""

    rv: int
    key: str
    type: str
    obj: Json

    @property
    def namespace(self) -> str:
        return str(self.obj.get("metadata", {}).get("namespace") or "")


class Store:
    """Objects by kind key (``group/plural``), namespace and name; thread-safe."""

    def __init__(self, path: Path | None) -> None:
        self._lock = threading.Condition(threading.RLock())
        self._objs: dict[str, dict[tuple[str, str], Json]] = collections.defaultdict(dict)
        self._events: collections.deque[Event] = collections.deque(maxlen=HISTORY)
        self._rv = 0
        self._db: sqlite3.Connection | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS kv (kind TEXT, ns TEXT, name TEXT, rv INTEGER, value TEXT,"
                " PRIMARY KEY (kind, ns, name))"
            )
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")
            for kind, ns, name, value in self._db.execute("SELECT kind, ns, name, value FROM kv"):
                self._objs[kind][(ns, name)] = json.loads(value)
            row = self._db.execute("SELECT value FROM meta WHERE name = 'rv'").fetchone()
            self._rv = int(row[0]) if row else 0
        self._oldest = self._rv

    @property
    def lock(self) -> threading.Condition:
        """The store's lock (re-entrant): hold it to read-modify-write atomically."""
        return self._lock

    @property
    def rv(self) -> int:
        return self._rv

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def get(self, key: str, namespace: str, name: str) -> Json | None:
        with self._lock:
            return self._objs[key].get((namespace, name))

    def list(self, key: str, namespace: str | None = None) -> list[Json]:
        """Objects of a kind (in one namespace when given), sorted by namespace and name."""
        with self._lock:
            found = self._objs[key]
            if namespace is None:
                return [found[k] for k in sorted(found)]
            return [found[k] for k in sorted(found) if k[0] == namespace]

    def keys(self) -> List[str]:
        with self._lock:
            return [k for k, v in self._objs.items() if v]

    def next_rv(self) -> int:
        """Reserve the next resourceVersion (the caller writes it into the object it puts)."""
        with self._lock:
            self._rv += 1
            return self._rv

    def put(self, key: str, obj: Json, event: str) -> None:
        """Store obj (whose metadata.resourceVersion the caller set from :meth:`next_rv`)."""
        meta = obj["metadata"]
        ident = (str(meta.get("namespace") or ""), str(meta["name"]))
        rv = int(meta["resourceVersion"])
        with self._lock:
            self._objs[key][ident] = obj
            if self._db is not None:
                self._db.execute(
                    "INSERT OR REPLACE INTO kv VALUES (?, ?, ?, ?, ?)",
                    (key, ident[0], ident[1], rv, json.dumps(obj, separators=(",", ":"))),
                )
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('rv', ?)", (str(self._rv),))
            self._record(Event(rv, key, event, obj))

    def remove(self, key: str, obj: Json) -> None:
        """Remove obj; the DELETED event carries obj (with its final resourceVersion)."""
        meta = obj["metadata"]
        ident = (str(meta.get("namespace") or ""), str(meta["name"]))
        with self._lock:
            self._objs[key].pop(ident, None)
            if self._db is not None:
                self._db.execute("DELETE FROM kv WHERE kind = ? AND ns = ? AND name = ?", (key, *ident))
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('rv', ?)", (str(self._rv),))
            self._record(Event(int(meta["resourceVersion"]), key, "DELETED", obj))

    def _record(self, event: Event) -> None:
        if len(self._events) == self._events.maxlen:
            self._oldest = self._events[0].rv
        self._events.append(event)
        self._lock.notify_all()

    def too_old(self, rv: int) -> bool:
        """True when events after rv are no longer all kept (the watch must re-list: 410 Gone)."""
        with self._lock:
            return rv < self._oldest

    def events_after(self, rv: int) -> Iterator[Event]:
        """The kept events with a resourceVersion above rv, oldest first (a snapshot)."""
        with self._lock:
            if not self._events or self._events[-1].rv <= rv:
                return iter(())
            # Binary search the deque for the first event after rv.
            lo, hi = 0, len(self._events)
            while lo < hi:
                mid = (lo + hi) // 2
                if self._events[mid].rv <= rv:
                    lo = mid + 1
                else:
                    hi = mid
            return iter([self._events[i] for i in range(lo, len(self._events))])

    def wait(self, after_rv: int, timeout: float) -> bool:
        """Block until an event above after_rv exists or timeout passes; True when one exists."""
        with self._lock:
            return self._lock.wait_for(lambda: bool(self._events) and self._events[-1].rv > after_rv, timeout)
