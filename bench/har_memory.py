"""HAR scanner benchmark (issue 11): a large HAR (default 100 MB) scanned and sanitized in bounded memory.

Writes a synthetic capture (entries with JSON and text bodies, a few canary credentials), then, in a fresh
child process per pass, runs the scan and the sanitizing pass and reports each pass's peak RSS and time;
the file's size should not show in the peak.

    .venv/bin/python bench/har_memory.py --mb 100
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.har_canaries import entry, every_placement, okta_session_id


def write_har(path: Path, megabytes: int) -> int:
    """A HAR of about `megabytes` MB; returns the number of entries."""
    planted = every_placement()
    body = json.dumps({"items": [{"id": i, "name": f"item-{i}", "text": "lorem ipsum " * 20} for i in range(160)]})
    count = 0
    with path.open("w") as sink:
        sink.write('{"log": {"version": "1.2", "creator": {"name": "bench", "version": "1"}, "entries": [\n')
        for planted_entry in planted.document["log"]["entries"]:
            sink.write(json.dumps(planted_entry) + ",\n")
            count += 1
        while sink.tell() < megabytes * 1024 * 1024:
            sink.write(json.dumps(entry("https://acme.okta.com/api/v1/items?page=2",
                                        cookies={"sid": okta_session_id()} if count % 500 == 0 else None,
                                        response_body=body)) + ",\n")
            count += 1
        sink.write(json.dumps(entry("https://acme.okta.com/end")) + "\n]}}\n")
    return count + 1


def child(mode: str, source: str) -> None:
    """One pass in this process: print its seconds and peak RSS as JSON."""
    from orchestrator.har import scan

    start = time.perf_counter()
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    found = scan.scan_file(Path(source), max_bytes=1 << 40)
    if mode == "sanitize":
        scan.write_sanitized(Path(source), Path(source + ".clean"), found, max_bytes=1 << 40)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"mode": mode, "seconds": round(time.perf_counter() - start, 1), "entries": found.entries,
                      "findings": len(found.findings), "baseline_mb": round(baseline / 1024, 1),
                      "peak_mb": round(peak / 1024, 1)}))


def main() -> None:
    """Write the HAR, run each pass in a child, print a table row per pass."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--child", nargs=2, metavar=("MODE", "FILE"))
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "big.har"
        entries = write_har(path, args.mb)
        size_mb = path.stat().st_size / 1024 / 1024
        print(f"HAR: {size_mb:.0f} MB, {entries} entries")
        print("| pass | seconds | entries | findings | RSS after imports MB | peak RSS MB |")
        print("| --- | --- | --- | --- | --- | --- |")
        for mode in ("scan", "sanitize"):
            out = subprocess.run([sys.executable, __file__, "--child", mode, str(path)], capture_output=True,
                                 text=True, check=True).stdout
            row = json.loads(out)
            print(f"| {mode} | {row['seconds']} | {row['entries']} | {row['findings']} | {row['baseline_mb']} "
                  f"| {row['peak_mb']} |")


if __name__ == "__main__":
    main()
