"""The HTTP API served by the Orchestrator: roles and tokens, body limits, validation, the audit actor,
metrics and the on-call webhook, all over real HTTP against the real broker and Okta emulator."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest

from orchestrator import provenance
from orchestrator.app import Orchestrator
from orchestrator.auth import Role, new_token, token_entry, write_private
from orchestrator.embedded import free_port
from orchestrator.errors import ConfigurationError
from orchestrator.settings import Settings
from orchestrator.webhook import summary
from tests.conftest import Emulator, okta_token
from tests.support import Harness, Receiver, exposure, fresh_settings, read_all


@dataclass(frozen=True)
class Api:
    """The running API: its base URL, a token per role, the harness behind it and the webhook receiver."""

    url: str
    tokens: dict[str, str]
    harness: Harness
    receiver: Receiver


@pytest.fixture(scope="module")
async def api(bootstrap: str, okta: Emulator, receiver: Receiver,
              tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    """An orchestrator serving its API on a free loopback port, with one token per role."""
    tokens = {role.value: new_token() for role in Role}
    tokens_file = tmp_path_factory.mktemp("api") / "tokens.json"
    entries = [token_entry(token, f"{role}-bot", [Role(role)]) for role, token in tokens.items()]
    write_private(tokens_file, json.dumps({"tokens": entries}))
    settings = fresh_settings(bootstrap, okta.url, okta.admin_token, http_listen=f"127.0.0.1:{free_port()}",
                              api_tokens_file=tokens_file, oncall_webhook_url=receiver.url)
    async with Harness(settings) as harness:
        assert harness.orchestrator.api_url is not None
        yield Api(harness.orchestrator.api_url, tokens, harness, receiver)


@pytest.fixture
async def http(api: Api) -> AsyncIterator[httpx.AsyncClient]:
    """A client for the API."""
    async with httpx.AsyncClient(base_url=api.url, timeout=15) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    """The Authorization header for a token."""
    return {"Authorization": f"Bearer {token}"}


def _user(okta: Emulator) -> str:
    login = f"api.{secrets.token_hex(4)}@example.com"
    okta.seed({"users": [{"login": login, "sessions": [f"102{secrets.token_hex(8)}"]}]})
    return login


async def test_operations_routes_are_open(api: Api, http: httpx.AsyncClient) -> None:
    """healthz, readyz (joined and broker up), metrics and the OpenAPI document need no token."""
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    assert (await http.get("/readyz")).json() == {"status": "ready"}
    metrics = await http.get("/metrics")
    assert metrics.status_code == 200 and "orchestrator_runs_in_flight" in metrics.text
    assert "orchestrator_consumer_lag" in metrics.text
    paths = (await http.get("/openapi.json")).json()["paths"]
    assert {"/v1/exposures", "/v1/triggers", "/v1/exposures/{exposure_id}", "/metrics"} <= set(paths)


ROUTES = [("POST", "/v1/exposures", "detector"), ("POST", "/v1/triggers", "responder"),
          ("GET", "/v1/exposures/no-such-exposure", "responder")]


@pytest.mark.parametrize(("method", "path", "role"), ROUTES)
async def test_each_route_answers_each_role(api: Api, http: httpx.AsyncClient, method: str, path: str,
                                            role: str) -> None:
    """No or a bad token: 401; another role: 403; the route's role or admin: past authentication."""
    body = {"id": f"api-{secrets.token_hex(6)}", "credential": {"kind": "test.unmatched", "id": "x"}} \
        if path == "/v1/exposures" else {"kind": "test.unmatched", "id": "x", "dry_run": True, "allow_unmatched": True}
    send = {"json": body} if method == "POST" else {}
    assert (await http.request(method, path, **send)).status_code == 401
    bad = await http.request(method, path, headers=bearer(new_token()), **send)
    assert bad.status_code == 401 and bad.headers["www-authenticate"] == "Bearer"
    success = 404 if method == "GET" else 202
    for who, token in api.tokens.items():
        expected = success if who in (role, "admin") else 403
        answer = await http.request(method, path, headers=bearer(token), **send)
        assert answer.status_code == expected, (who, answer.text)


