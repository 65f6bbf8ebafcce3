import os
import sys

# Tests import shared models from tests/helpers.py.
sys.path.insert(0, os.path.dirname(__file__))
