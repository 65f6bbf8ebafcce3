"""The language-model fine-tuning tests need transformers, peft and safetensors (``nox -s
finetune_llm`` installs them); without them those files are skipped, saying why. The vision
tests in this directory decide for themselves."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

HF = ("transformers", "peft", "safetensors")
# The language-model test files and what each needs (DeepSpeed's own skip is in its file).
LLM_TESTS = {"test_finetune_fsdp.py": HF, "test_trainable_checkpoint.py": HF, "test_export.py": HF,
             "test_policies_and_loading.py": HF, "test_finetune_deepspeed.py": ("safetensors",)}


def _missing(names):
    return [name for name in names if importlib.util.find_spec(name) is None]


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).resolve().parent
    for item in items:
        path = Path(str(item.fspath)).resolve()
        missing = _missing(LLM_TESTS.get(path.name, ())) if path.parent == here else []
        if missing:
            item.add_marker(pytest.mark.skip(
                reason=f"needs {', '.join(missing)} (run nox -s finetune_llm, which installs them)"))


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


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """A tiny Llama (rotary embedding with a non-persistent ``inv_freq`` buffer)."""
    from ft_helpers import save_tiny_llama

    return save_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))
