"""`POST /v1/ingest/{format}`: detectors' signed webhooks, verified, normalised by `orchestrator.formats`, published.

No bearer token: the signature is the authentication. Formats and their signatures:
- `github-secret-scanning`: a GitHub webhook (`X-Hub-Signature-256`, secret ORCHESTRATOR_GITHUB_WEBHOOK_SECRET)
  or a secret-scanning partner delivery (`Github-Public-Key-Identifier`/`-Signature`, keys from
  ORCHESTRATOR_GITHUB_PARTNER_KEYS);
- `gitguardian`: `Gitguardian-Signature` and `Timestamp` (token ORCHESTRATOR_GITGUARDIAN_WEBHOOK_SECRET);
- `ssf`: RFC 8935 push delivery of one SET (`application/secevent+jwt`), verified against ORCHESTRATOR_SSF_JWKS;
  202 on success, else 400 with `{"err", "description"}` (`invalid_request`, `invalid_key`,
  `authentication_failed`, `invalid_issuer`, `invalid_audience`).
A bad or missing signature, a stale or replayed delivery → 401 (SSF: its error) and nothing is published.
Responses name reasons, never a submitted value.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import jwt
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from fastapi import FastAPI, Path, Request
from fastapi.responses import JSONResponse, Response

from orchestrator import api_examples, formats, triggers
from orchestrator.errors import FormatError
from orchestrator.events import Exposure
from orchestrator.settings import IngestSettings, Settings
from orchestrator.webhooks import signatures
from orchestrator.webhooks.keys import CachedKeys, KeysUnavailable
from orchestrator.webhooks.replay import ReplayGuard

SSF_CONTENT_TYPE = "application/secevent+jwt"
#: GitHub webhook events that carry exposures; others (ping, ...) are acknowledged and ignored.
_GITHUB_EVENTS = frozenset({"secret_scanning_alert"})


@dataclass
class _Ingest:
    settings: Settings
    producer: AIOKafkaProducer
    replays: ReplayGuard
    partner_keys: CachedKeys[dict[str, Any]] | None = None
    jwks: CachedKeys[dict[str, Any]] | None = None
    clock: Callable[[], float] = field(default=time.time)

    async def publish(self, format: str, body: bytes, replay_key: str,
                      options: formats.Options | None = None) -> JSONResponse:
        """Normalise and publish a verified delivery once; the replay claim is dropped if that fails."""
        try:
            batch = formats.parse(format, body, options=options)
        except FormatError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=400)
        return await self.publish_batch(batch, replay_key)

    async def publish_batch(self, batch: formats.Batch, replay_key: str) -> JSONResponse:
        """Publish a verified, normalised delivery unless it is a replay (401)."""
        if not self.replays.claim(replay_key):
            return _unauthorized("replayed delivery: already received")
        try:
            await self._send(batch.exposures)
        except KafkaError as exc:
            self.replays.release(replay_key)
            return JSONResponse({"detail": f"cannot publish now ({type(exc).__name__}): retry"}, status_code=503)
        return JSONResponse({"published": len(batch.exposures), "ids": [e.id for e in batch.exposures]},
                            status_code=202)

    async def _send(self, exposures: tuple[Exposure, ...]) -> None:
        for exposure in exposures:
            await triggers.send(self.producer, self.settings.exposures_topic, exposure.id, triggers.encode(exposure))


def add_routes(app: FastAPI, settings: Settings, producer: AIOKafkaProducer) -> None:
    """Register `POST /v1/ingest/{format}` on `app`."""
    config = settings.ingest
    ingest = _Ingest(settings, producer, ReplayGuard(config.webhook_max_age_s),
                     partner_keys=CachedKeys(config.github_partner_keys, signatures.partner_keys,
                                             ttl_s=config.keys_cache_s) if config.github_partner_keys else None,
                     jwks=CachedKeys(config.ssf_jwks, _jwks, ttl_s=config.keys_cache_s) if config.ssf_jwks else None)
    handlers: dict[str, Callable[[_Ingest, IngestSettings, Request, bytes], Awaitable[Response]]] = {
        "github-secret-scanning": _github, "gitguardian": _gitguardian, "ssf": _ssf}

    @app.post("/v1/ingest/{format}", status_code=202, tags=["ingest"], responses=api_examples.INGEST)
    async def ingest_webhook(format: Annotated[str, Path(openapi_examples=api_examples.INGEST_FORMAT)],
                             request: Request) -> Response:
        """A detector's signed webhook delivery: verified, made into exposures, published."""
        handler = handlers.get(format)
        if handler is None:
            return JSONResponse({"detail": f"no signed webhook for format {format[:40]!r}; known: "
                                           f"{', '.join(handlers)} (other formats: POST /v1/exposures or "
                                           f"`orchestrator publish`)"}, status_code=404)
        return await handler(ingest, config, request, await request.body())


