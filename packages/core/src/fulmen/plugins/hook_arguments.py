"""How a callback's or module's hook method is handed its arguments.

Two conventions meet here. fulmen's own: a hook takes any subset of its documented
arguments, by name (``def on_train_batch_end(self, trainer, outputs)``), which pluggy
does natively. Lightning's: the hook takes all arguments, positionally, under names the
author chose (``def on_train_batch_end(self, trainer, pl_module, outputs, batch,
batch_idx)``). Lightning programs must run unchanged, so each method is looked at once,
when it is attached, and given a *plan*:

* ``native``: every required parameter is a documented name and nothing else needs
  care; pluggy calls the method itself, at no extra cost per call.
* ``by_name``: as native, but some documented names carry defaults
  (``dataloader_idx=0``). pluggy never passes defaulted arguments, which would leave
  the default in place forever, so a small adapter passes them by name.
* ``positional``: a required parameter has a name fulmen does not document, or the
  method takes ``*args``: Lightning's convention. The adapter passes the documented
  arguments in Lightning's order, as many as the method takes. Callbacks receive
  ``(trainer, module, ...)``; a Module or DataModule, which is itself the module,
  receives the arguments after those two, as Lightning calls it.

The adapters are ordinary functions whose parameter names are documented names, so
pluggy's argument selection and fulmen's per-step fast path treat them like any other
implementation; they are generated once per distinct shape and reused.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from fulmen import hookspecs
from fulmen.errors import FulmenUserCodeError

NATIVE = "native"
BY_NAME = "by_name"
POSITIONAL = "positional"

# What Lightning passes to an object that is itself the module (or its DataModule).
_OWN_ARGUMENTS = ("trainer", "module")


@dataclass(frozen=True)
class CallPlan:
    kind: str
    # The documented names the adapter receives and forwards (empty for native).
    arguments: Tuple[str, ...] = ()


@functools.lru_cache(maxsize=None)
def spec_arguments(hook_name: str) -> Tuple[str, ...]:
    """The documented arguments of a hook, in their order (Lightning's order too)."""
    spec = getattr(hookspecs, hook_name)
    return tuple(inspect.signature(spec).parameters)


def lightning_order(hook_name: str, what: str) -> Tuple[str, ...]:
    """The arguments Lightning would pass positionally to this kind of object."""
    arguments = spec_arguments(hook_name)
    if what == "callback":
        return arguments
    return tuple(a for a in arguments if a not in _OWN_ARGUMENTS)


def plan_for(method: Callable[..., Any], hook_name: str, what: str, owner: str) -> CallPlan:
    """Decide how ``method`` (bound) is called for ``hook_name``; refuse what cannot work."""
    documented = spec_arguments(hook_name)
    try:
        parameters = list(inspect.signature(method).parameters.values())
    except (TypeError, ValueError):  # a builtin or C callable: leave it to pluggy
        return CallPlan(NATIVE)
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    keyword_only_required = [p.name for p in parameters if p.kind is p.KEYWORD_ONLY and p.default is p.empty]
    takes_varargs = any(p.kind is p.VAR_POSITIONAL for p in parameters)
    if keyword_only_required:
        raise _refusal(
            what, owner, hook_name, lightning_order(hook_name, what),
            f"its keyword-only argument(s) {keyword_only_required} have no default",
        )
    positional_only = any(p.kind is p.POSITIONAL_ONLY for p in positional)
    if not takes_varargs and not positional_only and all(p.name in documented for p in required):
        defaulted = [p.name for p in positional if p.default is not p.empty and p.name in documented]
        if not defaulted:
            return CallPlan(NATIVE)
        wanted = tuple(p.name for p in positional if p.name in documented)
        return CallPlan(BY_NAME, wanted)
    order = lightning_order(hook_name, what)
    # Lightning passes every argument, except ``dataloader_idx`` when there is one loader; a
    # method that takes fewer would fail under Lightning too, and under fulmen it would
    # silently receive the wrong values, so it is refused.
    fewest = len(order) - (1 if order and order[-1] == "dataloader_idx" else 0)
    unknown = [p.name for p in required if p.name not in documented]
    if len(required) > len(order):
        raise _refusal(
            what, owner, hook_name, order,
            f"it requires {len(required)} arguments {[p.name for p in required]}, more than the "
            f"{len(order)} Lightning's order passes",
        )
    if not takes_varargs and len(positional) < fewest:
        raise _refusal(
            what, owner, hook_name, order,
            f"its argument(s) {unknown} are not documented names, so it is read as Lightning's "
            f"positional style, but it takes {len(positional)} of the {len(order)} arguments",
        )
    count = len(order) if takes_varargs else min(len(positional), len(order))
    return CallPlan(POSITIONAL, order[:count])


def _refusal(what: str, owner: str, hook_name: str, order: Sequence[str], why: str) -> FulmenUserCodeError:
    documented = spec_arguments(hook_name)
    return FulmenUserCodeError(
        f"{what} {owner}.{hook_name} cannot be called: {why}. A hook takes either any subset of "
        f"{list(documented)} by name (fulmen's style, see fulmen.hookspecs), or all of {list(order)} "
        f"positionally under any names (Lightning's style, where the module may be called pl_module)"
    )


@functools.lru_cache(maxsize=None)
def _adapter_factory(kind: str, arguments: Tuple[str, ...]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Build, once per shape, a maker of functions ``f(<arguments>)`` that forward to a target.

    The parameter names must be real names in the function's code object, which is what
    pluggy reads; that is why the source is generated rather than written with ``*args``.
    """
    for name in arguments:
        if not name.isidentifier():  # documented names only; guards the generated source
            raise ValueError(f"not an identifier: {name!r}")
    parameters = ", ".join(arguments)
    forwarded = parameters if kind == POSITIONAL else ", ".join(f"{a}={a}" for a in arguments)
    source = (
        "def make(target):\n"
        f"    def adapter({parameters}):\n"
        f"        return target({forwarded})\n"
        "    return adapter\n"
    )
    namespace: Dict[str, Any] = {}
    exec(compile(source, f"<fulmen hook adapter {kind}{arguments}>", "exec"), namespace)
    return namespace["make"]


def adapt(method: Callable[..., Any], plan: CallPlan) -> Callable[..., Any]:
    """The function pluggy registers for ``method`` under ``plan``."""
    if plan.kind == NATIVE:
        return method
    adapter = _adapter_factory(plan.kind, plan.arguments)(method)
    adapter.__qualname__ = adapter.__name__ = getattr(method, "__name__", "hook")
    adapter.__doc__ = getattr(method, "__doc__", None)
    return adapter


class AdaptedCarrier:
    """What is registered with pluggy in place of a carrier whose hooks need adapters.

    It holds, under each hook's name, the carrier's bound method or its adapter, so the
    user's object is never modified. ``carrier`` is the object it speaks for."""

    def __init__(self, carrier: Any, hooks: Dict[str, Callable[..., Any]]) -> None:
        self.carrier = carrier
        self.__dict__.update(hooks)

    def __repr__(self) -> str:
        return f"<hooks of {type(self.carrier).__qualname__}>"


def carrier_for_registration(obj: Any, hook_names: Sequence[str], what: str) -> Tuple[Any, Optional[Dict[str, CallPlan]]]:
    """``obj`` itself when pluggy can call all its hooks as they are, else an
    ``AdaptedCarrier``; with the plans, for diagnostics and tests."""
    owner = type(obj).__qualname__
    plans: Dict[str, CallPlan] = {}
    for name in hook_names:
        plans[name] = plan_for(getattr(obj, name), name, what, owner)
    if all(plan.kind == NATIVE for plan in plans.values()):
        return obj, plans
    hooks = {name: adapt(getattr(obj, name), plan) for name, plan in plans.items()}
    return AdaptedCarrier(obj, hooks), plans
