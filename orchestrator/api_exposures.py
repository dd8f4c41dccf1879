"""`GET /v1/exposures[/{id}]` (exposures and their runs, read from the run store),
`POST /v1/exposures/{id}/replay` (run a failed one again), and what `POST /v1/exposures` publishes
(`as_published`)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from orchestrator import api_examples as ex
from orchestrator import replay
from orchestrator.auth import Principal
from orchestrator.playbooks import Playbook
from orchestrator.store import AmbiguousPrefix, RunStore, State

#: Publishes one record on the exposures topic: (key, value).
Publish = Callable[[str, bytes], Awaitable[None]]


class ReplayBody(BaseModel):
    """The body of `POST /v1/exposures/{id}/replay` (optional)."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="replayed through the API", min_length=1, max_length=2000)
    dry_run: bool = Field(default=False, description="say what would be skipped and run; publish nothing")

#: Fields of a store row that are the store's own bookkeeping, not the exposure's story.
_HIDDEN = frozenset({"row_id", "dedup_key", "source_topic", "source_partition", "source_offset"})


def as_published(body: bytes, principal: str) -> bytes:
    """The record `POST /v1/exposures` publishes: the body as sent (fields this version does not know still reach
    newer consumers), with `actor` set to the authenticated principal and `source.detector` defaulting to it."""
    # The stdlib's json, as FastAPI used to accept the body: what it accepted (a 5,000-digit number in a field
    # this version ignores, say) must not fail here.
    document = json.loads(body)
    document["actor"] = principal
    source = document.get("source")
    source = dict(source) if isinstance(source, dict) else {}
    if not isinstance(source.get("detector"), str) or not source["detector"].strip():
        source["detector"] = principal
    document["source"] = source
    return json.dumps(document).encode()


def add_routes(app: FastAPI, store: RunStore, as_responder: Any, *, playbooks: Sequence[Playbook] = (),
               publish: Publish | None = None) -> None:
    """Register the routes on `app` (role responder); replay only with `publish`."""

    @app.get("/v1/exposures", tags=["exposures"], responses={200: ex.EXPOSURE_LIST})
    async def list_exposures(
        state: Annotated[State | None, Query(description="only this state", openapi_examples=ex.STATE_FILTER)] = None,
        kind: Annotated[str | None, Query(max_length=100, description="only this credential kind")] = None,
        owner: Annotated[str | None, Query(max_length=500, description="only this credential owner")] = None,
        detector: Annotated[str | None, Query(max_length=200, description="only this detector")] = None,
        since: Annotated[datetime | None, Query(description="received at or after (ISO 8601)",
                                                openapi_examples=ex.SINCE_FILTER)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        cursor: Annotated[str | None, Query(max_length=200, description="`next` of the previous page")] = None,
        _: Any = as_responder,
    ) -> dict[str, Any]:
        """Exposures, newest first, a page at a time: follow `next` until it is null."""
        try:
            rows, following = await store.recent(state=state.value if state else None, kind=kind, owner=owner,
                                                 detector=detector, since=since, limit=limit, cursor=cursor)
        except ValueError:
            raise HTTPException(422, "cursor: not a cursor this API returned") from None
        return {"exposures": [document(r) for r in rows], "next": following}

    @app.get("/v1/exposures/{exposure_id:path}", tags=["exposures"],
             responses={200: ex.EXPOSURE_ONE, 404: {"description": "unknown"},
                        409: {"description": "ambiguous prefix"}})
    async def get_exposure(exposure_id: Annotated[str, Path(openapi_examples=ex.EXPOSURE_ID)],
                           _: Any = as_responder) -> dict[str, Any]:
        """An exposure (by id, or a prefix matching one), where it stands, its steps; earlier reports of the
        same id with other content under `runs`."""
        rows = await _rows_of(store, exposure_id)
        latest = rows[0]
        return {**document(latest), "done": State(latest["state"]).terminal,
                "runs": [document(r) for r in rows[1:]]}


    if publish is None:
        return

    @app.post("/v1/exposures/{exposure_id:path}/replay", tags=["exposures"], status_code=202,
              responses={202: ex.REPLAYED, 200: {"description": "dry run: the plan"}, 404: {"description": "unknown"},
                         409: {"description": "not failed, or an ambiguous prefix"},
                         422: {"description": "cannot be replayed, and why"}})
    async def replay_exposure(exposure_id: str, body: ReplayBody | None = None,
                              principal: Principal = as_responder) -> Any:
        """Run a failed exposure again as a new run that skips the steps already succeeded, on behalf of the
        authenticated principal (its `actor`), through the consumer like any exposure."""
        asked = body or ReplayBody()
        rows = await _rows_of(store, exposure_id)
        plan = replay.plan(rows[0], playbooks)
        if asked.dry_run:
            return JSONResponse(plan.describe())
        if not plan.possible:
            raise HTTPException(409 if plan.state != "failed" else 422, plan.problem)
        request = replay.new_request(rows[0], actor=principal.name, reason=asked.reason, at=datetime.now(UTC))
        await publish(request.exposure_id, replay.encode(request))
        return {**plan.describe(), "request_id": request.request_id, "actor": principal.name,
                "status": f"/v1/exposures/{request.exposure_id}"}


def document(row: dict[str, Any]) -> dict[str, Any]:
    """A store row as the API shows it: times in ISO 8601 UTC."""
    return {k: (v.isoformat() + "Z" if isinstance(v, datetime) else v) for k, v in row.items() if k not in _HIDDEN
            } | ({"steps": [document(s) for s in row["steps"]]} if "steps" in row else {})


async def _rows_of(store: RunStore, exposure_id: str) -> list[dict[str, Any]]:
    """The exposure's rows, newest first (by id or a unique prefix); 409 for an ambiguous prefix, 404 for none."""
    try:
        rows = await store.lookup(exposure_id)
    except AmbiguousPrefix as exc:
        raise HTTPException(409, f"several exposure ids start with this prefix ({len(exc.ids)} or more)") from None
    if not rows:
        raise HTTPException(404, "no exposure with this id in the run store")
    return rows
