"""The per-message metric families (`adapters/metrics.py`) expose exactly what
prometheus_client's Counter and Histogram expose for the same updates (its `_created`
samples aside), so dashboards, rules and scrapers cannot tell them apart."""

from __future__ import annotations

import pytest
from prometheus_client import Counter, Histogram, generate_latest

from remsguard.adapters.metrics import PerMessageCounter, PerMessageHistogram, new_registry


def _exposed(registry: object) -> list[str]:
    text = generate_latest(registry).decode()  # type: ignore[arg-type]
    return [line for line in text.splitlines() if "_created" not in line]


def test_the_histogram_exposes_what_prometheus_client_does() -> None:
    ours, theirs = new_registry(), new_registry()
    buckets = (0.0001, 0.001, 0.01, 0.1, 1.0)
    mine = PerMessageHistogram("x_seconds", "How long.", buckets=buckets, registry=ours)
    reference = Histogram("x_seconds", "How long.", buckets=buckets, registry=theirs)
    assert _exposed(ours) == _exposed(theirs)  # nothing observed yet
    # On a bound, just above one, below all, above all, and 0.
    for value in (0.001, 0.0010001, 0.00005, 7.5, 0.0, 0.1, 1.0):
        mine.observe(value)
        reference.observe(value)
    assert _exposed(ours) == _exposed(theirs)
    assert ours.get_sample_value("x_seconds_count") == 7
    assert ours.get_sample_value("x_seconds_bucket", {"le": "0.001"}) == 3


def test_the_counter_exposes_what_prometheus_client_does() -> None:
    ours, theirs = new_registry(), new_registry()
    mine = PerMessageCounter("n_total", "How many.", ["topic", "type"], registry=ours)
    reference = Counter("n_total", "How many.", ["topic", "type"], registry=theirs)
    for labels, amount in ((("a", "x"), 1.0), (("a", "y"), 2.5), (("a", "x"), 1.0)):
        mine.labels(*labels).inc(amount)
        reference.labels(*labels).inc(amount)
    assert _exposed(ours) == _exposed(theirs)
    assert ours.get_sample_value("n_total", {"topic": "a", "type": "x"}) == 2.0
    with pytest.raises(ValueError, match="only goes up"):
        mine.labels("a", "x").inc(-1)
    with pytest.raises(ValueError, match="labels"):
        mine.labels("a")
    assert ours.get_sample_value("n_total", {"topic": "a"}) is None
