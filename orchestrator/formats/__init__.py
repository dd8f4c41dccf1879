"""Detector formats: each tool's native output normalised into exposure events, by pure adapters.

    parse("trufflehog", data, options=Options()) -> Batch(exposures, unknown_rules, ignored, validity)

One module per format, each a pure function `parse(data: bytes, *, options: Options) -> Batch` that raises
only `orchestrator.errors.FormatError` (naming the line or item, never a value) and does no I/O: the CLI
(`orchestrator publish --format`) and the HTTP ingest routes fetch keys, read input and publish.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Protocol

from orchestrator.errors import FormatError
from orchestrator.formats.findings import Batch, Options

__all__ = ["FORMATS", "Adapter", "Batch", "FormatError", "Options", "adapter", "parse"]


class Adapter(Protocol):
    """The signature every format module's `parse` has."""

    def __call__(self, data: bytes, *, options: Options) -> Batch: ...


#: Format name (as given to `--format` and `/v1/ingest/{format}`) → the module implementing it.
FORMATS: dict[str, str] = {
    "exposure": "exposure",
    "trufflehog": "trufflehog",
    "gitleaks": "gitleaks",
    "betterleaks": "betterleaks",
    "github-secret-scanning": "github",
    "gitguardian": "gitguardian",
    "ssf": "ssf",
    "cloudevents": "cloudevents",
    "aws-health": "aws_health",
    "guardduty": "guardduty",
}


def adapter(format: str) -> Adapter:
    """The `parse` function of `format`; `FormatError` for a name not in `FORMATS`."""
    module = FORMATS.get(format)
    if module is None:
        raise FormatError(format, None, f"unknown format; known: {', '.join(FORMATS)}")
    # Imported on first use: the SSF adapter pulls in a JOSE library the others do not need.
    parse_function: Callable[..., Batch] = importlib.import_module(f"orchestrator.formats.{module}").parse
    return parse_function


def parse(format: str, data: bytes, *, options: Options | None = None) -> Batch:
    """Every exposure in `data` written in `format`; all or nothing (`FormatError` on the first bad item).

    An exposure whose finding says nowhere where it was found gets `options.origin` (the input's name) as
    its location.
    """
    options = options or Options()
    batch = adapter(format)(data, options=options)
    if options.origin is None or all(e.source.location for e in batch.exposures):
        return batch
    located = tuple(e if e.source.location else
                    e.model_copy(update={"source": e.source.model_copy(update={"location": options.origin})})
                    for e in batch.exposures)
    return dataclasses.replace(batch, exposures=located)
