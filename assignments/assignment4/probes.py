"""The probes of assignment4: they run in the sandbox, on inputs the grader chose, and return data.

No expected value lives here: the tests (tests/*.py) compare what comes back with their own
computation. `sub.cnns`, `sub.resnet` and `sub.training` are the student's modules, `sub.device`
the device. Where a test needs the student's model and its own to hold the same weights, the
probe fills the student's model with `grader.probing.fill` from a seed the grader drew, and the
grader fills its own copy the same way: no state crosses the boundary, and the values (random
scales, shifts and running statistics of every BatchNorm layer too) are the grader's, not the
student's or defaults.
"""

import torch
from torch import nn

from grader.probing import TensorBatches, fill, layer_outputs, plain, record_training, state_of, to_float

# --- helpers, also used by the tests on their own side ------------------------------------------


def fill_unit(unit, seed):
    """Fill a residual unit from `seed`: main_layers and skip_connection each from its own seed, so
    that their BatchNorm layers (tensors of the same shapes) get the same values whichever of the
    two the unit declares first."""
    fill(unit.main_layers, seed)
    fill(unit.skip_connection, seed + 1)


def fill_resnet(model, units, seed):
    """Fill a ResNet34 from `seed`, then each of its residual `units` (in order) from a seed of its own."""
    fill(model, seed)
    for index, unit in enumerate(units):
        fill_unit(unit, seed + 2 * (index + 1))


def summary(t):
    """A tensor in brief: for (N, C, H, W), each channel's mean and root mean square (2, C); else itself."""
    t = t.detach().double().cpu()
    if t.ndim == 4:
        return torch.stack([t.mean((0, 2, 3)), t.square().mean((0, 2, 3)).sqrt()])
    return t


class Spy(nn.Module):
    """An identity layer that remembers (training mode?, gradients on?, batch size) at every pass."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append((self.training, torch.is_grad_enabled(), x.shape[0]))
        return x


def tiny_net():
    """A small CNN with BatchNorm for 1x8x8 inputs, x (N, 1, 8, 8) -> logits (N, 10), whose running
    statistics change only in training mode. Its first layer records the modes."""
    return nn.Sequential(
        Spy(), nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(27, 10)
    )


class Accuracy:
    """What train and evaluate_tm need of torchmetrics.Accuracy(task="multiclass"): reset, update, compute.

    A small stand-in: importing torchmetrics costs seconds in every sandbox.
    """

    def __init__(self):
        self.correct, self.count = 0, 0

    def reset(self):
        self.correct, self.count = 0, 0

    def update(self, preds, target):  # preds: logits (N, C), target: (N,)
        self.correct += (preds.argmax(1) == target).sum().item()
        self.count += target.numel()

    def compute(self):
        return torch.tensor(self.correct / self.count if self.count else 0.0)


def _first_line(exc):
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _norms(modules):
    """BatchNorm layers described."""
    return [
        {
            "layer": type(m).__name__,
            "running": m.running_mean is not None,
            "momentum": m.momentum,
            "eps": m.eps,
            "affine": m.affine,
        }
        for m in modules
    ]


# --- cnns.py: fashion_cnn -----------------------------------------------------------------------


def fashion_outputs(sub, seed, x, noise):
    """fashion_cnn(): each layer's parameter count; then, with weights drawn from the grader's `seed`,
    in evaluation mode on the images x, each layer's output; and what every Dropout layer makes of
    `noise` in training mode."""
    model = sub.cnns.fashion_cnn()
    counts = [sum(p.numel() for p in layer.parameters()) for layer in model.children()]
    fill(model, seed)
    model.eval()
    dropouts = []
    for layer in model.children():
        if isinstance(layer, nn.Dropout):
            layer.train()
            with torch.no_grad():
                dropouts.append({"p": layer.p, "output": layer(noise)})
            layer.eval()
    return {"layers": layer_outputs(model, x), "counts": counts, "dropouts": dropouts}


# --- cnns.py: BatchNormCNN ----------------------------------------------------------------------


def bn_cnn_layers(sub, num_classes, seed, x):
    """BatchNormCNN(num_classes), its weights and statistics filled from `seed`, in evaluation mode on
    x: the outputs of the layers of cnn_layers and of fc_layers, the model's output, its parameters' shapes."""
    model = sub.cnns.BatchNormCNN(num_classes)
    shapes = [list(p.shape) for p in model.parameters()]
    fill(model, seed)
    model.eval()
    with torch.no_grad():
        features = model.cnn_layers(x)
        output = model(x)
    return {
        "cnn": layer_outputs(model.cnn_layers, x),
        "fc": layer_outputs(model.fc_layers, features.flatten(1)),
        "output": output,
        "shapes": shapes,
    }


def bn_pass(sub, seed, x, training):
    """One forward pass of a BatchNormCNN(10), filled from `seed`, on x, in training or evaluation mode.

    Returns each BatchNorm layer described (type, running statistics kept?, momentum, eps, running
    statistics after the pass), its input and output during the pass, the logits, and the weights
    and statistics after the pass.
    """
    model = sub.cnns.BatchNormCNN(10)
    fill(model, seed)
    seen = []
    # in the order of the forward pass, whichever of cnn_layers and fc_layers the model declares first
    parts = (model.cnn_layers, model.fc_layers)
    modules = [m for part in parts for m in part.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in modules:
        m.register_forward_hook(lambda m, args, out: seen.append({"input": args[0].detach(), "output": out.detach()}))
    model.train(training)
    with torch.no_grad():
        logits = model(x)
    norms = _norms(modules)
    for norm, m in zip(norms, modules, strict=True):
        running = m.running_mean is not None
        norm["mean_after"] = m.running_mean.detach().clone() if running else None
        norm["var_after"] = m.running_var.detach().clone() if running else None
    return {
        "norms": norms,
        "seen": seen,
        "logits": logits,
        "after": {"cnn": state_of(model.cnn_layers), "fc": state_of(model.fc_layers)},
    }


# --- resnet.py ----------------------------------------------------------------------------------


def separable(sub, seed, x, in_channels, out_channels, kernel_size, stride, padding):
    """SeparableConv2d(...): its parameter count, its two convolutions' parameter counts and weight
    and bias shapes; then, with weights drawn from the grader's `seed`, its output for x."""
    layer = sub.resnet.SeparableConv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding)
    parts = {}
    for name in ("depthwise_conv", "pointwise_conv"):
        conv = getattr(layer, name)
        parts[name] = {
            "parameters": sum(p.numel() for p in conv.parameters()),
            "weight": list(conv.weight.shape),
            "bias": None if conv.bias is None else list(conv.bias.shape),
        }
    found = {"parameters": sum(p.numel() for p in layer.parameters()), "parts": parts}
    fill(layer, seed)
    with torch.no_grad():
        found["y"] = layer(x)
    return found


