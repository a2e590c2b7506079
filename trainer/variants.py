"""What an ablation variant's name means on a config's stem (`cqaface train --variant`,
`cqaface ablate`)."""

from __future__ import annotations

from embedder import pretrained
from embedder.config import ModelConfig, variant
from trainer.config import TrainConfig

# The pretrained network's own embedding, measured untrained: the bar a stage-1 head must beat.
PRETRAINED = "pretrained"


def variant_model(base: TrainConfig, name: str) -> ModelConfig:
    """A variant on the base's stem; on a pretrained stem, `global` (and `pretrained`) is the
    network's own pooled embedding, which the file provides whole."""
    if base.init and name in ("global", PRETRAINED):
        return pretrained.native(base.model.stem)
    if name == PRETRAINED:
        raise ValueError(f"variant {PRETRAINED!r} needs a config with `init`")
    return variant(name, stem=base.model.stem)


def trainable_model(base: TrainConfig, name: str) -> ModelConfig:
    """As variant_model, for `cqaface train`: the untrained network is measured, never trained."""
    if name == PRETRAINED:
        raise ValueError(
            f"variant {PRETRAINED!r} is the pretrained network untrained: there is nothing to "
            f"train; measure it with `cqaface ablate {base.name} --variants {PRETRAINED}`"
        )
    return variant_model(base, name)
