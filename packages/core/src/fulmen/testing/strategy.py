"""Strategy conformance: layout, collectives, training equivalence, exact save/restore.

The checks run the reference problem through ``Fabric`` (the layer both the Trainer and
Fabric users go through) on every rank, write one JSON report per rank, and compare those
reports with plain-PyTorch ground truth. A single-process run happens in this process; a
multi-process one (``devices > 1``) runs ``python -m fulmen.testing._worker`` in a
subprocess, where the strategy's own launcher starts the other ranks, exactly as in a
user's job. The contract, rule by rule:

* layout: ranks ``0..world_size-1`` exist once each, every rank agrees on ``world_size``,
  only rank 0 ``is_global_zero``, the root device is of the accelerator's type;
* collectives: ``all_reduce`` (sum, mean, max, min), ``all_gather`` (rank order, a new
  leading dimension), ``broadcast`` from the first and the last rank, ``all_gather_object``
  and ``barrier`` give the mathematically expected results on every rank;
* training: after ``epochs`` over the reference data with per-rank batches of
  ``GLOBAL_BATCH / world_size``, every rank holds the same parameters, within tolerance of
  one device training on the global batches;
* state: ``fabric.save`` then ``fabric.load`` into a freshly set-up model and optimizer
  restores every parameter and optimizer tensor bit for bit, plain values come back, and
  one further step from either gives identical parameters.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from fulmen.testing import reference
from fulmen.testing._common import ConformanceError, describe, fail, first_difference, import_path, plain

REPORT_NAME = "rank_{rank}.json"
DEFAULT_TIMEOUT = 300


@dataclass
class StrategyReport:
    """What every rank measured; the ``check_*`` functions judge it."""

    spec: Any
    devices: int
    accelerator: str
    ranks: List[Dict[str, Any]] = field(default_factory=list)
    log: str = ""

    @property
    def name(self) -> str:
        """The strategy as it appears in failure messages."""
        return describe(self.spec)


# ---------------------------------------------------------------------------- on every rank


def run_on_rank(fabric: Any, out_dir: Any, epochs: int = reference.EPOCHS) -> Dict[str, Any]:
    """The measurements of one rank (called in this process, or by the launched workers)."""
    out_dir = Path(out_dir)
    strategy = fabric.strategy
    rank, world = fabric.global_rank, fabric.world_size
    result: Dict[str, Any] = {
        "rank": rank,
        "world_size": world,
        "local_rank": fabric.local_rank,
        "node_rank": fabric.node_rank,
        "is_global_zero": bool(fabric.is_global_zero),
        "device_type": fabric.device.type,
        "strategy": f"{type(strategy).__module__}.{type(strategy).__qualname__}",
    }
    result["collectives"] = _collectives(fabric, rank, world)

    model, optimizer = _setup(fabric, seed=0)
    loader = fabric.setup_dataloaders(reference.reference_loader(batch_size=max(1, reference.GLOBAL_BATCH // world)))
    losses = []
    for _ in range(epochs):
        for x, y in loader:
            losses.append(_step(fabric, model, optimizer, x, y))
    result["losses"] = losses
    trained = _module_state(strategy, model)
    result["parameters"] = {k: v.float().flatten().tolist() for k, v in trained.items()}
    result["parameter_dtypes"] = {k: str(v.dtype) for k, v in trained.items()}

    path = out_dir / "conformance.ckpt"
    fabric.save(path, {"model": model, "optimizer": optimizer, "epochs": epochs, "note": "conformance"})
    restored_model, restored_optimizer = _setup(fabric, seed=1)
    remainder = fabric.load(path, {"model": restored_model, "optimizer": restored_optimizer})
    restore = {
        "remainder": {k: v for k, v in remainder.items() if isinstance(v, (int, float, str))},
        "model": first_difference(trained, _module_state(strategy, restored_model)),
        "optimizer": first_difference(
            plain(strategy.optimizer_state_dict(optimizer)), plain(strategy.optimizer_state_dict(restored_optimizer))
        ),
    }
    x, y = next(iter(loader))
    _step(fabric, model, optimizer, x, y)
    _step(fabric, restored_model, restored_optimizer, x, y)
    restore["after_step"] = first_difference(_module_state(strategy, model), _module_state(strategy, restored_model))
    result["restore"] = restore
    fabric.barrier("fulmen.testing")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / REPORT_NAME.format(rank=rank)).write_text(json.dumps(result))
    return result


def _setup(fabric: Any, seed: int):
    model = reference.make_model(seed)
    optimizer = reference.make_optimizer(model.parameters())
    return fabric.setup(model, optimizer)


def _step(fabric: Any, model: Any, optimizer: Any, x: Any, y: Any) -> float:
    optimizer.zero_grad()
    loss = reference.loss_fn(model(x), y)
    fabric.backward(loss)
    optimizer.step()
    return float(loss.detach().float().item())


def _module_state(strategy: Any, model: Any) -> Dict[str, torch.Tensor]:
    from fulmen.fabric.state import collect_state

    return plain(collect_state({"model": model}, strategy)["model"])


def _collectives(fabric: Any, rank: int, world: int) -> Dict[str, Any]:
    strategy = fabric.strategy
    device = fabric.device

    def value(x: float) -> torch.Tensor:
        return torch.tensor([x], dtype=torch.float32, device=device)

    out: Dict[str, Any] = {}
    for op in ("sum", "mean", "max", "min"):
        x = rank + 1.0  # never zero, so a doubled or dropped value shows
        reduced = strategy.all_reduce(value(x), op)
        out[f"all_reduce_{op}"] = reduced.float().cpu().tolist()
        out[f"all_reduce_{op}_device"] = reduced.device.type
    gathered = strategy.all_gather(torch.tensor([rank, rank * 10], device=device))
    out["all_gather"] = gathered.cpu().tolist()
    out["broadcast_first"] = strategy.broadcast({"from": rank, "payload": [1, 2, 3]}, 0)
    out["broadcast_last"] = strategy.broadcast({"from": rank}, world - 1)
    out["all_gather_object"] = strategy.all_gather_object({"rank": rank})
    strategy.barrier("fulmen.testing.collectives")
    return out


# ---------------------------------------------------------------------------- running


def run_strategy(
    strategy: Any,
    devices: int = 1,
    accelerator: str = "cpu",
    precision: Any = None,
    workdir: Optional[os.PathLike] = None,
    epochs: int = reference.EPOCHS,
    timeout: float = DEFAULT_TIMEOUT,
) -> StrategyReport:
    """Measure ``strategy`` (a registered name, ``"module:attr"``, a class or a factory) on
    ``devices`` ranks; in this process for one device, in a subprocess otherwise."""
    import tempfile

    workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="fulmen-conformance-"))
    workdir.mkdir(parents=True, exist_ok=True)
    report = StrategyReport(strategy, devices, accelerator)
    if devices < 1 or reference.GLOBAL_BATCH % devices:
        raise ConformanceError(
            f"[fulmen conformance] devices={devices}: the reference batch of {reference.GLOBAL_BATCH} samples must "
            "split evenly across the ranks; use 1, 2, 4, 8 or 16"
        )
    if devices == 1:
        report.ranks = [_run_here(strategy, accelerator, precision, workdir, epochs)]
        return report
    path = import_path(strategy)
    if path is None:
        raise ConformanceError(
            f"[fulmen conformance] strategy {describe(strategy)}: devices={devices} runs the check in new processes, "
            "which must import the strategy; pass its registered name or 'module:attr', or define it at module level"
        )
    report.log, returncode = _run_subprocess(path, devices, accelerator, precision, workdir, epochs, timeout)
    for rank in range(devices):
        file = workdir / REPORT_NAME.format(rank=rank)
        if file.exists():
            report.ranks.append(json.loads(file.read_text()))
    if returncode != 0 or len(report.ranks) != devices:
        raise fail(
            "strategy", strategy, f"the {devices}-process run failed (exit status {returncode}, "
            f"{len(report.ranks)} of {devices} rank reports written)", "log tail:\n" + report.log[-6000:]
        )
    return report


def _make(spec: Any) -> Any:
    """What ``Fabric(strategy=...)`` receives: a name stays a name (the registry resolves
    it, as for users); anything else is called to make a strategy object."""
    from fulmen.plugins.discovery import import_object

    if isinstance(spec, str) and ":" not in spec:
        return spec
    target = import_object(spec) if isinstance(spec, str) else spec
    return target() if callable(target) else target


def _run_here(strategy: Any, accelerator: str, precision: Any, workdir: Path, epochs: int) -> Dict[str, Any]:
    import fulmen
    from fulmen.testing._common import preserved_rng

    with preserved_rng():
        fabric = fulmen.Fabric(accelerator=accelerator, strategy=_make(strategy), devices=1, precision=precision)
        try:
            return run_on_rank(fabric, workdir, epochs)
        finally:
            fabric.strategy.teardown()


def _run_subprocess(path: str, devices: int, accelerator: str, precision: Any, workdir: Path, epochs: int, timeout: float):
    command = [sys.executable, "-m", "fulmen.testing._worker", "--strategy", path, "--devices", str(devices),
               "--accelerator", accelerator, "--out", str(workdir), "--epochs", str(epochs)]
    if precision is not None:
        command += ["--precision", str(precision)]
    env = dict(os.environ)
    # The workers must import what this process imports (a test's own modules included).
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths + env.get("PYTHONPATH", "").split(os.pathsep)))
    for name in ("FULMEN_LAUNCHED", "RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT", "NODE_RANK", "GROUP_RANK"):
        env.pop(name, None)  # a check started from inside a distributed job starts its own
    log_file = workdir / "run.log"
    with open(log_file, "w") as log:
        proc = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            returncode = f"killed after {timeout}s"
    return log_file.read_text(errors="replace"), returncode


def _launched(fabric: Any, out_dir: str, epochs: int) -> None:
    run_on_rank(fabric, out_dir, epochs)


# ---------------------------------------------------------------------------- judging


def check_layout(report: StrategyReport) -> None:
    """The process layout rule, judged on ``report``: one rank each, one world size, one global zero, the right
    device type."""
    ranks = report.ranks
    world = report.devices
    found = sorted(r["rank"] for r in ranks)
    if found != list(range(world)):
        raise fail("strategy", report.spec, "every rank 0..world_size-1 runs exactly once", f"ranks seen: {found}")
    sizes = {r["world_size"] for r in ranks}
    if sizes != {world}:
        raise fail("strategy", report.spec, "world_size equals the number of processes on every rank",
                   f"devices={world}, world_size reported: {sorted(sizes)}")
    zeros = [r["rank"] for r in ranks if r["is_global_zero"]]
    if zeros != [0]:
        raise fail("strategy", report.spec, "is_global_zero is true on rank 0 only", f"true on ranks {zeros}")
    accelerator_types = {r["device_type"] for r in ranks}
    expected_type = _device_type(report.accelerator)
    if expected_type and accelerator_types != {expected_type}:
        raise fail("strategy", report.spec, "root_device is a device of the accelerator",
                   f"accelerator {report.accelerator!r} ({expected_type}), root devices: {sorted(accelerator_types)}")


def _device_type(accelerator: str) -> Optional[str]:
    from fulmen.testing._common import registry

    try:
        entry = registry().get("accelerator", accelerator)
    except Exception:
        return None
    cls = entry.factory.resolve() if hasattr(entry.factory, "resolve") else entry.factory
    return getattr(cls, "device_type", None) or None


def check_collectives(report: StrategyReport) -> None:
    """The collectives rule: every collective gave the mathematically expected result on every rank, on the input's
    device."""
    world = report.devices
    expected = {
        "all_reduce_sum": [world * (world + 1) / 2],
        "all_reduce_mean": [(world + 1) / 2],
        "all_reduce_max": [float(world)],
        "all_reduce_min": [1.0],
        "all_gather": [[r, r * 10] for r in range(world)],
        "broadcast_first": {"from": 0, "payload": [1, 2, 3]},
        "broadcast_last": {"from": world - 1},
        "all_gather_object": [{"rank": r} for r in range(world)],
    }
    rules = {
        "all_reduce_sum": "all_reduce(t, 'sum') adds every rank's tensor",
        "all_reduce_mean": "all_reduce(t, 'mean') averages over ranks",
        "all_reduce_max": "all_reduce(t, 'max') takes the largest",
        "all_reduce_min": "all_reduce(t, 'min') takes the smallest",
        "all_gather": "all_gather(t) stacks every rank's tensor in rank order along a new first dimension",
        "broadcast_first": "broadcast(obj, 0) gives every rank rank 0's object",
        "broadcast_last": "broadcast(obj, world_size - 1) gives every rank that rank's object",
        "all_gather_object": "all_gather_object(obj) lists every rank's object in rank order",
    }
    for ranked in report.ranks:
        got = ranked["collectives"]
        for key, want in expected.items():
            value = got.get(key)
            if key.startswith("all_reduce"):
                ok = value is not None and len(value) == 1 and abs(value[0] - want[0]) < 1e-5
            else:
                ok = value == want
            if not ok:
                raise fail("strategy", report.spec, rules[key],
                           f"rank {ranked['rank']} of {world}: expected {want!r}, got {value!r}")
        for op in ("sum", "mean", "max", "min"):
            if got[f"all_reduce_{op}_device"] != ranked["device_type"]:
                raise fail("strategy", report.spec, "all_reduce returns a tensor on the input's device",
                           f"input on {ranked['device_type']}, result on {got[f'all_reduce_{op}_device']}")


def check_training(report: StrategyReport, atol: float = 1e-5, rtol: float = 1e-4, epochs: int = reference.EPOCHS) -> None:
    """The training rule: all ranks hold the same parameters, within tolerance of plain PyTorch on one device."""
    truth = reference.reference_parameters(epochs)
    first = report.ranks[0]["parameters"]
    if set(first) != set(truth):
        raise fail("strategy", report.spec, "module_state_dict returns the model's full state dict (same keys)",
                   f"expected keys {sorted(truth)}, got {sorted(first)}")
    for ranked in report.ranks[1:]:
        for key, values in ranked["parameters"].items():
            if values != first[key]:
                raise fail("strategy", report.spec, "every rank holds the same parameters after training",
                           f"{key!r} differs between rank 0 and rank {ranked['rank']}")
    for key, want in truth.items():
        got = torch.tensor(first[key]).reshape(want.shape)
        if not torch.allclose(got, want, atol=atol, rtol=rtol):
            diff = (got - want).abs().max().item()
            raise fail(
                "strategy", report.spec,
                "training matches one device on the global batches (gradients averaged over ranks)",
                f"parameter {key!r}: max abs difference {diff:.3g} > atol={atol} (rtol={rtol}) after {epochs} epochs "
                f"on {report.devices} device(s); a sum instead of a mean of gradients, unsynchronised initial "
                "weights or a sampler that does not split the data are the usual causes",
            )


def check_state_round_trip(report: StrategyReport, epochs: int = reference.EPOCHS) -> None:
    """The save/restore rule: parameters, optimizer state and plain values come back exactly and continue
    identically."""
    for ranked in report.ranks:
        restore = ranked["restore"]
        where = f"rank {ranked['rank']}"
        if restore["model"]:
            raise fail("strategy", report.spec, "fabric.load restores every parameter bit for bit",
                       f"{where}: {restore['model']}")
        if restore["optimizer"]:
            raise fail("strategy", report.spec, "fabric.load restores the optimizer state bit for bit",
                       f"{where}: {restore['optimizer']}")
        if restore["remainder"] != {"epochs": epochs, "note": "conformance"}:
            raise fail("strategy", report.spec, "plain values saved beside the model come back from fabric.load",
                       f"{where}: got {restore['remainder']!r}")
        if restore["after_step"]:
            raise fail("strategy", report.spec, "a restored model and optimizer continue exactly like the originals",
                       f"{where}: after one more step: {restore['after_step']}")


def check_strategy(
    strategy: Any,
    devices: int = 1,
    accelerator: str = "cpu",
    workdir: Optional[os.PathLike] = None,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    epochs: int = reference.EPOCHS,
    timeout: float = DEFAULT_TIMEOUT,
) -> StrategyReport:
    """Every strategy rule; raises ``ConformanceError`` at the first one broken."""
    report = run_strategy(strategy, devices, accelerator, None, workdir, epochs, timeout)
    check_layout(report)
    check_collectives(report)
    check_training(report, atol, rtol, epochs)
    check_state_round_trip(report, epochs)
    return report