def describe(module):
    """A module as data: its type, its parameter count, and its children's types and conv settings."""

    def child(c):
        conv = isinstance(c, nn.Conv2d)
        return {
            "type": type(c).__name__,
            "kernel": list(c.kernel_size) if conv else None,
            "stride": list(c.stride) if conv else None,
            "bias": conv and c.bias is not None,
            "channels": [c.in_channels, c.out_channels] if conv else None,
            "features": getattr(c, "num_features", None),
        }

    return {
        "type": type(module).__name__,
        "parameters": sum(p.numel() for p in module.parameters()),
        "children": [child(c) for c in module.children()],
    }


def residual_unit(sub, in_channels, out_channels, stride, seed, x):
    """ResidualUnit(in, out, stride), filled from `seed` (`fill_unit`), in evaluation mode on x: its
    parts described, main_layers' outputs, F(x), skip(x) and the output."""
    unit = sub.resnet.ResidualUnit(in_channels, out_channels, stride=stride)
    fill_unit(unit, seed)
    unit.eval()
    found = {
        "main": describe(unit.main_layers),
        "skip": describe(unit.skip_connection),
        "main_layers": layer_outputs(unit.main_layers, x),
    }
    with torch.no_grad():
        for name, run in (("fx", unit.main_layers), ("skip_x", unit.skip_connection), ("y", unit)):
            try:
                found[name] = run(x)
            except Exception as exc:
                found[name] = _first_line(exc)
    return found


