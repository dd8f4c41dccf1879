"""The orchestrator's own credentials, known only by keyed fingerprint, so that no step can revoke them.

An action parameter that could designate one of our own credentials declares which kind (`ParamSpec.own`:
`okta.api_token`, `okta.api_token_id`, `aws.access_key_id`, `github.token`, `gcp.key_id`). The first step that
names such a kind asks its provider for our own credentials of that kind (`own_credentials(kind)`: the
configured Okta token, its id at Okta, the AWS chain's access key id, the GitHub app's secret, the GCP key
file's key id), keeps only their keyed fingerprints, and from then on refuses any step whose parameter has the
same fingerprint. Revoking the orchestrator's own admin token would stop every later run until someone rotated
it by hand: that is for a person to do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from pydantic import SecretStr

from orchestrator.actions import ActionSpec, Params, Provider
from orchestrator.keys import keyed_fingerprint

#: How each kind is named in a refusal.
_LABELS = {
    "okta.api_token": "Okta API token",
    "okta.api_token_id": "Okta API token (by its id)",
    "aws.access_key_id": "AWS access key",
    "github.token": "GitHub app credentials",
    "gcp.key_id": "GCP service-account key",
}


@runtime_checkable
class KnowsOwnCredentials(Protocol):
    """A provider that can say which of its identifiers are the orchestrator's own."""

    async def own_credentials(self, kind: str) -> tuple[str, ...]:
        """Raw values of our own credentials of `kind` (fingerprinted at once by the caller)."""
        ...


class OwnCredentials:
    """Refuses steps that would act on the orchestrator's own credentials; one per executor."""

    def __init__(self, providers: Mapping[str, Provider]) -> None:
        self._providers = providers
        self._fingerprints: dict[tuple[str, str], frozenset[str]] = {}
        #: One lock per (provider, kind): a slow provider must not hold up the others' checks.
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def refusal(self, spec: ActionSpec, params: Params) -> str | None:
        """Why the step must not run (it names one of our own credentials), or None.

        A provider's error while finding out (a transient one, say) propagates: better retried than guessed.
        """
        for name, param in sorted(spec.params.items()):
            value = params.get(name)
            if param.own is None or value is None:
                continue
            raw = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
            if keyed_fingerprint(raw) in await self._own(spec.provider, param.own):
                label = _LABELS.get(param.own, param.own)
                return (f"parameter {name!r} names the orchestrator's own {label}: refusing to revoke the "
                        "credentials it works with; if they leaked, rotate them by hand and update its settings")
        return None

    async def _own(self, provider_name: str, kind: str) -> frozenset[str]:
        key = (provider_name, kind)
        if (known := self._fingerprints.get(key)) is not None:
            return known
        async with self._locks.setdefault(key, asyncio.Lock()):
            if (known := self._fingerprints.get(key)) is None:
                provider = self._providers.get(provider_name)
                values: tuple[str, ...] = ()
                if isinstance(provider, KnowsOwnCredentials):
                    values = await provider.own_credentials(kind)
                known = self._fingerprints[key] = frozenset(keyed_fingerprint(v) for v in values if v)
        return known
