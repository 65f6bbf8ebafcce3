"""``fulmen-deepspeed`` (or ``python -m fulmen_deepspeed``): tools for DeepSpeed checkpoint
directories that need neither GPUs nor a process group.

    fulmen-deepspeed convert DIR OUT.ckpt   one file with the full weights, for
                                            Module.load_from_checkpoint or any strategy's fit
    fulmen-deepspeed info DIR               who wrote it, and how much it holds

Both verify the directory against its manifest first; a bad checkpoint is one line on
stderr and exit status 1, not a traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

PROG = "fulmen-deepspeed"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="tools for fulmen's DeepSpeed checkpoint directories")
    sub = parser.add_subparsers(dest="command")
    convert = sub.add_parser("convert", help="write a DeepSpeed checkpoint directory as one file of full weights")
    convert.add_argument("checkpoint", help="the checkpoint directory (for example checkpoints/last.ckpt)")
    convert.add_argument("output", help="the file to write (for example last-full.ckpt)")
    convert.set_defaults(func=_convert)
    info = sub.add_parser("info", help="verify a DeepSpeed checkpoint directory and describe it")
    info.add_argument("checkpoint")
    info.set_defaults(func=_info)
    return parser


def _convert(args) -> int:
    from fulmen_deepspeed.convert import convert_checkpoint

    print(f"wrote {convert_checkpoint(args.checkpoint, args.output)}")
    return 0


def _info(args) -> int:
    from fulmen_deepspeed.convert import describe

    about = describe(args.checkpoint)
    print(f"{args.checkpoint}: DeepSpeed ZeRO stage {about['zero_stage']} checkpoint written by "
          f"{about['world_size']} process(es) with deepspeed {about['deepspeed_version']}")
    print(f"  epoch {about['epoch']}, global step {about['global_step']}; {about['tensors']} tensors, "
          f"{about['elements']:,} elements; {about['files']} files ({about['bytes']:,} bytes) match the manifest")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``fulmen-deepspeed``; returns the exit status (1 with a one-line error for a bad
    checkpoint, 2 for bad usage)."""
    parser = _parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from fulmen.errors import FulmenCheckpointError

    try:
        return args.func(args)
    except (FulmenCheckpointError, FileNotFoundError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
