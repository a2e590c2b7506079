"""Stage 2 on a pretrained stem: the whole network fine-tunes from where stage 1 ended, towards
stage 1's own distillation targets, with the stem's batch-norm statistics left as MS1M set
them."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from embedder import checkpoint as ckpt
from embedder import pretrained
from embedder.config import variant
from embedder.cosface import CosFace
from embedder.model import build_model
from trainer import data, state
from trainer.config import DataConfig, TrainConfig
from trainer.distill import Distillation
from trainer.train import train

ROOT = Path(__file__).resolve().parents[1]
MODELS = Path(os.environ.get("CQAFACE_SHARED_MODELS", ROOT.parent / "shared" / "models"))
Y1 = MODELS / "insightface-mobilefacenet-y1" / "model-0000.params"


@pytest.fixture(scope="module")
def stage1(celeba_identities, tmp_path_factory: pytest.TempPathFactory) -> TrainConfig:
    """A tiny stage-1 run (6 identities x 3 faces, 3 steps), trained once for the module."""
    if not Y1.is_file():
        pytest.skip(f"pretrained y1 weights not found at {Y1} (set CQAFACE_SHARED_MODELS)")
    out = tmp_path_factory.mktemp("stages")
    config = TrainConfig(
        name="one",
        model=variant("cqa_gdc", stem="mobilefacenet_y1"),
        data=DataConfig(
            root=str(celeba_identities(6)),
            validation_identities=0,
            max_per_identity=3,
            maps=str(out / "maps"),
        ),
        init=str(Y1),
        batch_size=6,
        lr=0.1,
        warmup_epochs=0.0,
        schedule="cosine",
        milestones=(),
        final_lr=None,
        final_epoch=None,
        distill_weight=10.0,
        checkpoint_every=3,
        val_every=None,
        max_steps=3,
        output=str(out),
    )
    training, augment, teacher = data.training_inputs(config)
    train(config, training, augment=augment, teacher=teacher)
    return config


def stage2_of(stage1: TrainConfig, **changes: object) -> TrainConfig:
    return replace(
        stage1,
        name="two",
        data=replace(stage1.data, train_on_maps=False, mask=0.75),
        start=str(stage1.run_dir),
        freeze_stem_bn=True,
        lr=0.01,
        max_steps=2,
        checkpoint_every=2,
        **changes,
    )


def _stage1_tensors(stage1: TrainConfig) -> dict[str, dict[str, torch.Tensor]]:
    return state.latest(stage1.run_dir / "checkpoints")


def test_stage_two_starts_from_stage_ones_model_head_and_projection(stage1: TrainConfig) -> None:
    model = build_model(stage1.model)
    head = CosFace(stage1.model.embedding_size, 6)
    distill = Distillation(stage1.model.embedding_size, 128)
    assert state.load_stage(stage1.run_dir, model, head, distill) == 3
    saved = _stage1_tensors(stage1)
    for key, module in (("model", model), ("head", head), ("distill", distill)):
        for name, value in module.state_dict().items():
            assert torch.equal(value, saved[key][name]), f"{key}.{name}"


def test_stage_two_trains_on_crops_towards_stage_ones_targets(stage1: TrainConfig) -> None:
    config = stage2_of(stage1)
    faces, augment, teacher = data.training_inputs(config)
    cache = data.map_cache(stage1, data.training_set(stage1.data))
    assert faces[0][0].shape == (112, 112, 3) and augment.config.p_mask == 0.75
    assert np.array_equal(teacher.vectors, cache.teacher.vectors)


def test_stage_two_trains_the_stem_and_keeps_its_batch_norm_statistics(
    stage1: TrainConfig,
) -> None:
    config = stage2_of(stage1)
    training, augment, teacher = data.training_inputs(config)
    served = ckpt.load(train(config, training, augment=augment, teacher=teacher)).state_dict
    y1 = build_model(stage1.model)
    pretrained.load_into(y1, Y1)
    stem = {n: v for n, v in y1.state_dict().items() if n.startswith("stem.")}
    statistics = [n for n in stem if n.endswith(("running_mean", "running_var"))]
    weights = [n for n in stem if n.endswith("weight")]
    assert statistics and all(torch.equal(served[n], stem[n]) for n in statistics)
    assert all(not torch.equal(served[n], stem[n]) for n in weights if "conv" in n)
    before = _stage1_tensors(stage1)["model"]
    assert not torch.equal(served["bn.running_mean"], before["bn.running_mean"])  # head's own


def test_a_start_without_checkpoints_is_refused_naming_the_folder(
    stage1: TrainConfig, tmp_path: Path
) -> None:
    model = build_model(stage1.model)
    with pytest.raises(ValueError, match=f"^{tmp_path}: no training checkpoint to start from"):
        state.load_stage(tmp_path, model, None, None)


def test_a_start_with_other_people_is_refused_naming_the_tensor(stage1: TrainConfig) -> None:
    head = CosFace(stage1.model.embedding_size, 7)  # stage 1 had 6 identities
    with pytest.raises(ValueError, match=r"head\.weight has shape \(6, 512\) there, \(7, 512\)"):
        state.load_stage(stage1.run_dir, None, head, None)
