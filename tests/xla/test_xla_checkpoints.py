"""Checkpoints on XLA: written through fulmen's checkpoint IO (on the host, atomic,
checksummed, ``weights_only``) or, under SPMD, as a DCP directory; resumed exactly; portable
between XLA and the CPU; and refused when damaged or forged, before anything is unpickled."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
from pathlib import Path

import pytest

from fulmen.errors import FulmenCheckpointError

from xla_helpers import PYTHON, max_difference, run


def _checkpoints(root: Path):
    return sorted(p for p in root.rglob("*.ckpt") if p.parent.name == "checkpoints")


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_single_device_checkpoint_is_a_host_file_and_resume_is_exact(tmp_path, precision):
    common = ("--strategy", "single_xla", "--precision", precision)
    [full] = run(tmp_path, "full", *common, "--epochs", "4", "--root", str(tmp_path / "a"))
    run(tmp_path, "first", *common, "--epochs", "2", "--root", str(tmp_path / "b"))
    [resumed] = run(tmp_path, "resumed", *common, "--epochs", "4", "--root", str(tmp_path / "b"),
                    "--resume", "last")
    assert resumed["seen_dtypes"] == (["torch.bfloat16"] if precision == "bf16-mixed" else ["torch.float32"])
    assert resumed["global_step"] == full["global_step"] == 32
    # Dropout (XLA's generator), AdamW's moments, the shuffled order: all continue exactly.
    assert max_difference(resumed["params"], full["params"]) == 0.0

    [path] = _checkpoints(tmp_path / "a")
    assert path.is_file()
    # Opened by plain torch in a process that never imports torch_xla: every tensor is on the CPU.
    code = (
        "import sys, torch\n"
        f"ckpt = torch.load({str(path)!r}, weights_only=True)\n"
        "devices = set()\n"
        "def walk(o):\n"
        "    if isinstance(o, torch.Tensor): devices.add(o.device.type)\n"
        "    elif isinstance(o, dict): [walk(v) for v in o.values()]\n"
        "    elif isinstance(o, (list, tuple)): [walk(v) for v in o]\n"
        "walk(ckpt)\n"
        "print(sorted(devices), 'torch_xla' in sys.modules, sorted(ckpt['state_dict']))\n"
    )
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ("['cpu'] False ['net.0.bias', 'net.0.weight', 'net.3.bias', 'net.3.weight']")


@pytest.mark.parametrize("first, then", [("xla", "cpu"), ("cpu", "xla")])
def test_a_checkpoint_moves_between_xla_and_the_cpu(tmp_path, first, then):
    """Without dropout (each device has its own generator) the continued run matches one
    that never moved, to float rounding."""
    common = ("--dropout", "0", "--epochs")
    [full] = run(tmp_path, "full", "--accelerator", first, *common, "4", "--root", str(tmp_path / "a"))
    run(tmp_path, "first", "--accelerator", first, *common, "2", "--root", str(tmp_path / "b"))
    [moved] = run(tmp_path, "moved", "--accelerator", then, *common, "4", "--root", str(tmp_path / "b"),
                  "--resume", "last")
    assert moved["param_device"].startswith(then) and moved["global_step"] == 32
    assert max_difference(moved["params"], full["params"]) < 1e-4


def test_two_processes_write_once_and_resume_exactly(tmp_path):
    args = ("--strategy", "xla", "--devices", "2", "--batch-size", "4")
    full = run(tmp_path, "full", *args, "--epochs", "4", "--root", str(tmp_path / "a"), cpu_devices=2)
    run(tmp_path, "first", *args, "--epochs", "2", "--root", str(tmp_path / "b"), cpu_devices=2)
    resumed = run(tmp_path, "resumed", *args, "--epochs", "4", "--root", str(tmp_path / "b"), "--resume", "last",
                  cpu_devices=2)
    assert len(_checkpoints(tmp_path / "a")) == 1
    for rank in (0, 1):
        assert max_difference(resumed[rank]["params"], full[rank]["params"]) == 0.0


# ---------------------------------------------------------------------- SPMD directories
@pytest.fixture(scope="module")
def spmd_runs(tmp_path_factory):
    """An SPMD run of 4 epochs, and one of 2 epochs resumed to 4, on 2 PJRT CPU devices."""
    tmp = tmp_path_factory.mktemp("spmd")
    args = ("--strategy", "xla_spmd", "--devices", "auto")
    [full] = run(tmp, "full", *args, "--epochs", "4", "--root", str(tmp / "a"), cpu_devices=2)
    [first] = run(tmp, "first", *args, "--epochs", "2", "--root", str(tmp / "b"), cpu_devices=2)
    [resumed] = run(tmp, "resumed", *args, "--epochs", "4", "--root", str(tmp / "b"), "--resume", "last",
                    cpu_devices=2)
    return tmp, full, first, resumed


def test_spmd_checkpoint_is_a_complete_directory_and_resume_is_exact(spmd_runs):
    tmp, full, first, resumed = spmd_runs
    [directory] = _checkpoints(tmp / "a")
    assert directory.is_dir()
    names = sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())
    assert names[:2] == ["fulmen_manifest.json", "meta.ckpt"] and "tensors/.metadata" in names
    assert any(n.endswith(".distcp") for n in names)
    assert not [p for p in directory.parent.iterdir() if p.name.startswith(".")]  # no temporary left
    assert resumed["global_step"] == full["global_step"] == 32
    assert max_difference(resumed["params"], full["params"]) == 0.0
    # The reloaded optimizer state is sharded like its parameter again.
    assert resumed["sharding"]["exp_avg"] == resumed["sharding"]["params"]
    assert resumed["sharding"]["params"]["net.0.weight"].startswith("{devices=[")


def test_spmd_directory_loads_on_the_cpu_without_starting_xla(spmd_runs):
    tmp, full, first, resumed = spmd_runs
    [directory] = _checkpoints(tmp / "a")
    code = (
        "import sys, json\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from xla_script import Regression\n"
        f"m = Regression.load_from_checkpoint({str(directory)!r})\n"
        "print(json.dumps({'device': str(next(m.parameters()).device), 'xla': 'torch_xla' in sys.modules,\n"
        "    'params': {k: v.flatten().tolist() for k, v in m.state_dict().items()}}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PJRT_DEVICE", "CPU_NUM_DEVICES")}
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-4000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded["device"] == "cpu"
    assert max_difference(loaded["params"], full["params"]) == 0.0


def test_spmd_directory_resumes_on_one_device(spmd_runs, tmp_path):
    tmp, full, first, resumed = spmd_runs
    [directory] = _checkpoints(tmp / "b")
    [single] = run(tmp_path, "single", "--strategy", "single_xla", "--epochs", "5", "--resume", str(directory))
    assert single["global_step"] == 40 and single["param_device"] == "xla:0"


def _copy(directory: Path, tmp_path: Path) -> Path:
    import shutil

    target = tmp_path / directory.name
    shutil.copytree(directory, target)
    return target


def _load_on_host(path: Path):
    from fulmen_xla import spmd_checkpoint

    return spmd_checkpoint.load(path)


def test_a_flipped_byte_in_a_shard_is_refused_naming_the_file(spmd_runs, tmp_path):
    tmp, *_ = spmd_runs
    directory = _copy(_checkpoints(tmp / "a")[0], tmp_path)
    shard = next((directory / "tensors").glob("*.distcp"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(FulmenCheckpointError, match=r"__0_0\.distcp' is corrupted"):
        _load_on_host(directory)


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {_Payload.marker}",))


def test_a_forged_index_with_a_matching_manifest_runs_no_code(spmd_runs, tmp_path):
    """The attacker who can write the directory can also rewrite the manifest: the
    restricted unpickler is what stops the pickle."""
    from fulmen.io import manifest

    from fulmen_xla import spmd_checkpoint

    tmp, *_ = spmd_runs
    directory = _copy(_checkpoints(tmp / "a")[0], tmp_path)
    _Payload.marker = str(tmp_path / "pwned")
    (directory / "tensors" / ".metadata").write_bytes(pickle.dumps(_Payload()))
    manifest.write_manifest(directory, spmd_checkpoint.MANIFEST_FORMAT)
    with pytest.raises(FulmenCheckpointError, match=r"\.metadata' is not the tensor index fulmen writes.*posix.system"):
        _load_on_host(directory)
    assert not (tmp_path / "pwned").exists()


def test_an_unfinished_directory_is_refused(spmd_runs, tmp_path):
    tmp, *_ = spmd_runs
    directory = _copy(_checkpoints(tmp / "a")[0], tmp_path)
    (directory / "fulmen_manifest.json").unlink()
    from fulmen_xla import spmd_checkpoint

    assert not spmd_checkpoint.is_spmd_checkpoint(directory)
    with pytest.raises(FulmenCheckpointError, match="has no fulmen_manifest.json"):
        spmd_checkpoint.verify(directory)
