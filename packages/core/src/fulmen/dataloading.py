"""Dataloaders whose position can be saved and restored exactly.

A plain ``RandomSampler`` draws a fresh seed from the global RNG at every ``iter()``, so
after a crash nobody knows which permutation the interrupted epoch used. fulmen swaps it for
``ResumableRandomSampler``, whose order is a pure function of ``(seed, epoch)``, and counts
the batches handed out. A checkpoint then records ``{seed, epoch, batches consumed}`` and a
resumed run starts the same permutation at the next batch, without loading the skipped ones.

Loaders that keep their own state (``state_dict``/``load_state_dict``, e.g. torchdata's
``StatefulDataLoader``) are asked for it instead. A plain iterable dataset has no position to
restore: on resume its first batches are drawn and dropped, which is exact only if the
stream is deterministic; give it ``state_dict``/``load_state_dict`` to do better.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, Optional

import torch
import os

from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, IterableDataset, RandomSampler, Sampler, SequentialSampler

from fulmen.errors import FulmenConfigError


class ResumableRandomSampler(Sampler[int]):
    """A shuffling sampler whose permutation is fixed by ``(seed, epoch)``.

    ``set_epoch`` chooses the next pass's epoch (the Trainer and DistributedSampler users
    call it); without it each pass takes the epoch after the previous one, so a Fabric loop
    still gets a new order every pass, as with ``RandomSampler``.
    """

    def __init__(self, data_source: Any, seed: int) -> None:
        self._length = len(data_source)
        self.seed = int(seed)
        self.epoch = 0  # the epoch of the next pass when set explicitly
        self._explicit = False
        self._next_auto = 0
        self.pass_epoch: Optional[int] = None  # the epoch of the pass in progress
        self.start_index = 0  # where the next pass begins (for mid-epoch resume)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._explicit = True

    @property
    def next_epoch(self) -> int:
        return self.epoch if self._explicit else self._next_auto

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[int]:
        epoch = self.next_epoch
        self._explicit = False
        self._next_auto = epoch + 1
        self.pass_epoch = self.epoch = epoch
        generator = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(self._length, generator=generator).tolist()
        start, self.start_index = self.start_index, 0
        return iter(order[start:])


class _SkippableSequentialSampler(SequentialSampler):
    """In-order sampling that can start mid-pass. It counts epochs like
    ``ResumableRandomSampler`` although its order ignores them: the epoch picks the seeds of
    the DataLoader's worker processes (see ``LoaderPosition.begin_pass``)."""

    start_index = 0
    epoch = 0
    _explicit = False
    _next_auto = 0
    pass_epoch: Optional[int] = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._explicit = True

    @property
    def next_epoch(self) -> int:
        return self.epoch if self._explicit else self._next_auto

    def __iter__(self) -> Iterator[int]:
        epoch = self.next_epoch
        self._explicit = False
        self._next_auto = epoch + 1
        self.pass_epoch = self.epoch = epoch
        start, self.start_index = self.start_index, 0
        return iter(range(start, len(self.data_source)))


class ResumableDistributedSampler(DistributedSampler):
    """``DistributedSampler`` (order fixed by seed and epoch already) that can start mid-pass."""

    start_index = 0

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        start, self.start_index = self.start_index, 0
        return iter(indices[start:])


