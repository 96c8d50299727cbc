"""Workers settle the heap after start-up: what start-up built leaves every later collection."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from remsguard.adapters.heap import YOUNG_THRESHOLD, settle_heap


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_gc")
def test_start_up_objects_are_frozen_and_young_objects_get_room() -> None:
    built_at_start_up = [[i] for i in range(1000)]  # tracked containers
    before = gc.get_freeze_count()
    settle_heap()
    assert gc.get_freeze_count() >= before + len(built_at_start_up)
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD
    oldest = {id(obj) for obj in gc.get_objects(2)}  # frozen objects are in no generation
    assert not any(id(obj) in oldest for obj in built_at_start_up)