def resnet_facts(sub, seed, x, direction):
    """ResNet34() as data: its residual units (in, out, stride), the shapes of each layer's
    parameters; then, filled from `seed` (`fill_resnet`), in evaluation mode on x: each layer of `resnet` in brief
    (type, output shape, channel means and RMS), the logits, and the norm of each parameter's
    gradient of sum(logits * direction)."""
    model = sub.resnet.ResNet34()
    modules = [module for module in model.modules() if isinstance(module, sub.resnet.ResidualUnit)]
    units = []
    for module in modules:
        first = module.main_layers[0]
        units.append([first.in_channels, first.out_channels, first.stride[0]])
    shapes = [[list(p.shape) for p in layer.parameters()] for layer in model.resnet.children()]
    fill_resnet(model, modules, seed)
    model.eval()
    layers, out = [], x
    with torch.no_grad():
        for layer in model.resnet.children():
            try:
                out = layer(out)
            except Exception as exc:
                layers.append({"layer": type(layer).__name__, "shape": None, "error": _first_line(exc)})
                out = None
                break
            layers.append({"layer": type(layer).__name__, "shape": list(out.shape), "summary": summary(out)})
    found = {"units": units, "shapes": shapes, "layers": layers, "logits": None, "gradients": []}
    if out is None:
        return found
    logits = model(x)
    found["logits"] = logits.detach()
    (logits * direction).sum().backward()
    found["gradients"] = [
        [name, None if p.grad is None else p.grad.double().norm().item()] for name, p in model.named_parameters()
    ]
    return found


def resnet_fit(sub, images, labels, steps):
    """Full-batch AdamW steps of ResNet34 on a few grey images, in training mode; its weights after.

    Returns each step's loss and the parameters left without a gradient (for the failure's reason),
    and the trained weights: the grader classifies the images with them itself.
    """
    device = torch.device(sub.device)
    model = sub.resnet.ResNet34().to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = to_float(images).expand(-1, 3, -1, -1).to(device)  # grey 1x28x28 -> 3x28x28
    labels = labels.to(device)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    names = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    return {"losses": losses, "no_gradient": names, "state": state_of(model)}


# --- training.py --------------------------------------------------------------------------------


def train_tiny(sub, initial, train, valid, epochs, lr):
    """train on the tiny net from the grader's weights with SGD: the weights after every optimizer
    step and at the end, what it called on the way (grader.probing.record_training), the history."""
    device = torch.device(sub.device)
    net = tiny_net()
    net.load_state_dict(initial)
    net.to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    record = record_training(
        net,
        train,
        device,
        lambda: sub.training.train(net, optimizer, nn.CrossEntropyLoss(), Accuracy(), train, valid, epochs, device),
    )
    record["history"] = plain(record.pop("result"))
    return record


def evaluate_tiny(sub, state, batches, stale):
    """evaluate_tm on the tiny net with the grader's weights and statistics, handed over in training
    mode, with a metric that already holds `stale` wrong predictions; the value, the weights after, the modes."""
    device = torch.device(sub.device)
    net = tiny_net()
    net.load_state_dict(state)
    net.train()
    net.to(device)
    metric = Accuracy()
    wrong = nn.functional.one_hot((stale + 1) % 10, 10).float()
    metric.update(wrong.to(device), stale.to(device))
    value = sub.training.evaluate_tm(net, batches, metric, device)
    return {"value": float(value), "after": state_of(net), "modes": net[0].seen}


def train_cnn(sub, train_x, train_y, valid_index, budget):
    """The profile's CNN trained with the student's train and AdamW on the grader's training images
    (those at `valid_index` are the validation set); its weights. No test image comes here."""
    device = torch.device(sub.device)
    x, y = to_float(train_x).to(device), train_y.to(device)
    rest = torch.ones(len(y), dtype=torch.bool)
    rest[valid_index] = False
    rest, valid = rest.nonzero().flatten().to(device), valid_index.to(device)
    train_loader = TensorBatches(x[rest], y[rest], budget["batch_size"], shuffle=True)
    valid_loader = TensorBatches(x[valid], y[valid], 1000)
    fashion = budget["model"] == "fashion_cnn"
    model = (sub.cnns.fashion_cnn() if fashion else sub.cnns.BatchNormCNN(10)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=budget["lr"])
    loss_fn = nn.CrossEntropyLoss()
    sub.training.train(model, optimizer, loss_fn, Accuracy(), train_loader, valid_loader, budget["epochs"], device)
    if fashion:
        return {"model": state_of(model)}
    return {"cnn": state_of(model.cnn_layers), "fc": state_of(model.fc_layers)}
