"""Garbage-collector settings for the long-running workers (processor, embedded mode).

A worker holds every session's readings (tuple subclasses, which CPython's collector keeps
tracking), the events waiting for their state write and the futures of their outputs. With
the default thresholds, at 2,000 events/s a full collection ran every ~4 s and walked
~300,000 objects, 70 to 150 ms each and growing with the sessions: the tail of the
publish-to-alert latency. Freezing what start-up built (modules, schemas, faust's services:
~180,000 objects) takes it out of every later collection, and a larger first threshold lets
objects that live about one state-flush period die young instead of being promoted.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000  # CPython's default is 700 allocations


def settle_heap() -> None:
    """Call once start-up is done: collect, freeze what is left, raise the young threshold."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
