"""A reverse proxy in front of moto_server that injects AWS-shaped throttling and server errors at run time.

moto serves AWS APIs faithfully but cannot fail on demand; this proxy forwards every request to
`--upstream` unchanged and, when told to, answers in the upstream's place with the error AWS itself sends:

- query-protocol services (IAM, STS): `<ErrorResponse><Error><Type>Sender|Receiver</Type><Code>Throttling</Code>
  <Message>Rate exceeded</Message></Error><RequestId>...</RequestId></ErrorResponse>` (IAM throttles with
  HTTP 400 `Throttling`; 5xx are `ServiceUnavailable` 503 or `InternalFailure` 500);
- JSON-protocol services (Secrets Manager...): `{"__type": "ThrottlingException", "message": ...}` with
  `x-amzn-ErrorType`.

Control (besides `_base`, whose `/_emulator/faults` still answers raw, path-matched faults):

- `POST /_emulator/aws-faults` `{"code": "Throttling", "status": 400, "count": 2, "service": "iam",
  "action": "UpdateAccessKey", "message": "Rate exceeded"}` — the next `count` requests for that service
  (SigV4 credential scope) and action (`Action=` form field or `X-Amz-Target`) get the error; `service`,
  `action`, `status` (default: 400 for throttling codes, else 500), `count` (1) and `message` are optional.
- `GET /_emulator/aws-faults` lists the faults still queued; `DELETE /_emulator/aws-faults` clears them.
- `PUT /_emulator/chaos` `{"error_rate": 0.3, "error_status": 503, "timeout_rate": 0.1, "timeout_s": 30,
  "slow_rate": 0.05, "slow_s": 5, "burst_every": 50, "burst_length": 5, "retry_after_s": 1, "echo": true,
  "seed": 7}` — random faults for any upstream (every field optional, rates are per request): an error status,
  a response held for `timeout_s` (longer than the client waits), a correct answer after `slow_s`, and after
  every `burst_every` requests a burst of `burst_length` 429s (`Retry-After`, Okta's `X-Rate-Limit-*`). With
  `echo`, error bodies repeat the caller's credentials (raw, URL-encoded, JSON-escaped) as careless providers
  do, to prove they never leak further. `GET /_emulator/chaos` returns the settings and what was injected;
  `DELETE /_emulator/chaos` turns it off.

Run: `python -m orchestrator.emulators.faultproxy --upstream http://127.0.0.1:5000 --port 0`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote
from xml.sax.saxutils import escape

import aiohttp
from aiohttp import web

from orchestrator.emulators._base import CONTROL_PREFIX, make_app, serve

_THROTTLING_CODES = frozenset({"Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException"})
# Hop-by-hop headers, and the length aiohttp recomputes; bodies pass through undecoded.
_DROP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "te", "trailer", "upgrade",
                   "proxy-authorization", "proxy-authenticate"})
_SCOPE = re.compile(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/aws4_request")


@dataclass
class AwsFault:
    """An AWS error to answer with, for the next `count` matching requests."""

    code: str
    status: int
    count: int = 1
    service: str | None = None
    action: str | None = None
    message: str = "Rate exceeded"

    def matches(self, service: str | None, action: str | None) -> bool:
        """True when the request is for this fault's service and action (each optional)."""
        return (self.service is None or self.service == service) and (self.action is None or self.action == action)


