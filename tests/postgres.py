"""A throwaway PostgreSQL server for the store's tests: `initdb` + `pg_ctl` as an unprivileged user.

`ORCHESTRATOR_TEST_DATABASE_URL` (postgresql://…, a user allowed to CREATE DATABASE) replaces it when set.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg

BIN_DIRS = ("/usr/local/bin", "/usr/lib/postgresql/15/bin")


def _binary(name: str) -> str:
    for directory in BIN_DIRS:
        candidate = Path(directory) / name
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found: install PostgreSQL or set ORCHESTRATOR_TEST_DATABASE_URL")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_user(user: str | None, command: list[str]) -> list[str]:
    return ["runuser", "-u", user, "--", *command] if user else command


@contextlib.contextmanager
def server() -> Iterator[str]:
    """A `postgresql://` URL of a server for the session, stopped and deleted afterwards."""
    configured = os.environ.get("ORCHESTRATOR_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    # PostgreSQL refuses to run as root: run it as the `postgres` (or `nobody`) system user.
    user = None
    if os.geteuid() == 0:
        user = next(name for name in ("postgres", "nobody") if _has_user(name))
    base = Path(tempfile.mkdtemp(prefix="orchestrator-pg-"))
    data = base / "data"
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(base, entry.pw_uid, entry.pw_gid)
    port = _free_port()
    subprocess.run(_as_user(user, [_binary("initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                                   "--no-sync", "-E", "UTF8"]), check=True, capture_output=True)
    options = f"-c listen_addresses=127.0.0.1 -p {port} -c fsync=off -c unix_socket_directories={base}"
    subprocess.run(_as_user(user, [_binary("pg_ctl"), "-D", str(data), "-o", options, "-l", str(base / "log"),
                                   "-w", "start"]), check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_user(user, [_binary("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       check=False, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def fresh_database(server_url: str) -> str:
    """A new, empty database on the server; its URL."""
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server_url.rsplit("/", 1)[0] + "/" + name
