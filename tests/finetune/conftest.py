"""The fine-tuning tests need transformers, peft and safetensors (``nox -s finetune_llm``
installs them); without them the whole directory is skipped, saying why."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

_MISSING = [name for name in ("transformers", "peft", "safetensors") if importlib.util.find_spec(name) is None]


def pytest_collection_modifyitems(config, items):
    if not _MISSING:
        return
    skip = pytest.mark.skip(reason=f"needs {', '.join(_MISSING)} (run nox -s finetune_llm, which installs them)")
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """A tiny GPT-2 written by ``save_pretrained``: the 'pretrained' model of the tests."""
    from ft_helpers import save_tiny_gpt2

    return save_tiny_gpt2(tmp_path_factory.mktemp("tiny_gpt2"))


@pytest.fixture(scope="session")
def other_base(tmp_path_factory) -> Path:
    """The same architecture with other weights (a wrong base for adapters)."""
    from ft_helpers import save_tiny_gpt2

    return save_tiny_gpt2(tmp_path_factory.mktemp("other_gpt2"), seed=1)
