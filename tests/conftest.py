import os
import sys

# Tests import shared models from tests/helpers.py.
sys.path.insert(0, os.path.dirname(__file__))

# fulmen's plugin conformance suite (fixtures, the fulmen_conformance marker), opted into
# here as any plugin author would; it is never autoloaded (see tests/core/testing).
pytest_plugins = ["fulmen.testing"]
