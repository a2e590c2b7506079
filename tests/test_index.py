"""The template index: exact and approximate search keyed by subject id, updates in place,
a file that refuses to be trusted when corrupt or stale, and a GPU path that falls back."""

from __future__ import annotations

import threading
import time

import faiss
import numpy as np
import pytest
from synthetic import near, unit

from identify.search.index import IndexFileError, TemplateIndex
from identify.search.rwlock import RWLock
from identify.settings import Settings

DIM = 64


@pytest.fixture(params=["flat", "hnsw", "pq"])
def kind(request) -> str:
    return request.param


def build(ids, vectors, kind: str, **options) -> TemplateIndex:
    if kind == "flat":
        return TemplateIndex.build(ids, vectors, exact_max=10**9, **options)
    return TemplateIndex.build(ids, vectors, exact_max=0, approximate=kind, **options)


def test_other_photos_of_a_subject_find_it_first_with_its_cosine_score(kind):
    rng = np.random.default_rng(0)
    templates = unit(rng, 500, DIM)
    ids = np.arange(500) * 10 + 3  # subject ids, not positions
    index = build(ids, templates, kind)
    assert index.kind == kind and len(index) == 500
    probes = np.stack([near(t, rng) for t in templates[:50]])
    scores, found = index.search(probes, 5)
    assert (found[:, 0] == ids[:50]).all()
    np.testing.assert_allclose(scores[:, 0], (probes * templates[:50]).sum(1), atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first


def test_a_single_probe_and_a_batch_give_the_same_answer(kind):
    rng = np.random.default_rng(1)
    index = build(np.arange(300), unit(rng, 300, DIM), kind)
    probes = unit(rng, 30, DIM)
    batch_scores, batch_ids = index.search(probes, 3)
    for row, probe in enumerate(probes):
        scores, ids = index.search(probe, 3)
        assert ids[0].tolist() == batch_ids[row].tolist()
        np.testing.assert_allclose(scores[0], batch_scores[row], atol=1e-5)


def test_replacing_and_removing_templates_changes_the_answers(kind):
    rng = np.random.default_rng(2)
    templates = unit(rng, 200, DIM)
    index = build(np.arange(200), templates, kind)
    replacement = unit(rng, dim=DIM)
    index.upsert([7], replacement[None])
    assert index.search(replacement, 1)[1][0, 0] == 7
    assert index.search(templates[7], 1)[1][0, 0] != 7  # the old template is gone
    index.remove([7, 8, 10_000])  # unknown ids are ignored
    assert len(index) == 198
    assert not {7, 8} & set(index.search(templates[[7, 8]], 10)[1].ravel().tolist())
    assert index.vectors([7, 9])[1].tolist() == [False, True]


@pytest.mark.parametrize("approximate", ["hnsw", "pq"])
def test_approximate_index_compacts_after_many_removals(approximate):
    rng = np.random.default_rng(3)
    templates = unit(rng, 100, DIM)
    index = build(np.arange(100), templates, approximate)
    index.remove(np.arange(50))
    assert len(index) == 50 and index._cpu.ntotal == 50  # rebuilt without the dead half
    assert index.search(templates[60], 1)[1][0, 0] == 60


def test_the_index_turns_approximate_when_the_gallery_outgrows_the_exact_limit():
    rng = np.random.default_rng(4)
    index = TemplateIndex(DIM, exact_max=100)
    index.upsert(np.arange(100), unit(rng, 100, DIM))
    assert index.kind == "flat"
    more = unit(rng, 10, DIM)
    index.upsert(np.arange(100, 110), more)
    assert index.kind == "pq" and len(index) == 110  # the default approximate index
    assert index.search(more[3], 1)[1][0, 0] == 103


@pytest.mark.parametrize("code_bytes", [8, 16, 32])
def test_the_pq_code_size_is_the_configured_bytes_a_template(code_bytes):
    settings = Settings.from_env({"CQAFACE_PQ_BYTES": str(code_bytes)})
    rng = np.random.default_rng(5)
    templates = unit(rng, 300, DIM)
    index = build(np.arange(300), templates, "pq", pq_bytes=settings.index_options()["pq_bytes"])
    rotated = faiss.downcast_index(index._cpu.base_index)
    assert faiss.downcast_index(rotated.index).code_size == code_bytes
    assert (index.search(templates[:20], 1)[1][:, 0] == np.arange(20)).all()


def test_fewer_templates_than_k_pad_with_unknown_ids():
    index = TemplateIndex(DIM)
    scores, ids = index.search(np.ones(DIM, np.float32) / 8, 3)
    assert ids.tolist() == [[-1, -1, -1]] and np.isneginf(scores).all()
    index.upsert([5], unit(np.random.default_rng(5), 1, DIM))
    scores, ids = index.search(np.ones(DIM, np.float32) / 8, 3)
    assert ids.tolist() == [[5, -1, -1]]


def test_bad_input_is_refused_with_a_clear_error():
    index = TemplateIndex(DIM)
    rng = np.random.default_rng(6)
    with pytest.raises(ValueError, match="shape"):
        index.upsert([1], unit(rng, 1, DIM + 1))
    with pytest.raises(ValueError, match="ids"):
        index.upsert([1, 2], unit(rng, 1, DIM))
    with pytest.raises(ValueError, match="duplicate"):
        index.upsert([1, 1], unit(rng, 2, DIM))
    with pytest.raises(ValueError, match="non-negative"):
        index.upsert([-4], unit(rng, 1, DIM))
    with pytest.raises(ValueError, match="k"):
        index.search(unit(rng, dim=DIM), 0)
    assert len(index) == 0


def test_a_saved_index_loads_back_identical(kind, tmp_path):
    rng = np.random.default_rng(7)
    templates = unit(rng, 300, DIM)
    index = build(np.arange(300) + 1000, templates, kind)
    index.remove([1000])  # approximate: a dead position must stay dead after loading
    path = index.save(tmp_path / "t.cqaidx", "state-1")
    loaded = TemplateIndex.load(path, "state-1", exact_max=index.exact_max)
    assert loaded.kind == kind and len(loaded) == 299
    probes = unit(rng, 20, DIM)
    assert (loaded.search(probes, 5)[1] == index.search(probes, 5)[1]).all()
    assert 1000 not in loaded.search(templates[0], 5)[1]


def test_a_stale_or_damaged_file_is_refused(tmp_path):
    rng = np.random.default_rng(8)
    path = TemplateIndex.build(np.arange(50), unit(rng, 50, DIM)).save(tmp_path / "t", "s1")
    with pytest.raises(IndexFileError, match="stale"):
        TemplateIndex.load(path, "s2")
    data = path.read_bytes()
    path.write_bytes(data[:-10])  # truncated
    with pytest.raises(IndexFileError, match="corrupt"):
        TemplateIndex.load(path, "s1")
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(flipped))
    with pytest.raises(IndexFileError, match="corrupt"):
        TemplateIndex.load(path, "s1")
    path.write_bytes(b"")
    with pytest.raises(IndexFileError, match="not a CQA-Face index"):
        TemplateIndex.load(path, "s1")
    with pytest.raises(IndexFileError, match="no index file"):
        TemplateIndex.load(tmp_path / "missing", "s1")


