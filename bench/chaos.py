"""Chaos suite (issue 8): kill, starve, cut off and poison a real `orchestrator run`; count what survives.

Each scenario starts its own Tansu broker, provider emulators (behind the fault proxy where it injects faults)
and `python -m orchestrator run` as a supervised child process, then proves its invariants from the outside:
every published record has a terminal audit record (lost = 0), no crash, lag back to 0, no stale commit, and
no canary secret anywhere. Duplicated terminal records are a figure, not an invariant (at-least-once delivery
after a SIGKILL may legitimately run an exposure twice).

    .venv/bin/python bench/chaos.py all                      # the issue's sizes (make chaos)
    .venv/bin/python bench/chaos.py kills --exposures 200 --kills 3 --seed 7

Prints a results table and one JSON line (`CHAOS-SUMMARY {...}`); exits 1 when any invariant fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import random
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import chaos_poison  # noqa: E402
from bench.chaos_rig import (  # noqa: E402
    Broker,
    Canary,
    Names,
    Published,
    Supervised,
    Tally,
    canary_hits,
    emulator_control,
    ends_of,
    orchestrator_env,
    producer,
    publish_exposures,
    python_record_builder,
    read_topic,
    record_blobs,
    roomy_limits,
    wait_lag_zero,
    wait_terminals,
    write_tokens_file,
)
from orchestrator import embedded  # noqa: E402
from orchestrator.playbooks import RetryPolicy  # noqa: E402
from orchestrator.settings import DEFAULT_PLAYBOOKS_DIR  # noqa: E402

_READY_GRACE_S = 5.0
_OUTAGE_LOG_LINES = 200
SCENARIOS = ("kills", "faults", "outage", "poison", "canaries")
CODECS = (None, "gzip", "snappy", "lz4", "zstd")


@dataclass
class Outcome:
    """One scenario's figures and the invariants it broke (empty: it passed)."""

    scenario: str
    exposures: int = 0
    kills: int = 0
    faults: int = 0
    lost: int = 0
    duplicated: int = 0
    canary_hits: int = 0
    crashes: int = 0
    lag: int = 0
    stale_commits: int = 0
    peak_rss_mb: float = 0.0
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def check(self, holds: bool, invariant: str) -> None:
        """Record `invariant` as broken unless it holds."""
        if not holds:
            self.failures.append(invariant)


@dataclass
class Stage:
    """What a scenario runs against: a broker, emulators and where the orchestrator's log goes."""

    broker: Broker
    log_dir: Path
    rng: random.Random
    stack: contextlib.ExitStack
    checkout: Path = ROOT
    admin_token: str = ""
    urls: dict[str, str] = field(default_factory=dict)

    @property
    def bootstrap(self) -> str:
        """The broker's address."""
        return self.broker.url

    def emulator(self, name: str, *args: str) -> str:
        """Start an emulator process for the rest of the scenario; its base URL."""
        url = self.stack.enter_context(embedded.emulator(name, *args)).url
        self.urls[name] = url
        return url

    def providers(self, *, faulty: bool = False) -> dict[str, str]:
        """Okta and Slack emulators (behind fault proxies when `faulty`); the orchestrator's variables."""
        self.admin_token = "00" + secrets.token_urlsafe(32)[:40]
        okta = self.emulator("okta", "--admin-token", self.admin_token)
        slack = self.emulator("slack")
        roomy_limits(okta, slack)
        if faulty:
            okta = self.urls["okta-proxy"] = self.stack.enter_context(
                embedded.emulator("faultproxy", "--upstream", okta)).url
            slack = self.urls["slack-proxy"] = self.stack.enter_context(
                embedded.emulator("faultproxy", "--upstream", slack)).url
        return {"OKTA_CLIENT_ORGURL": okta, "OKTA_CLIENT_TOKEN": self.admin_token,
                "ORCHESTRATOR_SLACK_API_URL": slack + "/api"}

    def seed_users(self, count: int) -> list[str]:
        """Okta users with a session each; their logins."""
        logins = [f"chaos.{secrets.token_hex(3)}.{i}@example.com" for i in range(count)]
        emulator_control(self.urls["okta"], "POST", "state", {"users": [{"login": lg, "sessions": 1}
                                                                        for lg in logins]})
        return logins

    def injected(self) -> int:
        """Faults the proxies injected so far."""
        return sum(sum(emulator_control(self.urls[p], "GET", "chaos")["injected"].values())
                   for p in ("okta-proxy", "slack-proxy") if p in self.urls)


