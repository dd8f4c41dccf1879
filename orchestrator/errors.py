"""The orchestrator's exception tree, grouped by what the caller can do about each.

    OrchestratorError
    ├── ConfigurationError        bad settings, unreachable dependency at start: stop, tell the operator
    │   └── PlaybookError         a playbook file is invalid: names file, line and reason
    │       └── PlaybookErrors    several problems, one line each (the first one's fields on the exception)
    ├── InvalidExposure           a record that is not a valid exposure event: reject and dead-letter
    │   └── FormatError           a detector's output that cannot be made into exposures: names line or item
    └── ProviderError             a provider call failed; raised only by `orchestrator.providers`
        ├── TransientError        worth retrying (5xx, timeout, refused connection)
        │   └── RateLimited       retry after `retry_after` seconds; not a failure of the step
        └── PermanentError        retrying cannot help (400, 401, 403, bad parameters)
            └── NotFound          the target does not exist (404)

Messages never contain a secret value: providers build them from status codes and error codes only.
"""

from __future__ import annotations


class OrchestratorError(Exception):
    """Base of every error the orchestrator raises on purpose."""


class ConfigurationError(OrchestratorError):
    """The orchestrator cannot start or run as configured."""


class PlaybookError(ConfigurationError):
    """A playbook is invalid; the message names the file, the line when known, and the reason."""

    def __init__(self, path: str, reason: str, line: int | None = None) -> None:
        self.path = path
        self.reason = reason
        self.line = line
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {reason}")


class PlaybookErrors(PlaybookError):
    """Every problem found in one or more playbooks; `str()` is one `file:line: reason` line per problem."""

    def __init__(self, problems: list[PlaybookError]) -> None:
        first = problems[0]
        super().__init__(first.path, first.reason, first.line)
        self.problems = tuple(problems)
        self.args = ("\n".join(str(p) for p in problems),)

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


class InvalidExposure(OrchestratorError):
    """A record on the exposures topic is not a valid exposure event."""


class FormatError(InvalidExposure):
    """A detector's native output (`orchestrator.formats`) cannot be turned into exposures.

    `where` names the line or item (`line 3`, `item 2`, `finding 4`, `token`), `reason` says what is wrong;
    neither ever holds an input value. Nothing from an input that raised this may be published.
    """

    def __init__(self, format: str, where: str | None, reason: str) -> None:
        self.format = format
        self.where = where
        self.reason = reason
        super().__init__(f"{format}: {where}: {reason}" if where else f"{format}: {reason}")


class ProviderError(OrchestratorError):
    """A provider API call failed."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        self.status = status
        self.code = code
        super().__init__(message)


class TransientError(ProviderError):
    """A failure that may pass: retry with backoff."""


class RateLimited(TransientError):
    """The provider asked us to slow down; wait `retry_after` seconds before the next attempt."""

    def __init__(self, message: str, *, retry_after: float, status: int | None = 429,
                 code: str | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message, status=status, code=code)


class PermanentError(ProviderError):
    """A failure that retrying cannot fix."""


class NotFound(PermanentError):
    """The target of the call does not exist."""
