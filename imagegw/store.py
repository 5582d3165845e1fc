"""The image database: one row per (system, type, reference), behind a small repository layer.

One library, SQLAlchemy 2 Core, speaks to both backends: embedded SQLite (the default, a file
in the state directory, WAL, one writer at a time) and PostgreSQL (several gateway processes
sharing one state; driver psycopg 3). The schema is versioned (`schema_version`) and brought
up to date in place by `migrate` when the store opens; each migration is a function of
`MIGRATIONS`, applied in one transaction, so a database is always at a known version.

States: INIT -> PULLING -> CONVERSION -> READY, or FAILURE with a message. `claim` is how
concurrent pulls of one image become one: only the caller that moves a row out of a finished
state starts a pull (SQLite: the write lock of BEGIN IMMEDIATE; PostgreSQL: the row's lock).

The node side records which job uses which image on which node (`uses`): an image in use is
never removed, and usage figures come from those records and the lookup counters.
"""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, OperationalError

from shifter_site import logs
from shifter_site.errors import ShifterError

log = logs.get("gateway.store")

ACTIVE = ("INIT", "PULLING", "CONVERSION")
STATES = (*ACTIVE, "READY", "FAILURE")


class StoreError(ShifterError):
    """The image database cannot be used (unreachable, or from a newer gateway)."""


class InUse(ShifterError):
    """An image cannot be removed: running jobs use it (the message names them)."""

    def __init__(self, message: str, jobs: list[str]):
        super().__init__(message)
        self.jobs = jobs


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
    expires: float = 0.0       # after this time (0: not set) autoexpire removes it, unless in use
    lookups: int = 0
    last_used: float = 0.0     # last lookup or job start
    owner: str = ""            # the gateway process running its pull (host:pid:start)
    heartbeat: float = 0.0     # that process's last sign of life


class Use(msgspec.Struct, kw_only=True, frozen=True):
    """A job using an image on a node (recorded by the prolog, ended by the epilog)."""

    system: str
    job_id: str
    node: str
    itype: str
    key: str
    image_id: str
    uid: int
    started: float
    ended: float | None = None


class Usage(msgspec.Struct, kw_only=True, frozen=True):
    lookups: int
    jobs: int
    nodes: int
    users: int
    last_used: float
    running_jobs: list[str]


# --- the schema as the code reads it (the latest version); migrations below build it ---------
_meta = sa.MetaData()
_images = sa.Table(
    "images", _meta,
    sa.Column("system", sa.Text, primary_key=True), sa.Column("itype", sa.Text, primary_key=True),
    sa.Column("key", sa.Text, primary_key=True), sa.Column("tag", sa.Text), sa.Column("id", sa.Text),
    sa.Column("status", sa.Text), sa.Column("status_message", sa.Text), sa.Column("progress", sa.Text),
    sa.Column("last_pull", sa.Double), sa.Column("updated", sa.Double), sa.Column("user_acl", sa.Text),
    sa.Column("group_acl", sa.Text), sa.Column("expires", sa.Double), sa.Column("lookups", sa.BigInteger),
    sa.Column("last_used", sa.Double), sa.Column("owner", sa.Text), sa.Column("heartbeat", sa.Double))
_uses = sa.Table(
    "uses", _meta,
    sa.Column("system", sa.Text, primary_key=True), sa.Column("job_id", sa.Text, primary_key=True),
    sa.Column("node", sa.Text, primary_key=True), sa.Column("itype", sa.Text), sa.Column("key", sa.Text),
    sa.Column("image_id", sa.Text), sa.Column("uid", sa.Integer), sa.Column("started", sa.Double),
    sa.Column("ended", sa.Double))
_users = sa.Table(
    "image_users", _meta,
    sa.Column("system", sa.Text, primary_key=True), sa.Column("itype", sa.Text, primary_key=True),
    sa.Column("key", sa.Text, primary_key=True), sa.Column("uid", sa.Integer, primary_key=True))
_layers = sa.Table(
    "image_layers", _meta,
    sa.Column("image_id", sa.Text, primary_key=True), sa.Column("digest", sa.Text, primary_key=True))
_version = sa.Table("schema_version", _meta, sa.Column("version", sa.Integer, nullable=False))


# --- migrations: each takes the schema from version i to i+1; never edit a released one -----
def _float(conn: Connection) -> str:
    return "DOUBLE PRECISION" if conn.dialect.name == "postgresql" else "REAL"


