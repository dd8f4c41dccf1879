"""Process logging: structlog for our own records, the stdlib loggers of dependencies routed through it.

Every line passes the redactor, so a secret that reaches a log call anyway (an SDK error message, say)
is masked. Dependencies that would log request headers at DEBUG (okta-sdk-python) are held at WARNING.
"""

from __future__ import annotations

import logging
import sys

import structlog

from orchestrator.redaction import REDACTOR

_QUIET = ("okta-sdk-python", "aiokafka", "kafka", "botocore", "aiobotocore", "urllib3", "httpx", "httpcore")


def configure(fmt: str = "console", *, level: int = logging.INFO, stream: object = None) -> None:
    """Set up structlog and stdlib logging; `fmt` is `console` (people) or `json` (machines)."""
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        structlog.processors.format_exc_info,
        REDACTOR,
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        foreign_pre_chain=shared,
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in _QUIET:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
