"""`WriteBehind`: when the worker may write a partition's state and ack its messages.

Per partition, oldest first: the messages processed since the last seal and the delivery
futures of their outputs; sealed states (the session values of one flush) waiting for those
outputs to be acknowledged; written states waiting for the changelog's acknowledgement. So a
message is acked only once its partition's state is in the changelog, and that state is sent
only once every output sent before it is in Kafka. An output whose delivery failed raises
(`delivered`): the agent crashes and the unacked messages are redone, never skipped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Reversible
from dataclasses import dataclass
from typing import Any

__all__ = ["WriteBehind", "delivered"]

Blobs = list[tuple[bytes, bytes | None]]  # session key -> value; None deletes the key


@dataclass(slots=True)
class _Sealed:
    """A partition's state as of one flush, written once the outputs before it are acked."""

    blobs: Blobs
    sends: dict[Any, None]  # an ordered set of futures
    events: list[Any]


@dataclass(slots=True)
class _Written:
    """A partition's state sent to the changelog; its messages are acked once Kafka has it."""

    sends: list[Any]
    events: list[Any]


def delivered(sends: Reversible[Any]) -> bool:
    """Whether every send is acknowledged; raises if one failed (crash and redo, never skip).
    Checked on every message while a state waits: the last sent, the likeliest to be pending,
    is looked at first."""
    for fut in reversed(sends):
        if not fut.done():
            return False
    failed = [f.exception() for f in sends if f.exception() is not None]
    if failed:
        raise RuntimeError(f"output not delivered: {failed[0]!r}")
    return True


class WriteBehind:
    def __init__(self) -> None:
        self._events: dict[int, list[Any]] = {}
        self._sends: dict[int, dict[Any, None]] = {}  # an ordered set of futures
        self._sealed: dict[int, deque[_Sealed]] = {}
        self._written: dict[int, deque[_Written]] = {}

    def processed(self, partition: int, event: Any, sends: Iterable[Any]) -> None:
        """A message of `partition` processed; `sends`: its outputs' delivery futures (a
        batch's future stands for every message in it, and is kept once)."""
        self._events.setdefault(partition, []).append(event)
        waiting = self._sends.get(partition)
        if waiting is None:
            waiting = self._sends[partition] = {}
        for fut in sends:
            waiting[fut] = None

    def seal(self, partition: int, blobs: Blobs) -> None:
        """The partition's state now, to be written once every output sent before it is
        acknowledged (`settle`, which never blocks the stream)."""
        sends = self._sends.pop(partition, {})
        events = self._events.pop(partition, [])
        self._sealed.setdefault(partition, deque()).append(_Sealed(blobs, sends, events))

    async def settle(
        self,
        partition: int,
        write: Callable[[int, bytes, bytes | None], Awaitable[Any]],
        ack: Callable[[Any], Awaitable[Any]],
    ) -> int:
        """Write the sealed states whose outputs are acknowledged (`write` sends one to the
        changelog), then ack the messages whose state the changelog acknowledged; returns
        how many states were written."""
        written = 0
        sealed = self._sealed.get(partition)
        while sealed and delivered(sealed[0].sends):
            batch = sealed.popleft()
            sent = [await write(partition, key, blob) for key, blob in batch.blobs]
            self._written.setdefault(partition, deque()).append(_Written(sent, batch.events))
            written += 1
        done = self._written.get(partition)
        while done and delivered(done[0].sends):
            for event in done.popleft().events:
                await ack(event)
        return written

    def waiting(self) -> list[int]:
        """Partitions with a state not yet written or not yet acknowledged."""
        stages = (self._sealed, self._written)
        return sorted({p for stage in stages for p, states in stage.items() if states})

    def drop(self, partitions: Iterable[int]) -> None:
        """Partitions given away: their new owner redoes what was not acked."""
        for partition in partitions:
            self._events.pop(partition, None)
            self._sends.pop(partition, None)
            self._sealed.pop(partition, None)
            self._written.pop(partition, None)
