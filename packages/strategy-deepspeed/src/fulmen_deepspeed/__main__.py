"""``python -m fulmen_deepspeed convert DIR OUT`` / ``info DIR``: the ``fulmen-deepspeed`` command."""

import sys

from fulmen_deepspeed.cli import main

if __name__ == "__main__":
    sys.exit(main())
