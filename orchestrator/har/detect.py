"""Finding credentials in one HAR entry: headers (any case), cookies, query strings, bodies; pure.

An entry is whatever JSON the file held: every field is checked for its type, so no input makes this
raise. A `Finding` holds the value it found (to publish and to sanitize) and never shows it in its repr.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from orchestrator.har import patterns as p

#: JSON bodies nested deeper than this are scanned as text only (a hostile file could nest without end).
_MAX_DEPTH = 64


@dataclass(frozen=True)
class Finding:
    """A credential found in a HAR: which entry, where in it, what kind, and the value itself."""

    entry: int
    where: str
    kind: str
    rule: str
    value: str = field(repr=False)
    #: A non-secret handle when the finding has one: the Okta session id, the AWS access key id.
    handle: str | None = None
    owner: str | None = None

    @property
    def values(self) -> tuple[str, ...]:
        """Every text of this finding a sanitized copy must not contain."""
        return (self.value,) if self.handle is None or self.handle == self.value else (self.value, self.handle)


def preview(value: str) -> str:
    """A redacted preview that says what a value looks like without giving it away: `ghp_…[40]`."""
    shown = value[:min(4, len(value) // 4)]
    return f"{shown}…[{len(value)}]"


def scan_entry(index: int, entry: Any) -> list[Finding]:
    """Every credential in one HAR entry, in the order met, each (where, kind, value) once."""
    found = _Collector(index)
    entry = _obj(entry)
    request, response = _obj(entry.get("request")), _obj(entry.get("response"))
    url = _text(request.get("url"))
    okta = p.is_okta_url(url)
    found.url(url, "request.url")
    for name, value in _pairs(request.get("headers")):
        found.header(name, value, "request", okta=okta)
    for name, value in _pairs(request.get("cookies")):
        found.cookie(name, value, "request.cookie", okta=okta)
    for name, value in _pairs(request.get("queryString")):
        found.parameter(name, value, "request.query")
    post = _obj(request.get("postData"))
    for name, value in _pairs(post.get("params")):
        found.parameter(name, value, "request.body(form)")
    found.body(_text(post.get("text")), _text(post.get("mimeType")), "request.body")
    for name, value in _pairs(response.get("headers")):
        found.header(name, value, "response", okta=okta)
    for name, value in _pairs(response.get("cookies")):
        found.cookie(name, value, "response.cookie", okta=okta)
    found.url(_text(response.get("redirectURL")), "response.redirectURL")
    content = _obj(response.get("content"))
    text = _body_text(content)
    found.body(text, _text(content.get("mimeType")), "response.body")
    found.echoed_session(url, text)
    return found.done()


class _Collector:
    def __init__(self, entry: int) -> None:
        self.entry = entry
        self.findings: list[Finding] = []
        self._seen: set[tuple[str, str, str]] = set()
        #: AWS key ids and secrets met in this entry, paired when done: a key and its secret travel together.
        self._aws_ids: list[tuple[str, str]] = []
        self._aws_secrets: list[tuple[str, str]] = []
        self.too_deep = False

    def add(self, where: str, kind: str, rule: str, value: str, *, handle: str | None = None,
            owner: str | None = None) -> None:
        if len(value) < p.MIN_VALUE or (where, kind, value) in self._seen:
            return
        self._seen.add((where, kind, value))
        self.findings.append(Finding(self.entry, where, kind, rule, value, handle, owner))

    def tokens(self, text: str, where: str) -> None:
        """Token formats anywhere inside a string."""
        if not p.may_hold_token(text):
            return
        for match in p.TOKENS.finditer(text):
            group = match.lastgroup or ""
            if group == "aws_key_id":
                self._aws_ids.append((match.group(), where))
                continue
            self.add(where, p.token_kind(match.group()) or "jwt", group, match.group())
        for match in p.AWS_SECRET_NEAR_NAME.finditer(text):
            self._aws_secrets.append((match.group(1), where))
        for match in p.SSWS_IN_TEXT.finditer(text):
            self.add(where, "okta.api_token", "ssws", match.group(1))

    def url(self, url: str, where: str) -> None:
        if not url:
            return
        try:
            parts = urlsplit(url)
        except ValueError:
            self.tokens(url, where)
            return
        self.tokens(parts.path, where)
        for name, value in [*parse_qsl(parts.query, keep_blank_values=True),
                            *parse_qsl(parts.fragment, keep_blank_values=True)]:
            self.parameter(name, value, _query_label(where))

    def parameter(self, name: str, value: str, where: str, owner: str | None = None, *,
                  label: str | None = None) -> None:
        label = label or f"{where} {name}"
        kind = p.token_kind(value)
        if p.AWS_KEY_ID.fullmatch(value):
            self._aws_ids.append((value, label))
        elif kind is not None:
            self.add(label, kind, "format", value, owner=owner)
        elif p.is_credential_name(name):
            if "secret" in p.normalise(name) and "access" in p.normalise(name) and len(value) == 40:
                self._aws_secrets.append((value, label))
            else:
                self.add(label, _named_kind(name), "name", value, owner=owner)
        else:
            self.tokens(value, label)

    def header(self, name: str, value: str, side: str, *, okta: bool) -> None:
        lower = name.lower()
        label = f"{side}.header {name}"
        if lower in p.AUTHORIZATION_HEADERS:
            self.authorization(value, label)
        elif lower == "cookie":
            for cookie, cookie_value in _cookie_pairs(value):
                self.cookie(cookie, cookie_value, f"{side}.header {name}:", okta=okta)
        elif lower == "set-cookie":
            for line in value.split("\n"):  # HAR writers join repeated Set-Cookie headers with newlines
                cookie, _, rest = line.partition("=")
                self.cookie(cookie.strip(), rest.split(";", 1)[0].strip(), f"{side}.header {name}:", okta=okta)
        elif value.startswith(("https://", "http://")):  # Referer, Location, Origin: their query strings count
            self.url(value, label)
        else:
            self.parameter(name, value, f"{side}.header")

    def authorization(self, value: str, label: str) -> None:
        match = p.AUTH_SCHEME.match(value)
        if match is None:
            if " " in value.strip():  # another scheme (AWS SigV4, Digest): only the tokens inside it, if any
                self.tokens(value, label)
            else:
                self.add(label, p.token_kind(value.strip()) or "http.authorization", "authorization", value.strip())
            return
        scheme, credential = match.group("scheme").lower(), match.group("value")
        if scheme == "ssws":
            self.add(label, "okta.api_token", "authorization-ssws", credential)
        elif scheme == "basic":
            user, password = _basic(credential)
            self.add(label, "http.basic_auth", "authorization-basic", password or credential, owner=user)
        elif p.AWS_KEY_ID.fullmatch(credential):
            self._aws_ids.append((credential, label))
        else:
            self.add(label, p.token_kind(credential) or "http.bearer_token", f"authorization-{scheme}", credential)

    def cookie(self, name: str, value: str, where: str, *, okta: bool) -> None:
        label = f"{where} {name}"
        lower = name.lower()
        if lower in p.OKTA_COOKIES and (okta or lower != "jsessionid"):
            self.add(label, "okta.session", f"okta-cookie-{lower}", value, handle=value if lower == "sid" else None)
        elif p.is_session_cookie(name) and p.token_kind(value) is None:
            self.add(label, "http.session_cookie", "session-cookie", value)
        else:
            self.parameter(name, value, where.rstrip(":"))

    def body(self, text: str, mime: str, where: str) -> None:
        if not text:
            return
        stripped = text.lstrip()
        if stripped[:1] in ("{", "[") or "json" in mime.lower():
            try:
                document = json.loads(text)
            except (ValueError, RecursionError):
                document = None
            if isinstance(document, dict | list):
                if (not p.may_hold_token(text) and "\\u" not in text and not p.OKTA_TOKEN_IN_JSON.search(text)
                        and not p.has_secret_key(document)):
                    return  # no token format, no secret-named key: nothing to find (most bodies)
                self.too_deep = False
                self.json(document, f"{where} $", depth=0)
                if self.too_deep:
                    self.tokens(text, where)
                return
        if "x-www-form-urlencoded" in mime.lower():
            for name, value in parse_qsl(text, keep_blank_values=True):
                self.parameter(name, value, f"{where}(form)")
            return
        self.tokens(text, where)

    def json(self, node: Any, path: str, *, depth: int) -> None:
        if depth > _MAX_DEPTH:
            self.too_deep = True  # the body's text is scanned for token formats instead
            return
        if isinstance(node, list):
            for item in node:
                self.json(item, f"{path}[]", depth=depth + 1)
            return
        if not isinstance(node, dict):
            if isinstance(node, str):
                self.tokens(node, path)
            return
        owner = next((v for k, v in node.items() if p.owner_key(k) and isinstance(v, str) and v), None)
        for key, value in node.items():
            if isinstance(value, str):
                self.parameter(key, value, path, owner=owner, label=f"{path}.{key}")
            else:
                self.json(value, f"{path}.{key}", depth=depth + 1)

    def echoed_session(self, url: str, text: str) -> None:
        """`GET /api/v1/sessions/me` answers the session's id and its user: the session, echoed."""
        try:
            path = urlsplit(url).path
        except ValueError:
            return
        if not p.OKTA_SESSION_PATH.search(path):
            return
        try:
            document = json.loads(text) if text else None
        except (ValueError, RecursionError):
            return
        if isinstance(document, dict) and isinstance(session_id := document.get("id"), str):
            owner = document.get("login") if isinstance(document.get("login"), str) else document.get("userId")
            self.add("response.body $.id", "okta.session", "okta-session-echo", session_id, handle=session_id,
                     owner=owner if isinstance(owner, str) and owner else None)

    def done(self) -> list[Finding]:
        secrets = list(self._aws_secrets)
        for key_id, where in self._aws_ids:
            kind = "aws.session" if key_id.startswith("ASIA") else "aws.access_key"
            if secrets:
                secret, _ = secrets.pop(0)
                self.add(where, kind, "aws-key-pair", secret, handle=key_id)
            else:
                self.add(where, kind, "aws-key-id", key_id, handle=key_id)
        for secret, where in secrets:
            self.add(where, "aws.access_key", "aws-secret", secret)
        return self.findings


