"""The paper's VGGFace2 recipe: r100, batch 256, lr 0.03, /10 at epochs 7 and 10, 1e-4 at 12."""

from embedder.config import ModelConfig
from trainer.config import DataConfig, TrainConfig, shared_data

config = TrainConfig(
    name="paper_vggface2_r100",
    model=ModelConfig(stem="r100"),
    data=DataConfig(root=shared_data("vggface2", "train.rec"), preload=False),
    batch_size=256,
    lr=0.03,
    epochs=12,
    warmup_epochs=2,
    milestones=(7, 10),
    final_lr=1e-4,
    final_epoch=12,
    checkpoint_every=2000,
    val_every=None,
)
