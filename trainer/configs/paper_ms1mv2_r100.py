"""The paper's MS1MV2 recipe: r100, batch 256, lr 0.03, /10 at 13 and 19, 1e-4 at 23, stop 24."""

from embedder.config import ModelConfig
from trainer.config import DataConfig, TrainConfig, shared_data

config = TrainConfig(
    name="paper_ms1mv2_r100",
    model=ModelConfig(stem="r100"),
    data=DataConfig(root=shared_data("ms1mv2", "train.rec"), preload=False),
    batch_size=256,
    lr=0.03,
    epochs=24,
    warmup_epochs=2,
    milestones=(13, 19),
    final_lr=1e-4,
    final_epoch=23,
    checkpoint_every=2000,
    val_every=None,
)
