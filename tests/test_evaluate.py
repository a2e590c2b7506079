"""The evaluation protocols score what they claim: an oracle embedder is perfect, masks are
applied where the protocol says, photos are aligned like serving aligns them."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

from embedder.config import variant
from embedder.inference import Embedder, EmbedderBase
from embedder.model import build_model
from trainer.evaluate import identify, verify_pairs
from trainer.pairs import Pair


class IdentityOracle(EmbedderBase):
    """Embeds a crop by its subject, read from the test's registry of crop bytes: perfect
    recognition, so the protocols' bookkeeping can be checked exactly."""

    config = variant("cqa")

    def __init__(self, subjects: dict[int, str]) -> None:
        super().__init__(flip=False)
        self.subjects = subjects

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        vectors = []
        for face in x:
            key = zlib.crc32(np.ascontiguousarray(face[:, :40]).tobytes())  # above the mask
            subject = self.subjects[key]
            vectors.append(np.random.default_rng(zlib.crc32(subject.encode())).normal(size=512))
        n = len(x)
        return np.array(vectors, np.float32), np.zeros((n, 4, 7, 7)), np.zeros((n, 4))


def _register(oracle: IdentityOracle, path: Path, subject: str) -> None:
    from embedder.inference import preprocess
    from trainer.crops import load_crop

    face = preprocess(load_crop(path))[0]
    oracle.subjects[zlib.crc32(np.ascontiguousarray(face[:, :40]).tobytes())] = subject


@pytest.fixture(scope="module")
def subjects(celeba_aligned_dir: Path) -> dict[str, list[Path]]:
    folders = [d for d in sorted(celeba_aligned_dir.iterdir())[:30] if d.is_dir()]
    return {
        d.name: sorted(d.glob("*.webp"))[:4] for d in folders if len(list(d.glob("*.webp"))) >= 4
    }


def _pairs(subjects: dict[str, list[Path]]) -> list[Pair]:
    names = sorted(subjects)
    pairs = []
    for i, name in enumerate(names):
        other = names[(i + 1) % len(names)]
        pairs.append(Pair(subjects[name][0], subjects[name][1], True, i % 10))
        pairs.append(Pair(subjects[name][2], subjects[other][3], False, i % 10))
    return pairs


@pytest.fixture(scope="module")
def oracle(subjects: dict[str, list[Path]]) -> IdentityOracle:
    oracle = IdentityOracle({})
    for name, paths in subjects.items():
        for path in paths:
            _register(oracle, path, name)
    return oracle


@pytest.mark.parametrize("mask", ["none", "one", "both"])
def test_verification_of_a_perfect_embedder_is_perfect(
    oracle: IdentityOracle, subjects: dict[str, list[Path]], mask: str
) -> None:
    result = verify_pairs(oracle, _pairs(subjects), mask=mask)  # type: ignore[arg-type]
    assert result["accuracy"] == 1.0 and result["auc"] == pytest.approx(1.0)
    assert result["pairs"] == 2 * len(subjects) and result["unusable_pairs"] == 0


def test_identification_of_a_perfect_embedder_ranks_everyone_first(
    oracle: IdentityOracle, subjects: dict[str, list[Path]]
) -> None:
    gallery = [(p, name) for name, paths in subjects.items() for p in paths[:2]]
    probes = [(p, name) for name, paths in subjects.items() for p in paths[2:]]
    result = identify(oracle, gallery, probes, mask_probes=True)
    assert result["rank1"] == 1.0 and result["subjects"] == len(subjects)
    assert result["probes"] == len(probes)


def test_protocols_run_on_raw_photos_through_detection_and_alignment(orl_dir: Path) -> None:
    embedder = Embedder(build_model(variant("cqa")), device="cpu")
    gallery = [(p, s.name) for s in sorted(orl_dir.iterdir())[:5] for p in sorted(s.glob("*"))[:3]]
    probes = [(p, s.name) for s in sorted(orl_dir.iterdir())[:5] for p in sorted(s.glob("*"))[3:5]]
    result = identify(embedder, gallery, probes)
    assert result["unusable"] == {"gallery": 0, "probes": 0}
    assert 0 <= result["rank1"] <= 1 and len(result["cmc"]) == 5


def test_a_photo_without_a_face_counts_as_a_rejected_pair(
    oracle: IdentityOracle, subjects: dict[str, list[Path]], tmp_path: Path
) -> None:
    from PIL import Image

    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(blank)
    pairs = [*_pairs(subjects), Pair(blank, next(iter(subjects.values()))[0], True, 0)]
    result = verify_pairs(oracle, pairs)
    assert result["unusable_pairs"] == 1 and result["accuracy"] < 1.0
