"""Each face carries its quality in [0, 1] (embedder.quality), and a job item may end
`low_quality`: refused by the enrolment gate (CQAFACE_ENROL_MIN_QUALITY). Faces stored before
this revision get NULL (their quality needs the model's outputs on the crop); `cqaface reembed`
with a new model scores every face it embeds. A downgrade reports `low_quality` items as
`failed`, their reason kept.

Revision ID: 0007_face_quality
Revises: 0006_face_detector
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0007_face_quality"
down_revision: str | Sequence[str] | None = "0006_face_detector"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATUSES = (
    "pending",
    "enrolled",
    "duplicate",
    "no_face",
    "several_faces",
    "unreadable",
    "too_large",
    "failed",
)
NEW_STATUSES = (*OLD_STATUSES[:4], "low_quality", *OLD_STATUSES[4:])
CHECK = "ck_job_items_item_status"


def _statuses(values: tuple[str, ...]) -> str:
    return "status IN (" + ", ".join(f"'{v}'" for v in values) + ")"


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("faces") as batch:
        batch.add_column(sa.Column("quality", sa.Float(), nullable=True))
    with op.batch_alter_table("job_items") as batch:
        batch.drop_constraint(op.f(CHECK), type_="check")
        batch.create_check_constraint(op.f(CHECK), _statuses(NEW_STATUSES))


def downgrade() -> None:
    """Downgrade schema."""
    items = sa.table("job_items", sa.column("status", sa.String(32)))
    op.execute(items.update().where(items.c.status == "low_quality").values(status="failed"))
    with op.batch_alter_table("job_items") as batch:
        batch.drop_constraint(op.f(CHECK), type_="check")
        batch.create_check_constraint(op.f(CHECK), _statuses(OLD_STATUSES))
    with op.batch_alter_table("faces") as batch:
        batch.drop_column("quality")
