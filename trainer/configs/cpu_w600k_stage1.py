"""Stage 1 on insightface's WebFace600K MobileFaceNet (`w600k_mbf.onnx`): the stem frozen, a
head trained on its cached 512x7x7 maps of celeba-112's training identities.

The data, split and budget are y1's stage 1 (cpu_y1_stage1), so that its rows compare with
y1's on the same validation people. The head pools parts by GAP (the paper's): this network's
own head has no 7x7 depthwise pooling for GDC parts to start from (embedder/pretrained.py).

Its own embedding, untrained here (row (a) of embedder/weights/MODEL_CARD.md):
    cqaface ablate cpu_w600k_stage1 --variants pretrained --branches "" --output runs
The heads' recipe on this stem (issue 29) has not been trained or tuned yet.
"""

from dataclasses import replace

from embedder.config import variant
from trainer.config import cache_dir, shared_model
from trainer.configs.cpu_y1_stage1 import config as y1

config = replace(
    y1,
    name="cpu_w600k_stage1",
    model=variant("cqa", stem="mobilefacenet_w600k"),
    data=replace(y1.data, maps=cache_dir("celeba-112-w600k")),
    init=shared_model("insightface-w600k-mbf", "w600k_mbf.onnx"),
)
