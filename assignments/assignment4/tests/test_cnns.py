"""The two CNNs of cnns.py: the Fashion-MNIST CNN (layers, shapes, parameters) and the BatchNorm CNN
(layers, parameters, and what its BatchNorm layers do in training and in evaluation mode)."""

import pytest
import torch

from grader.testing import layer_shapes

# fashion_cnn(): each layer's name in messages, its type and its output shape for one 1x28x28 image.
FASHION_LAYERS = [
    ("conv1", "Conv2d", [1, 64, 28, 28]),
    ("relu", "ReLU", [1, 64, 28, 28]),
    ("pool1", "MaxPool2d", [1, 64, 14, 14]),
    ("conv2", "Conv2d", [1, 128, 14, 14]),
    ("relu", "ReLU", [1, 128, 14, 14]),
    ("conv3", "Conv2d", [1, 128, 14, 14]),
    ("relu", "ReLU", [1, 128, 14, 14]),
    ("pool2", "MaxPool2d", [1, 128, 7, 7]),
    ("conv4", "Conv2d", [1, 256, 7, 7]),
    ("relu", "ReLU", [1, 256, 7, 7]),
    ("conv5", "Conv2d", [1, 256, 7, 7]),
    ("relu", "ReLU", [1, 256, 7, 7]),
    ("pool3", "MaxPool2d", [1, 256, 3, 3]),
    ("flatten", "Flatten", [1, 2304]),
    ("fc1", "Linear", [1, 128]),
    ("relu", "ReLU", [1, 128]),
    ("dropout1", "Dropout", [1, 128]),
    ("fc2", "Linear", [1, 64]),
    ("relu", "ReLU", [1, 64]),
    ("dropout2", "Dropout", [1, 64]),
    ("fc3", "Linear", [1, 10]),
]


def conv_parameters(k: int, c_in: int, c_out: int) -> int:
    return k * k * c_in * c_out + c_out


def linear_parameters(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


FASHION_PARAMETERS = {
    "conv1": conv_parameters(7, 1, 64),
    "conv2": conv_parameters(3, 64, 128),
    "conv3": conv_parameters(3, 128, 128),
    "conv4": conv_parameters(3, 128, 256),
    "conv5": conv_parameters(3, 256, 256),
    "fc1": linear_parameters(256 * 3 * 3, 128),
    "fc2": linear_parameters(128, 64),
    "fc3": linear_parameters(64, 10),
}
FASHION_TOTAL = 1_413_834
assert sum(FASHION_PARAMETERS.values()) == FASHION_TOTAL


def fashion_shapes(sub):
    """Probe: each layer's output shape for one 1x28x28 image, in evaluation mode."""
    return layer_shapes(sub.cnns.fashion_cnn().eval(), torch.rand(1, 1, 28, 28))


def fashion_parameters(sub):
    """Probe: the number of parameters of each layer, in order, and every Dropout's p."""
    model = sub.cnns.fashion_cnn()
    return {
        "counts": [sum(p.numel() for p in layer.parameters()) for layer in model.children()],
        "dropout": [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)],
    }


@pytest.mark.points(4)
@pytest.mark.task("fashion_cnn")
def test_fashion_cnn_layer_shapes(submission):
    """fashion_cnn: each layer's type and output shape"""
    layers = submission.run(fashion_shapes)
    for index, ((name, kind, shape), got) in enumerate(zip(FASHION_LAYERS, layers, strict=False)):
        assert got["layer"] == kind, f"layer {index} is {got['layer']}, expected {kind} ({name})"
        assert got["shape"] is not None, f"{name} (layer {index}) fails on its input {got['input']}: {got['error']}"
        assert got["shape"] == shape, f"{name} output is {got['shape']}, expected {shape}"
    assert len(layers) == len(FASHION_LAYERS), f"fashion_cnn has {len(layers)} layers, expected {len(FASHION_LAYERS)}"


@pytest.mark.points(2)
@pytest.mark.task("fashion_cnn")
def test_fashion_cnn_parameter_count(submission):
    """fashion_cnn: 1,413,834 parameters"""
    total = sum(submission.run(fashion_parameters)["counts"])
    assert total == FASHION_TOTAL, f"fashion_cnn has {total:,} parameters, expected {FASHION_TOTAL:,}"


@pytest.mark.points(2)
@pytest.mark.task("fashion_cnn")
def test_fashion_cnn_parameters_per_layer(submission):
    """fashion_cnn: parameters of each layer, and dropout 0.5"""
    found = submission.run(fashion_parameters)
    counts, names = found["counts"], [name for name, _, _ in FASHION_LAYERS]
    assert len(counts) == len(names), f"fashion_cnn has {len(counts)} layers, expected {len(names)}"
    for name, count in zip(names, counts, strict=False):
        if name in FASHION_PARAMETERS:
            expected = FASHION_PARAMETERS[name]
            assert count == expected, f"{name} has {count:,} parameters, expected {expected:,}"
    assert found["dropout"] == [0.5, 0.5], f"the dropout rates are {found['dropout']}, expected [0.5, 0.5]"


