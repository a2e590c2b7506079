"""Stage 1 on insightface's MS1M MobileFaceNet "y1": the stem frozen, the CQA head trained on
its cached maps (trainer/map_cache.py) of celeba-112's training identities.

The head pools each part with a GDC that starts, like the embedding layer and its BN, from
y1's own head (`part_pooling="gdc"`, embedder/pretrained.py): the paper's GAP parts from random
weights underfit this budget (`--variant cqa`; embedder/weights/MODEL_CARD.md has both).

Loss: CosFace + 0.5 CAL + 100 * distillation towards y1's own embedding of the bare face, with
three samples in four synthetic-masked: a masked face learns to land where its bare face lands.
Why 100 and 3/4 (`cqaface ablate --sweep`, one seed each, embedder/weights/MODEL_CARD.md): at
a weight of 10 CosFace on 5,900 CelebA people pulls the head away from y1's geometry and costs
1 point of TAR@FAR 1e-3 on bare faces; 100 halves that; more masks buy masked figures.
The first run builds the cache of the first 5,900 training identities, 5 faces each (about 10
minutes on two idle cores, 50-60 faces/s); each epoch then takes about a minute (600-800
samples/s).
The baseline at equal budget: `cqaface train cpu_y1_stage1 --variant global`.
"""

from embedder.config import variant
from trainer.config import DataConfig, TrainConfig, cache_dir, shared_data, shared_model

config = TrainConfig(
    name="cpu_y1_stage1",
    model=variant("cqa_gdc", stem="mobilefacenet_y1"),
    data=DataConfig(
        root=shared_data("celeba-112"),
        holdout=shared_data("celeba-photos"),
        validation_identities=400,
        preload=True,
        max_per_identity=5,
        max_identities=5900,
        maps=cache_dir("celeba-112-y1"),
        mask_maps=0.75,
    ),
    init=shared_model("insightface-mobilefacenet-y1", "model-0000.params"),
    batch_size=256,
    lr=0.1,
    epochs=4,
    warmup_epochs=0.5,
    schedule="cosine",
    milestones=(),
    final_lr=None,
    final_epoch=None,
    distill_weight=100.0,
    checkpoint_every=200,
    log_every=20,
    val_every=None,
)
