"""Redaction benchmark (issue 8): audit records rendered per second with live secrets, steady and churning.

Renders a typical `step.succeeded` record through the audit path's own pipeline (`_render_pipeline`:
values redacted, then JSON), in-process, with LIVE secrets registered; then the churn case, where every
exposure registers its own secret, writes 6 records and releases it (what the service does).

    .venv/bin/python bench/redaction.py --live 0 --live 256
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from pathlib import Path

from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.audit import _render_pipeline
from orchestrator.redaction import Redactor

FIELDS = dict(exposure_id="exp-1234567890ab", run_id=secrets.token_hex(16), playbook="okta-session",
              step="clear-owner-sessions", action="okta.clear_user_sessions", target="okta.session:user-1234567",
              attempt=1, duration_ms=12, credential_kind="okta.session", detector="trufflehog",
              note="revoked 3 sessions", error="transient: okta HTTP 503 Service Unavailable for user abc")


def steady(live: int, records: int) -> float:
    """Records/s with `live` secrets registered throughout."""
    redactor = Redactor()
    for _ in range(live):
        redactor.register(SecretStr(secrets.token_urlsafe(24)))
    render = _render_pipeline(redactor)
    started = time.perf_counter()
    for _ in range(records):
        render.msg("step.succeeded", **FIELDS)
    return records / (time.perf_counter() - started)


def churn(live: int, exposures: int) -> float:
    """Exposures/s when each registers a secret, renders 6 records and releases it, `live` others in flight."""
    redactor = Redactor()
    for _ in range(live):
        redactor.register(SecretStr(secrets.token_urlsafe(24)))
    render = _render_pipeline(redactor)
    started = time.perf_counter()
    for _ in range(exposures):
        secret = SecretStr(secrets.token_urlsafe(24))
        redactor.register(secret)
        for _ in range(6):
            render.msg("step.succeeded", **FIELDS)
        redactor.release(secret)
    return exposures / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--live", type=int, action="append", help="live secrets (repeatable; default 0 and 256)")
    parser.add_argument("--records", type=int, default=20_000)
    args = parser.parse_args()
    for live in args.live or [0, 256]:
        print(json.dumps({"live_secrets": live, "records_per_s": round(steady(live, args.records)),
                          "churn_exposures_per_s": round(churn(live, args.records // 6))}))


if __name__ == "__main__":
    main()
