"""How long the `remsguard` command takes to start: `--help` and `replay` of a small file.

python3 -m uv run --frozen python -m bench.cli_startup [--rounds 10] [--lines 25]

Each round runs, one after the other, `python -c pass` (the baseline: the interpreter alone),
`remsguard --help` and `remsguard replay FILE` (FILE: the first --lines events of a seeded
simulated day, written once before the clock starts), each as a fresh process through the
installed console script, output discarded. It prints every round and the best of each; the
targets (issue 16) are `--help` under 0.5 s and the replay under 1 s. Best of N, because on a
shared 2-core machine a single run mostly measures the neighbours.

The processes get the environment as it is. Where it says PYTHONDONTWRITEBYTECODE=1 (as on the
development machines), every import compiles its module from source on every start, which is
most of the cost; `--bytecode` measures a second time with a bytecode cache in a temporary
directory (PYTHONPYCACHEPREFIX, filled by one warm-up run), as an installed wheel or image has.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"--help": 0.5, "replay": 1.0}


def _script() -> str:
    found = Path(sys.executable).parent / "remsguard"
    if not found.exists():
        raise SystemExit(f"no console script at {found}: run through `uv run`")
    return str(found)


def _events(directory: Path, lines: int) -> Path:
    everything = directory / "day.jsonl"
    subprocess.run(
        [
            _script(),
            "simulate",
            "--seed", "7",
            "--clinics", "1",
            "--chairs", "1",
            "--sessions-per-chair", "2",
            "--malformed-rate", "0",
            "--out", str(everything),
            "--manifest", os.devnull,
        ],
        check=True,
    )  # fmt: skip
    small = directory / f"first-{lines}.jsonl"
    kept = everything.read_bytes().splitlines(keepends=True)[:lines]
    if len(kept) < lines:
        raise SystemExit(f"the simulated day has only {len(kept)} events")
    small.write_bytes(b"".join(kept))
    return small


def _seconds(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    return time.perf_counter() - started


def _measure(commands: dict[str, list[str]], rounds: int, env: dict[str, str], title: str) -> None:
    print(f"\n{title}")
    times: dict[str, list[float]] = {name: [] for name in commands}
    for round_no in range(1, rounds + 1):
        for name, command in commands.items():
            times[name].append(_seconds(command, env))
        line = "  ".join(f"{name} {times[name][-1]:.3f}s" for name in commands)
        print(f"round {round_no}: {line}", flush=True)
    load = os.getloadavg()[0]
    print(f"best of {rounds} (load average at the end {load:.2f}):")
    for name, seconds in times.items():
        best = min(seconds)
        target = TARGETS.get(name)
        verdict = (
            ""
            if target is None
            else f"  target < {target} s: " + ("met" if best < target else "NOT met")
        )
        print(f"  {name:<15} best {best:.3f} s  median {sorted(seconds)[len(seconds) // 2]:.3f} s"
              f"{verdict}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--lines", type=int, default=25)
    parser.add_argument("--bytecode", action="store_true", help="also with a bytecode cache")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        small = _events(Path(tmp), args.lines)
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "--help": [_script(), "--help"],
            "replay": [_script(), "replay", str(small)],
        }
        env = dict(os.environ)
        flag = env.get("PYTHONDONTWRITEBYTECODE", "")
        _measure(
            commands, args.rounds, env, f"as the environment is (PYTHONDONTWRITEBYTECODE={flag!r})"
        )
        if args.bytecode:
            cached = {**env, "PYTHONPYCACHEPREFIX": str(Path(tmp) / "pycache")}
            cached.pop("PYTHONDONTWRITEBYTECODE", None)
            for command in commands.values():  # warm-up: fills the cache
                _seconds(command, cached)
            _measure(commands, args.rounds, cached, "with a bytecode cache (PYTHONPYCACHEPREFIX)")


if __name__ == "__main__":
    main()
