"""The sample data `orchestrator dev` seeds into each emulator, generated at start (random values, the right
prefixes: nothing real-looking is committed), and how `orchestrator dev --show-data` lists it."""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass, field
from typing import Any

import httpx

DEMO_ADMIN = "sam.support@example.com"
DEMO_CUSTOMER = "casey.customer@example.com"
AWS_USERS = ("ci-deployer", "alice.dev")
GCP_PROJECT = "dev-project"
GCP_ACCOUNT = f"builder@{GCP_PROJECT}.iam.gserviceaccount.com"
GITHUB_OWNER = "octo-dev"
SLACK_USER, SLACK_TEAM = "U0DEVUSER1", "T0DEVTEAM1"
_ALNUM = string.ascii_letters + string.digits


@dataclass(frozen=True)
class Sample:
    """One seeded credential: what it is, its fields, and the command that revokes it."""

    provider: str
    what: str
    kind: str
    fields: dict[str, str]
    #: Given to `trigger` on stdin (`--secret-stdin`), when the playbook acts on the value itself.
    secret: str | None = field(default=None, repr=False)

    def trigger(self) -> str:
        """The `orchestrator trigger` command for this credential (a dry run)."""
        flags = " ".join(f"--{name} {value}" for name, value in self.fields.items() if name in ("id", "owner"))
        command = f"orchestrator trigger --kind {self.kind} {flags}".rstrip() + " --dry-run"
        return f"echo {self.secret} | {command} --secret-stdin" if self.secret else command


def _random(length: int) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(length))


def _post_state(url: str, state: dict[str, Any]) -> None:
    httpx.post(f"{url}/_emulator/state", json=state, timeout=10).raise_for_status()


def seed_okta(url: str) -> tuple[list[Sample], dict[str, str]]:
    """Two users with sessions (one with an OAuth grant, one an admin with MFA factors) and an admin's API
    token; also returns the values the demo needs."""
    session_id = "102" + secrets.token_hex(12)
    admin_session = "102" + secrets.token_hex(12)
    token_value = "00" + secrets.token_urlsafe(30)[:40]
    _post_state(url, {
        "users": [
            {"login": DEMO_CUSTOMER, "email": DEMO_CUSTOMER, "sessions": [session_id, "102" + secrets.token_hex(12)],
             "grants": [{"clientId": "0oa-demo-portal"}], "tokens": [{"clientId": "0oa-demo-portal"}]},
            {"login": DEMO_ADMIN, "email": DEMO_ADMIN, "sessions": [admin_session], "factors": 2},
        ],
        "api_tokens": [{"name": "support-automation", "login": DEMO_ADMIN, "token": token_value}],
    })
    samples = [
        Sample("okta", "user with 2 sessions and an OAuth grant", "okta.user", {"owner": DEMO_CUSTOMER}),
        Sample("okta", "admin user with 1 session and 2 MFA factors", "okta.user", {"owner": DEMO_ADMIN}),
        Sample("okta", f"session of {DEMO_CUSTOMER}", "okta.session", {"id": session_id}),
        Sample("okta", f"SSWS API token of {DEMO_ADMIN}", "okta.api_token", {}, secret=token_value),
    ]
    return samples, {"session_id": session_id, "api_token": token_value}


def seed_aws(endpoint_url: str, env: dict[str, str]) -> list[Sample]:
    """IAM users in moto, each with one access key."""
    import botocore.session

    client = botocore.session.get_session().create_client(
        "iam", endpoint_url=endpoint_url, region_name=env.get("AWS_REGION", "us-east-1"),
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    samples = []
    for user in AWS_USERS:
        client.create_user(UserName=user)
        key = client.create_access_key(UserName=user)["AccessKey"]["AccessKeyId"]
        samples.append(Sample("aws", f"IAM user {user}'s access key", "aws.access_key", {"id": key, "owner": user}))
    return samples


def seed_gcp(url: str, access_token: str) -> list[Sample]:
    """A service account with two keys, and the access token the orchestrator calls IAM with."""
    key_ids = [secrets.token_hex(20) for _ in range(2)]
    _post_state(url, {"access_tokens": [access_token],
                      "keys": [{"project": GCP_PROJECT, "email": GCP_ACCOUNT, "key_id": k} for k in key_ids]})
    return [Sample("gcp", f"key {n} of service account {GCP_ACCOUNT}", "gcp.service_account_key",
                   {"id": key_id, "owner": GCP_ACCOUNT}) for n, key_id in enumerate(key_ids, 1)]


def seed_github(url: str) -> list[Sample]:
    """A classic and a fine-grained personal access token."""
    tokens = ["ghp_" + _random(36), "github_pat_" + _random(22) + "_" + _random(59)]
    _post_state(url, {"tokens": [{"token": t, "owner": GITHUB_OWNER} for t in tokens]})
    return [Sample("github", f"{what} of {GITHUB_OWNER}", "github.token", {}, secret=token)
            for what, token in zip(("classic PAT", "fine-grained PAT"), tokens, strict=True)]


def seed_slack(url: str) -> list[Sample]:
    """A bot token and a user token of one workspace."""
    tokens = [f"xoxb-{secrets.randbelow(10**12)}-{secrets.randbelow(10**12)}-{_random(24)}",
              f"xoxp-{secrets.randbelow(10**12)}-{secrets.randbelow(10**12)}-{_random(32)}"]
    _post_state(url, {"tokens": [{"token": t, "user": SLACK_USER, "team": SLACK_TEAM} for t in tokens]})
    return [Sample("slack", f"{what} of workspace {SLACK_TEAM}", "slack.token", {}, secret=token)
            for what, token in zip(("bot token", "user token"), tokens, strict=True)]


def show(samples: list[Sample]) -> str:
    """The listing `orchestrator dev --show-data` prints: each credential and the command that revokes it."""
    lines = ["Sample data in the emulators (generated at start, gone at exit):"]
    for provider in dict.fromkeys(s.provider for s in samples):
        lines.append(f"  {provider}:")
        for sample in (s for s in samples if s.provider == provider):
            facts = ", ".join(f"{k} {v}" for k, v in sample.fields.items())
            shown = f"{sample.what}" + (f" ({facts})" if facts else "") + (f": {sample.secret}" if sample.secret
                                                                           else "")
            lines.append(f"    - {shown}")
            lines.append(f"        {sample.trigger()}")
    return "\n".join(lines)
