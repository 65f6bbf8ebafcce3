"""Fixtures of the checkpointing tests.

The multi-process scenarios (ckpt_scenarios.py) all start, two at a time in background
threads, when the first test that needs one runs; each fixture waits only for its own. On two
cores that halves the time of these tests (each process spends ~2 s importing torch).
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # ``import ckpt_helpers`` from the tests

from ckpt_scenarios import Background  # noqa: E402


@pytest.fixture(scope="session")
def scenarios(tmp_path_factory):
    background = Background(tmp_path_factory.mktemp("scenarios"))
    yield background
    background.close()


@pytest.fixture(scope="session")
def trainer_reference(scenarios):
    """An uninterrupted run of train_script.py (--extras): the result every resume must match."""
    return scenarios.get("trainer_reference")


@pytest.fixture(scope="session")
def fabric_reference(scenarios):
    return scenarios.get("fabric_reference")


@pytest.fixture(scope="session")
def trainer_kill_chain(scenarios):
    return scenarios.get("trainer_kill_chain")


@pytest.fixture(scope="session")
def fabric_kill_chain(scenarios):
    return scenarios.get("fabric_kill_chain")


@pytest.fixture(scope="session")
def preemption(scenarios):
    return scenarios.get("preemption")


@pytest.fixture(scope="session")
def random_kill(scenarios):
    return scenarios.get("random_kill")


@pytest.fixture(scope="session")
def async_kill(scenarios):
    return scenarios.get("async_kill")
