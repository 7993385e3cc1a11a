"""A resumable, distributed batch sampler: batch t of rank r is a pure function of (seed, t, r).

Each rank reads an endless stream of indices: round 0, 1, 2, ... of `DistributedSampler`
(shuffle, drop_last, `set_epoch(round)`), so a small labelled set is repeated as often as needed
to match the unlabelled one. Batch t is stream[t*B:(t+1)*B]; each element is (index, aug_seed).
Starting at iteration t costs nothing (no skipped batches are loaded).
"""

from __future__ import annotations

from torch.utils.data import DistributedSampler, Sampler


class _Sized:
    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n


class StreamBatchSampler(Sampler):
    def __init__(
        self, length: int, batch_size: int, seed: int, rank: int, world: int, start: int, stop: int, salt: int
    ):
        if length < world:
            raise ValueError(f"a split of {length} images cannot be shared by {world} processes")
        self.sampler = DistributedSampler(
            _Sized(length), num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.per_round = len(self.sampler)
        self.batch_size, self.seed, self.rank = batch_size, seed, rank
        self.start, self.stop, self.salt = start, stop, salt
        self._round, self._indices = -1, []

    def _index(self, position: int) -> int:
        r, i = divmod(position, self.per_round)
        if r != self._round:
            self.sampler.set_epoch(r)
            self._round, self._indices = r, list(self.sampler)
        return self._indices[i]

    def batch(self, t: int) -> list[tuple[int, int]]:
        out = []
        for p in range(t * self.batch_size, (t + 1) * self.batch_size):
            aug_seed = ((self.seed * 1_000_003 + self.salt) * 7_919 + self.rank) * 1_000_000_007 + p
            out.append((self._index(p), aug_seed % (2**63 - 1)))
        return out

    def __iter__(self):
        for t in range(self.start, self.stop):
            yield self.batch(t)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)
