"""``fulmen-fsdp consolidate DIR OUT.ckpt`` (or ``python -m fulmen_fsdp.consolidate DIR OUT.ckpt``):
turn a sharded checkpoint directory into one file, on one process, without GPUs.

The file is what ``state_dict_type="full"`` would have written: a plain ``state_dict``, the
optimizer states in ``torch.optim``'s own format and everything else of the checkpoint, so
``Module.load_from_checkpoint``, ``torch.load(..., weights_only=True)`` and a resumed run on
any strategy and any number of processes all accept it.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fulmen-fsdp", description="tools for fulmen's FSDP checkpoints")
    sub = parser.add_subparsers(dest="command")
    consolidate = sub.add_parser("consolidate", help="convert a sharded checkpoint directory into one file")
    consolidate.add_argument("checkpoint", help="the sharded checkpoint directory (for example checkpoints/last.ckpt)")
    consolidate.add_argument("output", help="the single file to write (for example last-full.ckpt)")
    consolidate.set_defaults(func=_consolidate)
    info = sub.add_parser("info", help="describe a sharded checkpoint (world size, tensors)")
    info.add_argument("checkpoint")
    info.set_defaults(func=_info)
    return parser


def _consolidate(args) -> int:
    from fulmen_fsdp.checkpoint import consolidate_checkpoint

    out = consolidate_checkpoint(args.checkpoint, args.output)
    print(f"wrote {out}")
    return 0


def _info(args) -> int:
    from fulmen_fsdp.checkpoint import iter_refs, read_metadata, saved_world_size

    checkpoint = read_metadata(args.checkpoint)
    refs = list(iter_refs(checkpoint))
    numel = sum(_numel(ref.shape) for ref in refs)
    print(f"{args.checkpoint}: sharded checkpoint written by {saved_world_size(args.checkpoint)} process(es)")
    print(f"  {len(refs)} sharded tensors, {numel:,} elements; entries: {', '.join(sorted(map(str, checkpoint)))}")
    return 0


def _numel(shape) -> int:
    out = 1
    for size in shape:
        out *= size
    return out


def main(argv: Optional[List[str]] = None) -> int:
    """``fulmen-fsdp consolidate DIR OUT.ckpt`` (a sharded checkpoint into one file) and
    ``fulmen-fsdp info DIR``; returns the exit status, 1 with a one-line error for a bad checkpoint."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in ("consolidate", "info", "-h", "--help"):
        argv.insert(0, "consolidate")  # ``python -m fulmen_fsdp.consolidate DIR OUT``
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from fulmen.errors import FulmenCheckpointError

    try:
        return args.func(args)
    except (FulmenCheckpointError, FileNotFoundError) as exc:
        print(f"fulmen-fsdp: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