# BatchNormCNN: the layers of cnn_layers for a batch of 2 images, then those of fc_layers.
BN_CNN_LAYERS = [
    ("Conv2d", [2, 3, 24, 24]),
    ("BatchNorm2d", [2, 3, 24, 24]),
    ("ReLU", [2, 3, 24, 24]),
    ("MaxPool2d", [2, 3, 12, 12]),
    ("Conv2d", [2, 16, 10, 10]),
    ("BatchNorm2d", [2, 16, 10, 10]),
    ("ReLU", [2, 16, 10, 10]),
    ("MaxPool2d", [2, 16, 5, 5]),
    ("Conv2d", [2, 32, 3, 3]),
    ("BatchNorm2d", [2, 32, 3, 3]),
    ("ReLU", [2, 32, 3, 3]),
    ("MaxPool2d", [2, 32, 1, 1]),
]
BN_FC_LAYERS = [("Linear", [2, 20]), ("BatchNorm1d", [2, 20]), ("ReLU", [2, 20]), ("Linear", [2, 10])]
# A BatchNorm layer learns a scale and a shift per channel.
BN_CNN_TOTAL = (
    conv_parameters(5, 1, 3) + 2 * 3
    + conv_parameters(3, 3, 16) + 2 * 16
    + conv_parameters(3, 16, 32) + 2 * 32
    + linear_parameters(32, 20) + 2 * 20
)  # fmt: skip
BN_CNN_PARAMETERS = {10: 6_178, 5: 6_073}
assert all(count == BN_CNN_TOTAL + linear_parameters(20, c) for c, count in BN_CNN_PARAMETERS.items())


def bn_cnn_shapes(sub):
    """Probe: the layers of cnn_layers and of fc_layers, and the model's output, for 2 images."""
    model = sub.cnns.BatchNormCNN(10).eval()
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        output = model(x)
        features = model.cnn_layers(x)
    return {
        "cnn": layer_shapes(model.cnn_layers, x),
        "fc": layer_shapes(model.fc_layers, features.flatten(1)),
        "output": list(output.shape),
    }


def bn_cnn_parameters(sub, num_classes):
    """Probe: the number of parameters of BatchNormCNN(num_classes)."""
    return sum(p.numel() for p in sub.cnns.BatchNormCNN(num_classes).parameters())


def check_layers(part, layers, expected):
    for index, ((kind, shape), got) in enumerate(zip(expected, layers, strict=False)):
        assert got["layer"] == kind, f"{part}[{index}] is {got['layer']}, expected {kind}"
        assert got["shape"] is not None, f"{part}[{index}] fails on its input {got['input']}: {got['error']}"
        assert got["shape"] == shape, f"{part}[{index}] ({kind}) output is {got['shape']}, expected {shape}"
    assert len(layers) == len(expected), f"{part} has {len(layers)} layers, expected {len(expected)}"


@pytest.mark.points(3)
@pytest.mark.task("BatchNormCNN")
def test_batchnorm_cnn_layers(submission):
    """BatchNormCNN: each layer's type and output shape"""
    found = submission.run(bn_cnn_shapes)
    check_layers("cnn_layers", found["cnn"], BN_CNN_LAYERS)
    check_layers("fc_layers", found["fc"], BN_FC_LAYERS)
    assert found["output"] == [2, 10], f"BatchNormCNN(10) maps 2 images to {found['output']}, expected [2, 10]"


@pytest.mark.points(2)
@pytest.mark.parametrize("num_classes", sorted(BN_CNN_PARAMETERS))
@pytest.mark.task("BatchNormCNN")
def test_batchnorm_cnn_parameter_count(submission, num_classes):
    """BatchNormCNN: parameter count (6,178 for 10 classes)"""
    total, expected = submission.run(bn_cnn_parameters, num_classes), BN_CNN_PARAMETERS[num_classes]
    assert total == expected, f"BatchNormCNN({num_classes}) has {total:,} parameters, expected {expected:,}"


BN_BATCH = 8  # images in the batch the BatchNorm checks run on


