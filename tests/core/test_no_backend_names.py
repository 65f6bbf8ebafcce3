"""The core names no backend library.

Backends (DeepSpeed, XLA, the tracking services, model zoos, vendor extensions) live in
their own distributions and reach the core through the registry. A core module that imports
one, or compares a string against one (``if strategy == "deepspeed"``), couples the core to
it and breaks the promise that an outside package can do anything an official one does.

The exceptions: ``fulmen/finetune/hf.py``, the one module that exists to adapt the model
libraries (transformers, peft) to fulmen's fine-tuning features, behind imports made only when
its functions run (issue 16 asks for exactly that, never at ``import fulmen``); and the pip-install hint tables in ``fulmen/plugins/registry.py``
(``OFFICIAL_PROVIDERS`` and ``OFFICIAL_PLUGINS``): to print ``pip install
fulmen-strategy-deepspeed`` for ``strategy="deepspeed_stage_2"`` the core must know the
official package's names, and it keeps them there and nowhere else.

What counts is read from the source with ``ast``: every import statement (anywhere,
function-level included) and every string constant (f-string parts too). Comments do not
count, and neither do docstrings and other bare string statements: like comments they are
prose for the reader, with no effect on what the code does.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

CORE = Path(__file__).resolve().parents[2] / "packages" / "core" / "src" / "fulmen"

# Libraries (and the names users type for them) that belong to backend packages. Plain
# English words that happen to name a library ("accelerate", "aim", "rich") are left out:
# they would flag prose in error messages, and the core does not import them either.
BACKENDS = (
    "deepspeed",
    "torch_xla", "xla", "libtpu", "tpu",
    "mlflow", "wandb", "tensorboard", "tensorboardX", "neptune", "comet_ml", "clearml",
    "ray",
    "transformers", "peft", "timm", "optimum",
    "apex", "bitsandbytes", "fairscale", "horovod", "colossalai", "megatron",
    "habana", "habana_frameworks", "hpu",
    "intel_extension_for_pytorch", "ipex", "torch_npu",
)
_NAMED = re.compile(r"(?<![A-Za-z0-9])(" + "|".join(map(re.escape, BACKENDS)) + r")(?![A-Za-z0-9])", re.IGNORECASE)

# (module path relative to the package, table name): the only places allowed to name them.
HINT_TABLES: Set[Tuple[str, str]] = {
    ("plugins/registry.py", "OFFICIAL_PROVIDERS"),
    ("plugins/registry.py", "OFFICIAL_PLUGINS"),
    ("migrate/names.py", "OFFICIAL_TARGETS"),  # fulmen migrate: where Lightning's backend classes went
}


# Modules allowed to name these libraries, and only these.
INTEGRATION_MODULES: Dict[str, Set[str]] = {"finetune/hf.py": {"transformers", "peft"}}


def _assigned_name(node: ast.AST) -> str:
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return node.target.id
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        return node.targets[0].id
    return ""


def _ids(node: ast.AST) -> Set[int]:
    return {id(child) for child in ast.walk(node)}


def violations(source: str, rel: str, tables: Set[Tuple[str, str]] = HINT_TABLES) -> List[str]:
    """``"rel:line: what"`` for each import of, or string naming, a backend, in line order."""
    return [text for _, text in sorted(_violations(source, rel, tables), key=lambda item: item[0])]


def _violations(source: str, rel: str, tables: Set[Tuple[str, str]]) -> Iterator[Tuple[int, str]]:
    tree = ast.parse(source)
    allowed = INTEGRATION_MODULES.get(rel, set())
    exempt: Set[int] = set()
    for node in ast.walk(tree):
        if (rel, _assigned_name(node)) in tables:
            exempt |= _ids(node)
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            exempt.add(id(node.value))  # a docstring or another bare string: prose
    for node in ast.walk(tree):
        if id(node) in exempt:
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for module in modules:
                top = module.split(".")[0]
                if top.lower() in {b.lower() for b in BACKENDS} and top.lower() not in allowed:
                    yield node.lineno, f"{rel}:{node.lineno}: imports {module}"
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            for match in _NAMED.finditer(node.value):
                if match.group(0).lower() in allowed:
                    continue
                yield node.lineno, f"{rel}:{node.lineno}: string names {match.group(0)!r}: {node.value[:80]!r}"


def core_violations() -> List[str]:
    found: List[str] = []
    for path in sorted(CORE.rglob("*.py")):
        found += violations(path.read_text(), path.relative_to(CORE).as_posix())
    return found


def test_no_core_module_names_a_backend_outside_the_hint_tables():
    found = core_violations()
    print("\n".join(found) or "no backend names")
    assert not found, (
        "core modules name backend libraries; move the code into the backend's package and reach it "
        "through the registry, or (for a pip line) add the name to registry.OFFICIAL_PROVIDERS:\n  "
        + "\n  ".join(found)
    )


def test_the_hint_tables_exist_and_name_the_official_packages():
    """The exemption is not stale: the tables are where this test says, and hold the names."""
    by_file: Dict[str, Set[str]] = {}
    for rel, table in HINT_TABLES:
        by_file.setdefault(rel, set()).add(table)
    for rel, tables in by_file.items():
        tree = ast.parse((CORE / rel).read_text())
        assigned = {_assigned_name(node) for node in ast.walk(tree)}
        assert tables <= assigned, f"{rel} no longer defines {sorted(tables - assigned)}"
        assert violations((CORE / rel).read_text(), rel, tables=set()), f"{rel}'s tables name no backend"


# ---------------------------------------------------------------------------- the checker itself


def test_checker_flags_imports_and_strings_but_not_comments_or_docstrings():
    source = '''
"""Works with DeepSpeed."""  # a docstring
import os  # wandb in a comment
import torch_xla.core.xla_model as xm


def f(strategy):
    """Unless wandb is missing."""
    from deepspeed import initialize
    if strategy == "DeepSpeed_stage_2":
        return f"install {'mlflow'} first"
    return "an array of tensors for the tensorboard-free path"

OFFICIAL_PROVIDERS = {"deepspeed": "fulmen-strategy-deepspeed"}
'''
    found = violations(source, "x.py", tables={("x.py", "OFFICIAL_PROVIDERS")})
    assert [line.split(": ", 1)[1].split(":")[0] for line in found] == [
        "imports torch_xla.core.xla_model",
        "imports deepspeed",
        "string names 'DeepSpeed'",
        "string names 'mlflow'",
        "string names 'tensorboard'",
    ], found


def test_an_integration_module_may_name_only_its_own_libraries():
    source = 'import transformers\nimport deepspeed\nNEEDS = "pip install transformers peft"\nOTHER = "use mlflow"\n'
    found = violations(source, "finetune/hf.py")
    assert found == ["finetune/hf.py:2: imports deepspeed", "finetune/hf.py:4: string names 'mlflow': 'use mlflow'"]
    assert (CORE / "finetune/hf.py").exists(), "INTEGRATION_MODULES names a module that no longer exists"
    assert len(violations(source, "finetune/export.py")) == 5  # elsewhere the same lines are refused
