"""Training may run through torch.compile (`compile = True`): a compiled training step must
compute the same loss and gradients as eager PyTorch, for the whole network on images and for
stage 1's head on cached stem maps (GDC parts, distillation). Each check runs in its own
process, because a miscompiled kernel can corrupt the heap instead of raising."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Real model, real losses, channels-last as trainer/train.py runs them; dropout off so both
# runs draw nothing at random. Prints the losses and the relative gradient error as JSON.
_STEP = """
import copy, json, sys
import torch
from embedder.config import variant
from embedder.cosface import CosFace
from embedder.model import build_model
from trainer.distill import Distillation
from trainer.train import Trainee

b, on_maps = int(sys.argv[1]), sys.argv[2] == "maps"
torch.manual_seed(0)
if on_maps:
    model = build_model(variant("cqa_gdc", stem="mobilefacenet_y1", branches=b))
    eager = Trainee(model, CosFace(512, 50, 64.0, 0.35), 0.5, Distillation(512, 128), 10.0, True)
    inputs = torch.randn(16, 512, 7, 7)
    targets = torch.nn.functional.normalize(torch.randn(16, 128), dim=1)
    present = torch.ones(16, dtype=torch.bool)
else:
    model = build_model(variant("cqa", branches=b, attention_dropout=0.0))
    eager = Trainee(model, CosFace(512, 50, 64.0, 0.35), 100.0, None, 0.0)
    inputs, targets, present = torch.randn(16, 3, 112, 112), None, None
eager = eager.to(memory_format=torch.channels_last).train()
compiled = copy.deepcopy(eager)
inputs = inputs.contiguous(memory_format=torch.channels_last)
labels = torch.randint(0, 50, (16,))
losses = []
for module in (eager, torch.compile(compiled)):
    loss = module(inputs, labels, targets, present)
    loss[0].backward()
    losses.append([v.item() for v in loss])
grads = [
    torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None])
    for m in (eager, compiled)
]
error = ((grads[0] - grads[1]).norm() / grads[0].norm()).item()
print(json.dumps({"eager": losses[0], "compiled": losses[1], "gradient_error": error}))
"""


@pytest.mark.parametrize(("branches", "inputs"), [(4, "images"), (2, "maps")])
def test_compiled_training_step_matches_eager(branches: int, inputs: str) -> None:
    run = subprocess.run(
        [sys.executable, "-c", _STEP, str(branches), inputs],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.splitlines()[-1])
    assert result["compiled"] == pytest.approx(result["eager"], rel=1e-4)
    assert result["eager"][2] > 0, "CAL must be part of the step"
    if inputs == "maps":
        assert result["eager"][3] > 0, "distillation must be part of the step"
    assert result["gradient_error"] < 1e-2
