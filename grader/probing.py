"""What probes use, in the sandbox, next to student code: calls, spies and snapshots, never a verdict.

A probe (a function of an assignment's `probes.py`) runs the student's code on inputs the grader
chose and returns what it saw, as data. Nothing here knows an expected value: the tests compare
what comes back with their own computation, outside the sandbox. This module imports nothing of
the grader but the codec's neighbours: the sandbox sees it, the student's code may read it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, C, H, W) -> float32 in [0, 1]."""
    return x.float().div_(255)


class TensorBatches:
    """Mini-batches of (x, y) sliced from tensors already on their device.

    x: (N, ...) float, y: (N,). Reshuffled every pass when `shuffle`, from its own generator
    (seeded from torch's global one unless `seed` is given), so a seeded run is repeatable.
    `len()` is the number of batches.
    """

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool = False, seed: int | None = None
    ):
        self.x, self.y, self.batch_size, self.shuffle = x, y, batch_size, shuffle
        if seed is None:
            seed = int(torch.randint(2**62, (1,)))
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.y) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.y)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order.to(self.x.device)
        for start in range(0, n, self.batch_size):
            index = order[start : start + self.batch_size]
            yield self.x[index], self.y[index]


def layer_outputs(layers: nn.Module, x: torch.Tensor) -> list[dict[str, Any]]:
    """Pass x (N, C, H, W) through each child of a sequential model, in order.

    One entry per layer: {"layer": class name, "output": its output}; a layer that raises ends the
    list with {"layer": ..., "output": None, "error": message, "input": its input's shape}.
    """
    out: list[dict[str, Any]] = []
    with torch.no_grad():
        for layer in layers.children():
            try:
                y = layer(x)
            except Exception as exc:
                message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                out.append({"layer": type(layer).__name__, "output": None, "error": message, "input": list(x.shape)})
                break
            out.append({"layer": type(layer).__name__, "output": y if isinstance(y, torch.Tensor) else None})
            x = y
    return out


def fill(module: nn.Module, seed: int) -> None:
    """Overwrite every floating-point weight and buffer of `module` with values drawn from `seed`:
    weights of variance 1 / fan-in, scales and running variances in [0.5, 1.5), shifts and running
    means in [-0.5, 0.5). Each tensor's values depend only on the seed, its shape and how many
    tensors of that shape came before it: two models with the same layers get the same values, in
    whatever order they declare them.

    The grader fills its own copy of an architecture and the probe fills the student's with the same
    seed, drawn per grading: the outputs the student's model gives can then be checked against the
    grader's, and cannot be made up (weights the student chose, all zeros, say, could make them
    independent of the inputs).
    """
    seen: dict[tuple[int, ...], int] = {}
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if not tensor.is_floating_point():
                continue
            shape = tuple(tensor.shape)
            seen[shape] = seen.get(shape, -1) + 1
            generator = torch.Generator().manual_seed(hash((seed, shape, seen[shape])) % 2**63)
            kind = name.rsplit(".", 1)[-1]
            if tensor.ndim >= 2:
                values = torch.randn(shape, generator=generator) / math.sqrt(max(tensor[0].numel(), 1))
            elif kind in ("weight", "running_var"):
                values = torch.rand(shape, generator=generator) + 0.5
            else:  # biases, running means
                values = torch.rand(shape, generator=generator) - 0.5
            tensor.copy_(values.to(tensor.dtype))


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def state_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a model's parameters and buffers."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


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


STEPS_KEPT = 64  # the weights after at most this many optimizer steps come back (a loop may step without end)


