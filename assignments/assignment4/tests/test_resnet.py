"""resnet.py: SeparableConv2d, ResidualUnit and ResNet34.

Expected values are computed here from the layer formulas: a k x k convolution from c_in to c_out
channels has k*k*c_in*c_out weights (+ c_out biases), a BatchNorm layer 2*c (scale and shift).

Every input is drawn for this grading. SeparableConv2d, ResidualUnit and ResNet34 are filled by
the probe with weights and BatchNorm statistics drawn from a seed of this grading
(`grader.probing.fill`; `probes.fill_unit` and `probes.fill_resnet` give a unit's main path and
skip seeds of their own, so the order they are declared in does not matter); the grader fills its
own copy of the statement's architecture (architectures.py) alike, and the outputs (and, for
ResNet34, the gradients) must match: shapes and counts come back, no weight does. Only the fitting
check brings the trained weights back, for the grader to classify the images itself.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from grader.probing import fill, to_float
from grader.testing import accuracy_of, architectures_for, derived_seed, generator, load_in_order, probes_for

probes = probes_for(__file__)
architectures = architectures_for(__file__)


def off_by(got, expected):
    """How far a returned tensor is from the grader's, relative to the grader's scale (inf: another shape)."""
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        return float("inf")
    difference = (got.double() - expected.double()).abs().nan_to_num(nan=float("inf")).max().item()
    return difference / (1.0 + expected.abs().max().item())


# --- SeparableConv2d ----------------------------------------------------------------------------

SEP_IN, SEP_OUT, SEP_K, SEP_STRIDE, SEP_PADDING = 8, 16, 3, 2, 1
DEPTHWISE = SEP_IN * SEP_K * SEP_K + SEP_IN  # one k x k filter (and bias) per input channel
POINTWISE = SEP_IN * SEP_OUT + SEP_OUT  # a 1x1 convolution across the channels
REGULAR = SEP_OUT * SEP_IN * SEP_K * SEP_K + SEP_OUT
SEP_X = torch.randn(2, SEP_IN, 9, 9, generator=generator("SeparableConv2d input"))
SEP_SEED = derived_seed("SeparableConv2d weights")


@pytest.fixture(scope="module")
def separable_found(submission):
    return submission.run(probes.separable, SEP_SEED, SEP_X, SEP_IN, SEP_OUT, SEP_K, SEP_STRIDE, SEP_PADDING)


def separable_reproduced(found):
    """The output must be the point-wise convolution of the depth-wise one, with the same weights."""
    depthwise, pointwise = found["parts"]["depthwise_conv"], found["parts"]["pointwise_conv"]
    y = found["y"]
    assert depthwise["weight"] == [SEP_IN, 1, SEP_K, SEP_K], (
        f"the depth-wise weight is {depthwise['weight']}, expected {[SEP_IN, 1, SEP_K, SEP_K]}"
    )
    assert pointwise["weight"] == [SEP_OUT, SEP_IN, 1, 1], (
        f"the point-wise weight is {pointwise['weight']}, expected {[SEP_OUT, SEP_IN, 1, 1]}"
    )
    for name, part, channels in (("depth-wise", depthwise, SEP_IN), ("point-wise", pointwise, SEP_OUT)):
        assert part["bias"] == [channels], f"the {name} conv has no bias of {channels} values"
    mine = architectures.SeparableConv2d(SEP_IN, SEP_OUT, SEP_K, SEP_STRIDE, SEP_PADDING)
    fill(mine, SEP_SEED)  # the weights the probe gave the student's layer
    with torch.no_grad():
        expected = mine(SEP_X)
    assert isinstance(y, torch.Tensor) and list(y.shape) == list(expected.shape), (
        f"SeparableConv2d(8, 16, 3, stride=2, padding=1) maps {list(SEP_X.shape)} to "
        f"{list(y.shape) if isinstance(y, torch.Tensor) else y}, expected {list(expected.shape)}: "
        "pass stride and padding to the depth-wise conv"
    )
    difference = off_by(y, expected)
    assert difference < 1e-4, f"the output differs from point-wise(depth-wise(x)) by up to {difference:.3g}"


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
    separable_reproduced(separable_found)


@pytest.mark.points(2)
@pytest.mark.task("SeparableConv2d")
def test_separable_output(separable_found):
    """SeparableConv2d: the depth-wise then the point-wise convolution"""
    separable_reproduced(separable_found)


# --- ResidualUnit -------------------------------------------------------------------------------


UNIT_X = torch.randn(2, 8, 10, 10, generator=generator("ResidualUnit input"))  # 8 channels
UNIT_SEED = derived_seed("ResidualUnit weights")


def expected_unit(in_channels, out_channels, stride):
    """The grader's unit, filled as the probe fills the student's, on UNIT_X in evaluation mode:
    main_layers' outputs, F(x), skip(x) and the output."""
    unit = architectures.ResidualUnit(in_channels, out_channels, stride)
    probes.fill_unit(unit, UNIT_SEED)
    unit.eval()
    with torch.no_grad():
        outputs, x = [], UNIT_X
        for layer in unit.main_layers:
            x = layer(x)
            outputs.append(x)
        return {"main_layers": outputs, "fx": x, "skip_x": unit.skip_connection(UNIT_X), "y": unit(UNIT_X)}


