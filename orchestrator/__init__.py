"""Exposed-credential revocation orchestrator: exposures in from Kafka, playbooks run, every outcome audited."""

__version__ = "0.1.0"
