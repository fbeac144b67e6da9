"""A deterministic, resumable, rank-sharded sampler.

The order of an epoch is a pure function of ``(seed, epoch)``, and a sampler can start in the
middle of an epoch (``position``), so a training run killed at any step resumes on exactly the
samples it would have seen. Under DDP every rank reads a disjoint, equally long shard.

With ``groups`` (e.g. the livestream of each training clip) an epoch is made of blocks of
``group_block`` consecutive samples of one group: a batch then holds clips of one livestream,
whose products share categories and colours -- the hard negatives of the LPR protocol, where
a query is ranked only within its own livestream's gallery.

With ``with_seeds=True`` the sampler yields ``(index, sample_seed)`` pairs: a dataset uses the
seed for its own randomness (frame sampling, augmentation), which then no longer depends on the
DataLoader's worker processes and is reproduced exactly after a resume.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = ["ResumableSampler", "sample_seed"]

_SEED_MIX = 0x9E3779B97F4A7C15


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one sample of one epoch, independent of rank, worker and batch size."""
    ss = np.random.SeedSequence([seed & 0xFFFFFFFF, epoch & 0xFFFFFFFF, index & 0xFFFFFFFF, _SEED_MIX & 0xFFFF])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


class ResumableSampler:
    """Yields the dataset indices of one rank for the current epoch, from ``position`` on.

    Args:
        num_samples: size of the dataset.
        seed: base seed; the permutation of epoch ``e`` is drawn from ``(seed, e)``.
        shuffle: shuffle per epoch (training) or keep the dataset order (evaluation).
        rank: this process's rank.
        world_size: number of ranks; each gets ``ceil(num_samples / world_size)`` indices
            (the epoch is padded by repeating its first indices, like ``DistributedSampler``),
            or ``floor`` when ``drop_last``.
        drop_last: drop the tail that does not divide evenly across ranks.
        with_seeds: yield ``(index, sample_seed)`` instead of ``index``.
        groups: a group label per sample; with ``group_block`` the epoch is a shuffle of
            single-group blocks (see the module docstring).
        group_block: samples per single-group block: batch size x world size, so that each
            rank's batch comes from one group (a group's last, shorter block is merged with
            other groups' so that no sample is dropped; the one short block comes last).
    """

    def __init__(
        self,
        num_samples: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        with_seeds: bool = False,
        groups: Any = None,
        group_block: int = 0,
    ) -> None:
        if num_samples <= 0:
            raise ValueError(f"ResumableSampler needs a non-empty dataset, got num_samples={num_samples}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.with_seeds = with_seeds
        self.groups = None
        self.group_block = int(group_block)
        if groups is not None:
            groups = np.asarray(groups)
            if len(groups) != num_samples:
                raise ValueError(f"groups has {len(groups)} labels for {num_samples} samples")
            if self.group_block <= 0:
                raise ValueError(f"group_block must be > 0 with groups, got {group_block}")
            self.groups = np.unique(groups, return_inverse=True)[1]
        if drop_last:
            self.per_rank = num_samples // world_size
            if self.per_rank == 0:
                raise ValueError(f"{num_samples} samples cannot be split across {world_size} ranks with drop_last")
        else:
            self.per_rank = math.ceil(num_samples / world_size)
        self.epoch = 0
        self.position = 0

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """All indices of this rank for ``epoch``, in order (shape ``[per_rank]``)."""
        if self.shuffle and self.groups is not None:
            order = self._grouped_order(np.random.default_rng([self.seed, epoch]))
        elif self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.num_samples)
        else:
            order = np.arange(self.num_samples)
        total = self.per_rank * self.world_size
        if total > len(order):
            order = np.concatenate([order, np.resize(order, total - len(order))])
        return order[:total][self.rank :: self.world_size]

    def _grouped_order(self, rng: np.random.Generator) -> np.ndarray:
        """A permutation made of shuffled single-group blocks of ``group_block`` samples; the
        short remainders of all groups are pooled, shuffled and cut into blocks too."""
        blocks: list[np.ndarray] = []
        leftovers: list[np.ndarray] = []
        for g in range(int(self.groups.max()) + 1):
            members = rng.permutation(np.flatnonzero(self.groups == g))
            full = len(members) // self.group_block * self.group_block
            blocks += np.split(members[:full], full // self.group_block) if full else []
            leftovers.append(members[full:])
        rest = rng.permutation(np.concatenate(leftovers)) if leftovers else np.empty(0, dtype=np.int64)
        cut = len(rest) // self.group_block * self.group_block
        blocks += [rest[i : i + self.group_block] for i in range(0, cut, self.group_block)]
        # the one short block goes last, so every full block starts on a batch boundary
        order = [blocks[i] for i in rng.permutation(len(blocks))] + [rest[cut:]]
        return np.concatenate(order).astype(np.int64)

    def set_epoch(self, epoch: int, position: int = 0) -> None:
        """Start ``epoch`` at ``position`` (the number of this rank's samples already consumed)."""
        if not 0 <= position <= self.per_rank:
            raise ValueError(f"position {position} outside [0, {self.per_rank}] for epoch {epoch}")
        self.epoch = int(epoch)
        self.position = int(position)

    def state_dict(self) -> dict[str, int]:
        """The sampler's position: ``{"epoch", "position"}`` (plus its seed, for a sanity check)."""
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a position saved by :meth:`state_dict`."""
        if int(state.get("seed", self.seed)) != self.seed:
            raise ValueError(f"sampler seed changed on resume: checkpoint {state['seed']}, now {self.seed}")
        self.set_epoch(int(state["epoch"]), int(state["position"]))

    def __len__(self) -> int:
        return self.per_rank - self.position

    def __iter__(self) -> Iterator[Any]:
        indices = self.epoch_indices(self.epoch)[self.position :]
        for i in indices:
            i = int(i)
            yield (i, sample_seed(self.seed, self.epoch, i)) if self.with_seeds else i
