"""The read side of fulmen's DeepSpeed checkpoint directories, on real ones.

One 2-process launch (ds_raw_checkpoint_script.py, ~40 s) writes ZeRO-2 and ZeRO-3
directories exactly as the strategy lays them out, with the weights gathered from the live
engines beside them, and tries ``safe_load.install``-ed engines on clean and poisoned
copies. Then: the converter gives those weights back exactly, ``load_from_checkpoint(DIR)``
and the converted file rebuild the module, the command works, and every kind of damage or
tampering is refused naming the file, each on a copy of the directory.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import fulmen
from ds_helpers import HERE, PYTHON, read_json, run
from fulmen.errors import FulmenCheckpointError

pytestmark = pytest.mark.timeout(420)

SCRIPT = HERE / "ds_raw_checkpoint_script.py"
CKPT = "epoch=0-step=3.ckpt"
STAGES = [2, 3]
MODEL_FILE = {2: "checkpoint/mp_rank_00_model_states.pt", 3: "checkpoint/zero_pp_rank_0_mp_rank_00_model_states.pt"}
OPTIM_FILE = "checkpoint/zero_pp_rank_1_mp_rank_00_optim_states.pt"


class Small(fulmen.Module):
    """The launch script's Net as a fulmen.Module: rebuilt from the saved hyperparameters."""

    def __init__(self, width: int = 7, frozen_width: int = 7) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(5, width), nn.BatchNorm1d(width), nn.Tanh(),
                                 nn.Linear(width, frozen_width), nn.Tanh(), nn.Linear(frozen_width, 3))