@pytest.fixture(scope="module")
def unit_found(submission):
    """The probe's findings for ResidualUnit(in, out, stride), each configuration run once."""
    cache = {}

    def found(in_channels, out_channels, stride):
        key = (in_channels, out_channels, stride)
        if key not in cache:
            cache[key] = submission.run(probes.residual_unit, *key, UNIT_SEED, UNIT_X)
        return cache[key]

    return found


def unit_name(in_channels, out_channels, stride):
    return f"ResidualUnit({in_channels}, {out_channels}, stride={stride})"


def close(a, b):
    return isinstance(a, torch.Tensor) and a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def output_reproduced(found, name, expected):
    y = found["y"]
    assert isinstance(y, torch.Tensor), f"{name} fails on an input of shape {list(UNIT_X.shape)}: {y}"
    assert close(y, expected["y"]), (
        f"{name}: with the same weights and statistics, the output is not ResNet's ReLU(F(x) + skip(x)) "
        f"(off by {off_by(y, expected['y']):.3g})"
    )


@pytest.mark.points(2)
@pytest.mark.task("ResidualUnit")
def test_residual_main_path(unit_found):
    """ResidualUnit: F = Conv 3x3 (stride) -> BN -> ReLU -> Conv 3x3 -> BN"""
    found = unit_found(8, 16, 2)
    expected = [
        ("Conv2d", [2, 16, 5, 5]),
        ("BatchNorm2d", [2, 16, 5, 5]),
        ("ReLU", [2, 16, 5, 5]),
        ("Conv2d", [2, 16, 5, 5]),
        ("BatchNorm2d", [2, 16, 5, 5]),
    ]
    name = unit_name(8, 16, 2)
    layers = found["main_layers"]
    for index, ((kind, shape), got) in enumerate(zip(expected, layers, strict=False)):
        assert got["layer"] == kind, f"{name}: main_layers[{index}] is {got['layer']}, expected {kind}"
        assert got["output"] is not None, (
            f"{name}: main_layers[{index}] fails on {got.get('input')}: {got.get('error')}"
        )
        got_shape = list(got["output"].shape)
        assert got_shape == shape, f"{name}: main_layers[{index}] ({kind}) outputs {got_shape}, expected {shape}"
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
    mine = expected_unit(8, 16, 2)
    for index, (got, output) in enumerate(zip(layers, mine["main_layers"], strict=True)):
        assert close(got["output"], output), (
            f"{name}: main_layers[{index}] ({got['layer']}) does not compute what ResNet's does with the same "
            f"weights and statistics (evaluation mode)"
        )
    assert close(found["fx"], mine["fx"]), f"{name}: main_layers(x) is not F(x)"


@pytest.mark.points(2)
@pytest.mark.task("ResidualUnit")
def test_residual_identity_skip(unit_found):
    """ResidualUnit: the skip is the identity when the shapes match"""
    found = unit_found(8, 8, 1)
    name = unit_name(8, 8, 1)
    skip = found["skip"]
    assert skip["parameters"] == 0, (
        f"{name}: the skip has {skip['parameters']:,} parameters, expected none (nn.Identity(): x has F(x)'s shape)"
    )
    assert isinstance(found["skip_x"], torch.Tensor), f"{name}: the skip fails: {found['skip_x']}"
    assert torch.equal(found["skip_x"], UNIT_X), f"{name}: skip(x) is not x (expected nn.Identity())"
    output_reproduced(found, name, expected_unit(8, 8, 1))


