"""Optimizer parameter groups with layer-wise learning-rate decay.

Fine-tuning a pretrained encoder works best when the layers near the input, which hold the
most general features, move least: layer ``i`` of ``L`` trains at ``lr * decay ** (L - i)``,
so the head gets ``lr`` and the embeddings the smallest rate (BEiT, MAE and most ViT
fine-tuning recipes do this). Biases and normalisation weights (every parameter with at
most one dimension) get no weight decay, the usual convention: decaying a norm's scale
towards zero only fights the normalisation.

A parameter's *depth* comes from one of three places:

- nothing given: the layout of the common vision transformers, found by name — the
  embeddings (``embeddings.*``, or ``patch_embed``/``pos_embed``/``cls_token``) are depth 0,
  block ``N`` (``encoder.layer.N``, ``blocks.N``, ``layers.N``) is depth ``N + 1``, everything
  after the blocks (final norm, pooler, classifier) is the top; a hierarchical model (blocks
  inside numbered stages) is refused rather than flattened wrongly;
- ``layers=[...]``: an ordered list of module-name prefixes, input side first (an entry may
  be a list of prefixes that share one depth); the longest matching prefix decides;
- ``layers=function``: ``name -> depth`` (an ``int >= 0``; larger is nearer the output).

Frozen parameters (``requires_grad=False``) are left out, so the groups can be built in
``configure_optimizers`` while a ``BaseFinetuning`` callback holds the backbone frozen;
:func:`unfreeze_with_layer_decay` adds the backbone later, each depth at its own decayed
rate, from a ``finetune_function``. The depths are always counted over the whole model, so a
layer gets the same learning rate whether it joined at the start or at an unfreeze.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Dict, Iterable, List, Sequence, Tuple, Union

import torch
from torch import nn

from fulmen.errors import FulmenConfigError, FulmenUserCodeError

Layers = Union[None, Sequence[Union[str, Sequence[str]]], Callable[[str], int]]

# Block index in the usual transformer layouts: ``encoder.layer.3.``, ``blocks.3.``, ``layers.3.``.
_BLOCK = re.compile(r"(?:^|\.)(?:layer|layers|blocks)\.(\d+)(?=\.|$)")
# Numbered containers of any kind: a name with two of them (``stages.1.blocks.0``) belongs to
# a hierarchical model, whose depth the flat layout cannot tell.
_NUMBERED = re.compile(r"(?:^|\.)(?:layer|layers|blocks|stages|stage)\.(\d+)(?=\.|$)")
_EMBEDDING = re.compile(
    r"(?:^|\.)(?:embeddings|patch_embed|pos_embed|cls_token|dist_token|reg_token|mask_token)(?:\.|$)"
)


def layer_decay_param_groups(
    module: nn.Module,
    lr: float,
    layer_decay: float,
    weight_decay: float = 0.0,
    layers: Layers = None,
    no_weight_decay: Iterable[str] = (),
) -> List[Dict[str, Any]]:
    """Parameter groups for ``torch.optim`` with layer-wise learning-rate decay.

    Args:
        module: the model (or the ``fulmen.Module`` holding it); its trainable parameters are grouped.
        lr: the learning rate of the top depth (the head).
        layer_decay: in (0, 1]; each depth below the top trains at this factor times the one above.
        weight_decay: for the parameters with two or more dimensions; the others get 0.
        layers: how depths are found (see the module docstring): ``None``, prefixes, or a function.
        no_weight_decay: more parameter names (or name suffixes, e.g. ``"pos_embed"``) to exempt.

    Returns:
        One group per (depth, decayed or not) that has parameters, input side first, each
        ``{"params", "lr", "weight_decay", "lr_scale", "depth", "name"}``; pass the list to the
        optimizer. ``lr_scale`` is ``lr``'s multiplier, kept for schedulers that re-derive rates.
    """
    return _groups(module, lr, layer_decay, weight_decay, layers, no_weight_decay, skip=set())


def unfreeze_with_layer_decay(
    modules: Union[nn.Module, Iterable[nn.Module]],
    optimizer: torch.optim.Optimizer,
    module: nn.Module,
    lr: float,
    layer_decay: float,
    weight_decay: float = 0.0,
    layers: Layers = None,
    no_weight_decay: Iterable[str] = (),
) -> List[Dict[str, Any]]:
    """Make ``modules`` trainable and add their parameters to ``optimizer``, one group per depth
    at its decayed learning rate: the layer-wise counterpart of
    ``BaseFinetuning.unfreeze_and_add_param_group``, meant for a ``finetune_function``.

    Depths are counted over all of ``module`` (the whole model, as given to
    :func:`layer_decay_param_groups`), so ``lr`` here means the rate the top depth would have.
    Parameters the optimizer already holds are not added again. Returns the added groups."""
    from fulmen.callbacks.finetuning import BaseFinetuning

    BaseFinetuning.make_trainable(modules)
    wanted = {id(p) for p in BaseFinetuning.filter_params(modules, requires_grad=True)}
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    skip = {pid for pid in (id(p) for p in module.parameters()) if pid not in wanted or pid in held}
    groups = _groups(module, lr, layer_decay, weight_decay, layers, no_weight_decay, skip=skip)
    for group in groups:
        optimizer.add_param_group(group)
    return groups


# --------------------------------------------------------------------------- the work


def _groups(
    module: nn.Module,
    lr: float,
    layer_decay: float,
    weight_decay: float,
    layers: Layers,
    no_weight_decay: Iterable[str],
    skip: set,
) -> List[Dict[str, Any]]:
    _check_numbers(lr, layer_decay, weight_decay)
    exempt = tuple(no_weight_decay)
    named = list(module.named_parameters())
    depth_of = _depth_function(named, layers)
    depths = {name: depth_of(name) for name, _ in named}
    top = max(depths.values(), default=0)
    buckets: Dict[Tuple[int, bool], List[nn.Parameter]] = {}
    for name, param in named:
        if not param.requires_grad or id(param) in skip:
            continue
        decayed = param.ndim > 1 and not name.endswith(".bias") and not _named_in(name, exempt)
        buckets.setdefault((depths[name], decayed), []).append(param)
    groups = []
    for (depth, decayed), params in sorted(buckets.items(), key=lambda item: (item[0][0], not item[0][1])):
        scale = float(layer_decay) ** (top - depth)
        groups.append({
            "params": params,
            "lr": float(lr) * scale,
            "weight_decay": float(weight_decay) if decayed else 0.0,
            "lr_scale": scale,
            "depth": depth,
            "name": f"depth_{depth}" + ("" if decayed else "_no_decay"),
        })
    return groups


def _check_numbers(lr: float, layer_decay: float, weight_decay: float) -> None:
    if not isinstance(layer_decay, (int, float)) or isinstance(layer_decay, bool) or not 0 < layer_decay <= 1:
        raise FulmenConfigError(
            f"layer_decay={layer_decay!r} must be a number in (0, 1]: each layer trains at that factor times "
            "the rate of the layer above it (1 turns the decay off; 0.65-0.9 is usual for ViT fine-tuning)"
        )
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or lr <= 0:
        raise FulmenConfigError(f"lr={lr!r} must be a positive number (the learning rate of the top layer)")
    if not isinstance(weight_decay, (int, float)) or isinstance(weight_decay, bool) or weight_decay < 0:
        raise FulmenConfigError(f"weight_decay={weight_decay!r} must be a number >= 0")


def _named_in(name: str, names: Tuple[str, ...]) -> bool:
    return any(name == n or name.endswith("." + n) for n in names)


def _depth_function(named: List[Tuple[str, nn.Parameter]], layers: Layers) -> Callable[[str], int]:
    if layers is None:
        return _layout_depths([name for name, _ in named])
    if callable(layers):
        return _checked_function(layers)
    if isinstance(layers, str) or not isinstance(layers, Sequence):
        raise FulmenConfigError(
            f"layers={layers!r} must be a list of module-name prefixes (input side first), a function "
            "name -> depth, or None for the usual vision-transformer layout"
        )
    return _prefix_depths([name for name, _ in named], layers)


def _checked_function(function: Callable[[str], int]) -> Callable[[str], int]:
    def depth(name: str) -> int:
        value = function(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise FulmenUserCodeError(
                f"layers function returned {value!r} for parameter {name!r}; it must return an int >= 0 "
                "(0 for the input side, larger nearer the output) for every parameter"
            )
        return value

    return depth


def _prefix_depths(names: List[str], layers: Sequence[Union[str, Sequence[str]]]) -> Callable[[str], int]:
    prefixes: List[Tuple[str, int]] = []
    for depth, entry in enumerate(layers):
        for prefix in ([entry] if isinstance(entry, str) else list(entry)):
            if not isinstance(prefix, str) or not prefix:
                raise FulmenConfigError(
                    f"layers[{depth}] holds {prefix!r}; each prefix must be a non-empty module name"
                )
            prefixes.append((prefix.rstrip("."), depth))
    unused = [p for p, _ in prefixes if not any(_under(name, p) for name in names)]
    if unused:
        raise FulmenConfigError(
            f"layers prefix(es) {unused} match no parameter of the model; parameter names look like "
            f"{names[:3]}: use module names from model.named_parameters()"
        )
    unmatched = [n for n in names if not any(_under(n, p) for p, _ in prefixes)]
    if unmatched:
        raise FulmenConfigError(
            f"{len(unmatched)} parameter(s) match no layers prefix (e.g. {unmatched[:3]}); add a prefix for "
            "them (the head usually goes last), or pass a function name -> depth"
        )
    by_length = sorted(prefixes, key=lambda item: len(item[0]), reverse=True)

    def depth(name: str) -> int:
        return next(d for p, d in by_length if _under(name, p))

    return depth


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _layout_depths(names: List[str]) -> Callable[[str], int]:
    """Depths from the usual vision-transformer parameter names; refuses a model without
    numbered blocks rather than guessing one flat group."""
    nested = [n for n in names if len(_NUMBERED.findall(n)) > 1]
    if nested:
        raise FulmenConfigError(
            f"this model has blocks inside numbered stages (e.g. {nested[0]!r}), so the flat layout would "
            "give blocks of different stages one depth: pass layers=[prefixes, input side first] or "
            "layers=function(name) -> depth"
        )
    blocks = [int(m.group(1)) for m in map(_BLOCK.search, names) if m]
    if not blocks:
        raise FulmenConfigError(
            "could not find the layers of this model by name (no 'encoder.layer.N', 'blocks.N' or 'layers.N' "
            f"parameters; names look like {names[:3]}): pass layers=[prefixes, input side first] or "
            "layers=function(name) -> depth"
        )
    top = max(blocks) + 2
    # Outside the blocks: the embeddings (found by name) come first, everything else (final
    # norm, pooler, head) after them, wherever the user's Module registered it.
    order: Dict[str, int] = {}
    for name in names:
        match = _BLOCK.search(name)
        order[name] = int(match.group(1)) + 1 if match else (0 if _EMBEDDING.search(name) else top)
    return order.__getitem__
