"""The y1 model's face quality fit (what `python -m trainer.quality_fit --write-fit` stored in
embedder/weights/cqaface-y1.pt), for tests whose models must score faces."""

from __future__ import annotations

from embedder.quality import QualityFit

Y1_FIT = QualityFit(
    mean=(0.366133, 0.975833, 9.394355, 6.024088, 4.363304),
    std=(0.096823, 0.012135, 2.485592, 0.814775, 1.728843),
    coef=(-1.268222, 0.259255, 0.010665, 0.357677, 0.761855),
    intercept=2.555929,
)