def _columns(conn: Connection, table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(conn).get_columns(table)} if sa.inspect(conn).has_table(table) else set()


def _v1(conn: Connection) -> None:
    """The image table as the gateway had it before versions (an existing SQLite file keeps
    its rows; one from before access lists gains them)."""
    f = _float(conn)
    conn.exec_driver_sql(f"""CREATE TABLE IF NOT EXISTS images (
        system TEXT NOT NULL, itype TEXT NOT NULL, key TEXT NOT NULL,
        tag TEXT NOT NULL, id TEXT, status TEXT NOT NULL, status_message TEXT NOT NULL DEFAULT '',
        progress TEXT NOT NULL DEFAULT '{{}}', last_pull {f} NOT NULL DEFAULT 0,
        updated {f} NOT NULL, user_acl TEXT NOT NULL DEFAULT '[]', group_acl TEXT NOT NULL DEFAULT '[]',
        PRIMARY KEY (system, itype, key))""")
    have = _columns(conn, "images")
    for column in ("user_acl", "group_acl"):
        if column not in have:
            conn.exec_driver_sql(f"ALTER TABLE images ADD COLUMN {column} TEXT NOT NULL DEFAULT '[]'")


def _v2(conn: Connection) -> None:
    """Lifecycle and usage: expiry and lookup counters per image, the jobs using images, the
    users who looked an image up, the layers each image was made of (for the layer cache's
    garbage collection)."""
    f = _float(conn)
    for column, kind in (("expires", f"{f} NOT NULL DEFAULT 0"), ("lookups", "BIGINT NOT NULL DEFAULT 0"),
                         ("last_used", f"{f} NOT NULL DEFAULT 0")):
        conn.exec_driver_sql(f"ALTER TABLE images ADD COLUMN {column} {kind}")
    conn.exec_driver_sql(f"""CREATE TABLE uses (
        system TEXT NOT NULL, job_id TEXT NOT NULL, node TEXT NOT NULL, itype TEXT NOT NULL, key TEXT NOT NULL,
        image_id TEXT NOT NULL, uid INTEGER NOT NULL, started {f} NOT NULL, ended {f},
        PRIMARY KEY (system, job_id, node))""")
    conn.exec_driver_sql("CREATE INDEX uses_image ON uses (system, itype, key)")
    conn.exec_driver_sql("""CREATE TABLE image_users (
        system TEXT NOT NULL, itype TEXT NOT NULL, key TEXT NOT NULL, uid INTEGER NOT NULL,
        PRIMARY KEY (system, itype, key, uid))""")
    conn.exec_driver_sql("CREATE INDEX images_id ON images (id)")  # not (system, itype, ...): that prefix is the key's
    conn.exec_driver_sql("""CREATE TABLE image_layers (
        image_id TEXT NOT NULL, digest TEXT NOT NULL, PRIMARY KEY (image_id, digest))""")


def _v3(conn: Connection) -> None:
    """Pulls owned by a gateway process (host:pid:start) that keeps a heartbeat, so gateways
    sharing a database can tell a pull whose process died from one still running."""
    f = _float(conn)
    conn.exec_driver_sql("ALTER TABLE images ADD COLUMN owner TEXT NOT NULL DEFAULT ''")
    conn.exec_driver_sql(f"ALTER TABLE images ADD COLUMN heartbeat {f} NOT NULL DEFAULT 0")


MIGRATIONS: list[Callable[[Connection], None]] = [_v1, _v2, _v3]
VERSION = len(MIGRATIONS)


def database_url(value: str | Path) -> str:
    """A SQLAlchemy URL from `value`: a URL as is (postgresql://... becomes the psycopg 3
    driver's), else a path to a SQLite file."""
    text = str(value)
    if "://" not in text:
        return f"sqlite:///{Path(text).resolve()}"
    for plain in ("postgresql://", "postgres://"):
        if text.startswith(plain):
            return "postgresql+psycopg://" + text[len(plain):]
    return text


def _display(url: sa.URL) -> str:
    return url.render_as_string(hide_password=True)


