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

Run: `python -m orchestrator.emulators.faultproxy --upstream http://127.0.0.1:5000 --port 0`.
"""

from __future__ import annotations

import argparse
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from urllib.parse import parse_qs
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


FAULTS_KEY = web.AppKey("aws_faults", list[AwsFault])
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


def build(upstream: str) -> web.Application:
    """The proxy application forwarding to `upstream` (e.g. `http://127.0.0.1:5000`)."""
    app = make_app([
        web.post(CONTROL_PREFIX + "aws-faults", _add_faults),
        web.get(CONTROL_PREFIX + "aws-faults", _list_faults),
        web.delete(CONTROL_PREFIX + "aws-faults", _clear_faults),
        web.route("*", "/{tail:.*}", _forward),
    ])
    app[FAULTS_KEY] = []
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

