"""The probes of assignment3: they run in the sandbox, on inputs the grader chose, and return data.

No expected value lives here: the tests (tests/*.py) compare what comes back with their own
computation. `sub.cnn`, `sub.training` and `sub.experiments` are the student's modules,
`sub.device` the device.
"""

import numbers

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from grader.probing import TensorBatches, fill, record_training, state_of, to_float

# --- cnn.py -----------------------------------------------------------------------------------


def _copy(value):
    return value.detach().cpu().clone() if isinstance(value, torch.Tensor) else None


def _first_line(exc):
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _layer_calls(model, x):
    """Run `model` on x; every call of one of its layers: {"layer": name, "input", "output"} (None
    where it raised), the error that ended the pass if any, and what the model returned."""
    calls, handles, open_calls = [], [], {}
    for name, layer in model.named_children():

        def before(module, args, name=name):
            calls.append({"layer": name, "input": _copy(args[0]) if args else None, "output": None})
            open_calls.setdefault(id(module), []).append(len(calls) - 1)

        def after(module, args, out):
            stack = open_calls.get(id(module))
            if stack:
                calls[stack.pop()]["output"] = _copy(out)

        handles += [layer.register_forward_pre_hook(before), layer.register_forward_hook(after)]
    error, logits = None, None
    try:
        with torch.no_grad():
            out = model(x)
        logits = _copy(out) if isinstance(out, torch.Tensor) else f"<{type(out).__name__}>"
    except Exception as exc:
        error = _first_line(exc)
    finally:
        for handle in handles:
            handle.remove()
    return {"calls": calls, "error": error, "logits": logits}


def trace(sub, class_name, seed, x, training_x=None, initial=False):
    """A new `class_name`: each weight's shape, each layer's type (and dropout rate), and (when
    `initial`) its weights as built; then, with weights drawn from the grader's `seed`, every layer
    call of a forward pass on the images x in evaluation mode (and on training_x in training mode,
    where dropout is on)."""
    model = getattr(sub.cnn, class_name)()
    layers = {
        name: {"type": type(layer).__name__, "p": getattr(layer, "p", None)} for name, layer in model.named_children()
    }
    result = {"shapes": {name: list(t.shape) for name, t in model.state_dict().items()}, "layers": layers}
    if initial:
        result["initial"] = state_of(model)
    fill(model, seed)
    result["eval"] = _layer_calls(model.eval(), x)
    if training_x is not None:
        result["train"] = _layer_calls(model.train(), training_x)
    return result


def maps_of(sub, seed, image):
    """feature_maps of a new MnistCNN, its weights drawn from the grader's `seed`, for one image (1, 1, 28, 28)."""
    model = sub.cnn.MnistCNN()
    fill(model, seed)
    maps = sub.cnn.feature_maps(model, image)
    if isinstance(maps, (tuple, list)):
        return [_copy(m) if isinstance(m, torch.Tensor) else type(m).__name__ for m in maps]
    return type(maps).__name__


# --- training.py ------------------------------------------------------------------------------


def tiny_net(dropout=0.0):
    """A MnistCNN in miniature, with batch norm, whose running statistics change only in training
    mode: x (N, 1, 8, 8) -> conv 3x3 (6x6) -> batch norm -> ReLU -> pool (3x3) -> logits (N, 10).
    The convolution has no bias: batch norm would cancel it, and AdamW would turn its gradient,
    zero but for rounding, into steps of the full learning rate that no recomputation can match."""
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, bias=False), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(dropout), nn.Linear(27, 10),
    )  # fmt: skip


def _record_forwards(net):
    """Append (training mode, gradients on, batch size) to a list at every forward pass of `net`."""
    seen = []
    net.register_forward_pre_hook(
        lambda m, args: seen.append({"training": m.training, "grad": torch.is_grad_enabled(), "size": len(args[0])})
    )
    return seen


def _number(value):
    """A float for a number or a one-element tensor; the name of its type for anything else."""
    if isinstance(value, (int, float)) or (isinstance(value, torch.Tensor) and value.numel() == 1):
        return float(value)
    return type(value).__name__


def train_tiny(sub, state, batches, epochs, lr, optimizer):
    """train() on the tiny net from the given weights, handed over in evaluation mode (as evaluate()
    leaves a model): what it returned, and the weights after every optimizer step and at the end,
    with what it called on the way (grader.probing.record_training)."""
    net = tiny_net()
    net.load_state_dict(state)
    net.eval()
    device = torch.device("cpu")

    def train():
        if optimizer == "sgd":  # the default
            return sub.training.train(net, batches, epochs, lr, device)
        return sub.training.train(net, batches, epochs, lr, device, optimizer=optimizer)

    record = record_training(net, batches, device, train)
    losses = record.pop("result")
    record["losses"] = [_number(v) for v in losses] if isinstance(losses, (list, tuple)) else _number(losses)
    return record


