"""`orchestrator publish`: a detector's native output (or our own events) normalised and published by hand.

Registered on the `orchestrator` typer app when `orchestrator.cli` is imported. The adapters are pure
(`orchestrator.formats`); this module reads the input and the JWKS, prints or publishes, and reports.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import httpx
import orjson
import typer

from orchestrator import keys, loop, triggers
from orchestrator.cli import UsageProblem, app
from orchestrator.errors import ConfigurationError
from orchestrator.events import Exposure, fingerprint
from orchestrator.formats import FORMATS, Options, parse
from orchestrator.formats.findings import shown
from orchestrator.publishing import publish_exposures
from orchestrator.settings import Settings
from orchestrator.webhooks.keys import KeysUnavailable, download

#: Inputs above this are refused before parsing: a detector report this large is a mistake, not a scan.
MAX_INPUT_BYTES = 256 * 1024 * 1024
MAX_JWKS_BYTES = 1024 * 1024
_FORMAT_HELP = "Input format: " + ", ".join(FORMATS) + "."


_HELP = (
    "Normalise a detector's output into exposure events and publish them to the exposures topic.\n\n"
    "Each exposure is keyed by its id, derived from the finding (detector, rule, location, secret fingerprint): "
    "publishing the same scan twice revokes nothing twice. Input that cannot be parsed, or whose signature "
    "fails, exits 1 with one line naming the line or item, and nothing from it is published. Rules an adapter "
    "does not know are reported on stderr and published all the same. The broker is KAFKA_BOOTSTRAP_SERVERS."
)


@app.command(help=_HELP)
def publish(
    source: Annotated[str, typer.Argument(metavar="[FILE|-]", help="Input file; `-` (the default) reads stdin.")]
    = "-",
    format: Annotated[str, typer.Option("--format", "-f", help=_FORMAT_HELP)] = "exposure",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Publish nothing: print the exposures on stdout, one "
                                          "JSON object per line, SECRETS INCLUDED (the one place a secret is "
                                          "printed, because you asked for the events).")] = False,
    redact: Annotated[bool, typer.Option("--redact", help="With --dry-run (implies it): print each secret's "
                                         "keyed fingerprint (credential.secret_fingerprint) instead of the "
                                         "secret.")] = False,
    jwks: Annotated[str | None, typer.Option("--jwks", metavar="FILE|URL", help="JSON Web Key Set that signed "
                                             "the tokens (required by --format ssf).")] = None,
    issuer: Annotated[str | None, typer.Option("--issuer", help="ssf: the `iss` every token must have.")] = None,
    audience: Annotated[str | None, typer.Option("--audience", help="ssf: the `aud` every token must "
                                                 "have.")] = None,
) -> None:
    """Normalise a detector's output into exposure events and publish (or print) them."""
    if format not in FORMATS:
        close = difflib.get_close_matches(format, list(FORMATS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UsageProblem(f"unknown --format {format!r}{hint} Known: {', '.join(FORMATS)}")
    if format == "ssf" and jwks is None:
        raise UsageProblem("--format ssf verifies each token: give --jwks FILE|URL")
    dry_run = dry_run or redact
    data = _read_input(source)
    options = Options(jwks=load_jwks(jwks) if jwks else None, issuer=issuer, audience=audience,
                      origin=None if source == "-" else Path(source).name)
    # The deployment's fingerprint key, so ids (and --redact fingerprints) are the same on every run. Read
    # before the broker settings so that bad input is reported first, whatever the environment.
    # It never creates one: ids published under a key of its own would not be the orchestrator's, and a second
    # publish from the right directory would not be deduplicated. A dry run publishes nothing: it warns.
    try:
        keys.install(keys.from_settings(_settings(dry_run=True), create=False))
    except keys.MissingFingerprintKey as exc:
        if not dry_run:
            raise
        print(f"orchestrator: warning: {exc}; the ids printed are not the deployment's", file=sys.stderr)
    batch = parse(format, data, options=options)
    for note in batch.notes(format):
        print(f"orchestrator: {note}", file=sys.stderr)
    if dry_run:
        for exposure in batch.exposures:
            sys.stdout.write(_printable(exposure, redact=redact) + "\n")
        sys.stdout.flush()
        print(f"orchestrator: dry run: {len(batch.exposures)} exposure(s){_by_kind(batch.exposures)}; nothing "
              f"published", file=sys.stderr)
        return
    settings = _settings(dry_run=False)
    loop.run(publish_exposures(settings.bootstrap_servers, settings.exposures_topic, batch.exposures))
    print(f"orchestrator: published {len(batch.exposures)} exposure(s) to {settings.exposures_topic}"
          f"{_by_kind(batch.exposures)}", file=sys.stderr)


def _by_kind(exposures: Sequence[Exposure]) -> str:
    counts = Counter(e.credential.kind for e in exposures)
    return (": " + ", ".join(f"{n} {shown(kind)}" for kind, n in sorted(counts.items()))) if counts else ""


def _printable(exposure: Exposure, *, redact: bool) -> str:
    document: dict[str, Any] = json.loads(triggers.encode(exposure))
    if redact and "secret" in document["credential"]:
        document["credential"]["secret_fingerprint"] = fingerprint(document["credential"].pop("secret"))
    return json.dumps(document, ensure_ascii=True)


def _read_input(source: str) -> bytes:
    if source == "-":
        if sys.stdin.isatty():
            print("orchestrator: reading the input from stdin (end it with Ctrl-D)", file=sys.stderr)
        data = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
    else:
        path = Path(source)
        if not path.is_file():
            raise UsageProblem(f"no such file: {source} (give a file, or - for stdin)")
        try:
            with path.open("rb") as handle:
                data = handle.read(MAX_INPUT_BYTES + 1)
        except OSError as exc:
            raise ConfigurationError(f"cannot read {source}: {exc.strerror or type(exc).__name__}") from None
    if len(data) > MAX_INPUT_BYTES:
        raise ConfigurationError(f"input is above the {MAX_INPUT_BYTES // (1024 * 1024)} MiB limit: split it")
    return data


def load_jwks(where: str) -> dict[str, Any]:
    """The JWKS at a path or an http(s) URL, as JSON; one-line errors."""
    if where.startswith(("https://", "http://")):
        try:  # read bounded: a gzip-encoded answer of kilobytes can inflate to gigabytes
            raw = loop.run(download(where, limit=MAX_JWKS_BYTES))
        except httpx.HTTPError as exc:
            raise ConfigurationError(f"--jwks {where}: cannot fetch it ({type(exc).__name__})") from None
        except KeysUnavailable as exc:
            raise ConfigurationError(f"--jwks {where}: {exc}") from None
    else:
        path = Path(where)
        if not path.is_file():
            raise UsageProblem(f"--jwks {where}: no such file (give a JWKS file or an https:// URL)")
        raw = path.read_bytes()
    if len(raw) > MAX_JWKS_BYTES:
        raise ConfigurationError(f"--jwks {where}: above the 1 MiB a key set needs")
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ConfigurationError(f"--jwks {where}: not JSON (expected a JSON Web Key Set)") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ConfigurationError(f"--jwks {where}: not a JSON Web Key Set (expected {{\"keys\": [...]}})")
    return document


def _settings(dry_run: bool) -> Settings:
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    if dry_run and not os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip():
        # A dry run talks to no broker; the rest of the settings (keys, topic) still come from the environment.
        return Settings.from_env({**os.environ, "KAFKA_BOOTSTRAP_SERVERS": "unused-by-dry-run:9092"})
    return Settings.from_env()
