"""Losses: CAL and L_D behave as the paper's equations say; CosFace applies its margin."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from embedder.attention_loss import contrastive_attention_loss, diversity_loss
from embedder.cosface import CosFace
from trainer.occlusion import occlusion_loss, visible_share


def _maps(*values: float, size: int = 7) -> torch.Tensor:
    return torch.stack([torch.full((size, size), v) for v in values])[None]


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cal_is_one_minus_margin_for_identical_maps(reduction: str) -> None:
    loss = contrastive_attention_loss(_maps(0.3, 0.3, 0.3, 0.3), margin=0.2, reduction=reduction)
    assert loss.item() == pytest.approx(0.8)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cal_is_zero_for_maps_half_apart_everywhere(reduction: str) -> None:
    assert contrastive_attention_loss(_maps(0.0, 0.5), reduction=reduction).item() == 0.0


def test_cal_mean_stays_active_where_sum_has_already_vanished() -> None:
    # Maps 0.05 apart: per-position mean d = 0.0025 -> exp(-0.25) - 0.2 = 0.579;
    # summed over 49 positions d = 0.1225 -> exp(-12.25) ~ 0 -> clamp to 0.
    maps = _maps(0.5, 0.55)
    assert contrastive_attention_loss(maps).item() == pytest.approx(math.exp(-0.25) - 0.2, rel=1e-4)
    assert contrastive_attention_loss(maps, reduction="sum").item() == 0.0


def test_cal_averages_over_pairs_and_samples() -> None:
    # b=3: pairs (0,1) identical -> 0.8, (0,2) and (1,2) far apart -> 0; mean 0.8/3.
    maps = torch.cat([_maps(0.2, 0.2, 0.9), _maps(0.2, 0.2, 0.9)])
    assert contrastive_attention_loss(maps).item() == pytest.approx(0.8 / 3)


def test_cal_gradient_pushes_similar_maps_apart() -> None:
    maps = _maps(0.5, 0.52).requires_grad_(True)
    contrastive_attention_loss(maps).backward()
    # Descending the gradient lowers map 0 and raises map 1: they move apart.
    assert (maps.grad[0, 0] > 0).all() and (maps.grad[0, 1] < 0).all()


def test_ld_is_the_margin_for_identical_maps_and_zero_when_far_apart() -> None:
    assert diversity_loss(_maps(0.4, 0.4), margin=0.2).item() == pytest.approx(0.2, abs=1e-5)
    assert diversity_loss(_maps(0.0, 0.5), margin=0.2).item() == 0.0


def test_attention_losses_need_two_maps() -> None:
    with pytest.raises(ValueError, match="b >= 2"):
        contrastive_attention_loss(_maps(0.5))


def test_cosface_subtracts_the_margin_from_the_true_class_only() -> None:
    head = CosFace(4, 3, s=10.0, m=0.35)
    emb = torch.randn(5, 4)
    labels = torch.tensor([0, 1, 2, 0, 1])
    plain, margined = head.logits(emb), head.logits(emb, labels)
    diff = plain - margined
    expected = torch.zeros_like(diff)
    expected[torch.arange(5), labels] = 10.0 * 0.35
    assert torch.allclose(diff, expected, atol=1e-5)


def test_cosface_loss_falls_when_embeddings_move_to_their_class_centres() -> None:
    torch.manual_seed(0)
    head = CosFace(8, 4)
    labels = torch.arange(4)
    random_loss = head(torch.randn(4, 8), labels)
    aligned_loss = head(head.weight.detach().clone(), labels)
    assert aligned_loss < random_loss


def test_cal_on_normalised_maps_ignores_a_difference_of_level() -> None:
    """Two flat maps at 0.3 and 0.9 attend to the same places: raw CAL calls them far apart
    (d = 0.36), CAL on maps divided by their mean sees them identical."""
    maps = torch.stack([torch.full((7, 7), 0.3), torch.full((7, 7), 0.9)])[None]
    assert contrastive_attention_loss(maps).item() == 0.0
    same = contrastive_attention_loss(maps, normalise="positions")
    assert same.item() == pytest.approx(1 - 0.2)


def test_cal_refuses_an_unknown_normalisation() -> None:
    with pytest.raises(ValueError, match="normalise must be 'none' or 'positions', not 'softmax'"):
        contrastive_attention_loss(torch.rand(1, 2, 7, 7), normalise="softmax")


def _level_share(maps: torch.Tensor) -> float:
    """The part of sum_ij mean (M_i - M_j)^2 that the maps' mean levels make (the rest is where
    the maps differ in shape)."""
    m = maps.flatten(2)
    pairs = [(i, j) for i in range(m.shape[1]) for j in range(i + 1, m.shape[1])]
    d = sum((m[:, i] - m[:, j]).pow(2).mean(-1).sum() for i, j in pairs)
    level = sum((m[:, i].mean(-1) - m[:, j].mean(-1)).pow(2).sum() for i, j in pairs)
    return float(level / d)


@pytest.mark.parametrize(("normalise", "level_wins"), [("none", True), ("positions", False)])
def test_cal_on_real_faces_falls_and_is_met_by_levels_unless_normalised(
    celeba_aligned_dir, normalise: str, level_wins: bool
) -> None:
    """A fresh LANet on the y1 stem's maps of 16 real crops (the stem docs/cal-diagnosis.md
    traced it on: the fast shipped model's), trained on CAL alone with
    stage 1's optimiser. CAL starts above 0 and falls each step until it is 0. Raw maps meet
    the margin mostly by moving whole maps apart in level (more than half of the pairwise
    distance); maps divided by their mean can only meet it by attending to different places."""
    import numpy as np
    from PIL import Image

    from embedder import checkpoint
    from embedder.inference import preprocess
    from embedder.model import build_model

    shipped = checkpoint.load("embedder/weights/cqaface-y1.pt")
    paths = sorted(celeba_aligned_dir.glob("0000[1-4]/*.webp"))[:16]
    crops = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    torch.manual_seed(0)
    model = build_model(shipped.config)
    model.stem.load_state_dict(shipped.build().stem.state_dict())
    with torch.no_grad():
        features = model.eval().stem.forward_to(torch.from_numpy(preprocess(crops)), model.stage)
    optimiser = torch.optim.SGD(model.lanet.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(30):
        maps, _ = model.lanet(features)
        loss = contrastive_attention_loss(maps, normalise=normalise)
        losses.append(loss.item())
        optimiser.zero_grad()
        (0.5 * loss).backward()
        optimiser.step()
    assert losses[0] > 0.1
    falling = losses[: losses.index(0.0) + 1]
    assert all(a > b for a, b in itertools.pairwise(falling))
    assert losses[-1] == 0.0
    assert (_level_share(maps.detach()) > 0.5) is level_wins


@pytest.mark.parametrize(("normalise", "expected"), [("none", 0.0), ("positions", 0.8)])
def test_training_applies_cal_as_the_model_config_normalises_it(
    normalise: str, expected: float
) -> None:
    from embedder.config import variant
    from embedder.model import build_model
    from trainer.train import Trainee

    model = build_model(variant("cqa", stem="mobilefacenet", cal_normalise=normalise))
    trainee = Trainee(model, CosFace(512, 3), attention_lambda=0.5)
    maps = torch.stack([torch.full((7, 7), 0.3), torch.full((7, 7), 0.9)])[None]
    assert trainee.attention_loss(maps).item() == pytest.approx(expected)


def test_a_part_looking_only_where_the_mask_lies_is_wholly_hidden() -> None:
    maps = torch.zeros(1, 3, 4, 4)
    maps[0, 0, 2:] = 1.0  # the lower half: where the mask lies
    maps[0, 1, :2] = 1.0  # the upper half
    maps[0, 2] = 0.5  # everywhere, evenly
    occlusion = torch.zeros(1, 4, 4)
    occlusion[0, 2:] = 1.0
    assert visible_share(maps, occlusion).tolist() == [[0.0, 1.0, 0.5]]


def test_occlusion_loss_pulls_each_quality_to_its_visible_share() -> None:
    maps = torch.zeros(1, 2, 2, 2)
    maps[0, 0, 1] = 1.0
    maps[0, 1, 0] = 1.0
    occlusion = torch.tensor([[[0.0, 0.0], [1.0, 1.0]]])
    quality = torch.tensor([[0.5, 0.5]], requires_grad=True)
    occlusion_loss(maps, quality, occlusion).backward()
    hidden, seen = quality.grad[0].tolist()
    assert hidden > 0 > seen  # a step down the gradient lowers the hidden part, raises the seen
    exact = occlusion_loss(maps, torch.tensor([[1e-6, 1 - 1e-6]]), occlusion)
    assert exact.item() < 1e-5
