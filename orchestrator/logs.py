"""Process logging: structlog for our own records, the stdlib loggers of dependencies routed through it.

Every line passes the redactor, so a secret that reaches a log call anyway (an SDK error message, say)
is masked. Dependencies that would log request headers at DEBUG (okta-sdk-python) are held at WARNING.
While the broker is away aiokafka repeats the same few lines many times a second: `KafkaLogThrottle`
lets each of them through once per `KAFKA_LOG_INTERVAL_S`, with the count of those it held back.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Hashable

import structlog
from structlog.typing import EventDict

from orchestrator import escaping
from orchestrator.redaction import REDACTOR

#: How often one repeated aiokafka line (same logger, same message template) may reach the log.
KAFKA_LOG_INTERVAL_S = 30.0

_QUIET = ("okta-sdk-python", "aiokafka", "kafka", "botocore", "aiobotocore", "urllib3", "httpx", "httpcore")


def escape_for_terminal(_logger: object, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: every text value with its control characters shown escaped (console logs only).

    Values carry ids and provider messages from outside; raw, an escape sequence in one would act on the
    terminal that shows the log. JSON logs need nothing: the JSON encoder escapes them.
    """
    for key, value in event_dict.items():
        if isinstance(value, str):
            event_dict[key] = escaping.terminal_block(value) if key == "exception" else escaping.terminal(value)
    return event_dict


def configure(fmt: str = "console", *, level: int = logging.INFO, stream: object = None,
              colors: bool = False) -> None:
    """Set up structlog and stdlib logging; `fmt` is `console` (people; `colors` by level) or `json` (machines)."""
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        structlog.processors.format_exc_info,
        REDACTOR,
    ]
    renderers: list[structlog.types.Processor] = (
        [structlog.processors.JSONRenderer()] if fmt == "json"
        else [escape_for_terminal, structlog.dev.ConsoleRenderer(colors=colors)]
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderers],
        foreign_pre_chain=shared,
    ))
    handler.addFilter(KafkaLogThrottle())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in _QUIET:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


class Throttle:
    """Lets one event per key through every `interval_s`, and counts the ones it held back.

    `throttle(key)` answers None for an event to drop, else how many of that key were dropped since the
    last one let through (0 the first time): log it, e.g. `log.warning(..., suppressed=held)`.
    """

    def __init__(self, interval_s: float = KAFKA_LOG_INTERVAL_S, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._last: dict[Hashable, tuple[float, int]] = {}

    def __call__(self, key: Hashable) -> int | None:
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last[0] < self.interval_s:
            self._last[key] = (last[0], last[1] + 1)
            return None
        self._last[key] = (now, 0)
        return 0 if last is None else last[1]

    def held_back(self, key: Hashable) -> int:
        """Events of `key` held back since the last one let through."""
        last = self._last.get(key)
        return 0 if last is None else last[1]


class KafkaLogThrottle(logging.Filter):
    """A handler filter: each aiokafka line (by logger and message template) at most once per interval.

    The template, not the formatted text, is the key, so "connection to node 1 refused" and "... node 2 ..."
    count as one line; the line that passes after a quiet spell says how many it stands for.
    """

    def __init__(self, interval_s: float = KAFKA_LOG_INTERVAL_S, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._throttle = Throttle(interval_s, clock=clock)

    def filter(self, record: logging.LogRecord) -> bool:
        """False for a repeat within the interval; otherwise let it through, noting what was held back."""
        if not record.name.startswith(("aiokafka", "kafka")):
            return True
        held = self._throttle((record.name, record.levelno, str(record.msg)))
        if held is None:
            return False
        if held:
            record.msg = f"{record.getMessage()} ({held} similar lines held back since the last one)"
            record.args = ()
        return True
