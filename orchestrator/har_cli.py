"""`orchestrator scan-har FILE.har [--publish] [--sanitize OUT.har] [--json]`: the HAR scanner's command.

Registered on the `orchestrator` typer app when `orchestrator.cli` is imported. Findings are printed with a
redacted preview, never their values; `--publish` sends one exposure per credential to the exposures topic
only once the whole file has been read, so a malformed file publishes nothing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from orchestrator import escaping, loop
from orchestrator.cli import UsageProblem, app
from orchestrator.har import exposures, scan
from orchestrator.har.detect import preview
from orchestrator.publishing import publish_exposures
from orchestrator.settings import IngestSettings, Settings


@app.command("scan-har")
def scan_har(
    file: Annotated[Path, typer.Argument(help="The HAR file to scan.", dir_okay=False)],
    publish: Annotated[bool, typer.Option("--publish", help="Publish one exposure per credential found to the "
                                          "exposures topic (KAFKA_BOOTSTRAP_SERVERS), for the playbooks to "
                                          "revoke.")] = False,
    sanitize: Annotated[Path | None, typer.Option("--sanitize", metavar="OUT.har", dir_okay=False,
                                                  help="Write a HAR 1.2 copy without any value found.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per finding on stdout.")] = False,
) -> None:
    """Find credentials in a HAR file: Okta session cookies, Authorization headers, tokens, API keys."""
    if not file.is_file():
        raise UsageProblem(f"no such file: {file} (give the path of a .har file)")
    ingest = IngestSettings.from_env()
    settings = Settings.from_env() if publish else None  # before reading: a missing broker is a fast error
    result = scan.scan_file(file, max_bytes=ingest.har_max_bytes)
    if sanitize is not None:
        scan.write_sanitized(file, sanitize, result, max_bytes=ingest.har_max_bytes)
    masker = result.masker()
    for finding in result.findings:
        # Names come from the file: mask any value found in them, and keep terminal controls out.
        where = escaping.terminal(masker.text(finding.where))
        if as_json:
            print(json.dumps({"entry": finding.entry, "where": where, "kind": finding.kind, "rule": finding.rule,
                              "preview": preview(finding.value)}))
        else:
            # The preview's few characters come from the file too: "\x1bc" alone would reset the terminal.
            print(f"entry {finding.entry:<5} {finding.kind:<20} {where}  {escaping.terminal(preview(finding.value))}")
    print(f"{len(result.findings)} findings in {result.entries} entries of {file}"
          + (f"; sanitized copy written to {sanitize}" if sanitize is not None else ""), file=sys.stderr)
    if settings is not None:
        events, skipped = exposures.build(result.findings, file=str(file))
        loop.run(publish_exposures(settings.bootstrap_servers, settings.exposures_topic, events))
        print(f"published {len(events)} exposures to {settings.exposures_topic}"
              + (f"; {skipped} findings had nothing an exposure can act on" if skipped else ""), file=sys.stderr)
