"""This machine's recipe: the compact CQA-Face on celeba-112's training identities, on CPU.

The validation identities include every identity of celeba-photos (the system's test photos),
so they never reach training.
"""

from embedder.config import ModelConfig
from trainer.config import DataConfig, TrainConfig, shared_data

config = TrainConfig(
    name="cpu_celeba_compact",
    model=ModelConfig(stem="mobilefacenet"),
    data=DataConfig(
        root=shared_data("celeba-112"),
        holdout=shared_data("celeba-photos"),
        validation_identities=400,
        preload=True,
    ),
    batch_size=128,
    lr=0.1,
    epochs=20,
    warmup_epochs=1,
    milestones=(12, 16),
    final_lr=1e-4,
    final_epoch=19,
    checkpoint_every=200,
    log_every=20,
    val_every=2000,
    compile=True,
)
