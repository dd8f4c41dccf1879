"""What a credential looks like: token formats, secret-bearing names, Okta cookies and hosts; pure data."""

from __future__ import annotations

import functools
import re
from typing import Any
from urllib.parse import urlsplit

#: Values shorter than this are never reported: no credential this project acts on is shorter, and short
#: values (`true`, `1`, `en-US`) named like secrets are noise. Sanitizing still masks them by name.
MIN_VALUE = 8

JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
GITHUB = re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,255}|github_pat_[A-Za-z0-9_]{22,255})")
SLACK = re.compile(r"\b(?:xox[abposre]-[A-Za-z0-9-]{10,250}|xapp-[0-9]-[A-Za-z0-9-]{10,250})")
AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")
AWS_SECRET_NEAR_NAME = re.compile(
    r"(?i:aws_?secret_?access_?key|secret_?access_?key)[\"'\s:=]{1,6}([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])")
#: A bare Okta API token as a JSON string value.
OKTA_TOKEN_IN_JSON = re.compile(r'"00[A-Za-z0-9_-]{40}"')
SSWS_IN_TEXT = re.compile(r"\bSSWS ?(00[A-Za-z0-9_-]{40})\b")
#: One pass over a string finds every format above; the group names say which.
TOKENS = re.compile("|".join(f"(?P<{name}>{pattern.pattern})" for name, pattern in (
    ("jwt", JWT), ("github", GITHUB), ("slack", SLACK), ("aws_key_id", AWS_KEY_ID))))
#: Strings with none of these literals hold no token format: a cheap test before the patterns.
_LITERALS = re.compile("eyJ|gh[pousr]_|github_pat_|xox|xapp-|AKIA|ASIA|SSWS|ecret")

AUTHORIZATION_HEADERS = frozenset({"authorization", "proxy-authorization"})
AUTH_SCHEME = re.compile(r"^\s*(?P<scheme>bearer|ssws|basic|token|sso-key)\b\s*(?P<value>.*?)\s*$",
                         re.IGNORECASE | re.DOTALL)
#: The cookies Okta keeps a signed-in browser's session in (`sid` classic, `idx` Identity Engine, `DT`
#: the device token that skips MFA prompts, `JSESSIONID` the app server's session).
OKTA_COOKIES = frozenset({"sid", "idx", "dt", "jsessionid"})
_OKTA_HOSTS = (".okta.com", ".oktapreview.com", ".okta-emea.com", ".okta-gov.com", ".okta.mil", ".trexcloud.com")
#: `/api/v1/sessions/me` (or by id) answers the session's id: a session id echoed in a response.
OKTA_SESSION_PATH = re.compile(r"/api/v1/sessions/(?:me|[A-Za-z0-9_-]{8,})/?$")

#: Parameter, header and JSON key names whose values are secrets, normalised (lower case, no `-`/`_`).
_SECRET_NAMES = frozenset({"key", "pwd", "sig", "signature", "auth", "apikey", "xapikey", "sessionid"})
_SECRET_SUFFIXES = ("apikey", "accesstoken", "idtoken", "refreshtoken", "authtoken", "sessiontoken",
                    "clientsecret", "secret", "password", "passwd", "privatekey", "securitytoken", "statetoken",
                    "token", "accesskey", "secretkey", "credential", "credentials")
#: Named like secrets but not credentials: sanitized like them, never reported or published.
_NOT_CREDENTIALS = ("csrf", "xsrf", "nonce", "tokentype", "captcha")
_SESSION_COOKIE = re.compile(r"(?i)sess|token|auth|jwt")
_OWNER_KEYS = ("username", "login", "email", "userName", "user")


def normalise(name: str) -> str:
    """A name as compared: lower case without `-` and `_`."""
    return name.lower().replace("-", "").replace("_", "")


@functools.lru_cache(maxsize=4096)  # the same few hundred names recur in every entry of a capture
def is_secret_name(name: str) -> bool:
    """True when a parameter, header or JSON key of this name holds a secret."""
    norm = normalise(name)
    return norm in _SECRET_NAMES or norm.endswith(_SECRET_SUFFIXES)


def is_credential_name(name: str) -> bool:
    """True when the value of a secret-named field is worth reporting (a CSRF token is not)."""
    norm = normalise(name)
    return is_secret_name(name) and not any(word in norm for word in _NOT_CREDENTIALS)


def is_session_cookie(name: str) -> bool:
    """Cookies other than Okta's whose names say they carry a session."""
    return _SESSION_COOKIE.search(name) is not None


def has_secret_key(document: Any) -> bool:
    """True when some object in `document` has a secret-named key with a non-empty string value."""
    stack = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(value, str):
                    if value and is_secret_name(key):
                        return True
                elif isinstance(value, dict | list):
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(item for item in node if isinstance(item, dict | list))
    return False


def may_hold_token(text: str) -> bool:
    """False when `text` cannot contain any token format (most strings): skips the regular expressions."""
    return _LITERALS.search(text) is not None


def is_okta_url(url: str) -> bool:
    """True for an Okta org's host."""
    try:
        host = (urlsplit(url).hostname or "").lower()
    except ValueError:
        return False
    return host.endswith(_OKTA_HOSTS)


def owner_key(key: str) -> bool:
    """True for a JSON key naming the principal a credential beside it belongs to."""
    return key in _OWNER_KEYS


def token_kind(value: str) -> str | None:
    """The credential kind a bare token's format says, or None when it has no known format."""
    if GITHUB.fullmatch(value):
        return "github.token"
    if SLACK.fullmatch(value):
        return "slack.token"
    if JWT.fullmatch(value):
        return "jwt"
    if AWS_KEY_ID.fullmatch(value):
        return "aws.session" if value.startswith("ASIA") else "aws.access_key"
    if value.startswith("00") and len(value) == 42:
        return "okta.api_token"
    return None
