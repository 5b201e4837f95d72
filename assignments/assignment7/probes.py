"""The probes of assignment7: they run in the sandbox, on inputs the grader chose, and return data.

No expected value lives here: the tests (tests/*.py) compare what comes back with their own
computation. `sub.model`, `sub.data` and `sub.training` are the student's modules, `sub.device`
the device.
"""

import numpy as np
import torch
from PIL import Image
from torch import nn

from grader.probing import TensorBatches, fill, plain, record_training, state_of, to_float

# --- model.py -----------------------------------------------------------------------------------


def _first_line(exc):
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _copy(value):
    return value.detach().cpu().clone() if isinstance(value, torch.Tensor) else None


def trace(sub, num_classes, image_size, seed, x):
    """A new SimpleCNN(num_classes, image_size): its layers (type and settings) and weight shapes;
    then, with weights drawn from the grader's `seed`, the input and output of each of its layers
    called (name, input, output), in the order the forward pass called them, and the logits for x."""
    model = sub.model.SimpleCNN(num_classes=num_classes, image_size=image_size)
    settings = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "in_features", "out_features")
    layers = {
        name: {"type": type(layer).__name__, **{k: plain(getattr(layer, k)) for k in settings if hasattr(layer, k)}}
        for name, layer in model.named_children()
    }
    result = {"layers": layers, "shapes": {name: list(t.shape) for name, t in model.state_dict().items()}}
    fill(model, seed)
    calls, handles = [], []
    for name, layer in model.named_children():
        handles.append(
            layer.register_forward_hook(
                lambda m, args, out, name=name: calls.append((name, _copy(args[0]) if args else None, _copy(out)))
            )
        )
    try:
        with torch.no_grad():
            logits = model.eval()(x)
        result["logits"] = _copy(logits) if isinstance(logits, torch.Tensor) else f"<{type(logits).__name__}>"
        result["error"] = None
    except Exception as exc:
        result["logits"], result["error"] = None, _first_line(exc)
    finally:
        for handle in handles:
            handle.remove()
    result["calls"] = calls
    return result


# --- data.py ------------------------------------------------------------------------------------


def transformed(sub, images):
    """make_transform() applied to each image (H, W, 3) uint8, handed over as a PIL image."""
    transform = sub.data.make_transform()
    out = []
    for pixels in images:
        value = transform(Image.fromarray(np.ascontiguousarray(pixels.numpy(), dtype=np.uint8)))
        out.append(_copy(value) if isinstance(value, torch.Tensor) else f"<{type(value).__name__}>")
    return out


def split(sub, count, val_fraction, seed):
    """split_indices(count, val_fraction, seed), as data."""
    result = sub.data.split_indices(count, val_fraction, seed)
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        return {"error": f"a {type(result).__name__}" + (f" of {len(result)}" if hasattr(result, "__len__") else "")}
    parts = []
    for part in result:
        try:
            parts.append(torch.as_tensor(part).long().flatten())
        except (TypeError, ValueError, RuntimeError):
            return {"error": f"a {type(part).__name__}"}
    return {"parts": parts}


# --- training.py --------------------------------------------------------------------------------


def tiny_net(batch_norm=True):
    """A SimpleCNN in miniature for 3x8x8 images, x (N, 3, 8, 8) -> logits (N, 3): conv 3x3 (6x6)
    -> [batch norm, whose running statistics change only in training mode] -> ReLU -> pool (3x3)
    -> fc. With batch norm the convolution has no bias (batch norm would cancel it)."""
    norm = [nn.BatchNorm2d(4)] if batch_norm else []
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, bias=not batch_norm), *norm, nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(36, 3)
    )


def _number(value):
    if isinstance(value, (int, float)) or (isinstance(value, torch.Tensor) and value.numel() == 1):
        return float(value)
    return f"a {type(value).__name__}"


def one_epoch(sub, state, batches, lr):
    """train_one_epoch on the tiny net (handed over in evaluation mode) with SGD (momentum 0.9, `lr`)
    from the given weights: what it returned, and the weights after every step (record_training)."""
    net = tiny_net()
    net.load_state_dict(state)
    net.eval()
    device = torch.device("cpu")
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    record = record_training(
        net, batches, device, lambda: sub.training.train_one_epoch(net, batches, optimizer, device)
    )
    record["result"] = _number(record["result"])
    return record


def evaluated(sub, state, batches):
    """evaluate() on the tiny net (handed over in training mode) with the given weights: what it
    returned, the weights after, and the mode and gradients of each of its forward passes."""
    net = tiny_net()
    net.load_state_dict(state)
    net.train()
    seen = []
    net.register_forward_pre_hook(lambda m, args: seen.append((m.training, torch.is_grad_enabled())))
    result = sub.training.evaluate(net, batches, torch.device("cpu"))
    returned = [_number(v) for v in result] if isinstance(result, (tuple, list)) else _number(result)
    return {"result": returned, "state": state_of(net), "forwards": seen}


class _Validation:
    """The validation batches, which keep the model's weights each time a pass over them begins."""

    def __init__(self, net, batches):
        self.net, self.batches, self.seen = net, batches, []

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        self.seen.append(state_of(self.net))
        return iter(self.batches)


def fitted(sub, state, train, valid, epochs, lr):
    """fit() on the tiny net without batch norm, from the given weights: the history it returned,
    the weights at the start of every pass over the validation batches, after every optimizer
    step (record_training) and at the end."""
    net = tiny_net(batch_norm=False)
    net.load_state_dict(state)
    device = torch.device("cpu")
    validation = _Validation(net, valid)
    record = record_training(net, train, device, lambda: sub.training.fit(net, train, validation, epochs, lr, device))
    record["result"] = plain(record["result"])
    record["validations"] = validation.seen
    return record


def matrix(sub, predicted, labels, num_classes):
    """confusion_matrix(predicted, labels, num_classes)."""
    result = sub.training.confusion_matrix(predicted.clone(), labels.clone(), num_classes)
    return _copy(torch.as_tensor(result)) if hasattr(result, "__len__") else f"a {type(result).__name__}"


def class_accuracy(sub, counts):
    """per_class_accuracy(counts)."""
    result = sub.training.per_class_accuracy(counts.clone())
    return _copy(torch.as_tensor(result)) if hasattr(result, "__len__") else f"a {type(result).__name__}"


# --- trained accuracy ---------------------------------------------------------------------------


def train_weights(sub, train_x, train_y, num_classes, budget, seed):
    """A new SimpleCNN split, trained and selected by the student's split_indices and fit on the
    grader's training images (normalized as the statement says): its weights and the history.

    No test image comes here: the grader evaluates the weights itself.
    """
    device = torch.device(sub.device)
    x = (to_float(train_x) - 0.5) / 0.5  # what make_transform gives: [0, 1], then mean 0.5, std 0.5
    train_idx, val_idx = sub.data.split_indices(len(train_y), budget["val_fraction"], seed)
    train_idx, val_idx = torch.as_tensor(train_idx).long(), torch.as_tensor(val_idx).long()
    model = sub.model.SimpleCNN(num_classes=num_classes, image_size=x.shape[-1])
    batches = TensorBatches(x[train_idx].to(device), train_y[train_idx].to(device), budget["batch_size"], shuffle=True)
    valid = TensorBatches(x[val_idx].to(device), train_y[val_idx].to(device), 500)
    history = sub.training.fit(model, batches, valid, budget["epochs"], budget["lr"], device)
    return {"state": state_of(model), "history": plain(history)}