class Payload:
    """Unpickling this writes ``marker``: a stand-in for ``os.system`` in a poisoned file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('payload ran')",))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def launched(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ds-checkpoint-files")
    cmd = [PYTHON, "-m", "torch.distributed.run", "--nproc-per-node", 2, "--master-addr", "127.0.0.1",
           "--master-port", _free_port(), SCRIPT, "--out", root]
    proc = run(cmd, root, "launch", timeout=300)  # the log stays in root/launch.log
    assert proc.returncode == 0, proc.log[-6000:]
    return root


def checkpoint(root: Path, stage: int) -> Path:
    return root / f"stage{stage}" / CKPT


def reference(root: Path, stage: int):
    """The launch's gathered weights, by the user's names (DeepSpeed's minus ``module.``)."""
    saved = torch.load(root / f"stage{stage}" / "reference.pt", weights_only=True)
    return {name[len("module."):]: tensor for name, tensor in saved.items()}


@pytest.fixture
def copy_of(launched, tmp_path):
    def make(stage: int) -> Path:
        return Path(shutil.copytree(checkpoint(launched, stage), tmp_path / f"copy-stage{stage}" / CKPT))
    return make


@pytest.fixture
def plugins_on(monkeypatch):
    from fulmen.plugins import discovery

    for var in (discovery.ENV_DISABLE_AUTOLOAD, discovery.ENV_ALLOW, discovery.ENV_DENY):
        monkeypatch.delenv(var, raising=False)


def assert_equal_state(got, expected):
    assert list(got) == list(Small().state_dict())  # the model's names, in its order
    for name, tensor in expected.items():
        assert got[name].dtype == tensor.dtype and got[name].shape == tensor.shape, name
        assert torch.equal(got[name], tensor), name


def refusal(directory: Path, relative: str, *words: str) -> str:
    from fulmen_deepspeed.manifest import verify_checkpoint_directory

    with pytest.raises(FulmenCheckpointError) as info:
        verify_checkpoint_directory(directory)
    message = str(info.value)
    assert str(directory / relative) in message, message
    for word in words:
        assert word in message, message
    return message


def rewrite_manifest_entry(directory: Path, relative: str) -> None:
    """What an attacker who can write the directory does: make the manifest match the new file."""
    from fulmen.io.manifest import _sha256

    path = directory / "fulmen_manifest.json"
    manifest = json.loads(path.read_text())
    manifest["files"][relative] = {"size": (directory / relative).stat().st_size, "sha256": _sha256(directory / relative)}
    path.write_text(json.dumps(manifest))


# ----------------------------------------------------------------------------- consolidation


@pytest.mark.parametrize("stage", STAGES)
def test_the_consolidated_weights_are_the_gathered_ones_exactly(launched, stage):
    from fulmen_deepspeed.convert import read_full_state_dict

    got = read_full_state_dict(checkpoint(launched, stage))
    expected = reference(launched, stage)
    assert sorted(got) == sorted(expected)
    assert_equal_state(got, expected)
    # Buffers (an integer one too) and the frozen layer are there, nothing is empty.
    assert got["net.1.num_batches_tracked"].dtype == torch.int64 and int(got["net.1.num_batches_tracked"]) == 3
    assert "net.3.weight" in got and all(t.numel() > 0 for t in got.values())


def test_zero3_model_states_hold_empty_placeholders_the_reader_does_not_use(launched):
    from fulmen_deepspeed import safe_load

    states = safe_load.load(checkpoint(launched, 3) / MODEL_FILE[3])
    assert states["module"]["module.net.0.weight"].shape == torch.Size([0])  # Lightning #18648's tensors


def test_a_parameter_saved_with_an_empty_shape_is_refused_naming_it(copy_of):
    from fulmen_deepspeed import safe_load
    from fulmen_deepspeed.convert import read_full_state_dict

    directory = copy_of(3)
    for rank in (0, 1):
        relative = f"checkpoint/zero_pp_rank_{rank}_mp_rank_00_model_states.pt"
        states = safe_load.load(directory / relative)
        states["param_shapes"][0]["module.net.0.weight"] = torch.Size([0])
        torch.save(states, directory / relative)
        rewrite_manifest_entry(directory, relative)
    with pytest.raises(FulmenCheckpointError, match=r"'module\.net\.0\.weight'.*empty shape.*18648"):
        read_full_state_dict(directory)


@pytest.mark.parametrize("stage", STAGES)
def test_load_from_checkpoint_reads_the_directory(launched, plugins_on, stage):
    module = Small.load_from_checkpoint(checkpoint(launched, stage))
    assert dict(module.hparams) == {"width": 7, "frozen_width": 7}
    assert_equal_state(module.state_dict(), reference(launched, stage))


@pytest.mark.parametrize("stage", STAGES)
def test_convert_writes_one_checksummed_weights_file(launched, plugins_on, tmp_path, stage):
    from fulmen.io.checkpoint_io import TorchCheckpointIO
    from fulmen_deepspeed.convert import convert_checkpoint

    out = convert_checkpoint(checkpoint(launched, stage), tmp_path / "new" / "dir" / "full.ckpt")
    assert out == tmp_path / "new" / "dir" / "full.ckpt"
    plain = torch.load(out, weights_only=True)
    assert sorted(TorchCheckpointIO().load_checkpoint(out)) == sorted(plain)  # fulmen's footer checks out
    assert_equal_state(plain["state_dict"], reference(launched, stage))
    for tensor in plain["state_dict"].values():  # own storage each: no flat buffer written behind a view
        assert tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()
    assert plain["hyper_parameters"] == {"width": 7, "frozen_width": 7} and plain["global_step"] == 3
    assert plain["note"] == "kept by the converter"
    for key in ("loops", "optimizer_states", "lr_schedulers", "callbacks", "rng", "_fulmen_deepspeed"):
        assert key not in plain, key  # a weights checkpoint: the core does not try to resume from it
    assert_equal_state(Small.load_from_checkpoint(out).state_dict(), reference(launched, stage))


def test_convert_refuses_to_write_into_its_input(launched, tmp_path):
    from fulmen_deepspeed.convert import convert_checkpoint
    from fulmen_deepspeed.manifest import verify_checkpoint_directory

    directory = checkpoint(launched, 2)
    for output in (directory, directory / "full.ckpt", directory / "checkpoint" / "x.ckpt"):
        with pytest.raises(FulmenCheckpointError, match="would overwrite or change the checkpoint"):
            convert_checkpoint(directory, output)
    verify_checkpoint_directory(directory)  # untouched


# ----------------------------------------------------------------------------- the command


def test_the_command_converts_and_describes(launched, tmp_path):
    out = tmp_path / "full.ckpt"
    proc = subprocess.run([PYTHON, "-m", "fulmen_deepspeed", "convert", checkpoint(launched, 3), out],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stdout.splitlines()  # after deepspeed's own accelerator warning
    assert_equal_state(torch.load(out, weights_only=True)["state_dict"], reference(launched, 3))
    command = Path(sys.executable).with_name("fulmen-deepspeed")  # the console script
    proc = subprocess.run([command, "info", checkpoint(launched, 3)], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "ZeRO stage 3 checkpoint written by 2 process(es) with deepspeed 0.19.8" in proc.stdout
    # 80 trainable + 56 frozen + 15 buffer elements in 11 state-dict entries
    assert "11 tensors, 151 elements" in proc.stdout and "global step 3" in proc.stdout


def test_the_command_exits_1_with_one_line_for_a_bad_checkpoint(copy_of, tmp_path):
    directory = copy_of(2)
    (directory / OPTIM_FILE).write_bytes((directory / OPTIM_FILE).read_bytes()[:100])
    cases = [(["info", directory], str(directory / OPTIM_FILE)),
             (["convert", directory, tmp_path / "out.ckpt"], str(directory / OPTIM_FILE)),
             (["info", tmp_path / "nothing"], str(tmp_path / "nothing"))]
    for argv, named in cases:
        proc = subprocess.run([PYTHON, "-m", "fulmen_deepspeed", *argv], capture_output=True, text=True, timeout=180)
        assert proc.returncode == 1, proc.stderr
        errors = [line for line in proc.stderr.splitlines() if line.startswith("fulmen-deepspeed: error:")]
        assert len(errors) == 1 and named in errors[0] and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "out.ckpt").exists()


# ----------------------------------------------------------------------------- refusals


def test_the_manifest_lists_every_other_file(launched):
    from fulmen_deepspeed.manifest import verify_checkpoint_directory

    manifest = verify_checkpoint_directory(checkpoint(launched, 3))
    assert manifest["format"] == "fulmen.deepspeed.manifest" and manifest["version"] == 1
    assert sorted(manifest["files"]) == sorted(
        ["fulmen_checkpoint.pt", "latest"] + [f"checkpoint/zero_pp_rank_{r}_mp_rank_00_{kind}_states.pt"
                                              for r in (0, 1) for kind in ("model", "optim")])
    assert not list(checkpoint(launched, 3).glob("*.py"))  # DeepSpeed's copied scripts are gone


def test_a_truncated_file_is_refused(copy_of):
    directory = copy_of(2)
    data = (directory / OPTIM_FILE).read_bytes()
    (directory / OPTIM_FILE).write_bytes(data[: len(data) // 2])
    refusal(directory, OPTIM_FILE, "truncated")


def test_an_appended_file_is_refused(copy_of):
    directory = copy_of(2)
    with open(directory / OPTIM_FILE, "ab") as handle:
        handle.write(b"x")
    refusal(directory, OPTIM_FILE, "appended")


@pytest.mark.parametrize("stage", STAGES)
def test_one_flipped_byte_is_refused(copy_of, stage):
    directory = copy_of(stage)
    data = bytearray((directory / MODEL_FILE[stage]).read_bytes())
    data[len(data) // 2] ^= 0x01
    (directory / MODEL_FILE[stage]).write_bytes(bytes(data))
    refusal(directory, MODEL_FILE[stage], "corrupted", "SHA-256")


def test_a_planted_file_is_refused_not_ignored(copy_of):
    directory = copy_of(3)
    (directory / "checkpoint" / "zero_pp_rank_2_mp_rank_00_optim_states.pt").write_bytes(b"extra")
    refusal(directory, "checkpoint/zero_pp_rank_2_mp_rank_00_optim_states.pt", "not listed in the manifest")


def test_a_missing_file_is_refused(copy_of):
    directory = copy_of(3)
    (directory / OPTIM_FILE).unlink()
    refusal(directory, OPTIM_FILE, "missing")


def test_a_symlink_is_refused(copy_of, tmp_path):
    directory = copy_of(2)
    outside = tmp_path / "moved.pt"
    shutil.move(directory / OPTIM_FILE, outside)
    (directory / OPTIM_FILE).symlink_to(outside)  # same bytes: only the link itself is wrong
    refusal(directory, OPTIM_FILE, "symbolic link")


def test_a_missing_manifest_is_an_unfinished_save(copy_of, plugins_on):
    from fulmen_deepspeed.convert import read_checkpoint

    directory = copy_of(2)
    (directory / "fulmen_manifest.json").unlink()
    refusal(directory, "", "has no fulmen_manifest.json", "did not finish")
    with pytest.raises(FulmenCheckpointError, match="has no fulmen_manifest.json"):
        read_checkpoint(directory)  # ours (the header says so), so not None: refused
    with pytest.raises(FulmenCheckpointError, match="has no fulmen_manifest.json"):
        Small.load_from_checkpoint(directory)


@pytest.mark.parametrize("stage", STAGES)
def test_a_code_carrying_pickle_matching_the_manifest_is_refused_unrun(copy_of, plugins_on, tmp_path, stage):
    from fulmen_deepspeed.convert import convert_checkpoint

    directory = copy_of(stage)
    marker = tmp_path / "payload-ran"
    torch.save({"module": Payload(marker)}, directory / MODEL_FILE[stage])
    rewrite_manifest_entry(directory, MODEL_FILE[stage])  # size and checksum match: only the probe can tell
    refusal(directory, MODEL_FILE[stage], "refusing to load", "GLOBAL exec")
    with pytest.raises(FulmenCheckpointError, match="refusing to load"):
        Small.load_from_checkpoint(directory)
    with pytest.raises(FulmenCheckpointError, match="refusing to load"):
        convert_checkpoint(directory, tmp_path / "out.ckpt")
    assert not marker.exists()
    # The payload is live: what DeepSpeed itself does with the file would have run it.
    live = tmp_path / "live.pt"
    torch.save({"module": Payload(tmp_path / "control")}, live)
    torch.load(live, weights_only=False)
    assert (tmp_path / "control").read_text() == "payload ran"


def test_directories_that_are_not_ours_are_left_to_others(tmp_path, copy_of):
    from fulmen.io.checkpoint_io import TorchCheckpointIO
    from fulmen_deepspeed import plugin

    assert plugin.read_checkpoint_directory(str(tmp_path)) is None  # an empty directory
    other = tmp_path / "fsdp.ckpt"
    other.mkdir()
    TorchCheckpointIO().save_checkpoint({"_fulmen_sharded": {"format": "fulmen.sharded"}}, other / "fulmen_checkpoint.pt")
    assert plugin.read_checkpoint_directory(str(other)) is None
    raw = copy_of(2)  # DeepSpeed's files without fulmen's: nothing vouches for them
    (raw / "fulmen_manifest.json").unlink()
    (raw / "fulmen_checkpoint.pt").unlink()
    with pytest.raises(FulmenCheckpointError, match="DeepSpeed checkpoint that fulmen did not write"):
        plugin.read_checkpoint_directory(str(raw))


# ----------------------------------------------------------------------------- DeepSpeed's own reads


def test_an_installed_engine_loads_clean_checkpoints_at_both_stages(launched):
    for rank in (0, 1):
        result = read_json(launched / f"rank_{rank}.json")
        for stage in STAGES:
            assert result[f"clean_stage{stage}_engine"] == "SafeCheckpointEngine"
            assert result[f"clean_stage{stage}"] == "loaded"
            # The weights DeepSpeed loaded are the saved ones; the buffers too, but ZeRO-3 keeps
            # each rank's own (rank 1's are not the reference, which holds rank 0's).
            assert result[f"clean_stage{stage}_params_equal"] is True
            if rank == 0 or stage == 2:
                assert result[f"clean_stage{stage}_buffers_equal"] is True


@pytest.mark.parametrize("key,file", [
    ("evil_model", lambda rank: "mp_rank_00_model_states.pt"),
    ("evil_optim", lambda rank: f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt"),
])
def test_an_installed_engine_refuses_a_code_carrying_file(launched, key, file):
    for rank in (0, 1):
        error = read_json(launched / f"rank_{rank}.json")[key]
        assert error.startswith("fulmen.errors.FulmenCheckpointError: refusing to load"), error
        assert str(launched / "install" / key / "checkpoint" / file(rank)) in error
        assert "add_safe_globals" not in error  # torch's advice to allow it is not passed on
    assert not (launched / "install" / f"{key}.marker").exists()
