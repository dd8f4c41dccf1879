"""The HTTP API served by `orchestrator run`: health, readiness, metrics, and authenticated exposure routes.

Routes: `GET /healthz`, `GET /readyz`, `GET /metrics` (open); `POST /v1/exposures` (role detector),
`POST /v1/triggers`, `GET /v1/exposures`, `GET /v1/exposures/{id}` and `POST /v1/exposures/{id}/replay`
(role responder; the run store);
`GET /v1/approvals`, `POST /v1/runs/{id}/approve|deny` (role responder), `GET /v1/brake`,
`POST /v1/brake/release|hold`, `POST /v1/runs/{id}/undo` (role admin; see `orchestrator.api_safety`);
`POST /v1/ingest/{format}` (no token: signed webhooks, see `orchestrator.api_ingest`);
`admin` implies every role.
Bearer tokens come from ORCHESTRATOR_API_TOKENS_FILE (see `orchestrator.auth`); without one, every `/v1`
route answers 401. Error bodies name fields and reasons, never a submitted value.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from fastapi import Body, Depends, FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline
from pydantic import ValidationError

from orchestrator import api_examples as ex
from orchestrator import api_exposures, api_ingest, api_safety, provenance, triggers
from orchestrator.actions import Provider
from orchestrator.audit import Auditor
from orchestrator.auth import Principal, Role, TokenFile
from orchestrator.broker_health import BrokerHealth
from orchestrator.consumer import ExposureConsumer
from orchestrator.errors import ConfigurationError
from orchestrator.events import Exposure, describe_validation_error
from orchestrator.guard import Guard
from orchestrator.http_server import is_loopback, parse_listen, serve_asgi
from orchestrator.metrics import CONTENT_TYPE, Metrics
from orchestrator.playbooks import Playbook
from orchestrator.settings import Settings
from orchestrator.store import RunStore

MAX_BODY_BYTES = 64 * 1024
API_DETECTOR = "api"  # `source.detector` of triggers made through the API


@dataclass(frozen=True)
class ApiServices:
    """What the API works with: the running orchestrator's producer, consumer, playbooks and metrics."""

    settings: Settings
    producer: AIOKafkaProducer
    consumer: ExposureConsumer
    playbooks: Sequence[Playbook]
    metrics: Metrics
    tokens: TokenFile | None
    #: The broker's reachability as probed in the background; None: ask the broker on each request.
    broker: BrokerHealth | None = None
    #: The run store: `GET /v1/exposures[/{id}]` read it.
    store: RunStore | None = None
    #: Approvals, the brake and undo (`orchestrator.api_safety`): the guard, the audit trail and the providers.
    guard: Guard | None = None
    auditor: Auditor | None = None
    providers: Mapping[str, Provider] | None = None


def load_access(settings: Settings) -> TokenFile | None:
    """The API's tokens; refuse (ConfigurationError) to serve a non-loopback address without a tokens file."""
    if settings.http_listen is None:
        return None
    host, _ = parse_listen(settings.http_listen)
    tokens = TokenFile(settings.api_tokens_file) if settings.api_tokens_file is not None else None
    if tokens is None and not is_loopback(host):
        raise ConfigurationError(
            f"refusing to serve the HTTP API on {settings.http_listen}, which is not a loopback address, "
            "without ORCHESTRATOR_API_TOKENS_FILE (create tokens with `orchestrator api-token create`)"
        )
    return tokens


_bearer = HTTPBearer(auto_error=False, description="An API token from ORCHESTRATOR_API_TOKENS_FILE.")


