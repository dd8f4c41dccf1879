"""Opening the database: the URL from the settings, SQLite's pragmas and transactions, Alembic migrations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.pool import StaticPool

from orchestrator.errors import ConfigurationError
from orchestrator.settings import StoreSettings

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: File name of the embedded SQLite store under ORCHESTRATOR_DATA_DIR.
SQLITE_FILE = "orchestrator.db"


def database_url(settings: StoreSettings) -> str:
    """The SQLAlchemy URL: PostgreSQL through psycopg 3 when a URL is configured, else the SQLite file."""
    url = settings.database_url
    if url is None:
        return f"sqlite:///{settings.data_dir / SQLITE_FILE}"
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme):]
    if url.startswith(("postgresql+psycopg://", "sqlite://")):
        return url
    raise ConfigurationError("ORCHESTRATOR_DATABASE_URL must start with postgresql:// (or be unset for SQLite)")


def open_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets WAL and write transactions that take the write lock at BEGIN."""
    if not url.startswith("sqlite"):
        # No pre-ping: a round trip more per transaction; a dropped connection fails one batch, which is retried.
        return create_engine(url, pool_size=8, max_overflow=8)
    if url in ("sqlite://", "sqlite:///:memory:"):
        engine = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite's own transaction handling defers BEGIN and cannot say IMMEDIATE: turn it off and emit ours.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # readers (status, the API) never wait for the writer
        cursor.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        # IMMEDIATE takes the write lock at once, so a claim's read-then-write cannot interleave with another
        # process's claim (a deferred transaction would fail with SQLITE_BUSY on upgrade instead of waiting).
        deferred = connection.get_execution_options().get("read_only", False)
        connection.exec_driver_sql("BEGIN" if deferred else "BEGIN IMMEDIATE")

    return engine


def upgrade(engine: Engine) -> None:
    """Apply every migration not yet applied (idempotent)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