def mixed_exposures(stage: Stage, count: int, prefix: str) -> list[dict[str, Any]]:
    """Half Slack tokens (one call each), half Okta users (lookup, sessions, factors), with fresh ids."""
    logins = stage.seed_users(count // 2)
    events: list[dict[str, Any]] = []
    for i in range(count):
        credential = ({"kind": "okta.user", "owner": logins[i // 2]} if i % 2 and i // 2 < len(logins) else
                      {"kind": "slack.token", "secret": "xoxb-" + secrets.token_hex(16)})
        events.append({"id": f"{prefix}-{i}-{secrets.token_hex(3)}", "credential": credential,
                       "source": {"detector": "chaos"}})
    return events


async def _finish(outcome: Outcome, stage: Stage, names: Names, supervised: Supervised,
                  published: list[Published], tally: Tally, *, read_ends: bool = False) -> None:
    """The invariants every scenario shares: nothing lost, no crash, lag 0, no stale commit, clean stop.

    The lag is counted against what the suite published, or (`read_ends`, when others published too: the
    API) against the records read back from the topic.
    """
    outcome.lost, outcome.duplicated = tally.lost_and_duplicated(published)
    outcome.lag, outcome.stale_commits = await wait_lag_zero(stage.bootstrap, names,
                                                             None if read_ends else ends_of(published))
    code, drain_s = await supervised.stop()
    outcome.crashes = supervised.crashes
    outcome.peak_rss_mb = round(supervised.peak_rss_mb, 1)
    lost = [p.exposure_id or f"partition {p.partition} offset {p.offset}" for p in published if not tally.terminals(p)]
    outcome.details.update(exit_code_on_sigterm=code, stop_s=round(drain_s, 1), audit_records=tally.records,
                           crash_exit_codes=supervised.exit_codes[:10], lost_sample=lost[:8])
    outcome.check(outcome.lost == 0, f"lost == 0 (got {outcome.lost})")
    outcome.check(outcome.crashes == 0, f"no crash (got {outcome.crashes}, exit codes {supervised.exit_codes[:5]})")
    outcome.check(outcome.lag == 0, f"lag back to 0 (got {outcome.lag})")
    outcome.check(outcome.stale_commits == 0, f"no stale commit (got {outcome.stale_commits})")
    outcome.check(tally.unparsable == 0 and tally.unknown_event == 0,
                  f"every audit record parses ({tally.unparsable} unparsable, {tally.unknown_event} unknown events)")
    outcome.check(code == 0, f"SIGTERM exits 0 (got {code} after {drain_s:.1f}s)")


def _wait(args: argparse.Namespace, default_s: float) -> float:
    return float(args.wait_s) if args.wait_s is not None else default_s


def _supervised(stage: Stage, names: Names, scenario: str, **env: str) -> Supervised:
    port = embedded.free_port()
    checkout = stage.checkout
    return Supervised(orchestrator_env(stage.bootstrap, names, port, checkout=checkout, **env),
                      stage.log_dir / f"{scenario}.log")


async def kills(stage: Stage, args: argparse.Namespace) -> Outcome:
    """`--exposures` exposures published in chunks while the orchestrator is SIGKILLed `--kills` times."""
    outcome = Outcome("kills")
    names = Names.fresh("kills")
    supervised = _supervised(stage, names, "kills", **stage.providers())
    events = mixed_exposures(stage, args.exposures, "kill")
    chunks = [events[i::args.kills + 1] for i in range(args.kills + 1)]
    await supervised.start()
    published = await publish_exposures(stage.bootstrap, names.exposed, chunks[0])
    for chunk in chunks[1:]:
        await supervised.wait_ready(30)
        await asyncio.sleep(stage.rng.uniform(0.3, 2.5))  # somewhere in the middle of the work
        await supervised.kill()
        published += await publish_exposures(stage.bootstrap, names.exposed, chunk)
    outcome.exposures, outcome.kills = len(published), supervised.kills
    tally = await wait_terminals(stage.bootstrap, names.audit, published,
                                 timeout_s=_wait(args, 60 + len(published) / 20),
                                 supervised=supervised)
    await _finish(outcome, stage, names, supervised, published, tally)
    return outcome


def _retry_budgets() -> dict[str, int]:
    """max_attempts of each shipped playbook step, `playbook/step` → attempts."""
    budgets = {}
    for path in DEFAULT_PLAYBOOKS_DIR.glob("*.yaml"):
        book = yaml.safe_load(path.read_text())
        default = (book.get("retry") or {}).get("max_attempts", RetryPolicy().max_attempts)
        for step in book["steps"]:
            budgets[f"{book['name']}/{step['name']}"] = (step.get("retry") or {}).get("max_attempts", default)
    return budgets


def _over_budget(audit: list[dict[str, Any]]) -> list[str]:
    """Steps that retried more often than their playbook allows (waits for rate limits do not count)."""
    budgets = _retry_budgets()
    attempts: dict[tuple[str, str, str], int] = {}
    for r in audit:
        if str(r.get("event", "")).startswith("step.") and not r.get("rate_limited"):
            key = (str(r.get("exposure_id")), str(r.get("playbook")), str(r.get("step")))
            counted = 1 if r["event"] == "step.retrying" else 0
            attempts[key] = attempts.get(key, 0) + counted
    return [f"{e} {p}/{s}: {n} retries" for (e, p, s), n in attempts.items()
            if n > budgets.get(f"{p}/{s}", RetryPolicy().max_attempts) - 1]


async def faults(stage: Stage, args: argparse.Namespace) -> Outcome:
    """Providers answering 30 % 503, 10 % timeouts, bursts of 429 and 5-second responses."""
    outcome = Outcome("faults")
    names = Names.fresh("faults")
    supervised = _supervised(stage, names, "faults", ORCHESTRATOR_STEP_TIMEOUT_S="6", **stage.providers(faulty=True))
    chaos = {"error_rate": 0.3, "timeout_rate": 0.1, "timeout_s": 30, "slow_rate": 0.05, "slow_s": 5,
             "burst_every": 40, "burst_length": 5, "retry_after_s": 1}
    for proxy in ("okta-proxy", "slack-proxy"):
        emulator_control(stage.urls[proxy], "PUT", "chaos", {**chaos, "seed": stage.rng.randrange(2**31)})
    events = mixed_exposures(stage, args.faults_exposures, "fault")
    await supervised.start()
    published = await publish_exposures(stage.bootstrap, names.exposed, events)
    outcome.exposures = len(published)
    tally = await wait_terminals(stage.bootstrap, names.audit, published, timeout_s=_wait(args, 240),
                                 supervised=supervised)
    outcome.faults = stage.injected()
    audit = [json.loads(r.value) for r in await read_topic(stage.bootstrap, names.audit)]
    ends = {r["event"] for r in tally.terminal_records}
    unexplained = [r for r in tally.terminal_records if r["event"] == "run.failed" and not (r.get("error") or
                                                                                            r.get("reason"))]
    over = _over_budget(audit)
    outcome.details.update(terminal_events=sorted(ends), completed=sum(r["event"] == "run.completed" for r in
                                                                       tally.terminal_records),
                           failed=sum(r["event"] == "run.failed" for r in tally.terminal_records),
                           injected={p: emulator_control(stage.urls[p], "GET", "chaos")["injected"]
                                     for p in ("okta-proxy", "slack-proxy")}, over_budget=over[:5])
    outcome.check(ends <= {"run.completed", "run.failed"}, f"every run ends run.completed or run.failed (saw {ends})")
    outcome.check(not unexplained, f"every run.failed says why ({len(unexplained)} do not)")
    outcome.check(not over, f"retries within budget ({len(over)} steps over)")
    await _finish(outcome, stage, names, supervised, published, tally)
    return outcome


async def outage(stage: Stage, args: argparse.Namespace) -> Outcome:
    """The broker stopped for `--outage-s` seconds and restarted (empty: Tansu keeps nothing) on the same port."""
    outcome = Outcome("outage")
    names = Names.fresh("outage")
    supervised = _supervised(stage, names, "outage", **stage.providers())
    before = mixed_exposures(stage, args.outage_exposures // 2, "pre")
    after = mixed_exposures(stage, args.outage_exposures - len(before), "post")
    await supervised.start()
    published = await publish_exposures(stage.bootstrap, names.exposed, before)
    tally = await wait_terminals(stage.bootstrap, names.audit, published, timeout_s=_wait(args, 60),
                                 supervised=supervised)
    lost_before, _ = tally.lost_and_duplicated(published)
    await _broker_down(stage, supervised, outcome, args.outage_s)
    await asyncio.sleep(1.0)
    published_after = await publish_exposures(stage.bootstrap, names.exposed, after)
    tally_after = await wait_terminals(stage.bootstrap, names.audit, published_after, timeout_s=_wait(args, 90),
                                       supervised=supervised)
    outcome.exposures = len(published) + len(published_after)
    outcome.details.update(lost_before_outage=lost_before)
    outcome.check(lost_before == 0, f"nothing lost before the outage (got {lost_before})")
    await _finish(outcome, stage, names, supervised, published_after, tally_after)
    return outcome


async def _broker_down(stage: Stage, supervised: Supervised, outcome: Outcome, seconds: float) -> None:
    """Stop the broker, watch `/readyz` and the log for `seconds`, start an empty broker on the same port."""
    log_lines = _lines(supervised.log_path)
    stage.broker.stop()
    started = time.monotonic()
    answers: dict[str, int] = {}
    async with httpx.AsyncClient(timeout=1) as client:
        while (elapsed := time.monotonic() - started) < seconds:
            try:
                status = str((await client.get(supervised.http + "/readyz")).status_code)
            except httpx.HTTPError:
                status = "no answer"
            if elapsed > _READY_GRACE_S:  # time to notice the broker is gone
                answers[status] = answers.get(status, 0) + 1
            await asyncio.sleep(0.5)
    stage.broker.start()
    lines = _lines(supervised.log_path) - log_lines
    alive = supervised.alive and supervised.crashes == 0
    outcome.details.update(readyz_during_outage=answers, log_lines_during_outage=lines)
    outcome.check(alive, "keeps running while the broker is away")
    outcome.check(answers.get("200", 0) == 0 and answers.get("503", 0) > 0,
                  f"/readyz answers 503 during the outage (after {_READY_GRACE_S:.0f}s: {answers})")
    outcome.check(lines <= _OUTAGE_LOG_LINES, f"at most {_OUTAGE_LOG_LINES} log lines during the outage (got {lines})")


def _lines(path: Path) -> int:
    with contextlib.suppress(OSError), path.open("rb") as log:
        return sum(1 for _ in log)
    return 0


async def poison(stage: Stage, args: argparse.Namespace) -> Outcome:
    """`--poison` hypothesis-drawn records, plain and in every codec, then valid sentinels that must complete."""
    outcome = Outcome("poison")
    names = Names.fresh("poison")
    supervised = _supervised(stage, names, "poison", **stage.providers())
    records = chaos_poison.generate(args.poison, seed_value=args.seed, max_huge=max(2, args.poison // 500))
    await supervised.start()
    published: list[Published] = []
    kinds: dict[tuple[int, int], str] = {}
    for index, codec in enumerate(CODECS):
        client = await producer(stage.bootstrap, compression=codec)
        try:
            batch = records[index::len(CODECS)]
            sent = []
            for record in batch:
                raw_keys = any(isinstance(k, chaos_poison.RawKey) for k, _ in record.headers)
                if raw_keys:  # close the batch the Cython builder holds open: the next one is built in Python
                    await client.flush()
                with python_record_builder() if raw_keys else contextlib.nullcontext():
                    sent.append(await client.send(names.exposed, record.value, key=record.key,
                                                  headers=list(record.headers)))
                    if raw_keys:  # the builder swap must cover the batch's whole life: flush it now
                        await client.flush()
            for record, future in zip(batch, sent, strict=True):
                metadata = await future
                published.append(Published(metadata.partition, metadata.offset))
                kinds[(metadata.partition, metadata.offset)] = f"{record.kind}/{codec or 'none'}"
        finally:
            await client.stop()
    sentinels = await publish_exposures(stage.bootstrap, names.exposed, mixed_exposures(stage, 20, "sentinel"))
    outcome.exposures = len(published) + len(sentinels)
    tally = await wait_terminals(stage.bootstrap, names.audit, published + sentinels,
                                 timeout_s=_wait(args, 90 + len(published) / 50), supervised=supervised)
    by_origin = {(r.get("source_partition"), r.get("source_offset")): r for r in tally.terminal_records
                 if r["event"] == "exposure.rejected"}
    unexplained = [kinds[(p.partition, p.offset)] for p in published
                   if tally.terminals(p) and not str(by_origin.get((p.partition, p.offset), {}).get("reason") or "")]
    lost_kinds: dict[str, int] = {}
    for p in published:
        if not tally.terminals(p):
            lost_kinds[kinds[(p.partition, p.offset)]] = lost_kinds.get(kinds[(p.partition, p.offset)], 0) + 1
    sentinel_lost, _ = tally.lost_and_duplicated(sentinels)
    dead = await read_topic(stage.bootstrap, names.dlq)
    lettered = {_source_of(r) for r in dead}
    undead = _count(kinds[(p.partition, p.offset)] for p in published
                    if tally.terminals(p) and (p.partition, p.offset) not in lettered)
    outcome.details.update(kinds=_count(r.kind for r in records), lost_by_kind=dict(sorted(lost_kinds.items())),
                           not_rejected_with_reason=len(unexplained), dead_letters=len(dead),
                           rejected_not_dead_lettered=undead, sentinels_lost=sentinel_lost)
    outcome.check(not unexplained, f"each poison record rejected with a reason ({len(unexplained)} not)")
    outcome.check(sentinel_lost == 0, f"valid exposures after the poison still run ({sentinel_lost} lost)")
    outcome.check(not undead, f"each rejected record dead-lettered ({sum(undead.values())} not: {undead})")
    await _finish(outcome, stage, names, supervised, published + sentinels, tally)
    outcome.check(outcome.peak_rss_mb <= args.rss_limit_mb,
                  f"RSS bounded by {args.rss_limit_mb:.0f} MB (peak {outcome.peak_rss_mb} MB)")
    return outcome


def _source_of(dead_letter: Any) -> tuple[int, int] | None:
    """The (partition, offset) a dead letter's `source.*` headers name, if they do."""
    headers = {k: v for k, v in dead_letter.headers}
    try:
        return int(headers["source.partition"]), int(headers["source.offset"])
    except (KeyError, TypeError, ValueError):
        return None


def _count(items: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return dict(sorted(counts.items()))


_WORDS = ("marmoset", "pinecone", "quagmire", "tapestry", "zeppelin", "bungalow", "lanterns", "hedgehog")


def make_canaries(rng: random.Random) -> list[Canary]:
    """Secrets of every awkward shape, made now: tokens (ASCII and not), JSON fragments, 8-letter words.

    `complete` and the bare fragment `"event":"run.completed"` are what the orchestrator itself writes in
    every terminal record: they are planted to prove redaction never changes other records (every record
    parses, every event is known), and are grepped for only in their escaped forms.
    """
    tag = secrets.token_hex(6)
    return [
        Canary.of("xoxb-" + secrets.token_hex(20)),
        Canary.of("00" + secrets.token_urlsafe(30)[:40]),
        Canary.of("xoxp-ключ-" + secrets.token_hex(8) + "-密钥"),
        Canary.of(f"pässwörd-{tag}-€"),
        Canary.of(f'{{"event":"run.completed","exposure_id":"{tag}"}}'),
        Canary.of('"event":"run.completed"', raw_is_evidence=False),
        Canary("complete", ()),
        *(Canary.of(word) for word in rng.sample(_WORDS, 3)),
    ]


def _dead_letter_shapes(canary: str, tag: str) -> list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]:
    """Invalid records carrying the canary where a textual mask would miss it: (value, key, headers)."""
    # `s\u0065cret` is `secret` once decoded: a mask keyed on the raw text misses it.
    escaped_key = '{"credential": {"kind": "slack.token", "s\\u0065cret": ' + json.dumps(canary) + "}}"
    return [
        (json.dumps({"credential": {"kind": "slack.token", "secret": canary}}).encode(), None, []),
        (json.dumps({"id": f"dl-{tag}-1", "credential": [canary]}).encode(), None, []),
        (json.dumps({"id": f"dl-{tag}-2", "credential": {"kind": 5, "secret": canary},
                     "source": {"location": canary}}).encode(), None, []),
        (escaped_key.encode(), None, []),
        (json.dumps({"id": f"dl-{tag}-3", "credential": {"kind": "slack.token", "secret": canary}}).encode("utf-16"),
         None, []),
        (json.dumps({"id": f"dl-{tag}-4", "credential": {"kind": "slack.token", "secret": canary},
                     "padding": "x" * 70_000}).encode(), None, []),
        (b"not json " + canary.encode(), canary.encode(), [("note", canary.encode())]),
    ]


async def canaries(stage: Stage, args: argparse.Namespace) -> Outcome:
    """Canary secrets through events, triggers, the API, failures, retries, echoing providers and dead letters."""
    outcome = Outcome("canaries")
    names = Names.fresh("canaries")
    tokens_file = stage.log_dir / f"api-tokens-{names.group}.json"
    api_token = write_tokens_file(tokens_file)
    supervised = _supervised(stage, names, "canaries", ORCHESTRATOR_API_TOKENS_FILE=str(tokens_file),
                             **stage.providers(faulty=True))
    # Slack: half the calls 503 with the token echoed (retries, some runs fail); Okta: half 400 echoing it.
    emulator_control(stage.urls["slack-proxy"], "PUT", "chaos", {"error_rate": 0.5, "echo": True, "seed": 1})
    emulator_control(stage.urls["okta-proxy"], "PUT", "chaos", {"error_rate": 0.5, "error_status": 400,
                                                                "echo": True, "seed": 2})
    planted = make_canaries(stage.rng)
    tag = secrets.token_hex(4)
    events = []
    for n, canary in enumerate(planted):
        for kind in ("slack.token", "okta.api_token"):
            events.append({"id": f"canary-{tag}-{n}-{kind}", "credential": {"kind": kind, "secret": canary.value},
                           "source": {"detector": "chaos"}})
    await supervised.start()
    published = await publish_exposures(stage.bootstrap, names.exposed, events)
    client = await producer(stage.bootstrap)
    try:
        for n, canary in enumerate(planted):
            for value, key, headers in _dead_letter_shapes(canary.value, f"{tag}-{n}"):
                metadata = await (await client.send(names.exposed, value, key=key, headers=headers))
                published.append(Published(metadata.partition, metadata.offset))
    finally:
        await client.stop()
    bodies, api_ids = await _through_the_api(supervised.http, api_token, planted, tag)
    published += [Published(-1, -1, i) for i in api_ids]
    outcome.exposures = len(published)
    tally = await wait_terminals(stage.bootstrap, names.audit, published, timeout_s=_wait(args, 120),
                                 supervised=supervised)
    async with httpx.AsyncClient(timeout=10, headers={"Authorization": f"Bearer {api_token}"}) as http:
        for exposure_id in [e["id"] for e in events[:6]] + api_ids[:4]:
            bodies.append((await http.get(f"{supervised.http}/v1/exposures/{exposure_id}")).content)
        metrics = (await http.get(f"{supervised.http}/metrics")).content
    audit = await read_topic(stage.bootstrap, names.audit)
    dlq = await read_topic(stage.bootstrap, names.dlq)
    await _finish(outcome, stage, names, supervised, published, tally, read_ends=True)
    logs = supervised.log_path.read_bytes()
    hits = {"audit": canary_hits(planted, record_blobs(audit)), "dead_letters": canary_hits(planted, record_blobs(dlq)),
            "logs": canary_hits(planted, [logs]), "metrics": canary_hits(planted, [metrics]),
            "http": canary_hits(planted, bodies)}
    outcome.canary_hits = sum(hits.values())
    outcome.faults = stage.injected()
    leaking = [_describe_leak(r, planted) for r in dlq if canary_hits(planted, record_blobs([r]))]
    outcome.details.update(hits=hits, canaries=[c.label for c in planted], dead_letters=len(dlq),
                           http_bodies=len(bodies), leaking_dead_letters=leaking[:10])
    outcome.check(outcome.canary_hits == 0, f"canary hits == 0 (got {hits})")
    return outcome


def _describe_leak(record: Any, planted: list[Canary]) -> str:
    """Which part of a dead letter holds a canary, and what the record was (its shape, never the canary)."""
    where = [part for part, blob in (("value", record.value or b""), ("key", record.key or b""),
                                     ("headers", b"".join(v or b"" for _, v in record.headers)))
             if canary_hits(planted, [blob])]
    error = dict(record.headers).get("error", b"").decode(errors="replace")[:80]
    head = (record.value or b"")[:10]
    return f"in {'+'.join(where)}; value starts {head!r}; error header: {error}"


async def _through_the_api(http: str, token: str, planted: list[Canary], tag: str) -> tuple[list[bytes], list[str]]:
    """POST every canary as an exposure, as a trigger and in invalid bodies; every response body, new ids."""
    bodies: list[bytes] = []
    ids: list[str] = []
    async with httpx.AsyncClient(timeout=10, headers={"Authorization": f"Bearer {token}"}) as client:
        for n, canary in enumerate(planted):
            requests = [
                ("/v1/exposures", {"id": f"api-{tag}-{n}", "credential": {"kind": "slack.token",
                                                                          "secret": canary.value}}),
                ("/v1/triggers", {"kind": "slack.token", "secret": canary.value, "reason": "chaos canary"}),
                ("/v1/exposures", {"id": 5, "credential": {"kind": "slack.token", "secret": canary.value}}),
                ("/v1/triggers", {"kind": "slack.token", "secret": [canary.value], "severity": canary.value}),
            ]
            for path, body in requests:
                response = await client.post(http + path, json=body)
                bodies.append(response.content)
                if response.status_code == 202:
                    ids.append(str(response.json()["id"]))
    return bodies, ids


SCENARIO_FUNCTIONS: dict[str, Callable[[Stage, argparse.Namespace], Coroutine[Any, Any, Outcome]]] = {
    "kills": kills, "faults": faults, "outage": outage, "poison": poison, "canaries": canaries,
}


@contextlib.contextmanager
def _stage(args: argparse.Namespace, scenario: str, seed: int) -> Iterator[Stage]:
    with contextlib.ExitStack() as stack:
        broker = Broker()
        stack.callback(broker.stop)
        broker.start()
        rng = random.Random(seed)
        yield Stage(broker, args.log_dir, rng, stack, checkout=args.checkout.resolve())


async def run_scenario(name: str, args: argparse.Namespace) -> Outcome:
    """Run one scenario on a fresh broker and fresh emulators."""
    started = time.monotonic()
    with _stage(args, name, args.seed) as stage:
        try:
            outcome = await SCENARIO_FUNCTIONS[name](stage, args)
        except Exception as exc:  # a broken rig is a failed scenario, reported like the others
            outcome = Outcome(name, failures=[f"the scenario itself failed: {type(exc).__name__}: {exc}"])
    outcome.seconds = round(time.monotonic() - started, 1)
    return outcome


def table(outcomes: list[Outcome]) -> str:
    """The results as a Markdown table."""
    head = ("scenario", "exposures", "kills", "faults", "lost", "duplicated", "canary hits", "crashes", "lag",
            "stale commits", "peak RSS MB", "seconds", "invariants")
    rows: list[tuple[object, ...]] = [head, tuple("---" for _ in head)]
    for o in outcomes:
        verdict = "pass" if not o.failures else "FAIL: " + "; ".join(o.failures)
        rows.append((o.scenario, o.exposures, o.kills, o.faults, o.lost, o.duplicated, o.canary_hits, o.crashes,
                     o.lag, o.stale_commits, o.peak_rss_mb, o.seconds, verdict))
    return "\n".join("| " + " | ".join(str(c) for c in row) + " |" for row in rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="+", choices=(*SCENARIOS, "all"))
    parser.add_argument("--exposures", type=int, default=2000, help="kills: exposures published")
    parser.add_argument("--kills", type=int, default=20, help="kills: SIGKILLs")
    parser.add_argument("--faults-exposures", type=int, default=300, help="faults: exposures published")
    parser.add_argument("--outage-s", type=float, default=20.0, help="outage: seconds the broker is down")
    parser.add_argument("--outage-exposures", type=int, default=200, help="outage: exposures, half after")
    parser.add_argument("--poison", type=int, default=10_000, help="poison: records published")
    parser.add_argument("--rss-limit-mb", type=float, default=768.0, help="poison: peak RSS bound")
    parser.add_argument("--wait-s", type=float, default=None,
                        help="longest wait for terminal records (default: scaled to each scenario's size)")
    parser.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    parser.add_argument("--log-dir", type=Path, default=None, help="where the orchestrator's logs go")
    parser.add_argument("--checkout", type=Path, default=ROOT,
                        help="run the orchestrator package of this source tree (default: this one)")
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON summary here")
    args = parser.parse_args(argv)
    if "all" in args.scenarios:
        args.scenarios = list(SCENARIOS)
    if args.seed is None:
        args.seed = secrets.randbelow(2**31)
    if args.log_dir is None:
        args.log_dir = Path(tempfile.mkdtemp(prefix="chaos-"))
    args.log_dir.mkdir(parents=True, exist_ok=True)
    return args


async def main(argv: list[str] | None = None) -> int:
    """Run the scenarios asked for; 0 when every invariant held."""
    args = parse_args(argv)
    print(f"# chaos: {platform.node()}, Python {platform.python_version()}, seed {args.seed}, logs {args.log_dir}",
          flush=True)
    outcomes = []
    for name in args.scenarios:
        outcome = await run_scenario(name, args)
        print(f"# {name}: {'pass' if not outcome.failures else 'FAIL'} in {outcome.seconds}s", flush=True)
        outcomes.append(outcome)
    print(table(outcomes))
    summary = {"seed": args.seed, "passed": all(not o.failures for o in outcomes),
               "scenarios": [asdict(o) for o in outcomes]}
    line = json.dumps(summary, default=str)
    print("CHAOS-SUMMARY " + line, flush=True)
    if args.json:
        args.json.write_text(line + "\n")
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
