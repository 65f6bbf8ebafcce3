"""``python -m fulmen_fsdp consolidate DIR OUT.ckpt``: the ``fulmen-fsdp`` command."""

import sys

from fulmen_fsdp.consolidate import main

sys.exit(main())