async def test_trigger_runs_as_the_authenticated_principal(api: Api, http: httpx.AsyncClient,
                                                           okta: Emulator) -> None:
    """POST /v1/triggers: actor is the token's principal (not the body's); GET shows history and state."""
    login = _user(okta)
    answer = await http.post("/v1/triggers", headers=bearer(api.tokens["responder"]),
                             json={"kind": "okta.session", "owner": login, "reason": "paged", "actor": "mallory"})
    assert answer.status_code == 202
    exposure_id = answer.json()["id"]
    await api.harness.collect(exposure_id)
    history = await _ended(http, exposure_id, api.tokens["admin"])
    assert history["state"] == "completed" and history["terminal_event"] == "run.completed"
    assert history["actor"] == "responder-bot" and history["detector"] == "api"
    assert [(s["step"], s["state"]) for s in history["steps"]] == [("clear-owner-sessions", "succeeded")]
    users = okta.control("GET", "state")["users"]
    assert all(s["revoked"] for s in next(u for u in users if u["login"] == login)["sessions"])
    metrics = (await http.get("/metrics")).text
    assert 'orchestrator_exposures_total{outcome="run.completed"}' in metrics
    assert 'orchestrator_step_duration_seconds_count{action="okta.clear_user_sessions",outcome="succeeded"}' \
        in metrics
    # The governor's state, learned from the Okta responses of that run.
    assert 'orchestrator_governor_in_flight{provider="okta"}' in metrics
    assert 'orchestrator_governor_limit{bucket="users",provider="okta"}' in metrics
    assert 'orchestrator_governor_remaining{bucket="users",provider="okta"}' in metrics


async def _ended(http: httpx.AsyncClient, exposure_id: str, token: str) -> dict[str, Any]:
    """GET /v1/exposures/{id} once the store has its end (written just after the audit record is acknowledged)."""
    async with asyncio.timeout(10):
        while True:
            answer = await http.get(f"/v1/exposures/{exposure_id}", headers=bearer(token))
            assert answer.status_code == 200, answer.text
            if answer.json()["done"]:
                return dict(answer.json())
            await asyncio.sleep(0.1)


async def test_exposures_are_listed_newest_first_a_page_at_a_time(api: Api, http: httpx.AsyncClient) -> None:
    """GET /v1/exposures: filters, `limit` and `next` cursors; an exposure is also found by a unique prefix."""
    kind = f"test.unmatched.{secrets.token_hex(3)}"
    events = [exposure(kind, credential={"id": f"k{n}"}) for n in range(5)]
    for event in events:  # one by one: received in this order
        await api.harness.run(event)
    await _ended(http, events[-1]["id"], api.tokens["responder"])
    token = bearer(api.tokens["responder"])
    seen: list[str] = []
    cursor: str | None = None
    async with asyncio.timeout(10):
        while True:
            params = {"kind": kind, "limit": 2, **({"cursor": cursor} if cursor else {})}
            page = (await http.get("/v1/exposures", params=params, headers=token)).json()
            seen += [e["id"] for e in page["exposures"]]
            cursor = page["next"]
            if cursor is None:
                break
    assert seen == [e["id"] for e in reversed(events)]
    unmatched = (await http.get("/v1/exposures", params={"kind": kind, "state": "unmatched"}, headers=token)).json()
    assert len(unmatched["exposures"]) == 5 and all(e["terminal_event"] == "exposure.unmatched"
                                                    for e in unmatched["exposures"])
    assert (await http.get("/v1/exposures", params={"state": "nonsense"}, headers=token)).status_code == 422
    assert (await http.get("/v1/exposures", params={"cursor": "x"}, headers=token)).status_code == 422
    found = (await http.get(f"/v1/exposures/{events[0]['id'][:-2]}", headers=token)).json()
    assert found["id"] == events[0]["id"]
    assert (await http.get("/v1/exposures/exp-", headers=token)).status_code == 409
    assert (await http.get("/v1/exposures", headers=bearer(api.tokens["detector"]))).status_code == 403


