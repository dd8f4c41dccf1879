"""YAML read for validation: the document, and its node tree for the line numbers that errors name."""

from __future__ import annotations

from typing import Any

import yaml

from orchestrator.errors import PlaybookError


def load(text: str, path: str) -> tuple[yaml.Node | None, Any]:
    """The node tree and the document of `text`; raise `PlaybookError` naming `path` and the line when it is not
    valid YAML."""
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader), yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise PlaybookError(path, f"not valid YAML: {getattr(exc, 'problem', exc)}",
                            mark.line + 1 if mark else None) from None
