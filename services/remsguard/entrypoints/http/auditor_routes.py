"""The auditor API's routers (audit log queries and proofs, sessions' timelines and forms, the
compliance summary), served by `remsguard api` and by embedded mode alike."""

from __future__ import annotations

from fastapi import APIRouter

from remsguard.entrypoints.http import audit, form_document, reports, sessions, summary

__all__ = ["AUDITOR_ROUTERS"]

AUDITOR_ROUTERS: list[APIRouter] = [
    audit.router,
    sessions.router,
    form_document.router,
    summary.router,
    reports.router,
]
