"""Stage 2 on insightface's MS1M MobileFaceNet "y1": the whole network fine-tuned end to end,
starting where stage 1 ended (its model, CosFace head and distillation projection).

The stem now trains too, on the crops, with half of them synthetic-masked afresh each epoch
(stage 1 saw one fixed masked copy per face). Half, not stage 1's three in four: with the
stem training, 3/4 cost 0.49 point of bare-face TAR@FAR 1e-3 against stage 1, 1/2 cost 0.20,
for the same masked gains (one seed each, embedder/weights/MODEL_CARD.md). The loss stays
stage 1's, and so does its target: y1's own embedding of the bare face, read from stage 1's
map cache. The learning rate is low and the stem's batch-norm statistics stay MS1M's
(`freeze_stem_bn`): the from-scratch run of an earlier recipe collapsed there (running
variances of 0.003, strangers at cosine +0.999). Each pass is 32 faces (`micro_batches`), so
that the stem's activations stay small on two cores; the head's batch norm sees 32 at a time.

Each seed starts from stage 1's run of the same seed (embedder/weights/MODEL_CARD.md has the
times):
    cqaface ablate cpu_y1_stage1 --variants cqa_gdc --branches "" --seeds 0,1,2 --output runs
    cqaface ablate cpu_y1_stage2 --variants cqa_gdc --branches "" --seeds 0,1,2 --output runs
"""

from dataclasses import replace
from pathlib import Path

from trainer.configs.cpu_y1_stage1 import config as stage1

config = replace(
    stage1,
    name="cpu_y1_stage2",
    data=replace(stage1.data, train_on_maps=False, mask=0.5, flip=0.5),
    start=str(Path(stage1.output) / "cpu_y1_stage1-cqa_gdc"),
    freeze_stem_bn=True,
    micro_batches=8,
    lr=0.005,
    epochs=1,
    warmup_epochs=0.1,
    checkpoint_every=20,
    log_every=5,
)