async def test_dry_run_trigger_with_a_secret_plans_and_keeps_it_secret(api: Api, http: httpx.AsyncClient,
                                                                       okta: Emulator) -> None:
    """dry_run with a token's value: run.planned, the token still valid, its value in no answer or record."""
    value = okta_token()
    seeded = okta.seed({"api_tokens": [{"name": "ci", "login": _user(okta), "token": value}]})
    token_id = seeded["api_tokens"][0]["id"]
    answer = await http.post("/v1/triggers", headers=bearer(api.tokens["responder"]),
                             json={"kind": "okta.api_token", "secret": value, "dry_run": True})
    assert answer.status_code == 202 and value not in answer.text
    exposure_id = answer.json()["id"]
    trail = (await api.harness.collect(exposure_id))[exposure_id]
    assert trail[-1]["event"] == "run.planned" and trail[-1]["plan"][0]["calls"]
    tokens = okta.control("GET", "state")["api_tokens"]
    assert next(t for t in tokens if t["id"] == token_id)["revoked"] is False
    history = await _ended(http, exposure_id, api.tokens["responder"])
    assert history["state"] == "planned" and value not in json.dumps(history)
    audit = await read_all(api.harness.settings.bootstrap_servers, api.harness.settings.audit_topic)
    assert all(value.encode() not in r.value for r in audit)


async def test_detector_exposure_is_published_as_sent(api: Api, http: httpx.AsyncClient, okta: Emulator) -> None:
    """POST /v1/exposures: 202 with the event's own id, and the pipeline runs it."""
    event = exposure("okta.session", credential={"owner": _user(okta)}, source={"detector": "secret-scanner"})
    answer = await http.post("/v1/exposures", headers=bearer(api.tokens["detector"]), json=event)
    assert answer.status_code == 202 and answer.json() == {"id": event["id"]}
    trail = (await api.harness.collect(event["id"]))[event["id"]]
    assert trail[-1]["event"] == "run.completed" and trail[0]["detector"] == "secret-scanner"


async def test_a_detector_cannot_claim_another_actor_or_raise_priority(api: Api, http: httpx.AsyncClient,
                                                                       okta: Emulator) -> None:
    """POST /v1/exposures by a detector with `actor: rt-admin`: the audit shows the detector's principal as actor
    and default detector, and the record carries no role header; an admin's record carries a verified one."""
    event = exposure("okta.session", credential={"owner": _user(okta)}, actor="rt-admin")
    answer = await http.post("/v1/exposures", headers=bearer(api.tokens["detector"]), json=event)
    assert answer.status_code == 202
    trail = (await api.harness.collect(event["id"]))[event["id"]]
    assert {(r.get("actor"), r.get("detector")) for r in trail} == {("detector-bot", "detector-bot")}
    by_admin = exposure("okta.session", credential={"owner": _user(okta)})
    assert (await http.post("/v1/exposures", headers=bearer(api.tokens["admin"]), json=by_admin)).status_code == 202
    await api.harness.collect(by_admin["id"])
    settings = api.harness.settings
    records = {r.key.decode(): r for r in await read_all(settings.bootstrap_servers, settings.exposures_topic)}
    detector_record, admin_record = records[event["id"]], records[by_admin["id"]]
    assert provenance.verified_role(detector_record.value, detector_record.headers) is None
    assert provenance.verified_role(admin_record.value, admin_record.headers) is Role.ADMIN


async def test_bodies_above_64_kib_get_413(api: Api, http: httpx.AsyncClient) -> None:
    """Too large by Content-Length, or streamed (chunked) past the limit without one: 413 either way."""
    big = {"kind": "okta.user", "owner": "a@example.com", "reason": "x" * (65 * 1024)}
    declared = await http.post("/v1/triggers", headers=bearer(api.tokens["admin"]), json=big)
    assert declared.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(70):
            yield b" " * 1024

    streamed = await http.post("/v1/triggers", headers=bearer(api.tokens["admin"]), content=chunks())
    assert streamed.status_code == 413 and "content-length" not in streamed.request.headers


async def test_malformed_bodies_get_422_naming_the_field_never_the_value(api: Api, http: httpx.AsyncClient) -> None:
    """Bad JSON, a bad field, an unknown playbook: 422 saying which field, without echoing a secret."""
    secret = okta_token()
    admin = bearer(api.tokens["admin"])
    not_json = await http.post("/v1/triggers", headers={**admin, "content-type": "application/json"},
                               content=b'{"kind": ')
    assert not_json.status_code == 422
    bad_severity = await http.post("/v1/triggers", headers=admin,
                                   json={"kind": "okta.api_token", "secret": secret, "severity": secret})
    assert bad_severity.status_code == 422 and "severity" in bad_severity.json()["detail"]
    no_kind = await http.post("/v1/exposures", headers=admin, json={"id": "e1", "credential": {"secret": secret}})
    assert no_kind.status_code == 422 and "credential.kind" in no_kind.json()["detail"]
    unknown = await http.post("/v1/triggers", headers=admin, json={"kind": "okta.user", "owner": "a@b.c",
                                                                   "playbook": "nope"})
    assert unknown.status_code == 422 and unknown.json()["detail"].startswith("playbook: unknown playbook")
    assert all(secret not in r.text for r in (not_json, bad_severity, no_kind, unknown))


