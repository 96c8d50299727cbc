"""A faust worker that does nothing with its input: what faust's own machinery costs here.

    python -m bench._faust_floor BOOTSTRAP APP_ID TOTAL TOPIC [TOPIC ...]

Same consumer shape as `remsguard processor` (one multi-topic agent, raw bytes,
`concurrency=1`, manual acks, the same stream buffer and commit interval), no table, no
outputs, no engine. It reads the topics from the beginning and prints one line,
`floor <events/s> cpu <seconds>`, timed from its first message to its TOTAL-th (the CPU
seconds this process used over the same span). It keeps faust's default
monitor (the processor's leaner one would save ~5% here), so the floor errs low, if anything.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import faust


def main() -> None:
    bootstrap, app_id, total, *names = sys.argv[1:]
    expected = int(total)
    app = faust.App(
        app_id,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        datadir=f"/tmp/{app_id}-data",  # not the working directory
        web_enabled=False,
        autodiscover=False,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        stream_wait_empty=False,
        stream_buffer_maxsize=16384,
    )
    source = app.topic(*names, key_type=bytes, value_type=bytes, value_serializer="raw")
    seen = {"count": 0, "first": 0.0, "cpu": 0.0}

    @app.agent(source, concurrency=1)
    async def drain(stream: Any) -> None:
        manual = stream.noack()
        async for event in manual.events():
            seen["count"] += 1
            if seen["count"] == 1:
                seen["first"] = time.perf_counter()
                seen["cpu"] = time.process_time()
            await manual.ack(event)
            if seen["count"] == expected:
                rate = (expected - 1) / (time.perf_counter() - seen["first"])
                cpu = time.process_time() - seen["cpu"]
                print(f"floor {rate:.0f} cpu {cpu:.3f}", flush=True)

    worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
