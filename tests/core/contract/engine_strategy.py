"""A third-party strategy whose engine owns backward, the optimizer step, clipping,
gradient accumulation and its own checkpoint directory (DeepSpeed's shape), written on
fulmen's public ``Strategy`` methods only and registered as a plugin would be.

Nothing here touches a private attribute of the Trainer, Fabric or the core: if the
contract lacked a method, this file could not be written.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from torch import nn

import fulmen
from fulmen.strategies import SingleDeviceStrategy

ENGINE_FILES = ("model.pt", "optimizer.pt", "engine.json", "client_state.pt")
MODULE_MARKER = {"in_directory": "module"}
OPTIMIZER_MARKER = {"in_directory": "optimizer"}


class ToyEngine:
    """Counts micro-batches itself and steps every ``accumulate``-th, clipping first."""

    def __init__(self, module: nn.Module, optimizer: torch.optim.Optimizer, accumulate: int) -> None:
        self.module = module
        self.optimizer = optimizer
        self.accumulate = accumulate
        self.clip_norm: Optional[float] = None
        self.micro_steps = 0
        self.global_steps = 0

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self) -> bool:
        self.micro_steps += 1
        if self.micro_steps % self.accumulate:
            return False
        if self.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.clip_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_steps += 1
        return True

    def counters(self) -> Dict[str, int]:
        return {"micro_steps": self.micro_steps, "global_steps": self.global_steps}


class EngineStrategy(SingleDeviceStrategy):
    name = "toy_engine"

    def __init__(self, accumulate: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.accumulate = accumulate
        self.engine: Optional[ToyEngine] = None
        self.calls: List[str] = []
        self.boundaries: List[bool] = []
        self._loaded_counters: Optional[Dict[str, int]] = None

    # The engine is built from the plain module and its optimizer together.
    def setup_module_and_optimizers(self, module, configure_optimizers):
        self.calls.append("setup_module_and_optimizers")
        optimizers, schedulers = configure_optimizers()
        module = module.to(self.root_device)
        self.engine = ToyEngine(module, optimizers[0], self.accumulate)
        if self._loaded_counters is not None:
            self._apply_counters()
        return module, [optimizers[0]], schedulers

    def backward(self, tensor, module, *args, **kwargs) -> None:
        self.engine.backward(tensor)

    def optimizer_step(self, optimizer, closure=None, boundary: bool = True):
        # The engine decides when to step; the loop's view must agree with it.
        self.boundaries.append(boundary)
        stepped = self.engine.step()
        if stepped != boundary:
            raise AssertionError(f"engine stepped={stepped} but the loop said boundary={boundary}")
        return None

    def clip_gradients_norm(self, module, optimizer, max_norm, norm_type=2.0, error_if_nonfinite=False):
        self.engine.clip_norm = max_norm  # clipped inside the engine's step
        return None

    def clip_gradients_value(self, module, optimizer, clip_val) -> None:
        raise fulmen.errors.FulmenConfigError("toy_engine clips by norm only")

    def zero_grad(self, optimizer, set_to_none: bool = True) -> None:
        self.calls.append("zero_grad")  # the engine cleared them in its step

    def evaluation_context(self, inference_mode: bool = True):
        self.calls.append("evaluation_context")
        return torch.no_grad()

    # The engine's own checkpoint: a directory of several files, written atomically.
    # The Trainer's and Fabric's records get markers; the states are the engine's files.
    def module_state_dict(self, module):
        return dict(MODULE_MARKER)

    def optimizer_state_dict(self, optimizer):
        return dict(OPTIMIZER_MARKER)

    def save_checkpoint(self, checkpoint: Dict[str, Any], path: Any, storage_options=None) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        torch.save(self.engine.module.state_dict(), tmp / "model.pt")
        torch.save(self.engine.optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / "engine.json").write_text(json.dumps(self.engine.counters()))
        torch.save(checkpoint, tmp / "client_state.pt")  # holds markers, not the states
        if path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)

    def load_checkpoint(self, path: Any) -> Dict[str, Any]:
        path = Path(path)
        if not path.is_dir():
            raise fulmen.errors.FulmenCheckpointError(f"{path} is not a toy_engine checkpoint directory")
        checkpoint = torch.load(path / "client_state.pt", weights_only=True)
        files = {"module": path / "model.pt", "optimizer": path / "optimizer.pt"}

        def resolve(value):
            if isinstance(value, dict) and set(value) == {"in_directory"}:
                return torch.load(files[value["in_directory"]], weights_only=True)
            if isinstance(value, list):
                return [resolve(v) for v in value]
            return value

        checkpoint = {key: resolve(value) for key, value in checkpoint.items()}
        self._loaded_counters = json.loads((path / "engine.json").read_text())
        return checkpoint

    def load_module_state_dict(self, module, state, strict: bool = True) -> None:
        # The engine's model is what the engine saved (the module as the strategy got it
        # from setup_module_and_optimizers), so its state goes back there.
        target = self.engine.module if self.engine is not None else module
        target.load_state_dict(state, strict=strict)

    def load_optimizer_state_dict(self, optimizer, state) -> None:
        optimizer.load_state_dict(state)
        self._apply_counters()

    def _apply_counters(self) -> None:
        if self.engine is not None and self._loaded_counters is not None:
            self.engine.micro_steps = self._loaded_counters["micro_steps"]
            self.engine.global_steps = self._loaded_counters["global_steps"]

    def remove_checkpoint(self, path: Any) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def teardown(self) -> None:
        self.calls.append("teardown")
        super().teardown()


class EnginePlugin:
    """What a plugin package's module would hold: one registration hook."""

    def __init__(self, accumulate: int = 1) -> None:
        self.accumulate = accumulate
        self.created: List[EngineStrategy] = []

    @fulmen.hookimpl
    def register_strategies(self, register):
        def make() -> EngineStrategy:
            strategy = EngineStrategy(accumulate=self.accumulate)
            self.created.append(strategy)
            return strategy

        register("toy_engine", make, "a test engine owning backward, step and its checkpoint directory")
