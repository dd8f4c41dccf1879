"""HAR files built at test time, with random canary credentials (right prefixes, never real) in every place
the HAR scanner looks: the tests of `orchestrator scan-har` and its benchmark share them."""

from __future__ import annotations

import base64
import json
import secrets
import string
import uuid
from dataclasses import dataclass, field
from typing import Any

_ALNUM = string.ascii_letters + string.digits


def _random(alphabet: str, n: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def okta_session_id() -> str:
    """Shaped like an Okta session id (`102…`), as the Okta emulator seeds them."""
    return "102" + secrets.token_hex(10)


def okta_api_token() -> str:
    """Shaped like an Okta API token: `00` and 40 URL-safe characters."""
    return "00" + secrets.token_urlsafe(32)[:40]


def jwt() -> str:
    """An unsigned-looking JWT with a random signature part."""
    header = _b64url(json.dumps({"alg": "RS256", "kid": secrets.token_hex(4)}).encode())
    claims = _b64url(json.dumps({"sub": f"user-{secrets.token_hex(4)}", "jti": secrets.token_hex(8)}).encode())
    return f"{header}.{claims}.{_b64url(secrets.token_bytes(32))}"


def github_token() -> str:
    return "ghp_" + _random(_ALNUM, 36)


def slack_token() -> str:
    return f"xoxb-{secrets.randbelow(10**11)}-{secrets.randbelow(10**11)}-{_random(_ALNUM, 24)}"


def aws_key_id() -> str:
    return "AKIA" + _random(string.ascii_uppercase + "234567", 16)


def aws_secret() -> str:
    return _random(_ALNUM + "/+", 40)


def entry(url: str, *, method: str = "GET", headers: dict[str, str] | None = None,
          cookies: dict[str, str] | None = None, post: tuple[str, str] | None = None,
          response_headers: dict[str, str] | None = None, response_body: str = "",
          response_mime: str = "application/json", status: int = 200) -> dict[str, Any]:
    """One HAR 1.2 entry."""
    from urllib.parse import parse_qsl, urlsplit

    request: dict[str, Any] = {
        "method": method, "url": url, "httpVersion": "HTTP/2",
        "headers": [{"name": k, "value": v} for k, v in (headers or {}).items()],
        "cookies": [{"name": k, "value": v} for k, v in (cookies or {}).items()],
        "queryString": [{"name": k, "value": v} for k, v in parse_qsl(urlsplit(url).query)],
        "headersSize": -1, "bodySize": len(post[1]) if post else 0,
    }
    if post:
        request["postData"] = {"mimeType": post[0], "text": post[1]}
        if "form" in post[0]:
            request["postData"]["params"] = [{"name": k, "value": v} for k, v in parse_qsl(post[1])]
    return {
        "startedDateTime": "2023-10-20T12:00:00.000Z", "time": 42.5, "request": request,
        "response": {"status": status, "statusText": "OK", "httpVersion": "HTTP/2",
                     "headers": [{"name": k, "value": v} for k, v in (response_headers or {}).items()],
                     "cookies": [], "content": {"size": len(response_body), "mimeType": response_mime,
                                                "text": response_body},
                     "redirectURL": "", "headersSize": -1, "bodySize": len(response_body)},
        "cache": {}, "timings": {"send": 1.0, "wait": 40.0, "receive": 1.5},
    }


def har(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """A HAR 1.2 document around `entries`."""
    return {"log": {"version": "1.2", "creator": {"name": "test", "version": "1"},
                    "pages": [{"startedDateTime": "2023-10-20T12:00:00.000Z", "id": "page_1", "title": "Okta",
                               "pageTimings": {"onLoad": 100}}],
                    "entries": entries}}


@dataclass
class Planted:
    """A HAR with a canary in every place the scanner looks, and what each should be found as."""

    document: dict[str, Any]
    #: (entry index, kind, value) of every credential planted.
    expected: list[tuple[int, str, str]] = field(default_factory=list)

    @property
    def values(self) -> list[str]:
        return [value for _, _, value in self.expected]


def every_placement(org: str = "https://acme.okta.com", *, session_id: str | None = None,
                    api_token: str | None = None) -> Planted:
    """A support-ticket HAR with every secret placement the scanner covers (entry indices in `expected`)."""
    sid, idx, dt, jsession = session_id or okta_session_id(), secrets.token_urlsafe(32), str(uuid.uuid4()), \
        secrets.token_hex(16).upper()
    ssws, bearer, password = api_token or okta_api_token(), jwt(), secrets.token_urlsafe(12)
    key_id, key_secret, gh, slack = aws_key_id(), aws_secret(), github_token(), slack_token()
    query_key, json_key, echoed = secrets.token_hex(16), secrets.token_hex(20), okta_session_id()
    basic = base64.b64encode(f"svc-account:{password}".encode()).decode()
    entries = [
        # 0: the Okta cookies, in the Cookie header of a lowercase HTTP/2 request
        entry(f"{org}/app/UserHome", headers={"cookie": f"sid={sid}; idx={idx}; DT={dt}; JSESSIONID={jsession}",
                                              "user-agent": "Mozilla/5.0"}),
        # 1: an admin API call with an SSWS token, header name in mixed case
        entry(f"{org}/api/v1/users?limit=25", headers={"AUTHORIZATION": f"SSWS {ssws}"}),
        # 2: lowercase bearer JWT (HTTP/2)
        entry(f"{org}/oauth2/v1/userinfo", headers={"authorization": f"Bearer {bearer}"}),
        # 3: Basic credentials
        entry("https://ci.example.com/api/json", headers={"Authorization": f"Basic {basic}"}),
        # 4: an API key in the query string
        entry(f"https://maps.example.com/v1/geocode?address=Paris&api_key={query_key}"),
        # 5: a form post with a password, and an API key in a JSON body
        entry(f"{org}/login", method="POST", post=("application/x-www-form-urlencoded",
                                                   f"username=alice%40example.com&password={password}x")),
        entry("https://hooks.example.com/v1/config", method="POST",
              post=("application/json", json.dumps({"name": "ci", "apiKey": json_key}))),
        # 7: AWS keys with their secret in a response body
        entry("https://console.example.com/creds", response_body=json.dumps(
            {"AccessKeyId": key_id, "SecretAccessKey": key_secret, "Expiration": "2030-01-01T00:00:00Z"})),
        # 8: GitHub and Slack tokens echoed in a response body
        entry("https://tools.example.com/settings", response_body=json.dumps(
            {"integrations": [{"github": gh}, {"slack": {"bot_token": slack}}]})),
        # 9: the session id echoed by /api/v1/sessions/me
        entry(f"{org}/api/v1/sessions/me", response_body=json.dumps(
            {"id": echoed, "login": "alice@example.com", "userId": "00u1abcd", "status": "ACTIVE"})),
    ]
    expected = [(0, "okta.session", sid), (0, "okta.session", idx), (0, "okta.session", dt),
                (0, "okta.session", jsession), (1, "okta.api_token", ssws), (2, "jwt", bearer),
                (3, "http.basic_auth", password), (4, "api_key", query_key), (5, "http.password", password + "x"),
                (6, "api_key", json_key), (7, "aws.access_key", key_secret), (7, "aws.access_key", key_id),
                (8, "github.token", gh), (8, "slack.token", slack), (9, "okta.session", echoed)]
    return Planted(har(entries), expected)


_NAMED = {"type": "object", "required": ["name", "value"],
          "properties": {"name": {"type": "string"}, "value": {"type": "string"}}}
#: HAR 1.2's required fields and their types (http://www.softwareishard.com/blog/har-12-spec/).
HAR_12 = {
    "type": "object", "required": ["log"],
    "properties": {"log": {
        "type": "object", "required": ["version", "creator", "entries"],
        "properties": {
            "version": {"const": "1.2"},
            "creator": {"type": "object", "required": ["name", "version"]},
            "pages": {"type": "array", "items": {"type": "object",
                                                 "required": ["startedDateTime", "id", "title", "pageTimings"]}},
            "entries": {"type": "array", "items": {
                "type": "object", "required": ["startedDateTime", "time", "request", "response", "cache", "timings"],
                "properties": {
                    "time": {"type": "number", "minimum": 0},
                    "request": {"type": "object", "required": ["method", "url", "httpVersion", "cookies", "headers",
                                                               "queryString", "headersSize", "bodySize"],
                                "properties": {"url": {"type": "string"},
                                               "cookies": {"type": "array", "items": _NAMED},
                                               "headers": {"type": "array", "items": _NAMED},
                                               "queryString": {"type": "array", "items": _NAMED},
                                               "headersSize": {"type": "integer"}, "bodySize": {"type": "integer"},
                                               "postData": {"type": "object", "required": ["mimeType"]}}},
                    "response": {"type": "object", "required": ["status", "statusText", "httpVersion", "cookies",
                                                                "headers", "content", "redirectURL", "headersSize",
                                                                "bodySize"],
                                 "properties": {"status": {"type": "integer"},
                                                "cookies": {"type": "array", "items": _NAMED},
                                                "headers": {"type": "array", "items": _NAMED},
                                                "content": {"type": "object", "required": ["size", "mimeType"]}}},
                    "timings": {"type": "object", "required": ["send", "wait", "receive"]},
                }}},
        }}},
}
