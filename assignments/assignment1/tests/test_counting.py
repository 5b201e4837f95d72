"""Counting parameters and memory (counting.py): the slides' small CNN against their large MLP.

Expected counts come from PyTorch's own layers, built here (the large ones on the meta device:
shapes, no memory), on layer sizes drawn for this grading next to the slides' own; the slides'
totals are checked against them. The probe fills the student's SmallCNN with weights drawn from a
seed of this grading (`grader.probing.fill`), the grader fills its own copy of the slides' CNN
alike (official/answers.py), and the two must give the same logits on images drawn for this grading:
the layer counts, which come from the shapes the probe returns, are only believed then. The
grader's copies are answers: a student's bundle checks the slides' counts only.
"""

import pytest
import torch
from torch import nn

from grader.i18n import _, number
from grader.probing import fill
from grader.sandbox import SubmissionError
from grader.testing import derived_seed, generator, official_for, probes_for

probes = probes_for(__file__)
official = official_for(__file__)  # the grader's own SmallCNN and BigMLP; None in a student's bundle

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
SLIDES_TOTALS = {"SmallCNN": SMALL_CNN_TOTAL, "BigMLP": BIG_MLP_TOTAL}
SLIDES_GB = {"SmallCNN": 0.004683, "BigMLP": 5.645276}  # what the slides print, in their "GB"
DTYPES = ["float32", "float64", "float16"]
IMAGES = 3  # the SmallCNN's logits are checked on this many images


def randint(rng, low, high):
    """A whole number in low..high (both included), drawn from rng."""
    return int(torch.randint(low, high + 1, (1,), generator=rng))


def mixed_config(label):
    """The sizes of probes.mixed_model, drawn for this grading."""
    rng = generator(label)
    return {
        "in_channels": randint(rng, 1, 4),
        "channels": randint(rng, 2, 16),
        "kernel_size": randint(rng, 1, 5),
        "features": randint(rng, 10, 300),
        "hidden": randint(rng, 5, 50),
        "classes": randint(rng, 2, 10),
    }


def layer_counts(shapes):
    """The parameters of each layer, by name, from (parameter name, shape) pairs in order."""
    counts = {}
    for name, shape in shapes:
        layer = name.rpartition(".")[0]
        counts[layer] = counts.get(layer, 0) + int(torch.Size(shape).numel())
    return counts


def check_layers(model_name, got, expected):
    """Compare the parameters of each named layer, then the total."""
    for name, count in expected.items():
        assert name in got, _("{model_name} has no layer {name} (its layers with parameters: {join})").format(
            model_name=model_name, name=name, join=", ".join(got)
        )
        assert got[name] == count, _("{name} has {got} parameters, expected {count}").format(
            name=name, got=number(got[name]), count=number(count)
        )
    total, expected_total = sum(got.values()), sum(expected.values())
    assert total == expected_total, _("{model_name} has {total} parameters, expected {expected_total}").format(
        model_name=model_name, total=number(total), expected_total=number(expected_total)
    )