async def test_failed_run_notifies_the_oncall_webhook(api: Api, http: httpx.AsyncClient) -> None:
    """A run.failed sends a non-secret summary to ORCHESTRATOR_ONCALL_WEBHOOK_URL."""
    secret = okta_token()  # carried by the event, never by the summary
    answer = await http.post("/v1/triggers", headers=bearer(api.tokens["responder"]),
                             json={"kind": "okta.session", "owner": "nobody.here@example.com", "secret": secret})
    exposure_id = answer.json()["id"]
    trail = (await api.harness.collect(exposure_id))[exposure_id]
    assert trail[-1]["event"] == "run.failed"
    async with asyncio.timeout(10):
        while not any(n.get("exposure_id") == exposure_id for n in api.receiver.received):
            api.receiver.arrived.clear()
            await api.receiver.arrived.wait()
    note = next(n for n in api.receiver.received if n.get("exposure_id") == exposure_id)
    assert note["event"] == "run.failed" and note["playbook"] == "okta-session"
    assert note["actor"] == "responder-bot" and note["error"].startswith("failed steps")
    assert secret not in json.dumps(api.receiver.received)


async def test_refuses_a_public_address_without_tokens(settings: Settings) -> None:
    """Non-loopback without ORCHESTRATOR_API_TOKENS_FILE stops start-up with one clear line."""
    with pytest.raises(ConfigurationError, match="not a loopback address"):
        async with Orchestrator(replace(settings, http_listen=f"0.0.0.0:{free_port()}")):
            pass


async def test_without_tokens_file_v1_routes_are_closed(settings: Settings) -> None:
    """Loopback and no tokens file: /v1 answers 401; healthz works; readyz is 503 until partitions are assigned."""
    async with Orchestrator(replace(settings, http_listen=f"127.0.0.1:{free_port()}")) as orchestrator, \
            httpx.AsyncClient(base_url=str(orchestrator.api_url)) as client:
        closed = await client.post("/v1/triggers", json={"kind": "okta.user", "owner": "a@b.c"})
        assert closed.status_code == 401 and "ORCHESTRATOR_API_TOKENS_FILE" in closed.text
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 503


def test_slack_summary_names_the_exposure_and_nothing_unlisted() -> None:
    """The Slack body is one `text` naming the exposure and how to follow up; unlisted fields stay out."""
    record = {"event": "run.failed", "exposure_id": "exp-1", "playbook": "okta-user", "error": "failed steps: x",
              "credential_kind": "okta.user", "target": "okta.user:someone@example.com"}
    body = summary(record, "slack")
    assert set(body) == {"text"} and "exp-1" in body["text"] and "orchestrator status exp-1" in body["text"]
    assert "someone@example.com" not in body["text"]
    assert "target" not in summary(record, "json")


def test_unmatched_page_says_nothing_was_revoked_and_escapes_the_kind() -> None:
    """The page for an unmatched exposure names its kind and says it was not revoked; a hostile kind from a
    detector cannot mention or link in Slack, and the JSON body says which event it is."""
    record = {"event": "exposure.unmatched", "exposure_id": "exp-2", "credential_kind": "<!here> <https://x|y>",
              "detector": "scanner"}
    text = summary(record, "slack")["text"]
    assert "NOT revoked" in text and "orchestrator status exp-2" in text
    assert "<!here>" not in text and "&lt;!here&gt;" in text and "<https://" not in text
    assert summary(record, "json") == {"event": "exposure.unmatched", "exposure_id": "exp-2",
                                       "credential_kind": "<!here> <https://x|y>", "detector": "scanner"}


