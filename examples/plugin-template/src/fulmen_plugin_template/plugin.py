"""The entry point (``[project.entry-points."fulmen.plugins"] template = ...``).

fulmen imports this module when it discovers plugins, so it stays import-light: only the
hook functions, no torch extension, no backend library. Each hook hands fulmen a
``register(name, factory, description)`` callable; the factory (here the class, imported
inside the hook) runs only when a user asks for that name.
"""

import fulmen


@fulmen.hookimpl
def register_strategies(register):
    from fulmen_plugin_template.strategy import TimedSingleDeviceStrategy

    register("timed_single_device", TimedSingleDeviceStrategy, "one device; records the wall time of each optimizer step")


@fulmen.hookimpl
def register_precisions(register):
    from fulmen_plugin_template.precision import TF32Precision

    register("32-tf32", TF32Precision, "float32 weights, TF32 matmuls and convolutions on NVIDIA GPUs")


@fulmen.hookimpl
def register_loggers(register):
    from fulmen_plugin_template.logger import JSONLinesLogger

    register("jsonl", JSONLinesLogger, "metrics.jsonl: one JSON object per logged step")


@fulmen.hookimpl
def register_callbacks(register):
    from fulmen_plugin_template.callback import GradNormMonitor

    register("grad_norm", GradNormMonitor, "log the total gradient norm before each optimizer step")
