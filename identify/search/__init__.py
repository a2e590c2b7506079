"""From probe to answer: `encode.py` (photo to faces to embeddings, for gallery and probe alike),
`index.py` (the FAISS index of the templates, under `rwlock.py`), `index_store.py` (its file and
the database state it mirrors), `live_index.py` (a process's indexes, kept in step with the
committed templates), `thresholds.py` (the calibrated open-set thresholds) and `searcher.py`
(the one call that identifies or verifies a probe: scores, then the open-set decision). It may
import `identify.settings`, `embedder` and `gallery/` (the tables, the vector format and the
store it reads); never `web/`, `cli/`, `services.py` or `workers`."""
