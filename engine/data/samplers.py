"""The sampler of every loader: a rank's shard, reshuffled per epoch, able to start mid-epoch."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

__all__ = ["ResumableSampler"]


class ResumableSampler(Sampler[int]):
    """Indices of one rank's shard, reshuffled each epoch from ``(seed, epoch)``.

    Args:
        length: dataset length.
        rank, world_size: this process and the number of processes.
        shuffle: shuffle each epoch (training) or keep the order (evaluation).
        seed: base seed of the shuffle, identical on every rank.
        pad: repeat a few indices so every rank gets the same count (training); without padding
            (evaluation) shards differ by at most one and no sample is seen twice.
    """

    def __init__(
        self,
        length: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        seed: int = 0,
        pad: bool = True,
    ) -> None:
        self.length, self.rank, self.world_size = length, rank, world_size
        self.shuffle, self.seed, self.pad = shuffle, seed, pad
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's permutation and skip this rank's first ``start`` indices."""
        self.epoch, self.start = epoch, start

    def shard(self) -> list[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.length, generator=generator).tolist()
        else:
            order = list(range(self.length))
        if self.pad:
            total = math.ceil(self.length / self.world_size) * self.world_size
            order += order[: total - self.length]
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.shard()[self.start :])

    def __len__(self) -> int:
        return len(self.shard()) - self.start
