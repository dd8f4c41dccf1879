"""Wires everything: one async context manager owning every resource, and `serve` for `orchestrator run`."""

from __future__ import annotations

import asyncio
import functools
import gc
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Collection
from contextlib import AsyncExitStack
from types import TracebackType

import structlog
from aiokafka import AIOKafkaProducer

from orchestrator import api, audit_stream, kafka, keys
from orchestrator.actions import Provider
from orchestrator.audit import AuditObserver, Auditor, KafkaAuditSink
from orchestrator.auth import TokenFile
from orchestrator.broker_health import BrokerHealth
from orchestrator.consumer import ExposureConsumer
from orchestrator.execution import Executor
from orchestrator.guard import Directory, Guard
from orchestrator.metrics import Metrics
from orchestrator.pipeline import Pipeline
from orchestrator.playbooks import Playbook, load_playbooks
from orchestrator.policy import Policy, load_policy
from orchestrator.providers import catalog, open_providers
from orchestrator.settings import Settings
from orchestrator.store import RunStore
from orchestrator.store.approvals import ApprovalBook
from orchestrator.webhook import OncallNotifier

log = structlog.get_logger("orchestrator.app")


class Orchestrator:
    """The running service. Entering starts every resource in order; leaving stops them in reverse."""

    def __init__(self, settings: Settings, *, audit_view: AuditObserver | None = None) -> None:
        self.settings = settings
        #: Shows audit records to a person instead of the log's echo (the dev console's live view).
        self.audit_view = audit_view
        self._stack = AsyncExitStack()
        self.playbooks: tuple[Playbook, ...] = ()
        self.consumer: ExposureConsumer | None = None
        self.metrics = Metrics()
        #: The run store, once entered.
        self.store: RunStore | None = None
        #: The broker's reachability, probed in the background once entered.
        self.broker: BrokerHealth | None = None
        #: Base URL of the HTTP API once serving (None when `settings.http_listen` is None).
        self.api_url: str | None = None
        #: The API's tokens file once entered (None without one).
        self.api_tokens: TokenFile | None = None
        self.policy = Policy()
        self.auditor: Auditor | None = None
        self.providers: dict[str, Provider] = {}
        #: Protected principals, the brake and approvals, once entered.
        self.guard: Guard | None = None

    async def __aenter__(self) -> Orchestrator:
        settings = self.settings
        actions = catalog()
        # A bad playbook stops start-up before anything connects.
        self.playbooks = load_playbooks(settings.playbooks_dir, actions)
        self.policy = load_policy(settings.policy_file)
        self.api_tokens = api_tokens = api.load_access(settings)
        deployment_keys = keys.from_settings(settings)
        keys.install(deployment_keys)
        try:
            await kafka.ensure_topics(
                settings.bootstrap_servers, [settings.exposures_topic, settings.audit_topic, settings.dlq_topic],
                partitions=settings.topic_partitions, replication=settings.topic_replication_factor,
            )
            # Opened (and migrated) before anything consumes: no exposure may run unclaimed.
            store = await asyncio.to_thread(RunStore.open, settings.store)
            await store.start()
            self._stack.push_async_callback(store.close)
            self.store = store
            producer = kafka.make_producer(settings.bootstrap_servers)
            await kafka.start(producer, settings.bootstrap_servers)
            self._stack.push_async_callback(_within(producer.stop, "producer"))
            self.broker = broker = await self._stack.enter_async_context(
                _broker_health(settings, producer).running())
            providers, governors = await open_providers(settings, self._stack)
            self.metrics.watch_governors(governors)
            observers: list[AuditObserver] = [self.metrics.observe]
            if self.audit_view is not None:
                observers.append(self.audit_view)
            pager: OncallNotifier | None = None
            if settings.oncall_webhook_url is not None:
                notifier = OncallNotifier(settings.oncall_webhook_url, settings.oncall_webhook_format,
                                          unmatched_interval_s=settings.oncall_unmatched_interval_s)
                pager = await self._stack.enter_async_context(notifier)
                observers.append(pager.observe)
            # Providers that can tell a user's groups, for `protected.<provider>.groups` (Okta).
            directories = {name: p for name, p in providers.items() if isinstance(p, Directory)}
            self.guard = guard = Guard(self.policy, ApprovalBook(store), pager, poll_s=settings.approval_poll_s,
                                       directories=directories)
            await guard.start()
            self._stack.push_async_callback(guard.close)
            # Audit records are echoed to the console log for people; JSON logs would only duplicate the topic.
            self.auditor = auditor = Auditor(
                KafkaAuditSink(producer, settings.audit_topic, health=self.broker),
                echo=settings.log_format == "console" and self.audit_view is None, observers=observers)
            self.providers = providers
            pipeline = Pipeline(
                auditor=auditor,
                executor=Executor(providers, actions, step_timeout_s=settings.step_timeout_s, guard=guard),
                playbooks=self.playbooks,
                dead_letters=kafka.KafkaDeadLetters(producer, settings.dlq_topic, key=deployment_keys.encryption,
                                                    health=self.broker, bootstrap=settings.bootstrap_servers),
                max_event_bytes=settings.max_event_bytes,
                store=store,
                find_end=functools.partial(audit_stream.find_end, settings.bootstrap_servers, settings.audit_topic),
            )
            raw_consumer = kafka.make_consumer(settings)
            await kafka.start(raw_consumer, settings.bootstrap_servers)
            self._stack.push_async_callback(_within(raw_consumer.stop, "consumer"))
            self.consumer = ExposureConsumer(
                raw_consumer, pipeline, topic=settings.exposures_topic, max_in_flight=settings.max_in_flight,
                max_in_flight_per_provider=settings.max_in_flight_per_provider, max_buffered=settings.max_buffered,
                commit_interval_s=settings.commit_interval_s, drain_timeout_s=settings.drain_timeout_s,
                broker_outages=lambda: broker.outages, broker_healthy=lambda: broker.healthy,
            )
            self.consumer.subscribe()
            self.broker.when_recreated(self.consumer.topics_recreated)
            consumer = self.consumer
            self.metrics.watch_consumer(in_flight=lambda: consumer.in_flight, lag=consumer.lag,
                                        waiting=consumer.waiting_by_provider)
            if settings.http_listen is not None:
                services = api.ApiServices(settings=settings, producer=producer, consumer=self.consumer,
                                           playbooks=self.playbooks, metrics=self.metrics, tokens=api_tokens,
                                           broker=self.broker, store=store, guard=guard, auditor=auditor,
                                           providers=providers)
                self.api_url = await self._stack.enter_async_context(api.serving(services))
        except BaseException:
            await self._stack.aclose()
            raise
        log.info("orchestrator.started", playbooks=[p.name for p in self.playbooks],
                 providers=sorted(providers), exposures_topic=settings.exposures_topic,
                 audit_topic=settings.audit_topic, dlq_topic=settings.dlq_topic, group_id=settings.group_id,
                 http_api=self.api_url)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._stack.aclose()

    async def run(self) -> None:
        """Consume until `stop`, then drain and commit."""
        assert self.consumer is not None, "enter the Orchestrator before running it"
        await self.consumer.run()

    def reload_tokens(self) -> None:
        """Re-read the API tokens file now (SIGHUP); it is also re-read whenever it changes."""
        if self.api_tokens is not None:
            self.api_tokens.reload()

    def stop(self) -> None:
        """Stop fetching; in-flight runs finish (or are abandoned at the drain deadline) and are committed."""
        if self.consumer is not None:
            log.info("orchestrator.stopping")
            self.consumer.stop()
        if self.guard is not None:
            self.guard.interrupt()  # runs waiting for a person would only hold the drain until its deadline


