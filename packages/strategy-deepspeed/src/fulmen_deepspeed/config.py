"""The DeepSpeed config as fulmen builds it: the user's config, the preset of a registry
name, and the Trainer's settings, merged so that nothing is decided twice.

Pure functions on dicts (no deepspeed import), so every rule is tested without a launch.
Why a conflict raises instead of one side winning: Lightning and Accelerate let a config's
``gradient_accumulation_steps`` silently override (or be overridden by) the trainer's, and
users trained with a different effective batch size than they asked for. Here an explicit
value must equal the Trainer's; ``"auto"`` (or leaving the key out) takes the Trainer's.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Dict, Optional, Union

from fulmen.errors import FulmenConfigError

AUTO = "auto"

#: fulmen precision name -> the DeepSpeed block it enables (None: neither fp16 nor bf16).
PRECISION_BLOCKS = {"32-true": None, "bf16-mixed": "bf16", "bf16-true": "bf16", "16-mixed": "fp16"}


def load_user_config(config: Union[None, str, Path, Dict[str, Any]]) -> Dict[str, Any]:
    """A deep copy of ``config`` (a dict, or the path of a JSON file); ``{}`` for None."""
    if config is None:
        return {}
    if isinstance(config, dict):
        return copy.deepcopy(config)
    path = Path(config)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FulmenConfigError(f"DeepSpeedStrategy(config={str(config)!r}): no such file") from None
    except json.JSONDecodeError as exc:
        raise FulmenConfigError(f"DeepSpeedStrategy(config={str(config)!r}) is not valid JSON: {exc}") from None


def preset_config(
    stage: Optional[int],
    offload_optimizer: bool = False,
    offload_parameters: bool = False,
    offload_device: str = "cpu",
    nvme_path: Optional[str] = None,
) -> Dict[str, Any]:
    """The ``zero_optimization`` block that the strategy's own arguments ask for."""
    if stage is None:
        return {}
    if stage not in (0, 1, 2, 3):
        raise FulmenConfigError(f"DeepSpeedStrategy(stage={stage!r}); ZeRO stages are 0, 1, 2 and 3")
    if offload_parameters and stage != 3:
        raise FulmenConfigError(f"offload_parameters=True needs stage=3 (got stage={stage})")
    if offload_optimizer and stage == 0:
        raise FulmenConfigError("offload_optimizer=True needs stage 1, 2 or 3 (got stage=0)")
    if offload_device not in ("cpu", "nvme"):
        raise FulmenConfigError(f"offload_device={offload_device!r}; use 'cpu' or 'nvme'")
    if offload_device == "nvme" and not nvme_path:
        raise FulmenConfigError("offload_device='nvme' needs nvme_path= (a directory on a fast local disk)")
    zero: Dict[str, Any] = {"stage": stage}
    target = {"device": offload_device, **({"nvme_path": nvme_path} if offload_device == "nvme" else {})}
    if offload_optimizer:
        zero["offload_optimizer"] = dict(target)
    if offload_parameters:
        zero["offload_param"] = dict(target)
    return {"zero_optimization": zero}


def merge_preset(user: Dict[str, Any], preset: Dict[str, Any]) -> Dict[str, Any]:
    """The user's config with the preset's ZeRO keys added; a key both set differently raises."""
    merged = copy.deepcopy(user)
    if not preset:
        return merged
    zero = merged.setdefault("zero_optimization", {})
    for key, value in preset["zero_optimization"].items():
        if key in zero and zero[key] != value:
            raise FulmenConfigError(
                f"the DeepSpeed config says zero_optimization.{key}={zero[key]!r} but DeepSpeedStrategy "
                f"asks for {value!r}; drop one of them (or make them equal)"
            )
        zero[key] = value
    return merged


def _settle(config: Dict[str, Any], key: str, trainer_value: Any, trainer_name: str, label: str) -> None:
    """``config[key]`` becomes ``trainer_value`` if absent or "auto"; else it must be equal."""
    current = config.get(key, AUTO)
    if current == AUTO:
        config[key] = trainer_value
    elif current != trainer_value:
        raise FulmenConfigError(
            f"the DeepSpeed config says {label}={current!r} but the Trainer has {trainer_name}={trainer_value!r}; "
            f"make them equal or set {label} to \"auto\" (fulmen then takes the Trainer's value)"
        )


