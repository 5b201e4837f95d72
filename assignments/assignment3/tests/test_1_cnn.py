"""The models of cnn.py: MnistCNN, MnistCNN3, feature_maps and HighAccuracyCNN.

The probes build the student's model and run random images through it, with hooks on every
layer; the tests compare with shapes, parameter counts and forward passes computed here.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

# (layer, output shape) of each layer call, in order, for one 1x28x28 image. `pool` is one
# MaxPool2d used after every convolution: 28 -conv-> 26 -pool-> 13 -conv-> 11 -pool-> 5 (floor).
MNIST_CNN_LAYERS = [
    ("conv1", [1, 16, 26, 26]),
    ("pool", [1, 16, 13, 13]),
    ("conv2", [1, 32, 11, 11]),
    ("pool", [1, 32, 5, 5]),
    ("fc1", [1, 10]),
]
# conv3 then pool once more: 5 -conv-> 3 -pool-> 1.
MNIST_CNN3_LAYERS = [*MNIST_CNN_LAYERS[:4], ("conv3", [1, 64, 3, 3]), ("pool", [1, 64, 1, 1]), ("fc1", [1, 10])]
# Padding 1 keeps 28x28 through both convolutions; the pool halves it: 64 * 14 * 14 = 12,544.
HIGH_ACCURACY_LAYERS = [
    ("conv1", [1, 32, 28, 28]),
    ("conv2", [1, 64, 28, 28]),
    ("pool", [1, 64, 14, 14]),
    ("flatten", [1, 12544]),
    ("dropout1", [1, 12544]),
    ("fc1", [1, 128]),
    ("dropout2", [1, 128]),
    ("fc2", [1, 10]),
]
# Weights + biases: a k x k convolution from c to c' channels has c' * c * k * k + c'.
MNIST_CNN_PARAMETERS = {"conv1": 16 * 1 * 9 + 16, "conv2": 32 * 16 * 9 + 32, "fc1": 800 * 10 + 10}
MNIST_CNN3_PARAMETERS = {**MNIST_CNN_PARAMETERS, "conv3": 64 * 32 * 9 + 64, "fc1": 64 * 10 + 10}
HIGH_ACCURACY_PARAMETERS = {
    "conv1": 32 * 1 * 9 + 32,
    "conv2": 64 * 32 * 9 + 64,
    "fc1": 12544 * 128 + 128,
    "fc2": 128 * 10 + 10,
}
DROPOUT = {"dropout1": 0.25, "dropout2": 0.5}


def trace(sub, class_name):
    """Probe: the layer calls of one forward pass of a new `class_name` on a random 1x1x28x28 image.

    Each call: {"layer": attribute name, "input": shape, "shape": output shape, None if it raised}.
    Also: the error that ended the pass, if any, and each layer's type, parameter count and dropout p.
    """
    model = getattr(sub.cnn, class_name)().eval()
    calls = []
    for name, layer in model.named_children():
        layer.register_forward_pre_hook(
            lambda m, args, name=name: calls.append({"layer": name, "input": list(args[0].shape), "shape": None})
        )
        layer.register_forward_hook(lambda m, args, out: calls[-1].update(shape=list(out.shape)))
    error = None
    try:
        with torch.no_grad():
            model(torch.rand(1, 1, 28, 28))
    except Exception as exc:
        error = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    layers = {
        name: {
            "type": type(layer).__name__,
            "parameters": sum(p.numel() for p in layer.parameters()),
            "p": getattr(layer, "p", None),
        }
        for name, layer in model.named_children()
    }
    return {"calls": calls, "error": error, "layers": layers}


def check_layer_calls(traced, expected):
    """Fail on the first layer call that differs from `expected` [(layer, shape), ...]."""
    calls, error = traced["calls"], traced["error"]
    order = ", ".join(name for name, _ in expected)
    for index, (name, shape) in enumerate(expected):
        before = f"after {calls[index - 1]['layer']}" if index else "first"
        if index == len(calls):
            ending = f": {error}" if error else ""
            raise AssertionError(f"the forward pass ends {before}, expected {name} next (order: {order}){ending}")
        got = calls[index]
        assert got["layer"] == name, f"{before} the forward pass runs {got['layer']}, expected {name} (order: {order})"
        assert got["shape"] is not None, f"{name} fails on its input {got['input']}: {error}"
        assert got["shape"] == shape, f"{name} output is {got['shape']}, expected {shape}"
    assert error is None, f"the forward pass fails after {expected[-1][0]}: {error}"
    extra = [call["layer"] for call in calls[len(expected) :]]
    assert not extra, f"after {expected[-1][0]} the forward pass still runs {', '.join(extra)} (order: {order})"


def check_parameters(traced, class_name, expected):
    """Fail when the total differs from `expected` {layer: count}, naming the first layer that differs."""
    layers = traced["layers"]
    total, wanted = sum(layer["parameters"] for layer in layers.values()), sum(expected.values())
    if total == wanted:
        return
    for name, count in expected.items():
        got = layers.get(name, {}).get("parameters")
        if got is None:
            raise AssertionError(f"{class_name} has {total:,} parameters, expected {wanted:,}: it has no layer {name}")
        if got != count:
            raise AssertionError(
                f"{class_name} has {total:,} parameters, expected {wanted:,}: {name} has {got:,}, expected {count:,}"
            )
    known = ", ".join(expected)
    raise AssertionError(f"{class_name} has {total:,} parameters, expected {wanted:,}: it has layers beyond {known}")


def forward_random(sub, class_name):
    """Probe: a new `class_name`'s logits for 4 random images, with its weights."""
    model = getattr(sub.cnn, class_name)().eval()
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        logits = model(x)
    return {"x": x, "logits": logits, "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}


def lesson_forward(state, x, skip_relu=None, pool=F.max_pool2d):
    """[conv -> ReLU -> pool] for conv1, conv2 (, conv3), then fc1, from the weights in `state`."""
    convs = sorted(k.removesuffix(".weight") for k in state if k.startswith("conv") and k.endswith(".weight"))
    for conv in convs:
        x = F.conv2d(x, state[f"{conv}.weight"], state[f"{conv}.bias"])
        x = x if conv == skip_relu else F.relu(x)
        x = pool(x, 2)
    return F.linear(x.flatten(1), state["fc1.weight"], state["fc1.bias"])


def check_forward(result, convs):
    """Compare with the lesson's forward pass, and name the step that a near-miss leaves out."""
    state, x, logits = result["state"], result["x"], result["logits"]
    expected = lesson_forward(state, x)
    assert isinstance(logits, torch.Tensor) and logits.shape == expected.shape, (
        f"the model returns {type(logits).__name__} {list(getattr(logits, 'shape', []))}, expected logits [4, 10]"
    )
    if torch.allclose(logits, expected, atol=1e-5):
        return
    for conv in convs:
        if torch.allclose(logits, lesson_forward(state, x, skip_relu=conv), atol=1e-5):
            raise AssertionError(f"no ReLU after {conv}: x = self.pool(torch.relu(self.{conv}(x)))")
    if torch.allclose(logits, lesson_forward(state, x, pool=F.avg_pool2d), atol=1e-5):
        raise AssertionError("the pooling averages: the lesson's network takes the maximum (nn.MaxPool2d)")
    difference = (logits - expected).abs().max().item()
    raise AssertionError(
        f"the logits differ from [conv -> ReLU -> max pool] x {len(convs)} -> flatten -> fc1 by up to {difference:.3g}"
    )


@pytest.fixture(scope="module")
def mnist_cnn(submission):
    return submission.run(trace, "MnistCNN")


@pytest.fixture(scope="module")
def mnist_cnn3(submission):
    return submission.run(trace, "MnistCNN3")


@pytest.fixture(scope="module")
def high_accuracy(submission):
    return submission.run(trace, "HighAccuracyCNN")


@pytest.mark.points(3)
@pytest.mark.task("MnistCNN")
def test_mnist_cnn_layer_shapes(mnist_cnn):
    """MnistCNN: output shape of each layer"""
    check_layer_calls(mnist_cnn, MNIST_CNN_LAYERS)


@pytest.mark.points(2)
@pytest.mark.task("MnistCNN")
def test_mnist_cnn_parameters(mnist_cnn):
    """MnistCNN: 12,810 parameters"""
    check_parameters(mnist_cnn, "MnistCNN", MNIST_CNN_PARAMETERS)


@pytest.mark.points(3)
@pytest.mark.task("MnistCNN")
def test_mnist_cnn_forward(submission):
    """MnistCNN: conv -> ReLU -> max pool, twice, then fc1"""
    check_forward(submission.run(forward_random, "MnistCNN"), ["conv1", "conv2"])


@pytest.mark.points(3)
@pytest.mark.task("MnistCNN3", "MnistCNN")
def test_mnist_cnn3_layer_shapes(mnist_cnn3):
    """MnistCNN3: output shape of each layer, conv3 included"""
    check_layer_calls(mnist_cnn3, MNIST_CNN3_LAYERS)


@pytest.mark.points(2)
@pytest.mark.task("MnistCNN3", "MnistCNN")
def test_mnist_cnn3_parameters(mnist_cnn3):
    """MnistCNN3: 23,946 parameters"""
    check_parameters(mnist_cnn3, "MnistCNN3", MNIST_CNN3_PARAMETERS)


@pytest.mark.points(2)
@pytest.mark.task("MnistCNN3", "MnistCNN")
def test_mnist_cnn3_forward(submission):
    """MnistCNN3: conv -> ReLU -> max pool, three times, then fc1"""
    check_forward(submission.run(forward_random, "MnistCNN3"), ["conv1", "conv2", "conv3"])


def maps_of_random_image(sub):
    """Probe: feature_maps of a new MnistCNN for one random image, with the model's weights."""
    model = sub.cnn.MnistCNN()
    image = torch.rand(1, 1, 28, 28)
    maps = sub.cnn.feature_maps(model, image)
    maps = [m.detach().cpu() if isinstance(m, torch.Tensor) else type(m).__name__ for m in maps]
    return {"image": image, "maps": maps, "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}


@pytest.fixture(scope="module")
def maps(submission):
    return submission.run(maps_of_random_image)


@pytest.mark.points(2)
@pytest.mark.task("feature_maps", "MnistCNN")
def test_feature_map_shapes(maps):
    """feature_maps: conv1 maps [1, 16, 26, 26], conv2 maps [1, 32, 11, 11]"""
    got = maps["maps"]
    assert len(got) == 2, f"feature_maps returned {len(got)} values, expected 2: (conv1 maps, conv2 maps)"
    for name, value, shape in zip(("conv1", "conv2"), got, ([1, 16, 26, 26], [1, 32, 11, 11]), strict=True):
        assert isinstance(value, torch.Tensor), f"the {name} maps are a {value}, expected a tensor"
        hint = ": pool conv1's maps before conv2, as the forward pass does" if name == "conv2" else ""
        assert list(value.shape) == shape, f"the {name} maps are {list(value.shape)}, expected {shape}{hint}"


@pytest.mark.points(2)
@pytest.mark.task("feature_maps", "MnistCNN")
def test_feature_map_values(maps):
    """feature_maps: after ReLU, conv2 fed with conv1's pooled maps"""
    state, image = maps["state"], maps["image"]
    conv1 = F.relu(F.conv2d(image, state["conv1.weight"], state["conv1.bias"]))
    conv2 = F.relu(F.conv2d(F.max_pool2d(conv1, 2), state["conv2.weight"], state["conv2.bias"]))
    for name, got, expected in zip(("conv1", "conv2"), maps["maps"], (conv1, conv2), strict=True):
        assert isinstance(got, torch.Tensor) and got.shape == expected.shape, f"the {name} maps have the wrong shape"
        assert got.min() >= 0, f"the {name} maps have negative values ({got.min():.3g}): apply torch.relu"
        difference = (got - expected).abs().max().item()
        assert difference < 1e-5, f"the {name} maps differ from ReLU({name}(...)) by up to {difference:.3g}" + (
            ": feed conv2 with pool(ReLU(conv1(image)))" if name == "conv2" else ""
        )


@pytest.mark.points(2)
@pytest.mark.task("HighAccuracyCNN")
def test_high_accuracy_layer_shapes(high_accuracy):
    """HighAccuracyCNN: output shape of each layer"""
    check_layer_calls(high_accuracy, HIGH_ACCURACY_LAYERS)


@pytest.mark.points(2)
@pytest.mark.task("HighAccuracyCNN")
def test_high_accuracy_parameters(high_accuracy):
    """HighAccuracyCNN: 1,625,866 parameters"""
    check_parameters(high_accuracy, "HighAccuracyCNN", HIGH_ACCURACY_PARAMETERS)


@pytest.mark.points(1)
@pytest.mark.task("HighAccuracyCNN")
def test_high_accuracy_dropout(high_accuracy):
    """HighAccuracyCNN: dropout 0.25 before fc1, 0.5 before fc2"""
    layers = high_accuracy["layers"]
    for name, p in DROPOUT.items():
        layer = layers.get(name)
        assert layer is not None and layer["type"] == "Dropout", (
            f"{name} is {layer and layer['type']}, expected Dropout"
        )
        assert layer["p"] == p, f"{name} drops {layer['p']} of its inputs, expected {p}"


def init_statistics(sub):
    """Probe: for each convolution and linear layer of a new HighAccuracyCNN, its weights' statistics."""
    model = sub.cnn.HighAccuracyCNN()
    out = {}
    for name, layer in model.named_children():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            w = layer.weight.detach().double()
            z = (w - w.mean()) / w.std()
            out[name] = {
                "fan_in": w[0].numel(),
                "count": w.numel(),
                "std": w.std().item(),
                "kurtosis": z.pow(4).mean().item(),
                "bias": layer.bias.detach().abs().max().item() if layer.bias is not None else 0.0,
            }
    return out


@pytest.mark.points(3)
@pytest.mark.task("HighAccuracyCNN")
def test_high_accuracy_he_init(submission):
    """HighAccuracyCNN: He (Kaiming) normal weights, zero biases"""
    stats = submission.run(init_statistics)
    for name in HIGH_ACCURACY_PARAMETERS:
        assert name in stats, f"HighAccuracyCNN has no convolution or linear layer {name}"
        layer = stats[name]
        fan_in, std = layer["fan_in"], layer["std"]
        he = math.sqrt(2 / fan_in)
        default = (
            " (PyTorch's default init: the He init never ran)" if abs(std * math.sqrt(3 * fan_in) - 1) < 0.1 else ""
        )
        assert abs(std / he - 1) < 0.2, (
            f"{name} weights have std {std:.4f}, expected He's sqrt(2 / fan_in) = sqrt(2 / {fan_in}) = {he:.4f}"
            f"{default}: nn.init.kaiming_normal_(m.weight, nonlinearity='relu')"
        )
        assert layer["bias"] == 0, f"{name} bias is not zero (up to {layer['bias']:.3g}): nn.init.zeros_(m.bias)"
        # Enough weights to tell a normal (kurtosis 3) from a uniform distribution (1.8).
        if layer["count"] >= 10_000:
            kurtosis = layer["kurtosis"]
            assert abs(kurtosis - 3) < 0.3, (
                f"{name} weights are not normally distributed (kurtosis {kurtosis:.2f}; normal: 3, uniform: 1.8):"
                " use nn.init.kaiming_normal_"
            )
