"""Enrolment jobs for the workers: a job's kind (folder, zip, files), options and Celery task
id, when it started; per item the attempts made and when it started and finished (rates, ETA).

Revision ID: 0002_jobs
Revises: 0001
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0002_jobs"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("enrolment_jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "kind",
                sa.Enum(
                    "folder",
                    "zip",
                    "files",
                    name="job_kind",
                    native_enum=False,
                    create_constraint=True,
                    length=16,
                ),
                nullable=False,
                server_default="folder",
            )
        )
        batch_op.add_column(sa.Column("options", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("task_id", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("started_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("job_items", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("started_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("job_items", schema=None) as batch_op:
        batch_op.drop_column("finished_at")
        batch_op.drop_column("started_at")
        batch_op.drop_column("attempts")
    with op.batch_alter_table("enrolment_jobs", schema=None) as batch_op:
        batch_op.drop_column("started_at")
        batch_op.drop_column("task_id")
        batch_op.drop_column("options")
        batch_op.drop_constraint(op.f("ck_enrolment_jobs_job_kind"), type_="check")
        batch_op.drop_column("kind")
