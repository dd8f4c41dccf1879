"""Serving an ASGI app inside the orchestrator's event loop: the listen address, a body-size cap, uvicorn.

The socket is bound here, so a taken or invalid address is one `ConfigurationError` line, not uvicorn's
`sys.exit`. uvicorn does not install signal handlers: the orchestrator owns SIGTERM/SIGINT, drains its
runs, and then stops this server.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn

from orchestrator.errors import ConfigurationError

_ASGI = Any  # an ASGI application (uvicorn's own type is private)
_DRAIN_BYTES = 1024 * 1024  # read (and drop) up to this much of an oversize body before answering 413


def parse_listen(listen: str) -> tuple[str, int]:
    """`host:port` (or `[v6]:port`) as (host, port); raise `ConfigurationError` when malformed."""
    host, sep, port = listen.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigurationError(f"ORCHESTRATOR_HTTP_LISTEN={listen!r} must be host:port, e.g. 127.0.0.1:8080")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """True for localhost and loopback IP addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class BodyLimit:
    """ASGI middleware: 413 for a request body above `max_bytes`, by Content-Length or as actually streamed.

    The body is read here (it is small by then) and replayed to the app, so the app never sees a partial one.
    """

    def __init__(self, app: _ASGI, max_bytes: int) -> None:
        self._app = app
        self._max = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        declared = dict(scope.get("headers", ())).get(b"content-length", b"0")
        length = int(declared) if declared.isdigit() else None
        body, received = bytearray(), 0
        # An oversize body is still read (and dropped) up to a bound, so the client sees the 413, not a reset.
        more = length is not None and length <= _DRAIN_BYTES
        while more and received <= _DRAIN_BYTES:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            received += len(chunk)
            if received <= self._max:
                body += chunk
            more = message.get("more_body", False)
        if length is None or length > self._max or received > self._max:
            await _too_large(send, self._max)
            return
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return dict(await receive())

        await self._app(scope, replay, send)


async def _too_large(send: Any, limit: int) -> None:
    detail = f'{{"detail": "request body above the {limit}-byte limit"}}'.encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(detail)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": detail})


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The orchestrator handles SIGTERM/SIGINT (drain, then stop us); uvicorn must not take them over.
        yield


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigurationError(f"cannot serve the HTTP API on {host}:{port} ({exc.strerror}); "
                                 "set ORCHESTRATOR_HTTP_LISTEN to a free address, or `off`") from None
    sock.setblocking(False)
    return sock


@contextlib.asynccontextmanager
async def serve_asgi(app: _ASGI, listen: str, *, max_body: int) -> AsyncIterator[str]:
    """Serve `app` on `listen` in this event loop until the block ends; yields the base URL."""
    host, port = parse_listen(listen)
    sock = _bind(host, port)
    config = uvicorn.Config(BodyLimit(app, max_body), log_config=None, access_log=False, lifespan="off",
                            server_header=False, timeout_graceful_shutdown=5)
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="http api")
    try:
        while not server.started:
            if task.done():
                task.result()
                raise ConfigurationError(f"the HTTP API on {listen} stopped while starting")
            await asyncio.sleep(0.01)
        bound_host, bound_port = sock.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        yield f"http://{shown}:{bound_port}"
    finally:
        server.should_exit = True
        await task
        sock.close()
