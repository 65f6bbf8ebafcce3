"""The core stays small: its declared dependencies, what ``import fulmen`` loads, and a
process in which nothing but fulmen and its dependency closure is installed."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from plugin_helpers import last_json_line, run_python

import fulmen

CORE_DEPENDENCIES = {"torch", "pluggy", "packaging", "tqdm"}
BACKENDS = {"deepspeed", "mlflow", "wandb", "tensorboard", "torch-xla", "torch_xla"}
OFFICIAL_PLUGIN_MODULES = ["fulmen_fsdp.plugin", "fulmen_deepspeed.plugin", "fulmen_xla.plugin", "fulmen_loggers.plugin"]


def test_core_declares_only_torch_pluggy_packaging_tqdm():
    # Optional extras (fulmen[migrate] -> libcst) are not dependencies of the core.
    lines = [line for line in metadata.requires("fulmen") or [] if "extra ==" not in line]
    names = {canonicalize_name(Requirement(line).name) for line in lines}
    assert names == CORE_DEPENDENCIES, lines
    for line in lines:
        assert not any(backend in line.lower() for backend in BACKENDS), line


LAZY_SCRIPT = '''
import json, sys

WATCH = ["fulmen.plugins.discovery", "fulmen.plugins.manager", "tqdm", "fulmen.trainer.trainer",
         "fulmen.fabric.fabric"] + {modules!r}
seen = lambda: {{m: m in sys.modules for m in WATCH}}

import fulmen
after_import = seen()
cls = getattr(fulmen, sys.argv[1])
after_class = seen()
if sys.argv[1] == "Trainer":
    cls(accelerator="cpu", logger=False, enable_progress_bar=False, enable_checkpointing=False,
        enable_model_summary=False)
else:
    cls(accelerator="cpu")
after_instance = seen()
print(json.dumps([after_import, after_class, after_instance]))
'''


@pytest.mark.parametrize("api", ["Trainer", "Fabric"])
def test_import_is_light_and_plugins_load_with_the_first_instance(api, tmp_path):
    script = tmp_path / "lazy.py"
    script.write_text(LAZY_SCRIPT.format(modules=OFFICIAL_PLUGIN_MODULES))
    after_import, after_class, after_instance = last_json_line(run_python([str(script), api]).stdout)

    # ``import fulmen``: no discovery, no plugin, no progress-bar library, no Trainer.
    assert not any(after_import.values()), after_import
    # Importing the class does not scan or import plugins either ...
    assert not any(after_class[m] for m in OFFICIAL_PLUGIN_MODULES), after_class
    # ... the first instance does, and then every official plugin module is loaded.
    assert all(after_instance[m] for m in OFFICIAL_PLUGIN_MODULES), after_instance


# ---------------------------------------------------------------------------- core alone

def _requirement_closure(name: str):
    """Every distribution that ``pip install name`` would bring, from installed metadata."""
    found, todo = {}, [name]
    while todo:
        key = canonicalize_name(todo.pop())
        if key in found:
            continue
        dist = metadata.distribution(key)
        found[key] = dist
        for line in dist.requires or ():
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return found


CORE_ONLY_SCRIPT = '''
import contextlib, io, json, sys
from importlib import metadata
import fulmen
from fulmen.cli import main as fulmen_cli
from fulmen.errors import FulmenConfigError
from fulmen.plugins import discovery
from helpers import BoringModule, loader, quiet_trainer

root = sys.argv[1]
trainer = quiet_trainer(root, max_steps=3)
trainer.fit(BoringModule(), loader())
listing = io.StringIO()
with contextlib.redirect_stdout(listing):
    fulmen_cli(["plugins", "--json"])
errors = {}
for argument, name in [("strategy", "fsdp"), ("strategy", "deepspeed_stage_2"), ("accelerator", "xla"),
                       ("logger", "mlflow"), ("logger", "wandb"), ("logger", "tensorboard")]:
    try:
        quiet_trainer(root, **{argument: name})
    except FulmenConfigError as exc:
        errors[name] = str(exc)
print(json.dumps({
    "distributions": sorted(d.metadata["Name"].lower() for d in metadata.distributions()),
    "entry_points": sorted(discovery.records()),
    "rows": [row["name"] for row in json.loads(listing.getvalue())["plugins"]],
    "global_step": trainer.global_step,
    "errors": errors,
}))
'''


@pytest.fixture(scope="module")
def core_only(tmp_path_factory):
    """Run a script where only fulmen and its dependency closure are importable.

    The closure's files are linked into a fresh directory and the interpreter runs with
    ``-S`` (no site-packages), so the official plugin packages are truly not installed.
    """
    root = tmp_path_factory.mktemp("core_only")
    shadow = root / "site"
    shadow.mkdir()
    closure = _requirement_closure("fulmen")
    for dist in closure.values():
        base = Path(dist.locate_file(""))
        tops = {Path(str(f)).parts[0] for f in dist.files or () if not str(f).startswith("..")}
        for top in sorted(tops):
            if top.endswith(".pth") or (shadow / top).exists():
                continue  # .pth files are what -S skips anyway
            if (base / top).exists():
                (shadow / top).symlink_to(base / top)
    core_src = Path(fulmen.__file__).resolve().parents[1]
    script = root / "core_only.py"
    script.write_text(CORE_ONLY_SCRIPT)
    proc = run_python(["-S", str(script), str(root)], [shadow, core_src])
    return closure, last_json_line(proc.stdout)


def test_core_alone_trains_with_only_its_declared_dependencies(core_only):
    closure, result = core_only
    assert not any(name.startswith("fulmen-") for name in result["distributions"]), result["distributions"]
    assert {canonicalize_name(n) for n in result["distributions"]} == set(closure)
    assert result["entry_points"] == []
    assert result["rows"] == ["fulmen"]
    assert result["global_step"] == 3


@pytest.mark.parametrize(
    "name,requirement",
    [
        ("fsdp", "fulmen-strategy-fsdp"),
        ("deepspeed_stage_2", "fulmen-strategy-deepspeed"),
        ("xla", "fulmen-accelerator-xla"),
        ("mlflow", "fulmen-loggers[mlflow]"),
        ("wandb", "fulmen-loggers[wandb]"),
        ("tensorboard", "fulmen-loggers[tensorboard]"),
    ],
)
def test_official_names_without_the_package_give_the_pip_line(core_only, name, requirement):
    _, result = core_only
    message = result["errors"][name]
    assert f"{name!r} is provided by an official package that is not installed: pip install '{requirement}'" in message
    assert "Available: " in message

