"""Sessions behind the README's commands: ``nox -s demo`` and ``nox -s tests`` (plus
``nox -s loggers``, which CI also runs: the logger backends' tests).

Each session builds its own virtualenv from nothing, installs torch (CPU build where this
machine keeps one on disk) and the six fulmen distributions, then runs.
"""

from __future__ import annotations

import os

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests"]

TORCH = os.environ.get("FULMEN_TORCH", "torch==2.13.0")
LOCAL_WHEELS = "/opt/wheels"  # a local wheel cache, used only where it exists
PACKAGES = [
    "packages/core",
    "packages/strategy-fsdp",
    "packages/strategy-deepspeed",
    "packages/accelerator-xla",
    "packages/loggers",
    "packages/launcher-ray",  # no dependency but fulmen; tests/ray skip without ray, saying why
]
TEST_DEPS = ["pytest>=8", "pytest-timeout", "numpy", "setuptools>=68", "wheel"]


def _find_links() -> list[str]:
    return ["--find-links", LOCAL_WHEELS] if os.path.isdir(LOCAL_WHEELS) else []


def install_torch(session: nox.Session) -> None:
    session.install(*_find_links(), TORCH)
    if os.path.isdir(LOCAL_WHEELS):
        # Here a CUDA build would mean a multi-GB download slipped in: fail loudly instead.
        session.run("python", "-c", "import torch, sys; v = torch.__version__; print('torch', v); sys.exit(0 if '+cpu' in v else 'expected a CPU build of torch, got ' + v)")


def install_fulmen(session: nox.Session, editable: bool = True) -> None:
    args = []
    for package in PACKAGES:
        args += ["-e", package] if editable else [package]
    session.install(*_find_links(), *args)


