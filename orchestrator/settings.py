"""The only module that reads the environment: one frozen `Settings`, built once at start and passed down."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from orchestrator.errors import ConfigurationError

N = TypeVar("N", int, float)

#: Where the shipped playbooks live, whatever the working directory.
DEFAULT_PLAYBOOKS_DIR = Path(__file__).resolve().parent.parent / "playbooks"
#: Where `orchestrator run` serves its HTTP API unless ORCHESTRATOR_HTTP_LISTEN says otherwise (`off`: nowhere).
DEFAULT_HTTP_LISTEN = "127.0.0.1:8080"
#: Where `orchestrator dev` puts its broker and HTTP API when those ports are free (else on free ones).
DEV_KAFKA_PORT, DEV_API_PORT = 9092, 8080
#: Where `from_env` keeps the deployment's generated files (the fingerprint key) unless told otherwise.
DEFAULT_DATA_DIR = Path(".orchestrator")


@dataclass(frozen=True)
class OktaSettings:
    """Okta org and admin token, from the SDK's own variables."""

    org_url: str
    token: str = field(repr=False)
    concurrency: int = 75
    bucket_share: float = 0.5


@dataclass(frozen=True)
class AwsSettings:
    """AWS region and endpoint; credentials come from the standard chain."""

    region: str = "us-east-1"
    endpoint_url: str | None = None
    concurrency: int = 10


@dataclass(frozen=True)
class GitHubSettings:
    """GitHub REST API base URL and, optionally, OAuth app credentials."""

    api_url: str = "https://api.github.com"
    app_client_id: str | None = None
    app_client_secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class SlackSettings:
    """Slack Web API base URL."""

    api_url: str = "https://slack.com/api"


@dataclass(frozen=True)
class GcpSettings:
    """GCP IAM REST base URL and an optional fixed access token (else application default credentials)."""

    iam_url: str = "https://iam.googleapis.com"
    access_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class StoreSettings:
    """Where the run store lives and how long it remembers (see the README section "Run store")."""

    data_dir: Path = Path(".orchestrator")
    #: `postgresql://…` for several instances; None keeps the embedded SQLite file under `data_dir`.
    database_url: str | None = field(default=None, repr=False)  # may hold a password
    claim_lease_s: float = 60.0
    dedup_window_days: float = 30.0
    retention_days: float = 90.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StoreSettings:
        """The store's settings alone: `status` and `db` commands need no Kafka configuration."""
        env = os.environ if env is None else env
        reader = _Reader(env)
        return cls(
            data_dir=Path(env.get("ORCHESTRATOR_DATA_DIR", "").strip() or str(cls.data_dir)),
            database_url=env.get("ORCHESTRATOR_DATABASE_URL", "").strip() or None,
            claim_lease_s=reader.number("ORCHESTRATOR_CLAIM_LEASE_S", cls.claim_lease_s),
            dedup_window_days=reader.number("ORCHESTRATOR_DEDUP_WINDOW_DAYS", cls.dedup_window_days),
            retention_days=reader.number("ORCHESTRATOR_RETENTION_DAYS", cls.retention_days),
        )


