"""resnet.py: SeparableConv2d, ResidualUnit and ResNet34.

Expected values are computed here from the layer formulas: a k x k convolution from c_in to c_out
channels has k*k*c_in*c_out weights (+ c_out biases), a BatchNorm layer 2*c (scale and shift).
"""

import math

import pytest
import torch
import torch.nn.functional as F

from grader.testing import accuracy_of, layer_shapes

# --- SeparableConv2d ----------------------------------------------------------------------------

SEP_IN, SEP_OUT, SEP_K, SEP_STRIDE, SEP_PADDING = 8, 16, 3, 2, 1
DEPTHWISE = SEP_IN * SEP_K * SEP_K + SEP_IN  # one k x k filter (and bias) per input channel
POINTWISE = SEP_IN * SEP_OUT + SEP_OUT  # a 1x1 convolution across the channels
REGULAR = SEP_OUT * SEP_IN * SEP_K * SEP_K + SEP_OUT


def separable(sub):
    """Probe: SeparableConv2d(8, 16, 3, stride=2, padding=1): its two convolutions and one output."""
    layer = sub.resnet.SeparableConv2d(SEP_IN, SEP_OUT, SEP_K, stride=SEP_STRIDE, padding=SEP_PADDING)
    x = torch.randn(2, SEP_IN, 9, 9)
    with torch.no_grad():
        y = layer(x)
    parts = {}
    for name in ("depthwise_conv", "pointwise_conv"):
        conv = getattr(layer, name)
        parts[name] = {
            "parameters": sum(p.numel() for p in conv.parameters()),
            "weight": conv.weight.detach(),
            "bias": None if conv.bias is None else conv.bias.detach(),
            "stride": list(conv.stride),
            "padding": conv.padding if isinstance(conv.padding, str) else list(conv.padding),
            "groups": conv.groups,
        }
    return {"parameters": sum(p.numel() for p in layer.parameters()), "parts": parts, "x": x, "y": y}


@pytest.fixture(scope="module")
def separable_found(submission):
    return submission.run(separable)


@pytest.mark.points(2)
@pytest.mark.task("SeparableConv2d")
def test_separable_parameters(separable_found):
    """SeparableConv2d: parameters = depth-wise + point-wise"""
    parts = separable_found["parts"]
    depthwise, pointwise = parts["depthwise_conv"]["parameters"], parts["pointwise_conv"]["parameters"]
    assert depthwise == DEPTHWISE, (
        f"the depth-wise conv of SeparableConv2d({SEP_IN}, {SEP_OUT}, {SEP_K}) has {depthwise:,} parameters, "
        f"expected {DEPTHWISE} = {SEP_IN}x1x{SEP_K}x{SEP_K} + {SEP_IN}: one filter per input channel "
        f"(groups=in_channels)"
    )
    assert pointwise == POINTWISE, (
        f"the point-wise conv has {pointwise:,} parameters, expected {POINTWISE} = {SEP_OUT}x{SEP_IN}x1x1 + {SEP_OUT}"
    )
    total = separable_found["parameters"]
    assert total == DEPTHWISE + POINTWISE, (
        f"SeparableConv2d has {total:,} parameters, expected {DEPTHWISE + POINTWISE} (a regular conv has {REGULAR:,})"
    )


@pytest.mark.points(2)
@pytest.mark.task("SeparableConv2d")
def test_separable_output(separable_found):
    """SeparableConv2d: the depth-wise then the point-wise convolution"""
    depthwise, pointwise = separable_found["parts"]["depthwise_conv"], separable_found["parts"]["pointwise_conv"]
    x, y = separable_found["x"], separable_found["y"]
    assert list(depthwise["weight"].shape) == [SEP_IN, 1, SEP_K, SEP_K], (
        f"the depth-wise weight is {list(depthwise['weight'].shape)}, expected {[SEP_IN, 1, SEP_K, SEP_K]}"
    )
    assert list(pointwise["weight"].shape) == [SEP_OUT, SEP_IN, 1, 1], (
        f"the point-wise weight is {list(pointwise['weight'].shape)}, expected {[SEP_OUT, SEP_IN, 1, 1]}"
    )
    middle = F.conv2d(x, depthwise["weight"], depthwise["bias"], SEP_STRIDE, SEP_PADDING, groups=SEP_IN)
    expected = F.conv2d(middle, pointwise["weight"], pointwise["bias"])
    assert list(y.shape) == list(expected.shape), (
        f"SeparableConv2d(8, 16, 3, stride=2, padding=1) maps {list(x.shape)} to {list(y.shape)}, "
        f"expected {list(expected.shape)}: pass stride and padding to the depth-wise conv"
    )
    difference = (y - expected).abs().max().item()
    assert difference < 1e-4, f"the output differs from point-wise(depth-wise(x)) by up to {difference:.3g}"