def shown(value):
    """What a submission returned, as a message shows it: a count as 1,257,014 (61.706 in Vietnamese);
    anything else as it came back."""
    return number(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else repr(value)


@pytest.mark.points(1)
@pytest.mark.task("conv2d_parameters")
def test_conv2d_parameters(submission):
    """conv2d_parameters: as many as nn.Conv2d has"""
    rng = generator("conv2d_parameters")
    cases = [(3, 32, 7)]  # the notebook's layer, then layers drawn for this grading
    cases.append((randint(rng, 1, 64), randint(rng, 1, 128), randint(rng, 1, 7)))
    cases.append((randint(rng, 1, 64), randint(rng, 1, 128), (randint(rng, 1, 7), randint(rng, 1, 7))))
    cases.append((randint(rng, 1, 64), randint(rng, 1, 128), randint(rng, 1, 7), False))
    for case, got in zip(cases, submission.run(probes.each, "counting", "conv2d_parameters", cases), strict=True):
        in_channels, out_channels, kernel_size, *bias = case
        layer = nn.Conv2d(in_channels, out_channels, kernel_size, bias=bias[0] if bias else True, device="meta")
        expected = sum(p.numel() for p in layer.parameters())
        assert got == expected, _("conv2d_parameters{case} is {number}, expected {expected}").format(
            case=case, number=shown(got), expected=number(expected)
        )


@pytest.mark.points(1)
@pytest.mark.task("linear_parameters")
def test_linear_parameters(submission):
    """linear_parameters: as many as nn.Linear has"""
    rng = generator("linear_parameters")
    cases = [(3 * 224 * 224, 10_000)]  # the MLP's first layer, then layers drawn for this grading
    cases.append((randint(rng, 1, 20_000), randint(rng, 1, 2_000)))
    cases.append((randint(rng, 1, 20_000), randint(rng, 1, 2_000), False))
    for case, got in zip(cases, submission.run(probes.each, "counting", "linear_parameters", cases), strict=True):
        expected = sum(p.numel() for p in nn.Linear(*case, device="meta").parameters())
        assert got == expected, _("linear_parameters{case} is {number}, expected {expected}").format(
            case=case, number=shown(got), expected=number(expected)
        )


@pytest.mark.points(1)
@pytest.mark.task("count_parameters")
def test_count_parameters(submission):
    """count_parameters: every parameter, frozen ones included, buffers excluded"""
    config = mixed_config("count_parameters model")
    (got,) = submission.run(probes.measure_mixed, "count_parameters", config, ["float32"])
    model = probes.mixed_model(config)
    expected = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() for b in model.buffers())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert got != expected + buffers, _(
        "count_parameters gives {number}: it counts BatchNorm's {buffers} buffer values too"
    ).format(number=shown(got), buffers=buffers)
    assert got != trainable, _(
        "count_parameters gives {number}: it leaves out the frozen conv layer's parameters"
    ).format(number=shown(got))
    assert got == expected, _("count_parameters gives {number}, expected {expected}").format(
        number=shown(got), expected=number(expected)
    )


@pytest.mark.points(1)
@pytest.mark.task("model_size_bytes")
def test_model_size_bytes(submission):
    """model_size_bytes: elements times element size, in float32, float64 and float16"""
    config = mixed_config("model_size_bytes model")
    got_all = submission.run(probes.measure_mixed, "model_size_bytes", config, DTYPES)
    for dtype, got in zip(DTYPES, got_all, strict=True):
        parameters = list(probes.mixed_model(config, dtype).parameters())
        count = sum(p.numel() for p in parameters)
        expected = sum(p.numel() * p.element_size() for p in parameters)
        assert got != count, _(
            "model_size_bytes gives {number}, the number of parameters: multiply by bytes per element"
        ).format(number=shown(got))
        assert got != 4 * count or dtype == "float32", _(
            "model_size_bytes gives {number} for torch.{dtype}: it assumes 4 bytes per element, ask element_size()"
        ).format(number=shown(got), dtype=dtype)
        assert got == expected, _(
            "model_size_bytes gives {number} for {count} torch.{dtype} parameters, expected {expected}"
        ).format(number=shown(got), count=number(count), dtype=dtype, expected=number(expected))


@pytest.mark.points(2)
@pytest.mark.task("SmallCNN")
@pytest.mark.official("with the same weights, the logits are the course's own SmallCNN's")
def test_small_cnn(submission):
    """SmallCNN: 1,257,014 parameters, layer by layer, and 10 logits"""
    seed = derived_seed("SmallCNN weights")
    x = torch.rand(IMAGES, 1, 28, 28, generator=generator("SmallCNN images"))
    got = submission.run(probes.small_cnn, x, seed)
    check_layers("SmallCNN", layer_counts(got["shapes"]), SMALL_CNN_LAYERS)
    logits = got["logits"]
    shape = list(logits.shape) if isinstance(logits, torch.Tensor) else logits
    assert shape == [IMAGES, 10], _("SmallCNN maps {images} images to {shape}, expected [{images}, 10]").format(
        images=IMAGES, shape=shape
    )
    if official is None:  # a student's bundle: the official grading recomputes the logits
        return
    mine = official.SmallCNN()
    counts = layer_counts((name, list(p.shape)) for name, p in mine.named_parameters())
    assert counts == SMALL_CNN_LAYERS and sum(counts.values()) == SMALL_CNN_TOTAL  # the slides' figures hold
    fill(mine, seed)  # the weights the probe gave the student's SmallCNN
    with torch.no_grad():
        expected = mine(x)
    error = (logits.double() - expected.double()).abs().nan_to_num(nan=float("inf")).max().item()
    assert error < 1e-4, _(
        "SmallCNN's logits differ by up to {error:.3g} from the slides' CNN with the same weights: "
        "three 3x3 convolutions with padding 1, each followed by ReLU, then flatten, Linear, ReLU, "
        "Linear"
    ).format(error=error)


