"""Where the Trainer's dataloaders come from and how many batches of each it uses."""

from __future__ import annotations

import math
from typing import Any, List, Union

from torch.utils.data import DataLoader, IterableDataset, SequentialSampler

from fulmen.dataloading import with_sampler
from fulmen.errors import FulmenConfigError, FulmenUserCodeError

INF = math.inf


def as_loader_list(value: Any) -> List[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, dict):
        return list(value.values())
    return [value]


def datamodule_in_place_of_loaders(loaders: Any, datamodule: Any, argument: str):
    """``fit(model, dm)``: Lightning reads a DataModule given where the dataloaders go as
    ``datamodule=``, and so does fulmen; both at once would leave one unused, so it is refused.
    Returns ``(loaders, datamodule)``."""
    from fulmen.datamodule import DataModule

    if not isinstance(loaders, DataModule):
        return loaders, datamodule
    if datamodule is not None:
        raise FulmenConfigError(
            f"a DataModule was given both as {argument} and as datamodule=; pass it once, as datamodule="
        )
    return None, loaders


def find_loaders(kind: str, explicit: Any, datamodule: Any, module: Any) -> List[Any]:
    """``explicit`` argument first, then the DataModule's, then the Module's method."""
    if explicit is not None:
        if hasattr(explicit, "train_dataloader") and kind == "train":
            raise FulmenConfigError(
                "a DataModule was passed as train_dataloaders; pass it as datamodule= instead"
            )
        return as_loader_list(explicit)
    method_name = f"{kind}_dataloader"
    for source in (datamodule, module):
        method = getattr(source, method_name, None) if source is not None else None
        if callable(method):
            return as_loader_list(method())
    return []


def has_len(loader: Any) -> bool:
    if isinstance(loader, DataLoader) and isinstance(loader.dataset, IterableDataset):
        try:
            len(loader.dataset)
        except TypeError:
            return False
    try:
        len(loader)
        return True
    except (TypeError, NotImplementedError):
        return False


def num_batches(loader: Any, limit: Union[int, float], what: str) -> Union[int, float]:
    """How many batches to draw: ``limit`` is a count (int) or a fraction (float)."""
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit < 0:
        raise FulmenConfigError(f"limit_{what}_batches={limit!r} must be a count (int) or a fraction in [0, 1]")
    if isinstance(limit, float) and limit > 1.0:
        raise FulmenConfigError(
            f"limit_{what}_batches={limit} is a fraction above 1.0; use an int for a batch count"
        )
    if not has_len(loader):
        if isinstance(limit, int):
            return limit
        if limit == 1.0:
            return INF
        raise FulmenConfigError(
            f"limit_{what}_batches={limit} is a fraction, but the {what} dataloader has no length "
            f"(an iterable dataset); give a batch count instead, e.g. limit_{what}_batches=100"
        )
    length = len(loader)
    if isinstance(limit, int):
        return min(length, limit)
    count = int(length * limit)
    if count == 0 and limit > 0 and length > 0:
        count = 1
    return count


def check_not_empty(loader: Any, count: Union[int, float], what: str, limit: Any) -> None:
    if count != 0:
        return
    if limit == 0:
        return
    detail = ""
    dataset = getattr(loader, "dataset", None)
    if dataset is not None:
        try:
            detail = (
                f" (dataset of {len(dataset)} samples, batch_size={getattr(loader, 'batch_size', None)}, "
                f"drop_last={getattr(loader, 'drop_last', None)})"
            )
        except TypeError:
            pass
    raise FulmenUserCodeError(
        f"the {what} dataloader yields no batches{detail}; give it data, a smaller batch_size "
        "or drop_last=False"
    )


def sequential(loader: Any) -> Any:
    if isinstance(loader, DataLoader) and not isinstance(loader.dataset, IterableDataset):
        return with_sampler(loader, SequentialSampler(loader.dataset))
    return loader
