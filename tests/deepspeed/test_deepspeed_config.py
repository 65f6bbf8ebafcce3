"""The config rules, without a launch: presets from the strategy's arguments, "auto" filled
from the Trainer's settings, and every contradiction refused with both values named."""

from __future__ import annotations

import json

import pytest

from fulmen.errors import FulmenConfigError
from fulmen_deepspeed.config import load_user_config, merge_preset, preset_config, resolve_config


def test_auto_and_missing_values_take_the_trainers():
    config = resolve_config(
        {"gradient_accumulation_steps": "auto", "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto"},
        accumulate_grad_batches=4, gradient_clip_val=1.5, micro_batch_size=8, world_size=2,
    )
    assert config == {"gradient_accumulation_steps": 4, "gradient_clipping": 1.5, "train_micro_batch_size_per_gpu": 8}


def test_equal_explicit_values_are_kept():
    given = {"gradient_accumulation_steps": 2, "gradient_clipping": 1.0, "train_micro_batch_size_per_gpu": 4,
             "train_batch_size": 16}
    assert resolve_config(given, accumulate_grad_batches=2, gradient_clip_val=1.0, micro_batch_size=4,
                          world_size=2) == given


@pytest.mark.parametrize(
    "given,trainer,message",
    [
        ({"gradient_accumulation_steps": 4}, {"accumulate_grad_batches": 2},
         "gradient_accumulation_steps=4 but the Trainer has accumulate_grad_batches=2"),
        ({"gradient_clipping": 1.0}, {"gradient_clip_val": 0.5},
         "gradient_clipping=1.0 but the Trainer has gradient_clip_val=0.5"),
        ({"train_micro_batch_size_per_gpu": 8}, {"micro_batch_size": 4},
         "train_micro_batch_size_per_gpu=8 but the Trainer has the train loader's batch_size=4"),
        ({"train_batch_size": 10, "train_micro_batch_size_per_gpu": 4}, {"accumulate_grad_batches": 2, "world_size": 2},
         "train_batch_size=10 but the Trainer trains 16 samples per step"),
        ({"bf16": {"enabled": True}}, {"precision": "32-true"}, "bf16.enabled=true but the Trainer has precision='32-true'"),
        ({"fp16": {"enabled": False}}, {"precision": "16-mixed"}, "fp16.enabled=false but the Trainer has precision='16-mixed'"),
    ],
)
def test_a_contradiction_raises_naming_both_values(given, trainer, message):
    with pytest.raises(FulmenConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_config(given, **trainer)


def test_clipping_by_value_and_unknown_precisions_are_refused():
    with pytest.raises(FulmenConfigError, match="clips by norm only"):
        resolve_config({}, gradient_clip_val=1.0, gradient_clip_algorithm="value")
    with pytest.raises(FulmenConfigError, match=r"precision='64-true' is not supported by DeepSpeed"):
        resolve_config({}, precision="64-true")


@pytest.mark.parametrize("precision,block", [("bf16-mixed", "bf16"), ("bf16-true", "bf16"), ("16-mixed", "fp16")])
def test_precision_fills_its_block_and_disables_the_other(precision, block):
    config = resolve_config({"fp16": {"enabled": "auto", "loss_scale": 0}, "bf16": {"enabled": "auto"}}, precision=precision)
    other = "fp16" if block == "bf16" else "bf16"
    assert config[block]["enabled"] is True and config[other]["enabled"] is False
    assert config["fp16"].get("loss_scale") == 0  # the user's other keys stay


def test_no_clipping_is_written_out_because_deepspeeds_default_clips_at_1():
    assert resolve_config({})["gradient_clipping"] == 0.0
    assert resolve_config({}, gradient_clip_val=None, accumulate_grad_batches=1)["gradient_clipping"] == 0.0


def test_without_a_trainer_explicit_values_stand_and_auto_takes_deepspeeds_defaults():
    assert resolve_config({"gradient_accumulation_steps": 3, "gradient_clipping": 2.0}) == {
        "gradient_accumulation_steps": 3, "gradient_clipping": 2.0}
    assert resolve_config({"gradient_accumulation_steps": "auto", "gradient_clipping": "auto"}) == {
        "gradient_accumulation_steps": 1, "gradient_clipping": 0.0}


def test_presets_and_their_conflicts_with_the_users_config():
    assert preset_config(3, offload_optimizer=True, offload_parameters=True) == {"zero_optimization": {
        "stage": 3, "offload_optimizer": {"device": "cpu"}, "offload_param": {"device": "cpu"}}}
    assert merge_preset({"zero_optimization": {"stage": 2, "overlap_comm": True}}, preset_config(2)) == {
        "zero_optimization": {"stage": 2, "overlap_comm": True}}
    with pytest.raises(FulmenConfigError, match=r"zero_optimization.stage=3 but DeepSpeedStrategy asks for 2"):
        merge_preset({"zero_optimization": {"stage": 3}}, preset_config(2))
    with pytest.raises(FulmenConfigError, match="offload_parameters=True needs stage=3"):
        preset_config(2, offload_parameters=True)
    with pytest.raises(FulmenConfigError, match="ZeRO stages are 0, 1, 2 and 3"):
        preset_config(4)
    with pytest.raises(FulmenConfigError, match="needs nvme_path="):
        preset_config(3, offload_optimizer=True, offload_device="nvme")


def test_a_config_file_is_read_and_a_bad_one_named(tmp_path):
    good = tmp_path / "ds.json"
    good.write_text(json.dumps({"zero_optimization": {"stage": 1}}))
    assert load_user_config(good) == {"zero_optimization": {"stage": 1}}
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(FulmenConfigError, match="bad.json.*not valid JSON"):
        load_user_config(bad)
    with pytest.raises(FulmenConfigError, match="no such file"):
        load_user_config(tmp_path / "missing.json")


def test_the_strategy_checks_its_arguments_at_construction():
    from fulmen_deepspeed import DeepSpeedStrategy

    assert DeepSpeedStrategy().stage == 2
    assert DeepSpeedStrategy(config={"zero_optimization": {"stage": 1}}).stage == 1
    with pytest.raises(FulmenConfigError, match="stage=3 but DeepSpeedStrategy asks for 1"):
        DeepSpeedStrategy(stage=1, config={"zero_optimization": {"stage": 3}})
