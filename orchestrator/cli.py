"""The `orchestrator` command. Errors reach people as one line and a non-zero exit, never a traceback.

Exit codes: 0 success, 1 failure (or a run that failed), 2 usage error, 3 timed out.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from orchestrator import loop
from orchestrator.errors import OrchestratorError
from orchestrator.keys import MissingFingerprintKey
from orchestrator.settings import DEV_API_PORT, DEV_KAFKA_PORT

if TYPE_CHECKING:
    from orchestrator.audit import AuditObserver

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Exposed-credential revocation orchestrator.")
playbooks_app = typer.Typer(no_args_is_help=True, help="Inspect and validate playbooks.")
app.add_typer(playbooks_app, name="playbooks")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_TIMEOUT = 0, 1, 2, 3


class UsageProblem(OrchestratorError):
    """The command was called wrongly; exits 2 like any other usage error."""


def _configure_logging(fmt: str | None = None, *, quiet: bool = False) -> None:
    import logging

    from orchestrator import logs

    # Colour by level for people at a terminal (failures red, warnings yellow), never in pipes or with NO_COLOR.
    colors = sys.stderr.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
    logs.configure(fmt or os.environ.get("ORCHESTRATOR_LOG_FORMAT", "console"),
                   level=logging.WARNING if quiet else logging.INFO, colors=colors)


@app.command()
def run() -> None:
    """Consume exposures and run playbooks until SIGTERM (configured by environment variables)."""
    from orchestrator.app import serve
    from orchestrator.settings import Settings

    settings = Settings.from_env()
    _configure_logging(settings.log_format)
    loop.run(serve(settings))


@app.command()
def dev(
    demo: Annotated[bool, typer.Option("--demo", help="Publish the 2023 Okta support-breach scenario, "
                                       "print its audit trail, exit when every exposure is done.")] = False,
    show_data: Annotated[bool, typer.Option("--show-data", help="Also list the sample users, sessions, keys and "
                                            "tokens each emulator starts with, and how to revoke each.")] = False,
    kafka_port: Annotated[int, typer.Option("--kafka-port", min=0, max=65535, help="Port of the embedded broker "
                                            "(a free one if taken; 0: any).")] = DEV_KAFKA_PORT,
    api_port: Annotated[int, typer.Option("--api-port", min=0, max=65535, help="Port of the HTTP API (a free one "
                                          "if taken; 0: any).")] = DEV_API_PORT,
) -> None:
    """Run on the embedded default: Tansu and the provider emulators unless real ones are configured."""
    from orchestrator import dev as devmode

    base = dict(os.environ)
    if demo:  # the demo needs no HTTP API
        base.setdefault("ORCHESTRATOR_HTTP_LISTEN", "off")
    with devmode.environment(base, kafka_port=kafka_port, api_port=api_port) as environment:
        devmode.process_env(environment)
        print(devmode.banner(environment, show_data=show_data), file=sys.stderr, flush=True)
        from orchestrator.settings import Settings

        settings = Settings.from_env(environment.env)
        # The demo prints the audit trail itself; the service log would only repeat it.
        _configure_logging("console", quiet=demo)
        if not demo:
            from orchestrator.app import serve

            loop.run(serve(settings, audit_view=_dev_console()))
            return
        code = loop.run(_run_demo(settings, environment))
    raise typer.Exit(code)


def _dev_console() -> AuditObserver | None:
    """On a terminal, the dev console shows audit records as the live view's coloured lines (no spinner: log
    lines share the screen) instead of echoing them as log lines."""
    from orchestrator import live_view

    out = live_view.console(file=sys.stderr)
    return live_view.LiveView(out, with_id=True, spinner=False).observe if out.is_terminal else None


async def _run_demo(settings: object, environment: object) -> int:
    from orchestrator import dev as devmode
    from orchestrator.app import Orchestrator
    from orchestrator.settings import Settings

    assert isinstance(settings, Settings) and isinstance(environment, devmode.DevEnvironment)
    events = devmode.demo_exposures(environment)
    async with Orchestrator(settings) as orchestrator:
        runner = asyncio.create_task(orchestrator.run())
        await devmode.publish(settings.bootstrap_servers, settings.exposures_topic, events)
        print(f"\nAudit trail (topic {settings.audit_topic}):", flush=True)
        terminals = await devmode.watch(settings.bootstrap_servers, settings.audit_topic, [e["id"] for e in events])
        orchestrator.stop()
        await runner
    print("\nOutcome:")
    for event in events:
        outcome = terminals.get(event["id"], "NO TERMINAL RECORD")
        print(f"  {event['id']:<34} {event['credential']['kind']:<16} {outcome}")
    done = len(terminals) == len(events)
    return EXIT_OK if done and all(t == "run.completed" for t in terminals.values()) else EXIT_FAILED


@app.command()
def schema(
    name: Annotated[str, typer.Argument(help="Which schema: exposure.")] = "exposure",
) -> None:
    """Print a published JSON Schema (the exposure event)."""
    from orchestrator.events import exposure_json_schema

    if name != "exposure":
        raise UsageProblem(f"unknown schema {name!r}; the one published is: exposure")
    print(json.dumps(exposure_json_schema(), indent=2))


@playbooks_app.command("validate")
def playbooks_validate(
    directory: Annotated[Path | None, typer.Argument(help="Directory of playbooks (default: "
                                                    "ORCHESTRATOR_PLAYBOOKS_DIR or the shipped ones).")] = None,
) -> None:
    """Check every playbook as `orchestrator run` does at start-up."""
    from orchestrator.playbooks import load_playbooks
    from orchestrator.providers import catalog
    from orchestrator.settings import DEFAULT_PLAYBOOKS_DIR

    directory = directory or Path(os.environ.get("ORCHESTRATOR_PLAYBOOKS_DIR", DEFAULT_PLAYBOOKS_DIR))
    loaded = load_playbooks(directory, catalog())
    for playbook in loaded:
        print(f"ok  {playbook.name:<24} {', '.join(playbook.match.kinds):<28} {Path(playbook.path).name}")
    print(f"{len(loaded)} playbooks valid in {directory}")


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option("--debug", help="On an unexpected error, show the traceback "
                                        "(for developers; also ORCHESTRATOR_DEBUG=1).")] = False,
) -> None:
    """Exposed-credential revocation orchestrator."""
    # `main` reads --debug from the command line itself: it must apply even when parsing fails.


def _debugging(argv: list[str], environ: Mapping[str, str]) -> bool:
    options = argv[: argv.index("--")] if "--" in argv else argv
    return "--debug" in options or environ.get("ORCHESTRATOR_DEBUG", "") not in ("", "0")


def _say(message: object) -> None:
    """One line on stderr, escaped: messages quote ids and values that came from outside."""
    from orchestrator.escaping import terminal

    print(f"orchestrator: {terminal(message)}", file=sys.stderr)


def _traceback() -> None:
    """The current exception's traceback for developers, escaped line by line (it quotes outside values)."""
    from orchestrator.escaping import terminal_block

    print(terminal_block(traceback.format_exc().rstrip("\n")), file=sys.stderr)