class Store:
    """Image rows in SQLite or PostgreSQL; safe to share between the service's threads."""

    def __init__(self, where: str | Path, *, connect_timeout: float = 5.0):
        url = sa.make_url(database_url(where))
        self.url = _display(url)
        self.backend = url.get_backend_name()
        if self.backend == "sqlite":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
            self._engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
            sa.event.listen(self._engine, "connect", _sqlite_connect)
            sa.event.listen(self._engine, "begin", _sqlite_begin)
        elif self.backend == "postgresql":
            self._engine = sa.create_engine(url, pool_pre_ping=True, pool_size=8, max_overflow=8,
                                            connect_args={"connect_timeout": max(1, int(connect_timeout))})
        else:
            raise StoreError(f"database {self.url}: only sqlite and postgresql are supported; "
                             f"give a file path or postgresql://user@host/dbname")
        self._write_lock = threading.Lock()  # SQLite: one writer in this process (no busy waits)
        migrated = self.migrate()
        log.info("store_open", backend=self.backend, url=self.url, version=VERSION, migrated=migrated)

    # --- plumbing -------------------------------------------------------------------------
    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self._engine.connect() as conn:
                yield conn
        except (OperationalError, DBAPIError) as err:
            raise self._unreachable(err) from None

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """One transaction: all of it or nothing (a failure rolls back)."""
        with self._write_lock if self.backend == "sqlite" else _nolock():
            try:
                with self._engine.connect().execution_options(immediate=True) as conn, conn.begin():
                    yield conn
            except (OperationalError, DBAPIError) as err:
                raise self._unreachable(err) from None

    def _unreachable(self, err: Exception) -> StoreError:
        first = str(getattr(err, "orig", err)).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        log.error("store_error", url=self.url, error=first)
        return StoreError(f"the image database {self.url} cannot be used: {first}; check that it is running "
                          f"and reachable from the gateway")

    def migrate(self) -> int:
        """Bring the schema to VERSION in place; the number of migrations applied. Two gateways
        starting at once on PostgreSQL take turns (an advisory lock)."""
        with self._write() as conn:
            if self.backend == "postgresql":
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7260715)")
            if not sa.inspect(conn).has_table("schema_version"):
                conn.exec_driver_sql("CREATE TABLE schema_version (version INTEGER NOT NULL)")
                conn.execute(_version.insert().values(version=0))
            current = conn.execute(sa.select(_version.c.version)).scalar_one()
            if current > VERSION:
                raise StoreError(f"the image database {self.url} has schema version {current}, newer than this "
                                 f"gateway's {VERSION}; run the newer gateway (or restore a backup)")
            for index in range(current, VERSION):
                MIGRATIONS[index](conn)
                log.info("store_migrated", url=self.url, to_version=index + 1)
            conn.execute(_version.update().values(version=VERSION))
            return VERSION - current

    def version(self) -> int:
        with self._read() as conn:
            return conn.execute(sa.select(_version.c.version)).scalar_one()

    def close(self) -> None:
        self._engine.dispose()

    @staticmethod
    def _row(r) -> Row | None:
        if r is None:
            return None
        data = {str(k): v for k, v in r._mapping.items()}  # plain str keys: msgspec matches fields by exact type
        for column, empty in (("progress", "{}"), ("user_acl", "[]"), ("group_acl", "[]")):
            data[column] = json.loads(data[column] or empty)
        return msgspec.convert(data, Row)

    @staticmethod
    def _where(system: str, itype: str, key: str):
        return sa.and_(_images.c.system == system, _images.c.itype == itype, _images.c.key == key)

    # --- images ---------------------------------------------------------------------------
    def get(self, system: str, itype: str, key: str) -> Row | None:
        with self._read() as conn:
            return self._row(conn.execute(sa.select(_images).where(self._where(system, itype, key))).first())

    def list(self, system: str, states: tuple[str, ...] = STATES) -> list[Row]:
        with self._read() as conn:
            rows = conn.execute(sa.select(_images).where(_images.c.system == system, _images.c.status.in_(states))
                                .order_by(_images.c.key)).all()
        return [self._row(r) for r in rows]

    def with_id(self, system: str, itype: str, image_id: str) -> list[Row]:
        """Rows whose image is `image_id` (any name), READY first."""
        with self._read() as conn:
            rows = conn.execute(sa.select(_images).where(_images.c.system == system, _images.c.itype == itype,
                                                         _images.c.id == image_id)).all()
        return sorted((self._row(r) for r in rows), key=lambda r: (r.status != "READY", r.key))

    def count(self, system: str) -> int:
        with self._read() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(_images)
                                .where(_images.c.system == system)).scalar_one()

    def active_count(self) -> int:
        """Pulls under way, on every system (any gateway process)."""
        with self._read() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(_images)
                                .where(_images.c.status.in_(ACTIVE))).scalar_one()

    def rekey(self, canonical: Callable[[str, str], str | None]) -> int:
        """File every row under `canonical(itype, key)` (rows written before keys were
        canonical). Of rows that meet under one key, the latest READY one stays; a row that
        `canonical` cannot place (None: e.g. a registry no longer allowed) is left as it is."""
        changed = 0
        rank = lambda r: (r["status"] == "READY", r["last_pull"], r["updated"])  # noqa: E731
        with self._write() as conn:
            for r in [dict(r._mapping) for r in conn.execute(sa.select(_images)).all()]:
                new = canonical(r["itype"], r["key"])
                if new is None or new == r["key"]:
                    continue
                changed += 1
                conn.execute(_images.delete().where(self._where(r["system"], r["itype"], r["key"])))
                there = conn.execute(sa.select(_images).where(self._where(r["system"], r["itype"], new))).first()
                if there is None or rank(r) > rank(dict(there._mapping)):
                    r["key"] = new
                    if there is not None:
                        conn.execute(_images.delete().where(self._where(r["system"], r["itype"], new)))
                    conn.execute(_images.insert().values(**r))
        return changed

    def claim(self, system: str, itype: str, key: str, tag: str, acl: tuple[list[int], list[int]] = ([], []),
              owner: str = "") -> tuple[Row, bool]:
        """The row for a pull, and True when this caller must run it (no pull was under way).
        The row keeps its last READY id while the new pull runs; `acl` is set with the claim;
        `owner` (the claiming process) keeps a heartbeat on it (`beat`)."""
        now = time.time()
        where = self._where(system, itype, key)
        with self._write() as conn:
            insert = _insert(conn)(_images).values(
                system=system, itype=itype, key=key, tag=tag, id=None, status="FAILURE", status_message="",
                progress="{}", last_pull=0, updated=0, user_acl="[]", group_acl="[]", expires=0, lookups=0,
                last_used=0, owner="", heartbeat=0)
            conn.execute(insert.on_conflict_do_nothing(index_elements=["system", "itype", "key"]))
            current = self._row(conn.execute(sa.select(_images).where(where).with_for_update()).first())
            if current.status in ACTIVE:
                return current, False
            conn.execute(_images.update().where(where).values(
                status="INIT", status_message="", progress="{}", tag=tag, updated=now, owner=owner, heartbeat=now,
                user_acl=json.dumps(sorted(acl[0])), group_acl=json.dumps(sorted(acl[1]))))
            return self._row(conn.execute(sa.select(_images).where(where)).first()), True

    def update(self, system: str, itype: str, key: str, *, status: str | None = None,
               message: str | None = None, image_id: str | None = None, progress: dict | None = None,
               last_pull: float | None = None, acl: tuple[list[int], list[int]] | None = None,
               expires: float | None = None) -> None:
        if status is not None and status not in STATES:
            raise ValueError(f"unknown state {status}")
        values: dict = {"updated": time.time()}
        for column, value in (("status", status), ("status_message", message), ("id", image_id),
                              ("last_pull", last_pull), ("expires", expires)):
            if value is not None:
                values[column] = value
        if acl is not None:
            values.update(user_acl=json.dumps(sorted(acl[0])), group_acl=json.dumps(sorted(acl[1])))
        if progress is not None:
            values["progress"] = json.dumps(progress)
        with self._write() as conn:
            conn.execute(_images.update().where(self._where(system, itype, key)).values(**values))

    def put_ready(self, system: str, itype: str, key: str, tag: str, image_id: str, last_pull: float) -> None:
        """A READY row for an image published outside a pull (shifterimg import), in one
        statement: the name now means this image."""
        now = time.time()
        with self._write() as conn:
            stmt = _insert(conn)(_images).values(
                system=system, itype=itype, key=key, tag=tag, id=image_id, status="READY", status_message="",
                progress="{}", last_pull=last_pull, updated=now, user_acl="[]", group_acl="[]", expires=0,
                lookups=0, last_used=0)
            conn.execute(stmt.on_conflict_do_update(index_elements=["system", "itype", "key"], set_={
                "tag": tag, "id": image_id, "status": "READY", "status_message": "", "progress": "{}",
                "last_pull": last_pull, "updated": now, "user_acl": "[]", "group_acl": "[]"}))

    def beat(self, owner: str) -> int:
        """`owner` is alive: its pulls' heartbeat is now."""
        with self._write() as conn:
            return conn.execute(_images.update().where(_images.c.owner == owner, _images.c.status.in_(ACTIVE))
                                .values(heartbeat=time.time())).rowcount

    def recover(self, dead: Callable[[str], bool] = lambda owner: True, stale_after: float | None = None) -> int:
        """Pulls whose gateway process died are marked failed (as of long ago: the next pull
        request retries at once; gateway.repull_after is for the registry's verdicts): those
        whose owner `dead` says is gone (a restart: this host's earlier processes), and, with
        `stale_after`, those whose heartbeat is older than that (a process elsewhere, or
        killed, sharing this database)."""
        with self._write() as conn:
            rows = conn.execute(sa.select(_images.c.system, _images.c.itype, _images.c.key, _images.c.owner,
                                          _images.c.heartbeat).where(_images.c.status.in_(ACTIVE))
                                .with_for_update()).all()
            now, failed = time.time(), 0
            for r in rows:
                if dead(r.owner) or (stale_after is not None and r.heartbeat < now - stale_after):
                    failed += conn.execute(_images.update().where(
                        self._where(r.system, r.itype, r.key), _images.c.status.in_(ACTIVE),
                        _images.c.owner == r.owner).values(
                        status="FAILURE", status_message="the gateway stopped during this pull; pull again",
                        updated=0, owner="")).rowcount
            return failed


    # --- lifecycle and usage -----------------------------------------------------------------
    def touch(self, lookups: dict[tuple[str, str, str], tuple[int, float, set[int]]], expire_after: float) -> None:
        """Lookups since the last call, per image row (system, itype, key): (how many, the
        last one's time, the uids that made them): counted, last use, expiry moved on; one
        transaction (the service batches them off the lookup's path: Gateway.flush)."""
        with self._write() as conn:
            for (system, itype, key), (count, last, uids) in sorted(lookups.items()):
                values: dict = {"lookups": _images.c.lookups + count, "last_used": last}
                if expire_after > 0:
                    values["expires"] = last + expire_after
                conn.execute(_images.update().where(self._where(system, itype, key)).values(**values))
                for uid in sorted(uids):
                    conn.execute(_insert(conn)(_users).values(system=system, itype=itype, key=key, uid=uid)
                                 .on_conflict_do_nothing())

    def start_use(self, use: Use, expire_after: float) -> None:
        """Job `use.job_id` uses the image on `use.node` (again: the record is replaced); every
        name of the image counts as used now, its expiry moved on."""
        values = msgspec.structs.asdict(use)
        with self._write() as conn:
            stmt = _insert(conn)(_uses).values(**values)
            conn.execute(stmt.on_conflict_do_update(index_elements=["system", "job_id", "node"], set_={
                k: stmt.excluded[k] for k in values if k not in ("system", "job_id", "node")}))
            image = sa.and_(_images.c.system == use.system, _images.c.id == use.image_id)
            conn.execute(_images.update().where(image).values(
                last_used=use.started, **({"expires": use.started + expire_after} if expire_after > 0 else {})))
            conn.execute(_insert(conn)(_users).values(system=use.system, itype=use.itype, key=use.key, uid=use.uid)
                         .on_conflict_do_nothing())

    def end_use(self, system: str, job_id: str, node: str) -> int:
        """The job's use on that node has ended; how many records that ended (0: none open)."""
        with self._write() as conn:
            return conn.execute(_uses.update().where(
                _uses.c.system == system, _uses.c.job_id == job_id, _uses.c.node == node,
                _uses.c.ended.is_(None)).values(ended=time.time())).rowcount

    def running(self, system: str, job_ids: list[str] | None = None, image_id: str | None = None) -> list[Use]:
        """Uses not ended, oldest first; only those jobs, or that image, when given."""
        query = sa.select(_uses).where(_uses.c.system == system, _uses.c.ended.is_(None))
        if job_ids:
            query = query.where(_uses.c.job_id.in_(job_ids))
        if image_id:
            query = query.where(_uses.c.image_id == image_id)
        with self._read() as conn:
            rows = conn.execute(query.order_by(_uses.c.started, _uses.c.job_id, _uses.c.node)).all()
        return [msgspec.convert({str(k): v for k, v in r._mapping.items()}, Use) for r in rows]

    def usage(self, system: str) -> dict[tuple[str, str], Usage]:
        """Per image row (itype, key): lookups, jobs, nodes, distinct users, last use."""
        with self._read() as conn:
            base = {(r.itype, r.key): (r.lookups, r.last_used) for r in conn.execute(
                sa.select(_images.c.itype, _images.c.key, _images.c.lookups, _images.c.last_used)
                .where(_images.c.system == system))}
            jobs = {(r.itype, r.key): (r.jobs, r.nodes) for r in conn.execute(
                sa.select(_uses.c.itype, _uses.c.key, sa.func.count(sa.distinct(_uses.c.job_id)).label("jobs"),
                          sa.func.count(sa.distinct(_uses.c.node)).label("nodes"))
                .where(_uses.c.system == system).group_by(_uses.c.itype, _uses.c.key))}
            users = {(r.itype, r.key): r.n for r in conn.execute(
                sa.select(_users.c.itype, _users.c.key, sa.func.count().label("n"))
                .where(_users.c.system == system).group_by(_users.c.itype, _users.c.key))}
            running: dict[tuple[str, str], set[str]] = {}
            for r in conn.execute(sa.select(_uses.c.itype, _uses.c.key, _uses.c.job_id)
                                  .where(_uses.c.system == system, _uses.c.ended.is_(None))):
                running.setdefault((r.itype, r.key), set()).add(r.job_id)
        return {k: Usage(lookups=v[0], jobs=jobs.get(k, (0, 0))[0], nodes=jobs.get(k, (0, 0))[1],
                         users=users.get(k, 0), last_used=v[1], running_jobs=sorted(running.get(k, ())))
                for k, v in base.items()}

    def expired(self, system: str, now: float | None = None) -> list[Row]:
        """Finished rows whose expiry has passed."""
        now = time.time() if now is None else now
        with self._read() as conn:
            rows = conn.execute(sa.select(_images).where(
                _images.c.system == system, _images.c.expires > 0, _images.c.expires <= now,
                _images.c.status.not_in(ACTIVE))).all()
        return [self._row(r) for r in rows]

    def remove(self, system: str, itype: str, key: str) -> tuple[Row, bool]:
        """Delete the row, in one transaction with the check that no running job uses its
        image (InUse naming the jobs, nothing changed); (the row, whether no other row names its
        image id: then its files and layer list may go). KeyError when there is no such row;
        a pull under way is InUse too (its worker owns the row)."""
        where = self._where(system, itype, key)
        with self._write() as conn:
            row = self._row(conn.execute(sa.select(_images).where(where).with_for_update()).first())
            if row is None:
                raise KeyError(key)
            if row.status in ACTIVE:
                raise InUse(f"{itype}:{row.tag} is being pulled ({row.status}); remove it when the pull has "
                            f"finished", [])
            if row.id:
                jobs = sorted({r.job_id for r in conn.execute(sa.select(_uses.c.job_id).where(
                    _uses.c.system == system, _uses.c.image_id == row.id, _uses.c.ended.is_(None)))})
                if jobs:
                    raise InUse(f"{itype}:{row.tag} is in use by running job{'s' if len(jobs) > 1 else ''} "
                                f"{', '.join(jobs)}; remove it when they have ended", jobs)
            conn.execute(_images.delete().where(where))
            conn.execute(_users.delete().where(_users.c.system == system, _users.c.itype == itype,
                                               _users.c.key == key))
            last = bool(row.id) and conn.execute(sa.select(sa.func.count()).select_from(_images).where(
                _images.c.id == row.id)).scalar_one() == 0
            if last:
                conn.execute(_layers.delete().where(_layers.c.image_id == row.id))
            return row, last

    def set_layers(self, image_id: str, digests: list[str]) -> None:
        """The layer blobs `image_id` is made of (the layer cache keeps them while it exists)."""
        with self._write() as conn:
            for digest in sorted(set(digests)):
                conn.execute(_insert(conn)(_layers).values(image_id=image_id, digest=digest)
                             .on_conflict_do_nothing())

    def layers_in_use(self) -> set[str]:
        """Layer digests of every image some row still names, and of pulls under way."""
        with self._read() as conn:
            return set(conn.execute(sa.select(_layers.c.digest).distinct()).scalars())


@contextmanager
def _nolock() -> Iterator[None]:
    yield


def _insert(conn: Connection):
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def _sqlite_connect(dbapi_conn, _record) -> None:
    # the driver's own transaction handling off: SQLAlchemy's "begin" event below starts them
    dbapi_conn.isolation_level = None
    dbapi_conn.execute("PRAGMA journal_mode=WAL")
    dbapi_conn.execute("PRAGMA busy_timeout=30000")


def _sqlite_begin(conn: Connection) -> None:
    # writers take the write lock at once: a read-then-write never fails on an upgrade
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("immediate") else "BEGIN")