@dataclass
class Chaos:
    """Random faults for every proxied request (all off by default) and the count of each one injected."""

    error_rate: float = 0.0
    error_status: int = 503
    timeout_rate: float = 0.0
    timeout_s: float = 30.0
    slow_rate: float = 0.0
    slow_s: float = 5.0
    burst_every: int = 0
    burst_length: int = 0
    retry_after_s: int = 1
    echo: bool = False
    seed: int | None = None
    injected: dict[str, int] = field(default_factory=dict)
    _requests: int = 0
    _burst_left: int = 0
    _random: random.Random = field(default_factory=random.Random, repr=False)

    def configure(self, body: dict[str, Any]) -> None:
        """Apply the settings given (the rest keep their values), reseed, and zero the counters."""
        for name in ("error_rate", "timeout_rate", "timeout_s", "slow_rate", "slow_s"):
            if name in body:
                setattr(self, name, float(body[name]))
        for name in ("error_status", "burst_every", "burst_length", "retry_after_s"):
            if name in body:
                setattr(self, name, int(body[name]))
        self.echo = bool(body.get("echo", self.echo))
        self.seed = None if body.get("seed") is None else int(body["seed"])
        self._random = random.Random(self.seed)  # noqa: S311 - fault injection, not cryptography
        self.injected = {}
        self._requests = self._burst_left = 0

    def settings(self) -> dict[str, Any]:
        """The settings in force and the faults injected so far."""
        shown = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        return {**shown, "requests": self._requests}

    def draw(self) -> str | None:
        """The fault for the next request: `429`, `error`, `timeout`, `slow` or None (forward it as it is)."""
        self._requests += 1
        if self.burst_every and self._requests % self.burst_every == 0:
            self._burst_left = self.burst_length
        if self._burst_left > 0:
            self._burst_left -= 1
            return self._count("429")
        roll = self._random.random()
        for name, rate in (("error", self.error_rate), ("timeout", self.timeout_rate), ("slow", self.slow_rate)):
            if roll < rate:
                return self._count(name)
            roll -= rate
        return None

    def _count(self, name: str) -> str:
        self.injected[name] = self.injected.get(name, 0) + 1
        return name


def _echoed(request: web.Request) -> str:
    """The caller's credentials as a careless provider repeats them: raw, URL-encoded and JSON-escaped."""
    credentials = request.headers.get("Authorization", "").partition(" ")[2]
    return f"{credentials} {quote(credentials, safe='')} {json.dumps(credentials)}" if credentials else ""


def _chaos_response(chaos: Chaos, fault: str, request: web.Request) -> web.Response:
    echo = _echoed(request) if chaos.echo else ""
    if fault == "429":
        reset = str(int(time.time()) + chaos.retry_after_s)
        headers = {"Retry-After": str(chaos.retry_after_s), "X-Rate-Limit-Limit": "600",
                   "X-Rate-Limit-Remaining": "0", "X-Rate-Limit-Reset": reset}
        body = {"errorCode": "E0000047", "errorSummary": f"API call exceeded rate limit due to too many requests."
                f" {echo}".rstrip(), "ok": False, "error": "ratelimited"}
        return web.json_response(body, status=429, headers=headers)
    summary = f"Service unavailable {echo}".rstrip()
    body = {"errorCode": "E0000009", "errorSummary": summary, "ok": False, "error": "service_unavailable",
            "message": summary}
    return web.json_response(body, status=chaos.error_status if fault == "error" else 504)


FAULTS_KEY = web.AppKey("aws_faults", list[AwsFault])
CHAOS_KEY = web.AppKey("chaos", Chaos)
SESSION_KEY = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM_KEY = web.AppKey("upstream", str)


def _service_and_action(request: web.Request, body: bytes) -> tuple[str | None, str | None]:
    scope = _SCOPE.search(request.headers.get("Authorization", ""))
    service = scope.group(1) if scope else None
    if target := request.headers.get("X-Amz-Target"):
        return service, target.rsplit(".", 1)[-1]
    actions = parse_qs(body.decode("utf-8", errors="replace")).get("Action") or parse_qs(request.query_string).get(
        "Action")
    return service, actions[0] if actions else None


def _error_response(fault: AwsFault, json_protocol: bool) -> web.Response:
    request_id = str(uuid.uuid4())
    headers = {"x-amzn-RequestId": request_id}
    if json_protocol:
        headers["x-amzn-ErrorType"] = fault.code
        return web.Response(status=fault.status, headers=headers, content_type="application/x-amz-json-1.1",
                            text=json.dumps({"__type": fault.code, "message": fault.message}))
    kind = "Sender" if fault.status < 500 else "Receiver"
    xml = (f"<ErrorResponse><Error><Type>{kind}</Type><Code>{escape(fault.code)}</Code>"
           f"<Message>{escape(fault.message)}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>")
    return web.Response(status=fault.status, headers=headers, content_type="text/xml", text=xml)


