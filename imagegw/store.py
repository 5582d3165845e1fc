"""The image database: one row per (system, type, reference), behind a small repository layer.

Embedded SQLite by default (WAL, one writer at a time); the class below is the whole
interface, so a server database can replace it later. States: INIT -> PULLING -> CONVERSION
-> READY, or FAILURE with a message. `claim` is how concurrent pulls of one image become one:
only the caller that moves a row out of a finished state starts a pull.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable

import msgspec

ACTIVE = ("INIT", "PULLING", "CONVERSION")
STATES = (*ACTIVE, "READY", "FAILURE")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    system TEXT NOT NULL, itype TEXT NOT NULL, key TEXT NOT NULL,
    tag TEXT NOT NULL, id TEXT, status TEXT NOT NULL, status_message TEXT NOT NULL DEFAULT '',
    progress TEXT NOT NULL DEFAULT '{}', last_pull REAL NOT NULL DEFAULT 0,
    updated REAL NOT NULL, user_acl TEXT NOT NULL DEFAULT '[]', group_acl TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (system, itype, key)
)"""
_ADDED = {"user_acl": "TEXT NOT NULL DEFAULT '[]'", "group_acl": "TEXT NOT NULL DEFAULT '[]'"}


class Row(msgspec.Struct, kw_only=True):
    system: str
    itype: str
    key: str
    tag: str
    id: str | None
    status: str
    status_message: str
    progress: dict
    last_pull: float
    updated: float
    user_acl: list[int] = []   # private image: uids that may see it (empty with group_acl: public)
    group_acl: list[int] = []


class Store:
    """Image rows in SQLite; safe to share between the service's threads."""

    def __init__(self, path: str | Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(_SCHEMA)
            have = {r[1] for r in self._db.execute("PRAGMA table_info(images)")}
            for column, kind in _ADDED.items():  # databases from before access lists
                if column not in have:
                    self._db.execute(f"ALTER TABLE images ADD COLUMN {column} {kind}")

    def close(self) -> None:
        self._db.close()

    @staticmethod
    def _row(r: sqlite3.Row | None) -> Row | None:
        if r is None:
            return None
        data = dict(r)
        data["progress"] = json.loads(data["progress"] or "{}")
        data["user_acl"] = json.loads(data.get("user_acl") or "[]")
        data["group_acl"] = json.loads(data.get("group_acl") or "[]")
        return msgspec.convert(data, Row)

    def get(self, system: str, itype: str, key: str) -> Row | None:
        with self._lock:
            return self._row(self._db.execute(
                "SELECT * FROM images WHERE system=? AND itype=? AND key=?", (system, itype, key)).fetchone())

    def list(self, system: str, states: tuple[str, ...] = STATES) -> list[Row]:
        marks = ",".join("?" * len(states))
        with self._lock:
            rows = self._db.execute(f"SELECT * FROM images WHERE system=? AND status IN ({marks}) ORDER BY key",
                                    (system, *states)).fetchall()
        return [self._row(r) for r in rows]

    def with_id(self, system: str, itype: str, image_id: str) -> list[Row]:
        """Rows whose image is `image_id` (any name), READY first."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM images WHERE system=? AND itype=? AND id=? "
                                    "ORDER BY status='READY' DESC, key", (system, itype, image_id)).fetchall()
        return [self._row(r) for r in rows]

    def rekey(self, canonical: Callable[[str, str], str | None]) -> int:
        """File every row under `canonical(itype, key)` (rows written before keys were
        canonical). Of rows that meet under one key, the latest READY one stays; a row that
        `canonical` cannot place (None: e.g. a registry no longer allowed) is left as it is."""
        changed = 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rank = lambda r: (r["status"] == "READY", r["last_pull"], r["updated"])  # noqa: E731
                for r in [dict(r) for r in self._db.execute("SELECT * FROM images").fetchall()]:
                    new = canonical(r["itype"], r["key"])
                    if new is None or new == r["key"]:
                        continue
                    changed += 1
                    where = (r["system"], r["itype"])
                    self._db.execute("DELETE FROM images WHERE system=? AND itype=? AND key=?", (*where, r["key"]))
                    there = self._db.execute("SELECT * FROM images WHERE system=? AND itype=? AND key=?",
                                             (*where, new)).fetchone()
                    if there is None or rank(r) > rank(dict(there)):
                        r["key"] = new
                        self._db.execute(f"INSERT OR REPLACE INTO images ({', '.join(r)}) VALUES "
                                         f"({', '.join('?' * len(r))})", tuple(r.values()))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return changed

    def claim(self, system: str, itype: str, key: str, tag: str, acl: tuple[list[int], list[int]] = ([], [])
              ) -> tuple[Row, bool]:
        """The row for a pull, and True when this caller must run it (no pull was under way).
        The row keeps its last READY id while the new pull runs; `acl` is set with the claim."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                current = self._row(self._db.execute(
                    "SELECT * FROM images WHERE system=? AND itype=? AND key=?", (system, itype, key)).fetchone())
                if current and current.status in ACTIVE:
                    self._db.execute("COMMIT")
                    return current, False
                self._db.execute(
                    "INSERT INTO images (system, itype, key, tag, id, status, status_message, progress, updated,"
                    " user_acl, group_acl) VALUES (?, ?, ?, ?, NULL, 'INIT', '', '{}', ?, ?, ?)"
                    " ON CONFLICT (system, itype, key) DO UPDATE SET status='INIT', status_message='',"
                    " progress='{}', tag=excluded.tag, updated=excluded.updated, user_acl=excluded.user_acl,"
                    " group_acl=excluded.group_acl",
                    (system, itype, key, tag, now, json.dumps(sorted(acl[0])), json.dumps(sorted(acl[1]))))
                row = self._row(self._db.execute(
                    "SELECT * FROM images WHERE system=? AND itype=? AND key=?", (system, itype, key)).fetchone())
                self._db.execute("COMMIT")
                return row, True
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def update(self, system: str, itype: str, key: str, *, status: str | None = None,
               message: str | None = None, image_id: str | None = None, progress: dict | None = None,
               last_pull: float | None = None, acl: tuple[list[int], list[int]] | None = None) -> None:
        if status is not None and status not in STATES:
            raise ValueError(f"unknown state {status}")
        sets, args = ["updated=?"], [time.time()]
        for column, value in (("status", status), ("status_message", message), ("id", image_id),
                              ("last_pull", last_pull)):
            if value is not None:
                sets.append(f"{column}=?")
                args.append(value)
        if acl is not None:
            sets += ["user_acl=?", "group_acl=?"]
            args += [json.dumps(sorted(acl[0])), json.dumps(sorted(acl[1]))]
        if progress is not None:
            sets.append("progress=?")
            args.append(json.dumps(progress))
        with self._lock:
            self._db.execute(f"UPDATE images SET {', '.join(sets)} WHERE system=? AND itype=? AND key=?",
                             (*args, system, itype, key))

    def recover(self) -> int:
        """After a restart: pulls that were under way died with the old process; mark them failed
        (as of long ago: the next pull request retries at once, gateway.repull_after is for
        the registry's verdicts)."""
        with self._lock:
            cur = self._db.execute(
                f"UPDATE images SET status='FAILURE', status_message='the gateway stopped during this pull; "
                f"pull again', updated=0 WHERE status IN ({','.join('?' * len(ACTIVE))})", ACTIVE)
            return cur.rowcount
