"""SimpleCNN (model.py): its layers, its parameters, sizes that follow image_size, its forward pass.

The probe builds the student's model, returns its layers and weight shapes, fills it with weights
drawn for this grading (`grader.probing.fill`) and runs random images, drawn too, through it: it
returns each layer's output. The grader fills its own copy (architectures.py: the statement fixes
the architecture) alike and recomputes the logits here.
"""

import math

import pytest
import torch

from grader.i18n import _, number
from grader.probing import fill
from grader.testing import architectures_for, derived_seed, generator, probes_for

probes = probes_for(__file__)
architectures = architectures_for(__file__)
IMAGES = 3

# The statement's table for 32x32 images and 10 classes: padding 1 keeps 32x32 through the 3x3
# convolution, the 2x2 pooling halves it, 16 * 16 * 16 = 4,096 features reach fc. The pooling may be
# the `pooling` module or F.max_pool2d: it is seen in what fc receives.
SHAPES = [("conv1", "output", [16, 32, 32]), ("fc", "input", [4096]), ("fc", "output", [10])]
SETTINGS = {
    "conv1": {"type": "Conv2d", "in_channels": 3, "out_channels": 16, "kernel_size": 3, "stride": 1, "padding": 1},
    "pooling": {"type": "MaxPool2d", "kernel_size": 2, "stride": 2},
    "fc": {"type": "Linear", "in_features": 4096, "out_features": 10},
}  # fmt: skip
# A 3x3 convolution from 3 to 16 channels: 16 * 3 * 9 weights + 16 biases; fc: 4,096 * 10 + 10.
PARAMETERS = {"conv1": 16 * 3 * 9 + 16, "fc": 4096 * 10 + 10}


def traced(submission, num_classes, image_size, label):
    """The probe's trace of SimpleCNN(num_classes, image_size) on images drawn for `label`, and the
    logits the grader's own copy gives with the same weights."""
    x = torch.rand(IMAGES, 3, image_size, image_size, generator=generator(label)) * 2 - 1
    seed = derived_seed(label + " weights")
    mine = architectures.SimpleCNN(num_classes, image_size)
    fill(mine, seed)
    with torch.no_grad():
        expected = mine.eval()(x)
    return submission.run(probes.trace, num_classes, image_size, seed, x, seed=image_size), expected


@pytest.fixture(scope="module")
def cifar_sized(submission):
    return traced(submission, 10, 32, "SimpleCNN images")


def same_setting(got, want):
    return got == want or (isinstance(want, int) and got in ([want, want], (want, want)))


@pytest.mark.points(3)
@pytest.mark.task("SimpleCNN")
def test_simple_cnn_layers(cifar_sized):
    """SimpleCNN: each layer's settings and output shape for 32x32 images"""
    trace, _expected = cifar_sized
    for name, settings in SETTINGS.items():
        layer = trace["layers"].get(name)
        assert layer, _("SimpleCNN has no layer {name}").format(name=name)
        for key, want in settings.items():
            assert same_setting(layer.get(key), want), _("{name}.{key} is {got}, expected {want}").format(
                name=name, key=key, got=layer.get(key), want=want
            )
    calls = {name: {"input": x, "output": out} for name, x, out in trace["calls"]}
    for name, side, shape in SHAPES:
        if name not in calls and trace["error"]:
            raise AssertionError(_("the forward pass fails: {error}").format(error=trace["error"]))
        assert name in calls, _("the forward pass never calls {name}").format(name=name)
        got = list(calls[name][side].shape)
        message = (
            _("{name} output is {got}, expected {want}")
            if side == "output"
            else _("{name} receives {got}, expected {want} (the pooled maps, flattened)")
        )
        assert got == [IMAGES, *shape], message.format(name=name, got=got, want=[IMAGES, *shape])


@pytest.mark.points(2)
@pytest.mark.task("SimpleCNN")
def test_simple_cnn_parameters(cifar_sized):
    """SimpleCNN: 41,418 parameters"""
    trace, _expected = cifar_sized
    counts: dict[str, int] = {}
    for key, shape in trace["shapes"].items():
        counts[key.split(".")[0]] = counts.get(key.split(".")[0], 0) + math.prod(shape)
    total, want = sum(counts.values()), sum(PARAMETERS.values())
    for name, expected in PARAMETERS.items():
        assert counts.get(name) == expected, _(
            "SimpleCNN has {total} parameters, expected {want}: {name} has {got}, expected {expected}"
        ).format(
            total=number(total),
            want=number(want),
            name=name,
            got=number(counts.get(name, 0)),
            expected=number(expected),
        )
    assert total == want, _("SimpleCNN has {total} parameters, expected {want}").format(
        total=number(total), want=number(want)
    )


def check_logits(trace, expected):
    logits = trace["logits"]
    assert trace["error"] is None, _("the forward pass fails: {error}").format(error=trace["error"])
    assert isinstance(logits, torch.Tensor), _("forward returned {got}, expected a tensor").format(got=logits)
    assert list(logits.shape) == list(expected.shape), _("the logits are {got}, expected {want}").format(
        got=list(logits.shape), want=list(expected.shape)
    )
    off = (logits - expected).abs().max().item()
    assert off < 1e-4, _(
        "with the same weights, the logits differ from conv1 -> ReLU -> pooling -> flatten -> fc by up to {off:.3g}"
    ).format(off=off)


@pytest.mark.points(3)
@pytest.mark.task("SimpleCNN")
def test_simple_cnn_forward(cifar_sized):
    """SimpleCNN: conv1 -> ReLU -> max pooling -> flatten -> fc"""
    check_logits(*cifar_sized)


@pytest.mark.points(2)
@pytest.mark.task("SimpleCNN")
def test_simple_cnn_follows_image_size(submission):
    """SimpleCNN: fc's size follows image_size and num_classes (24x24 images, 3 classes)"""
    trace, expected = traced(submission, 3, 24, "SimpleCNN small images")
    fc = trace["layers"].get("fc", {})
    assert fc.get("in_features") == 16 * 12 * 12, _(
        "for 24x24 images fc takes {got} features, expected {want} (16 maps of 12x12)"
    ).format(got=fc.get("in_features"), want=number(16 * 12 * 12))
    check_logits(trace, expected)
