"""DataLoader worker processes that draw random numbers (augmentations) draw the same ones in
a resumed run as in an uninterrupted one: each epoch's worker seed depends on the epoch, not
on how many epochs this process has iterated."""

from __future__ import annotations

import pytest
import torch
from helpers import BoringModule, quiet_trainer
from torch.utils.data import DataLoader, Dataset

from fulmen.callbacks import ModelCheckpoint
from fulmen.dataloading import LoaderPosition, distribute


class NoisyData(Dataset):
    """Each sample carries noise drawn in the worker, as a random augmentation would."""

    def __len__(self) -> int:
        return 16

    def __getitem__(self, index):
        x = torch.full((8,), float(index)) + torch.rand(8)
        return x, x.sum(dim=0, keepdim=True)


class Recording(BoringModule):
    def __init__(self) -> None:
        super().__init__()
        self.seen = []

    def training_step(self, batch, batch_idx):
        self.seen.append((self.current_epoch, batch_idx, batch[0].clone()))
        return super().training_step(batch, batch_idx)


def _loader(shuffle: bool) -> DataLoader:
    return DataLoader(NoisyData(), batch_size=4, shuffle=shuffle, num_workers=2, multiprocessing_context="fork")


def _by_epoch(seen, epochs):
    return {(e, i): x for e, i, x in seen if e in epochs}


@pytest.mark.parametrize("shuffle", [True, False])
def test_resume_at_an_epoch_boundary_gives_workers_the_same_seeds(tmp_path, shuffle):
    torch.manual_seed(0)
    straight = Recording()
    quiet_trainer(tmp_path / "straight", max_epochs=3, logger=False, enable_checkpointing=False).fit(
        straight, _loader(shuffle)
    )

    torch.manual_seed(0)
    ckpts = tmp_path / "ckpts"
    first = Recording()
    quiet_trainer(tmp_path / "first", max_epochs=1, logger=False, callbacks=[ModelCheckpoint(dirpath=ckpts, save_last=True)]).fit(
        first, _loader(shuffle)
    )
    torch.manual_seed(123)  # a fresh process would not share the first one's RNG either
    resumed = Recording()
    quiet_trainer(tmp_path / "resumed", max_epochs=3, logger=False, enable_checkpointing=False).fit(
        resumed, _loader(shuffle), ckpt_path=str(ckpts / "last.ckpt")
    )

    want, got = _by_epoch(straight.seen, {1, 2}), _by_epoch(resumed.seen, {1, 2})
    assert sorted(got) == sorted(want) and len(want) == 8
    for key in want:
        assert torch.equal(got[key], want[key]), key
    # and the epochs differ from each other (the seed does change with the epoch)
    assert not torch.equal(want[(1, 0)] - want[(1, 0)].floor(), want[(2, 0)] - want[(2, 0)].floor())
    for a, b in zip(straight.layer.parameters(), resumed.layer.parameters()):
        assert torch.equal(a, b)


def _one_pass(position: LoaderPosition, loader: DataLoader) -> torch.Tensor:
    position.begin_pass()
    return torch.cat([x for x, _ in loader])


def test_distributed_loader_without_set_epoch_still_varies_worker_seeds():
    # A Fabric DDP loop that never calls set_epoch: the sampler's epoch stays 0, yet each pass
    # must not repeat the previous pass's augmentations.
    loader = distribute(_loader(shuffle=True), num_replicas=2, rank=0)
    position = LoaderPosition(loader)
    passes = [_one_pass(position, loader) for _ in range(3)]
    noise = [p - p.floor() for p in passes]
    assert not torch.equal(noise[0], noise[1]) and not torch.equal(noise[1], noise[2])


def test_distributed_worker_seeds_follow_the_epoch():
    def epoch_pass(epoch: int) -> torch.Tensor:
        loader = distribute(_loader(shuffle=True), num_replicas=2, rank=1)
        loader.sampler.set_epoch(epoch)
        return _one_pass(LoaderPosition(loader), loader)

    assert torch.equal(epoch_pass(3), epoch_pass(3))  # a fresh process at epoch 3: same draws
    assert not torch.equal(epoch_pass(3), epoch_pass(4))
