"""What one FHIR resource became: wire events, or the issues that say why not."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from remsguard.fhir.outcome import Issue

__all__ = ["Translated"]


@dataclass(slots=True)
class Translated:
    resource_type: str
    events: list[dict[str, Any]] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    # An amended/corrected resource: an event already judged under its id stays, which the
    # answer reports as a warning rather than an error.
    amendment: bool = False
    # The resource broke the model (FHIR structure) rather than a rule of ours: 400, not 422.
    malformed: bool = False

    @property
    def failed(self) -> bool:
        return any(issue.severity in ("error", "fatal") for issue in self.issues)
