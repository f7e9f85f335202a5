"""Test setup: offline hub, no network beyond loopback, tiny seeded backbones built once per session."""
from __future__ import annotations

import contextlib
import functools
import ipaddress
import os
import socket

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

_real_connect = socket.socket.connect


def _guarded_connect(sock, address):
    """Refuse any connection that leaves this machine: tests never reach for the network."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0]
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise OSError(f"test tried to reach {address!r}: tests must not use the network")
    return _real_connect(sock, address)


socket.socket.connect = _guarded_connect


@pytest.fixture(scope="session")
def tiny():
    from engine.loading import load_backbone

    return load_backbone("tiny-random", device="cpu")


@pytest.fixture(scope="session")
def encoder(tiny):
    from engine.text import TextEncoder

    return TextEncoder(tiny)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny models (fastest for them, and the test machine is shared); modules
    opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- the web app: one per test module (tests/test_web*.py) ------------------------------------------------------


@pytest.fixture(scope="module")
def app(request, tmp_path_factory):
    """A web app on a tiny indexed catalog (web.testing: tiny-random, no worker thread) for one test module, closed
    after it. The admin password is the module's PASSWORD when it sets one (else tiny_settings' default)."""
    from web import create_app
    from web.testing import build_catalog, tiny_settings

    root = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    build_catalog(root)
    password = getattr(request.module, "PASSWORD", None)
    app = create_app(tiny_settings(root, **({} if password is None else {"password": password})))
    yield app
    app.extensions["coinage"].close()


@pytest.fixture
def client(app):
    """A test client of the module's app (not logged in)."""
    return app.test_client()


@pytest.fixture
def admin(app, request):
    """A test client of the module's app, logged in as its admin (the module's PASSWORD) through the JSON API."""
    from web.testing import api_login

    client = app.test_client()
    r = api_login(client, request.module.PASSWORD)
    assert r.status_code == 200 and r.json["admin"], r.json
    return client


@pytest.fixture
def res(app):
    """The module's app resources (web.resources: store, query service, jobs, registry)."""
    return app.extensions["coinage"]


# --- vector store backends: the engine tests run on each (tests/test_store.py, test_query.py, test_indexer_*.py) ----


def _store_config(backend: str, directory, persistent: bool = False, **fields):
    """The StoreConfig of `backend` for a test's `directory`. No Qdrant server runs here: "server" is qdrant-client
    inside the test process, through the same client calls: in memory (url ':memory:'), or with persistent=True in
    `directory` (url 'local:<dir>'), for data that outlives the store object or the process (a store reopened from
    its config, a killed child process). `fields` are further StoreConfig fields."""
    from engine.store import StoreConfig

    if backend == "embedded":
        return StoreConfig(backend="embedded", path=str(directory), **fields)
    return StoreConfig(backend="server", url=f"local:{directory}" if persistent else ":memory:", **fields)


@pytest.fixture(scope="session")
def make_store_config():
    """make_store_config(backend, directory, persistent=False, **fields) -> StoreConfig, for tests that need both
    backends at once (congruence); a test that runs once per backend takes `store_config` instead."""
    return _store_config


@pytest.fixture(scope="module", params=["embedded", "server"])
def store_config(request):
    """Runs the test once per store backend; store_config(directory, persistent=False, **fields) -> its StoreConfig
    (see _store_config)."""
    return functools.partial(_store_config, request.param)


# --- databases: the job store and concept registry tests run on SQLite and on a real PostgreSQL (tests/pg_server.py) --


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server from Debian's package for the session (skipped, naming the install, without one)."""
    from pg_server import PostgresServer, PostgresUnavailable

    try:
        server = PostgresServer.start()
    except PostgresUnavailable as e:
        pytest.skip(str(e))
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server):
    """The URL of a fresh, empty database on the session's server, dropped after the test."""
    name = postgres_server.create_database()
    yield postgres_server.url(name)
    postgres_server.drop_database(name)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request):
    """Runs the test once per database backend: None (the SQLite files) or a fresh PostgreSQL database's URL
    (the `database_url=` of JobStore and ConceptRegistry)."""
    return None if request.param == "sqlite" else request.getfixturevalue("postgres_url")


@pytest.fixture
def lose_registration_race(monkeypatch):
    """lose_registration_race(registry): the registry's registrations lose a race from now on. Their check for an
    existing row sees none, as when another process inserts the same concept between that check and the INSERT,
    so the INSERT meets the database's own unique violation (on SQLite and PostgreSQL alike)."""

    class _NoRow:
        rowcount = 0

        def fetchone(self):
            return None

        def fetchall(self):
            return []

    class _MissesExisting:
        def __init__(self, conn):
            self.conn = conn

        def execute(self, sql, params=()):
            if sql.startswith("SELECT 1 FROM concepts WHERE name=?"):
                return _NoRow()
            return self.conn.execute(sql, params)

    def arm(registry):
        real = registry.db.write

        @contextlib.contextmanager
        def write(*args, **kwargs):
            with real(*args, **kwargs) as conn:
                yield _MissesExisting(conn)

        monkeypatch.setattr(registry.db, "write", write)

    return arm
