"""The snapshot metadata store: one sqlite3 database under the root, every mutation one transaction.

Each snapshot has a numeric id (its directory name); keys are opaque strings and never touch the
filesystem. Parents are held by id, so a committed parent keeps its children whatever its name.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import IntEnum

from ...errors import InvalidSnapshotRequest, SnapshotExists, SnapshotNotFound

#: containerd's limit on one label (key and value together).
LABEL_MAX = 4096

_SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    key      TEXT NOT NULL UNIQUE,
    parent   INTEGER REFERENCES snapshots(id),
    kind     INTEGER NOT NULL,
    created  INTEGER NOT NULL,
    updated  INTEGER NOT NULL,
    labels   TEXT NOT NULL DEFAULT '{}',
    size     INTEGER NOT NULL DEFAULT 0,
    inodes   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots(parent);
"""


class Kind(IntEnum):
    """containerd's snapshot kinds, with the API's numbers."""

    UNKNOWN = 0
    VIEW = 1
    ACTIVE = 2
    COMMITTED = 3

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass
class Snapshot:
    """One row: what Stat reports, plus the id and the parent chain's ids."""

    id: int
    key: str
    kind: Kind
    created: int  # ns since the epoch
    updated: int
    labels: dict[str, str] = field(default_factory=dict)
    parent_id: int | None = None
    parent: str = ""  # the parent's key
    size: int = 0
    inodes: int = 0


def check_labels(labels: dict[str, str]) -> None:
    """containerd's rule: a label's key and value together fit in 4096 bytes."""
    for k, v in labels.items():
        if len(k.encode()) + len(v.encode()) > LABEL_MAX:
            raise InvalidSnapshotRequest(f"label {k[:64]!r}: key and value exceed {LABEL_MAX} bytes")


class MetaStore:
    """sqlite3 metadata; ``with store.tx() as t:`` gives a write transaction (BEGIN IMMEDIATE)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a commit survives a crash of this process (no fsync per transaction); a power cut
        # may lose the last transactions, never consistency, and Cleanup then removes their directories.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def tx(self) -> Iterator[MetaStore]:
        """One atomic transaction; rolled back if the block raises. Serialises threads."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[MetaStore]:
        with self._lock:
            yield self

    # -- queries ---------------------------------------------------------------------------------
    _COLS = ("SELECT s.id, s.key, s.kind, s.created, s.updated, s.labels, s.parent, COALESCE(p.key, ''), "
             "s.size, s.inodes FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent")

    @staticmethod
    def _row(r: tuple) -> Snapshot:
        return Snapshot(id=r[0], key=r[1], kind=Kind(r[2]), created=r[3], updated=r[4], labels=json.loads(r[5]),
                        parent_id=r[6], parent=r[7], size=r[8], inodes=r[9])

    def find(self, key: str) -> Snapshot | None:
        r = self._db.execute(self._COLS + " WHERE s.key = ?", (key,)).fetchone()
        return self._row(r) if r else None

    def get(self, key: str) -> Snapshot:
        snap = self.find(key)
        if snap is None:
            raise SnapshotNotFound(f"snapshot {key!r} not found")
        return snap

    def by_id(self, snap_id: int) -> Snapshot:
        r = self._db.execute(self._COLS + " WHERE s.id = ?", (snap_id,)).fetchone()
        if r is None:
            raise SnapshotNotFound(f"snapshot id {snap_id} not found")
        return self._row(r)

    def all(self) -> list[Snapshot]:
        return [self._row(r) for r in self._db.execute(self._COLS + " ORDER BY s.id")]

    def ids(self) -> set[int]:
        return {r[0] for r in self._db.execute("SELECT id FROM snapshots")}

    def chain(self, snap: Snapshot) -> list[int]:
        """Ids of ``snap``'s ancestors, nearest first (not ``snap`` itself)."""
        out: list[int] = []
        cur = snap.parent_id
        while cur is not None:
            out.append(cur)
            r = self._db.execute("SELECT parent FROM snapshots WHERE id = ?", (cur,)).fetchone()
            cur = r[0] if r else None
        return out

    def children(self, snap_id: int) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT key FROM snapshots WHERE parent = ? ORDER BY id", (snap_id,))]

    # -- mutations (inside tx) ---------------------------------------------------------------------
    def insert(self, key: str, kind: Kind, parent_id: int | None, labels: dict[str, str]) -> Snapshot:
        if self.find(key) is not None:
            raise SnapshotExists(f"snapshot {key!r} already exists")
        now = time.time_ns()
        cur = self._db.execute(
            "INSERT INTO snapshots (key, parent, kind, created, updated, labels) VALUES (?, ?, ?, ?, ?, ?)",
            (key, parent_id, int(kind), now, now, json.dumps(labels)))
        return self.by_id(int(cur.lastrowid or 0))

    def commit(self, snap: Snapshot, name: str, labels: dict[str, str], size: int, inodes: int) -> Snapshot:
        """Turn active ``snap`` into committed ``name`` (same id, so the same directory)."""
        if self.find(name) is not None:
            raise SnapshotExists(f"snapshot {name!r} already exists")
        now = time.time_ns()
        self._db.execute("UPDATE snapshots SET key = ?, kind = ?, created = ?, updated = ?, labels = ?, size = ?, "
                         "inodes = ? WHERE id = ?",
                         (name, int(Kind.COMMITTED), now, now, json.dumps(labels), size, inodes, snap.id))
        return self.by_id(snap.id)

    def set_labels(self, snap: Snapshot, labels: dict[str, str]) -> Snapshot:
        self._db.execute("UPDATE snapshots SET labels = ?, updated = ? WHERE id = ?",
                         (json.dumps(labels), time.time_ns(), snap.id))
        return self.by_id(snap.id)

    def delete(self, snap: Snapshot) -> None:
        self._db.execute("DELETE FROM snapshots WHERE id = ?", (snap.id,))