def record_training(net: nn.Module, batches: list, device: torch.device, train: Callable[[], Any]) -> dict[str, Any]:
    """Run `train()`, a student's training loop of `net` over `batches` (a list of (x, y)), and record
    what the grader needs to follow it: the weights it started from (at the first forward pass, after
    its own init), the weights after every optimizer step, the final ones; and, to make a failure's
    reason precise, what it called on the way. Returns a dict:

    "result" (what train() returned), "initial", "steps" ([{"optimizer": class name, "lr",
    "momentum", "state"}] for the first STEPS_KEPT steps), "step_count", "final", "forwards"
    ([{"training", "grad", "size"}] per forward pass of `net`), "net_moved", "x_moved", "y_moved"
    (batches whose images, labels went to `device`), "zero_grads".
    """
    initial: dict[str, torch.Tensor] = {}
    forwards: list[dict[str, Any]] = []
    steps: list[dict[str, Any]] = []
    step_count = [0]

    def before_forward(module: nn.Module, args: tuple) -> None:
        if not initial:
            initial.update(state_of(module))
        size = len(args[0]) if args and isinstance(args[0], torch.Tensor) and args[0].ndim else 0
        forwards.append({"training": module.training, "grad": torch.is_grad_enabled(), "size": size})

    def after_step(optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        step_count[0] += 1
        if len(steps) < STEPS_KEPT:
            group = optimizer.param_groups[0]
            steps.append(
                {
                    "optimizer": type(optimizer).__name__,
                    "lr": group.get("lr"),
                    "momentum": group.get("momentum"),
                    "state": state_of(net),
                }
            )

    x_ids, y_ids = {id(x) for x, _ in batches}, {id(y) for _, y in batches}
    handles = [net.register_forward_pre_hook(before_forward), register_optimizer_step_post_hook(after_step)]
    with recording(**TRAINING_CALLS) as calls:
        try:
            result = train()
        finally:
            for handle in handles:
                handle.remove()

    def moved(ids: set[int]) -> int:
        return sum(label == "tensor_to" and id(obj) in ids and moves_to(a, k, device) for label, obj, a, k in calls)

    return {
        "result": result,
        "initial": initial,
        "steps": steps,
        "step_count": step_count[0],
        "final": state_of(net),
        "forwards": forwards,
        "net_moved": any(label == "module_to" and obj is net and moves_to(a, k, device) for label, obj, a, k in calls),
        "x_moved": moved(x_ids),
        "y_moved": moved(y_ids),
        "zero_grads": sum(label.endswith("zero_grad") for label, *_ in calls),
    }


class ModeSpy(nn.Module):
    """An identity layer that remembers (training mode?, batch size) at every forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[bool, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append((self.training, x.shape[0]))
        return x


def plain(value: Any) -> Any:
    """A student's return value as data: numbers, tensors, and lists, tuples and dicts of them;
    anything else becomes its type's name (a test then says what came back)."""
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value
    if type(value).__module__ == "numpy":
        return value.item() if getattr(value, "ndim", 1) == 0 else torch.from_numpy(value.copy())
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value) if isinstance(value, list) else tuple(plain(v) for v in value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return f"<{type(value).__name__}>"


# --- progress: what a long probe is doing, for the screen only ---------------------------------

_PROGRESS = {"fd": None, "last": 0.0, "steps": 0}
_PROGRESS_EVERY_S = 0.5


def enable_progress(fd: int) -> None:
    """Send progress frames on `fd` (the sandbox's result pipe) from now on."""
    _PROGRESS["fd"] = fd


def count_step(*_: Any) -> None:
    """An optimizer step (an optimizer step hook of the sandbox's)."""
    _PROGRESS["steps"] += 1
    progress()


def progress(force: bool = False, **fields: Any) -> None:
    """Tell the screen how far the probe is (steps so far, plus `fields`: epoch, of, values...).

    At most every half second; nothing outside a sandbox. What is sent here is shown, never scored.
    """
    import json
    import os
    import struct
    import time

    fd, now = _PROGRESS["fd"], time.monotonic()
    if fd is None or (not force and now - _PROGRESS["last"] < _PROGRESS_EVERY_S):
        return
    _PROGRESS["last"] = now
    payload = json.dumps({"steps": _PROGRESS["steps"], **fields}, default=float).encode()[:4096]
    try:
        os.write(fd, b"P" + struct.pack("<Q", len(payload)) + payload)
    except OSError:
        _PROGRESS["fd"] = None
