"""Regenerate the README's screenshots of the live view: `.venv/bin/python docs/screenshots.py`.

Runs the real `orchestrator audit tail --follow` in a 100-column pseudo-terminal against the embedded broker,
publishes an okta-user run's audit records by hand (with a rate-limited retry, so every colour shows), and saves
what the terminal shows, mid-run and at the end, as SVG through rich's own export.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pexpect
from rich.console import Console
from rich.text import Text

from orchestrator import embedded, kafka

HERE = Path(__file__).parent
COLUMNS = 100
EXPOSURE = "manual-5f0c2a9e41d84b7c9e3f1a2b6d7c8e90"
RUN = "5ad5e1b07c3f4d2a8b9e6f0a1c2d3e4f"
USER = "00u8kq2hz9XbC3dP7e4W"
STEPS = {"clear-sessions": "okta.clear_user_sessions", "reset-factors": "okta.reset_factors",
         "suspend": "okta.suspend_user"}


def _records() -> list[dict[str, Any]]:
    moments = iter(f"2026-12-02T03:07:{s:06.3f}+00:00" for s in (1.0, 1.01, 1.02, 1.35, 3.4, 3.42, 3.61, 3.63, 3.81,
                                                                    3.82))
    base = {"exposure_id": EXPOSURE, "actor": "alex@oncall-laptop"}
    who = "user=sam@example.com"

    def record(event: str, **fields: Any) -> dict[str, Any]:
        return {"ts": next(moments), "event": event, **base, **fields}

    return [
        record("exposure.received", target="okta.user:sam@example.com", severity="critical"),
        record("run.started", run_id=RUN, playbook="okta-user", reason="laptop stolen at the airport"),
        record("step.started", run_id=RUN, step="clear-sessions", action=STEPS["clear-sessions"], target=who),
        record("step.retrying", run_id=RUN, step="clear-sessions", action=STEPS["clear-sessions"], target=who,
               attempt=1, retry_in_s=2.0, rate_limited=True,
               error="HTTP 429 E0000047 API call exceeded rate limit due to too many requests (X-Rate-Limit-Reset "
                     "in 2 s; 0 of 600 left in this minute)"),
        record("step.succeeded", run_id=RUN, step="clear-sessions", action=STEPS["clear-sessions"],
               target=f"user:{USER}", attempt=2, duration_ms=2430),
        record("step.started", run_id=RUN, step="reset-factors", action=STEPS["reset-factors"], target=who),
        record("step.succeeded", run_id=RUN, step="reset-factors", action=STEPS["reset-factors"],
               target=f"user:{USER}", attempt=1, duration_ms=190),
        record("step.started", run_id=RUN, step="suspend", action=STEPS["suspend"], target=who),
        record("step.succeeded", run_id=RUN, step="suspend", action=STEPS["suspend"], target=f"user:{USER}",
               attempt=1, duration_ms=180),
        record("run.completed", run_id=RUN, duration_ms=2810),
    ]


async def _publish(bootstrap: str, topic: str, records: list[dict[str, Any]]) -> None:
    producer = kafka.make_producer(bootstrap)
    await kafka.start(producer, bootstrap)
    try:
        for record in records:
            await (await producer.send(topic, json.dumps(record).encode(), key=EXPOSURE.encode()))
    finally:
        await producer.stop()


def _screen(raw: str, *, live_region: bool) -> str:
    """The terminal's screen: each finished line as last drawn (colours kept); with `live_region`, the frame of
    the live region (the spinner) that was on screen last."""
    lines = raw.replace("\r\n", "\n").split("\n")
    finished = [line.split("\r")[-1] for line in lines[:-1]]
    finished = [re.sub(r"\x1b\[(\?25[lh]|2K)", "", line) for line in finished]
    if live_region:
        frames = [f for f in lines[-1].split("\r\x1b[2K") if f.strip("\r")]
        finished.append(frames[-1].split("\r")[-1] if frames else "")
    return "\n".join(finished)


def _save(screen: str, name: str, title: str) -> None:
    console = Console(record=True, width=COLUMNS, file=io.StringIO(), force_terminal=True, color_system="truecolor")
    console.print(Text.from_ansi(screen), soft_wrap=True)
    console.save_svg(str(HERE / name), title=title)
    print(f"wrote {HERE / name}")


def main() -> None:
    topic = f"screenshots.{os.getpid()}.audit"
    records = _records()
    with embedded.tansu() as broker:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHESTRATOR_", "KAFKA_", "NO_COLOR"))}
        env.update(KAFKA_BOOTSTRAP_SERVERS=broker.url, ORCHESTRATOR_AUDIT_TOPIC=topic, TERM="xterm-256color")
        command = str(Path(sys.executable).with_name("orchestrator"))
        child = pexpect.spawn(command, ["audit", "tail", "--follow", "--exposure", EXPOSURE], env=env,
                              dimensions=(30, COLUMNS), encoding="utf-8", timeout=30)
        child.logfile_read = io.StringIO()
        asyncio.run(_publish(broker.url, topic, records[:4]))
        child.expect("retrying in 2.0 s")
        child.expect(r"[1-9]\.\d s")  # the spinner, once its elapsed time has counted up a little
        _save(_screen(child.logfile_read.getvalue(), live_region=True), "live-view-running.svg",
              "orchestrator audit tail --follow (a step waiting out a rate limit)")
        asyncio.run(_publish(broker.url, topic, records[4:]))
        child.expect("run 5ad5e1b0…")
        _save(_screen(child.logfile_read.getvalue(), live_region=False), "live-view-done.svg",
              "orchestrator audit tail --follow (the run done)")
        child.sendintr()
        child.expect(pexpect.EOF)


if __name__ == "__main__":
    main()
