"""The probes of assignment1: they run in the sandbox, on inputs the grader chose, and return data.

No expected value lives here: the tests (tests/*.py) compare what comes back with their own
computation (nn.Conv2d, F.conv2d, F.max_pool2d, torchvision's CenterCrop, their own copy of the
slides' CNN filled with the weights the probe gives the student's...). `sub.conv`, `sub.layers`,
`sub.pooling`, `sub.filters` and `sub.counting` are the student's modules.
"""

import functools

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from grader.probing import fill, plain


def each(sub, module, function, cases):
    """sub.<module>.<function>(*args) for each args in cases, in one sandbox run, as data."""
    run = getattr(getattr(sub, module), function)
    return [plain(run(*args)) for args in cases]


def constant(sub, module, name):
    """The value of sub.<module>.<name>."""
    return plain(getattr(getattr(sub, module), name))


def relu_of(sub, x):
    """relu(x), and whether x came back unchanged."""
    before = x.clone()
    out = sub.layers.relu(x)
    return {"out": plain(out), "unchanged": torch.equal(x, before)}


def depth_pool(sub, x, kernel_size, stride, padding):
    """DepthMaxPool2d(kernel_size, stride, padding) on x."""
    return plain(sub.pooling.DepthMaxPool2d(kernel_size, stride, padding)(x))


def permuted_crop(images, top, left, height, width):
    """As in the notebook: images (N, H, W, C) permuted to (N, C, H, W), then cropped: not contiguous.
    (Made here: what crosses into the sandbox arrives contiguous.)"""
    return images.permute(0, 3, 1, 2)[:, :, top : top + height, left : left + width]


def depth_pool_permuted(sub, images, top, left, height, width, kernel_size):
    """DepthMaxPool2d(kernel_size) on the permuted crop of images (N, H, W, C), and whether that
    crop was non-contiguous when it was handed over."""
    x = permuted_crop(images, top, left, height, width)
    contiguous = x.is_contiguous()
    return {"out": plain(sub.pooling.DepthMaxPool2d(kernel_size)(x)), "contiguous": contiguous}


class CallLog(TorchFunctionMode):
    """Records (name, kernel_size) for every torch function called while active; kernel_size only for
    pooling. It sees F.conv2d, torch.conv2d, nn.Conv2d's forward, tensor methods... by whatever name."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", repr(func))
        kernel = kwargs.get("kernel_size", args[1] if len(args) > 1 else None) if "pool" in name else None
        self.calls.append((name, list(kernel) if isinstance(kernel, (tuple, list)) else kernel))
        return func(*args, **kwargs)


def calls_of(sub, module, function, *args):
    """What sub.<module>.<function>(*args) returns, and the torch calls it makes, in order."""
    with CallLog() as log:
        out = getattr(getattr(sub, module), function)(*args)
    return {"out": plain(out), "calls": [(str(name), plain(kernel)) for name, kernel in log.calls]}


def mixed_model(config, dtype="float32"):
    """A frozen conv layer, BatchNorm (its running statistics are buffers, not parameters) and two
    Linear layers, the last without bias; its sizes come from `config` (drawn by the grader), its
    dtype is named ("float32", "float64", "float16")."""
    model = nn.Sequential(
        nn.Conv2d(config["in_channels"], config["channels"], config["kernel_size"]),
        nn.BatchNorm2d(config["channels"]),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(config["features"], config["hidden"]),
        nn.Linear(config["hidden"], config["classes"], bias=False),
    ).to(getattr(torch, dtype))
    model[0].requires_grad_(False)
    return model


def measure_mixed(sub, function, config, dtypes):
    """count_parameters or model_size_bytes of the mixed model, in each dtype (by name)."""
    return [plain(getattr(sub.counting, function)(mixed_model(config, dtype))) for dtype in dtypes]


def small_cnn(sub, x, seed):
    """The student's SmallCNN: each parameter's name and shape, then, with weights drawn from the
    grader's `seed`, its logits for the images x (N, 1, 28, 28)."""
    model = sub.counting.SmallCNN()
    shapes = [(name, list(p.shape)) for name, p in model.named_parameters()]
    fill(model, seed)
    with torch.no_grad():
        logits = model(x)
    return {"shapes": shapes, "logits": plain(logits)}


def big_mlp(sub):
    """The student's BigMLP, built here on the meta device: each parameter's name and shape, and
    whether they all are on the meta device."""
    with torch.device("meta"):
        model = sub.counting.BigMLP()
    return {
        "shapes": [(name, list(p.shape)) for name, p in model.named_parameters()],
        "meta": all(p.is_meta for p in model.parameters()),
    }


def huge_on_meta(sub, in_features, out_features):
    """on_meta of a Linear(in_features, out_features) maker: where its parameters are, and their shapes."""
    model = sub.counting.on_meta(functools.partial(nn.Linear, in_features, out_features))
    return {
        "devices": sorted({p.device.type for p in model.parameters()}),
        "shapes": [list(p.shape) for p in model.parameters()],
    }


def slides_models(sub, name):
    """count_parameters and model_size_bytes of the slides' model `name` (the MLP on the meta device)."""
    with torch.device("meta" if name == "BigMLP" else "cpu"):
        model = getattr(sub.counting, name)()
    return {"count": plain(sub.counting.count_parameters(model)), "bytes": plain(sub.counting.model_size_bytes(model))}
