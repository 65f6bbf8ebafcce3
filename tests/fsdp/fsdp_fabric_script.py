"""Fabric loops under FSDP in one 2-process launch (each phase builds its own Fabric on the
same process group). Rank r writes ``<out>/fabric_rank_<r>.json`` with what each phase saw;
the test asserts on it.

Phases: ``offload`` (fsdp_cpu_offload by name, an optimizer created before setup,
accumulation with ``no_backward_sync``, ``clip_gradients`` against a full-size replica),
``bf16`` (bf16-mixed policy, sharded save/load continuing bit for bit), ``hsdp_full``
(hybrid mesh, full state dict written on rank 0 and read by plain torch), ``meta``
(``init_module(empty_init=True)``), ``async`` (background sharded save), ``compile``
(per-block torch.compile with activation checkpointing) and ``errors``.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import fulmen  # noqa: E402
from fsdp_helpers import Block, TinyGPTNet, lm_loss, token_data, token_loader  # noqa: E402
from fulmen.errors import FulmenCheckpointError, FulmenConfigError  # noqa: E402
from fulmen_fsdp import FSDPStrategy  # noqa: E402

DATA = token_data(64)


def full_params(model):
    module = getattr(model, "module", model)  # a FabricModule's original module
    return {n: p.full_tensor().detach().clone() for n, p in module.named_parameters()}


def global_batch(step: int, size: int = 16):
    x, y = DATA.tensors
    return x[step * size:(step + 1) * size], y[step * size:(step + 1) * size]


def max_diff(a, b):
    return max(float((a[k].detach().float() - b[k].detach().float()).abs().max()) for k in a)


def phase_offload(out: Path) -> dict:
    fabric = fulmen.Fabric(accelerator="cpu", strategy="fsdp_cpu_offload", devices=2)
    fabric.launch()
    fabric.seed_everything(0)
    model = TinyGPTNet()
    reference = copy.deepcopy(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)  # before setup: fulmen re-points it
    model, optimizer = fabric.setup(model, optimizer)
    ref_optimizer = torch.optim.AdamW(reference.parameters(), lr=0.01)
    loader = fabric.setup_dataloaders(token_loader(64, batch_size=4))
    skipped_sync, norms, ref_norms = [], [], []
    batches = iter(loader)
    for step in range(4):
        for micro in range(2):
            x, y = next(batches)
            accumulating = micro == 0
            with fabric.no_backward_sync(model, enabled=accumulating):
                fabric.backward(lm_loss(model(x), y) / 2)
            if accumulating:  # FSDP keeps the unsharded gradients: nothing reduced yet
                skipped_sync.append(all(p.grad is None for p in model.parameters()))
        norms.append(float(fabric.clip_gradients(model, optimizer, max_norm=0.5)))
        optimizer.step()
        optimizer.zero_grad()
        gx, gy = global_batch(step)
        lm_loss(reference(gx), gy).backward()
        ref_norms.append(float(torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.5)))
        ref_optimizer.step()
        ref_optimizer.zero_grad()
    policy = fabric.strategy._offload_policy()
    return {
        "strategy": type(fabric.strategy).__name__,
        "offload": type(policy).__name__,
        "pin_memory": policy.pin_memory,
        "param_device": str(next(model.parameters()).device),
        "skipped_sync": skipped_sync,
        "norms": norms,
        "ref_norms": ref_norms,
        "max_diff": max_diff(full_params(model), dict(reference.named_parameters())),
    }


def phase_bf16(out: Path) -> dict:
    fabric = fulmen.Fabric(accelerator="cpu", strategy=FSDPStrategy(auto_wrap_policy={Block}), devices=2,
                           precision="bf16-mixed")
    fabric.seed_everything(0)
    model = TinyGPTNet()
    seen = {}

    def record_dtype(module, args):
        seen.setdefault("compute_dtype", str(module.weight.dtype))

    model.blocks[0].qkv.register_forward_pre_hook(record_dtype)
    model = fabric.setup(model)
    optimizer = fabric.setup_optimizers(torch.optim.AdamW(model.parameters(), lr=0.01))
    losses = []

    def step(i):
        x, y = global_batch(i % 4, 16)
        x, y = x[fabric.global_rank::2], y[fabric.global_rank::2]
        loss = lm_loss(model(x), y)
        fabric.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        return float(loss.detach())

    for i in range(6):
        losses.append(step(i))
    grads_dtype = None
    x, y = global_batch(0)
    fabric.backward(lm_loss(model(x[fabric.global_rank::2]), y[fabric.global_rank::2]))
    grads_dtype = str(next(model.parameters()).grad.dtype)
    optimizer.zero_grad()
    path = out / "fabric_sharded.ckpt"
    state = {"model": model, "optimizer": optimizer, "step": 6}
    fabric.save(path, state)
    continued = [step(i) for i in range(6, 8)]
    after = full_params(model)
    state = {"model": model, "optimizer": optimizer, "step": 0}
    fabric.load(path, state)
    resumed = [step(i) for i in range(6, 8)]
    return {
        "compute_dtype": seen.get("compute_dtype"),
        "param_dtype": str(next(model.parameters()).dtype),
        "grad_dtype": grads_dtype,
        "losses": losses,
        "restored_step": state["step"],
        "continued": continued,
        "resumed": resumed,
        "resume_identical": all(torch.equal(v, full_params(model)[k]) for k, v in after.items()),
        "checkpoint_is_dir": path.is_dir(),
    }


def phase_hsdp_full(out: Path) -> dict:
    strategy = FSDPStrategy(sharding_strategy="hybrid", hsdp_shard_size=1, state_dict_type="full")
    fabric = fulmen.Fabric(accelerator="cpu", strategy=strategy, devices=2)
    fabric.seed_everything(0)
    model = TinyGPTNet()
    reference = copy.deepcopy(model)
    model = fabric.setup(model)
    optimizer = fabric.setup_optimizers(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    ref_optimizer = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    for i in range(3):
        x, y = global_batch(i)
        fabric.backward(lm_loss(model(x[fabric.global_rank::2]), y[fabric.global_rank::2]))
        optimizer.step()
        optimizer.zero_grad()
        lm_loss(reference(x), y).backward()
        ref_optimizer.step()
        ref_optimizer.zero_grad()
    path = out / "fabric_full.ckpt"
    fabric.save(path, {"model": model, "optimizer": optimizer, "note": "hello"})
    saved = full_params(model)
    plain_ok = None
    if fabric.global_rank == 0:
        checkpoint = torch.load(path, weights_only=True)
        plain = TinyGPTNet()
        plain.load_state_dict(checkpoint["model"])
        plain_optimizer = torch.optim.SGD(plain.parameters(), lr=0.1, momentum=0.9)
        plain_optimizer.load_state_dict(checkpoint["optimizer"])
        plain_ok = max_diff(saved, dict(plain.named_parameters())) == 0.0 and checkpoint["note"] == "hello"
    x, y = global_batch(3)
    fabric.backward(lm_loss(model(x[fabric.global_rank::2]), y[fabric.global_rank::2]))
    optimizer.step()
    optimizer.zero_grad()
    remainder = fabric.load(path, {"model": model, "optimizer": optimizer})
    placements = [str(p) for p in next(model.parameters()).placements]
    return {
        "mesh": list(fabric.strategy.device_mesh.shape),
        "placements": placements,
        "max_diff": max_diff(saved, dict(reference.named_parameters())),
        "file": path.is_file(),
        "plain_ok": plain_ok,
        "reloaded": max_diff(saved, full_params(model)) == 0.0,
        "remainder": sorted(remainder),
    }


def phase_meta(out: Path) -> dict:
    fabric = fulmen.Fabric(accelerator="cpu", strategy=FSDPStrategy(auto_wrap_policy={Block}), devices=2)
    fabric.seed_everything(0)
    eager = TinyGPTNet()
    fabric.seed_everything(0)
    with fabric.init_module(empty_init=True):
        model = TinyGPTNet()
    on_meta = all(p.is_meta for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    model, optimizer = fabric.setup(model, optimizer)
    local = {n: list(p.to_local().shape) for n, p in model.module.named_parameters()}
    same_init = max_diff(full_params(model), dict(eager.named_parameters())) == 0.0
    x, y = global_batch(0)
    fabric.backward(lm_loss(model(x[fabric.global_rank::2]), y[fabric.global_rank::2]))
    optimizer.step()
    return {"on_meta": on_meta, "same_init": same_init, "local_shapes": local,
            "trained": max_diff(full_params(model), dict(eager.named_parameters())) > 0}


def phase_async(out: Path) -> dict:
    fabric = fulmen.Fabric(accelerator="cpu", strategy=FSDPStrategy(async_save=True), devices=2)
    fabric.seed_everything(0)
    model = fabric.setup(TinyGPTNet())
    optimizer = fabric.setup_optimizers(torch.optim.AdamW(model.parameters(), lr=0.01))

    def step(i):
        x, y = global_batch(i)
        fabric.backward(lm_loss(model(x[fabric.global_rank::2]), y[fabric.global_rank::2]))
        optimizer.step()
        optimizer.zero_grad()

    step(0)
    path = out / "fabric_async.ckpt"
    fabric.save(path, {"model": model, "optimizer": optimizer})
    saved = full_params(model)
    step(1)  # training goes on while the checkpoint is written
    fabric.strategy.checkpoint_io.teardown()  # what the Trainer does to make it durable
    published = path.is_dir()
    step(2)
    fabric.load(path, {"model": model, "optimizer": optimizer})
    return {"published": published, "restored": max_diff(saved, full_params(model)) == 0.0,
            "io": type(fabric.strategy.checkpoint_io).__name__}


def phase_compile(out: Path) -> dict:
    """torch.compile per block (aot_eager: the same wiring as inductor, without its minutes
    of code generation on a CPU), with activation checkpointing, against an eager replica."""
    strategy = FSDPStrategy(auto_wrap_policy={Block}, activation_checkpointing_policy={Block},
                            compile={"backend": "aot_eager"})
    fabric = fulmen.Fabric(accelerator="cpu", strategy=strategy, devices=2)
    fabric.seed_everything(0)
    model = TinyGPTNet()
    reference = copy.deepcopy(model)
    model = fabric.setup(model)
    optimizer = fabric.setup_optimizers(torch.optim.SGD(model.parameters(), lr=0.1))
    ref_optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    for i in range(2):
        x, y = global_batch(i)
        fabric.backward(lm_loss(model(x[fabric.global_rank::2]), y[fabric.global_rank::2]))
        optimizer.step()
        optimizer.zero_grad()
        lm_loss(reference(x), y).backward()
        ref_optimizer.step()
        ref_optimizer.zero_grad()
    block = model.module.blocks[0]
    return {"block_class": type(block).__name__, "compiled": getattr(block, "_compiled_call_impl", None) is not None,
            "max_diff": max_diff(full_params(model), dict(reference.named_parameters()))}


def phase_errors(out: Path) -> dict:
    fabric = fulmen.Fabric(accelerator="cpu", strategy="fsdp", devices=2)
    model = fabric.setup(TinyGPTNet(dim=32))
    errors = {}
    try:
        fulmen.Fabric(accelerator="cpu", strategy=FSDPStrategy(compile=True), devices=2).setup(TinyGPTNet())
    except FulmenConfigError as exc:
        errors["compile"] = str(exc)
    try:
        fabric.load(out / "fabric_sharded.ckpt", {"model": model}, strict=False)
    except FulmenCheckpointError as exc:
        errors["shape"] = str(exc)
    try:
        fabric.load(out / "missing.ckpt", {"model": model})
    except FileNotFoundError as exc:
        errors["missing"] = str(exc)
    return errors


def main() -> None:
    out = Path(sys.argv[1])
    results = {}
    for name, phase in [("offload", phase_offload), ("bf16", phase_bf16), ("hsdp_full", phase_hsdp_full),
                        ("meta", phase_meta), ("async", phase_async), ("compile", phase_compile),
                        ("errors", phase_errors)]:
        results[name] = phase(out)
    rank = torch.distributed.get_rank()
    (out / f"fabric_rank_{rank}.json").write_text(json.dumps(results))


if __name__ == "__main__":
    main()
