"""The language-model fine-tuning tests need transformers, peft and safetensors (``nox -s
finetune_llm`` installs them); without them those files are skipped, saying why. The vision
tests in this directory decide for themselves."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

LLM_TESTS = {"test_finetune_fsdp.py", "test_trainable_checkpoint.py", "test_export.py",
             "test_policies_and_loading.py", "test_finetune_deepspeed.py"}
_MISSING = [name for name in ("transformers", "peft", "safetensors") if importlib.util.find_spec(name) is None]
# Tests that need none of them and run in the default suite (layer-wise lr decay, EMA), or
# that skip on their own terms (the vision recipe: transformers or timm, scikit-learn).
_OWN_TERMS = {"test_param_groups.py", "test_ema.py", "test_vision_recipe.py"}


def pytest_collection_modifyitems(config, items):
    if not _MISSING:
        return
    skip = pytest.mark.skip(reason=f"needs {', '.join(_MISSING)} (run nox -s finetune_llm, which installs them)")
    here = Path(__file__).resolve().parent
    for item in items:
        path = Path(str(item.fspath)).resolve()
        if here in path.parents and path.name not in _OWN_TERMS:
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
