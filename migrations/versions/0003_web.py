"""The web app: roles admin/operator/analyst (were owner/admin/user), API key scopes, users'
last login.

Revision ID: 0003_web
Revises: 0002_jobs
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003_web"
down_revision: str | Sequence[str] | None = "0002_jobs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEW_ROLES = ("admin", "operator", "analyst")
OLD_ROLES = ("owner", "admin", "user")
# old -> new: owners and admins administer; plain users may only search.
UP = {"owner": "admin", "admin": "admin", "user": "analyst"}
# new -> old: operators and analysts were plain users.
DOWN = {"admin": "admin", "operator": "user", "analyst": "user"}


def _roles(values: tuple[str, ...]) -> str:
    return "role IN (" + ", ".join(f"'{v}'" for v in values) + ")"


def _remap(mapping: dict[str, str]) -> None:
    users = sa.table("users", sa.column("role", sa.String(32)))
    case = sa.case(mapping, value=users.c.role, else_=users.c.role)
    op.execute(users.update().values(role=case))


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_users_user_role"), type_="check")
    _remap(UP)
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.create_check_constraint(op.f("ck_users_user_role"), _roles(NEW_ROLES))
        batch_op.add_column(sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("scopes", sa.String(length=255), nullable=False, server_default="")
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("scopes")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("last_login_at")
        batch_op.drop_constraint(op.f("ck_users_user_role"), type_="check")
    _remap(DOWN)
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.create_check_constraint(op.f("ck_users_user_role"), _roles(OLD_ROLES))
