"""Fixtures shared by the whole suite.

Index tests take the ``db_url`` fixture and run twice: on SQLite and on PostgreSQL. With
``CI=true`` an unreachable PostgreSQL fails the run instead of skipping.
"""

import os
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from archive.clock import ManualClock
from archive.db import Database
from archive.service import Archive
from archive.settings import Settings
from storage.keyring import LocalKeyring
from storage.local import LocalBlobStore
from tests.databases import PgTemplate, pg_reachable, pg_url_for
from tests.servers import moto_server
from web.app import create_app

START = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _no_aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never reach a real AWS account: strip AWS_* and use fixed dummy credentials."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-2")


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of one moto server (S3 and KMS over HTTP) for the whole session."""
    with moto_server(tmp_path_factory.mktemp("moto")) as url:
        yield url


@pytest.fixture(scope="session")
def pg_template() -> Iterator[PgTemplate]:
    problem = pg_reachable()
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true needs PostgreSQL: {problem}")
        pytest.skip(problem)
    template = PgTemplate()
    template.create()
    yield template
    template.destroy()


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty, migrated index database (async SQLAlchemy URL) of each kind."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'index.db'}"
        db = Database(url)
        await db.upgrade()
        await db.close()
        yield url
        return
    template: PgTemplate = request.getfixturevalue("pg_template")
    name = await template.clone()
    yield pg_url_for(name).replace("postgresql://", "postgresql+asyncpg://")
    await template.drop(name)


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    yield database
    await database.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
async def archive(db: Database, tmp_path: Path, clock: ManualClock) -> AsyncIterator[Archive]:
    store = await LocalBlobStore(tmp_path / "store").open()
    keys = await LocalKeyring(tmp_path / "keyring.json").open()
    yield Archive(db, store, keys, clock, segment_size=4096)


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "var", database_url=db_url, segment_size=4096)


Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client(settings: Settings, clock: ManualClock, aiohttp_client: AiohttpClient) -> Client:
    return await aiohttp_client(create_app(settings, clock=clock))
