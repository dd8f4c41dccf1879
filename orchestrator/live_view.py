"""The live view on a terminal: each record's lines in its colour, and a spinner with the elapsed time on every
step in progress. The wording lives in `progress` (pure); this module only draws it with rich.

Used by `trigger --wait`, `status --follow`, `audit tail --follow` and the dev console's demo. Where the output
is not a terminal (or `--json`), the commands print `progress.plain` lines instead: same records, stable text.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Self

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text

from orchestrator.progress import STYLES, Line, Story, plain


def console(*, file: Any = None, force_terminal: bool | None = None, width: int | None = None) -> Console:
    """The console the commands print to: no markup guessing, no highlighting, `NO_COLOR` honoured by rich."""
    out = file or sys.stdout
    piped = not (force_terminal or (hasattr(out, "isatty") and out.isatty()))
    # Piped output keeps whole lines: scripts and tests read it, nobody's terminal width applies.
    return Console(file=out, force_terminal=force_terminal, width=width or (200 if piped else None),
                   highlight=False, emoji=False, markup=False)


def as_text(line: Line) -> Text:
    """A line as rich text in its tone's colour (a `Text` is never parsed as markup)."""
    text = Text(line.headline, style=STYLES[line.tone], no_wrap=True, overflow="ellipsis")
    for more in line.more:
        text.append("\n" + more, style=STYLES[line.tone])
    for detail in line.details:
        text.append("\n" + detail, style="dim" if line.tone.value != "failure" else "red")
    return text


class LiveView:
    """Records in, lines out above a live region where each exposure's step in progress spins.

    Use as a context manager; call `show(record)` for each record, in order per exposure.
    """

    def __init__(self, out: Console, *, with_id: bool = False, spinner: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.console = out
        self._with_id = with_id
        self._clock = clock
        self._stories: dict[str, Story] = {}
        self._spinners: dict[str, tuple[Spinner, float]] = {}
        # Without a spinner (the dev console, where log lines share the terminal) nothing is redrawn.
        self._live = Live(self, console=out, transient=True, refresh_per_second=8, redirect_stdout=False,
                          redirect_stderr=False) if spinner else None

    def __enter__(self) -> Self:
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._spinners.clear()
        if self._live is not None:
            self._live.stop()

    def story(self, exposure_id: str) -> Story:
        """The story of one exposure as shown so far."""
        if exposure_id not in self._stories:
            self._stories[exposure_id] = Story(width=self.console.width, with_id=self._with_id)
        return self._stories[exposure_id]

    def show(self, record: Mapping[str, Any]) -> list[Line]:
        """Print the lines `record` adds and update the spinner of its exposure; returns the lines."""
        exposure_id = str(record.get("exposure_id", "?"))
        story = self.story(exposure_id)
        lines = story.add(record)
        for line in lines:
            self.console.print(as_text(line), soft_wrap=False)
        if self._live is None:
            return lines
        if story.running is None:
            self._spinners.pop(exposure_id, None)
        elif exposure_id not in self._spinners or record.get("event") == "step.started":
            self._spinners[exposure_id] = (Spinner("dots", style="bold"), self._clock())
        self._live.refresh()
        return lines

    def observe(self, record: dict[str, Any]) -> None:
        """An `AuditObserver` (the dev console): show the record; a view never fails the audit path."""
        try:
            self.show(record)
        except (OSError, ValueError):  # a closed or broken terminal
            return

    def __rich__(self) -> RenderableType:
        """The live region: one spinner per step in progress, with how long it has been running."""
        rows: list[RenderableType] = []
        # rich refreshes from its own thread: read a snapshot, and skip a step that ended meanwhile.
        for exposure_id, (spinner, started) in list(self._spinners.items()):
            running = self._stories[exposure_id].running
            if running is None:
                continue
            elapsed = f"  {self._clock() - started:.1f} s"
            room = max(self.console.width - len(elapsed) - 3, 10)
            label = running if len(running) <= room else running[: room - 1] + "…"
            spinner.update(text=Text(label + elapsed, no_wrap=True, overflow="ellipsis"))
            rows.append(spinner)
        return Group(*rows)


@contextmanager
def printer(out: Console, *, as_json: bool = False,
            with_id: bool = False) -> Iterator[Callable[[Mapping[str, Any]], Any]]:
    """A function that prints one record: JSON lines, plain lines (not a terminal) or the live view."""
    if as_json:  # json.dumps escapes every control character: safe on any terminal
        yield lambda record: print(json.dumps(record, default=str), file=out.file, flush=True)
    elif not out.is_terminal:
        yield lambda record: print(plain(record), file=out.file, flush=True)
    else:
        with LiveView(out, with_id=with_id) as view:
            yield view.show
