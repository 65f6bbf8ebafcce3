"""The names fulmen-accelerator-xla registers, and what it answers without starting PJRT.

Device counting must never start the runtime (``torch_xla.launch`` refuses to run after
that) and must be cheap (``accelerator="auto"`` asks every accelerator). The tests marked
``no_torch_xla`` also run in the default session, where torch-xla is not installed."""

from __future__ import annotations

import os
import subprocess

import pytest

from xla_helpers import PYTHON


def _python(code: str, **env: str) -> str:
    environment = {k: v for k, v in os.environ.items() if k not in ("PJRT_DEVICE", "CPU_NUM_DEVICES")}
    environment.update(env)
    proc = subprocess.run([PYTHON, "-c", code], env=environment, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.strip()


@pytest.mark.no_torch_xla
def test_fulmen_plugins_lists_the_names_and_the_backend():
    proc = subprocess.run([PYTHON, "-m", "fulmen", "plugins"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    section = proc.stdout[proc.stdout.index("xla  (fulmen-accelerator-xla"):]
    section = section.split("\n\n")[0]
    assert "accelerator: xla" in section
    assert "strategy: single_xla, xla, xla_spmd" in section
    try:
        from importlib.metadata import version

        expected = f"uses torch-xla {version('torch-xla')}"
    except Exception:
        expected = "torch-xla is not installed"
    assert expected in section, section


@pytest.mark.no_torch_xla
def test_asking_for_xla_without_a_device_says_so():
    out = _python(
        "import fulmen\n"
        "try:\n"
        "    fulmen.Trainer(accelerator='xla', devices=1)\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    assert out.startswith("FulmenConfigError") and "accelerator='xla' was requested but is not available" in out


@pytest.mark.no_torch_xla
def test_auto_does_not_pick_xla_without_a_configured_device():
    """torch-xla alone falls back to its CPU device; fulmen's "auto" must not."""
    out = _python("import fulmen; print(fulmen.Trainer(devices=1).strategy.root_device)")
    assert out == "cpu"


def test_device_count_comes_from_the_environment_without_starting_the_runtime():
    code = (
        "import fulmen\n"
        "from fulmen_xla.accelerator import XLAAccelerator\n"
        "from fulmen_xla import runtime\n"
        "print(XLAAccelerator.is_available(), XLAAccelerator.device_count(), runtime.is_started())\n"
    )
    assert _python(code, PJRT_DEVICE="CPU", CPU_NUM_DEVICES="4") == "True 4 False"
    assert _python(code, PJRT_DEVICE="CPU") == "True 1 False"
    assert _python(code) == "False 0 False"


def test_auto_picks_xla_and_its_strategies_where_pjrt_is_configured():
    code = (
        "from fulmen.fabric.connector import resolve_strategy\n"
        "from fulmen.plugins.manager import build\n"
        "for devices in (1, 2):\n"
        "    strategy, _ = resolve_strategy(build().registry, devices=devices)\n"
        "    print(strategy.accelerator.name, type(strategy).__name__)\n"
        "from fulmen_xla import runtime; print(runtime.is_started())\n"
    )
    assert _python(code, PJRT_DEVICE="CPU", CPU_NUM_DEVICES="2").splitlines() == [
        "xla SingleXLAStrategy", "xla XLAStrategy", "False"]


def test_devices_as_indices_and_too_many():
    code = (
        "import fulmen\n"
        "t = fulmen.Trainer(accelerator='xla', devices=[0, 1], strategy='xla_spmd')\n"
        "print(t.strategy.parallel_devices)\n"
        "try:\n"
        "    fulmen.Trainer(accelerator='xla', devices=3)\n"
        "except Exception as exc:\n"
        "    print(exc)\n"
    )
    lines = _python(code, PJRT_DEVICE="CPU", CPU_NUM_DEVICES="2").splitlines()
    assert lines[0] == "[device(type='xla', index=0), device(type='xla', index=1)]"
    assert "devices=3 asks for more xla devices than the 2 available" in lines[1]


@pytest.mark.parametrize("precision, hint", [("16-mixed", "use precision='bf16-mixed'"),
                                             ("16-true", "use precision='bf16-true'")])
def test_float16_precisions_are_refused_with_what_to_use(precision, hint):
    code = (
        "import fulmen\n"
        "try:\n"
        f"    fulmen.Trainer(accelerator='xla', devices=1, precision={precision!r})\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    out = _python(code, PJRT_DEVICE="CPU")
    assert out.startswith("FulmenConfigError") and hint in out and "(accelerator 'xla')" in out


def test_the_plugin_module_imports_no_torch_xla():
    """Discovery imports every plugin at the first Trainer: torch-xla must wait for a user."""
    code = "import sys, fulmen; fulmen.Trainer(accelerator='cpu', devices=1); print('torch_xla' in sys.modules)"
    assert _python(code, PJRT_DEVICE="CPU") == "False"
