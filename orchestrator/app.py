"""Wires everything: one async context manager owning every resource, and `serve` for `orchestrator run`."""

from __future__ import annotations

import asyncio
import gc
import signal
from contextlib import AsyncExitStack
from types import TracebackType

import structlog

from orchestrator import api, kafka, keys
from orchestrator.audit import AuditObserver, Auditor, KafkaAuditSink
from orchestrator.consumer import ExposureConsumer
from orchestrator.execution import Executor
from orchestrator.metrics import Metrics
from orchestrator.pipeline import Pipeline
from orchestrator.playbooks import Playbook, load_playbooks
from orchestrator.providers import catalog, open_providers
from orchestrator.settings import Settings
from orchestrator.webhook import OncallNotifier

log = structlog.get_logger("orchestrator.app")


class Orchestrator:
    """The running service. Entering starts every resource in order; leaving stops them in reverse."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stack = AsyncExitStack()
        self.playbooks: tuple[Playbook, ...] = ()
        self.consumer: ExposureConsumer | None = None
        self.metrics = Metrics()
        #: Base URL of the HTTP API once serving (None when `settings.http_listen` is None).
        self.api_url: str | None = None

    async def __aenter__(self) -> Orchestrator:
        settings = self.settings
        actions = catalog()
        # A bad playbook stops start-up before anything connects.
        self.playbooks = load_playbooks(settings.playbooks_dir, actions)
        api_tokens = api.load_access(settings)
        deployment_keys = keys.from_settings(settings)
        keys.install(deployment_keys)
        try:
            await kafka.ensure_topics(
                settings.bootstrap_servers, [settings.exposures_topic, settings.audit_topic, settings.dlq_topic],
                partitions=settings.topic_partitions, replication=settings.topic_replication_factor,
            )
            producer = kafka.make_producer(settings.bootstrap_servers)
            await kafka.start(producer, settings.bootstrap_servers)
            self._stack.push_async_callback(producer.stop)
            providers, governors = await open_providers(settings, self._stack)
            self.metrics.watch_governors(governors)
            observers: list[AuditObserver] = [self.metrics.observe]
            if settings.oncall_webhook_url is not None:
                notifier = OncallNotifier(settings.oncall_webhook_url, settings.oncall_webhook_format)
                observers.append((await self._stack.enter_async_context(notifier)).observe)
            pipeline = Pipeline(
                # Audit records are echoed to the console log for people; JSON logs would only duplicate the topic.
                auditor=Auditor(KafkaAuditSink(producer, settings.audit_topic), echo=settings.log_format == "console",
                                observers=observers),
                executor=Executor(providers, actions, step_timeout_s=settings.step_timeout_s),
                playbooks=self.playbooks,
                dead_letters=kafka.KafkaDeadLetters(producer, settings.dlq_topic, key=deployment_keys.encryption),
                max_event_bytes=settings.max_event_bytes,
                dedup_window=settings.dedup_window,
            )
            raw_consumer = kafka.make_consumer(settings)
            await kafka.start(raw_consumer, settings.bootstrap_servers)
            self._stack.push_async_callback(raw_consumer.stop)
            self.consumer = ExposureConsumer(
                raw_consumer, pipeline, topic=settings.exposures_topic, max_in_flight=settings.max_in_flight,
                commit_interval_s=settings.commit_interval_s, drain_timeout_s=settings.drain_timeout_s,
            )
            self.consumer.subscribe()
            consumer = self.consumer
            self.metrics.watch_consumer(in_flight=lambda: consumer.in_flight, lag=consumer.lag)
            if settings.http_listen is not None:
                services = api.ApiServices(settings=settings, producer=producer, consumer=self.consumer,
                                           playbooks=self.playbooks, metrics=self.metrics, tokens=api_tokens)
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

    def stop(self) -> None:
        """Stop fetching; in-flight runs finish (or are abandoned at the drain deadline) and are committed."""
        if self.consumer is not None:
            log.info("orchestrator.stopping")
            self.consumer.stop()


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


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then drain, commit and return."""
    loop = asyncio.get_running_loop()
    async with Orchestrator(settings) as orchestrator:
        tune_garbage_collector()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, orchestrator.stop)
        try:
            await orchestrator.run()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
    log.info("orchestrator.stopped")
