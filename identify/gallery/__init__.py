"""The gallery: the database as the source of truth. `tables.py` (the SQLAlchemy tables), `db.py`
(engines and sessions) and `migrate.py` (Alembic, with `migrations/`) hold it; `store.py` writes
and reads subjects, photos, faces and templates (with the audit of deletions) and tells its
listeners what each commit changed; `enroller.py` reads, detects, encodes and stores photos with
the encoder it is given; `subject_templates.py` averages a subject's embeddings; `sources.py`
lists a bulk enrolment's photos and `jobs.py` is its ledger; `backup.py` and `reembed.py`
maintain it. It may import `identify.settings` and `embedder`; never `search/` (the index is
derived from the gallery, not the reverse), `web/`, `cli/`, `services.py` or `workers`."""
