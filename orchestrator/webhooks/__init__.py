"""Signed deliveries from detectors: signature checks (pure), replay memory, and the public keys they need.

`signatures` verifies GitHub (HMAC and partner ECDSA) and GitGuardian signatures; `replay` remembers what
was delivered; `keys` fetches and caches public keys. The HTTP routes are in `orchestrator.api_ingest`.
"""