@dataclass(frozen=True)
class IngestSettings:
    """Detector input: the webhooks' secrets and keys, and the HAR scanner's limit (README "Webhooks")."""

    #: `X-Hub-Signature-256` HMAC key of GitHub webhooks; None: `POST /v1/ingest/github-secret-scanning`
    #: refuses GitHub webhooks.
    github_webhook_secret: str | None = field(default=None, repr=False)
    #: GitHub secret-scanning partner public keys: an https URL (GitHub's is
    #: https://api.github.com/meta/public_keys/secret_scanning) or a file of the same JSON.
    github_partner_keys: str | None = None
    gitguardian_webhook_secret: str | None = field(default=None, repr=False)
    #: SSF push delivery: the transmitter's JWKS (URL or file) and, when set, the `iss`/`aud` required.
    ssf_jwks: str | None = None
    ssf_issuer: str | None = None
    ssf_audience: str | None = None
    #: Timestamped deliveries older or newer than this are refused, and a delivery seen within it is a replay.
    webhook_max_age_s: float = 300.0
    #: How long fetched public keys are trusted before they are fetched again.
    keys_cache_s: float = 3600.0
    har_max_bytes: int = 512 * 1024 * 1024

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> IngestSettings:
        """The ingest settings alone: `scan-har` needs no Kafka configuration unless it publishes."""
        env = os.environ if env is None else env
        reader = _Reader(env)

        def text(name: str) -> str | None:
            return env.get(name, "").strip() or None

        return cls(
            github_webhook_secret=text("ORCHESTRATOR_GITHUB_WEBHOOK_SECRET"),
            github_partner_keys=text("ORCHESTRATOR_GITHUB_PARTNER_KEYS"),
            gitguardian_webhook_secret=text("ORCHESTRATOR_GITGUARDIAN_WEBHOOK_SECRET"),
            ssf_jwks=text("ORCHESTRATOR_SSF_JWKS"),
            ssf_issuer=text("ORCHESTRATOR_SSF_ISSUER"),
            ssf_audience=text("ORCHESTRATOR_SSF_AUDIENCE"),
            webhook_max_age_s=reader.number("ORCHESTRATOR_WEBHOOK_MAX_AGE_S", cls.webhook_max_age_s),
            keys_cache_s=reader.number("ORCHESTRATOR_WEBHOOK_KEYS_CACHE_S", cls.keys_cache_s),
            har_max_bytes=reader.integer("ORCHESTRATOR_HAR_MAX_BYTES", cls.har_max_bytes),
        )


