"""The shapes of provider identifiers: what a step's target must look like before any call is made.

Every identifier an action takes has a `Grammar`: a pattern from the provider's public reference, plus the
rules no identifier may break whatever its pattern: no control characters, no `/` or `\\`, no dot segments
(`.`, `..`, nor their percent-encoded forms) and no reserved words that address the caller itself (Okta's
`current` and `me`). A value that fails its grammar never reaches a provider: the step fails, naming the
parameter. Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

#: Words a provider reads as "the caller" or "all" in a path segment: `DELETE /api-tokens/current` revokes the
#: token making the call, `GET /users/me` is the caller; none may come from an event.
RESERVED = frozenset({"current", "me", "self", "all", "default", "-", "*", "null", "none", "undefined"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ENCODED_PATH = re.compile(r"%(?:2e|2f|5c|25|00)", re.IGNORECASE)


@dataclass(frozen=True)
class Grammar:
    """The shape of one kind of identifier: `pattern` (full match) and a description people can act on.

    `segment`: the value may be put in a URL path, so `/` and dot segments are refused outright; ARNs, which
    hold `/` but only ever travel in request bodies or query strings, set it False.
    """

    name: str
    pattern: str
    description: str
    segment: bool = True
    max_length: int = 256

    def problem(self, value: str) -> str | None:
        """Why `value` is not a valid identifier of this kind, or None when it is. Never quotes the value."""
        if not value:
            return "is empty"
        if len(value) > self.max_length:
            return f"is longer than {self.max_length} characters"
        if _CONTROL.search(value):
            return "contains control characters"
        if value.strip().casefold() in RESERVED or unquote(value).strip().casefold() in RESERVED:
            return "is a reserved word that names the caller itself"
        if _ENCODED_PATH.search(value):
            return "contains a percent-encoded path character"
        parts = re.split(r"[/\\]", value)
        if any(part in (".", "..") for part in parts):
            return "contains a dot segment (. or ..)"
        if self.segment and len(parts) > 1:
            return "contains / or \\"
        if not re.fullmatch(self.pattern, value):
            return f"is not {self.description}"
        return None


def segment(value: str) -> str:
    """`value` percent-encoded for one URL path segment; raise ValueError for what must never be one."""
    if not value or value in (".", "..") or value.casefold() in RESERVED or _CONTROL.search(value):
        raise ValueError("not usable as a URL path segment")
    return quote(value, safe="@")


_OKTA_OBJECT = r"[0-9A-Za-z]{17}"
_IAM_NAME = r"[\w+=,.@-]{1,64}"
_IAM_PATH = r"(?:/[\w+=,.@-]+)*/"
_ACCOUNT = r"\d{12}"
_PARTITION = r"arn:aws(?:-cn|-us-gov|-iso|-iso-b)?"

OKTA_USER_ID = Grammar("okta user id", r"00u" + _OKTA_OBJECT, "an Okta user id (00u and 17 letters or digits)")
#: Okta logins are email-shaped or short names (up to 100 characters); `GET /users/{login}` takes either.
OKTA_USER = Grammar("okta user", r"(?:00u" + _OKTA_OBJECT + r"|[\w.+@'-]{1,100})",
                    "an Okta user id (00u...), login or email", max_length=100)
OKTA_SESSION_ID = Grammar("okta session id", r"[0-9A-Za-z_-]{10,64}",
                          "an Okta session id (letters, digits, _ and -, e.g. 102...)")
OKTA_API_TOKEN_ID = Grammar("okta api token id", r"00T" + _OKTA_OBJECT,
                            "an Okta API token id (00T and 17 letters or digits)")
OKTA_CLIENT_ID = Grammar("okta client id", r"[0-9A-Za-z_-]{6,100}", "an OAuth client id")
OKTA_API_TOKEN = Grammar("okta api token", r"[0-9A-Za-z_-]{20,100}", "an Okta API token (SSWS value)")

#: Access key ids are 20 characters: AKIA (long-term) or ASIA (temporary), then 16 of base32's A-Z2-7.
AWS_ACCESS_KEY_ID = Grammar("aws access key id", r"A[KS]IA[A-Z2-7]{16}",
                            "an AWS access key id (AKIA or ASIA and 16 of A-Z, 2-7)")
#: IAM user and role names: 1-64 of letters, digits and + = , . @ _ - (IAM's documented character set).
AWS_USER = Grammar("aws iam user", rf"(?:{_IAM_NAME}|{_PARTITION}:iam::{_ACCOUNT}:user{_IAM_PATH}{_IAM_NAME})",
                   "an IAM user name (1-64 of letters, digits, +=,.@_-) or user ARN", segment=False, max_length=600)
AWS_ROLE = Grammar("aws iam role",
                   rf"(?:{_IAM_NAME}|{_PARTITION}:iam::{_ACCOUNT}:role{_IAM_PATH}{_IAM_NAME}"
                   rf"|{_PARTITION}:sts::{_ACCOUNT}:assumed-role/{_IAM_NAME}/[\w+=,.@-]{{2,64}})",
                   "an IAM role name, role ARN or assumed-role ARN", segment=False, max_length=600)
AWS_POLICY_ARN = Grammar("aws policy arn",
                         rf"{_PARTITION}:iam::(?:aws|{_ACCOUNT}):policy{_IAM_PATH}[\w+=,.@-]{{1,128}}",
                         "a managed policy ARN", segment=False, max_length=600)
AWS_SECRET_PREFIX = Grammar("aws secret prefix", r"[\w/+=.@-]{1,400}", "a Secrets Manager name prefix",
                            segment=False, max_length=400)

#: Key ids are the 40 hex digits of a key file's `private_key_id`.
GCP_KEY_ID = Grammar("gcp key id", r"[0-9a-f]{40}", "a service-account key id (40 hex digits)")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
GCP_SERVICE_ACCOUNT = Grammar(
    "gcp service account", rf"{_LABEL}@(?:{_LABEL}\.)*(?:[a-z0-9-]+\.)?gserviceaccount\.com",
    "a service-account email (name@project.iam.gserviceaccount.com)", max_length=254)
GCP_PROJECT = Grammar("gcp project", r"[a-z][a-z0-9-]{4,28}[a-z0-9]", "a project id (6-30 of a-z, 0-9, -)")

GITHUB_TOKEN = Grammar("github token", r"(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,244})",
                       "a GitHub token (ghp_, gho_, ghu_, ghs_, ghr_ or github_pat_)")
SLACK_TOKEN = Grammar("slack token", r"(?:xox[abpoesr]|xoxe\.xox[bp]|xapp)-[0-9A-Za-z-]{8,250}",
                      "a Slack token (xoxb-, xoxp-, xoxa-, xoxe.xoxp-, xapp-...)")

ALL: tuple[Grammar, ...] = (OKTA_USER_ID, OKTA_USER, OKTA_SESSION_ID, OKTA_API_TOKEN_ID, OKTA_CLIENT_ID,
                            OKTA_API_TOKEN, AWS_ACCESS_KEY_ID, AWS_USER, AWS_ROLE, AWS_POLICY_ARN,
                            AWS_SECRET_PREFIX, GCP_KEY_ID, GCP_SERVICE_ACCOUNT, GCP_PROJECT, GITHUB_TOKEN,
                            SLACK_TOKEN)