PROJECTED = [(8, 16, 2), (8, 8, 2), (8, 16, 1)]  # (in, out, stride): the stride, the channels or both change


@pytest.mark.points(3)
@pytest.mark.parametrize(("in_channels", "out_channels", "stride"), PROJECTED)
@pytest.mark.task("ResidualUnit")
def test_residual_projection_skip(unit_found, in_channels, out_channels, stride):
    """ResidualUnit: a 1x1 conv + BN skip when the shapes change"""
    found = unit_found(in_channels, out_channels, stride)
    name = unit_name(in_channels, out_channels, stride)
    mine = expected_unit(in_channels, out_channels, stride)
    children = found["skip"]["children"]
    kinds = [c["type"] for c in children] or [found["skip"]["type"]]
    fx = found["fx"]
    assert kinds == ["Conv2d", "BatchNorm2d"], (
        f"{name}: the skip is {' -> '.join(kinds)}, expected Conv2d 1x1 (stride {stride}) -> BatchNorm2d: "
        f"x {list(UNIT_X.shape)} and F(x) {list(fx.shape) if isinstance(fx, torch.Tensor) else '?'} differ in shape"
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
    assert isinstance(found["y"], torch.Tensor), f"{name} fails on an input of shape {list(UNIT_X.shape)}: {found['y']}"
    assert close(found["skip_x"], mine["skip_x"]), (
        f"{name}: skip(x) is not the 1x1 convolution (stride {stride}) then BatchNorm of x, with the same weights "
        f"and statistics"
    )
    output_reproduced(found, name, mine)


@pytest.mark.points(3)
@pytest.mark.parametrize(("in_channels", "out_channels", "stride"), [(8, 8, 1), (8, 16, 2)])
@pytest.mark.task("ResidualUnit")
def test_residual_adds_then_relu(unit_found, in_channels, out_channels, stride):
    """ResidualUnit: ReLU(F(x) + skip(x))"""
    found = unit_found(in_channels, out_channels, stride)
    name = unit_name(in_channels, out_channels, stride)
    y, skip_x = found["y"], found["skip_x"]
    assert isinstance(y, torch.Tensor), f"{name} fails on an input of shape {list(UNIT_X.shape)}: {y}"
    assert isinstance(skip_x, torch.Tensor), f"{name}: the skip fails: {skip_x}"
    mine = expected_unit(in_channels, out_channels, stride)
    fx, skip = mine["fx"], mine["skip_x"]  # the grader's own F(x) and skip(x)
    if not close(y, mine["y"]):
        wrong = {
            "the ReLU comes before the addition: ReLU(F(x)) + skip(x), expected ReLU(F(x) + skip(x))": (
                F.relu(fx) + skip
            ),
            "there is no ReLU after the addition: expected ReLU(F(x) + skip(x))": fx + skip,
            "the skip is never added: ReLU(F(x)), expected ReLU(F(x) + skip(x))": F.relu(fx),
        }
        mistake = next((text for text, value in wrong.items() if close(y, value)), None)
        if mistake is None and y.shape != fx.shape:
            mistake = f"it outputs {list(y.shape)}, expected {list(fx.shape)}"
        pytest.fail(f"{name}: {mistake or 'the output is not ReLU(F(x) + skip(x))'}")


# --- ResNet34 ---------------------------------------------------------------------------------

STAGES = architectures.STAGES  # (channels, residual units)


def conv_count(k, c_in, c_out):
    return k * k * c_in * c_out  # no bias: a BatchNorm follows every convolution


def unit_count(c_in, c_out, stride):
    count = conv_count(3, c_in, c_out) + 2 * c_out + conv_count(3, c_out, c_out) + 2 * c_out
    if stride > 1 or c_in != c_out:
        count += conv_count(1, c_in, c_out) + 2 * c_out
    return count


UNITS = architectures.resnet34_units()  # (in_channels, out_channels, stride) of each unit, in order
STEM = conv_count(7, 3, 64) + 2 * 64
HEAD = 512 * 10 + 10
RESNET34_TOTAL = STEM + sum(unit_count(*unit) for unit in UNITS) + HEAD
# The same count as torchvision.models.resnet34(num_classes=10), the same architecture.
assert RESNET34_TOTAL == 21_289_802

RESNET_X = torch.randn(2, 3, 224, 224, generator=generator("ResNet34 input"))
RESNET_SEED = derived_seed("ResNet34 weights")
DIRECTION = torch.randn(2, 10, generator=generator("ResNet34 gradient"))  # the gradient of sum(logits * DIRECTION)
RESNET_SHAPES = (
    [[2, 64, 112, 112]] * 3
    + [[2, 64, 56, 56]] * 4
    + [[2, 128, 28, 28]] * 4
    + [[2, 256, 14, 14]] * 6
    + [[2, 512, 7, 7]] * 3
    + [[2, 512, 1, 1], [2, 512], [2, 10]]
)  # the output of each layer of `resnet`: stem (4 layers), 16 units, pooling, Flatten, Linear


@pytest.fixture(scope="module")
def resnet(submission):
    return submission.run(probes.resnet_facts, RESNET_SEED, RESNET_X, DIRECTION)


@pytest.fixture(scope="module")
def expected_resnet():
    """What the probe's findings must be: the grader's ResNet-34, filled alike, on the same input."""
    model = architectures.ResNet34()
    probes.fill_resnet(model, [m for m in model.modules() if isinstance(m, architectures.ResidualUnit)], RESNET_SEED)
    model.eval()
    summaries, x = [], RESNET_X
    with torch.no_grad():
        for layer in model.resnet:
            x = layer(x)
            summaries.append(probes.summary(x))
    logits = model(RESNET_X)
    (logits * DIRECTION).sum().backward()
    gradients = [(name, p.grad.double().norm().item()) for name, p in model.named_parameters()]
    return {"summaries": summaries, "logits": logits.detach(), "gradients": gradients}


def resnet_reproduced(found, expected):
    """Filled alike, the student's ResNet34 must compute what the grader's computes, layer by layer."""
    layers = found["layers"]
    assert len(layers) == len(expected["summaries"]), (
        f"ResNet34.resnet has {len(layers)} layers, expected {len(expected['summaries'])}"
    )
    for index, (got, summary) in enumerate(zip(layers, expected["summaries"], strict=True)):
        off = off_by(got.get("summary"), summary)
        assert off < 1e-4, (
            f"layer {index} ({got['layer']}) of ResNet34.resnet does not compute what ResNet-34's does with the same "
            f"weights and statistics (evaluation mode; off by {off:.3g})"
        )
    off = off_by(found["logits"], expected["logits"])
    assert off < 1e-4, f"ResNet34's logits differ from ResNet-34's with the same weights (off by {off:.3g})"


@pytest.mark.points(3)
@pytest.mark.task("ResNet34", "ResidualUnit")
def test_resnet34_stage_layout(resnet, expected_resnet):
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
    resnet_reproduced(resnet, expected_resnet)


@pytest.mark.points(3)
@pytest.mark.task("ResNet34", "ResidualUnit")
def test_resnet34_output_shapes(resnet, expected_resnet):
    """ResNet34: [2, 3, 224, 224] -> [2, 10], and each layer's output shape"""
    layers = resnet["layers"]
    for index, layer in enumerate(layers):
        assert layer["shape"] is not None, (
            f"layer {index} ({layer['layer']}) fails on its input {RESNET_SHAPES[index - 1] if index else '?'}: "
            f"{layer['error']}"
        )
    output = layers[-1]["shape"]
    assert output == [2, 10], f"ResNet34 maps {list(RESNET_X.shape)} to {output}, expected [2, 10]"
    assert len(layers) == len(RESNET_SHAPES), f"ResNet34.resnet has {len(layers)} layers, expected {len(RESNET_SHAPES)}"
    for index, (got, shape) in enumerate(zip(layers, RESNET_SHAPES, strict=True)):
        assert got["shape"] == shape, f"layer {index} ({got['layer']}) outputs {got['shape']}, expected {shape}"
    resnet_reproduced(resnet, expected_resnet)


@pytest.mark.points(2)
@pytest.mark.task("ResNet34", "ResidualUnit")
def test_resnet34_parameter_count(resnet, expected_resnet):
    """ResNet34: 21,289,802 parameters, as torchvision's resnet34 with a 10-class head"""
    counts = [sum(torch.Size(shape).numel() for shape in layer) for layer in resnet["shapes"]]
    total = sum(counts)
    assert total == RESNET34_TOTAL, f"ResNet34 has {total:,} parameters, expected {RESNET34_TOTAL:,}"
    # conv, BN, ReLU, max pooling; the 16 units; average pooling, Flatten, Linear
    expected = [conv_count(7, 3, 64), 2 * 64, 0, 0, *(unit_count(*u) for u in UNITS), 0, 0, HEAD]
    for index, (got, count) in enumerate(zip(counts, expected, strict=False)):
        assert got == count, f"layer {index} of ResNet34.resnet has {got:,} parameters, expected {count:,}"
    resnet_reproduced(resnet, expected_resnet)


def gradients_reproduced(found, expected):
    """Every parameter's gradient (its norm) must be the grader's: no path of ResNet-34 cut off."""
    gradients = found["gradients"]
    missing = [name for name, norm in gradients if not norm]
    assert not missing, f"{len(missing)} parameters got no gradient, the first {missing[0]}"
    assert len(gradients) == len(expected["gradients"]), (
        f"ResNet34 has {len(gradients)} parameter tensors, expected {len(expected['gradients'])}"
    )
    pairs = list(zip(gradients, expected["gradients"], strict=True))
    if {name for name, _ in gradients} == {name for name, _ in expected["gradients"]}:  # by name: any order
        norms = dict(gradients)
        pairs = [((name, norms[name]), (name, want)) for name, want in expected["gradients"]]
    for (name, norm), (_, want) in pairs:
        assert math.isclose(norm, want, rel_tol=1e-3, abs_tol=1e-9), (
            f"the gradient of {name} differs from ResNet-34's with the same weights (norm {norm:.4g}, expected "
            f"{want:.4g}): is a path detached?"
        )


FIT_IMAGES, FIT_STEPS = 64, 6  # a deep model on a CPU: a few full-batch steps on a few images
FIT_MIN_ACCURACY = 0.75  # calibrated: see calibration.md


def balanced(labels, count):
    """The indices of `count` images drawn for this grading, taking each class in turn."""
    rng = generator("ResNet34 fit images")
    per_class = []
    for c in range(10):
        index = (labels == c).nonzero().flatten()
        per_class.append(index[torch.randperm(len(index), generator=rng)[: math.ceil(count / 10)]])
    return torch.stack(per_class, 1).flatten()[:count]


@pytest.mark.points(3)
@pytest.mark.accuracy  # a training run: the profile's time limit; known-wrong variants skip it
@pytest.mark.task("ResNet34", "ResidualUnit")
def test_resnet34_fits_a_few_images(submission, dataset, resnet, expected_resnet, record_property):
    """ResNet34: gradients reach every layer; a few steps lower the loss and fit 64 images"""
    gradients_reproduced(resnet, expected_resnet)
    index = balanced(dataset.train.y, FIT_IMAGES)
    images, labels = dataset.train.x[index], dataset.train.y[index]
    found = submission.run(probes.resnet_fit, images, labels, FIT_STEPS)
    missing = found["no_gradient"]
    assert not missing, f"{len(missing)} parameters got no gradient, the first {missing[0]}"
    losses = found["losses"]
    assert losses[-1] < losses[0], (
        f"{FIT_STEPS} AdamW steps on {FIT_IMAGES} images took the loss from {losses[0]:.3f} to {losses[-1]:.3f}"
    )
    model = architectures.ResNet34()  # the grader's own: it classifies the images with the trained weights itself
    problem = load_in_order(model, found["state"])
    assert not problem, f"ResNet34: {problem}"
    model.train()  # a few steps cannot settle BatchNorm's running statistics: the batch's are used
    with torch.no_grad():
        predictions = model(to_float(images).expand(-1, 3, -1, -1)).argmax(1)
    accuracy = accuracy_of(predictions, labels)
    record_property("accuracy", round(accuracy, 4))
    record_property("min_accuracy", FIT_MIN_ACCURACY)
    assert accuracy >= FIT_MIN_ACCURACY, (
        f"after {FIT_STEPS} AdamW steps ResNet34 classifies {accuracy:.0%} of the {FIT_IMAGES} images it trained on, "
        f"expected at least {FIT_MIN_ACCURACY:.0%}"
    )
