"""Writing to the audit log: who did what to which record. Light to import, so that the
command line audits the same changes as the web app without loading the model's code."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from identify.gallery.tables import AuditEntry


def audit(
    session: Session,
    user_id: int | None,
    action: str,
    target_type: str | None = None,
    target_id: Any = None,
    **details: Any,
) -> None:
    """Add an entry to ``session`` (written with the change it records, or not at all)."""
    session.add(
        AuditEntry(
            user_id=user_id,
            action=action,
            target_type=target_type,
            target_id=None if target_id is None else str(target_id),
            details=details,
        )
    )
