"""What a worker does around a rebalance besides faust: it holds back faust's resumes of the
agent's source partitions until the rebalance is over (`HeldResumes`, a workaround for a
faust-streaming 0.15.3 race that drops messages), and it says where the consumer stands in
the rebalance log lines (`positions`, `recovery_state`: diagnostics from faust's and
aiokafka's private state, read defensively: a faust upgrade that moves them costs a log
field, never a rebalance).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from faust.types import TP

__all__ = ["HeldResumes", "positions", "recovery_state"]


class HeldResumes:
    """Work around faust-streaming 0.15.3 losing messages at the end of every rebalance.

    `Recovery.on_recovery_completed` (faust/tables/recovery.py) resumes the stream
    partitions, then awaits `consumer.perform_seek()` (a committed-offset lookup per
    partition), then calls `app.flow_control.resume()`, which clears every agent's queue
    (channels are `FlowControlQueue(clear_on_resume=True)`). The consumer's flow is already
    active (recovery resumed it to read the changelogs), so during the seek the fetcher hands
    the resumed partitions' messages to the agent's queue and records them as read
    (`Consumer._read_offset`); the clear drops those the agent had not taken yet, the fetch
    batch goes on being delivered past them (counted as a gap, so committable), and when the
    sought position is fetched again faust drops everything below its read offset as already
    read. The dropped messages are never processed, and their offsets get committed over (a
    one-message hole: faust's head-gap check in `Consumer._new_offset` is off by one), or the
    partition's commits stop at the hole for good (a longer one). faust-streaming issue #596
    (open) describes the race. Seen in the takeover test: the survivor never saw some
    readings (PRE_DOSE_BP_MISSING instead of PRE_DOSE_BP_ELEVATED; commits stuck at the hole
    starts), and a restarted worker skipped offset 2749 of an input (2748, then 2750).

    So while a rebalance is in progress, faust's resumes of the agent's source partitions
    (`sources`: the inputs and the ticks) are held back (`install`, from the assigned
    callback); the timer resumes them once the rebalance is over (`release`), when the seek
    and the queue clearing are done: fetching starts at the committed offsets and nothing
    is dropped. Re-check on any faust upgrade: it relies on faust calling
    `consumer.resume_partitions` while `app.rebalancing` is still true."""

    def __init__(self, app: Any, sources: Iterable[str]) -> None:
        self._app = app
        self._sources = frozenset(sources)
        self._held: set[TP] = set()
        self._wrapped: object = None  # the consumer whose resumes are wrapped

    def install(self) -> None:
        """Wrap the consumer's `resume_partitions` (once per consumer object)."""
        app = self._app
        consumer: Any = app.consumer
        if self._wrapped is consumer:
            return
        resume = consumer.resume_partitions
        sources, held = self._sources, self._held

        def resume_partitions(tps: Iterable[TP]) -> None:
            wanted = set(tps)
            if app.rebalancing:
                keep = {tp for tp in wanted if tp.topic in sources}
                held.update(keep)
                wanted -= keep
            resume(wanted)

        consumer.resume_partitions = resume_partitions
        self._wrapped = consumer

    def release(self) -> None:
        """After a rebalance: resume the held source partitions that are still assigned."""
        if not self._held:
            return
        consumer: Any = self._app.consumer
        assigned = consumer.assignment()
        release = {tp for tp in self._held if tp in assigned}
        self._held.clear()
        if release:
            consumer.resume_partitions(release)


def _named(tps: Iterable[TP]) -> list[str]:
    return sorted(f"{tp.topic}/{tp.partition}" for tp in tps)


def _by_name(offsets: dict[TP, int]) -> dict[str, int]:
    return {f"{tp.topic}/{tp.partition}": offset for tp, offset in offsets.items()}


def positions(app: Any) -> dict[str, Any]:
    """faust's committed and read offsets of the assigned partitions (private state), and
    the consumer generation."""
    try:
        consumer = app.consumer
        return {
            "committed": _by_name(consumer._committed_offset),
            "read": _by_name(consumer._read_offset),
            "generation": app.consumer_generation_id,
            "rebalances": app.rebalancing_count,
        }
    except Exception as exc:  # diagnostics only
        return {"positions_unreadable": repr(exc)[:300]}


def recovery_state(app: Any) -> dict[str, Any]:
    """Where the consumer's fetching and the tables' recovery stand, for a rebalance that
    does not end (once, the changelog partitions taken over delivered nothing for minutes)."""
    try:
        consumer = app.consumer
        inner = consumer._thread._consumer
        assignment = inner._subscription.subscription.assignment
        states = {tp: assignment.state_value(tp) for tp in assignment.tps}
        recovery = app.tables._recovery
        return {
            "positions": {
                f"{tp.topic}/{tp.partition}": st.position if st.has_valid_position else None
                for tp, st in states.items()
            },
            "status": {f"{tp.topic}/{tp.partition}": st._status.name for tp, st in states.items()},
            "awaiting_reset": _named(tp for tp, st in states.items() if st.awaiting_reset),
            "paused_in_client": _named(tp for tp, st in states.items() if st.paused),
            "fetched": _named(inner._fetcher._records),
            "active": _named(consumer._active_partitions or ()),
            "paused": _named(consumer._paused_partitions),
            "flow_active": consumer.flow_active,
            "recovery_active": _named(recovery.active_tps),
            "recovery_offsets": _by_name(recovery.active_offsets),
            "recovery_highwaters": _by_name(recovery.active_highwaters),
            "in_recovery": recovery.in_recovery,
        }
    except Exception as exc:  # diagnostics only
        return {"recovery_unreadable": repr(exc)[:300]}
