"""The GPU benchmarks in one command (under five minutes on an H100/H200).

    python benchmarks/gpu.py                 # results under $OUT (or benchmarks/out/gpu/)
    python benchmarks/gpu.py --dry-run       # tiny sizes on the CPU: checks the script itself

Parts, in this order (each one's results are written as soon as it ends, so a run cut short
still leaves the parts it finished; a part that would not fit in ``--budget`` is skipped):

1. sync check: training loops under ``torch.cuda.set_sync_debug_mode("error")``, which raises
   on any host-device synchronisation. A positive control (``.item()`` must raise), the raw
   loop, the fulmen Fabric loop, and the fulmen Trainer (``self.log`` every step, progress bar,
   CSV logger, checkpointing) with the mode on for every step except the ``log_every_n_steps``
   boundaries where fulmen reads the logged values (the mode is "error" from the start of each
   step to its end, and through the next batch's transfer unless the step was a logging
   step; callbacks run in list order, so the guard's own hook comes first). Also counted without CUDA:
   fulmen's only tensor-to-float conversion (``metrics._to_floats``) must run only at those
   boundaries.
2. tiny MLP (64→64→10, batch 32, AdamW) on CUDA: raw, fulmen Trainer (defaults, and bare),
   fulmen Fabric; per-step time after warm-up, interleaved rounds, ratios to raw.
3. GPT-2 small (124M, batch 16 × 1024 tokens, bf16-mixed, AdamW) eager: raw, Trainer, Fabric.
4. the same with ``torch.compile`` (the network is compiled once and shared by all variants,
   reset to the same initial weights before each run).
5. DeepSpeed ZeRO stage 2 and 3 with bf16 on one GPU (``benchmarks/deepspeed_overhead.py``):
   GPT-2 small, a hand-written ``deepspeed.initialize`` loop against the fulmen Trainer and
   Fabric (``strategy="deepspeed_stage_2"``/``"_3"``, ``precision="bf16-mixed"``); every run
   is a fresh process (~20 s each, 12 runs), so this part needs about four minutes of its own:
   ``python benchmarks/gpu.py --skip sync mlp gpt_eager gpt_compile`` runs it alone. Skipped,
   saying so, where deepspeed is not installed.

Uses only torch APIs available in torch 2.11. ``--lightning`` adds the Lightning variants
when Lightning is importable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
try:
    import fulmen  # noqa: F401
except ImportError:  # a checkout without an install: use the sources
    sys.path.insert(0, str(HERE.parent / "packages" / "core" / "src"))

import torch  # noqa: E402

import deepspeed_overhead  # noqa: E402
import overhead  # noqa: E402
from common import Spec, fmt_ratio, machine  # noqa: E402

START = time.monotonic()


def remaining(budget: float) -> float:
    return budget - (time.monotonic() - START)


# --------------------------------------------------------------------------- sync check


def _sync_mode_setter(device: str) -> Callable[[str], None]:
    if device.startswith("cuda"):
        return torch.cuda.set_sync_debug_mode
    # Without CUDA there is no synchronisation to detect; the switching logic still runs.
    return lambda mode: None


def _count_float_reads(record: List[int], trainer_ref: List[Any]):
    """Wrap fulmen's one tensor→float conversion to note the global step of each call."""
    from fulmen.trainer import metrics

    original = metrics._to_floats

    def counted(tensors):
        trainer = trainer_ref[0]
        record.append(trainer.global_step if trainer is not None else -1)
        return original(tensors)

    metrics._to_floats = counted
    return lambda: setattr(metrics, "_to_floats", original)