def _take(faults: list[AwsFault], service: str | None, action: str | None) -> AwsFault | None:
    for fault in faults:
        if fault.matches(service, action):
            fault.count -= 1
            if fault.count <= 0:
                faults.remove(fault)
            return fault
    return None


async def _forward(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    service, action = _service_and_action(request, body)
    if fault := _take(request.app[FAULTS_KEY], service, action):
        return _error_response(fault, json_protocol="X-Amz-Target" in request.headers)
    chaos = request.app[CHAOS_KEY]
    drawn = chaos.draw()
    if drawn == "timeout":  # held past the client's patience; answered only if it still waits
        await asyncio.sleep(chaos.timeout_s)
    elif drawn == "slow":
        await asyncio.sleep(chaos.slow_s)
    if drawn in ("429", "error", "timeout"):
        return _chaos_response(chaos, drawn, request)
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP}
    url = request.app[UPSTREAM_KEY] + request.rel_url.raw_path_qs
    async with request.app[SESSION_KEY].request(request.method, url, headers=headers, data=body,
                                                allow_redirects=False) as upstream:
        payload = await upstream.read()
        out = {k: v for k, v in upstream.headers.items() if k.lower() not in _DROP}
        return web.Response(status=upstream.status, headers=out, body=payload)


async def _add_faults(request: web.Request) -> web.Response:
    try:
        body = await request.json()
        code = str(body["code"])
        fault = AwsFault(
            code=code, status=int(body.get("status", 400 if code in _THROTTLING_CODES else 500)),
            count=int(body.get("count", 1)), service=body.get("service"), action=body.get("action"),
            message=str(body.get("message", "Rate exceeded" if code in _THROTTLING_CODES else "Internal failure")),
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        return web.json_response({"error": f"{type(exc).__name__}: {exc}"}, status=400)
    request.app[FAULTS_KEY].append(fault)
    return web.json_response({"queued": len(request.app[FAULTS_KEY])}, status=201)


async def _list_faults(request: web.Request) -> web.Response:
    return web.json_response([asdict(f) for f in request.app[FAULTS_KEY]])


async def _clear_faults(request: web.Request) -> web.Response:
    request.app[FAULTS_KEY].clear()
    return web.json_response({"cleared": True})


async def _set_chaos(request: web.Request) -> web.Response:
    chaos = request.app[CHAOS_KEY]
    try:
        body = await request.json()
        if not isinstance(body, dict):
            raise TypeError("the body must be a JSON object")
        chaos.configure(body)
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        return web.json_response({"error": f"{type(exc).__name__}: {exc}"}, status=400)
    return web.json_response(chaos.settings())


async def _show_chaos(request: web.Request) -> web.Response:
    return web.json_response(request.app[CHAOS_KEY].settings())


async def _stop_chaos(request: web.Request) -> web.Response:
    request.app[CHAOS_KEY].configure(Chaos().settings())  # every setting back to its default (off)
    return web.json_response({"cleared": True})


def build(upstream: str) -> web.Application:
    """The proxy application forwarding to `upstream` (e.g. `http://127.0.0.1:5000`)."""
    app = make_app([
        web.post(CONTROL_PREFIX + "aws-faults", _add_faults),
        web.get(CONTROL_PREFIX + "aws-faults", _list_faults),
        web.delete(CONTROL_PREFIX + "aws-faults", _clear_faults),
        web.put(CONTROL_PREFIX + "chaos", _set_chaos),
        web.get(CONTROL_PREFIX + "chaos", _show_chaos),
        web.delete(CONTROL_PREFIX + "chaos", _stop_chaos),
        web.route("*", "/{tail:.*}", _forward),
    ])
    app[FAULTS_KEY] = []
    app[CHAOS_KEY] = Chaos()
    app[UPSTREAM_KEY] = upstream.rstrip("/")

    async def session(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(auto_decompress=False) as client:
            app[SESSION_KEY] = client
            yield

    app.cleanup_ctx.append(session)
    return app


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--upstream", required=True, help="base URL of the server to proxy, e.g. moto_server")


def _build(args: argparse.Namespace) -> web.Application:
    return build(str(args.upstream))


if __name__ == "__main__":
    serve(_build, description=__doc__.splitlines()[0], add_arguments=_arguments)

