"""Stage 1 on insightface's WebFace600K MobileFaceNet (`w600k_mbf.onnx`): the stem frozen, a
head trained on its cached 512x7x7 maps of celeba-112's training identities.

The head (`cqa_head`): each part is pooled by this network's own head up to its flatten (1x1
conv to 64 + PReLU, 3,136 values that keep where on the face a feature sits), and the embedding
layer starts as the head's linear layer shared evenly by the parts, so that training starts from
what WebFace600K taught the head (embedder/pretrained.py). It has no 7x7 depthwise pooling for
y1's GDC start; GAP parts from random weights (`cqa_shapes`) underfit this budget (CosFace 11.6
at the end against the plain head's 1.7). CAL compares where the maps look, not their level
(docs/cal-diagnosis.md), and QAN is told which parts a synthetic mask hides
(`occlusion_weight`, trainer/occlusion.py). y1's recipe otherwise: CosFace + 0.5 CAL + 100 *
distillation towards the stem's own embedding of the bare face, 3 faces in 4 masked.

Budget: the first 2,000 training identities, 5 faces each, 4 epochs: what two shared CPU
cores trained three seeds of two heads in (the cache builds at 40 faces/s on idle cores,
slower beside other work); y1's rows used 5,900. Rows (a)-(c) of embedder/weights/MODEL_CARD.md:
    cqaface ablate cpu_w600k_stage1 --variants pretrained,global,cqa_head --branches "" \
        --seeds 0,1,2 --output runs
"""

from dataclasses import replace

from embedder.config import variant
from trainer.config import cache_dir, shared_model
from trainer.configs.cpu_y1_stage1 import config as y1

config = replace(
    y1,
    name="cpu_w600k_stage1",
    model=variant("cqa_head", stem="mobilefacenet_w600k"),
    data=replace(y1.data, maps=cache_dir("celeba-112-w600k"), max_identities=2000),
    init=shared_model("insightface-w600k-mbf", "w600k_mbf.onnx"),
    occlusion_weight=1.0,
)
