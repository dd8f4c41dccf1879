"""`orchestrator dlq list|show|decrypt`: read dead letters back, for an operator.

Registered on the `orchestrator` typer app when `orchestrator.cli` is imported. A dead letter is named
`PARTITION:OFFSET` (of its first record when it was split into chunks). Reading is groupless, so it never
disturbs the orchestrator's consumer group.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from orchestrator import escaping, kafka, keys
from orchestrator.cli import UsageProblem, app
from orchestrator.dead_letters import DeadLetterError, assemble, unseal
from orchestrator.settings import Settings

dlq_app = typer.Typer(no_args_is_help=True, help="Read the dead-letter topic.")
app.add_typer(dlq_app, name="dlq")

#: How long reading waits for more records before deciding it has reached the end.
IDLE_S = 1.0


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter as read back: its chunks joined when it was split."""

    partition: int
    offset: int
    timestamp_ms: int
    headers: dict[str, bytes]
    value: bytes | None
    #: Why it cannot be joined (chunks missing), else None.
    problem: str | None = None

    @property
    def name(self) -> str:
        """`PARTITION:OFFSET`, what `show` and `decrypt` take."""
        return f"{self.partition}:{self.offset}"

    def header(self, name: str) -> str:
        """A header as printable text ('' when absent)."""
        return _printable(self.headers.get(name, b"").decode(errors="replace"))

    @property
    def encrypted(self) -> bool:
        """True when the original is stored encrypted."""
        return "encryption" in self.headers

    def summary(self) -> dict[str, Any]:
        """What `dlq list` shows of it."""
        source = "/".join(self.header(f"source.{part}") for part in ("topic", "partition", "offset"))
        return {"dead_letter": self.name, "time": datetime.fromtimestamp(self.timestamp_ms / 1000, UTC).isoformat(),
                "reason": self.header("error"), "source": source, "size": int(self.header("original.size") or 0),
                "encrypted": self.encrypted, "redaction": self.header("redaction") or None,
                "truncated": self.header("truncated") == "true", "problem": self.problem}


def _printable(text: str) -> str:
    """Text safe for a terminal: control characters (escape sequences) shown as `\\x1b`-style escapes; the
    body's own line breaks and tabs are kept."""
    return escaping.terminal_block(text)


def _settings() -> Settings:
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    return Settings.from_env()


def _parse_name(name: str) -> tuple[int, int]:
    partition, _, offset = name.partition(":")
    if not (partition.isdigit() and offset.isdigit()):
        raise UsageProblem(f"{name!r} is not a dead letter name: expected PARTITION:OFFSET, as `dlq list` shows")
    return int(partition), int(offset)


async def _records(settings: Settings, start: tuple[int, int] | None = None) -> AsyncIterator[Any]:
    """The dead-letter topic's records from the beginning (or from `start`), until it stays quiet."""
    bootstrap, topic = settings.bootstrap_servers, settings.dlq_topic
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        await kafka.start(consumer, bootstrap)
        await consumer.topics()  # refreshes metadata
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        if start is not None:
            if start[0] not in partitions:
                raise DeadLetterError(f"topic {topic} has no partition {start[0]}")
            partitions = [start[0]]
        assigned = [TopicPartition(topic, p) for p in partitions]
        if not assigned:
            return
        consumer.assign(assigned)
        if start is None:
            await consumer.seek_to_beginning(*assigned)
        else:
            consumer.seek(assigned[0], start[1])
        while batch := await consumer.getmany(timeout_ms=int(IDLE_S * 1000)):
            for records in batch.values():
                for record in records:
                    yield record
    finally:
        await consumer.stop()


def _letters(records: list[Any]) -> list[DeadLetter]:
    """Records grouped into dead letters: chunks joined under the name of their first record."""
    letters: list[DeadLetter] = []
    chunked: dict[bytes, list[Any]] = {}
    for record in records:
        headers = {k: v for k, v in record.headers}
        chunk_id = headers.get("chunk.id")
        if chunk_id is None:
            letters.append(DeadLetter(record.partition, record.offset, record.timestamp, headers, record.value))
        elif chunk_id not in chunked:
            chunked[chunk_id] = [record]
        else:
            chunked[chunk_id].append(record)
    for pieces in chunked.values():
        first = min(pieces, key=lambda r: r.offset)
        headers = {k: v for k, v in first.headers if not k.startswith("chunk.")}
        try:
            value, problem = assemble([(r.value, dict(r.headers)) for r in pieces]), None
        except DeadLetterError as exc:
            value, problem = None, str(exc)
        letters.append(DeadLetter(first.partition, first.offset, first.timestamp, headers, value, problem))
    return sorted(letters, key=lambda letter: (letter.timestamp_ms, letter.partition, letter.offset))


