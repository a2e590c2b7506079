"""The gallery: the database as the source of truth. `tables.py` (the SQLAlchemy tables), `db.py`
(engines and sessions) and `migrate.py` (Alembic, with `migrations/`) hold it; `enrolment.py`
(the `Gallery`) enrols and deletes photos and keeps the indexes in step after each commit;
`subject_templates.py` averages a subject's embeddings; `jobs.py` is the bulk enrolment ledger;
`backup.py` and `reembed.py` maintain it. It may import `identify.settings`, `embedder`, and from
`search/` only the encoder and the index with its store, which enrolment writes through; never
`web/`, `cli/`, `services.py` or `workers`."""
