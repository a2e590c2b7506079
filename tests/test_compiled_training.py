"""The shipped recipe trains through torch.compile: a compiled training step must compute the
same loss and gradients as eager PyTorch for every b the ablation sweeps. Each check runs in
its own process, because a miscompiled kernel can corrupt the heap instead of raising."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Real model, real losses, channels-last as trainer/train.py runs them; dropout off so both
# runs draw nothing at random. Prints the losses and the relative gradient error as JSON.
_STEP = """
import copy, json, sys
from dataclasses import replace
import torch
from embedder.config import variant
from embedder.cosface import CosFace
from embedder.model import build_model
from trainer.train import Trainee

b = int(sys.argv[1])
torch.manual_seed(0)
model = build_model(replace(variant("cqa", branches=b), attention_dropout=0.0))
eager = Trainee(model, CosFace(512, 50, 64.0, 0.35), 100.0, None, 0.0)
eager = eager.to(memory_format=torch.channels_last).train()
compiled = copy.deepcopy(eager)
images = torch.randn(16, 3, 112, 112).contiguous(memory_format=torch.channels_last)
labels = torch.randint(0, 50, (16,))
losses = []
for module in (eager, torch.compile(compiled)):
    loss = module(images, labels, None, None)
    loss[0].backward()
    losses.append([v.item() for v in loss[:3]])
grads = [torch.cat([p.grad.flatten() for p in m.parameters()]) for m in (eager, compiled)]
error = ((grads[0] - grads[1]).norm() / grads[0].norm()).item()
print(json.dumps({"eager": losses[0], "compiled": losses[1], "gradient_error": error}))
"""


@pytest.mark.parametrize("branches", [2, 4])
def test_compiled_training_step_matches_eager(branches: int) -> None:
    run = subprocess.run(
        [sys.executable, "-c", _STEP, str(branches)], capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.splitlines()[-1])
    assert result["compiled"] == pytest.approx(result["eager"], rel=1e-4)
    assert result["eager"][2] > 0, "CAL must be part of the step"
    assert result["gradient_error"] < 1e-2