def main() -> None:
    """Entry point: run the app, turning every error into one line on stderr (a traceback only with --debug)."""
    debug = _debugging(sys.argv[1:], os.environ)
    try:
        result = app(standalone_mode=False)
    except UsageProblem as exc:
        _say(f"{exc} (see `orchestrator --help`)")
        sys.exit(EXIT_USAGE)
    except MissingFingerprintKey as exc:  # the message already says where to point; --help would not help
        _say(exc)
        sys.exit(EXIT_USAGE)
    except OrchestratorError as exc:
        if debug:
            _traceback()
        # One line per problem (a playbook directory may have several), each saying where and what to do.
        for line in str(exc).splitlines() or [""]:
            _say(line)
        sys.exit(EXIT_FAILED)
    except (KeyboardInterrupt, typer.Abort):
        _say("interrupted")
        sys.exit(130)
    except typer.TyperException as exc:  # click's usage errors, as bundled by typer
        context = getattr(exc, "ctx", None)
        hint = f"{context.command_path} --help" if context else "orchestrator --help"
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        if message.strip():  # no message: the help was shown (`orchestrator` alone), nothing to add
            _say(f"{message} (see `{hint}`)")
        sys.exit(getattr(exc, "exit_code", EXIT_USAGE))
    except Exception as exc:  # noqa: BLE001 - the last line of defence: people get one line, never a traceback
        if debug:
            _traceback()
        from orchestrator.redaction import REDACTOR

        _say(f"unexpected error: {type(exc).__name__}: {REDACTOR.text(str(exc))}"
             + ("" if debug else " (run again with --debug for the traceback)"))
        sys.exit(EXIT_FAILED)
    sys.exit(result if isinstance(result, int) else EXIT_OK)


# Responder commands (trigger, audit tail, playbooks list|show, api-token), `actions list|show`, `publish`,
# `scan-har`, `dlq list|show|decrypt`, run-store commands (status, exposures list, db upgrade|rebuild), `replay` and
# safety commands (approve, deny, undo, brake) register themselves on `app`.
from orchestrator import (  # noqa: E402, F401
    actions_cli,
    dlq,
    har_cli,
    publish_cli,
    replay_cli,
    responder,
    safety_cli,
    store_cli,
)
