# fulmen's conformance suite is a pytest plugin that nobody gets without asking: ask here.
pytest_plugins = ["fulmen.testing"]