def resolve_config(
    config: Dict[str, Any],
    *,
    accumulate_grad_batches: Optional[int] = None,
    gradient_clip_val: Optional[float] = None,
    gradient_clip_algorithm: Optional[str] = None,
    precision: str = "32-true",
    micro_batch_size: Optional[int] = None,
    world_size: int = 1,
) -> Dict[str, Any]:
    """Fill ``"auto"`` values from the Trainer's settings and refuse explicit ones that
    disagree with them. ``None`` for a Trainer setting means "not set by the Trainer"
    (Fabric, or a value the Trainer leaves open); then an explicit config value stands and
    ``"auto"`` takes DeepSpeed's default. Returns a new dict."""
    config = copy.deepcopy(config)

    if accumulate_grad_batches is not None:
        _settle(config, "gradient_accumulation_steps", accumulate_grad_batches, "accumulate_grad_batches",
                "gradient_accumulation_steps")
    elif config.get("gradient_accumulation_steps") == AUTO:
        config["gradient_accumulation_steps"] = 1

    if gradient_clip_val:
        if gradient_clip_algorithm not in (None, "norm"):
            raise FulmenConfigError(
                f"Trainer(gradient_clip_algorithm={gradient_clip_algorithm!r}): DeepSpeed clips by norm only; "
                "use gradient_clip_algorithm='norm'"
            )
        _settle(config, "gradient_clipping", float(gradient_clip_val), "gradient_clip_val", "gradient_clipping")
    elif config.get("gradient_clipping", AUTO) == AUTO:
        # Not absent: DeepSpeed's own default is 1.0, so a missing key would clip at 1.0
        # while the Trainer (or Fabric user) asked for no clipping.
        config["gradient_clipping"] = 0.0

    if micro_batch_size is not None:
        _settle(config, "train_micro_batch_size_per_gpu", micro_batch_size, "the train loader's batch_size",
                "train_micro_batch_size_per_gpu")
    if config.get("train_batch_size") == AUTO:
        del config["train_batch_size"]  # DeepSpeed derives it: micro x accumulation x world size
    elif "train_batch_size" in config and isinstance(config.get("train_micro_batch_size_per_gpu"), int):
        expected = config["train_micro_batch_size_per_gpu"] * config.get("gradient_accumulation_steps", 1) * world_size
        if config["train_batch_size"] != expected:
            raise FulmenConfigError(
                f"the DeepSpeed config says train_batch_size={config['train_batch_size']!r} but the Trainer trains "
                f"{expected} samples per step (micro-batch {config['train_micro_batch_size_per_gpu']} x "
                f"accumulation {config.get('gradient_accumulation_steps', 1)} x {world_size} processes); "
                "set train_batch_size to \"auto\" or remove it"
            )

    _resolve_precision(config, precision)
    return config


def _resolve_precision(config: Dict[str, Any], precision: str) -> None:
    if precision not in PRECISION_BLOCKS:
        raise FulmenConfigError(
            f"precision={precision!r} is not supported by DeepSpeed; use one of {sorted(PRECISION_BLOCKS)}"
        )
    wanted = PRECISION_BLOCKS[precision]
    for block in ("fp16", "bf16"):
        section = config.get(block)
        enabled = section.get("enabled", AUTO) if isinstance(section, dict) else None
        if block == wanted:
            if enabled is False:
                raise FulmenConfigError(
                    f"the DeepSpeed config says {block}.enabled=false but the Trainer has precision={precision!r}; "
                    f"remove the {block} block or set enabled to \"auto\""
                )
            config[block] = {**(section or {}), "enabled": True}
        elif section is not None:
            if enabled is True:
                raise FulmenConfigError(
                    f"the DeepSpeed config says {block}.enabled=true but the Trainer has precision={precision!r}; "
                    f"make them agree (precision={'16-mixed' if block == 'fp16' else 'bf16-mixed'!r}) or set "
                    "enabled to \"auto\""
                )
            config[block] = {**section, "enabled": False}