def _broker_health(settings: Settings, producer: AIOKafkaProducer) -> BrokerHealth:
    """Probes through the producer's own client; re-creates the three topics with the configured layout."""
    topics = [settings.exposures_topic, settings.audit_topic, settings.dlq_topic]

    async def probe() -> Collection[str]:
        metadata = await producer.client.fetch_all_metadata()
        return metadata.topics()  # type: ignore[no-any-return]

    async def recreate(missing: list[str]) -> list[str]:
        return await kafka.recreate_topics(settings.bootstrap_servers, missing, partitions=settings.topic_partitions,
                                           replication=settings.topic_replication_factor)

    return BrokerHealth(probe, recreate, topics)


#: How long stopping one Kafka client may take; with the broker gone, aiokafka would wait for it indefinitely.
CLIENT_STOP_TIMEOUT_S = 5.0
#: Beyond the drain timeout, how long stopping may take before the process exits anyway.
STOP_GRACE_S = 15.0


def _within(stop: Callable[[], Awaitable[object]], name: str) -> Callable[[], Awaitable[None]]:
    """`stop`, given up after CLIENT_STOP_TIMEOUT_S."""

    async def bounded() -> None:
        try:
            async with asyncio.timeout(CLIENT_STOP_TIMEOUT_S):
                await stop()
        except TimeoutError:
            log.warning("kafka.stop_abandoned", client=name, timeout_s=CLIENT_STOP_TIMEOUT_S)
        except asyncio.CancelledError:
            # aiokafka 0.14's Fetcher.close() cancels its pending fetch tasks and awaits them unguarded, so a
            # consumer stopped while a fetch is retrying raises their CancelledError. Only ours may propagate.
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            log.warning("kafka.stop_interrupted", client=name)

    return bounded


#: Young-generation collection threshold for the service (CPython's default is 700 allocations).
GC_THRESHOLD = 50_000


def tune_garbage_collector() -> None:
    """Stop the cyclic collector rescanning everything loaded at start-up, and let it run less often.

    The SDKs leave hundreds of thousands of long-lived objects (okta-sdk-python's models alone ~115 MB):
    measured under load, full collections over them took ~38 % of the CPU; after `gc.freeze()` and a larger
    young generation, under 3 %. Garbage made later is still collected.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])


class _Signals:
    """First SIGTERM/SIGINT: stop gracefully, and exit anyway once the drain timeout plus a grace has passed.
    A second signal: exit at once."""

    def __init__(self, orchestrator: Orchestrator, deadline_s: float) -> None:
        self._orchestrator = orchestrator
        self._deadline_s = deadline_s
        self._received = False

    def __call__(self, signum: int) -> None:
        if self._received:
            _exit_now(f"second {signal.Signals(signum).name}", 128 + signum)
        self._received = True
        self._orchestrator.stop()
        asyncio.get_running_loop().call_later(self._deadline_s, _exit_now, "stop deadline passed", 1)


def _exit_now(why: str, code: int) -> None:
    log.warning("orchestrator.exiting_now", reason=why)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # at once: no further draining, no waiting on a broker that is gone


async def serve(settings: Settings, *, audit_view: AuditObserver | None = None) -> None:
    """Run until SIGTERM or SIGINT, then drain, commit and return."""
    loop = asyncio.get_running_loop()
    try:
        async with Orchestrator(settings, audit_view=audit_view) as orchestrator:
            tune_garbage_collector()
            on_signal = _Signals(orchestrator, settings.drain_timeout_s + STOP_GRACE_S)
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, on_signal, sig)
            loop.add_signal_handler(signal.SIGHUP, orchestrator.reload_tokens)
            await orchestrator.run()
    finally:  # only now: a second signal while the clients close must still exit at once
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
    log.info("orchestrator.stopped")
