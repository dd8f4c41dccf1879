"""The container deployment (docker-compose.yml, Dockerfile, .dockerignore), checked with no Docker engine."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema.validators import validator_for

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = Path(__file__).resolve().parent / "schemas" / "compose-spec.json"
#: sha256 of the vendored schema, as recorded in tests/schemas/README.md.
SCHEMA_SHA256 = "d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64"
LOOPBACK = {"127.0.0.1", "::1"}
UID = 10001


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def kafka(compose: dict[str, Any]) -> dict[str, Any]:
    service: dict[str, Any] = compose["services"]["kafka"]
    return service


@pytest.fixture(scope="module")
def orchestrator(compose: dict[str, Any]) -> dict[str, Any]:
    service: dict[str, Any] = compose["services"]["orchestrator"]
    return service


@pytest.fixture(scope="module")
def stages() -> list[list[tuple[str, str]]]:
    return _stages((ROOT / "Dockerfile").read_text(encoding="utf-8"))


def _environment(service: dict[str, Any]) -> dict[str, str | None]:
    """A service's environment as a mapping, from either Compose form; None means taken from the shell."""
    env = service.get("environment", {})
    if isinstance(env, dict):
        return {k: None if v is None else str(v) for k, v in env.items()}
    pairs = (item.split("=", 1) for item in env)
    return {p[0]: p[1] if len(p) == 2 else None for p in pairs}


def _advertised(kafka: dict[str, Any]) -> dict[str, str]:
    """Kafka's advertised listeners as {name: host:port}."""
    raw = _environment(kafka)["KAFKA_ADVERTISED_LISTENERS"] or ""
    return dict(item.split("://", 1) for item in raw.split(","))


def _host_ip(port: str | int | dict[str, Any]) -> str | None:
    """The host address a port entry is published on; None when Compose would bind every interface."""
    if isinstance(port, dict):
        host_ip: str | None = port.get("host_ip")
        return host_ip
    parts = str(port).rsplit(":", 2)
    return parts[0].strip("[]") if len(parts) == 3 else None


def _seconds(duration: str) -> float:
    """A Compose duration ("1m30s", "30s") in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration))


def _stages(text: str) -> list[list[tuple[str, str]]]:
    """Dockerfile instructions as (KEYWORD, arguments) grouped by stage; ARG defaults expanded in FROM."""
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    joined = re.sub(r"\\\n", " ", code)
    args: dict[str, str] = {}
    stages: list[list[tuple[str, str]]] = []
    for line in joined.splitlines():
        if not line.strip():
            continue
        keyword, _, rest = line.strip().partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG" and not stages and "=" in rest:
            name, _, default = rest.partition("=")
            args[name] = default
        if keyword == "FROM":
            rest = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m[1] or m[2], m[0]), rest)
            stages.append([])
        if stages:
            stages[-1].append((keyword, rest))
    return stages


def _last(stage: list[tuple[str, str]], keyword: str) -> str:
    return [rest for kw, rest in stage if kw == keyword][-1]


def test_compose_file_is_valid_against_the_compose_spec(compose: dict[str, Any]) -> None:
    """docker-compose.yml validates against the vendored compose-spec schema, under the draft it declares."""
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    validator_class = validator_for(schema)
    validator_class.check_schema(schema)
    errors = sorted(validator_class(schema).iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_vendored_compose_schema_is_the_recorded_upstream_file() -> None:
    """The vendored schema is byte-for-byte the file whose provenance tests/schemas/README.md records."""
    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() == SCHEMA_SHA256


def test_kafka_runs_the_official_image_at_a_pinned_release(kafka: dict[str, Any]) -> None:
    """Kafka is the official apache/kafka image at an exact x.y.z tag, never a floating one."""
    assert re.fullmatch(r"apache/kafka:\d+\.\d+\.\d+", kafka["image"])


def test_kafka_runs_in_kraft_combined_mode(kafka: dict[str, Any]) -> None:
    """The single Kafka node is both broker and sole KRaft controller, with no ZooKeeper."""
    env = _environment(kafka)
    assert set((env["KAFKA_PROCESS_ROLES"] or "").split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    assert not any(name.startswith("KAFKA_ZOOKEEPER") for name in env)


def test_kafka_replicates_internal_topics_once(kafka: dict[str, Any]) -> None:
    """Internal topics ask for one replica, the only number a single broker can satisfy."""
    env = _environment(kafka)
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"


def test_kafka_advertises_a_host_and_a_compose_network_listener(kafka: dict[str, Any]) -> None:
    """Kafka advertises localhost:9092 for the host and kafka:19092 for containers on the compose network."""
    assert set(_advertised(kafka).values()) == {"localhost:9092", "kafka:19092"}


def test_kafka_healthcheck_probes_the_broker_api(kafka: dict[str, Any]) -> None:
    """Kafka's healthcheck asks the broker for its API versions, so healthy means it answers clients."""
    check = kafka["healthcheck"]
    command = check["test"] if isinstance(check["test"], str) else " ".join(check["test"])
    assert "kafka-broker-api-versions.sh" in command
    assert "--bootstrap-server localhost:9092" in command
    assert not check.get("disable", False)


def test_kafka_keeps_its_log_dirs_on_a_named_volume(compose: dict[str, Any], kafka: dict[str, Any]) -> None:
    """Kafka's log dirs live on a named volume, so topics and offsets survive re-creating the container."""
    log_dir = _environment(kafka)["KAFKA_LOG_DIRS"]
    mounts = dict(str(v).split(":", 1) for v in kafka["volumes"])
    assert {name for name, target in mounts.items() if target == log_dir} & set(compose["volumes"])