# --- ResidualUnit -------------------------------------------------------------------------------

UNIT_X = (2, 8, 10, 10)  # the input of the ResidualUnit checks: 8 channels


def randomize_batchnorms(model):
    """Random scales, shifts and running statistics, so that evaluation mode is not the identity."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)


def describe(module):
    """A module as data: its type, and for a sequence its children's types and conv settings."""

    def child(c):
        conv = isinstance(c, torch.nn.Conv2d)
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


def residual_unit(sub, in_channels, out_channels, stride):
    """Probe: ResidualUnit(in, out, stride) in evaluation mode: its parts, F(x), skip(x) and output."""
    unit = sub.resnet.ResidualUnit(in_channels, out_channels, stride=stride)
    randomize_batchnorms(unit)
    unit.eval()
    x = torch.randn(*UNIT_X)
    found = {"main": describe(unit.main_layers), "skip": describe(unit.skip_connection), "x": x}
    found["main_shapes"] = layer_shapes(unit.main_layers, x)
    with torch.no_grad():
        found["fx"] = unit.main_layers(x)
        for name, run in (("skip_x", lambda: unit.skip_connection(x)), ("y", lambda: unit(x))):
            try:
                found[name] = run()
            except RuntimeError as exc:
                found[name] = str(exc).splitlines()[0]
    return found


def unit_name(in_channels, out_channels, stride):
    return f"ResidualUnit({in_channels}, {out_channels}, stride={stride})"


def close(a, b):
    return a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.points(2)
@pytest.mark.task("ResidualUnit")
def test_residual_main_path(submission):
    """ResidualUnit: F = Conv 3x3 (stride) -> BN -> ReLU -> Conv 3x3 -> BN"""
    found = submission.run(residual_unit, 8, 16, 2)
    expected = [
        ("Conv2d", [2, 16, 5, 5]),
        ("BatchNorm2d", [2, 16, 5, 5]),
        ("ReLU", [2, 16, 5, 5]),
        ("Conv2d", [2, 16, 5, 5]),
        ("BatchNorm2d", [2, 16, 5, 5]),
    ]
    name = unit_name(8, 16, 2)
    layers = found["main_shapes"]
    for index, ((kind, shape), got) in enumerate(zip(expected, layers, strict=False)):
        assert got["layer"] == kind, f"{name}: main_layers[{index}] is {got['layer']}, expected {kind}"
        assert got["shape"] is not None, f"{name}: main_layers[{index}] fails on {got['input']}: {got['error']}"
        assert got["shape"] == shape, f"{name}: main_layers[{index}] ({kind}) outputs {got['shape']}, expected {shape}"
    assert len(layers) == len(expected), f"{name}: main_layers has {len(layers)} layers, expected {len(expected)}"
    for index in (0, 3):
        conv = found["main"]["children"][index]
        assert conv["kernel"] == [3, 3], f"{name}: main_layers[{index}] has a {conv['kernel']} kernel, expected 3x3"
        assert not conv["bias"], f"{name}: main_layers[{index}] has a bias: the BatchNorm after it makes it useless"
    parameters = found["main"]["parameters"]
    expected_parameters = 3 * 3 * 8 * 16 + 2 * 16 + 3 * 3 * 16 * 16 + 2 * 16
    assert parameters == expected_parameters, (
        f"{name}: main_layers has {parameters:,} parameters, expected {expected_parameters:,}"
    )


