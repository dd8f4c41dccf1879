"""The run store: the orchestrator's durable memory of every exposure and run (SQLite or PostgreSQL)."""

from orchestrator.store.content import Content, content_of
from orchestrator.store.states import EXIT_CODES, State
from orchestrator.store.store import AmbiguousPrefix, Claim, ClaimOutcome, RunStore, StepRow

__all__ = ["EXIT_CODES", "AmbiguousPrefix", "Claim", "ClaimOutcome", "Content", "RunStore", "State", "StepRow",
           "content_of"]
