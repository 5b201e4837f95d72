"""LeNet (lenet.py): the layers of `net`, their output shapes and their parameters."""

import pytest
import torch

from grader.testing import layer_shapes

pytestmark = pytest.mark.task("net")

# The layers, their names in messages, and their output shapes for one 1x28x28 image.
EXPECTED = [
    ("conv1", "Conv2d", [1, 6, 28, 28]),
    ("sigmoid", "Sigmoid", [1, 6, 28, 28]),
    ("pool1", "AvgPool2d", [1, 6, 14, 14]),
    ("conv2", "Conv2d", [1, 16, 10, 10]),
    ("sigmoid", "Sigmoid", [1, 16, 10, 10]),
    ("pool2", "AvgPool2d", [1, 16, 5, 5]),
    ("flatten", "Flatten", [1, 400]),
    ("fc1", "Linear", [1, 120]),
    ("sigmoid", "Sigmoid", [1, 120]),
    ("fc2", "Linear", [1, 84]),
    ("sigmoid", "Sigmoid", [1, 84]),
    ("fc3", "Linear", [1, 10]),
]
# Weights plus biases: conv1 6*1*5*5 + 6, conv2 16*6*5*5 + 16, fc1 400*120 + 120, ...
LAYER_PARAMETERS = {"conv1": 156, "conv2": 2416, "fc1": 48120, "fc2": 10164, "fc3": 850}
TOTAL_PARAMETERS = 61706


def net_shapes(sub):
    """Probe: each layer's output shape for one random 1x28x28 image."""
    return layer_shapes(sub.lenet.net, torch.rand(1, 1, 28, 28))


def net_parameter_counts(sub):
    """Probe: the number of parameters of each layer, in order."""
    return [sum(p.numel() for p in layer.parameters()) for layer in sub.lenet.net.children()]


@pytest.mark.points(4)
def test_layer_output_shapes(submission):
    """net: each layer's type and output shape"""
    layers = submission.run(net_shapes)
    for index, ((name, kind, shape), got) in enumerate(zip(EXPECTED, layers, strict=False)):
        assert got["layer"] == kind, f"layer {index} is {got['layer']}, expected {kind} ({name})"
        assert got["shape"] is not None, f"{name} (layer {index}) fails on its input {got['input']}: {got['error']}"
        assert got["shape"] == shape, f"{name} output is {got['shape']}, expected {shape}"
    assert len(layers) == len(EXPECTED), f"net has {len(layers)} layers, expected {len(EXPECTED)}"


@pytest.mark.points(2)
def test_parameter_count(submission):
    """net: 61,706 parameters"""
    total = sum(submission.run(net_parameter_counts))
    assert total == TOTAL_PARAMETERS, f"net has {total:,} parameters, expected {TOTAL_PARAMETERS:,}"


@pytest.mark.points(2)
def test_parameters_per_layer(submission):
    """net: parameters of each layer"""
    counts = submission.run(net_parameter_counts)
    names = [name for name, _, _ in EXPECTED]
    assert len(counts) == len(names), f"net has {len(counts)} layers, expected {len(names)}"
    for name, count in zip(names, counts, strict=False):
        if name in LAYER_PARAMETERS:
            expected = LAYER_PARAMETERS[name]
            assert count == expected, f"{name} has {count:,} parameters, expected {expected:,}"
