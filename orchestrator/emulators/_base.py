"""What every provider emulator shares: the control API, latency and fault injection, request accounting.

Each emulator is an aiohttp application built by `make_app(routes, state)`; the control API lives under
`/_emulator/` so it never collides with a provider path:

- `PUT  /_emulator/latency`   `{"ms": 20}` — added before every provider response.
- `POST /_emulator/faults`    `{"method": "DELETE", "path": "^/api/v1/users/.*/sessions$", "status": 503,
                               "count": 1, "body": {...}, "headers": {...}}` — the next `count` matching
                               requests get that response instead of the real one (`method` optional).
- `GET  /_emulator/stats`     counts: requests, in_flight, max_in_flight, by_status.
- `GET  /_emulator/requests`  the request log: method, path (decoded), raw_path (as sent), query, status (never
  headers: they carry tokens).
- `POST /_emulator/reset`     clears faults, latency, stats and the request log (not the provider state).

Provider emulators add their own state under the same prefix with `state_routes(state)`:
`POST /_emulator/state` seeds (returns what it created), `GET /_emulator/state` dumps it without secret
values, `DELETE /_emulator/state` forgets it, `PUT /_emulator/rate-limits` sets limits and restarts their
windows. `FixedWindowLimiter` counts calls per key; `describe_secret` names a secret without revealing it.

Run one as a process with `python -m orchestrator.emulators.NAME --port PORT`; it prints
`READY http://HOST:PORT` on stdout once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import re
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from orchestrator import loop

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CONTROL_PREFIX = "/_emulator/"


@dataclass
class Fault:
    """A canned response for the next `count` requests matching `method` and `path`."""

    path: re.Pattern[str]
    status: int
    count: int
    method: str | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    def matches(self, request: web.Request) -> bool:
        """True when this fault applies to the request."""
        if self.method and self.method.upper() != request.method:
            return False
        return bool(self.path.search(request.path))


@dataclass
class Control:
    """Run-time knobs and counters of one emulator."""

    latency_ms: float = 0.0
    faults: list[Fault] = field(default_factory=list)
    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    log: list[dict[str, Any]] = field(default_factory=list)
    log_limit: int = 10_000

    def reset(self) -> None:
        """Forget faults, latency, counters and the log."""
        self.latency_ms = 0.0
        self.faults.clear()
        self.requests = self.in_flight = self.max_in_flight = 0
        self.by_status.clear()
        self.log.clear()

    def take_fault(self, request: web.Request) -> Fault | None:
        """The first matching fault, consumed once."""
        for fault in self.faults:
            if fault.matches(request):
                fault.count -= 1
                if fault.count <= 0:
                    self.faults.remove(fault)
                return fault
        return None


CONTROL_KEY = web.AppKey("control", Control)


def _fault_response(fault: Fault) -> web.Response:
    if fault.body is None:
        return web.Response(status=fault.status, headers=fault.headers)
    return web.json_response(fault.body, status=fault.status, headers=fault.headers)


@web.middleware
async def _accounting(request: web.Request, handler: Handler) -> web.StreamResponse:
    control = request.app[CONTROL_KEY]
    if request.path.startswith(CONTROL_PREFIX):
        return await handler(request)
    control.requests += 1
    control.in_flight += 1
    control.max_in_flight = max(control.max_in_flight, control.in_flight)
    try:
        if control.latency_ms:
            await asyncio.sleep(control.latency_ms / 1000)
        fault = control.take_fault(request)
        response = _fault_response(fault) if fault else await handler(request)
    except web.HTTPException as exc:
        response = exc
    finally:
        control.in_flight -= 1
    control.by_status[response.status] += 1
    if len(control.log) < control.log_limit:
        control.log.append(
            {"method": request.method, "path": request.path, "raw_path": request.raw_path.split("?", 1)[0],
             "query": request.query_string, "status": response.status}
        )
    if isinstance(response, web.HTTPException):
        raise response
    return response


async def _set_latency(request: web.Request) -> web.Response:
    body = await request.json()
    request.app[CONTROL_KEY].latency_ms = float(body.get("ms", 0))
    return web.json_response({"ms": request.app[CONTROL_KEY].latency_ms})


async def _add_fault(request: web.Request) -> web.Response:
    body = await request.json()
    fault = Fault(
        path=re.compile(body.get("path", ".*")),
        status=int(body["status"]),
        count=int(body.get("count", 1)),
        method=body.get("method"),
        body=body.get("body"),
        headers={str(k): str(v) for k, v in (body.get("headers") or {}).items()},
    )
    request.app[CONTROL_KEY].faults.append(fault)
    return web.json_response({"queued": len(request.app[CONTROL_KEY].faults)}, status=201)


async def _stats(request: web.Request) -> web.Response:
    control = request.app[CONTROL_KEY]
    return web.json_response(
        {
            "requests": control.requests,
            "in_flight": control.in_flight,
            "max_in_flight": control.max_in_flight,
            "by_status": {str(k): v for k, v in control.by_status.items()},
        }
    )


async def _request_log(request: web.Request) -> web.Response:
    return web.json_response(request.app[CONTROL_KEY].log)


async def _reset(request: web.Request) -> web.Response:
    request.app[CONTROL_KEY].reset()
    return web.json_response({"reset": True})


@dataclass(frozen=True)
class WindowCount:
    """Where one key stands in its current window after a call."""

    allowed: bool
    limit: int
    used: int
    reset_at: float

    @property
    def remaining(self) -> int:
        """Calls left in this window."""
        return max(self.limit - self.used, 0)

    @property
    def retry_after(self) -> int:
        """Whole seconds until the window resets (at least 1)."""
        return max(math.ceil(self.reset_at - time.time()), 1)


class FixedWindowLimiter:
    """At most `limit` calls per `window_s` seconds for each key; a key's window opens at its first call."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._windows: dict[str, tuple[float, int]] = {}

    def hit(self, key: str) -> WindowCount:
        """Count one call by `key`; a refused call is not counted."""
        now = time.time()
        start, used = self._windows.get(key, (now, 0))
        if now >= start + self.window_s:
            start, used = now, 0
        allowed = used < self.limit
        if allowed:
            used += 1
        self._windows[key] = (start, used)
        return WindowCount(allowed, self.limit, used, start + self.window_s)

    def configure(self, body: dict[str, Any]) -> dict[str, Any]:
        """Apply `{"limit": N, "window_s": S}` (either optional), restart every window; return settings."""
        self.limit = int(body.get("limit", self.limit))
        self.window_s = float(body.get("window_s", self.window_s))
        self._windows.clear()
        return self.settings()

    def settings(self) -> dict[str, Any]:
        """The current `{"limit", "window_s"}`."""
        return {"limit": self.limit, "window_s": self.window_s}