def _requires(role: Role, tokens: TokenFile | None) -> Callable[..., Awaitable[Principal]]:
    async def authenticate(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        challenge = {"WWW-Authenticate": "Bearer"}
        if tokens is None:
            raise HTTPException(401, "no API tokens are configured (ORCHESTRATOR_API_TOKENS_FILE)", challenge)
        if credentials is None:
            raise HTTPException(401, "missing bearer token", challenge)
        principal = tokens.authenticate(credentials.credentials)
        if principal is None:
            raise HTTPException(401, "invalid bearer token", challenge)
        if not principal.allows(role):
            raise HTTPException(403, f"this route needs the {role.value} role")
        return principal

    return authenticate


def create_app(services: ApiServices) -> FastAPI:
    """The FastAPI application over the running orchestrator's resources."""
    settings = services.settings
    # Swagger UI (/docs) and ReDoc (/redoc) from the assets fastapi-offline ships: the machines this runs on
    # often have no internet, and a CDN would also learn who reads the docs.
    app = FastAPIOffline(title="credential-orchestrator", version="1", docs_url="/docs", redoc_url="/redoc",
                         static_url="/docs/assets", swagger_ui_parameters={"validatorUrl": None},
                         description="Publish exposures, trigger and follow playbooks, and watch the orchestrator. "
                                     "Authorize with an API token (`orchestrator api-token create`).")
    app.add_exception_handler(RequestValidationError, _invalid_request)
    as_detector = Depends(_requires(Role.DETECTOR, services.tokens))
    as_responder = Depends(_requires(Role.RESPONDER, services.tokens))

    @app.get("/healthz", tags=["operations"], responses={200: ex.HEALTHY})
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], responses=ex.READY)
    async def readyz() -> JSONResponse:
        """The broker answers and this member has partitions of the exposures topic assigned."""
        problem = await _readiness_problem(services)
        if problem is not None:
            return JSONResponse({"status": "not ready", "reason": problem}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", tags=["operations"], response_class=Response, responses=ex.METRICS)
    async def metrics() -> Response:
        """Prometheus metrics."""
        return Response(await services.metrics.render(), media_type=CONTENT_TYPE)

    @app.post("/v1/exposures", status_code=202, tags=["exposures"], responses={202: ex.EXPOSURE_ACCEPTED})
    async def post_exposure(exposure: Annotated[Exposure, Body(openapi_examples=ex.EXPOSURE_BODY)], request: Request,
                            principal: Principal = as_detector) -> dict[str, str]:
        """Publish an exposure event (as on the exposures topic) for the pipeline to handle.

        `actor` is the authenticated principal, whatever the body says; `source.detector` defaults to it. Only a
        responder or admin raises the run's priority (a signed record header), never a field of the body.
        """
        value = api_exposures.as_published(await request.body(), principal.name)
        # Signed whatever the role: the consumer then audits `actor` (set here) as verified.
        await triggers.send(services.producer, settings.exposures_topic, exposure.id, value,
                            role=provenance.publisher_role(principal))
        return {"id": exposure.id}

    @app.post("/v1/triggers", status_code=202, tags=["exposures"],
              responses={202: ex.TRIGGER_ACCEPTED, 422: ex.TRIGGER_REFUSED})
    async def post_trigger(trigger: Annotated[triggers.TriggerRequest, Body(openapi_examples=ex.TRIGGER_BODY)],
                           principal: Principal = as_responder) -> dict[str, Any]:
        """Run a playbook now, on behalf of the authenticated principal (the audit trail's `actor`)."""
        try:
            exposure = triggers.build_exposure(trigger, actor=principal.name, detector=API_DETECTOR,
                                               playbooks=services.playbooks)
        except triggers.UnknownPlaybookName as exc:
            raise HTTPException(422, f"playbook: {exc}") from None
        except triggers.UnmatchedTrigger as exc:
            raise HTTPException(422, f"kind: {exc} Set allow_unmatched to publish it anyway.") from None
        except ValidationError as exc:
            raise HTTPException(422, describe_validation_error(exc)) from None
        await triggers.send(services.producer, settings.exposures_topic, exposure.id, triggers.encode(exposure),
                            role=provenance.role_of(principal))
        return {"id": exposure.id, "actor": principal.name, "dry_run": exposure.dry_run,
                "status": f"/v1/exposures/{exposure.id}"}

    if services.store is not None:
        async def publish(key: str, value: bytes) -> None:
            await triggers.send(services.producer, settings.exposures_topic, key, value)

        api_exposures.add_routes(app, services.store, as_responder, playbooks=services.playbooks, publish=publish)
    if services.guard is not None and services.guard.book is not None and services.auditor is not None:
        api_safety.add_routes(app, services.guard, services.auditor, services.providers or {},
                              as_responder=as_responder, as_admin=Depends(_requires(Role.ADMIN, services.tokens)))
    api_ingest.add_routes(app, settings, services.producer)

    return app


async def _readiness_problem(services: ApiServices) -> str | None:
    if services.broker is not None and (problem := services.broker.problem()) is not None:
        return problem
    if not services.consumer.assigned.is_set():
        return "no partitions of the exposures topic assigned yet"
    if services.broker is not None:
        return None
    try:
        async with asyncio.timeout(2):
            await services.producer.client.fetch_all_metadata()
    except (KafkaError, TimeoutError):
        return "the Kafka broker does not answer"
    return None


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """422 naming each bad field and why, without the submitted values (they may be secrets)."""
    assert isinstance(exc, RequestValidationError)
    parts = []
    for error in exc.errors():
        location = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        parts.append(f"{location}: {error.get('msg', 'invalid')}")
    return JSONResponse({"detail": "; ".join(parts)}, status_code=422)


@contextlib.asynccontextmanager
async def serving(services: ApiServices) -> AsyncIterator[str]:
    """Serve the API on `settings.http_listen` until the block ends; yields the base URL."""
    assert services.settings.http_listen is not None
    async with serve_asgi(create_app(services), services.settings.http_listen, max_body=MAX_BODY_BYTES) as url:
        yield url
