"""Stage 1 on a pretrained stem: the stem's maps are cached once, the head trains on them with
the stem frozen, and the served model is the whole network (stem included, no ../shared)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from embedder import checkpoint as ckpt
from embedder import pretrained
from embedder.inference import Embedder, preprocess
from embedder.masks import apply_mask
from embedder.model import build_model
from trainer import data
from trainer.config import load_config
from trainer.frozen_stem import SharedStemEmbedder, StemMaps
from trainer.map_cache import SHARD, MapCache, MapSet, PickVariant
from trainer.train import train

ROOT = Path(__file__).resolve().parents[1]
MODELS = Path(os.environ.get("CQAFACE_SHARED_MODELS", ROOT.parent / "shared" / "models"))
Y1 = MODELS / "insightface-mobilefacenet-y1" / "model-0000.params"


@pytest.fixture(scope="module")
def y1() -> Path:
    if not Y1.is_file():
        pytest.skip(f"pretrained y1 weights not found at {Y1} (set CQAFACE_SHARED_MODELS)")
    return Y1


@pytest.fixture(scope="module")
def run(y1: Path, celeba_identities, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny stage-1 run (12 identities, 6 steps), trained once for the module."""
    faces = celeba_identities(12)
    out = tmp_path_factory.mktemp("stage1")
    config = out / "tiny.py"
    config.write_text(
        "from embedder.config import variant\n"
        "from trainer.config import DataConfig, TrainConfig\n"
        "config = TrainConfig(name='tiny', model=variant('cqa', stem='mobilefacenet_y1'),\n"
        f"    data=DataConfig(root={str(faces)!r}, validation_identities=0, preload=True,\n"
        f"        max_per_identity=3, maps={str(out / 'maps')!r}),\n"
        f"    init={str(y1)!r}, batch_size=8, lr=0.1, warmup_epochs=0.0, epochs=100,\n"
        "    schedule='cosine', milestones=(), final_lr=None, final_epoch=None,\n"
        "    distill_weight=10.0, checkpoint_every=3, log_every=1, val_every=None,\n"
        f"    max_steps=6, output={str(out)!r})\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "identify.cli", "train", str(config)]
    subprocess.run(command, check=True, env=env, capture_output=True, timeout=600)
    return out


def test_the_cache_holds_the_stems_maps_of_each_face_and_its_masked_copy(run: Path) -> None:
    config = load_config(str(run / "tiny.py"))
    faces = data.training_set(config.data)
    cache = data.map_cache(config, faces)  # complete: opens without computing anything
    assert len(cache) == len(faces) == 36 and cache[0].shape == (2, 512, 7, 7)
    network = build_model(pretrained.native("mobilefacenet_y1"))
    pretrained.load_into(network, config.init)
    with torch.inference_mode():
        x = torch.from_numpy(preprocess(faces.crop(5)))
        maps = [network.eval().stem.forward_to(t, 2)[0] for t in (x, x.flip(-1))]
    stored = torch.from_numpy(np.array(cache[5][0])).float()
    # The bare variant is the face or its mirror image (fixed per face), rounded to fp16 (a
    # relative error of at most 2^-11; the batch's size moves float32 sums by far less).
    matches = [torch.allclose(stored, m, rtol=2**-10, atol=1e-4) for m in maps]
    assert sorted(matches) == [False, True]
    masked = torch.from_numpy(np.array(cache[5][1])).float()
    assert not torch.allclose(masked, stored, rtol=2**-10, atol=1e-4)
    assert np.allclose(np.linalg.norm(cache.teacher.vectors, axis=1), 1, atol=1e-6)


def test_the_served_model_keeps_the_pretrained_stem_exactly_and_needs_no_shared_files(
    run: Path, y1: Path
) -> None:
    served = ckpt.load(run / "tiny" / "model.pt")
    reference = build_model(served.config)
    names = pretrained.load_into(reference, y1)
    stem_names = [n for n in names if n.startswith("stem.")]
    assert stem_names
    for name in stem_names:
        assert torch.equal(served.state_dict[name], reference.state_dict()[name]), name
    head = [n for n in served.state_dict if n.startswith(("lanet.", "qan.", "fc."))]
    assert any(not torch.equal(served.state_dict[n], reference.state_dict()[n]) for n in head)
    log = [json.loads(line) for line in (run / "tiny" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]


def test_heads_on_a_shared_stem_embed_exactly_as_the_whole_model(run: Path) -> None:
    served = ckpt.load(run / "tiny" / "model.pt")
    config = load_config(str(run / "tiny.py"))
    crops = np.stack([data.training_set(config.data).crop(i) for i in range(4)])
    plain = Embedder.from_checkpoint(served).embed(crops).vectors
    maps = StemMaps()
    shared = SharedStemEmbedder.from_checkpoint(served, maps=maps)
    first = shared.embed(crops).vectors
    kept = len(maps)
    again = SharedStemEmbedder.from_checkpoint(served, maps=maps).embed(crops).vectors
    np.testing.assert_allclose(first, plain, atol=1e-6)
    assert np.array_equal(first, again) and len(maps) == kept > 0  # the second pass computed none


def test_shared_stem_maps_stop_growing_at_their_limit_and_stay_exact(run: Path) -> None:
    served = ckpt.load(run / "tiny" / "model.pt")
    config = load_config(str(run / "tiny.py"))
    crops = np.stack([data.training_set(config.data).crop(i) for i in range(4)])
    plain = Embedder.from_checkpoint(served).embed(crops).vectors
    maps = StemMaps(limit_bytes=3 * 512 * 7 * 7 * 4)  # three maps
    shared = SharedStemEmbedder.from_checkpoint(served, maps=maps)
    for _ in range(2):
        np.testing.assert_allclose(shared.embed(crops).vectors, plain, atol=1e-6)
        assert (len(maps), maps.used_bytes) == (3, maps.limit_bytes)


def test_a_cache_built_from_another_stem_file_is_refused(run: Path, tmp_path: Path) -> None:
    config = load_config(str(run / "tiny.py"))
    faces = data.training_set(config.data)
    other = tmp_path / "model-0000.params"
    other.write_bytes(Path(config.init).read_bytes() + b"\0")  # same weights, another file
    with pytest.raises(ValueError, match="maps: built from"):
        data.map_cache(config.with_overrides(init=str(other)), faces)


def test_a_run_on_fewer_identities_reads_the_same_shards(run: Path) -> None:
    config = load_config(str(run / "tiny.py"))
    fewer = config.with_overrides(data=replace(config.data, max_identities=5))
    faces = data.training_set(fewer.data)
    cache = data.map_cache(fewer, faces)
    assert isinstance(cache, MapCache) and len(cache) == 15 < SHARD
    whole = data.map_cache(config, data.training_set(config.data))
    assert np.array_equal(np.asarray(cache[14]), np.asarray(whole[14]))


def test_training_the_untrained_pretrained_variant_is_refused_in_one_line(run: Path) -> None:
    command = [sys.executable, "-m", "identify.cli", "train", str(run / "tiny.py")]
    out = subprocess.run(
        [*command, "--variant", "pretrained"], capture_output=True, text=True, timeout=120
    )
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr == (
        "cqaface train: error: variant 'pretrained' is the pretrained network untrained: there "
        "is nothing to train; measure it with `cqaface ablate tiny --variants pretrained`\n"
    )
    assert not (run / "tiny-pretrained").exists()


def test_the_cache_knows_which_cells_of_each_masked_map_the_mask_hides(run: Path) -> None:
    config = load_config(str(run / "tiny.py"))
    faces = data.training_set(config.data)
    cache = data.map_cache(config, faces)
    crop = faces.crop(5)
    rng = np.random.default_rng([config.data.split_seed, 5])  # the cache's draw for face 5
    drawn = apply_mask(crop, rng=rng)
    mirror = rng.random() < 0.5
    image, coverage = drawn.image, drawn.coverage
    if mirror:
        image, coverage = image[:, ::-1].copy(), coverage[:, ::-1]
    network = build_model(pretrained.native("mobilefacenet_y1"))
    pretrained.load_into(network, config.init)
    with torch.inference_mode():
        seen = network.eval().stem.forward_to(torch.from_numpy(preprocess(image)), 2)[0]
    stored = torch.from_numpy(np.array(cache[5][1])).float()
    assert torch.allclose(stored, seen, rtol=2**-10, atol=1e-4)  # the same mask, same side
    cells = coverage.reshape(7, 16, 7, 16).mean((1, 3)).astype(np.float16)
    assert np.array_equal(cache.cover(5), cells.astype(np.float32))
    assert cells[:2].max() == 0 and cells.max() > 0.5  # the eyes' rows are never covered


def test_a_bare_sample_is_unoccluded_and_a_masked_one_carries_its_cover(run: Path) -> None:
    config = load_config(str(run / "tiny.py"))
    faces = data.training_set(config.data)
    sample, _ = MapSet(data.map_cache(config, faces), faces)[3]
    bare, occlusion = PickVariant(0.0)(sample, np.random.default_rng(0))
    assert np.array_equal(bare, sample[0][0]) and not occlusion.any()
    masked, occlusion = PickVariant(1.0)(sample, np.random.default_rng(0))
    assert np.array_equal(masked, sample[0][1]) and np.array_equal(occlusion, sample[1])


def test_qan_supervised_by_the_mask_trains_and_logs_its_term(run: Path) -> None:
    config = load_config(str(run / "tiny.py")).with_overrides(
        name="occluded", occlusion_weight=1.0, max_steps=3
    )
    training, augment, teacher = data.training_inputs(config)
    train(config, training, augment=augment, teacher=teacher)
    log = [json.loads(line) for line in (run / "occluded" / "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if r["kind"] == "train"]
    assert [r["step"] for r in steps] == [1, 2, 3] and all(r["occlusion"] > 0 for r in steps)


def test_mask_supervision_without_cached_maps_is_refused(run: Path) -> None:
    config = load_config(str(run / "tiny.py")).with_overrides(occlusion_weight=1.0)
    training, augment, teacher = data.training_inputs(config)
    crops = config.with_overrides(data=replace(config.data, train_on_maps=False))
    with pytest.raises(ValueError, match="occlusion_weight needs cached maps"):
        train(crops, training, augment=augment, teacher=teacher)