def sync_check(device: str, steps: int, log_every: int) -> Dict[str, Any]:
    import fulmen

    set_mode = _sync_mode_setter(device)
    accelerator = torch.device(device).type
    out: Dict[str, Any] = {"device": device, "steps": steps, "log_every_n_steps": log_every, "cuda_checked": accelerator == "cuda"}

    # Positive control: the check must catch a sync.
    if accelerator == "cuda":
        x = torch.ones(1, device=device)
        set_mode("error")
        try:
            x.item()
            out["control_item_raises"] = False
        except RuntimeError:
            out["control_item_raises"] = True
        finally:
            set_mode("default")

    # No clock inside the step: Task's clock synchronises, which is what we look for here.
    spec = Spec(steps=steps, warmup=0, device=device)
    out["optimizer"] = "AdamW"

    def task():
        t = spec.build_task()
        t.start_at = t.stop_at = -1
        t._sync = None
        return t

    # Raw loop, every step checked.
    def raw():
        model = task()
        optimizer = spec.optimizer(model.parameters())
        loader = spec.loader()
        set_mode("error")
        try:
            for x, y in loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                loss = model(x, y)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        finally:
            set_mode("default")
        return float(model.last_loss)

    # fulmen Fabric, every step checked.
    def fabric():
        fab = fulmen.Fabric(accelerator=accelerator, devices=1)
        model = task()
        optimizer = spec.optimizer(model.parameters())
        wrapped, optimizer = fab.setup(model, optimizer)
        loader = fab.setup_dataloaders(spec.loader())
        set_mode("error")
        try:
            for x, y in loader:
                loss = wrapped(x, y)
                fab.backward(loss)
                optimizer.step()
                optimizer.zero_grad()
        finally:
            set_mode("default")
        return float(model.last_loss)

    # fulmen Trainer with its defaults and self.log every step.
    def trainer_run():
        import tempfile

        class SyncGuard(fulmen.Callback):
            """'error' from the start of every step to its end, and on through the next
            batch's transfer unless fulmen reads the logged values after this step."""

            checked = 0

            def on_train_batch_start(self):
                set_mode("error")

            def on_train_batch_end(self, trainer, batch_idx):
                SyncGuard.checked += 1
                log_due = trainer.global_step % trainer.log_every_n_steps == 0
                last = batch_idx + 1 >= trainer.num_training_batches
                set_mode("default" if (log_due or last) else "error")

        model = task()
        module = overhead._fulmen_module(spec, model, log=True)
        reads: List[int] = []
        ref: List[Any] = [None]
        restore = _count_float_reads(reads, ref)
        try:
            with tempfile.TemporaryDirectory() as tmp, overhead._silenced(True):
                trainer = fulmen.Trainer(
                    accelerator=accelerator, devices=1, max_steps=spec.total_steps, max_epochs=1,
                    log_every_n_steps=log_every, default_root_dir=tmp, callbacks=[SyncGuard()],
                )
                ref[0] = trainer
                trainer.fit(module, spec.loader())
        finally:
            set_mode("default")
            restore()
        total = spec.total_steps
        expected = sorted({s for s in range(1, total + 1) if s % log_every == 0} | {total})
        return {
            "final_loss": float(model.last_loss),
            "steps_checked": SyncGuard.checked,
            "float_reads_at_steps": reads,
            "float_reads_only_at_log_steps": bool(reads) and set(reads) <= set(expected),
        }

    def run_all() -> None:
        for name, fn in (("raw", raw), ("fulmen_fabric", fabric), ("fulmen_trainer", trainer_run)):
            try:
                value = fn()
                out[name] = {"passed": True, **(value if isinstance(value, dict) else {"final_loss": value})}
            except Exception as exc:  # a sync inside the step (or anything else) fails this loop
                out[name] = {"passed": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}

    run_all()
    if not out["raw"]["passed"]:
        # The raw loop is the control: if it fails, the optimizer itself synchronised and the
        # fulmen results say nothing. Check again with an optimizer that cannot (SGD).
        out["adamw_attempt"] = {k: out.pop(k) for k in ("raw", "fulmen_fabric", "fulmen_trainer")}
        spec.optim = "sgd"
        out["optimizer"] = "SGD (the raw loop with AdamW synchronised; see adamw_attempt)"
        run_all()
    return out


# --------------------------------------------------------------------------- timing parts


def timing_part(spec: Spec, variants: List[str], repeats: int) -> Dict[str, Any]:
    start = time.monotonic()
    result = overhead.benchmark(spec, variants, repeats, quiet=True, log=lambda s: print(s, flush=True))
    result["seconds"] = time.monotonic() - start
    result["loss_mismatch_5_decimals"] = overhead.check_losses(result)
    return result