def describe_secret(secret: str) -> dict[str, str]:
    """How state dumps name a secret: its sha256 (hex), type prefix and last four characters."""
    prefix = re.match(r"github_pat_|[A-Za-z0-9]{2,5}[_.-]", secret)
    return {
        "sha256": hashlib.sha256(secret.encode()).hexdigest(),
        "prefix": prefix.group(0) if prefix else "",
        "last4": secret[-4:],
    }


def authorization(request: web.Request) -> tuple[str, str] | None:
    """The `Authorization` header split into (lower-case scheme, credentials), or None when absent."""
    header = request.headers.get("Authorization", "").strip()
    if not header:
        return None
    scheme, _, credentials = header.partition(" ")
    return scheme.lower(), credentials.strip()


class ProviderState(Protocol):
    """What `state_routes` needs from an emulator's state model."""

    def seed(self, body: dict[str, Any]) -> dict[str, Any]:
        """Add the seeded objects; return what was created (without secret values)."""

    def dump(self) -> dict[str, Any]:
        """Everything held, without secret values, with revoked/status flags."""

    def clear(self) -> None:
        """Forget everything seeded."""

    def set_limits(self, body: dict[str, Any]) -> dict[str, Any]:
        """Apply new rate limits; return the settings now in force."""


def state_routes(state: ProviderState) -> list[web.RouteDef]:
    """The seed/dump/clear/rate-limit control routes over `state`; a malformed body gets 400."""

    def _with_body(action: Callable[[dict[str, Any]], dict[str, Any]], status: int) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            try:
                body = await request.json()
                if not isinstance(body, dict):
                    raise TypeError("the body must be a JSON object")
                return web.json_response(action(body), status=status)
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                return web.json_response({"error": f"{type(exc).__name__}: {exc}"}, status=400)

        return handler

    async def dump(request: web.Request) -> web.Response:
        return web.json_response(state.dump())

    async def clear(request: web.Request) -> web.Response:
        state.clear()
        return web.json_response({"cleared": True})

    return [
        web.post(CONTROL_PREFIX + "state", _with_body(state.seed, 201)),
        web.get(CONTROL_PREFIX + "state", dump),
        web.delete(CONTROL_PREFIX + "state", clear),
        web.put(CONTROL_PREFIX + "rate-limits", _with_body(state.set_limits, 200)),
    ]


def make_app(routes: list[web.RouteDef], *, middlewares: list[Any] | None = None) -> web.Application:
    """An aiohttp app serving `routes` behind the shared accounting and control API."""
    app = web.Application(middlewares=[_accounting, *(middlewares or [])], client_max_size=1024 * 1024)
    app[CONTROL_KEY] = Control()
    app.add_routes(
        [
            web.put(CONTROL_PREFIX + "latency", _set_latency),
            web.post(CONTROL_PREFIX + "faults", _add_fault),
            web.get(CONTROL_PREFIX + "stats", _stats),
            web.get(CONTROL_PREFIX + "requests", _request_log),
            web.post(CONTROL_PREFIX + "reset", _reset),
            *routes,
        ]
    )
    return app


def serve(build: Callable[[argparse.Namespace], web.Application], *, description: str,
          add_arguments: Callable[[argparse.ArgumentParser], None] | None = None) -> None:
    """Command-line entry point shared by every emulator: parse args, serve, print the READY line."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    if add_arguments:
        add_arguments(parser)
    args = parser.parse_args()
    loop.run(_serve(build(args), args.host, args.port))


async def _serve(app: web.Application, host: str, port: int) -> None:
    runner = web.AppRunner(app, access_log=None, handle_signals=True)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    bound = runner.addresses[0][1]
    print(f"READY http://{host}:{bound}", flush=True)
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        pass
    finally:
        await runner.cleanup()
    sys.stdout.flush()
