"""`GET /v1/exposures` and `GET /v1/exposures/{id}`: exposures and their runs, read from the run store; and what
`POST /v1/exposures` publishes (`as_published`)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Path, Query

from orchestrator import api_examples as ex
from orchestrator.store import AmbiguousPrefix, RunStore, State

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


def add_routes(app: FastAPI, store: RunStore, as_responder: Any) -> None:
    """Register the read routes on `app` (role responder)."""

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
        try:
            rows = await store.lookup(exposure_id)
        except AmbiguousPrefix as exc:
            raise HTTPException(409, f"several exposure ids start with this prefix ({len(exc.ids)} or more)") \
                from None
        if not rows:
            raise HTTPException(404, "no exposure with this id in the run store")
        latest = rows[0]
        return {**document(latest), "done": State(latest["state"]).terminal,
                "runs": [document(r) for r in rows[1:]]}


def document(row: dict[str, Any]) -> dict[str, Any]:
    """A store row as the API shows it: times in ISO 8601 UTC."""
    return {k: (v.isoformat() + "Z" if isinstance(v, datetime) else v) for k, v in row.items() if k not in _HIDDEN
            } | ({"steps": [document(s) for s in row["steps"]]} if "steps" in row else {})