@nox.session
def demo(session: nox.Session) -> None:
    """Train a digits classifier with progress bar, checkpoints and CSV metrics."""
    install_torch(session)
    session.install(*_find_links(), "packages/core", "scikit-learn")
    session.run("python", "examples/digits_demo.py", *session.posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """The default suite: everything that runs on a 2-core CPU machine in minutes."""
    install_torch(session)
    session.install(*_find_links(), *TEST_DEPS)
    install_fulmen(session)
    session.install(*_find_links(), "libcst>=1.1")  # fulmen[migrate], for tests/core/migrate
    session.install(*_find_links(), "jsonargparse[signatures]>=4.53,<5")  # fulmen[cli], for tests/core/cli
    # Optional for users; installed here so self.log(name, Metric) is tested (tests/core/trainer).
    session.install(*_find_links(), "torchmetrics>=1.3")
    # The Lightning corpus's Fabric program logs to TensorBoard (tests/migration); without it, it is skipped.
    session.install(*_find_links(), "tensorboard")
    session.run("python", "-m", "pytest", "tests", *session.posargs)


@nox.session
def loggers(session: nox.Session) -> None:
    """The MLflow, W&B, TensorBoard, ClearML and Comet loggers against the real backends (a local
    ``mlflow server``, W&B, ClearML and Comet offline, TensorBoard event files):
    ``fulmen-loggers[all]`` on top of the ``tests`` session's install. The default ``tests``
    session skips these backend tests. Also ``fulmen report`` with ``fulmen[report]``
    (matplotlib), its page checked in headless Chromium where ``tests/report/install_chromium.sh``
    could install it."""
    install_torch(session)
    session.install(*_find_links(), *TEST_DEPS)
    install_fulmen(session)
    session.install(*_find_links(), "-e", "./packages/loggers[all]", "-e", "./packages/core[report]")
    session.run("python", "-m", "pytest", "tests/loggers", "tests/report", *session.posargs)


@nox.session
def checkpoint_stress(session: nox.Session) -> None:
    """Many kill-and-resume runs that must end bitwise identical (``-- --runs N --seed S``)."""
    install_torch(session)
    session.install(*_find_links(), *TEST_DEPS)
    install_fulmen(session)
    session.run("python", "benchmarks/checkpoint_stress.py", *session.posargs)


@nox.session
def benchmarks(session: nox.Session) -> None:
    """CPU benchmarks against a raw PyTorch loop and Lightning, a few minutes (``benchmarks/RESULTS.md``).

    Lightning is installed here only, for the comparison (``-- --no-lightning`` skips it); it
    is never a dependency of fulmen. Other arguments go to ``benchmarks/run_cpu.py``
    (``--quick``, ``--only ...``, ``--deps``).
    """
    install_torch(session)
    session.install(*_find_links(), "-e", "packages/core")
    args = list(session.posargs)
    if "--no-lightning" in args:
        args.remove("--no-lightning")
    else:
        session.install(*_find_links(), "lightning")
    session.run("python", "benchmarks/run_cpu.py", *args)


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site (``mkdocs.yml``): the guides in ``docs/`` and the API reference
    rendered from the docstrings, built in strict mode into ``build/site``
    (``-- --site-dir DIR`` to put it elsewhere).

    mkdocstrings reads the sources statically (the ``paths`` in ``mkdocs.yml``), so neither
    torch nor fulmen is installed and the session takes seconds. Strict mode fails on a
    broken link or anchor between pages, on a ``:::`` reference to an object that does not
    exist and on any warning griffe raises while parsing a docstring.
    """
    # Pinned: a new release of the site tools must not break, or quietly loosen, the build.
    # griffe-inherited-docstrings shows a base class's docstring on an override without one;
    # ruff only lays out long signatures (the Trainer's) over several lines.
    session.install(*_find_links(), "mkdocs==1.6.1", "mkdocs-material==9.8.2", "mkdocstrings[python]==1.0.8",
                    "mkdocstrings-python==2.0.11", "griffe-inherited-docstrings==1.1.4", "ruff==0.17.6")
    site_dir = [] if "--site-dir" in session.posargs else ["--site-dir", "build/site"]
    session.run("mkdocs", "build", "--strict", *site_dir, *session.posargs, env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session
def deepspeed(session: nox.Session) -> None:
    """The DeepSpeed strategies for real on 2 CPU processes (``tests/deepspeed``, and
    pretrained weights loaded into ZeRO-3 partitions from ``tests/finetune``): the
    ``tests`` session's install plus DeepSpeed, pinned and pure Python (``DS_BUILD_OPS=0``).
    Its ops are JIT-compiled on first use (deepspeed_shm_comm_op, 40-60 s) into a cache
    that outlives the session's virtualenv, so they are built once per machine. The default
    ``tests`` session skips these tests, saying why."""
    install_torch(session)
    session.install(*_find_links(), *TEST_DEPS)
    install_fulmen(session)
    session.install(*_find_links(), "deepspeed==0.19.8", env={"DS_BUILD_OPS": "0"})
    # safetensors: pretrained weights loaded into ZeRO-3 partitions (tests/finetune's DeepSpeed case).
    session.install(*_find_links(), "safetensors")
    extensions = os.path.join(getattr(session, "cache_dir", os.path.expanduser("~/.cache")), "torch_extensions")
    env = {"TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", extensions)}
    session.run("python", "-m", "pytest", "tests/deepspeed", *session.posargs, env=env)
    if not session.posargs:  # its own run: both directories' test modules import a module named conftest
        session.run("python", "-m", "pytest", "tests/finetune/test_finetune_deepspeed.py", env=env)


@nox.session
def ray(session: nox.Session) -> None:
    """fulmen-ray on a real local Ray cluster (``tests/ray``): 2 Ray Train workers against
    fulmen's own DDP, a worker SIGKILLed mid-epoch and resumed exactly, the argument checks.
    The ``tests`` session's install plus Ray Train, pinned (the version NOTES.md checked).
    One cluster serves the whole run; the default ``tests`` session skips these tests (all
    but the package's registration), saying why."""
    install_torch(session)
    session.install(*_find_links(), *TEST_DEPS)
    install_fulmen(session)
    # psutil: tests/ray/conftest.py stops the cluster's processes by PID with it (Ray only
    # bundles a private copy, on sys.path after ``import ray``).
    session.install(*_find_links(), "ray[train]==2.60.0", "psutil")
    session.run("python", "-m", "pytest", "tests/ray", *session.posargs,
                env={"OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"})


@nox.session
def xla(session: nox.Session) -> None:
    """torch-xla for real on its PJRT CPU device (``tests/xla``), and the core's own suite
    on the oldest torch fulmen supports (``tests/core``): torch-xla 2.9 is built for
    torch 2.9.0 exactly, so this session installs that pair (torch 2.9.0 from the index is
    a CUDA build: a ~4 GB download, used here on the CPU). The default ``tests`` session
    (torch 2.13) skips tests/xla, saying why."""
    session.install(*_find_links(), "torch==2.9.0", "torch-xla==2.9.0")
    session.install(*_find_links(), *TEST_DEPS)
    install_fulmen(session)
    # fulmen[cli] and fulmen[migrate], so tests/core/cli and tests/core/migrate run on torch 2.9 too.
    session.install(*_find_links(), "-e", "packages/core[cli,migrate]")
    session.run("python", "-c", "import torch, torch_xla; print('torch', torch.__version__, 'torch-xla', torch_xla.__version__)")
    session.run("python", "-m", "pytest", "tests/xla", "tests/core", *session.posargs,
                env={"OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"})


LLM_TESTS = ["tests/finetune/test_policies_and_loading.py", "tests/finetune/test_trainable_checkpoint.py",
             "tests/finetune/test_export.py", "tests/finetune/test_finetune_fsdp.py"]
LLM_SHORT = ["--pretrain-steps", "150", "--finetune-steps", "40", "--val-windows", "128",
             "--require-improvement", "0.15"]


@nox.session
def finetune_llm(session: nox.Session) -> None:
    """``examples/finetune_llm.py`` (tiny GPT-2 pretrained on the stdlib, LoRA on a held-out
    package; short settings, failing unless validation perplexity drops by 15%; arguments after
    ``--`` replace them), then the language-model fine-tuning tests (meta-device loading, FSDP
    on 2 processes, trainable-only checkpoints, export). Installs transformers, peft and
    safetensors next to the core and the FSDP package."""
    install_torch(session)
    session.install(*_find_links(), *TEST_DEPS, "-e", "packages/core", "-e", "packages/strategy-fsdp",
                    "transformers>=5,<6", "peft>=0.21", "safetensors>=0.4")
    env = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    work = os.path.join(session.create_tmp(), "finetune_llm")
    session.run("python", "examples/finetune_llm.py", "--out", work, *(session.posargs or LLM_SHORT), env=env)
    session.run("python", "-m", "pytest", *LLM_TESTS, "-q", env=env)


VISION_SHORT = ["--pretrain-epochs", "10", "--epochs", "6"]


@nox.session
def finetune_vision(session: nox.Session) -> None:
    """``examples/finetune_vision.py`` with ``transformers``' ViT (short settings; arguments
    after ``--`` replace them, e.g. ``-- --epochs 15``), then the recipe's tests. The
    layer-decay and EMA tests need no ``transformers``: they run in the ``tests`` session.
    Only the core is installed: the recipe needs nothing else of fulmen."""
    install_torch(session)
    session.install(*_find_links(), *TEST_DEPS, "-e", "packages/core", "transformers>=5,<6", "safetensors", "scikit-learn")
    env = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = os.path.join(session.create_tmp(), "finetune_vision.json")
    session.run("python", "examples/finetune_vision.py", *(session.posargs or VISION_SHORT), "--json", result, env=env)
    # The recipe test checks this run's accuracies instead of training the same thing again
    # (only for the short settings it is written for).
    recipe_env = {**env, "FULMEN_VISION_RESULT": result} if not session.posargs else env
    session.run("python", "-m", "pytest", "tests/finetune/test_vision_recipe.py", "-q", env=recipe_env)


@nox.session
def finetune_vision_timm(session: nox.Session) -> None:
    """The vision recipe with a ``timm`` ViT (``--backbone timm:vit_tiny_patch16_224``, built with
    ``pretrained=False`` at 8x8 pixels). timm imports torchvision, and torchvision from the
    index is built against the CUDA build of torch (next to the CPU build its operators fail
    to load: ``operator torchvision::nms does not exist``), so this session installs a pair
    that loads: torch 2.9.0 (the CUDA build the ``xla`` session also installs, a ~4 GB
    download; it runs on the CPU) with torchvision 0.24.0. Not in ``.ci/run``: the download
    alone outlasts the session's CI budget."""
    session.install(*_find_links(), "torch==2.9.0", "torchvision==0.24.0", "timm==1.0.31")
    session.install(*_find_links(), *TEST_DEPS, "-e", "packages/core", "safetensors", "scikit-learn")
    env = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    session.run("python", "-c", "import torch, torchvision, timm; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__)")
    session.run("python", "examples/finetune_vision.py", "--backbone", "timm:vit_tiny_patch16_224",
                *(session.posargs or VISION_SHORT), env=env)
    session.run("python", "-m", "pytest", "tests/finetune/test_vision_recipe.py", "-q", "-k", "timm", env=env)
