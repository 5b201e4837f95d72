"""Counting parameters and memory (counting.py): the slides' small CNN against their large MLP.

Expected counts come from PyTorch's own layers, built here on the meta device (shapes, no memory),
and from the layer formulas written out below; the slides' totals are checked against them.
"""

import pytest
import torch
from torch import nn

from grader.sandbox import SubmissionError

# Per layer, weights + biases (the slides' annotations).
SMALL_CNN_LAYERS = {
    "conv1": 4 * 1 * 3 * 3 + 4,
    "conv2": 8 * 4 * 3 * 3 + 8,
    "conv3": 16 * 8 * 3 * 3 + 16,
    "fc_layer.0": 100 * 16 * 28 * 28 + 100,
    "fc_layer.2": 10 * 100 + 10,
}
BIG_MLP_LAYERS = {
    "linear1": 10_000 * 3 * 224 * 224 + 10_000,
    "linear2": 1_000 * 10_000 + 1_000,
    "linear3": 100 * 1_000 + 100,  # the slides' code says nn.Linear(1000, 10): their count needs 100
    "output": 10 * 100 + 10,
}
SMALL_CNN_TOTAL, BIG_MLP_TOTAL = 1_257_014, 1_515_392_110  # the slides' totals
SLIDES_GB = {"SmallCNN": 0.004683, "BigMLP": 5.645276}  # what the slides print, in their "GB"
HUGE = 50_000  # a HUGE x HUGE Linear layer: 2.5 billion float32 parameters, 10 GB


def each(sub, function, cases):
    """Probe: sub.counting.<function>(*args) for each args in cases, in one sandbox run."""
    return [getattr(sub.counting, function)(*args) for args in cases]


def constant(sub, name):
    """Probe: the value of sub.counting.<name>."""
    return getattr(sub.counting, name)


def mixed_model(dtype=torch.float32):
    """A frozen conv layer, BatchNorm (its running statistics are buffers, not parameters) and two Linear layers."""
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 6 * 6, 10),
        nn.Linear(10, 4, bias=False),
    ).to(dtype)
    model[0].requires_grad_(False)
    return model


def measure_mixed(sub, function, dtypes):
    """Probe: count_parameters or model_size_bytes of the mixed model, in each dtype."""
    return [getattr(sub.counting, function)(mixed_model(dtype)) for dtype in dtypes]


def layer_counts(model):
    """The parameters of each leaf module that has some, by name."""
    return {
        name: sum(p.numel() for p in module.parameters())
        for name, module in model.named_modules()
        if not list(module.children()) and list(module.parameters())
    }


def small_cnn(sub):
    """Probe: the SmallCNN's parameters per layer and its output shape for 2 images."""
    model = sub.counting.SmallCNN()
    with torch.no_grad():
        shape = list(model(torch.rand(2, 1, 28, 28)).shape)
    return {"layers": layer_counts(model), "shape": shape}


def big_mlp(sub):
    """Probe: the BigMLP, built here on the meta device: its parameters per layer, and where they are."""
    with torch.device("meta"):
        model = sub.counting.BigMLP()
    return {"layers": layer_counts(model), "meta": all(p.is_meta for p in model.parameters())}


def check_layers(model_name, got, expected):
    """Compare the parameters of each named layer, then the total."""
    for name, count in expected.items():
        assert name in got, f"{model_name} has no layer {name} (its layers with parameters: {', '.join(got)})"
        assert got[name] == count, f"{name} has {got[name]:,} parameters, expected {count:,}"
    total, expected_total = sum(got.values()), sum(expected.values())
    assert total == expected_total, f"{model_name} has {total:,} parameters, expected {expected_total:,}"


def huge_linear():
    return nn.Linear(HUGE, HUGE)


def huge_on_meta(sub):
    """Probe: on_meta(huge_linear): where its parameters are, and their shapes."""
    model = sub.counting.on_meta(huge_linear)
    return {"devices": sorted({p.device.type for p in model.parameters()}), "shape": list(model.weight.shape)}


def slides_models(sub, name):
    """Probe: count_parameters and model_size_bytes of the slides' model `name` (the MLP on the meta device)."""
    with torch.device("meta" if name == "BigMLP" else "cpu"):
        model = getattr(sub.counting, name)()
    return {"count": sub.counting.count_parameters(model), "bytes": sub.counting.model_size_bytes(model)}


@pytest.mark.points(1)
@pytest.mark.task("conv2d_parameters")
def test_conv2d_parameters(submission):
    """conv2d_parameters: as many as nn.Conv2d has"""
    cases = [(1, 4, 3), (8, 16, 3), (3, 32, 7), (3, 6, (3, 5)), (16, 8, 3, False)]
    for case, got in zip(cases, submission.run(each, "conv2d_parameters", cases), strict=True):
        in_channels, out_channels, kernel_size, *bias = case
        layer = nn.Conv2d(in_channels, out_channels, kernel_size, bias=bias[0] if bias else True, device="meta")
        expected = sum(p.numel() for p in layer.parameters())
        assert got == expected, f"conv2d_parameters{case} is {got}, expected {expected:,}"


