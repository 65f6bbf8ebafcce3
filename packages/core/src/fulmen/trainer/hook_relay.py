"""Calling lifecycle hooks at O(1) cost per call, whatever the number of callbacks.

The callers of hooks that someone implements are looked up once when objects are attached,
so a hook nobody implements costs one dict miss in the training step.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, FrozenSet, List, Optional, Sequence, Tuple

from pluggy import HookCallError

from fulmen import hookspecs
from fulmen.errors import FulmenConfigError
from fulmen.plugins.manager import FulmenPluginManager, HookCarrier


class HookRelay:
    def __init__(self, manager: FulmenPluginManager) -> None:
        self._pm = manager
        self._attached: List[Any] = []
        self._callers: Dict[str, Any] = {}
        self._direct: Dict[str, Tuple[Tuple[Callable[..., Any], Tuple[str, ...]], ...]] = {}
        self._argnames: Dict[str, FrozenSet[str]] = {}
        # pluggy's call path, unless someone turned on tracing/monitoring (which replaces it).
        self._plain_hookexec = getattr(manager, "_fulmen_untraced_hookexec", getattr(manager, "_inner_hookexec", None))
        # wrap(hook, impl or None, function) -> function, while a profiler runs (see instrument)
        self._wrap: Optional[Callable[[str, Any, Callable[..., Any]], Callable[..., Any]]] = None
        self._refresh()

    def attach(self, module: Any, datamodule: Any, callbacks: Sequence[Any]) -> None:
        """Register for one fit/validate/test/predict. pluggy calls the most recently
        registered first, so the module goes in before the callbacks (reversed), giving:
        callbacks in list order, then the datamodule, the module, then plugin modules."""
        self.detach()
        seen = set()
        for callback in callbacks:
            if id(callback) in seen:
                raise FulmenConfigError(
                    f"the callback {type(callback).__name__} appears twice in callbacks=; pass each object once"
                )
            seen.add(id(callback))
        ordered = [module] + ([datamodule] if datamodule is not None else []) + list(reversed(callbacks))
        for obj in ordered:
            what = "callback" if obj in callbacks else "datamodule" if obj is datamodule else "module"
            if isinstance(obj, HookCarrier):
                registered = self._pm.register_carrier(obj, what)
            else:
                registered = obj
                self._pm.register(obj, name=f"{what}:{type(obj).__qualname__}:{id(obj)}")
            self._attached.append(registered)
        self._refresh()

    def detach(self) -> None:
        for obj in self._attached:
            if self._pm.is_registered(obj):
                self._pm.unregister(obj)
        self._attached = []
        self._refresh()

    def _refresh(self) -> None:
        self._callers = {}
        self._direct = {}
        self._argnames = {}
        self.implemented: FrozenSet[str] = frozenset()
        for name in hookspecs.LIFECYCLE_HOOKS:
            caller = getattr(self._pm.hook, name)
            impls = caller.get_hookimpls()
            if not impls:
                continue
            self._callers[name] = caller
            self._argnames[name] = frozenset(arg for impl in impls for arg in impl.argnames)
            firstresult = caller.spec is not None and caller.spec.opts.get("firstresult")
            if not firstresult and all(not (impl.hookwrapper or getattr(impl, "wrapper", False) or getattr(impl, "kwargnames", ())) for impl in impls):
                # Plain implementations only: call them as pluggy's _multicall would (last
                # registered first, each with the arguments it names) without its machinery,
                # which costs a few µs per hook and step. Wrappers keep pluggy's own path.
                self._direct[name] = tuple((impl.function, tuple(impl.argnames)) for impl in reversed(impls))
            if self._wrap is not None:
                self._instrument_hook(name, caller)
        # Hooks someone implements; the Trainer tests this before building a call's arguments.
        self.implemented = frozenset(self._callers)

    def instrument(self, wrap: Optional[Callable[[str, Any, Callable[..., Any]], Callable[..., Any]]]) -> None:
        """Route every hook call through ``wrap(hook, impl, function)`` (a profiler's timing);
        ``None`` restores the plain callers. Applied when the callers are looked up, so a run
        without a profiler calls exactly what it would have called without this method."""
        self._wrap = wrap
        self._refresh()

    def _instrument_hook(self, name: str, caller: Any) -> None:
        wrap = self._wrap
        direct = self._direct.get(name)
        if direct is not None:  # each implementation on its own: [Callback]X.hook
            impls = tuple(reversed(caller.get_hookimpls()))
            self._direct[name] = tuple((wrap(name, impl, function), argnames) for impl, (function, argnames) in zip(impls, direct))
        # pluggy's own path (wrappers, tracing) times the hook as one call.
        self._callers[name] = wrap(name, None, caller)

    def has(self, name: str) -> bool:
        return name in self._callers

    def wants(self, name: str, argument: str) -> bool:
        """Whether an implementation of ``name`` takes ``argument`` (worth computing it)."""
        names = self._argnames.get(name)
        return names is not None and argument in names

    def call(self, name: str, trainer: Any, module: Any, kwargs: Dict[str, Any]) -> None:
        caller = self._callers.get(name)
        if caller is None:
            return
        direct = self._direct.get(name)
        if direct is not None and getattr(self._pm, "_inner_hookexec", None) is self._plain_hookexec:
            kwargs["trainer"] = trainer
            kwargs["module"] = module
            get = kwargs.__getitem__
            for function, argnames in direct:
                try:
                    args = tuple(map(get, argnames))  # no Python frame, unlike a comprehension
                except KeyError as exc:  # pluggy's error for the same mistake
                    raise HookCallError(f"hook call must provide argument {exc.args[0]!r}") from exc
                function(*args)
            return
        caller(trainer=trainer, module=module, **kwargs)