def test_orchestrator_starts_only_after_kafka_is_healthy(orchestrator: dict[str, Any]) -> None:
    """The orchestrator is started once Kafka's healthcheck passes, not merely once its container runs."""
    assert orchestrator["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_orchestrator_bootstraps_from_kafkas_compose_network_listener(
    kafka: dict[str, Any], orchestrator: dict[str, Any]
) -> None:
    """The orchestrator's bootstrap servers are the listener Kafka advertises on the compose network."""
    bootstrap = _environment(orchestrator)["KAFKA_BOOTSTRAP_SERVERS"]
    assert bootstrap == "kafka:19092"
    assert bootstrap in _advertised(kafka).values()


def test_orchestrator_passes_okta_credentials_through_from_the_shell(orchestrator: dict[str, Any]) -> None:
    """Okta's org URL and token come from the shell running compose; no value is written in the file."""
    env = _environment(orchestrator)
    assert env["OKTA_CLIENT_ORGURL"] is None
    assert env["OKTA_CLIENT_TOKEN"] is None


def test_orchestrator_api_listens_on_every_container_interface(orchestrator: dict[str, Any]) -> None:
    """Inside the container the HTTP API listens on 0.0.0.0:8080, the port that is published."""
    assert _environment(orchestrator)["ORCHESTRATOR_HTTP_LISTEN"] == "0.0.0.0:8080"
    assert [str(p).rsplit(":", 1)[-1] for p in orchestrator["ports"]] == ["8080"]


def test_orchestrator_reads_api_tokens_from_a_compose_secret(
    compose: dict[str, Any], orchestrator: dict[str, Any]
) -> None:
    """The API tokens file is a compose secret at /run/secrets/api_tokens; env can override its host path."""
    assert orchestrator["secrets"] == ["api_tokens"]
    assert _environment(orchestrator)["ORCHESTRATOR_API_TOKENS_FILE"] == "/run/secrets/api_tokens"
    assert re.fullmatch(r"\$\{\w+:-\./api-tokens\.json\}", compose["secrets"]["api_tokens"]["file"])


def test_no_service_publishes_a_port_beyond_loopback(compose: dict[str, Any]) -> None:
    """Every published port is bound to the host's loopback address, never to all interfaces."""
    published = {name: [_host_ip(p) for p in s.get("ports", [])] for name, s in compose["services"].items()}
    assert {name: ips for name, ips in published.items() if not set(ips) <= LOOPBACK} == {}


def test_orchestrator_root_filesystem_is_read_only(orchestrator: dict[str, Any]) -> None:
    """The orchestrator's root filesystem is read-only, with a tmpfs at /tmp for scratch files."""
    assert orchestrator["read_only"] is True
    assert "/tmp" in orchestrator["tmpfs"]


def test_orchestrator_has_no_capabilities_or_privilege_escalation(orchestrator: dict[str, Any]) -> None:
    """The orchestrator drops every Linux capability and cannot gain privileges through setuid binaries."""
    assert orchestrator["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in orchestrator["security_opt"]


def test_orchestrator_is_given_30s_to_drain_on_stop(orchestrator: dict[str, Any]) -> None:
    """Compose waits at least 30 s after SIGTERM before killing the orchestrator, time for its drain."""
    assert _seconds(orchestrator["stop_grace_period"]) >= 30


def test_orchestrator_restarts_unless_stopped(orchestrator: dict[str, Any]) -> None:
    """The orchestrator comes back after a crash or a daemon restart, but not after `docker compose stop`."""
    assert orchestrator["restart"] == "unless-stopped"


def test_orchestrator_keeps_the_images_non_root_user(orchestrator: dict[str, Any]) -> None:
    """The orchestrator is built from the repository's Dockerfile and does not override its USER."""
    assert orchestrator["build"] == {"context": ".", "dockerfile": "Dockerfile"}
    assert "user" not in orchestrator


def test_dockerfile_builds_in_stages_on_python_311_slim(stages: list[list[tuple[str, str]]]) -> None:
    """The image is built in at least two stages, each from python:3.11-slim."""
    bases = [_last(stage, "FROM").split()[0] for stage in stages]
    assert len(bases) >= 2
    assert set(bases) == {"python:3.11-slim"}


def test_dockerfile_runs_as_a_non_root_user(stages: list[list[tuple[str, str]]]) -> None:
    """The final stage's USER is uid 10001, not root."""
    user = _last(stages[-1], "USER").split(":")[0]
    assert user == str(UID)


def test_dockerfile_entrypoint_is_the_orchestrator_command(stages: list[list[tuple[str, str]]]) -> None:
    """The image runs `orchestrator run` in exec form, so the process itself receives SIGTERM."""
    assert json.loads(_last(stages[-1], "ENTRYPOINT")) == ["orchestrator"]
    assert json.loads(_last(stages[-1], "CMD")) == ["run"]


def test_dockerfile_stops_with_sigterm(stages: list[list[tuple[str, str]]]) -> None:
    """The image declares SIGTERM as its stop signal, the one the orchestrator drains on."""
    assert _last(stages[-1], "STOPSIGNAL") == "SIGTERM"


def test_dockerfile_installs_no_dev_extras(stages: list[list[tuple[str, str]]]) -> None:
    """The image installs the package's wheel with its runtime dependencies only, never the dev extra."""
    commands = [shlex.split(rest) for stage in stages for kw, rest in stage if kw == "RUN"]
    words = [word for command in commands for word in command]
    assert not [word for word in words if "[dev]" in word or word == "-e"]
    assert any(word.endswith(".whl") for word in words)


def test_docker_build_context_is_an_allow_list() -> None:
    """.dockerignore admits only the sources the image is built from: no .venv, .git, tests or secrets."""
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    rules = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    assert rules[0] == "*"
    included = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    assert included <= {"pyproject.toml", "README.md", "orchestrator", "playbooks"}
