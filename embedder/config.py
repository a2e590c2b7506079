"""Model configuration: one frozen record that a checkpoint carries with its weights.

Every choice the paper leaves open (see shared/design/model.md) is a field here, so that an
ablation is a different config, never a code fork.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, get_args

Stem = Literal[
    "r18",
    "r34",
    "r50",
    "r100",
    "mobilefacenet",
    "mobilefacenet_y1",
    "mobilefacenet_w600k",
]
Head = Literal["cqa", "global"]
Diversity = Literal["cal", "hpda", "dropout", "none"]
PartPooling = Literal["mean", "gdc", "head"]
AttentionMaps = Literal["sigmoid", "partition"]

STEMS: tuple[str, ...] = get_args(Stem)


@dataclass(frozen=True)
class ModelConfig:
    stem: Stem = "mobilefacenet"
    head: Head = "cqa"
    embedding_size: int = 512
    # Local branches (LANet) and where they read the stem: 1-based stage, -1 = last stage.
    branches: int = 4
    attention_stage: int = -1
    reduction: int = 16
    # Quality-aware network over the part features; off = plain concatenation (baseline).
    qan: bool = True
    # What keeps the attention maps apart: CAL (the paper), HPDA's L_D, dropout, or nothing.
    diversity: Diversity = "cal"
    cal_reduction: Literal["mean", "sum"] = "mean"
    cal_margin: float = 0.2
    cal_sigma: float = 0.01
    # CAL on maps divided by their mean over positions: shape, not level (docs/cal-diagnosis.md).
    cal_normalise: Literal["none", "positions"] = "none"
    hpda_margin: float = 0.2
    attention_dropout: float = 0.2
    # How a branch pools its attended map into a part feature: the paper's GAP ("mean"), or a
    # global depthwise conv shared by the branches ("gdc", MobileFaceNet's head: one learnt
    # weight per channel and position, so a part keeps where on the face a feature sits; on a
    # pretrained stem it starts as the pretrained network's own head, embedder/pretrained.py),
    # or the stem's own head up to its flatten ("head", a stem whose head reduces channels by a
    # 1x1 conv and keeps positions, as WebFace600K's MBF: the parts start from that head).
    part_pooling: PartPooling = "mean"
    # How a branch's scores become its map: each on its own through a sigmoid (the paper), or
    # a softmax over the branches at every position ("partition"), so that the parts share the
    # face out between them and cannot all look at the same place; a part then pools its map
    # times b, so that an even split pools the map as it is.
    attention_maps: AttentionMaps = "sigmoid"
    # Global head only: dropout before the flatten-FC, as insightface's IResNet has it.
    head_dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.stem not in STEMS:
            raise ValueError(f"unknown stem {self.stem!r}; choose one of {', '.join(STEMS)}")
        if self.head not in ("cqa", "global"):
            raise ValueError(f"unknown head {self.head!r}; choose 'cqa' or 'global'")
        if self.diversity not in ("cal", "hpda", "dropout", "none"):
            raise ValueError(f"unknown diversity {self.diversity!r}")
        if self.cal_reduction not in ("mean", "sum"):
            raise ValueError(f"cal_reduction must be 'mean' or 'sum', not {self.cal_reduction!r}")
        if self.cal_normalise not in ("none", "positions"):
            raise ValueError(
                f"cal_normalise must be 'none' or 'positions', not {self.cal_normalise!r}"
            )
        if self.part_pooling not in ("mean", "gdc", "head"):
            raise ValueError(
                f"part_pooling must be 'mean', 'gdc' or 'head', not {self.part_pooling!r}"
            )
        if self.attention_maps not in ("sigmoid", "partition"):
            raise ValueError(
                f"attention_maps must be 'sigmoid' or 'partition', not {self.attention_maps!r}"
            )
        if self.head == "cqa" and self.branches < 1:
            raise ValueError("a CQA head needs at least one branch")
        if self.diversity in ("cal", "hpda") and self.head == "cqa" and self.branches < 2:
            raise ValueError(f"{self.diversity} compares branches: it needs branches >= 2")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(sorted(unknown))}")
        return cls(**data)


# The paper's ablation variants (Table 1) and the ArcFace-style reference, by name.
VARIANTS: dict[str, dict[str, Any]] = {
    "baseline": {"head": "cqa", "qan": False, "diversity": "none"},
    "cal": {"head": "cqa", "qan": False, "diversity": "cal"},
    "qan_ld": {"head": "cqa", "qan": True, "diversity": "hpda"},
    "cqa": {"head": "cqa", "qan": True, "diversity": "cal"},
    "cqa_gdc": {"head": "cqa", "qan": True, "diversity": "cal", "part_pooling": "gdc"},
    # CAL on where each map looks, not its level (docs/cal-diagnosis.md).
    "cqa_shapes": {"head": "cqa", "qan": True, "diversity": "cal", "cal_normalise": "positions"},
    "cqa_head": {
        "head": "cqa",
        "qan": True,
        "diversity": "cal",
        "cal_normalise": "positions",
        "part_pooling": "head",
    },
    # The same parts made to share the face out: a part that holds the mouth and nose can lose
    # its quality under a mask while the eyes' part keeps it.
    "cqa_partition": {
        "head": "cqa",
        "qan": True,
        "diversity": "cal",
        "cal_normalise": "positions",
        "part_pooling": "head",
        "attention_maps": "partition",
    },
    "dropout": {"head": "cqa", "qan": True, "diversity": "dropout"},
    "global": {"head": "global", "qan": False, "diversity": "none"},
}


def variant(name: str, **overrides: Any) -> ModelConfig:
    """A named ablation variant, e.g. `variant("cqa", stem="r50", branches=8)`."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; choose one of {', '.join(VARIANTS)}")
    return ModelConfig(**{**VARIANTS[name], **overrides})
