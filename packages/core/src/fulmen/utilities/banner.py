"""The start-up banner that example programs print (Lightning's ``cli_lightning_logo``).

Many Lightning examples call ``cli_lightning_logo()`` first thing in ``__main__``; offering
the name lets them run unchanged after ``fulmen migrate``, printing fulmen's banner.
"""

from __future__ import annotations

import sys

from fulmen.utilities.rank_zero import rank_zero_only

FULMEN_LOGO = r"""
     /|      ___     __
    / |__   / _/_ __/ /_ _  ___ ___
   /__  /  / _/ // / /  ' \/ -_) _ \
     | /  /_/ \_,_/_/_/_/_/\__/_//_/
     |/
"""

_YELLOW, _RESET = "\033[0;33m", "\033[0m"


@rank_zero_only
def cli_lightning_logo() -> None:
    """Print fulmen's banner between blank lines. Unlike Lightning's, it prints on rank 0 only
    (a job shows it once, not once per process) and is coloured only on a terminal (a log file
    gets no escape codes)."""
    colour = sys.stdout.isatty()
    print()
    print(f"{_YELLOW}{FULMEN_LOGO}{_RESET}" if colour else FULMEN_LOGO)
    print()
