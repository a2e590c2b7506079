"""Gallery hygiene: reports computed as resumable jobs and their findings (outlier faces,
likely same-person pairs), the pairs an operator dismissed, and the merges that can be undone.

Revision ID: 0008_hygiene
Revises: 0007_face_quality
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0008_hygiene"
down_revision: str | Sequence[str] | None = "0007_face_quality"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "hygiene_dismissals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subject_a", sa.Integer(), nullable=False),
        sa.Column("subject_b", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name=op.f("fk_hygiene_dismissals_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["subject_a"],
            ["subjects.id"],
            name=op.f("fk_hygiene_dismissals_subject_a_subjects"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["subject_b"],
            ["subjects.id"],
            name=op.f("fk_hygiene_dismissals_subject_b_subjects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hygiene_dismissals")),
        sa.UniqueConstraint("subject_a", "subject_b", name="uq_hygiene_dismissals_pair"),
    )
    with op.batch_alter_table("hygiene_dismissals", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_hygiene_dismissals_subject_b"), ["subject_b"], unique=False
        )

    op.create_table(
        "hygiene_merges",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("target_id", sa.Integer(), nullable=False),
        sa.Column("source_name", sa.String(length=255), nullable=False),
        sa.Column("source_external_id", sa.String(length=255), nullable=True),
        sa.Column("source_details", sa.JSON(), nullable=False),
        sa.Column("source_created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("image_ids", sa.JSON(), nullable=False),
        sa.Column("target_state", sa.String(length=64), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("undone_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("undone_by", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name=op.f("fk_hygiene_merges_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["undone_by"],
            ["users.id"],
            name=op.f("fk_hygiene_merges_undone_by_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hygiene_merges")),
    )
    with op.batch_alter_table("hygiene_merges", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_hygiene_merges_source_id"), ["source_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_hygiene_merges_target_id"), ["target_id"], unique=False
        )

    op.create_table(
        "hygiene_reports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "queued",
                "running",
                "done",
                "failed",
                "cancelled",
                name="hygiene_report_status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("cursor", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name=op.f("fk_hygiene_reports_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hygiene_reports")),
    )
    with op.batch_alter_table("hygiene_reports", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_hygiene_reports_status"), ["status"], unique=False)

    op.create_table(
        "hygiene_findings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("report_id", sa.Integer(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "outlier",
                "same_person",
                name="finding_kind",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("subject_id", sa.Integer(), nullable=False),
        sa.Column("other_subject_id", sa.Integer(), nullable=True),
        sa.Column("face_id", sa.Integer(), nullable=True),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("other_score", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["report_id"],
            ["hygiene_reports.id"],
            name=op.f("fk_hygiene_findings_report_id_hygiene_reports"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hygiene_findings")),
    )
    with op.batch_alter_table("hygiene_findings", schema=None) as batch_op:
        batch_op.create_index(
            "ix_hygiene_findings_report_kind", ["report_id", "kind"], unique=False
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("hygiene_findings", schema=None) as batch_op:
        batch_op.drop_index("ix_hygiene_findings_report_kind")

    op.drop_table("hygiene_findings")
    with op.batch_alter_table("hygiene_reports", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_hygiene_reports_status"))

    op.drop_table("hygiene_reports")
    with op.batch_alter_table("hygiene_merges", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_hygiene_merges_target_id"))
        batch_op.drop_index(batch_op.f("ix_hygiene_merges_source_id"))

    op.drop_table("hygiene_merges")
    with op.batch_alter_table("hygiene_dismissals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_hygiene_dismissals_subject_b"))

    op.drop_table("hygiene_dismissals")