def _query_label(where: str) -> str:
    """Where a URL's parameters are: `request.url` → `request.query`; a header's or `redirectURL`'s own name."""
    return "request.query" if where == "request.url" else where


def _named_kind(name: str) -> str:
    norm = p.normalise(name)
    if norm.endswith(("password", "passwd", "pwd")):
        return "http.password"
    if norm == "sessionid":
        return "http.session_cookie"
    return "api_key"


def _obj(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _pairs(items: Any) -> Iterator[tuple[str, str]]:
    """The (name, value) pairs of a HAR list of `{"name", "value"}` objects, skipping malformed ones."""
    if not isinstance(items, list):
        return
    for item in items:
        if isinstance(item, dict) and isinstance(name := item.get("name"), str) \
                and isinstance(value := item.get("value"), str):
            yield name, value


def _cookie_pairs(header: str) -> Iterator[tuple[str, str]]:
    for part in header.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            yield name.strip(), value.strip()


def _basic(credential: str) -> tuple[str | None, str | None]:
    try:
        decoded = base64.b64decode(credential, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None, None
    user, sep, password = decoded.partition(":")
    return (user or None, password) if sep else (None, None)


def _body_text(content: Mapping[str, Any]) -> str:
    """A response body as text; base64-encoded bodies decoded when they are UTF-8."""
    text = _text(content.get("text"))
    if content.get("encoding") == "base64" and text:
        try:
            return base64.b64decode(text, validate=False).decode("utf-8")
        except (binascii.Error, ValueError):
            return text
    return text
