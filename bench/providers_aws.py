"""AWS client benchmark (issue 4): IAM UpdateAccessKey calls per second through `AwsProvider` and its governor.

Starts moto_server as a process, creates USERS users with one key each, then sends COUNT UpdateAccessKey calls
(alternating Active/Inactive, spread over the users) through the provider's governed aiobotocore client at
each governor concurrency given, optionally through the fault proxy (which adds a hop, as a real network does).

    .venv/bin/python bench/providers_aws.py --count 2000 --concurrency 1 --concurrency 10 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import secrets
import socket
import string
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator import embedded  # noqa: E402
from orchestrator.actions import StepContext  # noqa: E402
from orchestrator.governor import Governor  # noqa: E402
from orchestrator.providers.aws import AwsProvider  # noqa: E402
from orchestrator.settings import AwsSettings  # noqa: E402


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """moto_server on a free port."""
    port = embedded.free_port()
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def seed(endpoint: str, users: int) -> list[tuple[str, str]]:
    """USERS users with one access key each: (user, key id)."""
    iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1")
    pairs = []
    for i in range(users):
        name = f"bench-{i}"
        iam.create_user(UserName=name)
        pairs.append((name, iam.create_access_key(UserName=name)["AccessKey"]["AccessKeyId"]))
    return pairs


async def measure(endpoint: str, pairs: list[tuple[str, str]], count: int, concurrency: int) -> tuple[float, float]:
    """(calls per second, client CPU ms per call) for COUNT UpdateAccessKey calls, governor at `concurrency`."""
    settings = AwsSettings(region="us-east-1", endpoint_url=endpoint, concurrency=concurrency)
    context = StepContext(exposure_id="bench")
    governor = Governor("aws", concurrency=concurrency, initial_burst=concurrency)  # as open_providers builds it
    async with AwsProvider(settings, governor) as provider:
        # Create the client before the clock starts.
        await provider._call("iam", context, "list_access_keys", UserName=pairs[0][0])

        async def one(i: int) -> None:
            user, key = pairs[i % len(pairs)]
            status = "Inactive" if (i // len(pairs)) % 2 == 0 else "Active"
            await provider._call("iam", context, "update_access_key", UserName=user, AccessKeyId=key, Status=status)

        started, cpu = time.perf_counter(), time.process_time()
        # The governor caps requests in flight; every call is handed to it at once, as the executor would.
        await asyncio.gather(*(one(i) for i in range(count)))
        return count / (time.perf_counter() - started), (time.process_time() - cpu) * 1000 / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--concurrency", type=int, action="append")
    parser.add_argument("--proxy", action="store_true", help="go through the fault proxy (no faults queued)")
    args = parser.parse_args()
    alphabet = string.ascii_uppercase + string.digits
    os.environ.update(AWS_ACCESS_KEY_ID="AKIA" + "".join(secrets.choice(alphabet) for _ in range(16)),
                      AWS_SECRET_ACCESS_KEY=secrets.token_urlsafe(30), AWS_EC2_METADATA_DISABLED="true")
    with moto_server() as endpoint, contextlib.ExitStack() as stack:
        pairs = seed(endpoint, args.users)
        target = endpoint
        if args.proxy:
            target = stack.enter_context(embedded.emulator("faultproxy", "--upstream", endpoint)).url
        print(f"# {platform.python_version()} on {os.cpu_count()} cores; {args.count} calls, {args.users} users, "
              f"{'via fault proxy' if args.proxy else 'direct'} to moto_server")
        for concurrency in args.concurrency or [1, 10, 32]:
            rate, cpu_ms = asyncio.run(measure(target, pairs, args.count, concurrency))
            print(f"concurrency {concurrency:>3}: {rate:8.0f} UpdateAccessKey/s, client CPU {cpu_ms:.2f} ms/call")


if __name__ == "__main__":
    main()
