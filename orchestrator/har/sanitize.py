"""A HAR entry without its credentials: still HAR 1.2, with URLs, statuses, timings and names kept; pure.

Two layers, each enough for its case: values in secret places (authorization headers, cookies, secret-named
parameters, headers and JSON keys) are replaced whether or not anything was found there; and every value
found anywhere in the file is replaced wherever it appears, in each encoding a string can carry it (raw,
URL-encoded, JSON-escaped, base64: `orchestrator.redaction.secret_forms`).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import ahocorasick_rs

from orchestrator.har import patterns as p
from orchestrator.redaction import secret_forms

MASK = "[REDACTED]"
#: In URLs: no characters that need percent-encoding, so the URL still reads as one.
URL_MASK = "REDACTED"
_FALLBACK_MASKS = ("********", "########")


class Masker:
    """Replaces the given values, in every form, and well-known token formats in any string."""

    def __init__(self, values: Iterable[str]) -> None:
        forms: set[str] = set()
        for value in values:
            forms |= secret_forms(value)
        # Longest first: a form that contains another is replaced whole.
        self._forms = sorted(forms, key=len, reverse=True)
        self.mask = next((m for m in (MASK, *_FALLBACK_MASKS) if not any(f in m for f in self._forms)), "#" * 8)
        self._bytes = [form.encode("utf-8", "surrogatepass") for form in self._forms]
        # One automaton over every form: testing each form against each string took time in the product of the
        # two, and a hostile capture chooses both (5,000 tokens: minutes). Matching UTF-8 bytes is matching
        # text: a form's bytes can only start and end on character boundaries.
        self._automaton = (ahocorasick_rs.BytesAhoCorasick(self._bytes,
                                                           matchkind=ahocorasick_rs.MatchKind.LeftmostLongest)
                           if self._bytes else None)

    def clean(self, text: str) -> bool:
        """True when `text` holds no known value and no token format: nothing in it needs masking."""
        return not p.may_hold_token(text) and (self._automaton is None or not self._automaton.find_matches_as_indexes(
            text.encode("utf-8", "surrogatepass")))

    def text(self, text: str) -> str:
        """`text` with every known value and token format replaced."""
        if len(text) < p.MIN_VALUE:  # shorter than any value or token: the common case, kept cheap
            return text
        for _ in range(4):  # a replacement can join two halves into a new occurrence: go again until stable
            before = text
            text = self.data(text.encode("utf-8", "surrogatepass")).decode("utf-8", "surrogatepass")
            if p.may_hold_token(text):
                text = p.TOKENS.sub(self.mask, text)
                text = p.SSWS_IN_TEXT.sub(self.mask, text)
                text = p.AWS_SECRET_NEAR_NAME.sub(self.mask, text)
            if text == before:
                break
        return text

    def data(self, data: bytes) -> bytes:
        """Binary content with every known value's forms replaced."""
        matches = self._automaton.find_matches_as_indexes(data) if self._automaton is not None else []
        if not matches:
            return data
        mask, last = self.mask.encode(), 0
        parts: list[bytes] = []
        for _, start, end in matches:
            parts += (data[last:start], mask)
            last = end
        parts.append(data[last:])
        return b"".join(parts)

    def deep(self, node: Any) -> Any:
        """A JSON value with every string (keys too) masked; iterative, so no nesting makes it fail."""
        return _rebuild(node, self.text)


def sanitize_entry(entry: Any, masker: Masker) -> dict[str, Any]:
    """A sanitized copy of one entry, with the fields HAR 1.2 requires present."""
    source = entry if isinstance(entry, dict) else {}
    out: dict[str, Any] = masker.deep({k: v for k, v in source.items() if k not in ("request", "response")})
    out["request"] = _request(_obj(source.get("request")), masker)
    out["response"] = _response(_obj(source.get("response")), masker)
    out["startedDateTime"] = _str(out.get("startedDateTime"), "1970-01-01T00:00:00.000Z")
    out["time"] = _number(out.get("time"), 0)
    out["cache"] = _obj(out.get("cache"))
    timings = dict(_obj(out.get("timings")))
    for name in ("send", "wait", "receive"):
        timings[name] = _number(timings.get(name), 0)
    out["timings"] = timings
    return out


