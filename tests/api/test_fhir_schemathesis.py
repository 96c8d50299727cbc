"""Schemathesis over the FHIR endpoints of a real `remsguard up` (its runtime and journal in a
temporary data dir): generated resources and Bundles, valid and invalid, with a device token
and without one. Never a 5xx; every answer is FHIR JSON."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    positive_data_acceptance,
)

from integration.embedded_support import Up, start_up

EXAMPLES = 30
# A schema-valid resource is mostly refused on purpose (no encounter, no time): 4xx with an
# OperationOutcome, which is the point; and the loose schema cannot say what FHIR refuses.
EXCLUDED = [positive_data_acceptance, negative_data_rejection]


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    data = tmp_path_factory.mktemp("fhir-schemathesis") / "data"
    process = start_up(data, env={"REMSGUARD_HTTP_DOCS": "true"})
    try:
        yield process
    finally:
        assert process.stop() == 0, process.log


def _operations(up: Up) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{up.base}/openapi.json")
    schema = schema.include(path_regex=r"^/fhir/r4")
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("authenticated", [True, False])
def test_fhir_endpoints_never_answer_5xx(up: Up, mode: GenerationMode, authenticated: bool) -> None:
    operations = _operations(up)
    assert len(operations) >= 7
    headers = up.auth("device") if authenticated else {}
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def run(case: schemathesis.Case) -> None:
            response = case.call_and_validate(
                base_url=up.base, headers=headers, excluded_checks=EXCLUDED
            )
            assert response.status_code < 500, response.text
            (media,) = response.headers["content-type"]  # schemathesis: a list per header
            assert media.startswith("application/fhir+json")

        try:
            run()
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE
            continue