@pytest.mark.points(2)
@pytest.mark.task("BigMLP")
@pytest.mark.official("each layer's weight has the shape of the course's own BigMLP's")
def test_big_mlp(submission):
    """BigMLP: 1,515,392,110 parameters, layer by layer, built on the meta device"""
    got = submission.run(probes.big_mlp)
    shapes = [(name, list(shape)) for name, shape in got["shapes"]]
    check_layers("BigMLP", layer_counts(shapes), BIG_MLP_LAYERS)
    expected_shapes = []
    if official is not None:  # a student's bundle has no BigMLP of the course's: the counts only
        with torch.device("meta"):
            mine = official.BigMLP()
        expected_shapes = [(name, list(p.shape)) for name, p in mine.named_parameters()]
        counts = layer_counts(expected_shapes)
        assert counts == BIG_MLP_LAYERS and sum(counts.values()) == BIG_MLP_TOTAL  # with Linear(1000, 100): it holds
    for (name, shape), (_unused, expected) in zip(shapes, expected_shapes, strict=False):
        assert shape == expected, _(
            "BigMLP's {name} is {shape}, expected {expected} (out_features, in_features)"
        ).format(name=name, shape=shape, expected=expected)
    assert got["meta"] is True, _("some BigMLP parameters are not on the meta device: do not give the layers a device")


@pytest.mark.points(1)
@pytest.mark.task("on_meta")
def test_on_meta(submission):
    """on_meta: builds a Linear layer of 6 to 15 GB without allocating it"""
    rng = generator("on_meta")
    in_features, out_features = randint(rng, 40_000, 60_000), randint(rng, 40_000, 60_000)
    with torch.device("meta"):  # the grader's own, on the meta device too
        mine = nn.Linear(in_features, out_features)
    expected = [list(p.shape) for p in mine.parameters()]
    gigabytes = sum(p.numel() * p.element_size() for p in mine.parameters()) / 1e9
    try:
        got = submission.run(probes.huge_on_meta, in_features, out_features)
    except SubmissionError as error:
        assert error.limit != "memory", _(
            "on_meta allocated the {in_features} x {out_features} layer's {gigabytes:.1f} GB: "
            "build the model on the meta device"
        ).format(in_features=number(in_features), out_features=number(out_features), gigabytes=gigabytes)
        raise
    assert got["devices"] == ["meta"], _("on_meta built parameters on {devices}, expected ['meta']").format(
        devices=got["devices"]
    )
    assert got["shapes"] == expected, _(
        "on_meta built parameters of shapes {shapes}, expected {expected}: the model that make() builds"
    ).format(shapes=got["shapes"], expected=expected)


@pytest.mark.points(1)
@pytest.mark.parametrize(
    "name",
    [pytest.param(name, marks=pytest.mark.task(name, "count_parameters", "model_size_bytes")) for name in SLIDES_GB],
)
def test_slides_models_counted(submission, name):
    """count_parameters and model_size_bytes: the slides' two models in float32"""
    count = SLIDES_TOTALS[name]  # the official test_small_cnn and test_big_mlp check them on the course's copies
    size = count * torch.finfo(torch.float32).bits // 8
    got = submission.run(probes.slides_models, name)
    assert got["count"] == count, _("count_parameters({name}()) is {number}, expected {count}").format(
        name=name, number=shown(got["count"]), count=number(count)
    )
    assert got["bytes"] == size, _("model_size_bytes({name}()) is {number}, expected {size}").format(
        name=name, number=shown(got["bytes"]), size=number(size)
    )


@pytest.mark.points(1)
@pytest.mark.task("BYTES_PER_GB")
def test_bytes_per_gb(submission):
    """BYTES_PER_GB: the slides' 0.004683 GB and 5.645276 GB"""
    gb = submission.run(probes.constant, "counting", "BYTES_PER_GB")
    assert isinstance(gb, (int, float)) and gb > 0, _("BYTES_PER_GB is {gb!r}, expected a number of bytes").format(
        gb=gb
    )
    for name, count in (("SmallCNN", SMALL_CNN_TOTAL), ("BigMLP", BIG_MLP_TOTAL)):
        size = round(4 * count / gb, 6)
        assert size == SLIDES_GB[name], _(
            "{name}: {value} bytes / BYTES_PER_GB = {size} GB, the slides print {slides_gb}: which "
            "GB did they divide by?"
        ).format(name=name, value=number(4 * count), size=size, slides_gb=SLIDES_GB[name])
