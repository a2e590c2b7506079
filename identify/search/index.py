"""FAISS over templates, ids = subject ids: exact inner product (cosine on unit vectors) up to a
configurable gallery size, approximate above it; a GPU clone when faiss has one; a file on disk
that records which database state it reflects.

Exact (`flat`): IndexIDMap2 over IndexFlatIP, updated in place (remove_ids + add_with_ids).
Approximate, by CQAFACE_INDEX_APPROX: `pq` (default) is a 4-bit product-quantiser fast scan
behind a learned rotation (OPQ; CQAFACE_PQ_BYTES a template) whose best candidates are
re-scored exactly (IndexRefineFlat); `hnsw` is an HNSW graph. Neither can remove vectors, so
both map storage positions to subject ids here and mark replaced or deleted positions dead
(label -1); dead positions are skipped (HNSW through an IDSelector, PQ by zeroing their exact
vectors and filtering) and the index is rebuilt once a fifth of it is dead. Removal is not
implemented on GPU indexes either: the CPU index is the master and the GPU copy is re-cloned
after every write. Which approximate index, and at which settings, is decided by `make
bench-search` (var/bench-search.json).

Every public method takes the RW lock: searches run concurrently (faiss releases the GIL), a
write waits for them and holds new ones back until it is done.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np

from identify.search.rwlock import RWLock
from identify.settings import Settings

Kind = Literal["flat", "hnsw", "pq"]
APPROXIMATE: tuple[Kind, ...] = ("pq", "hnsw")
MAGIC = b"CQAFIDX\x00"
FORMAT_VERSION = 1
_DEAD_FRACTION = 0.2
_DEAD_MARGIN = 32  # PQ: extra results asked for, to make up for dead ones filtered out
_PQ_TRAIN = 16_384  # PQ: templates the rotation and the quantiser are trained on
_OPQ_ITERATIONS = 20  # rotation updates: training is most of a rebuild's time
_OPQ_MIN_PER_DIM = 4  # fewer templates than 4 a dimension: no rotation (OPQ needs more)
_BLAS_QUERIES = 20  # below this many queries, exact search is one BLAS product (see _scan)


class IndexFileError(ValueError):
    """A persisted index that cannot be used: missing, corrupt, another format or stale."""


@contextmanager
def _threads(count: int) -> Iterator[None]:
    """OpenMP threads for faiss calls made by this thread (0: leave as is). The setting is
    per thread, so concurrent searches in other threads keep theirs."""
    if count <= 0:
        yield
        return
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def _gpu_resources() -> Any | None:
    """faiss GPU resources when faiss was built with GPU support and sees a GPU, else None."""
    if not hasattr(faiss, "StandardGpuResources"):
        return None
    try:
        if faiss.get_num_gpus() < 1:
            return None
        return faiss.StandardGpuResources()
    except Exception:  # a broken driver must not take search down: the CPU index still works
        return None


class TemplateIndex:
    """Top-k search over unit template vectors keyed by subject id."""

    def __init__(
        self,
        dim: int = 512,
        *,
        exact_max: int | None = None,
        approximate: Kind | None = None,
        hnsw_m: int | None = None,
        ef_search: int | None = None,
        ef_construction: int = 64,
        shortlist: int | None = None,
        pq_bytes: int | None = None,
        probe_threads: int | None = None,
        gpu: bool | None = None,
    ) -> None:
        """Options left out take the defaults of :class:`Settings` (a process passes its own:
        ``Settings.index_options``)."""
        self.dim = dim
        self.exact_max = Settings.index_exact_max if exact_max is None else exact_max
        self.approximate: Kind = approximate or Settings.index_approximate
        if self.approximate not in APPROXIMATE:
            raise ValueError(f"approximate index must be one of {APPROXIMATE}")
        self.hnsw_m = hnsw_m or Settings.hnsw_m
        self.ef_search = ef_search or Settings.hnsw_ef_search
        self.ef_construction = ef_construction
        self.shortlist = shortlist or Settings.pq_shortlist
        self.pq_bytes = pq_bytes or Settings.pq_bytes
        self.probe_threads = probe_threads or Settings.probe_threads
        self._want_gpu = Settings.use_gpu if gpu is None else gpu
        self._lock = RWLock()
        self._kind: Kind = "flat"
        self._cpu: Any = self._new_flat()
        self._labels = np.empty(0, np.int64)  # approximate: position -> subject id, -1 dead
        self._position: dict[int, int] = {}  # approximate: subject id -> live position
        self._gpu_res: Any | None = None
        self._gpu: Any | None = None

    # ----- construction -------------------------------------------------------------------

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray, **options: Any) -> TemplateIndex:
        """An index holding ``vectors`` under ``ids``, exact or HNSW by their number."""
        index = cls(int(np.asarray(vectors).shape[1]) if len(vectors) else 512, **options)
        with index._lock.write():
            index._rebuild(*index._checked(ids, vectors))
        return index

    def _new_flat(self) -> Any:
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))

    def _rebuild(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) > self.exact_max:
            self._kind = self.approximate
            self._cpu = self._new_hnsw() if self._kind == "hnsw" else self._new_pq(vectors)
            self._cpu.add(vectors)
            self._labels = ids.copy()
            self._position = {int(i): p for p, i in enumerate(ids)}
        else:
            self._kind = "flat"
            self._cpu = self._new_flat()
            self._cpu.add_with_ids(vectors, ids)
            self._labels = np.empty(0, np.int64)
            self._position = {}
        self._refresh_gpu()

    def _new_hnsw(self) -> Any:
        index = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.ef_construction
        return index

    def _new_pq(self, vectors: np.ndarray) -> Any:
        """4-bit PQ fast scan of ``pq_bytes`` bytes a template (two sub-quantisers a byte)
        behind a learned rotation (OPQ), with the exact vectors kept beside it to re-score the
        shortlist. Face templates crowd along a few directions; without the rotation a few
        sub-quantisers carry most of the variance and the shortlist misses the true best
        (recall@1 0.95 against 0.998 at 1M real-like templates, var/bench-search.json)."""
        parts = max(1, min(2 * self.pq_bytes, self.dim))
        while self.dim % parts:
            parts -= 1
        base = faiss.IndexPQFastScan(self.dim, parts, 4, faiss.METRIC_INNER_PRODUCT)
        sample = vectors
        if len(vectors) > _PQ_TRAIN:
            rows = np.random.default_rng(0).choice(len(vectors), _PQ_TRAIN, replace=False)
            sample = vectors[np.sort(rows)]
        if len(sample) < _OPQ_MIN_PER_DIM * self.dim:  # too few to estimate a rotation
            base.train(sample)
            return faiss.IndexRefineFlat(base)
        rotation = faiss.OPQMatrix(self.dim, parts)
        rotation.niter = _OPQ_ITERATIONS
        quantiser = faiss.ProductQuantizer(self.dim, parts, 4)  # train for the 4-bit codes
        rotation.pq = quantiser
        rotated = faiss.IndexPreTransform(rotation, base)
        rotated.train(sample)
        rotation.pq = None  # used by training only; not left pointing at a freed object
        return faiss.IndexRefineFlat(rotated)

    def _refine_storage(self) -> np.ndarray:
        """The PQ index's exact vectors, as a writable zero-copy view."""
        flat = faiss.downcast_index(self._cpu.refine_index)
        n = int(flat.ntotal)
        return faiss.rev_swig_ptr(flat.get_xb(), n * self.dim).reshape(n, self.dim)

    def _checked(self, ids: Any, vectors: Any) -> tuple[np.ndarray, np.ndarray]:
        ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or (len(vectors) and vectors.shape[1] != self.dim):
            raise ValueError(f"expected vectors of shape (N, {self.dim}), got {vectors.shape}")
        vectors = vectors.reshape(-1, self.dim)
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
        if len(np.unique(ids)) != len(ids):
            raise ValueError("duplicate ids in one update")
        if len(ids) and ids.min() < 0:
            raise ValueError("ids must be non-negative (they are subject ids)")
        return ids, vectors

    # ----- GPU ------------------------------------------------------------------------------

    def _refresh_gpu(self) -> None:
        """Clone the CPU master to the GPU (exact index only; HNSW has no GPU version)."""
        self._gpu = None
        if not self._want_gpu or self._kind != "flat":
            return
        if self._gpu_res is None:
            self._gpu_res = _gpu_resources()
        if self._gpu_res is not None:
            self._gpu = faiss.index_cpu_to_gpu(self._gpu_res, 0, self._cpu)

    @property
    def device(self) -> str:
        """Where searches run: `gpu` or `cpu`."""
        return "gpu" if self._gpu is not None else "cpu"

    @property
    def kind(self) -> Kind:
        return self._kind

    def __len__(self) -> int:
        with self._lock.read():
            return self._live_count()

    def _live_count(self) -> int:
        return int(self._cpu.ntotal) if self._kind == "flat" else len(self._position)

    def ids(self) -> np.ndarray:
        """The subject ids held, sorted."""
        with self._lock.read():
            if self._kind != "flat":
                return np.sort(np.fromiter(self._position, np.int64, len(self._position)))
            return np.sort(faiss.vector_to_array(self._cpu.id_map).astype(np.int64))

    # ----- writes ---------------------------------------------------------------------------

    def upsert(self, ids: Any, vectors: Any) -> None:
        """Add or replace the templates of ``ids``."""
        ids, vectors = self._checked(ids, vectors)
        if not len(ids):
            return
        with self._lock.write():
            if self._kind == "flat":
                self._cpu.remove_ids(ids)
                self._cpu.add_with_ids(vectors, ids)
                if self._cpu.ntotal > self.exact_max:
                    self._rebuild(*self._all_vectors())
                    return
            else:
                self._kill(ids)
                start = self._cpu.ntotal
                self._cpu.add(vectors)
                self._labels = np.concatenate([self._labels, ids])
                self._position.update({int(i): start + p for p, i in enumerate(ids)})
                self._compact_if_needed()
            self._refresh_gpu()

    def remove(self, ids: Any) -> None:
        """Drop the templates of ``ids`` (ids not held are ignored)."""
        ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
        if not len(ids):
            return
        with self._lock.write():
            if self._kind == "flat":
                self._cpu.remove_ids(ids)
            else:
                self._kill(ids)
                self._compact_if_needed()
            self._refresh_gpu()

    def _kill(self, ids: np.ndarray) -> None:
        dead = [p for p in (self._position.pop(i, None) for i in ids.tolist()) if p is not None]
        if dead:
            self._labels[dead] = -1
            if self._kind == "pq":  # a zero vector re-scores to 0: never above a live match
                self._refine_storage()[dead] = 0.0

    def _compact_if_needed(self) -> None:
        dead = int(self._cpu.ntotal) - len(self._position)
        if dead > _DEAD_FRACTION * max(int(self._cpu.ntotal), 1):
            self._rebuild(*self._all_vectors())

    def _all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        if self._kind == "flat":
            ids = faiss.vector_to_array(self._cpu.id_map).astype(np.int64)
            return ids, self._cpu.index.reconstruct_n(0, self._cpu.ntotal)
        live = np.flatnonzero(self._labels >= 0)
        if self._kind == "pq":
            return self._labels[live].copy(), self._refine_storage()[live].copy()
        vectors = self._cpu.reconstruct_n(0, self._cpu.ntotal)[live]
        return self._labels[live].copy(), vectors

    # ----- reads ----------------------------------------------------------------------------

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (n, k), best first; missing slots have id -1 and score -inf."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None]
        if queries.shape[1:] != (self.dim,):
            raise ValueError(f"expected queries of shape (N, {self.dim}), got {queries.shape}")
        if k < 1:
            raise ValueError("k must be at least 1")
        with self._lock.read():
            if self._kind == "flat" and self._gpu is None and len(queries) < _BLAS_QUERIES:
                kk = min(k, max(int(self._cpu.ntotal), 1))
                scores, ids = self._scan(queries, kk)
            elif self._kind == "flat":
                index = self._gpu if self._gpu is not None else self._cpu
                kk = min(k, max(int(index.ntotal), 1))
                scores, ids = index.search(queries, kk)
            elif self._kind == "hnsw":
                params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, k))
                if len(self._position) < self._cpu.ntotal:
                    params.sel = faiss.IDSelectorBatch(np.flatnonzero(self._labels >= 0))
                kk = min(k, max(int(self._cpu.ntotal), 1))
                scores, positions = self._cpu.search(queries, kk, params=params)
                ids = np.where(positions >= 0, self._labels[np.maximum(positions, 0)], -1)
            else:
                with _threads(self.probe_threads if len(queries) < _BLAS_QUERIES else 0):
                    scores, ids = self._search_pq(queries, k)
                kk = ids.shape[1]
        scores = np.where(ids >= 0, scores, -np.inf).astype(np.float32)
        if kk < k:  # fewer templates than k: pad so that callers always get (n, k)
            pad = ((0, 0), (0, k - kk))
            scores = np.pad(scores, pad, constant_values=-np.inf)
            ids = np.pad(ids, pad, constant_values=-1)
        return scores, ids.astype(np.int64)

    def _search_pq(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Shortlist by PQ fast scan, re-score exactly, drop dead positions."""
        total = int(self._cpu.ntotal)
        dead = total - len(self._position)
        kk = max(min(k + min(dead, _DEAD_MARGIN), total), 1)
        params = faiss.IndexRefineSearchParameters(k_factor=max(self.shortlist / kk, 1.0))
        scores, positions = self._cpu.search(queries, kk, params=params)
        ids = np.where(positions >= 0, self._labels[np.maximum(positions, 0)], -1)
        if dead:
            order = np.argsort(ids < 0, axis=1, kind="stable")  # live first, ranks kept
            ids = np.take_along_axis(ids, order, axis=1)
            scores = np.take_along_axis(scores, order, axis=1)
        keep = min(k, kk)
        return scores[:, :keep], ids[:, :keep]

    def _scan(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k of a few queries as one BLAS product over the flat index's own storage
        (a zero-copy view). faiss scans for a handful of queries on one thread; BLAS uses
        every core, which is what reaches the memory-bandwidth floor on a single probe."""
        n = int(self._cpu.ntotal)
        if n == 0:
            return np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1)
        flat = faiss.downcast_index(self._cpu.index)
        stored = faiss.rev_swig_ptr(flat.get_xb(), n * self.dim).reshape(n, self.dim)
        id_map = faiss.rev_swig_ptr(self._cpu.id_map.data(), n)
        scores = queries @ stored.T
        if k < n:
            top = np.argpartition(scores, n - k, axis=1)[:, n - k :]
        else:
            top = np.broadcast_to(np.arange(n), scores.shape)
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        return np.take_along_axis(top_scores, order, axis=1), id_map[top].astype(np.int64)

    def vectors(self, ids: Any) -> tuple[np.ndarray, np.ndarray]:
        """(vectors (n, dim), present (n,) bool) of the templates of ``ids``; zeros if absent."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        out = np.zeros((len(ids), self.dim), np.float32)
        present = np.zeros(len(ids), bool)
        with self._lock.read():
            for row, subject in enumerate(ids.tolist()):
                if self._kind == "flat":
                    try:
                        out[row] = self._cpu.reconstruct(subject)
                    except RuntimeError:  # faiss: "key not found"
                        continue
                else:
                    position = self._position.get(subject)
                    if position is None:
                        continue
                    source = self._cpu.refine_index if self._kind == "pq" else self._cpu
                    out[row] = source.reconstruct(position)
                present[row] = True
        return out, present

    # ----- persistence ----------------------------------------------------------------------

    def save(self, path: str | Path, checksum: str) -> Path:
        """Write atomically (temporary file, then rename) with the database ``checksum``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock.read():
            labels = self._labels.astype("<i8").tobytes()
            payload = faiss.serialize_index(self._cpu).tobytes()
            kind = self._kind
        digest = hashlib.sha256(labels)
        digest.update(payload)
        header = json.dumps(
            {
                "format_version": FORMAT_VERSION,
                "checksum": checksum,
                "kind": kind,
                "dim": self.dim,
                "labels_bytes": len(labels),
                "payload_bytes": len(payload),
                "sha256": digest.hexdigest(),
            }
        ).encode()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as out:
            out.write(MAGIC + struct.pack("<I", len(header)) + header)
            out.write(labels)
            out.write(payload)
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(path)
        return path

    @staticmethod
    def read_header(path: str | Path) -> dict[str, Any]:
        """The header of a persisted index (cheap: the vectors are not read)."""
        try:
            with open(path, "rb") as source:
                head = source.read(len(MAGIC) + 4)
                if len(head) < len(MAGIC) + 4 or head[: len(MAGIC)] != MAGIC:
                    raise IndexFileError(f"{path} is not a CQA-Face index file")
                (size,) = struct.unpack("<I", head[len(MAGIC) :])
                header = json.loads(source.read(size))
        except FileNotFoundError:
            raise IndexFileError(f"no index file at {path}") from None
        except (OSError, ValueError, UnicodeDecodeError) as error:
            if isinstance(error, IndexFileError):
                raise
            raise IndexFileError(f"{path} has an unreadable header: {error}") from error
        if not isinstance(header, dict) or header.get("format_version") != FORMAT_VERSION:
            raise IndexFileError(f"{path} has index format {header!r}, not {FORMAT_VERSION}")
        return header

    @classmethod
    def load(cls, path: str | Path, checksum: str | None = None, **options: Any) -> TemplateIndex:
        """The index saved at ``path``; raises :class:`IndexFileError` if it is missing,
        corrupt (its content hash is checked before faiss parses a byte) or, when ``checksum``
        is given, if it reflects another database state."""
        header = cls.read_header(path)
        if checksum is not None and header["checksum"] != checksum:
            raise IndexFileError(f"{path} reflects another database state (stale)")
        with open(path, "rb") as source:
            (size,) = struct.unpack("<I", source.read(len(MAGIC) + 4)[len(MAGIC) :])
            source.seek(len(MAGIC) + 4 + size)
            labels = source.read(header["labels_bytes"])
            payload = source.read(header["payload_bytes"])
        digest = hashlib.sha256(labels)
        digest.update(payload)
        if (
            len(labels) != header["labels_bytes"]
            or len(payload) != header["payload_bytes"]
            or digest.hexdigest() != header["sha256"]
        ):
            raise IndexFileError(f"{path} is corrupt (content hash mismatch)")
        index = cls(int(header["dim"]), **options)
        with index._lock.write():
            index._cpu = faiss.deserialize_index(np.frombuffer(payload, np.uint8))
            index._kind = header["kind"]
            if index._kind != "flat":
                index._labels = np.frombuffer(labels, "<i8").astype(np.int64)
                index._position = {
                    int(i): p for p, i in enumerate(index._labels.tolist()) if i >= 0
                }
            index._refresh_gpu()
        return index