def bn_pass(sub, training):
    """Probe: one forward pass of a BatchNormCNN in training or evaluation mode, seen by its BN layers.

    The scales, shifts and running statistics are set to random values first, so that a layer that
    ignores any of them shows. Returns, for each BatchNorm layer: its input and output, its affine
    parameters, eps, momentum, and its running statistics before and after the pass.
    """
    model = sub.cnns.BatchNormCNN(10)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    seen = []
    with torch.no_grad():
        for norm in norms:
            if norm.affine:
                norm.weight.uniform_(0.5, 2.0)
                norm.bias.uniform_(-1.0, 1.0)
            if norm.running_mean is not None:
                norm.running_mean.uniform_(-0.5, 0.5)
                norm.running_var.uniform_(0.5, 2.0)
            norm.register_forward_hook(lambda m, args, out: seen.append((args[0].detach(), out.detach())))
    before = [(n.running_mean, n.running_var) for n in norms]
    before = [(m.clone(), v.clone()) if m is not None else (None, None) for m, v in before]
    model.train(training)
    with torch.no_grad():
        model(torch.rand(BN_BATCH, 1, 28, 28))
    return [
        {
            "layer": type(norm).__name__,
            "input": x,
            "output": y,
            "weight": norm.weight.detach() if norm.affine else torch.ones(norm.num_features),
            "bias": norm.bias.detach() if norm.affine else torch.zeros(norm.num_features),
            "eps": norm.eps,
            "momentum": norm.momentum,
            "mean_before": mean,
            "var_before": var,
            "mean_after": norm.running_mean,
            "var_after": norm.running_var,
        }
        for norm, (x, y), (mean, var) in zip(norms, seen, before, strict=False)
    ]


def channel_view(t, x):
    """A per-channel tensor (C,) shaped to broadcast against x: (N, C) or (N, C, H, W)."""
    return t.view(1, -1, *([1] * (x.ndim - 2)))


def normalized(norm, mean, var):
    """What a BatchNorm layer outputs for its input when it normalizes with `mean` and `var`."""
    x = norm["input"]
    scale = channel_view(norm["weight"], x) / torch.sqrt(channel_view(var, x) + norm["eps"])
    return (x - channel_view(mean, x)) * scale + channel_view(norm["bias"], x)


def close(a, b):
    return torch.allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.points(3)
@pytest.mark.task("BatchNormCNN")
def test_batchnorm_training_mode(submission):
    """BatchNormCNN: in training mode, BatchNorm normalizes with the batch's statistics and updates its running ones"""
    norms = submission.run(bn_pass, True)
    kinds = [n["layer"] for n in norms]
    expected_kinds = ["BatchNorm2d"] * 3 + ["BatchNorm1d"]
    assert kinds == expected_kinds, f"the model's BatchNorm layers are {kinds}, expected {expected_kinds}"
    for index, norm in enumerate(norms):
        name = f"BatchNorm layer {index + 1} ({norm['layer']})"
        x = norm["input"]
        dims = [d for d in range(x.ndim) if d != 1]  # every dimension but the channels
        mean, var = x.mean(dims), x.var(dims, unbiased=False)
        assert close(norm["output"], normalized(norm, mean, var)), (
            f"{name} did not normalize with the batch's mean and variance in training mode"
        )
        assert norm["mean_before"] is not None, f"{name} keeps no running statistics (track_running_stats=False?)"
        assert norm["momentum"] == 0.1, f"{name} has momentum {norm['momentum']}, expected the default 0.1"
        count = x.numel() / x.shape[1]
        expected_mean = 0.9 * norm["mean_before"] + 0.1 * mean
        expected_var = 0.9 * norm["var_before"] + 0.1 * var * count / (count - 1)  # unbiased variance
        assert close(norm["mean_after"], expected_mean) and close(norm["var_after"], expected_var), (
            f"{name}: the running statistics did not move to 0.9 x old + 0.1 x the batch's"
        )


@pytest.mark.points(3)
@pytest.mark.task("BatchNormCNN")
def test_batchnorm_evaluation_mode(submission):
    """BatchNormCNN: in evaluation mode, BatchNorm normalizes with its running statistics and keeps them"""
    norms = submission.run(bn_pass, False)
    assert len(norms) == 4, f"the model has {len(norms)} BatchNorm layers, expected 4"
    for index, norm in enumerate(norms):
        name = f"BatchNorm layer {index + 1} ({norm['layer']})"
        assert norm["mean_before"] is not None, (
            f"{name} keeps no running statistics (track_running_stats=False?): in evaluation mode it "
            "normalizes with each batch's statistics"
        )
        expected = normalized(norm, norm["mean_before"], norm["var_before"])
        assert close(norm["output"], expected), (
            f"{name} did not normalize with its running statistics in evaluation mode"
        )
        unchanged = torch.equal(norm["mean_after"], norm["mean_before"]) and torch.equal(
            norm["var_after"], norm["var_before"]
        )
        assert unchanged, f"{name} changed its running statistics in evaluation mode"