async def test_a_trigger_no_playbook_matches_is_refused_with_the_closest_kinds(api: Api,
                                                                              http: httpx.AsyncClient) -> None:
    """POST /v1/triggers with a mistyped kind: 422 naming the closest known kinds, never echoing the kind sent;
    `allow_unmatched` publishes it anyway."""
    typo = {"kind": "okta.usr", "owner": "sam.support@example.com"}
    refused = await http.post("/v1/triggers", headers=bearer(api.tokens["responder"]), json=typo)
    detail = refused.json()["detail"]
    assert refused.status_code == 422 and detail.startswith("kind: no playbook matches this kind; did you mean "
                                                            "okta.user"), detail
    assert "okta.usr'" not in detail and "okta.usr " not in detail and "allow_unmatched" in detail
    allowed = await http.post("/v1/triggers", headers=bearer(api.tokens["responder"]),
                              json={**typo, "allow_unmatched": True})
    assert allowed.status_code == 202
    trail = (await api.harness.collect(allowed.json()["id"]))[allowed.json()["id"]]
    assert trail[-1]["event"] == "exposure.unmatched"


async def test_unmatched_exposures_page_oncall_once_per_kind(api: Api, http: httpx.AsyncClient) -> None:
    """Detector events of kinds no playbook matches are accepted, and page on-call once per kind per interval."""
    kinds = [f"acme.widget-{secrets.token_hex(3)}", f"acme.gadget-{secrets.token_hex(3)}"]
    events = [exposure(kinds[0], credential={"id": "w1"}), exposure(kinds[0], credential={"id": "w2"}),
              exposure(kinds[1], credential={"id": "g1"})]
    for event in events:
        answer = await http.post("/v1/exposures", headers=bearer(api.tokens["detector"]), json=event)
        assert answer.status_code == 202
    trails = await api.harness.collect(*(e["id"] for e in events))
    assert all(trail[-1]["event"] == "exposure.unmatched" for trail in trails.values())

    def pages() -> list[str]:
        return [n["credential_kind"] for n in api.receiver.received
                if n.get("event") == "exposure.unmatched" and n.get("credential_kind") in kinds]

    # The pager decides as each terminal record is written, before it reaches the topic: by now all three
    # were decided; only the admitted pages may still be in flight.
    async with asyncio.timeout(10):
        while len(set(pages())) < 2:
            api.receiver.arrived.clear()
            await api.receiver.arrived.wait()
    assert sorted(pages()) == sorted(kinds)


async def test_swagger_ui_and_redoc_are_served_without_any_external_url(http: httpx.AsyncClient) -> None:
    """/docs and /redoc load only assets served by the API itself (no CDN), and each asset is there."""
    for page in ("/docs", "/redoc"):
        answer = await http.get(page)
        assert answer.status_code == 200 and "text/html" in answer.headers["content-type"]
        assert "http://" not in answer.text and "https://" not in answer.text and "//" + "cdn" not in answer.text
        assets = re.findall(r'(?:src|href)="([^"]+)"', answer.text)
        assert assets and all(a.startswith("/docs/assets/") for a in assets), assets
        for asset in assets:
            served = await http.get(asset)
            assert served.status_code == 200 and len(served.content) > 1000, asset


async def test_every_route_documents_an_example(http: httpx.AsyncClient) -> None:
    """The OpenAPI document carries an example for every operation (its body, or its answer)."""
    document = (await http.get("/openapi.json")).json()
    missing = [f"{method.upper()} {path}" for path, item in document["paths"].items()
               for method, operation in item.items() if "example" not in json.dumps(operation)]
    assert missing == []
    body = document["paths"]["/v1/triggers"]["post"]["requestBody"]["content"]["application/json"]
    assert {"dry-run-user", "leaked-token"} <= set(body["examples"])


async def test_a_changed_tokens_file_is_read_again_without_a_restart(api: Api, http: httpx.AsyncClient) -> None:
    """A token added to the tokens file (atomically, as `api-token create --file` does) works at once."""
    tokens_file = api.harness.settings.api_tokens_file
    assert tokens_file is not None
    original = tokens_file.read_text()
    token = new_token()
    document = json.loads(original)
    document["tokens"].append(token_entry(token, "late-bot", [Role.RESPONDER]))
    assert (await http.get("/v1/exposures", headers=bearer(token))).status_code == 401
    try:
        write_private(tokens_file, json.dumps(document))
        assert (await http.get("/v1/exposures", headers=bearer(token))).status_code == 200
    finally:
        write_private(tokens_file, original)
    assert (await http.get("/v1/exposures", headers=bearer(token))).status_code == 401