def test_saving_never_leaves_a_half_written_file_under_the_real_name(tmp_path):
    rng = np.random.default_rng(9)
    index = TemplateIndex.build(np.arange(20), unit(rng, 20, DIM))
    path = index.save(tmp_path / "t", "s1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]
    assert TemplateIndex.read_header(path)["checksum"] == "s1"


def test_gpu_is_used_when_faiss_sees_one_and_cpu_otherwise():
    rng = np.random.default_rng(10)
    templates = unit(rng, 100, DIM)
    index = TemplateIndex.build(np.arange(100), templates, gpu=True)
    expected = "gpu" if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() else "cpu"
    assert index.device == expected
    index.remove([0])  # removals go through the CPU master, then the copy is re-cloned
    index.upsert([200], templates[:1])
    assert index.search(templates[0], 1)[1][0, 0] == 200
    assert TemplateIndex.build(np.arange(100), templates, gpu=False).device == "cpu"


def test_many_threads_search_while_one_writes(kind):
    rng = np.random.default_rng(11)
    stable = unit(rng, 100, DIM)
    index = build(np.arange(100), stable, kind)
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                found = index.search(stable[:20], 1)[1][:, 0]
                assert found.tolist() == list(range(20))
        except BaseException as error:
            errors.append(error)

    readers = [threading.Thread(target=reader) for _ in range(4)]
    for t in readers:
        t.start()
    try:
        for start in range(1000, 1400, 20):
            index.upsert(np.arange(start, start + 20), unit(rng, 20, DIM))
            index.remove(np.arange(start, start + 10))
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert not errors
    assert len(index) == 100 + 200


def test_a_waiting_writer_holds_back_new_readers():
    lock = RWLock()
    lock._cond = waits = _CountingCondition()
    order: list[str] = []
    first_reader_in = threading.Event()
    release_first = threading.Event()

    def first_reader() -> None:
        with lock.read():
            first_reader_in.set()
            release_first.wait()
            order.append("reader-1 out")

    def writer() -> None:
        with lock.write():
            order.append("writer")

    def late_reader() -> None:
        with lock.read():
            order.append("reader-2")

    # Daemons: a failure must not leave pytest waiting on threads blocked in the lock.
    threads = [threading.Thread(target=first_reader, daemon=True)]
    threads[0].start()
    first_reader_in.wait()
    threads.append(threading.Thread(target=writer, daemon=True))
    threads[1].start()
    _until(lambda: waits.count == 1)  # the writer is now waiting for reader 1
    threads.append(threading.Thread(target=late_reader, daemon=True))
    threads[2].start()
    _until(lambda: waits.count == 2 or order)  # reader 2 waits too, or slipped in
    assert order == []  # reader 2 did not slip in ahead of the waiting writer
    release_first.set()
    for t in threads:
        t.join()
    assert order == ["reader-1 out", "writer", "reader-2"]


class _CountingCondition(threading.Condition):
    """Counts the times a thread went to wait on it: shows who is blocked, without sleeping."""

    def __init__(self) -> None:
        super().__init__(threading.Lock())
        self.count = 0

    def wait(self, timeout: float | None = None) -> bool:
        self.count += 1  # under the condition's lock
        return super().wait(timeout)


def _until(condition, seconds: float = 60) -> None:
    """Polls; the deadline only turns a hang into a failure."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)