@pytest.mark.points(2)
@pytest.mark.task("ResidualUnit")
def test_residual_identity_skip(submission):
    """ResidualUnit: the skip is the identity when the shapes match"""
    found = submission.run(residual_unit, 8, 8, 1)
    name = unit_name(8, 8, 1)
    skip = found["skip"]
    assert skip["parameters"] == 0, (
        f"{name}: the skip has {skip['parameters']:,} parameters, expected none (nn.Identity(): x has F(x)'s shape)"
    )
    assert isinstance(found["skip_x"], torch.Tensor), f"{name}: the skip fails: {found['skip_x']}"
    assert torch.equal(found["skip_x"], found["x"]), f"{name}: skip(x) is not x (expected nn.Identity())"


PROJECTED = [(8, 16, 2), (8, 8, 2), (8, 16, 1)]  # (in, out, stride): the stride, the channels or both change


@pytest.mark.points(3)
@pytest.mark.parametrize(("in_channels", "out_channels", "stride"), PROJECTED)
@pytest.mark.task("ResidualUnit")
def test_residual_projection_skip(submission, in_channels, out_channels, stride):
    """ResidualUnit: a 1x1 conv + BN skip when the shapes change"""
    found = submission.run(residual_unit, in_channels, out_channels, stride)
    name = unit_name(in_channels, out_channels, stride)
    children = found["skip"]["children"]
    kinds = [c["type"] for c in children] or [found["skip"]["type"]]
    assert kinds == ["Conv2d", "BatchNorm2d"], (
        f"{name}: the skip is {' -> '.join(kinds)}, expected Conv2d 1x1 (stride {stride}) -> BatchNorm2d: "
        f"x {list(found['x'].shape)} and F(x) {list(found['fx'].shape)} differ in shape"
    )
    conv, norm = children
    assert conv["kernel"] == [1, 1], f"{name}: the skip's conv has a {conv['kernel']} kernel, expected 1x1"
    assert conv["stride"] == [stride, stride], f"{name}: the skip's conv has stride {conv['stride']}, expected {stride}"
    assert conv["channels"] == [in_channels, out_channels], (
        f"{name}: the skip's conv maps {conv['channels'][0]} to {conv['channels'][1]} channels, "
        f"expected {in_channels} to {out_channels}"
    )
    assert not conv["bias"], f"{name}: the skip's conv has a bias: the BatchNorm after it makes it useless"
    assert norm["features"] == out_channels, f"{name}: the skip's BatchNorm2d has {norm['features']} features"
    assert isinstance(found["y"], torch.Tensor), f"{name} fails on an input of shape {list(UNIT_X)}: {found['y']}"


@pytest.mark.points(3)
@pytest.mark.parametrize(("in_channels", "out_channels", "stride"), [(8, 8, 1), (8, 16, 2)])
@pytest.mark.task("ResidualUnit")
def test_residual_adds_then_relu(submission, in_channels, out_channels, stride):
    """ResidualUnit: ReLU(F(x) + skip(x))"""
    found = submission.run(residual_unit, in_channels, out_channels, stride)
    name = unit_name(in_channels, out_channels, stride)
    y, fx, skip_x = found["y"], found["fx"], found["skip_x"]
    assert isinstance(y, torch.Tensor), f"{name} fails on an input of shape {list(UNIT_X)}: {y}"
    assert isinstance(skip_x, torch.Tensor), f"{name}: the skip fails: {skip_x}"
    if y.shape == fx.shape == skip_x.shape and not close(y, F.relu(fx + skip_x)):
        wrong = {
            "the ReLU comes before the addition: ReLU(F(x)) + skip(x), expected ReLU(F(x) + skip(x))": (
                F.relu(fx) + skip_x
            ),
            "there is no ReLU after the addition: expected ReLU(F(x) + skip(x))": fx + skip_x,
            "the skip is never added: ReLU(F(x)), expected ReLU(F(x) + skip(x))": F.relu(fx),
        }
        mistake = next((text for text, value in wrong.items() if close(y, value)), None)
        pytest.fail(f"{name}: {mistake or 'the output is not ReLU(F(x) + skip(x))'}")
    assert list(y.shape) == list(fx.shape), f"{name} outputs {list(y.shape)}, expected {list(fx.shape)}"


