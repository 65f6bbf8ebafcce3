"""acme-ml-platform: no code, only dependencies and ``fulmen.toml`` (read by fulmen through
the ``fulmen.config`` entry point). Keep it import-light: fulmen imports this package to
find the file."""
