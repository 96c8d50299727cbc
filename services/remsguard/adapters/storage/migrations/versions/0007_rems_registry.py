"""The REMS registry: clinics' certifications and patients' enrollments (issue 14, gap 5).

``rems_certifications``: one row per clinic (certification id, valid from, valid to or
open-ended); ``rems_enrollments``: one row per (clinic, patient_ref) with the enrollment date.
Every change is written with a chained ``rems.certification.recorded`` /
``rems.enrollment.recorded`` record in the same transaction; ``audit verify`` holds the rows
to the latest record of each.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from remsguard.adapters.storage.db import forward_only as downgrade  # noqa: F401

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    op.create_table(
        "rems_certifications",
        sa.Column("clinic_id", sa.String(128), primary_key=True),
        sa.Column("certification_id", sa.String(128), nullable=False),
        sa.Column("valid_from", sa.Date(), nullable=False),
        sa.Column("valid_to", sa.Date(), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_by", sa.String(128), nullable=False),
    )
    op.create_table(
        "rems_enrollments",
        sa.Column("clinic_id", sa.String(128), primary_key=True),
        sa.Column("patient_ref", sa.String(128), primary_key=True),
        sa.Column("enrolled_on", sa.Date(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_by", sa.String(128), nullable=False),
    )