async def _read(settings: Settings, start: tuple[int, int] | None = None) -> list[DeadLetter]:
    return _letters([record async for record in _records(settings, start)])


async def _one(settings: Settings, name: str) -> DeadLetter:
    partition, offset = _parse_name(name)
    for letter in await _read(settings, (partition, offset)):
        if (letter.partition, letter.offset) == (partition, offset):
            if letter.problem is not None:
                raise DeadLetterError(f"dead letter {name}: {letter.problem}")
            return letter
    raise DeadLetterError(f"no dead letter {name} on topic {settings.dlq_topic} (see `orchestrator dlq list`)")


@dlq_app.command("list")
def dlq_list(
    limit: Annotated[int, typer.Option("--limit", help="Show the most recent N.", min=1)] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List recent dead letters: name, time, reason, source record, size, whether encrypted."""
    letters = asyncio.run(_read(_settings()))[-limit:]
    if as_json:
        for letter in letters:
            print(json.dumps(letter.summary()))
        return
    table = Table("dead letter", "time", "reason", "source", "size", "stored as")
    for letter in letters:
        info = letter.summary()
        stored = "encrypted" if letter.encrypted else info["redaction"] or "-"
        if info["truncated"]:
            stored += ", truncated"
        table.add_row(letter.name, info["time"][:23], escape(info["reason"]), escape(info["source"]),
                      str(info["size"]), escape(letter.problem or stored))
    Console(width=None if sys.stdout.isatty() else 200, highlight=False).print(table)


@dlq_app.command("show")
def dlq_show(
    name: Annotated[str, typer.Argument(help="PARTITION:OFFSET, as `dlq list` shows.")],
) -> None:
    """Print one dead letter's headers and its body as stored (secrets dropped, or still encrypted)."""
    letter = asyncio.run(_one(_settings(), name))
    for key in letter.headers:
        print(f"{_printable(key)}: {letter.header(key)}")
    print()
    if letter.value is None:
        print("(no body)")
    elif letter.encrypted:
        print(f"(encrypted, {len(letter.value)} bytes: `orchestrator dlq decrypt {letter.name}` prints the original)")
    else:
        print(_printable(letter.value.decode(errors="replace")))


@dlq_app.command("decrypt")
def dlq_decrypt(
    name: Annotated[str, typer.Argument(help="PARTITION:OFFSET, as `dlq list` shows.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the original to this file "
                                                "(created mode 0600) instead of stdout.")] = None,
) -> None:
    """PRINTS SECRETS: decrypt one dead letter and write the original record's bytes, secrets and all.

    Needs the key it was encrypted with, in ORCHESTRATOR_ENCRYPTION_KEY or ORCHESTRATOR_ENCRYPTION_KEY_FILE.
    """
    settings = _settings()
    key = keys.load_encryption_key(settings.encryption_key, settings.encryption_key_file)
    if key is None:
        raise UsageProblem("set ORCHESTRATOR_ENCRYPTION_KEY or ORCHESTRATOR_ENCRYPTION_KEY_FILE to the key the "
                           "dead letters were encrypted with")
    letter = asyncio.run(_one(settings, name))
    if letter.value is None:
        raise DeadLetterError(f"dead letter {name} has no body")
    original = unseal(letter.value, letter.headers, key)
    if output is None:
        sys.stdout.buffer.write(original)
        sys.stdout.buffer.flush()
        return
    try:
        with open(output, "xb", opener=lambda path, flags: os.open(path, flags, 0o600)) as out:
            out.write(original)
    except OSError as exc:
        raise DeadLetterError(f"cannot write {output}: {exc.strerror or type(exc).__name__}") from None