async def _github(ingest: _Ingest, config: IngestSettings, request: Request, body: bytes) -> Response:
    headers = request.headers
    if "github-public-key-signature" in headers or "github-public-key-identifier" in headers:
        if ingest.partner_keys is None:
            return _unauthorized("partner deliveries are not configured (ORCHESTRATOR_GITHUB_PARTNER_KEYS)")
        signature = headers.get("github-public-key-signature")
        try:
            try:
                signatures.github_partner(body, headers.get("github-public-key-identifier"), signature,
                                          await ingest.partner_keys.get())
            except signatures.UnknownKey:  # GitHub may have rotated its keys: look again once
                signatures.github_partner(body, headers.get("github-public-key-identifier"), signature,
                                          await ingest.partner_keys.get(refresh=True))
        except signatures.Rejected as exc:
            return _unauthorized(str(exc))
        except KeysUnavailable as exc:
            return JSONResponse({"detail": str(exc)}, status_code=503)
        # Keyed by the body, not the signature: an ECDSA signature has a twin, (r, n - s), that verifies as well,
        # and base64 has several spellings of the same bytes.
        return await ingest.publish("github-secret-scanning", body,
                                    f"github-partner:{hashlib.sha256(body).hexdigest()}")
    if config.github_webhook_secret is None:
        return _unauthorized("GitHub webhooks are not configured (ORCHESTRATOR_GITHUB_WEBHOOK_SECRET)")
    signature = headers.get("x-hub-signature-256")
    try:
        digest = signatures.github_hmac(body, signature, config.github_webhook_secret)
    except signatures.Rejected as exc:
        return _unauthorized(str(exc))
    event = headers.get("x-github-event", "")
    if event not in _GITHUB_EVENTS:
        return JSONResponse({"published": 0, "ignored": f"event {event[:60]!r} carries no exposure"},
                            status_code=202)
    # The signature covers no timestamp and X-GitHub-Delivery is not signed (a replay can carry any id): the
    # signed body's digest is what tells a replay; a redelivery by GitHub has the same body, so it is one too.
    return await ingest.publish("github-secret-scanning", body, f"github:{digest}")


async def _gitguardian(ingest: _Ingest, config: IngestSettings, request: Request, body: bytes) -> Response:
    if config.gitguardian_webhook_secret is None:
        return _unauthorized("GitGuardian webhooks are not configured (ORCHESTRATOR_GITGUARDIAN_WEBHOOK_SECRET)")
    signature = request.headers.get("gitguardian-signature")
    try:
        digest = signatures.gitguardian_hmac(body, signature, request.headers.get("timestamp"),
                                             config.gitguardian_webhook_secret, now=ingest.clock(),
                                             max_age_s=config.webhook_max_age_s)
    except signatures.Rejected as exc:
        return _unauthorized(str(exc))
    return await ingest.publish("gitguardian", body, f"gitguardian:{digest}")


async def _ssf(ingest: _Ingest, config: IngestSettings, request: Request, body: bytes) -> Response:
    body = body.strip()  # a transmitter's trailing newline is not part of the compact JWS
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != SSF_CONTENT_TYPE:
        return _set_error("invalid_request", f"Content-Type must be {SSF_CONTENT_TYPE}")
    if ingest.jwks is None:
        return _set_error("authentication_failed", "SET delivery is not configured (ORCHESTRATOR_SSF_JWKS)")
    try:
        header = jwt.get_unverified_header(body)
    except jwt.PyJWTError:
        return _set_error("invalid_request", "the body is not a compact JWS")
    kid = header.get("kid")
    try:
        jwks = await ingest.jwks.get()
        if kid is not None and kid not in _kids(jwks):  # a key the transmitter rotated in: look again once
            jwks = await ingest.jwks.get(refresh=True)
    except KeysUnavailable as exc:
        return JSONResponse({"err": "invalid_key", "description": str(exc)}, status_code=503)
    if kid is not None and kid not in _kids(jwks):
        return _set_error("invalid_key", "the SET's kid names no key of the transmitter's JWKS")
    options = formats.Options(jwks=jwks, issuer=config.ssf_issuer, audience=config.ssf_audience)
    try:
        batch = formats.parse("ssf", body, options=options)  # verifies; the claims below are read only once it has
    except FormatError as exc:
        return _set_error(_set_error_code(exc.reason), exc.reason)
    claims = jwt.decode(body, options={"verify_signature": False})
    response = await ingest.publish_batch(batch, f"ssf:{claims.get('iss')}:{claims.get('jti')}")
    if response.status_code == 202:
        return Response(status_code=202)
    if response.status_code == 401:
        return _set_error("invalid_request", "replayed SET: this jti was already received")
    return response


def _set_error_code(reason: str) -> str:
    """The RFC 8935 error code for the SSF adapter's reason."""
    if reason.startswith("signature failed"):
        return "authentication_failed"
    if reason.startswith("invalidissuer"):
        return "invalid_issuer"
    if reason.startswith("invalidaudience"):
        return "invalid_audience"
    return "invalid_request"


def _jwks(document: Any) -> dict[str, Any]:
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError('not a JSON Web Key Set (expected {"keys": [...]})')
    return document


def _kids(jwks: dict[str, Any]) -> set[str]:
    return {key["kid"] for key in jwks["keys"] if isinstance(key, dict) and isinstance(key.get("kid"), str)}


def _unauthorized(reason: str) -> JSONResponse:
    return JSONResponse({"detail": reason}, status_code=401)


def _set_error(code: str, description: str) -> JSONResponse:
    return JSONResponse({"err": code, "description": description}, status_code=400)