def sanitize_url(url: str, masker: Masker) -> str:
    """A URL with user info and secret-named query and fragment values replaced, the rest masked."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.username is not None or parts.password is not None:
            netloc = f"{URL_MASK}@{netloc.rpartition('@')[2]}"
    except ValueError:
        return masker.text(url)
    query = _sanitize_query(parts.query, masker)
    fragment = _sanitize_query(parts.fragment, masker) if "=" in parts.fragment else masker.text(parts.fragment)
    return masker.text(urlunsplit((parts.scheme, netloc, parts.path, query, fragment)))


def _sanitize_query(query: str, masker: Masker) -> str:
    if not query:
        return query
    pairs = [(name, URL_MASK if p.is_secret_name(name) and value else value)
             for name, value in parse_qsl(query, keep_blank_values=True)]
    return urlencode(pairs, quote_via=quote, safe="")


def _request(request: Mapping[str, Any], masker: Masker) -> dict[str, Any]:
    out: dict[str, Any] = masker.deep({k: v for k, v in request.items() if k not in _REBUILT_REQUEST})
    out["method"] = masker.text(_str(request.get("method"), "GET"))
    out["url"] = sanitize_url(_str(request.get("url"), ""), masker)
    out["httpVersion"] = masker.text(_str(request.get("httpVersion"), "HTTP/1.1"))
    out["cookies"] = _cookies(request.get("cookies"), masker)
    out["headers"] = _headers(request.get("headers"), masker)
    out["queryString"] = _params(request.get("queryString"), masker, URL_MASK)
    out["headersSize"] = _int(request.get("headersSize"), -1)
    out["bodySize"] = _int(request.get("bodySize"), -1)
    post = _obj(request.get("postData"))
    if post:
        mime = _str(post.get("mimeType"), "")
        sanitized: dict[str, Any] = masker.deep({k: v for k, v in post.items() if k not in ("text", "params")})
        sanitized["mimeType"] = masker.text(mime)
        if isinstance(post.get("text"), str):
            sanitized["text"] = _body(post["text"], mime, masker)
        if "params" in post:
            sanitized["params"] = _params(post.get("params"), masker, MASK)
        out["postData"] = sanitized
    return out


def _response(response: Mapping[str, Any], masker: Masker) -> dict[str, Any]:
    out: dict[str, Any] = masker.deep({k: v for k, v in response.items() if k not in _REBUILT_RESPONSE})
    out["status"] = _int(response.get("status"), 0)
    out["statusText"] = masker.text(_str(response.get("statusText"), ""))
    out["httpVersion"] = masker.text(_str(response.get("httpVersion"), "HTTP/1.1"))
    out["cookies"] = _cookies(response.get("cookies"), masker)
    out["headers"] = _headers(response.get("headers"), masker)
    out["redirectURL"] = sanitize_url(_str(response.get("redirectURL"), ""), masker)
    out["headersSize"] = _int(response.get("headersSize"), -1)
    out["bodySize"] = _int(response.get("bodySize"), -1)
    content = _obj(response.get("content"))
    sanitized: dict[str, Any] = masker.deep({k: v for k, v in content.items() if k != "text"})
    mime = _str(content.get("mimeType"), "")
    sanitized["mimeType"] = masker.text(mime)
    sanitized["size"] = _int(content.get("size"), 0)
    if isinstance(text := content.get("text"), str):
        if content.get("encoding") == "base64":
            sanitized["text"] = _base64_body(text, mime, masker)
        else:
            sanitized["text"] = _body(text, mime, masker)
    out["content"] = sanitized
    return out


_REBUILT_REQUEST = frozenset({"method", "url", "httpVersion", "cookies", "headers", "queryString", "postData",
                              "headersSize", "bodySize"})
_REBUILT_RESPONSE = frozenset({"status", "statusText", "httpVersion", "cookies", "headers", "content",
                               "redirectURL", "headersSize", "bodySize"})


def _params(items: Any, masker: Masker, mask: str) -> list[dict[str, Any]]:
    """Query or form parameters: secret-named values replaced by `mask`, the others masked."""
    return [{**masker.deep(item), "value": mask if p.is_secret_name(item["name"]) and item["value"]
             else masker.text(item["value"])} for item in _items(items)]


def _cookies(items: Any, masker: Masker) -> list[dict[str, Any]]:
    """Cookies keep their names and attributes; every value is replaced (cookies are session state)."""
    return [{**masker.deep(item), "value": MASK} for item in _items(items)]


def _headers(items: Any, masker: Masker) -> list[dict[str, Any]]:
    return [{**masker.deep(item), "value": _header_value(item["name"], item["value"], masker)}
            for item in _items(items)]


def _header_value(name: str, value: str, masker: Masker) -> str:
    lower = name.lower()
    if lower in p.AUTHORIZATION_HEADERS:
        match = p.AUTH_SCHEME.match(value)
        return f"{match.group('scheme')} {MASK}" if match else MASK
    if lower == "cookie":
        return "; ".join(f"{masker.text(n.strip())}={MASK}" for n, _, _ in (c.partition("=") for c in value.split(";"))
                         if n.strip())
    if lower == "set-cookie":
        lines = []
        for line in value.split("\n"):
            first, _, attributes = line.partition(";")
            cookie_name = first.partition("=")[0].strip()
            lines.append(masker.text(f"{cookie_name}={MASK}" + (f";{attributes}" if attributes else "")))
        return "\n".join(lines)
    if p.is_secret_name(name) and value:
        return MASK
    if value.startswith(("https://", "http://")):  # Referer, Location: their secret query values too
        return sanitize_url(value, masker)
    return masker.text(value)


def _body(text: str, mime: str, masker: Masker) -> str:
    stripped = text.lstrip()
    if stripped[:1] in ("{", "[") or "json" in mime.lower():
        try:
            document = json.loads(text)
            # `\u` escapes could spell a value the raw text does not show: such bodies are always rewritten.
            clean = "\\u" not in text and masker.clean(text)
            if clean and not p.has_secret_key(document):
                return text  # most bodies: nothing to replace, so not rewritten either
            return json.dumps(_rebuild(document, _unchanged if clean else masker.text, secret_key=p.is_secret_name,
                                       mask=MASK))
        except (ValueError, RecursionError):
            pass
    if "x-www-form-urlencoded" in mime.lower():
        pairs = [(n, MASK if p.is_secret_name(n) and v else masker.text(v)) for n, v in parse_qsl(text, True)]
        return masker.text(urlencode(pairs))
    return masker.text(text)


def _unchanged(text: str) -> str:
    return text


def _base64_body(text: str, mime: str, masker: Masker) -> str:
    try:
        data = base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError):
        return masker.text(text)
    try:
        decoded = data.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(masker.data(data)).decode()
    return base64.b64encode(_body(decoded, mime, masker).encode("utf-8", "surrogatepass")).decode()


def _rebuild(node: Any, text: Any, *, secret_key: Any = None, mask: str = MASK) -> Any:
    """A copy of a JSON value with `text` applied to every string (keys too) and, when `secret_key` says so,
    the string values of secret-named keys replaced by `mask`. Iterative: nesting depth is no limit."""
    root: list[Any] = [None]
    stack: list[tuple[Any, Any, Any]] = [(node, root, 0)]
    while stack:
        value, parent, slot = stack.pop()
        if isinstance(value, dict):
            copy: dict[str, Any] = {}
            parent[slot] = copy
            for key, item in value.items():
                new_key = text(key) if isinstance(key, str) else key
                if secret_key is not None and isinstance(item, str) and item and secret_key(key):
                    copy[new_key] = mask
                else:
                    copy[new_key] = None
                    stack.append((item, copy, new_key))
        elif isinstance(value, list):
            items: list[Any] = [None] * len(value)
            parent[slot] = items
            stack.extend((item, items, i) for i, item in enumerate(value))
        elif isinstance(value, str):
            parent[slot] = text(value)
        else:
            parent[slot] = value
    return root[0]


def _items(items: Any) -> list[dict[str, Any]]:
    """The well-formed `{"name": str, "value": str}` items of a HAR list; others are dropped (they would make
    the copy invalid HAR, and cannot be shown safely)."""
    if not isinstance(items, list):
        return []
    return [item for item in items
            if isinstance(item, dict) and isinstance(item.get("name"), str) and isinstance(item.get("value"), str)]


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any, default: str) -> str:
    return value if isinstance(value, str) else default


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _number(value: Any, default: float) -> float:
    return value if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0 else default
