"""From probe to answer: `encode.py` (photo to faces to embeddings, for gallery and probe alike),
`index.py` (the FAISS index of the templates, under `rwlock.py`), `index_store.py` (its file and
the database state it mirrors), `thresholds.py` (the calibrated open-set thresholds) and
`searcher.py` (identify and verify: scores, then the open-set decision). It may import
`identify.settings`, `embedder`, and from `gallery/` the tables, the vector format and the
`Gallery` it searches; never `web/`, `cli/`, `services.py` or `workers`."""
