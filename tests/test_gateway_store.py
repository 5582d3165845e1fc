"""The image database on both backends (SQLite file, PostgreSQL cluster of the tests' own):
schema migrations in place, one pull per image however many ask, all-or-nothing writes,
use records, and one clear line when the database cannot be used."""

from __future__ import annotations

import os
import pwd
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from imagegw import store as st
from imagegw.store import Store, StoreError

REPO = Path(__file__).resolve().parent.parent

# the schema before versions, as a gateway of the previous release wrote it (without and with
# the access-list columns): these files must open and upgrade in place, keeping their rows
_OLD = """CREATE TABLE images (
    system TEXT NOT NULL, itype TEXT NOT NULL, key TEXT NOT NULL,
    tag TEXT NOT NULL, id TEXT, status TEXT NOT NULL, status_message TEXT NOT NULL DEFAULT '',
    progress TEXT NOT NULL DEFAULT '{}', last_pull REAL NOT NULL DEFAULT 0,
    updated REAL NOT NULL, PRIMARY KEY (system, itype, key))"""
_ACL = ["ALTER TABLE images ADD COLUMN user_acl TEXT NOT NULL DEFAULT '[]'",
        "ALTER TABLE images ADD COLUMN group_acl TEXT NOT NULL DEFAULT '[]'"]


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request, tmp_path):
    """A fresh database of each backend."""
    if request.param == "sqlite":
        return str(tmp_path / "images.db")
    server = request.getfixturevalue("postgres")
    return server.create_database(f"t{uuid.uuid4().hex[:12]}")


@pytest.mark.parametrize("with_acl", [False, True])
def test_previous_sqlite_files_upgrade_in_place(tmp_path, with_acl):
    path = tmp_path / "images.db"
    with sqlite3.connect(path) as db:
        db.execute(_OLD)
        for statement in _ACL if with_acl else []:
            db.execute(statement)
        db.execute("INSERT INTO images (system, itype, key, tag, id, status, progress, last_pull, updated) "
                   "VALUES ('s', 'docker', 'docker.io/library/a:1', 'a:1', ?, 'READY', '{\"layers\": 2}', 5.5, 6.5)",
                   ("ab" * 32,))
    store = Store(path)
    assert store.version() == st.VERSION
    row = store.get("s", "docker", "docker.io/library/a:1")
    assert (row.id, row.status, row.progress, row.last_pull, row.user_acl, row.expires, row.lookups) == (
        "ab" * 32, "READY", {"layers": 2}, 5.5, [], 0.0, 0)
    store.close()
    assert Store(path).migrate() == 0  # opening again changes nothing
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(st.VERSION,)]


def test_a_newer_schema_is_refused_with_one_line(where):
    Store(where).close()
    import sqlalchemy as sa

    engine = sa.create_engine(st.database_url(where))
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE schema_version SET version = version + 1")
    engine.dispose()
    with pytest.raises(StoreError) as err:
        Store(where)
    assert "newer than this gateway's" in str(err.value) and "\n" not in str(err.value)


def test_twenty_concurrent_claims_start_one_pull(where):
    """20 requests at once (two store objects: as two gateway processes would) -> one claim."""
    stores = [Store(where), Store(where)]
    results: list[bool] = []
    barrier = threading.Barrier(20)

    def ask(i: int) -> None:
        barrier.wait()
        results.append(stores[i % 2].claim("s", "docker", "docker.io/x/y:1", "x/y:1")[1])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == [False] * 19 + [True]
    assert stores[0].get("s", "docker", "docker.io/x/y:1").status == "INIT"
    stores[0].update("s", "docker", "docker.io/x/y:1", status="READY", image_id="cd" * 32)
    assert stores[1].claim("s", "docker", "docker.io/x/y:1", "x/y:1")[1] is True  # finished: a new pull may start


def test_a_failed_write_leaves_nothing_half_done(where):
    store = Store(where)
    for key in ("a:1", "b:1", "c:1"):
        store.claim("s", "docker", key, key)
        store.update("s", "docker", key, status="READY", image_id="ef" * 32)
    before = [(r.key, r.status) for r in store.list("s")]

    def canonical(itype: str, key: str) -> str:
        if key == "c:1":
            raise RuntimeError("stop here")
        return f"docker.io/library/{key}"

    with pytest.raises(RuntimeError):
        store.rekey(canonical)  # a and b were already re-filed inside the transaction
    assert [(r.key, r.status) for r in store.list("s")] == before