@dataclass(frozen=True)
class Settings:
    """Everything the orchestrator is configured with."""

    bootstrap_servers: str
    exposures_topic: str = "credentials.exposed"
    audit_topic: str = "credentials.audit"
    dlq_topic: str = "credentials.exposed.dlq"
    group_id: str = "credential-orchestrator"
    playbooks_dir: Path = DEFAULT_PLAYBOOKS_DIR
    topic_partitions: int = 6
    topic_replication_factor: int = 1
    max_in_flight: int = 256
    max_in_flight_per_provider: int = 64
    max_buffered: int = 10_000
    max_event_bytes: int = 64 * 1024
    commit_interval_s: float = 1.0
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 1_000
    step_timeout_s: float = 30.0
    drain_timeout_s: float = 20.0
    #: Consecutive failures (5xx, timeouts, refused connections) that open a provider's circuit breaker.
    circuit_failures: int = 20
    #: How long an open circuit holds the provider's requests before one probe goes through.
    circuit_cooldown_s: float = 10.0
    log_format: str = "console"
    #: Where `orchestrator run` serves its HTTP API; None serves none (the default when built in code, so
    #: tests and embedded uses never fight over a port). `from_env` defaults it to DEFAULT_HTTP_LISTEN.
    http_listen: str | None = None
    api_tokens_file: Path | None = None
    oncall_webhook_url: str | None = field(default=None, repr=False)  # a Slack webhook URL is a secret
    oncall_webhook_format: str = "json"
    #: An unmatched exposure pages on-call once per credential kind per this many seconds.
    oncall_unmatched_interval_s: float = 3600.0
    #: Dead letters are stored AES-256-GCM encrypted under this key (64 hex digits or base64 of 32 bytes);
    #: without one, their secret-looking values are dropped. See `orchestrator.keys`.
    encryption_key: str | None = field(default=None, repr=False)
    encryption_key_file: Path | None = None
    #: Where the generated fingerprint key is kept; None (the default when built in code) keeps a
    #: per-process key. `from_env` defaults it to DEFAULT_DATA_DIR.
    data_dir: Path | None = None
    #: The safety policy (protected principals, the brake, approval expiry); None: the defaults, nothing protected.
    policy_file: Path | None = None
    #: How often waiting runs look for answers given by other processes (CLI, other instances).
    approval_poll_s: float = 0.5
    okta: OktaSettings | None = None
    aws: AwsSettings = AwsSettings()
    github: GitHubSettings = GitHubSettings()
    slack: SlackSettings = SlackSettings()
    gcp: GcpSettings = GcpSettings()
    store: StoreSettings = StoreSettings()
    ingest: IngestSettings = IngestSettings()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `env` (default: the process environment); raise `ConfigurationError`."""
        env = os.environ if env is None else env
        bootstrap = env.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
        if not bootstrap:
            raise ConfigurationError(
                "KAFKA_BOOTSTRAP_SERVERS is not set: point it at your Kafka brokers (host:port[,host:port]), "
                "or run `orchestrator dev` for an embedded broker"
            )
        reader = _Reader(env)
        okta = None
        if org_url := env.get("OKTA_CLIENT_ORGURL", "").strip():
            okta = OktaSettings(
                org_url=org_url.rstrip("/"),
                token=reader.required("OKTA_CLIENT_TOKEN", "the Okta API token (SSWS) the orchestrator acts with"),
                concurrency=reader.integer("ORCHESTRATOR_OKTA_CONCURRENCY", 75),
                bucket_share=reader.number("ORCHESTRATOR_OKTA_BUCKET_SHARE", 0.5),
            )
        tokens_file = env.get("ORCHESTRATOR_API_TOKENS_FILE")
        key_file = env.get("ORCHESTRATOR_ENCRYPTION_KEY_FILE", "").strip()
        data_dir = env.get("ORCHESTRATOR_DATA_DIR", "").strip()
        policy_file = env.get("ORCHESTRATOR_POLICY_FILE", "").strip()
        return cls(
            bootstrap_servers=bootstrap,
            exposures_topic=env.get("ORCHESTRATOR_EXPOSURES_TOPIC", cls.exposures_topic),
            audit_topic=env.get("ORCHESTRATOR_AUDIT_TOPIC", cls.audit_topic),
            dlq_topic=env.get("ORCHESTRATOR_DLQ_TOPIC", cls.dlq_topic),
            group_id=env.get("ORCHESTRATOR_GROUP_ID", cls.group_id),
            playbooks_dir=Path(env.get("ORCHESTRATOR_PLAYBOOKS_DIR", str(DEFAULT_PLAYBOOKS_DIR))),
            topic_partitions=reader.integer("ORCHESTRATOR_TOPIC_PARTITIONS", cls.topic_partitions),
            topic_replication_factor=reader.integer("ORCHESTRATOR_TOPIC_REPLICATION_FACTOR",
                                                    cls.topic_replication_factor),
            max_in_flight=reader.integer("ORCHESTRATOR_MAX_IN_FLIGHT", cls.max_in_flight),
            max_in_flight_per_provider=reader.integer("ORCHESTRATOR_MAX_IN_FLIGHT_PER_PROVIDER",
                                                      cls.max_in_flight_per_provider),
            max_buffered=reader.integer("ORCHESTRATOR_MAX_BUFFERED", cls.max_buffered),
            max_event_bytes=reader.integer("ORCHESTRATOR_MAX_EVENT_BYTES", cls.max_event_bytes),
            session_timeout_ms=reader.integer("ORCHESTRATOR_KAFKA_SESSION_TIMEOUT_MS", cls.session_timeout_ms),
            heartbeat_interval_ms=reader.integer(
                "ORCHESTRATOR_KAFKA_HEARTBEAT_INTERVAL_MS", cls.heartbeat_interval_ms
            ),
            step_timeout_s=reader.number("ORCHESTRATOR_STEP_TIMEOUT_S", cls.step_timeout_s),
            drain_timeout_s=reader.number("ORCHESTRATOR_DRAIN_TIMEOUT_S", cls.drain_timeout_s),
            circuit_failures=reader.integer("ORCHESTRATOR_CIRCUIT_FAILURES", cls.circuit_failures),
            circuit_cooldown_s=reader.number("ORCHESTRATOR_CIRCUIT_COOLDOWN_S", cls.circuit_cooldown_s),
            log_format=reader.choice("ORCHESTRATOR_LOG_FORMAT", cls.log_format, ("console", "json")),
            http_listen=_http_listen(env.get("ORCHESTRATOR_HTTP_LISTEN", DEFAULT_HTTP_LISTEN)),
            api_tokens_file=Path(tokens_file) if tokens_file else None,
            oncall_webhook_url=env.get("ORCHESTRATOR_ONCALL_WEBHOOK_URL", "").strip() or None,
            oncall_webhook_format=reader.choice("ORCHESTRATOR_ONCALL_WEBHOOK_FORMAT", cls.oncall_webhook_format,
                                                ("slack", "json")),
            oncall_unmatched_interval_s=reader.number("ORCHESTRATOR_ONCALL_UNMATCHED_INTERVAL_S",
                                                      cls.oncall_unmatched_interval_s),
            encryption_key=env.get("ORCHESTRATOR_ENCRYPTION_KEY", "").strip() or None,
            encryption_key_file=Path(key_file) if key_file else None,
            data_dir=Path(data_dir) if data_dir else DEFAULT_DATA_DIR,
            policy_file=Path(policy_file) if policy_file else None,
            okta=okta,
            aws=AwsSettings(
                region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
                endpoint_url=env.get("AWS_ENDPOINT_URL") or None,
                concurrency=reader.integer("ORCHESTRATOR_AWS_CONCURRENCY", AwsSettings.concurrency),
            ),
            github=GitHubSettings(
                api_url=env.get("ORCHESTRATOR_GITHUB_API_URL", GitHubSettings.api_url).rstrip("/"),
                app_client_id=env.get("ORCHESTRATOR_GITHUB_APP_CLIENT_ID") or None,
                app_client_secret=env.get("ORCHESTRATOR_GITHUB_APP_CLIENT_SECRET") or None,
            ),
            slack=SlackSettings(api_url=env.get("ORCHESTRATOR_SLACK_API_URL", SlackSettings.api_url).rstrip("/")),
            gcp=GcpSettings(
                iam_url=env.get("ORCHESTRATOR_GCP_IAM_URL", GcpSettings.iam_url).rstrip("/"),
                access_token=env.get("ORCHESTRATOR_GCP_ACCESS_TOKEN") or None,
            ),
            store=StoreSettings.from_env(env),
            ingest=IngestSettings.from_env(env),
        )


def _http_listen(raw: str) -> str | None:
    value = raw.strip()
    return None if value.lower() in {"", "off", "none"} else value


@dataclass(frozen=True)
class _Reader:
    env: Mapping[str, str]

    def required(self, name: str, what: str) -> str:
        value = self.env.get(name, "").strip()
        if not value:
            raise ConfigurationError(f"{name} is not set: it must hold {what}")
        return value

    def integer(self, name: str, default: int) -> int:
        return self._positive(name, default, int, "a whole number")

    def number(self, name: str, default: float) -> float:
        return self._positive(name, default, float, "a number")

    def _positive(self, name: str, default: N, parse: Callable[[str], N], kind: str) -> N:
        raw = self.env.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = parse(raw)
        except ValueError:
            raise ConfigurationError(f"{name}={raw!r} is not {kind}") from None
        if not value > 0:  # written so, NaN fails too (every comparison with NaN is false)
            raise ConfigurationError(f"{name}={raw!r} must be positive")
        return value

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self.env.get(name, default) or default
        if value not in allowed:
            raise ConfigurationError(f"{name}={value!r} must be one of {', '.join(allowed)}")
        return value
