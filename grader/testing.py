"""Helpers for grading tests and their probes (a probe runs in the sandbox, next to student code)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

SEED_ENV = "GRADER_SEED"  # shifts every probe's seed: calibration grades the reference over many


def layer_shapes(layers: nn.Module, x: torch.Tensor) -> list[dict[str, Any]]:
    """Pass x (N, C, H, W) through each child of a sequential model, in order.

    One entry per layer: {"layer": class name, "shape": output shape}; a layer that raises ends
    the list with {"layer": ..., "shape": None, "error": message, "input": its input's shape}.
    """
    out = []
    with torch.no_grad():
        for layer in layers.children():
            try:
                y = layer(x)
            except Exception as exc:
                out.append(
                    {
                        "layer": type(layer).__name__,
                        "shape": None,
                        "error": str(exc).splitlines()[0],
                        "input": list(x.shape),
                    }
                )
                break
            out.append({"layer": type(layer).__name__, "shape": list(y.shape)})
            x = y
    return out


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def state_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a model's parameters and buffers."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The largest absolute difference between two state dicts with the same keys and shapes."""
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        return float("inf")
    # a NaN anywhere is as far as can be (and max() would drop it)
    differences = ((a[k].double() - b[k].double()).abs().nan_to_num(nan=float("inf")) for k in a)
    return max((d.max().item() for d in differences if d.numel()), default=0.0)


def moves_to(args: tuple, kwargs: dict, device: torch.device) -> bool:
    """Whether the arguments of a `.to(...)` call name `device`."""
    target = kwargs.get("device", args[0] if args else None)
    if isinstance(target, (str, torch.device)):
        try:
            return torch.device(target).type == device.type
        except RuntimeError:
            return False
    return False


# What a training loop calls that its tests check: `with recording(**TRAINING_CALLS) as calls:`.
TRAINING_CALLS = {
    "module_to": (nn.Module, "to"),
    "tensor_to": (torch.Tensor, "to"),
    "optimizer_zero_grad": (torch.optim.Optimizer, "zero_grad"),
    "module_zero_grad": (nn.Module, "zero_grad"),
}


@contextmanager
def recording(**targets: tuple[Any, str]) -> Iterator[list[tuple[str, Any, tuple, dict]]]:
    """Record calls of chosen methods while the block runs, then restore them.

    `with recording(zero_grad=(torch.optim.Optimizer, "zero_grad")) as calls:` appends
    ("zero_grad", self, args, kwargs) to `calls` each time any optimizer's zero_grad runs.
    """
    calls: list[tuple[str, Any, tuple, dict]] = []
    originals = []
    for label, (owner, name) in targets.items():
        original = getattr(owner, name)

        def wrapper(self: Any, *args: Any, _label: str = label, _original: Any = original, **kwargs: Any) -> Any:
            calls.append((_label, self, args, kwargs))
            return _original(self, *args, **kwargs)

        originals.append((owner, name, original))
        setattr(owner, name, wrapper)
    try:
        yield calls
    finally:
        for owner, name, original in reversed(originals):
            setattr(owner, name, original)


def accuracy_of(predictions: Any, labels: torch.Tensor) -> float:
    """The accuracy of predicted classes (as returned by a probe) against the true labels."""
    assert isinstance(predictions, torch.Tensor), f"the predictions are a {type(predictions).__name__}, not a tensor"
    assert predictions.shape == labels.shape, (
        f"got predictions of shape {list(predictions.shape)} for {len(labels)} test images"
    )
    return (predictions.long() == labels).float().mean().item()


def grading_seed() -> int:
    """The seed this grading run adds to every probe's own (0 unless calibrating)."""
    return int(os.environ.get(SEED_ENV, "0"))
