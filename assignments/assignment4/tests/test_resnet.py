"""resnet.py: SeparableConv2d, ResidualUnit and ResNet34.

Expected values are computed here from the layer formulas: a k x k convolution from c_in to c_out
channels has k*k*c_in*c_out weights (+ c_out biases), a BatchNorm layer 2*c (scale and shift).

Every input is drawn for this grading. SeparableConv2d, ResidualUnit and ResNet34 are filled by
the probe with weights and BatchNorm statistics drawn from a seed of this grading
(`grader.probing.fill`; `probes.fill_unit` and `probes.fill_resnet` give a unit's main path and
skip seeds of their own, so the order they are declared in does not matter); the grader fills its
own copy of the statement's architecture (official/answers.py) alike, and the outputs (and, for
ResNet34, the gradients) must match: shapes and counts come back, no weight does. Only the fitting
check brings the trained weights back, for the grader to classify the images itself. The grader's
copies are answers: a student's bundle checks the statement's shapes, counts and layout only.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from grader.i18n import _, number
from grader.probing import fill, to_float
from grader.testing import (
    accuracy_of,
    derived_seed,
    generator,
    load_in_order,
    official_for,
    official_only,
    probes_for,
)

probes = probes_for(__file__)
official = official_for(__file__)  # the grader's own layers and ResNet-34; None in a student's bundle
# What only the official grading adds, with the grader's own copies (the bundle's README lists it)
SEPARABLE_REPRODUCED = "with the same weights, the output is the course's own SeparableConv2d's"
UNIT_REPRODUCED = "with the same weights and statistics, the outputs are the course's own ResidualUnit's"
RESNET_REPRODUCED = "with the same weights and statistics, each layer computes what the course's own ResNet-34 does"
RESNET_FITS = "the gradients are the course's own ResNet-34's, and its copy fits the images with the trained weights"


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
    assert depthwise["weight"] == [SEP_IN, 1, SEP_K, SEP_K], _(
        "the depth-wise weight is {weight}, expected {value}"
    ).format(weight=depthwise["weight"], value=[SEP_IN, 1, SEP_K, SEP_K])
    assert pointwise["weight"] == [SEP_OUT, SEP_IN, 1, 1], _(
        "the point-wise weight is {weight}, expected {value}"
    ).format(weight=pointwise["weight"], value=[SEP_OUT, SEP_IN, 1, 1])
    for name, part, channels in (("depth-wise", depthwise, SEP_IN), ("point-wise", pointwise, SEP_OUT)):
        assert part["bias"] == [channels], _("the {name} conv has no bias of {channels} values").format(
            name=name, channels=channels
        )
    side = (SEP_X.shape[-1] + 2 * SEP_PADDING - SEP_K) // SEP_STRIDE + 1  # the statement's output-size formula
    expected_shape = [len(SEP_X), SEP_OUT, side, side]
    assert isinstance(y, torch.Tensor) and list(y.shape) == expected_shape, _(
        "SeparableConv2d(8, 16, 3, stride=2, padding=1) maps {shape} to {value}, expected "
        "{expected_shape}: pass stride and padding to the depth-wise conv"
    ).format(
        shape=list(SEP_X.shape),
        value=list(y.shape) if isinstance(y, torch.Tensor) else y,
        expected_shape=expected_shape,
    )
    if official is None:  # a student's bundle: the official grading recomputes the output
        return
    mine = official.SeparableConv2d(SEP_IN, SEP_OUT, SEP_K, SEP_STRIDE, SEP_PADDING)
    fill(mine, SEP_SEED)  # the weights the probe gave the student's layer
    with torch.no_grad():
        expected = mine(SEP_X)
    difference = off_by(y, expected)
    assert difference < 1e-4, _("the output differs from point-wise(depth-wise(x)) by up to {difference:.3g}").format(
        difference=difference
    )


@pytest.mark.points(2)
@pytest.mark.task("SeparableConv2d")
@pytest.mark.official(SEPARABLE_REPRODUCED)
def test_separable_parameters(separable_found):
    """SeparableConv2d: parameters = depth-wise + point-wise"""
    parts = separable_found["parts"]
    depthwise, pointwise = parts["depthwise_conv"]["parameters"], parts["pointwise_conv"]["parameters"]
    assert depthwise == DEPTHWISE, _(
        "the depth-wise conv of SeparableConv2d({sep_in}, {sep_out}, {sep_k}) has {depthwise} "
        "parameters, expected {expected_depthwise} = {sep_in}x1x{sep_k}x{sep_k} + {sep_in}: one "
        "filter per input channel (groups=in_channels)"
    ).format(sep_in=SEP_IN, sep_out=SEP_OUT, sep_k=SEP_K, depthwise=number(depthwise), expected_depthwise=DEPTHWISE)
    assert pointwise == POINTWISE, _(
        "the point-wise conv has {pointwise} parameters, expected {expected_pointwise} = "
        "{sep_out}x{sep_in}x1x1 + {sep_out}"
    ).format(pointwise=number(pointwise), expected_pointwise=POINTWISE, sep_out=SEP_OUT, sep_in=SEP_IN)
    total = separable_found["parameters"]
    assert total == DEPTHWISE + POINTWISE, _(
        "SeparableConv2d has {total} parameters, expected {depthwise} (a regular conv has {regular})"
    ).format(total=number(total), depthwise=DEPTHWISE + POINTWISE, regular=number(REGULAR))
    separable_reproduced(separable_found)


@pytest.mark.points(2)
@pytest.mark.task("SeparableConv2d")
@pytest.mark.official(SEPARABLE_REPRODUCED)
def test_separable_output(separable_found):
    """SeparableConv2d: the depth-wise then the point-wise convolution"""
    separable_reproduced(separable_found)


# --- ResidualUnit -------------------------------------------------------------------------------


UNIT_X = torch.randn(2, 8, 10, 10, generator=generator("ResidualUnit input"))  # 8 channels
UNIT_SEED = derived_seed("ResidualUnit weights")


def expected_unit(in_channels, out_channels, stride):
    """The grader's unit, filled as the probe fills the student's, on UNIT_X in evaluation mode:
    main_layers' outputs, F(x), skip(x) and the output. None in a student's bundle."""
    if official is None:
        return None
    unit = official.ResidualUnit(in_channels, out_channels, stride)
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
    assert isinstance(y, torch.Tensor), _("{name} fails on an input of shape {shape}: {y}").format(
        name=name, shape=list(UNIT_X.shape), y=y
    )
    if expected is None:  # a student's bundle: the official grading recomputes the output
        return
    assert close(y, expected["y"]), _(
        "{name}: with the same weights and statistics, the output is not ResNet's ReLU(F(x) + "
        "skip(x)) (off by {off_by:.3g})"
    ).format(name=name, off_by=off_by(y, expected["y"]))


@pytest.mark.points(2)
@pytest.mark.task("ResidualUnit")
@pytest.mark.official(UNIT_REPRODUCED)
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
        assert got["layer"] == kind, _("{name}: main_layers[{index}] is {layer}, expected {kind}").format(
            name=name, index=index, layer=got["layer"], kind=kind
        )
        assert got["output"] is not None, _("{name}: main_layers[{index}] fails on {input}: {error}").format(
            name=name, index=index, input=got.get("input"), error=got.get("error")
        )
        got_shape = list(got["output"].shape)
        assert got_shape == shape, _(
            "{name}: main_layers[{index}] ({kind}) outputs {got_shape}, expected {shape}"
        ).format(name=name, index=index, kind=kind, got_shape=got_shape, shape=shape)
    assert len(layers) == len(expected), _("{name}: main_layers has {n_layers} layers, expected {n_expected}").format(
        name=name, n_layers=len(layers), n_expected=len(expected)
    )
    for index in (0, 3):
        conv = found["main"]["children"][index]
        assert conv["kernel"] == [3, 3], _("{name}: main_layers[{index}] has a {kernel} kernel, expected 3x3").format(
            name=name, index=index, kernel=conv["kernel"]
        )
        assert not conv["bias"], _(
            "{name}: main_layers[{index}] has a bias: the BatchNorm after it makes it useless"
        ).format(name=name, index=index)
    parameters = found["main"]["parameters"]
    expected_parameters = 3 * 3 * 8 * 16 + 2 * 16 + 3 * 3 * 16 * 16 + 2 * 16
    assert parameters == expected_parameters, _(
        "{name}: main_layers has {parameters} parameters, expected {expected_parameters}"
    ).format(name=name, parameters=number(parameters), expected_parameters=number(expected_parameters))
    mine = expected_unit(8, 16, 2)
    if mine is None:  # a student's bundle: the official grading recomputes the outputs
        return
    for index, (got, output) in enumerate(zip(layers, mine["main_layers"], strict=True)):
        assert close(got["output"], output), _(
            "{name}: main_layers[{index}] ({layer}) does not compute what ResNet's does with the same "
            "weights and statistics (evaluation mode)"
        ).format(name=name, index=index, layer=got["layer"])
    assert close(found["fx"], mine["fx"]), _("{name}: main_layers(x) is not F(x)").format(name=name)


@pytest.mark.points(2)
@pytest.mark.task("ResidualUnit")
@pytest.mark.official(UNIT_REPRODUCED)
def test_residual_identity_skip(unit_found):
    """ResidualUnit: the skip is the identity when the shapes match"""
    found = unit_found(8, 8, 1)
    name = unit_name(8, 8, 1)
    skip = found["skip"]
    assert skip["parameters"] == 0, _(
        "{name}: the skip has {parameters} parameters, expected none (nn.Identity(): x has F(x)'s shape)"
    ).format(name=name, parameters=number(skip["parameters"]))
    assert isinstance(found["skip_x"], torch.Tensor), _("{name}: the skip fails: {skip_x}").format(
        name=name, skip_x=found["skip_x"]
    )
    assert torch.equal(found["skip_x"], UNIT_X), _("{name}: skip(x) is not x (expected nn.Identity())").format(
        name=name
    )
    output_reproduced(found, name, expected_unit(8, 8, 1))


PROJECTED = [(8, 16, 2), (8, 8, 2), (8, 16, 1)]  # (in, out, stride): the stride, the channels or both change


@pytest.mark.points(3)
@pytest.mark.parametrize(("in_channels", "out_channels", "stride"), PROJECTED)
@pytest.mark.task("ResidualUnit")
@pytest.mark.official(UNIT_REPRODUCED)
def test_residual_projection_skip(unit_found, in_channels, out_channels, stride):
    """ResidualUnit: a 1x1 conv + BN skip when the shapes change"""
    found = unit_found(in_channels, out_channels, stride)
    name = unit_name(in_channels, out_channels, stride)
    children = found["skip"]["children"]
    kinds = [c["type"] for c in children] or [found["skip"]["type"]]
    fx = found["fx"]
    assert kinds == ["Conv2d", "BatchNorm2d"], _(
        "{name}: the skip is {join}, expected Conv2d 1x1 (stride {stride}) -> BatchNorm2d: x "
        "{shape} and F(x) {value} differ in shape"
    ).format(
        name=name,
        join=" -> ".join(kinds),
        stride=stride,
        shape=list(UNIT_X.shape),
        value=list(fx.shape) if isinstance(fx, torch.Tensor) else "?",
    )
    conv, norm = children
    assert conv["kernel"] == [1, 1], _("{name}: the skip's conv has a {kernel} kernel, expected 1x1").format(
        name=name, kernel=conv["kernel"]
    )
    assert conv["stride"] == [stride, stride], _(
        "{name}: the skip's conv has stride {stride}, expected {expected_stride}"
    ).format(name=name, stride=conv["stride"], expected_stride=stride)
    assert conv["channels"] == [in_channels, out_channels], _(
        "{name}: the skip's conv maps {channels0} to {channels1} channels, expected {in_channels} to {out_channels}"
    ).format(
        name=name,
        channels0=conv["channels"][0],
        channels1=conv["channels"][1],
        in_channels=in_channels,
        out_channels=out_channels,
    )
    assert not conv["bias"], _("{name}: the skip's conv has a bias: the BatchNorm after it makes it useless").format(
        name=name
    )
    assert norm["features"] == out_channels, _("{name}: the skip's BatchNorm2d has {features} features").format(
        name=name, features=norm["features"]
    )
    assert isinstance(found["y"], torch.Tensor), _("{name} fails on an input of shape {shape}: {y}").format(
        name=name, shape=list(UNIT_X.shape), y=found["y"]
    )
    mine = expected_unit(in_channels, out_channels, stride)
    if mine is None:  # a student's bundle: the official grading recomputes skip(x) and the output
        return
    assert close(found["skip_x"], mine["skip_x"]), _(
        "{name}: skip(x) is not the 1x1 convolution (stride {stride}) then BatchNorm of x, with "
        "the same weights and statistics"
    ).format(name=name, stride=stride)
    output_reproduced(found, name, mine)


@pytest.mark.points(3)
@pytest.mark.parametrize(("in_channels", "out_channels", "stride"), [(8, 8, 1), (8, 16, 2)])
@pytest.mark.task("ResidualUnit")
@pytest.mark.official("the output is ReLU(F(x) + skip(x)) of the course's own F and skip")
def test_residual_adds_then_relu(unit_found, in_channels, out_channels, stride):
    """ResidualUnit: ReLU(F(x) + skip(x))"""
    found = unit_found(in_channels, out_channels, stride)
    name = unit_name(in_channels, out_channels, stride)
    y, skip_x = found["y"], found["skip_x"]
    assert isinstance(y, torch.Tensor), _("{name} fails on an input of shape {shape}: {y}").format(
        name=name, shape=list(UNIT_X.shape), y=y
    )
    assert isinstance(skip_x, torch.Tensor), _("{name}: the skip fails: {skip_x}").format(name=name, skip_x=skip_x)
    official_only(official)  # the rest compares with the grader's own F(x) and skip(x)
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
            mistake = _("it outputs {shape}, expected {expected_shape}").format(
                shape=list(y.shape), expected_shape=list(fx.shape)
            )
        pytest.fail(_("{name}: {value}").format(name=name, value=mistake or "the output is not ReLU(F(x) + skip(x))"))


# --- ResNet34 ---------------------------------------------------------------------------------

STAGES = [(64, 3), (128, 4), (256, 6), (512, 3)]  # ResNet-34's stages: (channels, residual units)


def resnet34_units():
    """(in_channels, out_channels, stride) of each of ResNet-34's 16 residual units, in order: stride 2
    where a new stage starts (but the first)."""
    units, previous = [], 64
    for channels, count in STAGES:
        for index in range(count):
            units.append((previous, channels, 2 if index == 0 and channels != 64 else 1))
            previous = channels
    return units


def conv_count(k, c_in, c_out):
    return k * k * c_in * c_out  # no bias: a BatchNorm follows every convolution


def unit_count(c_in, c_out, stride):
    count = conv_count(3, c_in, c_out) + 2 * c_out + conv_count(3, c_out, c_out) + 2 * c_out
    if stride > 1 or c_in != c_out:
        count += conv_count(1, c_in, c_out) + 2 * c_out
    return count


UNITS = resnet34_units()  # (in_channels, out_channels, stride) of each unit, in order
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
    """What the probe's findings must be: the grader's ResNet-34, filled alike, on the same input
    (None in a student's bundle)."""
    if official is None:
        return None
    model = official.ResNet34(UNITS)
    probes.fill_resnet(model, [m for m in model.modules() if isinstance(m, official.ResidualUnit)], RESNET_SEED)
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
    if expected is None:  # a student's bundle: the official grading recomputes
        return
    layers = found["layers"]
    assert len(layers) == len(expected["summaries"]), _(
        "ResNet34.resnet has {n_layers} layers, expected {n_summaries}"
    ).format(n_layers=len(layers), n_summaries=len(expected["summaries"]))
    for index, (got, summary) in enumerate(zip(layers, expected["summaries"], strict=True)):
        off = off_by(got.get("summary"), summary)
        assert off < 1e-4, _(
            "layer {index} ({layer}) of ResNet34.resnet does not compute what ResNet-34's does with "
            "the same weights and statistics (evaluation mode; off by {off:.3g})"
        ).format(index=index, layer=got["layer"], off=off)
    off = off_by(found["logits"], expected["logits"])
    assert off < 1e-4, _("ResNet34's logits differ from ResNet-34's with the same weights (off by {off:.3g})").format(
        off=off
    )


@pytest.mark.points(3)
@pytest.mark.task("ResNet34", "ResidualUnit")
@pytest.mark.official(RESNET_REPRODUCED)
def test_resnet34_stage_layout(resnet, expected_resnet):
    """ResNet34: 3-4-6-3 residual units with 64, 128, 256 and 512 channels"""
    units = [tuple(u) for u in resnet["units"]]
    for channels, count in STAGES:
        got = sum(1 for _, c_out, _ in units if c_out == channels)
        assert got == count, _("the stage with {channels} channels has {got} residual units, expected {count}").format(
            channels=channels, got=got, count=count
        )
    assert len(units) == len(UNITS), _("ResNet34 has {n_units} residual units, expected {expected_n_units}").format(
        n_units=len(units), expected_n_units=len(UNITS)
    )
    for index, (got, expected) in enumerate(zip(units, UNITS, strict=True)):
        assert got == expected, _(
            "residual unit {index} is ResidualUnit{got}, expected ResidualUnit{expected} (in_channels, "
            "out_channels, stride): stride 2 where the channels change"
        ).format(index=index + 1, got=got, expected=expected)
    resnet_reproduced(resnet, expected_resnet)


@pytest.mark.points(3)
@pytest.mark.task("ResNet34", "ResidualUnit")
@pytest.mark.official(RESNET_REPRODUCED)
def test_resnet34_output_shapes(resnet, expected_resnet):
    """ResNet34: [2, 3, 224, 224] -> [2, 10], and each layer's output shape"""
    layers = resnet["layers"]
    for index, layer in enumerate(layers):
        assert layer["shape"] is not None, _("layer {index} ({layer}) fails on its input {value}: {error}").format(
            index=index, layer=layer["layer"], value=RESNET_SHAPES[index - 1] if index else "?", error=layer["error"]
        )
    output = layers[-1]["shape"]
    assert output == [2, 10], _("ResNet34 maps {shape} to {output}, expected [2, 10]").format(
        shape=list(RESNET_X.shape), output=output
    )
    assert len(layers) == len(RESNET_SHAPES), _(
        "ResNet34.resnet has {n_layers} layers, expected {n_resnet_shapes}"
    ).format(n_layers=len(layers), n_resnet_shapes=len(RESNET_SHAPES))
    for index, (got, shape) in enumerate(zip(layers, RESNET_SHAPES, strict=True)):
        assert got["shape"] == shape, _("layer {index} ({layer}) outputs {shape}, expected {expected_shape}").format(
            index=index, layer=got["layer"], shape=got["shape"], expected_shape=shape
        )
    resnet_reproduced(resnet, expected_resnet)


@pytest.mark.points(2)
@pytest.mark.task("ResNet34", "ResidualUnit")
@pytest.mark.official(RESNET_REPRODUCED)
def test_resnet34_parameter_count(resnet, expected_resnet):
    """ResNet34: 21,289,802 parameters, as torchvision's resnet34 with a 10-class head"""
    counts = [sum(torch.Size(shape).numel() for shape in layer) for layer in resnet["shapes"]]
    total = sum(counts)
    assert total == RESNET34_TOTAL, _("ResNet34 has {total} parameters, expected {resnet34_total}").format(
        total=number(total), resnet34_total=number(RESNET34_TOTAL)
    )
    # conv, BN, ReLU, max pooling; the 16 units; average pooling, Flatten, Linear
    expected = [conv_count(7, 3, 64), 2 * 64, 0, 0, *(unit_count(*u) for u in UNITS), 0, 0, HEAD]
    for index, (got, count) in enumerate(zip(counts, expected, strict=False)):
        assert got == count, _("layer {index} of ResNet34.resnet has {got} parameters, expected {count}").format(
            index=index, got=number(got), count=number(count)
        )
    resnet_reproduced(resnet, expected_resnet)


def gradients_reproduced(found, expected):
    """Every parameter's gradient (its norm) must be the grader's: no path of ResNet-34 cut off."""
    gradients = found["gradients"]
    missing = [name for name, norm in gradients if not norm]
    assert not missing, _("{n_missing} parameters got no gradient, the first {missing0}").format(
        n_missing=len(missing), missing0=missing[0]
    )
    assert len(gradients) == len(expected["gradients"]), _(
        "ResNet34 has {n_gradients} parameter tensors, expected {expected_n_gradients}"
    ).format(n_gradients=len(gradients), expected_n_gradients=len(expected["gradients"]))
    pairs = list(zip(gradients, expected["gradients"], strict=True))
    if {name for name, _ in gradients} == {name for name, _ in expected["gradients"]}:  # by name: any order
        norms = dict(gradients)
        pairs = [((name, norms[name]), (name, want)) for name, want in expected["gradients"]]
    for (name, norm), (_unused, want) in pairs:
        assert math.isclose(norm, want, rel_tol=1e-3, abs_tol=1e-9), _(
            "the gradient of {name} differs from ResNet-34's with the same weights (norm {norm:.4g}, "
            "expected {want:.4g}): is a path detached?"
        ).format(name=name, norm=norm, want=want)


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
@pytest.mark.official(RESNET_FITS)
def test_resnet34_fits_a_few_images(submission, dataset, resnet, expected_resnet, record_property):
    """ResNet34: gradients reach every layer; a few steps lower the loss and fit 64 images"""
    model = official_only(official).ResNet34(UNITS)  # the grader's own: it classifies the images itself
    gradients_reproduced(resnet, expected_resnet)
    index = balanced(dataset.train.y, FIT_IMAGES)
    images, labels = dataset.train.x[index], dataset.train.y[index]
    found = submission.run(probes.resnet_fit, images, labels, FIT_STEPS)
    missing = found["no_gradient"]
    assert not missing, _("{n_missing} parameters got no gradient, the first {missing0}").format(
        n_missing=len(missing), missing0=missing[0]
    )
    losses = found["losses"]
    assert losses[-1] < losses[0], _(
        "{fit_steps} AdamW steps on {fit_images} images took the loss from {losses0:.3f} to {losses:.3f}"
    ).format(fit_steps=FIT_STEPS, fit_images=FIT_IMAGES, losses0=losses[0], losses=losses[-1])
    problem = load_in_order(model, found["state"])
    assert not problem, _("ResNet34: {problem}").format(problem=problem)
    model.train()  # a few steps cannot settle BatchNorm's running statistics: the batch's are used
    with torch.no_grad():
        predictions = model(to_float(images).expand(-1, 3, -1, -1)).argmax(1)
    accuracy = accuracy_of(predictions, labels)
    record_property("accuracy", round(accuracy, 4))
    record_property("min_accuracy", FIT_MIN_ACCURACY)
    assert accuracy >= FIT_MIN_ACCURACY, _(
        "after {fit_steps} AdamW steps ResNet34 classifies {accuracy:.0%} of the {fit_images} "
        "images it trained on, expected at least {fit_min_accuracy:.0%}"
    ).format(fit_steps=FIT_STEPS, accuracy=accuracy, fit_images=FIT_IMAGES, fit_min_accuracy=FIT_MIN_ACCURACY)