# --- ResNet34 ---------------------------------------------------------------------------------

STAGES = [(64, 3), (128, 4), (256, 6), (512, 3)]  # (channels, residual units)


def conv_count(k, c_in, c_out):
    return k * k * c_in * c_out  # no bias: a BatchNorm follows every convolution


def unit_count(c_in, c_out, stride):
    count = conv_count(3, c_in, c_out) + 2 * c_out + conv_count(3, c_out, c_out) + 2 * c_out
    if stride > 1 or c_in != c_out:
        count += conv_count(1, c_in, c_out) + 2 * c_out
    return count


def expected_units():
    """(in_channels, out_channels, stride) of each of ResNet-34's 16 residual units, in order."""
    units, previous = [], 64
    for channels, count in STAGES:
        for index in range(count):
            units.append((previous, channels, 2 if index == 0 and channels != 64 else 1))
            previous = channels
    return units


UNITS = expected_units()
STEM = conv_count(7, 3, 64) + 2 * 64
HEAD = 512 * 10 + 10
RESNET34_TOTAL = STEM + sum(unit_count(*unit) for unit in UNITS) + HEAD
# The same count as torchvision.models.resnet34(num_classes=10), the same architecture.
assert RESNET34_TOTAL == 21_289_802

RESNET_X = (2, 3, 224, 224)
RESNET_SHAPES = (
    [[2, 64, 112, 112]] * 3
    + [[2, 64, 56, 56]] * 4
    + [[2, 128, 28, 28]] * 4
    + [[2, 256, 14, 14]] * 6
    + [[2, 512, 7, 7]] * 3
    + [[2, 512, 1, 1], [2, 512], [2, 10]]
)  # the output of each layer of `resnet`: stem (4 layers), 16 units, pooling, Flatten, Linear


def resnet_facts(sub):
    """Probe: ResNet34() as data: its units, parameters per layer, and its layers' shapes for 2 images."""
    model = sub.resnet.ResNet34().eval()
    units = []
    for module in model.modules():
        if isinstance(module, sub.resnet.ResidualUnit):
            first = module.main_layers[0]
            units.append([first.in_channels, first.out_channels, first.stride[0]])
    return {
        "units": units,
        "counts": [sum(p.numel() for p in layer.parameters()) for layer in model.resnet.children()],
        "total": sum(p.numel() for p in model.parameters()),
        "shapes": layer_shapes(model.resnet, torch.randn(*RESNET_X)),
    }


@pytest.fixture(scope="module")
def resnet(submission):
    return submission.run(resnet_facts)


@pytest.mark.points(3)
@pytest.mark.task("ResNet34", "ResidualUnit")
def test_resnet34_stage_layout(resnet):
    """ResNet34: 3-4-6-3 residual units with 64, 128, 256 and 512 channels"""
    units = [tuple(u) for u in resnet["units"]]
    for channels, count in STAGES:
        got = sum(1 for _, c_out, _ in units if c_out == channels)
        assert got == count, f"the stage with {channels} channels has {got} residual units, expected {count}"
    assert len(units) == len(UNITS), f"ResNet34 has {len(units)} residual units, expected {len(UNITS)}"
    for index, (got, expected) in enumerate(zip(units, UNITS, strict=True)):
        assert got == expected, (
            f"residual unit {index + 1} is ResidualUnit{got}, expected ResidualUnit{expected} "
            "(in_channels, out_channels, stride): stride 2 where the channels change"
        )


