"""A distributed sampler whose position can be saved and restored mid-epoch.

Each epoch's order is a permutation drawn from (seed, epoch), the same on every rank; rank r
takes every world-th index of it. Resuming at batch k of an epoch skips the first k batches
of the same permutation, so an interrupted run sees exactly the samples it would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


class ResumableSampler(torch.utils.data.Sampler[int]):
    def __init__(
        self,
        size: int,
        *,
        batch_size: int,
        world: int = 1,
        rank: int = 0,
        seed: int = 0,
        micro_batches: int = 1,
    ):
        if batch_size % world:
            raise ValueError(f"global batch {batch_size} does not split over {world} processes")
        self.size = size
        self.local_batch = batch_size // world
        if micro_batches < 1 or self.local_batch % micro_batches:
            raise ValueError(
                f"local batch {self.local_batch} (global {batch_size} over {world} processes) "
                f"does not split into {micro_batches} micro-batches"
            )
        self.world, self.rank, self.seed = world, rank, seed
        self.epoch = 0
        self.start_batch = 0

    def batches_per_epoch(self) -> int:
        """Full global batches per epoch (the ragged tail is dropped, as usual in face training)."""
        return self.size // (self.local_batch * self.world)

    def set_position(self, epoch: int, batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, batch

    def _order(self) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.size, generator=generator)

    def __iter__(self) -> Iterator[int]:
        usable = self.batches_per_epoch() * self.local_batch * self.world
        mine = self._order()[:usable][self.rank :: self.world]
        yield from mine[self.start_batch * self.local_batch :].tolist()

    def __len__(self) -> int:
        return (self.batches_per_epoch() - self.start_batch) * self.local_batch
