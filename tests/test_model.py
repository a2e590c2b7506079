"""The CQA-Face network: every stem and ablation variant has the shapes the system relies on."""

from __future__ import annotations

import pytest
import torch

from embedder.config import VARIANTS, ModelConfig, variant
from embedder.model import FaceOutput, build_model, parameter_count

STEMS = ["mobilefacenet", "r18", "r34", "r50", "r100"]


def _forward(config: ModelConfig, n: int = 2, train: bool = False) -> FaceOutput:
    torch.manual_seed(0)
    model = build_model(config).train(train)
    with torch.set_grad_enabled(train):
        return model(torch.randn(n, 3, 112, 112))


@pytest.mark.parametrize("stem", STEMS)
def test_every_stem_gives_a_512d_embedding_and_4_maps_on_the_7x7_last_stage(stem: str) -> None:
    out = _forward(variant("cqa", stem=stem))
    assert out.embedding.shape == (2, 512) and out.embedding.dtype == torch.float32
    assert out.attention.shape == (2, 4, 7, 7)
    assert out.quality.shape == (2, 4)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_ablation_variant_runs_and_keeps_the_output_contract(name: str) -> None:
    # Parts pooled by the stem's own head need a head that reduces and flattens (WebFace600K's).
    pooled_by_head = VARIANTS[name].get("part_pooling") == "head"
    stem = "mobilefacenet_w600k" if pooled_by_head else "mobilefacenet"
    out = _forward(variant(name, stem=stem), n=3, train=True)
    b = 0 if name == "global" else 4
    assert out.embedding.shape == (3, 512)
    assert out.attention.shape == (3, b, 7, 7)
    assert out.quality.shape == (3, b)


@pytest.mark.parametrize("branches", [1, 2, 8])
def test_any_number_of_branches(branches: int) -> None:
    out = _forward(variant("cqa" if branches > 1 else "baseline", branches=branches))
    assert out.attention.shape[1] == out.quality.shape[1] == branches


@pytest.mark.parametrize("pooling", ["mean", "gdc"])
def test_attention_maps_can_read_an_earlier_stage(pooling: str) -> None:
    out = _forward(ModelConfig(stem="r18", attention_stage=3, part_pooling=pooling))
    assert out.attention.shape == (2, 4, 14, 14)
    assert out.embedding.shape == (2, 512)


def test_attention_in_unit_range_and_qualities_strictly_inside() -> None:
    out = _forward(variant("cqa"), n=4)
    assert out.attention.min() >= 0 and out.attention.max() <= 1
    assert out.quality.min() > 0 and out.quality.max() < 1


def test_partitioned_maps_share_every_position_out_between_the_parts() -> None:
    out = _forward(variant("cqa", attention_maps="partition"), n=4)
    assert torch.allclose(out.attention.sum(1), torch.ones(4, 7, 7))
    assert out.attention.min() >= 0


def test_an_even_partition_pools_each_part_over_the_whole_map() -> None:
    """b * (1/b) = 1: an even split pools what a part without attention would."""
    torch.manual_seed(0)
    model = build_model(variant("cqa", attention_maps="partition")).eval()
    torch.nn.init.zeros_(model.lanet.score.weight)
    torch.nn.init.zeros_(model.lanet.score.bias)
    x = torch.randn(2, 512, 7, 7)
    maps, parts = model.lanet(x)
    assert torch.allclose(maps, torch.full_like(maps, 0.25))
    assert torch.allclose(parts, x.mean((2, 3)).unsqueeze(1).expand(-1, 4, -1), atol=1e-6)


def test_without_qan_the_parts_are_not_weighted() -> None:
    out = _forward(variant("baseline"))
    assert torch.equal(out.quality, torch.ones_like(out.quality))


def test_gradients_reach_the_attention_branches_and_the_quality_network() -> None:
    torch.manual_seed(0)
    model = build_model(variant("cqa")).train()
    out = model(torch.randn(4, 3, 112, 112))
    (out.embedding.pow(2).sum() + out.attention.mean()).backward()
    for name in (
        "lanet.reduce.weight",
        "lanet.score.weight",
        "qan.theta.body.2.weight",
        "qan.phi.body.0.weight",
        "qan.nu.body.0.weight",
        "stem.stages.0.0.0.weight",
    ):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_compact_stem_fits_a_cpu_budget() -> None:
    stem = build_model(variant("global")).stem
    assert parameter_count(stem) < 1.5e6
    assert parameter_count(build_model(variant("cqa"))) < 2.2e6


def test_r100_has_insightface_layer_structure() -> None:
    model = build_model(variant("global", stem="r100"))
    blocks = [len(stage if i else stage[1]) for i, stage in enumerate(model.stem.stages)]
    blocks[3] = len(model.stem.stages[3][0])
    assert blocks == [3, 13, 30, 3]
    assert model.stem.channels == (64, 128, 256, 512)
    assert 65e6 < parameter_count(model) < 65.3e6


@pytest.mark.parametrize(
    "bad",
    [
        {"stem": "vgg"},
        {"head": "mlp"},
        {"diversity": "magic"},
        {"cal_reduction": "max"},
        {"branches": 1, "diversity": "cal"},
        {"branches": 0},
    ],
)
def test_invalid_configs_are_refused_with_a_clear_error(bad: dict) -> None:
    with pytest.raises(ValueError):
        ModelConfig(**bad)


def test_unknown_config_keys_are_refused_when_loading() -> None:
    with pytest.raises(ValueError, match="unknown model config keys: colour"):
        ModelConfig.from_dict({"colour": "red"})


def test_an_out_of_range_attention_stage_is_refused() -> None:
    with pytest.raises(ValueError, match="stage 5 out of range"):
        build_model(ModelConfig(attention_stage=5))
