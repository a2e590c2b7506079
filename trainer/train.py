"""The training loop: CosFace + lambda * CAL (+ mu * distillation when a teacher is given,
+ nu * QAN's occlusion supervision on cached maps of masked faces), SGD with a per-iteration
schedule, exact resume.

Runs as one process, or as several under `torchrun` (gloo on CPU, NCCL on CUDA) with the
global batch split over them. Each process may run its share as several micro-batches whose
gradients add up before the step; micro-batch j takes rows j::k, so one process with k
micro-batches computes what k processes compute (batch norm included). Logs samples/s, the
loss and its parts, the learning rate and the ETA; checkpoints every N steps; at the end
writes a serving checkpoint for `Embedder`.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from embedder import checkpoint as serving
from embedder import pretrained
from embedder.attention_loss import contrastive_attention_loss, diversity_loss
from embedder.cosface import CosFace
from embedder.inference import preprocess
from embedder.model import CQAFace, build_model
from trainer import distributed, state
from trainer.config import TrainConfig
from trainer.distill import Distillation, Teacher
from trainer.occlusion import occlusion_loss
from trainer.run_log import RunLog
from trainer.sampler import ResumableSampler
from trainer.schedule import Schedule

Augment = Callable[[np.ndarray, np.random.Generator], np.ndarray]
Validator = Callable[[CQAFace], dict[str, Any]]


class TrainingSet(Protocol):
    """What the loop needs of a data source: uint8 112x112x3 RGB crops with integer labels."""

    num_classes: int

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]: ...


class Augmented(torch.utils.data.Dataset):
    """Applies augmentation with a generator seeded by (seed, epoch, index): the same sample
    gets the same augmentation whatever the number of loader workers or a resume."""

    def __init__(self, source: TrainingSet, augment: Augment | None, seed: int) -> None:
        self.source, self.augment, self.seed = source, augment, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int, int]:
        crop, label = self.source[index]
        if self.augment is not None:
            crop = self.augment(crop, np.random.default_rng([self.seed, self.epoch, index]))
        return crop, label, index


def collate(batch: list[tuple[np.ndarray, int, int]]) -> tuple[torch.Tensor, ...]:
    """-> images, labels, the samples' indices (which the teacher's vectors follow) and no
    occlusion (a crop's mask, drawn by augmentation, is not recorded)."""
    crops, labels, indices = zip(*batch, strict=True)
    images = torch.from_numpy(preprocess(np.stack(crops)))
    labels_t = torch.tensor(labels, dtype=torch.long)
    return images, labels_t, torch.tensor(indices, dtype=torch.long), None


def collate_maps(
    batch: list[tuple[tuple[np.ndarray, np.ndarray], int, int]],
) -> tuple[torch.Tensor, ...]:
    """Cached fp16 stem maps with their occlusion -> float32 maps, labels, indices and the
    occluded share of each map cell (N, h, w)."""
    samples, labels, indices = zip(*batch, strict=True)
    maps, occlusion = zip(*samples, strict=True)
    return (
        torch.from_numpy(np.stack(maps)).float(),
        torch.tensor(labels, dtype=torch.long),
        torch.tensor(indices, dtype=torch.long),
        torch.from_numpy(np.stack(occlusion)),
    )


class Trainee(nn.Module):
    """The embedding model, its CosFace head and the optional distillation projection, trained
    (and wrapped by DDP) as one module."""

    def __init__(
        self,
        model: CQAFace,
        head: CosFace,
        attention_lambda: float,
        distill: Distillation | None = None,
        distill_weight: float = 0.0,
        on_maps: bool = False,
        freeze_stem_bn: bool = False,
        occlusion_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.model, self.head, self.distill = model, head, distill
        self.attention_lambda, self.distill_weight = attention_lambda, distill_weight
        self.occlusion_weight = occlusion_weight
        # Stage 1 on a pretrained stem: inputs are its cached maps and the stem stays frozen.
        self.on_maps = on_maps
        model.stem.requires_grad_(not on_maps)
        self.freeze_stem_bn = freeze_stem_bn

    def train(self, mode: bool = True) -> Trainee:
        super().train(mode)
        if self.freeze_stem_bn:
            for module in self.model.stem.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def forward(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        targets: torch.Tensor | None = None,
        present: torch.Tensor | None = None,
        occlusion: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """-> total loss, CosFace, attention term, distillation term, occlusion term."""
        out = self.model.forward_head(images) if self.on_maps else self.model(images)
        cls = self.head(out.embedding, labels)
        aux = self.attention_loss(out.attention.float())
        dist = occ = cls.new_zeros(())
        if self.distill is not None and targets is not None:
            dist = self.distill(out.embedding, targets, present)
        if self.occlusion_weight and occlusion is not None and out.quality.numel():
            occ = occlusion_loss(out.attention, out.quality, occlusion)
        total = cls + self.attention_lambda * aux + self.distill_weight * dist
        return total + self.occlusion_weight * occ, cls, aux, dist, occ

    def attention_loss(self, maps: torch.Tensor) -> torch.Tensor:
        c = self.model.config
        if c.head != "cqa" or c.diversity not in ("cal", "hpda"):
            return maps.new_zeros(())
        if c.diversity == "cal":
            return contrastive_attention_loss(
                maps, c.cal_margin, c.cal_sigma, c.cal_reduction, c.cal_normalise
            )
        return diversity_loss(maps, c.hpda_margin)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(
    config: TrainConfig,
    data: TrainingSet,
    *,
    augment: Augment | None = None,
    validator: Validator | None = None,
    resume: bool = True,
    num_workers: int = 0,
    teacher: Teacher | None = None,
) -> Path:
    """Trains to the end of the schedule (or `max_steps`); returns the serving checkpoint."""
    ctx = distributed.setup()
    try:
        return _Run(config, data, augment, validator, ctx, num_workers, teacher).run(resume)
    finally:
        distributed.teardown()


def _rows(tensor: torch.Tensor | None, j: int, k: int) -> torch.Tensor | None:
    """Rows j, j + k, j + 2k...: what rank j of k processes gets of the same global batch (the
    sampler deals rank r the indices r::world), so micro-batches match processes exactly."""
    return None if tensor is None else tensor[j::k]


def _check_occlusion(config: TrainConfig) -> None:
    """Like CAL, the term applies to the heads that have what it trains (QAN) and is 0 for the
    others, so one config trains every ablation row; without cached maps no cover is known."""
    on_maps = config.data.maps is not None and config.data.train_on_maps
    if config.occlusion_weight and not on_maps:
        raise ValueError(
            f"{config.name}: occlusion_weight needs cached maps (data.maps, train_on_maps): "
            "only the map cache records where each synthetic mask lies"
        )


class _Run:
    def __init__(
        self,
        config: TrainConfig,
        data: TrainingSet,
        augment: Augment | None,
        validator: Validator | None,
        ctx: distributed.Context,
        num_workers: int,
        teacher: Teacher | None,
    ) -> None:
        self.config, self.ctx, self.validator, self.teacher = config, ctx, validator, teacher
        _check_occlusion(config)
        seed_everything(config.seed)
        model = build_model(config.model)
        head = CosFace(
            config.model.embedding_size, data.num_classes, config.cosface_s, config.cosface_m
        )
        distill = None
        if teacher is not None and config.distill_weight > 0:
            distill = Distillation(config.model.embedding_size, teacher.dim)
        if config.start:
            state.load_stage(Path(config.start), model, head, distill)
        elif config.init:
            pretrained.load_into(model, config.init)
        on_maps = config.data.maps is not None and config.data.train_on_maps
        self.trainee = Trainee(
            model,
            head,
            config.attention_lambda,
            distill,
            config.distill_weight,
            on_maps,
            config.freeze_stem_bn,
            config.occlusion_weight,
        ).to(ctx.device, memory_format=torch.channels_last)
        self.wrapped: nn.Module = self.trainee
        self.ddp: DistributedDataParallel | None = None
        if ctx.world > 1:
            self.wrapped = self.ddp = DistributedDataParallel(self.trainee)
        if config.compile:
            self.wrapped = torch.compile(self.wrapped)
        self.optimizer = torch.optim.SGD(
            self.trainee.parameters(),
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
        self.sampler = ResumableSampler(
            len(data),
            batch_size=config.batch_size,
            world=ctx.world,
            rank=ctx.rank,
            seed=config.seed,
            micro_batches=config.micro_batches,
        )
        self.steps_per_epoch = self.sampler.batches_per_epoch()
        if self.steps_per_epoch == 0:
            raise ValueError(f"{len(data)} samples do not fill one batch of {config.batch_size}")
        self.schedule = Schedule(
            config.lr,
            self.steps_per_epoch,
            config.epochs,
            config.warmup_epochs,
            config.schedule,
            config.milestones,
            final_lr=config.final_lr,
            final_epoch=config.final_epoch,
        )
        self.dataset = Augmented(data, augment, config.seed)
        self.loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_size=self.sampler.local_batch,
            sampler=self.sampler,
            collate_fn=collate_maps if on_maps else collate,
            num_workers=num_workers,
            drop_last=True,
            pin_memory=ctx.device.type == "cuda",
        )
        use_amp = config.amp and ctx.device.type == "cuda"
        self.autocast = (
            (lambda: torch.autocast("cuda", dtype=torch.bfloat16))
            if use_amp
            else (contextlib.nullcontext)
        )
        self.step = 0
        self.end_step = min(self.schedule.total_steps, config.max_steps or 1 << 62)
        self.checkpoints = config.run_dir / "checkpoints"
        self.log = RunLog(config.run_dir / "log.jsonl", self.end_step) if ctx.is_main else None

    def run(self, resume: bool) -> Path:
        if resume:
            self._restore()
        if self.log:
            self.log.write(
                {
                    "kind": "start",
                    "step": self.step,
                    "world": self.ctx.world,
                    "config": self.config.to_dict(),
                    "samples": len(self.dataset),
                }
            )
        while self.step < self.end_step:
            epoch, batch = divmod(self.step, self.steps_per_epoch)
            self.sampler.set_position(epoch, batch)
            self.dataset.epoch = epoch
            for images, labels, indices, occlusion in self.loader:
                self._train_step(images, labels, indices, occlusion)
                self._after_step()
                if self.step >= self.end_step:
                    break
        return self._finish()

    def _train_step(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        indices: torch.Tensor,
        occlusion: torch.Tensor | None,
    ) -> None:
        lr = self.schedule.lr(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        images = images.to(self.ctx.device, non_blocking=True)
        labels = labels.to(self.ctx.device, non_blocking=True)
        if occlusion is not None:
            occlusion = occlusion.to(self.ctx.device, non_blocking=True)
        targets = present = None
        if self.trainee.distill is not None:
            targets, present = (t.to(self.ctx.device) for t in self.teacher.batch(indices))
        self.wrapped.train()
        k = self.config.micro_batches
        batch = (images, labels, targets, present, occlusion)
        parts = [self._micro_step([_rows(t, j, k) for t in batch], j, k) for j in range(k)]
        if self.config.grad_clip:
            nn.utils.clip_grad_norm_(self.trainee.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        loss, cls, aux, dist, occ = torch.stack(parts).mean(0).tolist()
        self._last = {"loss": loss, "cosface": cls, "attention": aux, "distill": dist, "lr": lr}
        if self.config.occlusion_weight:
            self._last["occlusion"] = occ

    def _micro_step(self, batch: list[torch.Tensor | None], j: int, k: int) -> torch.Tensor:
        """Forward and backward of micro-batch j of k; gradients are all-reduced after the last
        only. -> the loss and its parts (float64, for an exact mean over micro-batches)."""
        images, labels, targets, present, occlusion = batch
        images = images.contiguous(memory_format=torch.channels_last)
        last = j == k - 1
        sync = self.ddp.no_sync() if self.ddp is not None and not last else contextlib.nullcontext()
        with sync:
            with self.autocast():
                parts = self.wrapped(images, labels, targets, present, occlusion)
            (parts[0] / k).backward()  # bf16 autocast keeps float32's range: no loss scaling
        return torch.stack([p.detach().double() for p in parts])

    def _after_step(self) -> None:
        c = self.config
        if self.step % c.log_every == 0 or self.step == self.end_step:
            values = {k: distributed.mean_across(v, self.ctx) for k, v in self._last.items()}
            if self.log:
                self.log.step(
                    self.step,
                    self.step / self.steps_per_epoch,
                    c.log_every * c.batch_size,
                    **values,
                )
        if self.step % c.checkpoint_every == 0:
            self._save()
        if c.val_every and self.step % c.val_every == 0:
            self._validate()

    def _save(self) -> None:
        if self.ctx.is_main:
            state.save(
                self.checkpoints,
                self.step,
                {
                    "model": self.trainee.model.state_dict(),
                    "head": self.trainee.head.state_dict(),
                    "distill": self.trainee.distill and self.trainee.distill.state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "config": self.config.to_dict(),
                },
                keep=self.config.keep_checkpoints,
            )
        distributed.barrier(self.ctx)

    def _restore(self) -> None:
        saved = state.latest(self.checkpoints)
        if saved is None:
            return
        self.trainee.model.load_state_dict(saved["model"])
        self.trainee.head.load_state_dict(saved["head"])
        if self.trainee.distill is not None:
            self.trainee.distill.load_state_dict(saved["distill"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.step = saved["step"]
        state.restore_rng(saved["rng"])
        if self.log:
            self.log.write({"kind": "resume", "step": self.step})

    def _validate(self) -> dict[str, Any] | None:
        """On the main process only; the others wait for it at the next gradient all-reduce."""
        if not self.ctx.is_main or self.validator is None:
            return None
        with torch.inference_mode():
            result = self.validator(self.trainee.model.eval())
        self.log.write({"kind": "validation", "step": self.step, **result})
        print(f"validation at step {self.step}: {json.dumps(result)}", flush=True)
        return result

    def _finish(self) -> Path:
        self._save()
        result = self._validate()
        path = self.config.run_dir / "model.pt"
        if self.ctx.is_main:
            metadata = {
                "training": {
                    "config": self.config.name,
                    "steps": self.step,
                    "epochs": round(self.step / self.steps_per_epoch, 3),
                    "samples": len(self.dataset),
                    "world": self.ctx.world,
                }
            }
            if result:
                metadata["validation"] = result
            serving.save(serving.from_model(self.trainee.model.eval(), metadata), path)
            self.log.write({"kind": "end", "step": self.step, "model": str(path)})
            self.log.close()
        distributed.barrier(self.ctx)
        return path