def distribute(loader: Any, num_replicas: int, rank: int) -> Any:
    """Give each process its own share of a map-style DataLoader (shuffled if it was).

    The seed comes from ``seed_everything`` (``FULMEN_GLOBAL_SEED``) so every rank computes
    the same permutation; iterable datasets are the user's to split (see the docs).
    """
    if not isinstance(loader, DataLoader) or isinstance(loader.dataset, IterableDataset):
        return loader
    if isinstance(loader.sampler, DistributedSampler):
        return loader  # the user split the data already
    if loader.batch_size is None or type(loader.sampler) not in (RandomSampler, SequentialSampler, ResumableRandomSampler, _SkippableSequentialSampler):
        raise FulmenConfigError(
            f"cannot split a DataLoader with a custom {'batch_sampler' if loader.batch_size is None else type(loader.sampler).__name__} "
            "across processes; pass use_distributed_sampler=False and give each rank its share "
            "(e.g. a DistributedSampler of your own)"
        )
    shuffle = isinstance(loader.sampler, (RandomSampler, ResumableRandomSampler))
    seed = int(os.environ.get("FULMEN_GLOBAL_SEED", 0))
    sampler = ResumableDistributedSampler(loader.dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
    return with_sampler(loader, sampler, generator=torch.Generator().manual_seed(seed + rank))


def with_sampler(loader: DataLoader, sampler: Sampler, generator: Optional[torch.Generator] = None) -> DataLoader:
    """The same DataLoader rebuilt around another sampler (keeping every other setting)."""
    if not isinstance(loader, DataLoader):
        raise FulmenConfigError(f"cannot change the sampler of a {type(loader).__name__}; pass a torch DataLoader")
    if isinstance(loader.dataset, IterableDataset):
        return loader
    if loader.batch_size is None:
        raise FulmenConfigError(
            "this DataLoader uses a custom batch_sampler, which fulmen cannot re-seat; build it with "
            "batch_size= and a sampler, or pass use_distributed_sampler=False / overfit_batches=0"
        )
    kwargs = dict(
        dataset=loader.dataset,
        batch_size=loader.batch_size,
        sampler=sampler,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context,
        generator=generator if generator is not None else loader.generator,
        persistent_workers=loader.persistent_workers,
    )
    if loader.num_workers > 0:
        kwargs["prefetch_factor"] = loader.prefetch_factor
    try:
        rebuilt = type(loader)(**kwargs)
    except TypeError as exc:
        raise FulmenConfigError(
            f"cannot rebuild {type(loader).__name__} with a new sampler ({exc}); subclasses must accept "
            "DataLoader's keyword arguments"
        ) from None
    if generator is not None:
        rebuilt._fulmen_seeds_workers = True  # the generator is fulmen's: begin_pass reseeds it
    return rebuilt


def _draw_seed(generator: Optional[torch.Generator]) -> int:
    return int(torch.empty((), dtype=torch.int64).random_(generator=generator).item()) & 0x7FFFFFFF


def make_resumable(loader: Any) -> Any:
    """Replace a DataLoader's ``RandomSampler``/``SequentialSampler`` by resumable ones."""
    if not isinstance(loader, DataLoader) or isinstance(loader.dataset, IterableDataset):
        return loader
    if loader.batch_size is None or not isinstance(loader.batch_sampler, BatchSampler):
        return loader  # a custom batch sampler: its position is its own business
    sampler = loader.sampler
    if type(sampler) is RandomSampler and not sampler.replacement and sampler._num_samples is None:
        new_sampler: Sampler = ResumableRandomSampler(loader.dataset, _draw_seed(sampler.generator or loader.generator))
    elif type(sampler) is SequentialSampler:
        new_sampler = _SkippableSequentialSampler(loader.dataset)
    else:
        return loader
    # A private generator keeps iter() from drawing worker seeds from the global RNG,
    # which would shift every random number after a resume.
    generator = torch.Generator().manual_seed(getattr(new_sampler, "seed", 0))
    return with_sampler(loader, new_sampler, generator=generator)


class LoaderPosition:
    """Counts batches of the current pass and restores a saved position on the next pass."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.consumed = 0
        self._skip = 0
        self._pending_state: Optional[Dict[str, Any]] = None
        self._seeded_epoch: Optional[int] = None  # the epoch the worker seeds were last derived from

    @property
    def sampler(self) -> Any:
        return getattr(self.loader, "sampler", None)

    def _native(self) -> bool:
        return callable(getattr(self.loader, "state_dict", None)) and callable(getattr(self.loader, "load_state_dict", None))

    def skip_next(self, batches: int) -> None:
        self._skip = int(batches)

    def _seed_workers(self) -> None:
        """``iter(loader)`` draws the seed of its worker processes (and so of every random
        augmentation they make) from ``loader.generator``. Drawn from a generator that only
        advances, a resumed run would give epoch 3 the seed the first epoch had; reseeding it
        from ``(sampler seed, rank, epoch)`` gives each epoch the same worker seed in every
        run. (Mid-epoch the workers still differ: they skip nothing of their own streams.)"""
        loader = self.loader
        if not getattr(loader, "_fulmen_seeds_workers", False) or getattr(loader, "generator", None) is None:
            return
        sampler = self.sampler
        epoch = getattr(sampler, "next_epoch", None)
        if epoch is None:
            epoch = getattr(sampler, "epoch", None)
        if epoch is None or epoch == self._seeded_epoch:
            # The same epoch again (a DistributedSampler nobody calls set_epoch on): let the
            # generator move on, so each pass still gets new worker seeds.
            return
        self._seeded_epoch = epoch
        key = (int(getattr(sampler, "seed", 0)), int(getattr(sampler, "rank", 0)), int(epoch))
        loader.generator.manual_seed(hash(key) & 0x7FFF_FFFF_FFFF_FFFF)  # ints hash the same in every process

    def begin_pass(self) -> int:
        """Called right before ``iter(loader)``; returns how many batches to draw and drop."""
        self._seed_workers()
        self.consumed = 0
        skip, self._skip = self._skip, 0
        if skip == 0:
            return 0
        sampler = self.sampler
        if self._native():
            self.consumed = skip
            return 0
        if hasattr(sampler, "start_index") and isinstance(getattr(self.loader, "batch_size", None), int):
            sampler.start_index = skip * self.loader.batch_size
            self.consumed = skip
            return 0
        self.consumed = skip
        return skip  # no cheaper way: draw and drop

    def state_dict(self) -> Dict[str, Any]:
        state: Dict[str, Any] = {"batches_consumed": self.consumed}
        sampler = self.sampler
        if isinstance(sampler, (ResumableRandomSampler, _SkippableSequentialSampler)):
            in_pass = self.consumed > 0 and sampler.pass_epoch is not None
            epoch = sampler.pass_epoch if in_pass else sampler.next_epoch
            state["sampler"] = {"seed": getattr(sampler, "seed", 0), "epoch": epoch}
        elif isinstance(sampler, DistributedSampler):
            state["sampler"] = {"seed": sampler.seed, "epoch": sampler.epoch}
        if self._native():
            state["loader"] = self.loader.state_dict()
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self._skip = int(state.get("batches_consumed", 0))
        sampler = self.sampler
        saved = state.get("sampler")
        if saved and isinstance(sampler, (ResumableRandomSampler, DistributedSampler)):
            sampler.seed = int(saved["seed"])
            sampler.set_epoch(int(saved["epoch"]))
        elif saved and isinstance(sampler, _SkippableSequentialSampler):
            sampler.set_epoch(int(saved["epoch"]))
        if "loader" in state and self._native():
            self.loader.load_state_dict(state["loader"])
