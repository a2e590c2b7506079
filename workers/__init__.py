"""Celery workers for enrolment and re-indexing."""
