"""Each face records the detector that found and aligned it (`mtcnn`, `scrfd`): the model
embeds the detector's crops, so a change of CQAFACE_DETECTOR shows in the gallery and a
re-embed can follow. Faces stored before this revision were all found by MTCNN, the only
detector there was.

Revision ID: 0006_face_detector
Revises: 0005_blob_storage
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0006_face_detector"
down_revision: str | Sequence[str] | None = "0005_blob_storage"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("faces") as batch:
        batch.add_column(sa.Column("detector", sa.String(length=16), nullable=True))
    op.execute("UPDATE faces SET detector = 'mtcnn'")


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("faces") as batch:
        batch.drop_column("detector")