@pytest.mark.points(1)
@pytest.mark.task("linear_parameters")
def test_linear_parameters(submission):
    """linear_parameters: as many as nn.Linear has"""
    cases = [(16 * 28 * 28, 100), (100, 10), (3 * 224 * 224, 10_000), (1_000, 100, False)]
    for case, got in zip(cases, submission.run(each, "linear_parameters", cases), strict=True):
        expected = sum(p.numel() for p in nn.Linear(*case, device="meta").parameters())
        assert got == expected, f"linear_parameters{case} is {got}, expected {expected:,}"


@pytest.mark.points(1)
@pytest.mark.task("count_parameters")
def test_count_parameters(submission):
    """count_parameters: every parameter, frozen ones included, buffers excluded"""
    (got,) = submission.run(measure_mixed, "count_parameters", [torch.float32])
    model = mixed_model()
    expected = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() for b in model.buffers())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert got != expected + buffers, (
        f"count_parameters gives {got:,}: it counts BatchNorm's {buffers} buffer values too"
    )
    assert got != trainable, f"count_parameters gives {got:,}: it leaves out the frozen conv layer's parameters"
    assert got == expected, f"count_parameters gives {got}, expected {expected:,}"


@pytest.mark.points(1)
@pytest.mark.task("model_size_bytes")
def test_model_size_bytes(submission):
    """model_size_bytes: elements times element size, in float32, float64 and float16"""
    dtypes = [torch.float32, torch.float64, torch.float16]
    for dtype, got in zip(dtypes, submission.run(measure_mixed, "model_size_bytes", dtypes), strict=True):
        parameters = list(mixed_model(dtype).parameters())
        count = sum(p.numel() for p in parameters)
        expected = sum(p.numel() * p.element_size() for p in parameters)
        assert got != count, f"model_size_bytes gives {got:,}, the number of parameters: multiply by bytes per element"
        assert got != 4 * count or dtype == torch.float32, (
            f"model_size_bytes gives {got:,} for {dtype}: it assumes 4 bytes per element, ask element_size()"
        )
        assert got == expected, f"model_size_bytes gives {got} for {count:,} {dtype} parameters, expected {expected:,}"


@pytest.mark.points(2)
@pytest.mark.task("SmallCNN")
def test_small_cnn(submission):
    """SmallCNN: 1,257,014 parameters, layer by layer, and 10 logits"""
    assert sum(SMALL_CNN_LAYERS.values()) == SMALL_CNN_TOTAL  # the slides' total holds
    got = submission.run(small_cnn)
    check_layers("SmallCNN", got["layers"], SMALL_CNN_LAYERS)
    assert got["shape"] == [2, 10], f"SmallCNN maps 2 images to {got['shape']}, expected [2, 10]"


@pytest.mark.points(2)
@pytest.mark.task("BigMLP")
def test_big_mlp(submission):
    """BigMLP: 1,515,392,110 parameters, layer by layer, built on the meta device"""
    assert sum(BIG_MLP_LAYERS.values()) == BIG_MLP_TOTAL  # with Linear(1000, 100): the slides' total holds
    got = submission.run(big_mlp)
    check_layers("BigMLP", got["layers"], BIG_MLP_LAYERS)
    assert got["meta"], "some BigMLP parameters are not on the meta device: do not give the layers a device"


@pytest.mark.points(1)
@pytest.mark.task("on_meta")
def test_on_meta(submission):
    """on_meta: builds a 10 GB layer without allocating it"""
    try:
        got = submission.run(huge_on_meta)
    except SubmissionError as error:
        assert error.limit != "memory", (
            f"on_meta allocated the {HUGE:,} x {HUGE:,} layer's 10 GB: build the model on the meta device"
        )
        raise
    assert got["devices"] == ["meta"], f"on_meta built parameters on {got['devices']}, expected ['meta']"
    assert got["shape"] == [HUGE, HUGE], f"on_meta built a weight of shape {got['shape']}, expected [{HUGE}, {HUGE}]"


@pytest.mark.points(1)
@pytest.mark.parametrize(
    "name",
    [pytest.param(name, marks=pytest.mark.task(name, "count_parameters", "model_size_bytes")) for name in SLIDES_GB],
)
def test_slides_models_counted(submission, name):
    """count_parameters and model_size_bytes: the slides' two models in float32"""
    count = SMALL_CNN_TOTAL if name == "SmallCNN" else BIG_MLP_TOTAL
    got = submission.run(slides_models, name)
    assert got["count"] == count, f"count_parameters({name}()) is {got['count']:,}, expected {count:,}"
    assert got["bytes"] == 4 * count, f"model_size_bytes({name}()) is {got['bytes']:,}, expected {4 * count:,}"


@pytest.mark.points(1)
@pytest.mark.task("BYTES_PER_GB")
def test_bytes_per_gb(submission):
    """BYTES_PER_GB: the slides' 0.004683 GB and 5.645276 GB"""
    gb = submission.run(constant, "BYTES_PER_GB")
    assert isinstance(gb, (int, float)) and gb > 0, f"BYTES_PER_GB is {gb!r}, expected a number of bytes"
    for name, count in (("SmallCNN", SMALL_CNN_TOTAL), ("BigMLP", BIG_MLP_TOTAL)):
        size = round(4 * count / gb, 6)
        assert size == SLIDES_GB[name], (
            f"{name}: {4 * count:,} bytes / BYTES_PER_GB = {size} GB, the slides print {SLIDES_GB[name]}:"
            " which GB did they divide by?"
        )
