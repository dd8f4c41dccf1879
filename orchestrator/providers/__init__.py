"""The provider registry: every action playbooks may use, and opening the configured provider clients.

Each provider module declares `ACTIONS` (its action specs) and a provider class that is an async context
manager; `open_providers` opens those whose settings are present.
"""

from __future__ import annotations

import importlib
from contextlib import AsyncExitStack
from typing import Any

from orchestrator.actions import ActionSpec, Provider
from orchestrator.governor import Governor
from orchestrator.settings import Settings

_MODULES = ("okta", "aws", "github", "slack", "gcp")


def catalog() -> dict[str, ActionSpec]:
    """Every action any provider offers, by name."""
    specs: dict[str, ActionSpec] = {}
    for name in _MODULES:
        module = importlib.import_module(f"orchestrator.providers.{name}")
        specs.update({spec.name: spec for spec in module.ACTIONS})
    return specs


async def open_providers(settings: Settings, stack: AsyncExitStack) -> tuple[dict[str, Provider], list[Governor]]:
    """Open a client for every provider that is configured, each behind its governor; the stack closes them.

    Okta needs its org URL and token. The others are always opened: they resolve credentials on their first
    call, so an unconfigured provider costs nothing until a credential of its kind leaks. AWS, Slack and GCP
    send no budget headers, so their governors never learn a budget: the concurrency cap is their limit.
    """
    from orchestrator.providers.aws import AwsProvider
    from orchestrator.providers.gcp import CONCURRENCY as GCP_CONCURRENCY
    from orchestrator.providers.gcp import GcpProvider
    from orchestrator.providers.github import CONCURRENCY as GITHUB_CONCURRENCY
    from orchestrator.providers.github import GitHubProvider
    from orchestrator.providers.okta import OktaProvider
    from orchestrator.providers.slack import CONCURRENCY as SLACK_CONCURRENCY
    from orchestrator.providers.slack import SlackProvider

    governors: list[Governor] = []

    def governor(name: str, concurrency: int, **options: Any) -> Governor:
        governors.append(Governor(name, concurrency=concurrency, circuit_failures=settings.circuit_failures,
                                  circuit_cooldown_s=settings.circuit_cooldown_s, **options))
        return governors[-1]

    def capped(name: str, concurrency: int) -> Governor:
        return governor(name, concurrency, initial_burst=concurrency)

    opened: list[Provider] = []
    if settings.okta is not None:
        okta = governor("okta", settings.okta.concurrency, bucket_share=settings.okta.bucket_share)
        opened.append(OktaProvider(settings.okta, okta))
    opened += [
        AwsProvider(settings.aws, capped("aws", settings.aws.concurrency)),
        GitHubProvider(settings.github, governor("github", GITHUB_CONCURRENCY)),
        SlackProvider(settings.slack, capped("slack", SLACK_CONCURRENCY)),
        GcpProvider(settings.gcp, capped("gcp", GCP_CONCURRENCY)),
    ]
    return {provider.name: await stack.enter_async_context(provider) for provider in opened}, governors