def deepspeed_part(device: str, sizes: Dict[str, int], steps: int, warmup: int, repeats: int) -> Dict[str, Any]:
    """ZeRO stages 2 and 3, bf16, one process on one device: raw DeepSpeed, Trainer, Fabric."""
    if not deepspeed_overhead.deepspeed_available():
        return {"skipped": "deepspeed is not installed (DS_BUILD_OPS=0 pip install deepspeed)"}
    from importlib import metadata

    argv = ["--model", "gpt", "--stages", "2", "3", "--device", device, "--devices", "1", "--precision", "bf16-mixed",
            "--steps", str(steps), "--warmup", str(warmup), "--repeats", str(repeats)]
    for key in ("batch", "vocab", "seq", "n_layer", "n_head"):
        argv += [f"--{key.replace('_', '-')}", str(sizes[key])]
    argv += ["--d-model", str(sizes["d_model"])]
    result = deepspeed_overhead.run(deepspeed_overhead.parse_args(argv), log=print)
    result["deepspeed"] = metadata.version("deepspeed")
    result["command"] = "python benchmarks/deepspeed_overhead.py " + " ".join(argv)
    return result


def markdown(results: Dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"# GPU benchmarks: {m.get('gpu', 'no GPU (dry run)')}",
        "",
        f"torch {m['torch']}, CUDA {m.get('cuda')}, fulmen {m['fulmen']}, Python {m['python']}; command: `{results['command']}`",
        "",
    ]
    sync = results.get("sync_check")
    if sync:
        lines += ["## Sync check (`torch.cuda.set_sync_debug_mode(\"error\")`)", ""]
        if "optimizer" in sync:
            lines.append(f"- {sync['steps']} steps of the tiny MLP, optimizer {sync['optimizer']}, log_every_n_steps={sync['log_every_n_steps']}; CUDA checked: {sync['cuda_checked']}")
        if "error" in sync:
            lines.append(f"- the check itself failed: {sync['error']}")
        if "control_item_raises" in sync:
            lines.append(f"- positive control (`.item()` raises): {sync['control_item_raises']}")
        for name in ("raw", "fulmen_fabric", "fulmen_trainer"):
            r = sync.get(name, {})
            detail = r.get("error", "") if not r.get("passed") else ""
            extra = ""
            if name == "fulmen_trainer" and r.get("passed"):
                extra = f"; float reads only at logging steps: {r['float_reads_only_at_log_steps']} ({len(r['float_reads_at_steps'])} reads)"
            ok = "no sync" if sync.get("cuda_checked") else "ran (no CUDA here, so nothing was checked)"
            lines.append(f"- {name}: {ok if r.get('passed') else 'FAILED ' + detail}{extra}")
        lines.append("")
    for key, title in (("mlp", f"Tiny MLP on {results['device']}"), ("gpt_eager", "GPT-2 small, bf16-mixed, eager" if not results["dry_run"] else "tiny GPT (dry run), bf16-mixed, eager"), ("gpt_compile", "GPT-2 small, bf16-mixed, torch.compile" if not results["dry_run"] else "tiny GPT (dry run), bf16-mixed, torch.compile")):
        part = results.get(key)
        if not part:
            continue
        if "skipped" in part or "error" in part:
            lines += [f"## {title}", "", f"not run: {part.get('skipped') or part.get('error')}", ""]
            continue
        s = part["spec"]
        lines += [f"## {title}", "", f"batch {s['batch']}, {s['steps']} timed steps after {s['warmup']}, {part['repeats']} rounds, {part['seconds']:.0f} s", "", overhead.table(part), ""]
    part = results.get("deepspeed")
    if part:
        title = "DeepSpeed ZeRO-2 and ZeRO-3, bf16, " + ("GPT-2 small, 1 GPU" if not results["dry_run"] else "tiny GPT (dry run), 1 process")
        if "skipped" in part or "error" in part:
            lines += [f"## {title}", "", f"not run: {part.get('skipped') or part.get('error')}", ""]
        else:
            o = part["options"]
            lines += [f"## {title}", "", f"deepspeed {part['deepspeed']}; batch {o['batch']}, {o['steps']} timed steps after {o['warmup']}, "
                      f"{part['repeats']} rounds, {part['seconds']:.0f} s; `{part['command']}`", "", deepspeed_overhead.table(part), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU")
    p.add_argument("--device", default=None, help="default cuda (cpu with --dry-run)")
    p.add_argument("--budget", type=float, default=280.0, help="seconds; parts that would not fit are skipped")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--out", default=os.environ.get("OUT") or str(HERE / "out" / "gpu"))
    p.add_argument("--lightning", action="store_true", help="add Lightning variants if importable")
    p.add_argument("--skip", nargs="*", default=[], choices=["sync", "mlp", "gpt_eager", "gpt_compile", "deepspeed"])
    args = p.parse_args(argv)
    device = args.device or ("cpu" if args.dry_run else "cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: run with --dry-run to check the script on the CPU")
        return 2
    if args.dry_run:
        torch.set_num_threads(1)
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    try:  # several variants share one compiled network; never fall back to eager silently
        import torch._dynamo as dynamo

        for name in ("recompile_limit", "cache_size_limit"):
            if hasattr(dynamo.config, name):
                setattr(dynamo.config, name, 64)
    except Exception:
        pass
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    variants = ["raw", "fulmen_trainer", "fulmen_trainer_bare", "fulmen_fabric"]
    gpt_variants = ["raw", "fulmen_trainer", "fulmen_fabric"]
    if args.lightning:
        extra, _ = overhead.available_variants(["lightning_trainer", "lightning_fabric"])
        variants += extra
        gpt_variants += extra
    dry = args.dry_run
    results: Dict[str, Any] = {
        "machine": machine(),
        "command": "python " + " ".join([os.path.relpath(__file__)] + (argv if argv is not None else sys.argv[1:])),
        "device": device,
        "dry_run": dry,
    }

    def save() -> None:
        (out_dir / "gpu_results.json").write_text(json.dumps(results, indent=1, default=str))
        (out_dir / "gpu_results.md").write_text(markdown(results))

    gpt2 = dict(vocab=50304, seq=1024, d_model=768, n_layer=12, n_head=12, batch=16)
    tiny_gpt = dict(vocab=256, seq=32, d_model=32, n_layer=2, n_head=2, batch=4)
    parts = [
        ("mlp", lambda: timing_part(
            Spec(model="mlp", steps=50 if dry else 2000, warmup=5 if dry else 100, device=device),
            variants, args.repeats or (2 if dry else 5)), 30),
        ("gpt_eager", lambda: timing_part(
            Spec(model="gpt", steps=3 if dry else 20, warmup=1 if dry else 5, device=device, precision="bf16-mixed", **(tiny_gpt if dry else gpt2)),
            gpt_variants, args.repeats or (2 if dry else 3)), 45),
        ("gpt_compile", lambda: timing_part(
            Spec(model="gpt", steps=3 if dry else 20, warmup=2 if dry else 5, device=device, precision="bf16-mixed", compile=True, **(tiny_gpt if dry else gpt2)),
            gpt_variants, args.repeats or (2 if dry else 3)), 150),
        ("deepspeed", lambda: deepspeed_part(
            device, tiny_gpt if dry else gpt2, steps=3 if dry else 20, warmup=1 if dry else 5,
            repeats=args.repeats or (1 if dry else 2)), 240),
    ]
    if "sync" not in args.skip:
        print("sync check ...", flush=True)
        try:
            results["sync_check"] = sync_check(device, steps=60 if dry else 300, log_every=10 if dry else 50)
        except Exception as exc:
            results["sync_check"] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
        print(json.dumps({k: (v if not isinstance(v, dict) else {kk: vv for kk, vv in v.items() if kk != "traceback" and kk != "float_reads_at_steps"}) for k, v in results["sync_check"].items()}, indent=1), flush=True)
        save()
    for name, run, needs in parts:
        if name in args.skip:
            continue
        left = remaining(args.budget)
        if left < needs and not dry:
            results[name] = {"skipped": f"{left:.0f} s of the {args.budget:.0f} s budget left, this part needs about {needs} s"}
            save()
            continue
        print(f"{name} ...", flush=True)
        try:
            results[name] = run()
            if "variants" in results[name]:
                results[name]["repeats"] = len(next(iter(results[name]["variants"].values()))["us_per_step"])
                print(overhead.table(results[name]), flush=True)
            elif "stages" in results[name]:
                print(deepspeed_overhead.table(results[name]), flush=True)
            else:
                print(results[name].get("skipped", ""), flush=True)
        except Exception as exc:
            results[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
            print(results[name]["error"], flush=True)
        save()
    results["total_s"] = time.monotonic() - START
    save()
    print(f"\nwrote {out_dir / 'gpu_results.md'} and gpu_results.json in {results['total_s']:.0f} s")
    failed = [n for n in ("raw", "fulmen_fabric", "fulmen_trainer") if not results.get("sync_check", {}).get(n, {}).get("passed", True)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