def run_on_tiny(sub, function, state, batches):
    """evaluate() or confusion_matrix() on the tiny net (dropout 0.5) with the given weights,
    handed over in training mode: the result, the weights after, and the modes of its passes."""
    net = tiny_net(dropout=0.5)
    net.load_state_dict(state)
    net.train()
    forwards = _record_forwards(net)
    device = torch.device("cpu")
    if function == "evaluate":
        result = _number(sub.training.evaluate(net, batches, device))
    else:
        result = sub.training.confusion_matrix(net, batches, 10, device)
        result = torch.as_tensor(result).cpu() if hasattr(result, "__len__") else type(result).__name__
    return {"result": result, "state": state_of(net), "forwards": forwards}


# --- experiments.py ---------------------------------------------------------------------------


def plain(value):
    """Numbers, tensors, lists and dicts (number keys kept) as plain data; anything else as the name of its type."""
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return f"a {type(value).__name__}"


class _Models:
    """`make_model` for an experiment, which keeps every model it builds: how many forward passes
    it ran, the learning rates its optimizer stepped with, its initial and final weights."""

    def __init__(self, build, states=()):
        self.build, self.states, self.built = build, list(states), []
        self.hook = register_optimizer_step_post_hook(self.on_step)

    def __call__(self):
        model = self.build()
        index = len(self.built)
        if index < len(self.states):  # the weights the grader chose for its index-th model
            model.load_state_dict(self.states[index])
        record = {"model": model, "initial": state_of(model), "forwards": 0, "rates": set()}
        self.built.append(record)
        model.register_forward_pre_hook(lambda m, args: record.__setitem__("forwards", record["forwards"] + 1))
        return model

    def on_step(self, optimizer, args, kwargs):
        stepped = {id(p) for group in optimizer.param_groups for p in group["params"]}
        for record in self.built:
            if any(id(p) in stepped for p in record["model"].parameters()):
                record["rates"].update(group["lr"] for group in optimizer.param_groups)

    def report(self, results):
        return {
            "results": plain(results),
            "models": [
                {
                    "initial": record["initial"],
                    "final": state_of(record["model"]),
                    "forwards": record["forwards"],
                    "rates": sorted(record["rates"]),
                }
                for record in self.built
            ],
        }


def epochs_tiny(sub, states, batches):
    """epochs_experiment with tiny nets (the index-th model built starts from states[index]), on the CPU."""
    make_model = _Models(tiny_net, states)
    try:
        results = sub.experiments.epochs_experiment(make_model, batches, torch.device("cpu"))
    finally:
        make_model.hook.remove()
    return make_model.report(results)


def rates_tiny(sub, states, train, valid, epochs):
    """learning_rate_experiment with tiny nets (the index-th model built starts from states[index]), on the CPU."""
    make_model = _Models(tiny_net, states)
    try:
        results = sub.experiments.learning_rate_experiment(make_model, train, valid, torch.device("cpu"), epochs=epochs)
    finally:
        make_model.hook.remove()
    return make_model.report(results)


def _batches(x, y, size, device, shuffle=False):
    return TensorBatches(to_float(x).to(device), y.to(device), size, shuffle=shuffle)


def epochs_mnist(sub, x, y, budget):
    """epochs_experiment(MnistCNN, ...) on the grader's training images, on the profile's device."""
    device = torch.device(sub.device)
    make_model = _Models(sub.cnn.MnistCNN)
    loader = _batches(x, y, budget["batch_size"], device, shuffle=True)
    try:
        results = sub.experiments.epochs_experiment(make_model, loader, device)
    finally:
        make_model.hook.remove()
    return make_model.report(results)


def rates_mnist(sub, x, y, valid_x, valid_y, budget):
    """learning_rate_experiment(MnistCNN, ...) on the grader's training and validation images.

    No accuracy is computed here: the grader scores the returned weights itself.
    """
    device = torch.device(sub.device)
    make_model = _Models(sub.cnn.MnistCNN)
    try:
        results = sub.experiments.learning_rate_experiment(
            make_model,
            _batches(x, y, budget["batch_size"], device, True),
            _batches(valid_x, valid_y, 1000, device),
            device,
            epochs=budget["lr_epochs"],
        )
    finally:
        make_model.hook.remove()
    return make_model.report(results)


# --- trained accuracy -------------------------------------------------------------------------


def train_weights(sub, class_name, train_x, train_y, budget):
    """A new `class_name` trained by the student's train() on the grader's training images; its weights.

    No test image comes here: the grader evaluates the weights itself.
    """
    device = torch.device(sub.device)
    model = getattr(sub.cnn, class_name)()
    loader = _batches(train_x, train_y, budget["batch_size"], device, shuffle=True)
    sub.training.train(model, loader, budget.get("epochs", 1), budget["lr"], device, optimizer=budget["optimizer"])
    return state_of(model)
