"""Whole-output comparison of two engines over the same corpora, in order (issue 19).

Each side (a checkout's `services` folder on PYTHONPATH; this checkout by default) replays
every corpus and writes one line per output, in the order produced: every alert, audit
record, withdrawal and rejection as the contract serialises it; every 2,000 lines the
clock, and `next_due` and discharge readiness of a sample of the sessions; at the end (the
clock run a day past the last event) `next_due`, readiness and the state of every session
(as it pickles, sets sorted); then the same corpus through `handlers.replay` (its loop,
decode and clock), every callback in order and its summary. The two streams must be
byte-identical; the first difference is printed.

    git worktree add --detach /tmp/rg-before <commit before the change>
    python -m bench.engine_same_output --base /tmp/rg-before/services [--new DIR/services]
        [--runs 12] [--sessions 10000]

Corpora: `--runs` clinic days from `remsguard simulate` (as `bench.engine_differential`
makes them: varied seeds, violation and reorder rates, every other one perturbed), and the
`bench.engine_scale` workload of `--sessions` sessions at 100 and 4,000 concurrent, once in
order and once with 3% of its lines moved up to 40 lines later (late within and beyond the
lateness).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from bench.engine_differential import _generate
from bench.engine_scale import staggered

_ROOT = Path(__file__).resolve().parent.parent


def harness(file: Path, out_path: Path) -> None:
    """Replay `file` with whichever `remsguard` is importable, writing every output in order."""
    from remsguard.bootstrap import build_engine
    from remsguard.contract.decode import decode_event
    from remsguard.contract.outbound import alert_to_json, audit_record_to_json
    from remsguard.domain.decisions import Decisions, Rejection

    lines = file.read_bytes().splitlines()
    decoded = [decode_event(line) for line in lines]
    times = [e.occurred_at for e in decoded if not isinstance(e, Rejection)]
    latest = max(times, default=None)
    engine = build_engine("spravato-rems", None)
    out = out_path.open("wb")

    def emit(decisions: Decisions) -> None:
        for alert in decisions.alerts:
            out.write(b"A " + alert_to_json(alert) + b"\n")
        for record in decisions.audit:
            out.write(b"R " + audit_record_to_json(record) + b"\n")
        for withdrawal in decisions.withdrawals:
            out.write(b"W " + repr(withdrawal).encode() + b"\n")
        if decisions.rejection is not None:
            out.write(b"X " + repr(decisions.rejection).encode() + b"\n")

    def look(ids: list[str], now: datetime) -> None:
        for session_id in ids:
            due = engine.next_due(session_id)
            ready = engine.readiness(session_id, now)
            out.write(f"S {session_id} {due!r} {ready!r}\n".encode())

    for number, event in enumerate(decoded, start=1):
        if isinstance(event, Rejection):
            emit(engine.reject(event, source=f"line:{number}"))
            continue
        emit(engine.handle(event))
        if engine.clock is None or event.occurred_at > engine.clock:
            emit(engine.advance_to(event.occurred_at))
        if number % 2000 == 0 and engine.clock is not None:
            out.write(f"C {engine.clock.isoformat()}\n".encode())
            look(sorted(engine.sessions)[::97], engine.clock)
    if latest is not None:
        emit(engine.advance_to(latest + timedelta(days=1)))
        every = sorted(engine.sessions)
        look(every, latest + timedelta(days=1))
        for session_id in every:
            state = repr(
                [_canonical(value) for value in engine.sessions[session_id].__getstate__()]
            )
            out.write(f"P {session_id} {hashlib.sha256(state.encode()).hexdigest()}\n".encode())
    _through_replay(lines, latest, out)
    out.close()


def _through_replay(lines: list[bytes], latest: datetime | None, out: BinaryIO) -> None:
    """The same corpus through `handlers.replay` (its own loop, decode and clock), every
    callback written in order, then its summary."""
    from remsguard.bootstrap import build_engine
    from remsguard.contract.outbound import alert_to_json, audit_record_to_json
    from remsguard.domain.decisions import Alert, AuditRecord, Rejection, Withdrawal
    from remsguard.handlers.replay import ReplayEvents, replay

    def on_alert(alert: Alert) -> None:
        out.write(b"rA " + alert_to_json(alert) + b"\n")

    def on_rejected(number: int, rejection: Rejection) -> None:
        out.write(f"rX {number} {rejection!r}\n".encode())

    def on_audit(record: AuditRecord) -> None:
        out.write(b"rR " + audit_record_to_json(record) + b"\n")

    def on_withdrawal(withdrawal: Withdrawal) -> None:
        out.write(f"rW {withdrawal!r}\n".encode())

    until = None if latest is None else latest + timedelta(days=1)
    engine = build_engine("spravato-rems", None)
    command = ReplayEvents(lines, until)
    summary = replay(command, engine, on_alert, on_rejected, on_audit, on_withdrawal)
    out.write(f"rS {summary!r}\n".encode())


def _canonical(value: object) -> object:
    """Sets in sorted order (their iteration order follows the string hash of the process)."""
    return sorted(value, key=repr) if isinstance(value, set | frozenset) else value


def _run(services: Path | None, file: Path, out: Path) -> None:
    env = dict(os.environ, PYTHONHASHSEED="0")
    if services is not None:
        env["PYTHONPATH"] = str(services)
    command = [sys.executable, "-m", "bench.engine_same_output", "--harness", str(file), str(out)]
    subprocess.run(command, env=env, check=True, cwd=_ROOT)


def _late(file: Path, seed: int) -> Path:
    """The same lines with 3% of them moved up to 40 lines later."""
    rng = random.Random(seed)
    lines = file.read_bytes().splitlines()
    for index in range(len(lines) - 1, -1, -1):
        if rng.random() < 0.03:
            line = lines.pop(index)
            lines.insert(min(len(lines), index + rng.randint(1, 40)), line)
    late = file.with_name(file.stem + "-late.jsonl")
    late.write_bytes(b"\n".join(lines) + b"\n")
    return late


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, help="the base checkout's services folder")
    parser.add_argument("--new", type=Path, help="the new checkout's (default: this one)")
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--keep", type=Path, help="keep the corpora and outputs here")
    parser.add_argument("--harness", type=Path, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.harness is not None:
        harness(*args.harness)
        return
    if args.base is None:
        parser.error("--base is required")
    folder = args.keep or Path(tempfile.mkdtemp(prefix="remsguard-same-output-"))
    folder.mkdir(parents=True, exist_ok=True)
    corpora = [_generate(folder, run) for run in range(args.runs)]
    for concurrent in (100, 4_000):
        file = folder / f"scale-{concurrent}.jsonl"
        with file.open("wb") as out:
            out.writelines(staggered(args.sessions, concurrent))
        corpora += [file, _late(file, concurrent)]
    differ = 0
    total_lines = total_outputs = 0
    for file in corpora:
        base, new = folder / f"{file.stem}.base.out", folder / f"{file.stem}.new.out"
        _run(args.base, file, base)
        _run(args.new, file, new)
        left, right = base.read_bytes(), new.read_bytes()
        outputs = left.count(b"\n")
        total_lines += file.read_bytes().count(b"\n")
        total_outputs += outputs
        if left == right:
            digest = hashlib.sha256(left).hexdigest()[:16]
            print(f"{file.name}: identical ({outputs:,} output lines, sha256 {digest})")
            continue
        differ += 1
        pairs = zip(left.splitlines(), right.splitlines(), strict=False)
        for number, (a, b) in enumerate(pairs, start=1):
            if a != b:
                print(f"{file.name}: DIFFERENT at output line {number}:\n  base {a[:300]!r}")
                print(f"  new  {b[:300]!r}")
                break
        else:
            other = right.count(b"\n")
            print(f"{file.name}: DIFFERENT lengths {outputs:,} vs {other:,}")
    print(
        f"{len(corpora)} corpora, {total_lines:,} input lines, {total_outputs:,} output lines "
        f"per side, in {folder}: " + ("all identical" if not differ else f"{differ} differ")
    )
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
