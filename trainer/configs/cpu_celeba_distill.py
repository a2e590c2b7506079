"""The shipped model's recipe: the compact CQA-Face on celeba-112's training identities with
the paper's loss (CosFace + 0.5 CAL) plus embedding distillation from dlib's ResNet descriptor.

Two CPU cores see about 1.2 epochs in the time one session allows; CosFace alone barely leaves
chance level in that budget (cpu_celeba_compact_short reached 0.60 verification accuracy), so
a teacher's embeddings, computed once offline by trainer/teacher_dlib.py into
var/teacher/celeba-112-dlib.npz, give every image a target from the first step.
The baseline at equal budget: `cqaface train cpu_celeba_distill --variant baseline`.
"""

from dataclasses import replace

from trainer.config import teacher_file
from trainer.configs.cpu_celeba_compact import config as long_run

config = replace(
    long_run,
    name="cpu_celeba_distill",
    data=replace(long_run.data, teacher=teacher_file("celeba-112-dlib.npz")),
    distill_weight=30.0,
    lr=0.05,
    epochs=1.2,
    warmup_epochs=0.1,
    schedule="cosine",
    milestones=(),
    final_lr=None,
    final_epoch=None,
    checkpoint_every=100,
    val_every=None,
    compile=True,
)