@pytest.mark.points(3)
@pytest.mark.task("ResNet34", "ResidualUnit")
def test_resnet34_output_shapes(resnet):
    """ResNet34: [2, 3, 224, 224] -> [2, 10], and each layer's output shape"""
    layers = resnet["shapes"]
    for index, layer in enumerate(layers):
        assert layer["shape"] is not None, (
            f"layer {index} ({layer['layer']}) fails on its input {layer['input']}: {layer['error']}"
        )
    output = layers[-1]["shape"]
    assert output == [2, 10], f"ResNet34 maps {list(RESNET_X)} to {output}, expected [2, 10]"
    assert len(layers) == len(RESNET_SHAPES), f"ResNet34.resnet has {len(layers)} layers, expected {len(RESNET_SHAPES)}"
    for index, (got, shape) in enumerate(zip(layers, RESNET_SHAPES, strict=True)):
        assert got["shape"] == shape, f"layer {index} ({got['layer']}) outputs {got['shape']}, expected {shape}"


@pytest.mark.points(2)
@pytest.mark.task("ResNet34", "ResidualUnit")
def test_resnet34_parameter_count(resnet):
    """ResNet34: 21,289,802 parameters, as torchvision's resnet34 with a 10-class head"""
    total = resnet["total"]
    assert total == RESNET34_TOTAL, f"ResNet34 has {total:,} parameters, expected {RESNET34_TOTAL:,}"
    # conv, BN, ReLU, max pooling; the 16 units; average pooling, Flatten, Linear
    expected = [conv_count(7, 3, 64), 2 * 64, 0, 0, *(unit_count(*u) for u in UNITS), 0, 0, HEAD]
    for index, (got, count) in enumerate(zip(resnet["counts"], expected, strict=False)):
        assert got == count, f"layer {index} of ResNet34.resnet has {got:,} parameters, expected {count:,}"


FIT_IMAGES, FIT_STEPS = 64, 6  # a deep model on a CPU: a few full-batch steps on a few images
FIT_MIN_ACCURACY = 0.75  # calibrated: see calibration.md


def balanced(labels, count):
    """The indices of `count` images, taking the first image of each class in turn (a split may be sorted)."""
    per_class = [(labels == c).nonzero().flatten()[: math.ceil(count / 10)] for c in range(10)]
    return torch.stack(per_class, 1).flatten()[:count]


def resnet_fit(sub, images, labels, steps):
    """Probe: full-batch AdamW steps of ResNet34 on a few grey images, in training mode.

    Returns each step's loss, the parameters left without a gradient, and the predictions for the
    images after the last step (still in training mode: a few steps cannot settle BatchNorm's
    running statistics, so evaluation mode would say little about fitting).
    """
    device = torch.device(sub.device)
    model = sub.resnet.ResNet34().to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = images.float().div(255).expand(-1, 3, -1, -1).to(device)  # grey 1x28x28 -> 3x28x28
    labels = labels.to(device)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    names = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    with torch.no_grad():
        predictions = model(x).argmax(1).cpu()
    return {"losses": losses, "no_gradient": names, "predictions": predictions}


@pytest.mark.points(3)
@pytest.mark.accuracy  # a training run: the profile's time limit; known-wrong variants skip it
@pytest.mark.task("ResNet34", "ResidualUnit")
def test_resnet34_fits_a_few_images(submission, dataset, record_property):
    """ResNet34: gradients reach every layer; a few steps lower the loss and fit 64 images"""
    index = balanced(dataset.train.y, FIT_IMAGES)
    labels = dataset.train.y[index]
    found = submission.run(resnet_fit, dataset.train.x[index], labels, FIT_STEPS)
    missing = found["no_gradient"]
    assert not missing, f"{len(missing)} parameters got no gradient, the first {missing[0]}"
    losses = found["losses"]
    assert losses[-1] < losses[0], (
        f"{FIT_STEPS} AdamW steps on {FIT_IMAGES} images took the loss from {losses[0]:.3f} to {losses[-1]:.3f}"
    )
    accuracy = accuracy_of(found["predictions"], labels)
    record_property("accuracy", round(accuracy, 4))
    record_property("min_accuracy", FIT_MIN_ACCURACY)
    assert accuracy >= FIT_MIN_ACCURACY, (
        f"after {FIT_STEPS} AdamW steps ResNet34 classifies {accuracy:.0%} of the {FIT_IMAGES} images it trained on, "
        f"expected at least {FIT_MIN_ACCURACY:.0%}"
    )
