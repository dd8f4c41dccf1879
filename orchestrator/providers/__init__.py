"""The provider registry: every action playbooks may use, and opening the configured provider clients.

Each provider module declares `ACTIONS` (its action specs) and a provider class that is an async context
manager; `open_providers` opens those whose settings are present.
"""

from __future__ import annotations

import importlib
from contextlib import AsyncExitStack

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


async def open_providers(settings: Settings, stack: AsyncExitStack) -> dict[str, Provider]:
    """Open a client for every provider that is configured; the stack closes them."""
    from orchestrator.providers import gcp, github, slack
    from orchestrator.providers.gcp import GcpProvider
    from orchestrator.providers.github import GitHubProvider
    from orchestrator.providers.slack import SlackProvider

    providers: dict[str, Provider] = {}
    if settings.okta is not None:
        from orchestrator.providers.okta import OktaProvider

        governor = Governor("okta", concurrency=settings.okta.concurrency,
                            bucket_share=settings.okta.bucket_share)
        providers["okta"] = await stack.enter_async_context(OktaProvider(settings.okta, governor))
    # AWS uses the standard credential chain, resolved on the first call: always opened, costs nothing idle.
    # It sends no rate-limit headers, so its buckets never learn a budget: the concurrency cap is the limit.
    from orchestrator.providers.aws import AwsProvider

    providers["aws"] = await stack.enter_async_context(
        AwsProvider(settings.aws, Governor("aws", concurrency=settings.aws.concurrency,
                                           initial_burst=settings.aws.concurrency)))
    providers["github"] = await stack.enter_async_context(
        GitHubProvider(settings.github, Governor("github", concurrency=github.CONCURRENCY)))
    # Slack and IAM send no budget headers (only Retry-After on 429): the concurrency cap is the limit.
    providers["slack"] = await stack.enter_async_context(
        SlackProvider(settings.slack, Governor("slack", concurrency=slack.CONCURRENCY,
                                               initial_burst=slack.CONCURRENCY)))
    # GCP credentials are resolved on first use, so an unconfigured GCP costs nothing until a key leaks.
    providers["gcp"] = await stack.enter_async_context(
        GcpProvider(settings.gcp, Governor("gcp", concurrency=gcp.CONCURRENCY, initial_burst=gcp.CONCURRENCY)))
    return providers
