"""The paper's recipe (CosFace + 0.5 CAL, no teacher) with exactly the shipped model's budget
and schedule: what distillation is measured against (same steps, batch, LR, augmentation).
"""

from dataclasses import replace

from trainer.configs.cpu_celeba_distill import config as distilled

config = replace(
    distilled,
    name="cpu_celeba_equal_budget",
    data=replace(distilled.data, teacher=None),
    distill_weight=0.0,
)
