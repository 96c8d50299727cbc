"""The `wrk` phase of bench.embedded_ingest: single-event posts from a C load generator, so
the client's own CPU stays small beside the server's (httpx spends about 0.8 ms of CPU a
request, and at 2,000 requests/s that alone is 1.6 of this machine's 2 cores).

Needs `wrk` on PATH (Debian: `apt-get install wrk`)."""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

SCRIPT = Path(__file__).with_name("wrk_post.lua")
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    """wrk's latency ("812.00us", "4.21ms", "1.02s") in milliseconds."""
    number = text.rstrip("mus")
    return float(number) * _UNITS[text[len(number) :]]


def run(
    base: str,
    token: str,
    connections: int,
    seconds: float,
    events: Callable[[int], Iterator[bytes]],
    first_worker: int,
) -> tuple[float, str]:
    """Post for `seconds` over `connections` connections (2 wrk threads), bodies from
    `events(worker)`; requests/s and a summary of latency."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("the wrk phase needs wrk on PATH (Debian: apt-get install wrk)")
    threads = 2
    per_thread = int(seconds * 3000)  # more bodies than one thread can post: none repeats
    with tempfile.TemporaryDirectory(prefix="remsguard-wrk-") as folder:
        for thread in range(threads):
            lines = itertools.islice(events(first_worker + thread), per_thread)
            with open(f"{folder}/events-{thread}.ndjson", "wb") as out:
                out.writelines(b"[" + line + b"]\n" for line in lines)
        load = [f"-t{threads}", f"-c{connections}", f"-d{seconds:.0f}s", "--latency"]
        done = subprocess.run(
            [wrk, *load, "-s", str(SCRIPT), base, "--", folder, token],
            capture_output=True,
            text=True,
            check=True,
        )
    if "status " in done.stderr:
        raise SystemExit(f"ingest refused a post under wrk: {done.stderr.splitlines()[0]}")
    rate = float(done.stdout.split("Requests/sec:")[1].split()[0])
    cut = {m[0]: _ms(m[1]) for m in re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", done.stdout, re.M)}
    if set(cut) != {"50", "99"}:
        raise SystemExit(f"could not read wrk's latency distribution:\n{done.stdout}")
    return rate, f"p50 {cut['50']:.1f} ms, p99 {cut['99']:.1f} ms"
