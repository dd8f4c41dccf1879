"""Measures the httpx provider clients (GitHub, Slack, GCP) against their emulator processes.

Each case sends COUNT actions through the provider and its governor (concurrency and `initial_burst` as
`open_providers` builds them, then a sweep), all handed over at once as the executor does, and reports
requests/s and request latency p50/p99 (httpx send to response, without governor queueing). Emulator
limits are raised so only the client is measured.

    .venv/bin/python bench/providers_http.py [--count 2000] [--sweep 1,32,64] [--record bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from typing import Any

import httpx

from orchestrator import embedded
from orchestrator.actions import Provider, StepContext
from orchestrator.governor import Governor
from orchestrator.providers import gcp, github, slack
from orchestrator.settings import GcpSettings, GitHubSettings, SlackSettings

APP_ID, APP_SECRET = "Iv1.bench", secrets.token_hex(20)
Case = Callable[[str, int, int], Awaitable[tuple[Provider, list[tuple[str, dict[str, Any]]]]]]


def _control(url: str, method: str, path: str, body: Any = None) -> Any:
    response = httpx.request(method, f"{url}/_emulator/{path}", json=body, timeout=30)
    response.raise_for_status()
    return response.json()


def _governor(name: str, concurrency: int) -> Governor:
    return Governor(name, concurrency=concurrency, initial_burst=concurrency, log_interval_s=3600)


async def _slack(url: str, count: int, concurrency: int) -> tuple[Provider, list[tuple[str, dict[str, Any]]]]:
    tokens = [f"xoxb-1-2-{secrets.token_hex(12)}" for _ in range(count)]
    _control(url, "PUT", "rate-limits", {"auth.revoke": {"limit": 10**9, "window_s": 60}})
    _control(url, "POST", "state", {"tokens": [{"token": t, "user": "U1", "team": "T1"} for t in tokens]})
    provider = slack.SlackProvider(SlackSettings(api_url=f"{url}/api"), _governor("slack", concurrency))
    return provider, [("slack.revoke_token", {"token": t}) for t in tokens]


async def _gcp(url: str, count: int, concurrency: int) -> tuple[Provider, list[tuple[str, dict[str, Any]]]]:
    token = "ya29." + secrets.token_urlsafe(16)
    keys = [(f"sa{i % 50}@bench.iam.gserviceaccount.com", secrets.token_hex(20)) for i in range(count)]
    _control(url, "PUT", "rate-limits", {"limit": 10**9, "window_s": 60})
    _control(url, "POST", "state", {"access_tokens": [token],
                                    "keys": [{"project": "bench", "email": e, "key_id": k} for e, k in keys]})
    provider = gcp.GcpProvider(GcpSettings(iam_url=url, access_token=token), _governor("gcp", concurrency))
    return provider, [("gcp.delete_service_account_key", {"email": e, "key_id": k}) for e, k in keys]


async def _github_app(url: str, count: int, concurrency: int) -> tuple[Provider, list[tuple[str, dict[str, Any]]]]:
    tokens = [f"gho_{secrets.token_hex(18)}" for _ in range(count)]
    _control(url, "PUT", "rate-limits", {"apps": {"limit": 10**9, "window_s": 60}, "core": {"limit": 10**9,
                                                                                          "window_s": 60}})
    _control(url, "POST", "state", {"apps": [{"client_id": APP_ID, "client_secret": APP_SECRET}],
                                    "tokens": [{"token": t, "owner": "o", "app_client_id": APP_ID} for t in tokens]})
    settings = GitHubSettings(api_url=url, app_client_id=APP_ID, app_client_secret=APP_SECRET)
    provider = github.GitHubProvider(settings, _governor("github", concurrency))
    return provider, [("github.revoke_token", {"token": t}) for t in tokens]


async def _github_batch(url: str, count: int, concurrency: int) -> tuple[Provider, list[tuple[str, dict[str, Any]]]]:
    tokens = [f"ghp_{secrets.token_hex(18)}" for _ in range(count)]
    _control(url, "PUT", "rate-limits", {"core": {"limit": 10**9, "window_s": 60}})
    _control(url, "POST", "state", {"tokens": [{"token": t, "owner": "o"} for t in tokens]})
    provider = github.GitHubProvider(GitHubSettings(api_url=url), _governor("github", concurrency))
    return provider, [("github.revoke_token", {"token": t}) for t in tokens]


async def measure(url: str, case: Case, count: int, concurrency: int) -> dict[str, float]:
    """Run one case; return actions/s, requests/s (the emulator's count), request latency p50/p99 in ms."""
    provider, actions = await case(url, count, concurrency)
    _control(url, "POST", "reset")
    latencies: list[float] = []

    async def sent(request: httpx.Request) -> None:
        request.extensions["bench_t0"] = time.perf_counter()

    async def answered(response: httpx.Response) -> None:
        latencies.append(time.perf_counter() - response.request.extensions["bench_t0"])

    async def one(action: str, params: dict[str, Any]) -> None:
        await provider.perform(action, params, StepContext("bench"))

    async with provider:  # type: ignore[attr-defined]
        # Request latency as httpx sees it (send to response headers), not time queued in the governor.
        provider._client.event_hooks = {"request": [sent], "response": [answered]}  # type: ignore[attr-defined]
        started = time.perf_counter()
        await asyncio.gather(*(one(a, p) for a, p in actions))
        elapsed = time.perf_counter() - started
    requests = _control(url, "GET", "stats")["requests"]
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return {"actions_s": count / elapsed, "requests": requests, "requests_s": requests / elapsed,
            "p50_ms": quantiles[49] * 1000, "p99_ms": quantiles[98] * 1000}


CASES: dict[str, tuple[str, Case, int]] = {
    "Slack `auth.revoke`": ("slack", _slack, slack.CONCURRENCY),
    "GCP IAM key `DELETE`": ("gcp", _gcp, gcp.CONCURRENCY),
    "GitHub `DELETE /applications/{id}/token`": ("github", _github_app, github.CONCURRENCY),
    "GitHub `/credentials/revoke`, coalesced": ("github", _github_batch, github.CONCURRENCY),
}


async def main(count: int, sweep: list[int]) -> list[str]:
    """Every case at its default concurrency and across the sweep; the table rows."""
    rows = []
    with ExitStack() as stack:
        urls = {name: stack.enter_context(embedded.emulator(name)).url for name in ("slack", "gcp", "github")}
        for label, (emulator, case, default) in CASES.items():
            for concurrency in sorted({default, *sweep}):
                r = await measure(urls[emulator], case, count, concurrency)
                mark = " (default)" if concurrency == default else ""
                rows.append(f"| {label} | {concurrency}{mark} | {r['actions_s']:.0f} | {r['requests']:.0f} | "
                            f"{r['requests_s']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} |")
                print(rows[-1], flush=True)
    return rows


def record(path: str, text: str, section: str = "## Provider clients") -> None:
    """Insert `text` at the end of `section` of a Markdown file (creating either when missing)."""
    try:
        with open(path, encoding="utf-8") as existing:
            document = existing.read()
    except FileNotFoundError:
        document = ""
    if section not in document:
        document = f"{section}\n{document}"
    start = document.index(section) + len(section)
    end = document.find("\n## ", start)
    end = len(document) if end < 0 else end + 1
    body = document[:end].rstrip("\n") + "\n" + text + "\n"
    with open(path, "w", encoding="utf-8") as out:
        out.write(body + document[end:])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--sweep", default="1,32,64")
    parser.add_argument("--record", help="append the table to this Markdown file")
    args = parser.parse_args()
    table = asyncio.run(main(args.count, [int(c) for c in args.sweep.split(",")]))
    if args.record:
        header = [f"\n### GitHub, Slack, GCP (httpx {httpx.__version__}, `bench/providers_http.py`)",
                  f"{time.strftime('%Y-%m-%d')}, Python {platform.python_version()}; command: "
                  f"`.venv/bin/python bench/providers_http.py --count {args.count} --sweep {args.sweep}`.",
                  "", "| case | governor concurrency | actions/s | requests | requests/s | p50 ms | p99 ms |",
                  "|---|---|---|---|---|---|---|"]
        record(args.record, "\n".join([*header, *table]) + "\n")
