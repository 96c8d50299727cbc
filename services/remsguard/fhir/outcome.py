"""FHIR answers: `OperationOutcome` issues, and the HTTP status a set of issues is.

One `Issue` per problem, each with a severity, an issue-type code (FHIR's `IssueType` value
set: `invalid`, `structure`, `required`, `value`, `business-rule`, `forbidden`, `conflict`,
`duplicate`, `not-supported`, `too-costly`, `transient`, `informational`, ...) and the
element it is about as a FHIRPath `expression` (e.g. `Observation.effectiveDateTime`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

from pydantic import ValidationError

__all__ = [
    "Issue",
    "error",
    "from_validation",
    "information",
    "operation_outcome",
    "warning",
]

Severity = Literal["fatal", "error", "warning", "information"]
_MAX_TEXT: Final = 300


@dataclass(frozen=True, slots=True)
class Issue:
    severity: Severity
    code: str
    diagnostics: str
    expression: str | None = None

    def at(self, prefix: str) -> Issue:
        """The same issue about an element inside `prefix` (e.g. a Bundle entry)."""
        _type, dot, rest = (self.expression or "").partition(".")
        return replace(self, expression=f"{prefix}.{rest}" if dot else prefix)

    def as_json(self) -> dict[str, Any]:
        issue: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code,
            "diagnostics": _clip(self.diagnostics),
        }
        if self.expression:
            issue["expression"] = [self.expression]
        return issue


def error(code: str, diagnostics: str, expression: str | None = None) -> Issue:
    return Issue("error", code, diagnostics, expression)


def warning(code: str, diagnostics: str, expression: str | None = None) -> Issue:
    return Issue("warning", code, diagnostics, expression)


def information(diagnostics: str, expression: str | None = None) -> Issue:
    return Issue("information", "informational", diagnostics, expression)


def operation_outcome(issues: Sequence[Issue]) -> dict[str, Any]:
    """An OperationOutcome; FHIR requires at least one issue, so an empty list says 'ok'."""
    listed = list(issues) or [information("ok")]
    return {"resourceType": "OperationOutcome", "issue": [i.as_json() for i in listed]}


def from_validation(exc: ValidationError, resource_type: str) -> list[Issue]:
    """One error issue per problem the FHIR model library found, naming the element."""
    issues = []
    for problem in exc.errors(include_url=False, include_context=False, include_input=False):
        path = _fhirpath(resource_type, problem["loc"])
        code = "required" if problem["type"] == "missing" else "structure"
        if problem["type"] == "extra_forbidden":
            code, message = "structure", "unknown element"
        else:
            message = problem["msg"]
        issues.append(error(code, message, path))
    return issues[:50] or [error("structure", "invalid resource", resource_type)]


def _fhirpath(resource_type: str, loc: Iterable[int | str]) -> str:
    path = resource_type
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}"
    return path


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"