def test_interrupted_pulls_are_marked_failed_on_restart(where):
    store = Store(where)
    store.claim("s", "docker", "a:1", "a:1")
    store.update("s", "docker", "a:1", status="CONVERSION")
    assert Store(where).recover() == 1
    row = store.get("s", "docker", "a:1")
    assert row.status == "FAILURE" and "stopped during this pull" in row.status_message


def test_unreachable_postgresql_is_one_clear_line():
    from pgcluster import free_port

    port = free_port()  # nothing listens there
    start = time.monotonic()
    with pytest.raises(StoreError) as err:
        Store(f"postgresql://nobody@127.0.0.1:{port}/shifter", connect_timeout=2)
    text = str(err.value)
    assert f"127.0.0.1:{port}" in text and "cannot be used" in text and "\n" not in text
    assert time.monotonic() - start < 10


def test_unreachable_database_mid_service_is_one_line_and_no_half_rows(postgres):
    """The server goes away under an open store: each call fails with one line; after it is
    back, the rows are those of the last whole transaction."""
    server = postgres.__class__()  # a server of this test's own, to stop
    try:
        store = Store(server.url(), connect_timeout=2)
        store.claim("s", "docker", "a:1", "a:1")
        server._as_user(["pg_ctl", "-D", str(server.data), "-w", "-m", "immediate", "stop"])
        for call in (lambda: store.get("s", "docker", "a:1"), lambda: store.claim("s", "docker", "b:1", "b:1"),
                     lambda: store.update("s", "docker", "a:1", status="READY")):
            with pytest.raises(StoreError) as err:
                call()
            assert "cannot be used" in str(err.value) and "\n" not in str(err.value)
        server._as_user(["pg_ctl", "-D", str(server.data), "-w", "-l", str(server.base / "server.log"),
                         "-o", f"-c listen_addresses=127.0.0.1 -c port={server.port} -c unix_socket_directories=",
                         "start"])
        assert [(r.key, r.status) for r in store.list("s")] == [("a:1", "INIT")]
    finally:
        server.stop()


def test_a_bad_database_url_is_one_line(tmp_path):
    with pytest.raises(StoreError) as err:
        Store("mysql://x@127.0.0.1/db")
    assert "only sqlite and postgresql" in str(err.value)


def _gateway_as(user: str, tmp: Path, database: str) -> subprocess.CompletedProcess:
    """shifter-gateway started as `user` (it refuses root) on a scratch image dir."""
    from pgcluster import free_port

    account = pwd.getpwnam(user)
    top = Path(tempfile.mkdtemp(prefix="gw-db-", dir="/var/tmp"))
    try:
        os.chmod(top, 0o755)
        for sub in ("images", "state"):
            (top / sub).mkdir()
            os.chown(top / sub, account.pw_uid, account.pw_gid)
        text = (REPO / "config/shifter.yaml.example").read_text()
        (top / "shifter.yaml").write_text(text.replace("image_dir: /global/shifter/images", f"image_dir: {top}/images"))
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
        return subprocess.run([shutil.which("runuser") or "runuser", "-u", user, "--", sys.executable, "-m", "imagegw.service", "--config",
                               str(top / "shifter.yaml"), "--state-dir", str(top / "state"), "--database", database,
                               "--listen", f"127.0.0.1:{free_port()}"],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    finally:
        shutil.rmtree(top)


def test_the_gateway_does_not_start_on_an_unreachable_database_and_says_so(tmp_path):
    from pgcluster import free_port

    user = pwd.getpwuid(Path("/var/lib/postgresql").stat().st_uid).pw_name  # any non-root account will do
    port = free_port()
    out = _gateway_as(user, tmp_path, f"postgresql://{user}@127.0.0.1:{port}/shifter")
    said = [line for line in out.stderr.splitlines() if not line.startswith("{")]  # the rest: JSON log events
    assert out.returncode == 1 and len(said) == 1 and "Traceback" not in out.stderr, out.stderr
    assert said[0].startswith("shifter-gateway: the image database") and f"127.0.0.1:{port}" in said[0]
    assert "cannot be used" in said[0]
    out = _gateway_as(user, tmp_path, f"postgresql://{user}:secret@127.0.0.1:{port}/shifter")
    assert out.returncode == 1 and "~/.pgpass" in out.stderr and "secret" not in out.stderr, out.stderr
