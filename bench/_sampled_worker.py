"""`remsguard processor` with a CPU-time sampler: where a worker's time goes, by function.

    BENCH_SAMPLE=/tmp/worker.samples python -m bench._sampled_worker

Every 2 ms of the process's CPU time (`ITIMER_PROF`: only while it runs; with
BENCH_SAMPLE_CLOCK=real, of wall time, so waiting shows, in `selectors.py:select`) the main
thread's stack is recorded; at exit, `BENCH_SAMPLE` gets one line per stack frame function with its
share of samples as leaf ("self") and anywhere on the stack ("total"), and the CPU seconds.
Far less distortion than cProfile, which charges every Python call.
"""

from __future__ import annotations

import atexit
import os
import resource
import signal
import sys
from collections import Counter
from types import FrameType

INTERVAL = 0.002

own: Counter[str] = Counter()
total: Counter[str] = Counter()
samples = [0]


def _name(frame: FrameType) -> str:
    code = frame.f_code
    path = code.co_filename
    for marker in ("site-packages/", "services/", "python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{code.co_name}"


def _sample(_signum: int, frame: FrameType | None) -> None:
    samples[0] += 1
    if frame is None:
        return
    own[_name(frame)] += 1
    seen = set()
    while frame is not None:
        name = _name(frame)
        if name not in seen:
            seen.add(name)
            total[name] += 1
        frame = frame.f_back


REAL = os.environ.get("BENCH_SAMPLE_CLOCK") == "real"
TIMER, SIGNAL = (
    (signal.ITIMER_REAL, signal.SIGALRM) if REAL else (signal.ITIMER_PROF, signal.SIGPROF)
)


def _dump() -> None:
    signal.setitimer(TIMER, 0)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    n = max(samples[0], 1)
    with open(os.environ["BENCH_SAMPLE"], "w") as out:
        out.write(f"samples {samples[0]} cpu {usage.ru_utime + usage.ru_stime:.1f} s\n")
        out.write("self% total% function\n")
        for name, count in total.most_common(150):
            out.write(f"{100 * own[name] / n:5.1f} {100 * count / n:5.1f} {name}\n")
        out.write("\nby self time\n")
        for name, count in own.most_common(60):
            out.write(f"{100 * count / n:5.1f} {name}\n")


def main() -> None:
    signal.signal(SIGNAL, _sample)
    signal.setitimer(TIMER, INTERVAL, INTERVAL)
    atexit.register(_dump)
    from remsguard.entrypoints.cli import main as cli

    sys.argv = ["remsguard", "processor"]
    cli()


if __name__ == "__main__":
    main()
