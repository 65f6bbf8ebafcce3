"""The names in a fulmen DeepSpeed checkpoint directory, in one place for its writer and readers.

::

    epoch=1-step=8.ckpt/
        fulmen_checkpoint.pt    the Trainer's dict without weights and optimizer state, plus
                                HEADER_KEY (format, version, tag, world size, ZeRO stage, ...);
                                fulmen's checksummed file
        latest                  DeepSpeed's text file naming the tag
        checkpoint/             engine.save_checkpoint(DIR, tag="checkpoint")
        fulmen_manifest.json    size and SHA-256 of every other file, written last

Only strings live here, so importing it costs nothing (the plugin module may).
"""

from __future__ import annotations

META_NAME = "fulmen_checkpoint.pt"
MANIFEST_NAME = "fulmen_manifest.json"
HEADER_KEY = "_fulmen_deepspeed"
FORMAT_NAME = "fulmen.deepspeed"
FORMAT_VERSION = 1
#: Stands for "this state is in DeepSpeed's files" in the metadata dict the strategy writes.
MARKER = "__fulmen_deepspeed__"
