"""``fulmen migrate``: rewrite a Lightning program's imports and names to fulmen's.

Needs libcst (``pip install "fulmen[migrate]"``); nothing here is imported by ``import
fulmen``. ``rewriter`` holds the strategy, ``names`` the table, ``command`` the CLI.
"""
