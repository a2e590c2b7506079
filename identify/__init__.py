"""The identification system, in the order a photo travels: `search/encode.py` turns a photo into
faces and embeddings; `gallery/` stores them in the database (the source of truth) and averages
them into one template per subject; `search/` indexes the templates and answers a probe with an
open-set decision; `web/` (Flask) and the top-level `workers/` (Celery) serve it, and `cli/`
drives it from the shell. Beside them, `settings.py` reads every CQAFACE_* knob,
`services.py` builds one process's engine, store, live index, enroller and searcher, and
`app.py` (the Flask app factory) puts the services, `web/` and the Celery app together. Lower
folders never import higher ones: nothing here imports `cli/`, `gallery/` never imports
`search/`, and `web/` never imports `workers/`."""
