"""Losses: CAL and L_D behave as the paper's equations say; CosFace applies its margin."""

from __future__ import annotations

import math

import pytest
import torch

from embedder.attention_loss import contrastive_attention_loss, diversity_loss
from embedder.cosface import CosFace


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
