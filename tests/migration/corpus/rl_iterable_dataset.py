"""Policy-gradient (REINFORCE) on a tiny contextual bandit whose experience comes from an
IterableDataset without ``__len__``: each epoch plays fresh episodes with the current
policy and ends when the dataset is exhausted (Lightning 2.x).

Exercises: an IterableDataset with no length, rank_zero_info, a callback with
on_train_epoch_end(trainer, pl_module), self.log(on_step=False, on_epoch=True),
gradient_clip_val, trainer.global_step after epochs of unknown length.

Run: python rl_iterable_dataset.py [OUTPUT_DIR]   (or set CORPUS_OUT)
"""

import os
import sys
import tempfile

import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

STATES, ACTIONS = 4, 3
EPISODES_PER_EPOCH, BATCH = 96, 32


def reward(state, action):
    """The right action for state s is s % ACTIONS."""
    return 1.0 if action == state % ACTIONS else 0.0


class Experience(IterableDataset):
    """Plays EPISODES_PER_EPOCH one-step episodes with the policy as it is now."""

    def __init__(self, policy, seed=0):
        self.policy = policy
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self):
        for _ in range(EPISODES_PER_EPOCH):
            state = int(torch.randint(0, STATES, (1,), generator=self.generator))
            obs = nn.functional.one_hot(torch.tensor(state), STATES).float()
            with torch.no_grad():
                probs = torch.softmax(self.policy(obs), dim=-1)
            action = int(torch.multinomial(probs, 1, generator=self.generator))
            yield obs, torch.tensor(action), torch.tensor(reward(state, action))


class Reinforce(LightningModule):
    def __init__(self, lr=0.1):
        super().__init__()
        self.save_hyperparameters()
        self.policy = nn.Sequential(nn.Linear(STATES, 16), nn.Tanh(), nn.Linear(16, ACTIONS))

    def forward(self, obs):
        return self.policy(obs)

    def training_step(self, batch, batch_idx):
        obs, actions, rewards = batch
        log_probs = torch.log_softmax(self(obs), dim=-1).gather(1, actions[:, None]).squeeze(1)
        advantage = rewards - rewards.mean()
        loss = -(log_probs * advantage).mean()
        self.log("mean_reward", rewards.mean(), on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def train_dataloader(self):
        return DataLoader(Experience(self.policy), batch_size=BATCH)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class RewardHistory(Callback):
    def __init__(self):
        self.rewards = []
        self.batches = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.batches += 1

    def on_train_epoch_end(self, trainer, pl_module):
        value = float(trainer.callback_metrics["mean_reward"])
        self.rewards.append(value)
        rank_zero_info(f"epoch {trainer.current_epoch}: mean reward {value:.3f}")


def greedy_accuracy(policy):
    obs = torch.eye(STATES)
    with torch.no_grad():
        chosen = policy(obs).argmax(-1)
    return sum(reward(s, int(a)) for s, a in enumerate(chosen)) / STATES


def main(out):
    seed_everything(5)
    history = RewardHistory()
    epochs = 8
    trainer = Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        gradient_clip_val=1.0,
        callbacks=[history],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=out,
    )
    model = Reinforce()
    trainer.fit(model)

    per_epoch = EPISODES_PER_EPOCH // BATCH
    assert history.batches == epochs * per_epoch, f"{history.batches} batches, expected {epochs * per_epoch}"
    assert trainer.global_step == epochs * per_epoch, trainer.global_step
    assert len(history.rewards) == epochs, history.rewards
    assert history.rewards[-1] > history.rewards[0] + 0.2, f"reward did not rise: {history.rewards}"
    accuracy = greedy_accuracy(model.policy)
    assert accuracy == 1.0, f"greedy policy right in {accuracy:.2f} of states"
    print(f"CORPUS_OK rl_iterable_dataset: mean reward {history.rewards[0]:.3f} -> {history.rewards[-1]:.3f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CORPUS_OUT") or tempfile.mkdtemp())
