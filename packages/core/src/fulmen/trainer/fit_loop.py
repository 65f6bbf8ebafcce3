"""The training loop: epochs, batches, gradient accumulation, the optimizer step.

Written as flat functions over the Trainer's state so the whole step reads top to bottom.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Mapping, Optional

import torch

from fulmen.errors import FulmenError, FulmenUserCodeError
from fulmen.trainer import preemption
from fulmen.trainer.eval_loop import run_evaluation


# torch's own first-order optimizers call a closure once, only to return its loss, which
# the Trainer already has and never reads from step(): they step without one, as a
# hand-written loop does (the closure's enable_grad block costs ~1% of a tiny model's step).
# Exact classes only: LBFGS re-evaluates the loss, and subclasses or other optimizers (SAM
# and friends) may use the closure, so they all get it.
STEP_WITHOUT_CLOSURE = frozenset(
    cls
    for cls in (
        getattr(torch.optim, name, None)
        for name in (
            "SGD", "Adam", "AdamW", "Adagrad", "Adadelta", "Adamax", "ASGD", "NAdam", "RAdam",
            "RMSprop", "Rprop", "SparseAdam", "Adafactor",
        )
    )
    if isinstance(cls, type)
)


class NonFiniteLossError(FulmenError, FloatingPointError):
    """The loss became NaN or infinite while ``detect_anomaly=True``."""


def extract_loss(output: Any, automatic: bool) -> Optional[torch.Tensor]:
    """The loss inside what ``training_step`` returned, or a precise complaint."""
    if output is None:
        return None
    if isinstance(output, torch.Tensor):
        loss = output
    elif isinstance(output, Mapping):
        if "loss" not in output:
            if not automatic:
                return None
            raise FulmenUserCodeError(
                f"training_step returned a dict without a 'loss' key (keys: {sorted(map(str, output))}); "
                "put the loss tensor under 'loss', or return the tensor itself"
            )
        loss = output["loss"]
    else:
        if not automatic:
            return None
        raise FulmenUserCodeError(
            f"training_step returned a {type(output).__name__}; with automatic optimization it must "
            "return the loss tensor, a dict with a 'loss' tensor, or None to skip the batch"
        )
    if not isinstance(loss, torch.Tensor):
        raise FulmenUserCodeError(
            f"training_step's loss is a {type(loss).__name__}, not a tensor; compute it with torch "
            "operations on the model's output"
        )
    if automatic:
        if loss.numel() != 1:
            raise FulmenUserCodeError(
                f"training_step's loss has shape {tuple(loss.shape)}; reduce it to a scalar "
                "(for example loss.mean()) before returning it"
            )
        if not loss.requires_grad:
            raise FulmenUserCodeError(
                "training_step's loss does not require grad, so backward cannot train anything; "
                "do not .detach() it, call .item() on it, or compute it under torch.no_grad()"
            )
    return loss


def detached_outputs(output: Any) -> Any:
    """What ``on_train_batch_end`` receives as ``outputs``: a bare loss becomes
    ``{"loss": loss}``, as in Lightning, whose callbacks read ``outputs["loss"]`` whatever
    ``training_step`` returned."""
    if isinstance(output, torch.Tensor):
        return {"loss": output.detach()}
    if isinstance(output, Mapping) and isinstance(output.get("loss"), torch.Tensor):
        return {**output, "loss": output["loss"].detach()}
    return output


def _check_finite(trainer, loss: torch.Tensor, batch_idx: int) -> None:
    if not bool(torch.isfinite(loss)):  # syncs; only when the user asked for detect_anomaly
        raise NonFiniteLossError(
            f"the loss is {loss.item()} at epoch {trainer.current_epoch}, global step "
            f"{trainer.global_step}, batch {batch_idx}; lower the learning rate, clip gradients "
            "(gradient_clip_val=) or check the data of this batch"
        )


def _training_step(trainer, batch: Any, batch_idx: int) -> Any:
    return trainer._step("training_step", batch, batch_idx)


def _forward_backward(trainer, batch: Any, batch_idx: int, holder: dict) -> Optional[torch.Tensor]:
    """training_step, loss checks, backward with its hooks; returns the unscaled loss."""
    output = trainer._step("training_step", batch, batch_idx)
    holder["output"] = output
    loss = extract_loss(output, automatic=True)
    if loss is None:
        return None
    if trainer.detect_anomaly:
        _check_finite(trainer, loss, batch_idx)
    accumulate = trainer.accumulate_grad_batches
    trainer._backward(loss / accumulate if accumulate > 1 else loss)
    return loss


def automatic_step(trainer, batch: Any, batch_idx: int, stepping: bool):
    """One micro-batch; returns (training_step's output, whether the optimizer stepped)."""
    holder: dict = {}
    optimizer = trainer.optimizers[0]
    strategy = trainer.strategy
    if not stepping:
        with trainer.fabric.no_backward_sync(trainer._forward_module, enabled=True):
            _forward_backward(trainer, batch, batch_idx, holder)
        # Not a boundary: an engine that counts micro-batches itself (DeepSpeed-like) is told
        # one went by; a strategy whose optimizer_step has no ``boundary`` is not called.
        if trainer._micro_batch_steps:
            strategy.optimizer_step(optimizer.optimizer, None, boundary=False)
        return holder.get("output"), False
    loss = _forward_backward(trainer, batch, batch_idx, holder)
    if loss is None and trainer.accumulate_grad_batches == 1:
        return holder.get("output"), False  # training_step returned None: skip this batch
    raw_optimizer = optimizer.optimizer
    implemented = trainer._relay.implemented  # checked here: most hooks have no implementation
    if "on_before_optimizer_step" in implemented:
        # Under 16-mixed the gradients are still multiplied by the loss scale; whoever looks
        # at them here (gradient norms, a logging callback) expects their true values.
        strategy.unscale_gradients(raw_optimizer)
        trainer._call("on_before_optimizer_step", optimizer=raw_optimizer)
    if trainer.gradient_clip_val:
        trainer._clip_gradients(raw_optimizer)
    if type(raw_optimizer) in STEP_WITHOUT_CLOSURE:
        optimizer.step()
    else:
        calls = {"n": 0}

        def closure():
            # The first call returns the loss computed above; optimizers such as LBFGS call
            # again to re-evaluate, and then the step must really run once more.
            calls["n"] += 1
            if calls["n"] == 1:
                return loss
            strategy.zero_grad(raw_optimizer)
            return _forward_backward(trainer, batch, batch_idx, holder)

        optimizer.step(closure)
    if "on_before_zero_grad" in implemented:
        trainer._call("on_before_zero_grad", optimizer=raw_optimizer)
    strategy.zero_grad(raw_optimizer)
    return holder.get("output"), True


def manual_step(trainer, batch: Any, batch_idx: int) -> Any:
    output = _training_step(trainer, batch, batch_idx)
    if output is not None and not isinstance(output, (torch.Tensor, Mapping)):
        raise FulmenUserCodeError(
            f"training_step returned a {type(output).__name__}; return None, a tensor or a dict"
        )
    return output


def step_schedulers(trainer, interval: str, plateau: Optional[bool] = None) -> None:
    """``plateau``: only ReduceLROnPlateau (True), only the others (False), or all (None).

    Lightning's order for ``interval="epoch"``: the others step after the epoch's last batch,
    before the epoch-end validation, so the checkpoint written there holds the stepped
    scheduler; ReduceLROnPlateau steps after the epoch, once the metric it watches exists.
    """
    if not trainer.module.automatic_optimization:
        return  # manual optimization steps its own schedulers (self.lr_schedulers()), as in Lightning
    for config in trainer.lr_scheduler_configs:
        if config.interval != interval or (plateau is not None and config.needs_metric != plateau):
            continue
        count = trainer.global_step if interval == "step" else trainer.current_epoch + 1
        if count % config.frequency != 0:
            continue
        if config.needs_metric:
            value = trainer.callback_metrics.get(config.monitor)
            if value is None:
                if not config.strict:
                    continue
                raise FulmenUserCodeError(
                    f"ReduceLROnPlateau monitors {config.monitor!r}, which was not logged; logged "
                    f"metrics: {trainer._metrics.metric_names() or 'none'}. Log it with self.log, "
                    "or set 'strict': False in the lr_scheduler dict"
                )
            config.scheduler.step(float(value))
        else:
            config.scheduler.step()


def _val_due_in_epoch(trainer, batch_idx: int, last: bool) -> bool:
    """Lightning's rule: every ``interval`` batches (not forced on the epoch's last batch, so
    ``val_check_interval=3`` over 8 batches validates twice), and once more when a granted
    ``should_stop`` ends training early, so the last state is validated (and checkpointed)."""
    if not trainer._has_validation:
        return False
    every_n = trainer.check_val_every_n_epoch
    if every_n is not None and (trainer.current_epoch + 1) % every_n != 0:
        return False
    if trainer._stop_granted():
        return True
    interval = trainer._val_check_batches
    if interval is None:
        return last  # an unsized (iterable) epoch: validate when its data ends
    if every_n is None:
        return trainer._progress.total_batches % interval == 0
    return (batch_idx + 1) % interval == 0


def _finish_batch(trainer, last: bool, distributed: Optional[bool] = None) -> bool:
    """What follows on_train_batch_end: the batch's log row, epoch-interval schedulers after
    the epoch's last batch, validation when due, the preemption check. A run resumed from a
    checkpoint written inside that hook (or that validation) starts here, so the work the
    first run did after writing the file is done again, not lost. True: stop training."""
    progress = trainer._progress
    if progress.phase == "batch_end" and not progress.validating:
        if progress.step_log_due or trainer.should_stop or last:
            trainer._log_step_metrics()
        if last:
            step_schedulers(trainer, "epoch", plateau=False)
        if trainer._has_validation and _val_due_in_epoch(trainer, progress.batch_idx - 1, last):
            trainer._run_validation()
    progress.validating = False
    progress.phase = "boundary"
    # One process with no signal received has nothing to check; ranks must agree at
    # intervals (check decides when). ``distributed`` comes from the epoch loop, which looks
    # the world size up once rather than every step.
    if distributed is None:
        distributed = trainer.world_size > 1
    if distributed or trainer._preemption.received is not None:
        preemption.check(trainer)
    progress.phase = ""
    return trainer._max_steps_reached() or (trainer.should_stop and trainer._stop_granted())


def run_training_epoch(trainer, resumed: bool = False) -> None:
    progress = trainer._progress
    limit = trainer.num_training_batches
    metrics = trainer._metrics
    accumulate = trainer.accumulate_grad_batches
    automatic = trainer.module.automatic_optimization
    start = progress.batch_idx
    iterator = trainer._train_iterator(start)
    batch_idx = start
    exhausted = False
    # Detaching training_step's output for on_train_batch_end costs a tensor op per step;
    # skip it when no implementation of that hook takes ``outputs``.
    wants_outputs = trainer._relay.wants("on_train_batch_end", "outputs")
    distributed = trainer.world_size > 1
    if resumed and progress.phase in ("batch_end", "boundary") and start > 0:
        # The checkpoint was written before its batch was done: finish that batch first.
        with warnings.catch_warnings():
            # torch flags a scheduler step before this process's first optimizer.step; the
            # first run stepped the optimizer right before, so the order is the usual one.
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
            stop = _finish_batch(trainer, start >= limit)
        if stop:
            progress.epoch_complete = start >= limit
            return
    while batch_idx < limit:
        try:
            batch = next(iterator)
        except StopIteration:
            # The data ran out before ``limit`` (an iterable dataset without a length): the
            # epoch is over. Without this the next epoch resumed "mid-epoch" forever.
            exhausted = True
            if batch_idx > start:
                step_schedulers(trainer, "epoch", plateau=False)
            if limit == math.inf and batch_idx > start and _val_due_in_epoch(trainer, batch_idx - 1, True):
                trainer._run_validation()
            break
        last = batch_idx + 1 >= limit
        metrics.stage, metrics.phase = "train", "train_step"
        metrics.start_batch_of(batch)
        if "on_train_batch_start" in trainer._relay.implemented:
            trainer._call("on_train_batch_start", batch=batch, batch_idx=batch_idx)
        if automatic:
            stepping = (batch_idx + 1) % accumulate == 0 or last
            output, stepped = automatic_step(trainer, batch, batch_idx, stepping)
            if stepped:
                progress.global_step += 1
                if trainer.lr_scheduler_configs:
                    step_schedulers(trainer, "step")
        else:
            output = manual_step(trainer, batch, batch_idx)
        # Count the batch as consumed before on_train_batch_end and the epoch-end validation:
        # a checkpoint written there (every_n_train_steps, the usual ModelCheckpoint) must
        # resume with the next batch or epoch, not repeat this batch or an empty epoch rest.
        progress.batch_idx = batch_idx + 1
        progress.epoch_complete = progress.batch_idx >= limit
        progress.total_batches += 1
        if automatic:
            # Lightning counts optimizer steps: micro-batches that only accumulate log no rows.
            progress.step_log_due = stepped and progress.global_step % trainer.log_every_n_steps == 0
        else:
            progress.step_log_due = progress.total_batches % trainer.log_every_n_steps == 0
        progress.phase = "batch_end"
        outputs = detached_outputs(output) if wants_outputs else None
        trainer._call("on_train_batch_end", outputs=outputs, batch=batch, batch_idx=batch_idx)
        batch_idx += 1
        if _finish_batch(trainer, last, distributed):
            break
    metrics.settle_batch_size()  # keep the last batch's size, not a reference to the batch
    progress.epoch_complete = batch_idx >= limit or exhausted


def run_fit(trainer) -> None:
    progress = trainer._progress
    metrics = trainer._metrics
    trainer._call("on_train_start")
    # A checkpoint written mid-batch or mid-epoch-end has work pending even if, by its
    # counters, training is done (e.g. the save right before EarlyStopping's last check).
    while (progress.resuming_mid_epoch and progress.phase) or not trainer._fit_done():
        resumed = progress.resuming_mid_epoch
        if not resumed:
            metrics.reset_stage("train")
        progress.resuming_mid_epoch = False
        trainer.module.train()
        if not (resumed and progress.phase == "epoch_end"):
            if not (resumed and progress.epoch_complete):  # batches remain in this epoch
                trainer._set_epoch_on_samplers()
                trainer._call("on_train_epoch_start")
            with trainer.profiler.profile("run_training_epoch"):  # once per epoch, not per step
                run_training_epoch(trainer, resumed)
            if progress.batch_idx == 0 and trainer.num_training_batches > 0:
                break  # max_steps/stop reached before any batch; do not count an empty epoch
            metrics.stage, metrics.phase = "train", "train_epoch_end"
            metrics.reduce_epoch("train")  # so callbacks see epoch aggregates in the hook
            progress.phase = "epoch_end"
            trainer._call("on_train_epoch_end")
        trainer._log_to_loggers(metrics.reduce_epoch("train"))
        metrics.finish_epoch("train")  # torchmetrics Metrics start the next epoch empty
        step_schedulers(trainer, "epoch", plateau=True)
        progress.phase = ""
        for logger in trainer.loggers:
            logger.save()
        if progress.epoch_complete:
            progress.current_epoch += 1
            progress.batch_idx = 0
            progress.epoch_complete = False
        if trainer._max_steps_reached():
            break
    trainer._call("on_train_end")


def fit_done(trainer) -> bool:
    progress = trainer._progress
    if trainer._max_steps_reached():
        return True
    if trainer.max_epochs is not None and trainer.max_epochs >= 0 and progress.current_epoch >= trainer.max_epochs:
        return True
    return trainer._stop_granted()


def estimated_stepping_batches(trainer) -> float:
    if trainer.max_steps is not None and trainer.max_steps >= 0:
        return trainer.max_steps
    if trainer.max_epochs is None or trainer.max_epochs < 0:
        return math.inf
    per_epoch = math.ceil(trainer.num_training_batches / trainer.accumulate_grad_batches)
    return per_epoch * trainer.max_epochs


__all__ = ["run_fit", "run_evaluation", "fit_done", "estimated_stepping_batches"]
