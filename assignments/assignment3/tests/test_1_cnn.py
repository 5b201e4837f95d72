"""The models of cnn.py: MnistCNN, MnistCNN3, feature_maps and HighAccuracyCNN.

The probe builds the student's model, returns its weights' shapes, fills it with weights drawn from
a seed of this grading (`grader.probing.fill`) and runs random images, drawn too, through it: it
returns the input and output of every call of its layers. The grader fills its own copy of the
architecture (architectures.py: the statement fixes it) alike and recomputes here: a shape, a
parameter count or a forward pass is only believed when its own copy, with the same weights,
computes what each of the student's layers computed.
What runs between the layers with weights (torch.relu or nn.ReLU, nn.MaxPool2d or F.max_pool2d,
torch.flatten or nn.Flatten) is the student's choice: only what it computes is checked.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from grader.i18n import _, number
from grader.probing import fill
from grader.testing import architectures_for, derived_seed, generator, probes_for

probes = probes_for(__file__)
MODELS = architectures_for(__file__).MODELS  # the grader's own MnistCNN, MnistCNN3 and HighAccuracyCNN

# Each stage of the forward pass and its output shape for one 1x28x28 image: the statement's
# table. 28 -conv-> 26 -pool-> 13 -conv-> 11 -pool-> 5 (floor). A stage without weights (pool,
# flatten, dropout) is seen in the input of the next layer with weights.
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
DROPOUT = {"dropout1": ("fc1", 0.25), "dropout2": ("fc2", 0.5)}  # each dropout, the layer it feeds, its rate
IMAGES, HIGH_ACCURACY_IMAGES, DROPOUT_IMAGES = 4, 2, 8


def filled(class_name: str, label: str = "") -> tuple[nn.Module, int]:
    """The grader's own `class_name` in evaluation mode, with weights drawn for this grading (for
    `label`); and their seed, which the probe fills the student's model from."""
    model, seed = MODELS[class_name](), derived_seed(label or f"{class_name} weights")
    fill(model, seed)
    return model.eval(), seed


def one(shape) -> list[int]:
    """A batch's shape as that of one image: [N, C, H, W] -> [1, C, H, W]."""
    return [1, *shape[1:]]


def counts_of(shapes) -> dict[str, int]:
    """The parameters of each layer, counted from the returned shapes {name: shape} of its weights."""
    counts: dict[str, int] = {}
    for key, shape in shapes.items():
        counts[key.split(".")[0]] = counts.get(key.split(".")[0], 0) + math.prod(shape)
    return counts


def check_layer_calls(traced, expected, x):
    """Fail on the first layer with weights whose input or output differs from the stages
    `expected` [(stage, shape), ...]; stages without weights are seen in the next layer's input."""
    run = traced["eval"]
    weighted = set(counts_of(traced["shapes"]))
    calls = [call for call in run["calls"] if call["layer"] in weighted]
    error, order = run["error"], ", ".join(name for name, _ in expected)
    last, last_output, between, index = None, one(x.shape), [], 0
    for stage, (name, shape) in enumerate(expected):
        if name not in weighted and not name.startswith(("conv", "fc")):
            between.append((name, shape))
            continue
        before = _("after {last}").format(last=last) if last else _("first")
        if index == len(calls):
            ending = f": {error}" if error else ""
            raise AssertionError(
                _("the forward pass ends {before}, expected {name} next (order: {order}){ending}").format(
                    before=before, name=name, order=order, ending=ending
                )
            )
        got = calls[index]
        assert got["layer"] == name, _(
            "{before} the forward pass runs {layer}, expected {name} (order: {order})"
        ).format(before=before, layer=got["layer"], name=name, order=order)
        assert got["input"] is not None, _("{name} is called without a tensor").format(name=name)
        wanted = expected[stage - 1][1] if stage else one(x.shape)
        if name.startswith("fc"):
            wanted = [1, math.prod(wanted[1:])]
        got_input = one(got["input"].shape)
        if got_input != wanted:
            pooled = any(kind == "pool" for kind, _ in between)
            if pooled and math.prod(got_input) == math.prod(last_output):
                raise AssertionError(
                    _(
                        "after {last} the forward pass runs {name}, expected pool: {name} gets {last}'s maps "
                        "{last_output} unpooled"
                    ).format(last=last, name=name, last_output=last_output)
                )
            if pooled and name.startswith("conv"):
                raise AssertionError(
                    _("pool output is {got_input}, expected {wanted} (the input of {name})").format(
                        got_input=got_input, wanted=wanted, name=name
                    )
                )
            source = (
                _(": {between0}'s output, flattened").format(between0=between[-1][0])
                if between and name.startswith("fc")
                else ""
            )
            raise AssertionError(
                _("{name} gets {got_input}, expected {wanted}{source}").format(
                    name=name, got_input=got_input, wanted=wanted, source=source
                )
            )
        assert got["output"] is not None, _("{name} fails on its input {got_input}: {error}").format(
            name=name, got_input=got_input, error=error
        )
        assert one(got["output"].shape) == shape, _("{name} output is {one}, expected {shape}").format(
            name=name, one=one(got["output"].shape), shape=shape
        )
        assert len(got["output"]) == len(x), _("{name} returns {n_output} outputs for {n_x} images").format(
            name=name, n_output=len(got["output"]), n_x=len(x)
        )
        last, last_output, between, index = name, shape, [], index + 1
    assert error is None, _("the forward pass fails after {last}: {error}").format(last=last, error=error)
    extra = [call["layer"] for call in calls[index:]]
    assert not extra, _("after {last} the forward pass still runs {join} (order: {order})").format(
        last=last, join=", ".join(extra), order=order
    )
    logits = run["logits"]
    assert isinstance(logits, torch.Tensor), _(
        "the model returns a {logits}, expected the logits, {last}'s output"
    ).format(logits=logits, last=last)
    assert torch.equal(logits, calls[-1]["output"]), _(
        "the model does not return {last}'s output: return the logits"
    ).format(last=last)


def check_reproduced(traced, mine, x):
    """The grader's copy `mine`, with the weights the student's model was given, must compute what
    each of its layers returned: a shape or a count is only believed when the layer outputs agree."""
    weighted = set(counts_of(traced["shapes"]))
    calls = [call for call in traced["eval"]["calls"] if call["layer"] in weighted and call["output"] is not None]
    if calls and calls[0]["input"] is not None and calls[0]["input"].shape == x.shape:
        difference = (calls[0]["input"] - x).abs().max().item()
        assert difference == 0, _("{layer} does not get the images passed to the model").format(layer=calls[0]["layer"])
    layers = dict(mine.named_children())
    with torch.no_grad():
        for call in calls:
            name = call["layer"]
            assert name in layers, _("the model has a layer {name} with weights, expected only {join}").format(
                name=name, join=", ".join(layers)
            )
            expected = layers[name](call["input"])
            difference = (call["output"].double() - expected.double()).abs().max().item()
            scale = max(1.0, expected.abs().max().item())
            assert difference < 1e-4 * scale, _(
                "{name} does not compute what the statement's {name} computes with the same weights (off "
                "by {difference:.3g})"
            ).format(name=name, difference=difference)


def check_parameters(traced, class_name, expected, mine, x):
    """Fail when the total differs from `expected` {layer: count}, naming the first layer that differs."""
    counts = counts_of(traced["shapes"])
    total, wanted = sum(counts.values()), sum(expected.values())
    if total != wanted:
        for name, count in expected.items():
            got = counts.get(name)
            if got is None:
                raise AssertionError(
                    _("{class_name} has {total} parameters, expected {wanted}: it has no layer {name}").format(
                        class_name=class_name, total=number(total), wanted=number(wanted), name=name
                    )
                )
            if got != count:
                raise AssertionError(
                    _(
                        "{class_name} has {total} parameters, expected {wanted}: {name} has {got}, expected {count}"
                    ).format(
                        class_name=class_name,
                        total=number(total),
                        wanted=number(wanted),
                        name=name,
                        got=number(got),
                        count=number(count),
                    )
                )
        known = ", ".join(expected)
        raise AssertionError(
            _("{class_name} has {total} parameters, expected {wanted}: it has layers beyond {known}").format(
                class_name=class_name, total=number(total), wanted=number(wanted), known=known
            )
        )
    check_reproduced(traced, mine, x)


def lesson_forward(weights, x, skip_relu=None, pool=F.max_pool2d):
    """[conv -> ReLU -> pool] for conv1, conv2 (, conv3), then fc1, from `weights`."""
    convs = sorted(k.removesuffix(".weight") for k in weights if k.startswith("conv") and k.endswith(".weight"))
    for conv in convs:
        x = F.conv2d(x, weights[f"{conv}.weight"], weights[f"{conv}.bias"])
        x = x if conv == skip_relu else F.relu(x)
        x = pool(x, 2)
    return F.linear(x.flatten(1), weights["fc1.weight"], weights["fc1.bias"])


def check_forward(traced, mine, convs, x):
    """Compare with the grader's forward pass, with the weights the student's model was given, and
    name the step that a near-miss leaves out."""
    run = traced["eval"]
    logits = run["logits"]
    assert run["error"] is None, _("the forward pass fails: {error}").format(error=run["error"])
    weights = mine.state_dict()
    for name, tensor in weights.items():
        shape = traced["shapes"].get(name)
        assert shape in (None, list(tensor.shape)), _(
            "the weights do not fit [conv -> ReLU -> max pool] x {n_convs} -> fc1: {name} is {shape}, "
            "expected {expected_shape}"
        ).format(n_convs=len(convs), name=name, shape=shape, expected_shape=list(tensor.shape))
    with torch.no_grad():
        expected = lesson_forward(weights, x)
        assert isinstance(logits, torch.Tensor) and logits.shape == expected.shape, _(
            "the model returns {value}, expected logits {shape}"
        ).format(value=logits if isinstance(logits, str) else list(logits.shape), shape=list(expected.shape))
        if torch.allclose(logits, expected, atol=1e-5):
            return
        for conv in convs:
            if torch.allclose(logits, lesson_forward(weights, x, skip_relu=conv), atol=1e-5):
                raise AssertionError(
                    _("no ReLU after {conv}: x = self.pool(torch.relu(self.{conv}(x)))").format(conv=conv)
                )
        if torch.allclose(logits, lesson_forward(weights, x, pool=F.avg_pool2d), atol=1e-5):
            raise AssertionError(_("the pooling averages: the lesson's network takes the maximum (nn.MaxPool2d)"))
    difference = (logits - expected).abs().max().item()
    raise AssertionError(
        _(
            "the logits differ from [conv -> ReLU -> max pool] x {n_convs} -> flatten -> fc1 by up to {difference:.3g}"
        ).format(n_convs=len(convs), difference=difference)
    )


def images(label, count):
    return torch.rand(count, 1, 28, 28, generator=generator(label))


X = images("MnistCNN images", IMAGES)
X3 = images("MnistCNN3 images", IMAGES)
X_HIGH = images("HighAccuracyCNN images", HIGH_ACCURACY_IMAGES)
X_DROPOUT = images("HighAccuracyCNN dropout images", DROPOUT_IMAGES)
IMAGE = images("feature_maps image", 1)


@pytest.fixture(scope="module")
def mnist_cnn_mine():
    return filled("MnistCNN")


@pytest.fixture(scope="module")
def mnist_cnn(submission, mnist_cnn_mine):
    return submission.run(probes.trace, "MnistCNN", mnist_cnn_mine[1], X)


@pytest.fixture(scope="module")
def mnist_cnn3_mine():
    return filled("MnistCNN3")


@pytest.fixture(scope="module")
def mnist_cnn3(submission, mnist_cnn3_mine):
    return submission.run(probes.trace, "MnistCNN3", mnist_cnn3_mine[1], X3)


@pytest.fixture(scope="module")
def high_accuracy_mine():
    return filled("HighAccuracyCNN")


@pytest.fixture(scope="module")
def high_accuracy(submission, high_accuracy_mine):
    return submission.run(probes.trace, "HighAccuracyCNN", high_accuracy_mine[1], X_HIGH, X_DROPOUT, True)


@pytest.mark.points(3)
@pytest.mark.task("MnistCNN")
def test_mnist_cnn_layer_shapes(mnist_cnn, mnist_cnn_mine):
    """MnistCNN: output shape of each layer"""
    check_layer_calls(mnist_cnn, MNIST_CNN_LAYERS, X)
    check_reproduced(mnist_cnn, mnist_cnn_mine[0], X)


@pytest.mark.points(2)
@pytest.mark.task("MnistCNN")
def test_mnist_cnn_parameters(mnist_cnn, mnist_cnn_mine):
    """MnistCNN: 12,810 parameters"""
    check_parameters(mnist_cnn, "MnistCNN", MNIST_CNN_PARAMETERS, mnist_cnn_mine[0], X)


@pytest.mark.points(3)
@pytest.mark.task("MnistCNN")
def test_mnist_cnn_forward(mnist_cnn, mnist_cnn_mine):
    """MnistCNN: conv -> ReLU -> max pool, twice, then fc1"""
    check_forward(mnist_cnn, mnist_cnn_mine[0], ["conv1", "conv2"], X)


@pytest.mark.points(3)
@pytest.mark.task("MnistCNN3", "MnistCNN")
def test_mnist_cnn3_layer_shapes(mnist_cnn3, mnist_cnn3_mine):
    """MnistCNN3: output shape of each layer, conv3 included"""
    check_layer_calls(mnist_cnn3, MNIST_CNN3_LAYERS, X3)
    check_reproduced(mnist_cnn3, mnist_cnn3_mine[0], X3)


@pytest.mark.points(2)
@pytest.mark.task("MnistCNN3", "MnistCNN")
def test_mnist_cnn3_parameters(mnist_cnn3, mnist_cnn3_mine):
    """MnistCNN3: 23,946 parameters"""
    check_parameters(mnist_cnn3, "MnistCNN3", MNIST_CNN3_PARAMETERS, mnist_cnn3_mine[0], X3)


@pytest.mark.points(2)
@pytest.mark.task("MnistCNN3", "MnistCNN")
def test_mnist_cnn3_forward(mnist_cnn3, mnist_cnn3_mine):
    """MnistCNN3: conv -> ReLU -> max pool, three times, then fc1"""
    check_forward(mnist_cnn3, mnist_cnn3_mine[0], ["conv1", "conv2", "conv3"], X3)


@pytest.fixture(scope="module")
def maps_mine():
    """The grader's MnistCNN with the weights the probe gives the student's for feature_maps."""
    return filled("MnistCNN", "feature_maps weights")


@pytest.fixture(scope="module")
def maps(submission, maps_mine):
    return {"maps": submission.run(probes.maps_of, maps_mine[1], IMAGE), "mine": maps_mine[0]}


@pytest.mark.points(2)
@pytest.mark.task("feature_maps", "MnistCNN")
def test_feature_map_shapes(maps):
    """feature_maps: conv1 maps [1, 16, 26, 26], conv2 maps [1, 32, 11, 11]"""
    got = maps["maps"]
    assert isinstance(got, list), _("feature_maps returned a {got}, expected a tuple (conv1 maps, conv2 maps)").format(
        got=got
    )
    assert len(got) == 2, _("feature_maps returned {n_got} values, expected 2: (conv1 maps, conv2 maps)").format(
        n_got=len(got)
    )
    for name, value, shape in zip(("conv1", "conv2"), got, ([1, 16, 26, 26], [1, 32, 11, 11]), strict=True):
        assert isinstance(value, torch.Tensor), _("the {name} maps are a {value}, expected a tensor").format(
            name=name, value=value
        )
        hint = _(": pool conv1's maps before conv2, as the forward pass does") if name == "conv2" else ""
        assert list(value.shape) == shape, _("the {name} maps are {shape}, expected {expected_shape}{hint}").format(
            name=name, shape=list(value.shape), expected_shape=shape, hint=hint
        )
    check_maps_come_from_the_model(maps)


def expected_maps(maps):
    """The grader's own maps for the image, with the weights the student's model was given:
    ReLU(conv1(image)), and ReLU(conv2(pool(ReLU(conv1(image))))); also conv2's maps from conv1's
    maps pooled without ReLU."""
    weights = maps["mine"].state_dict()
    with torch.no_grad():
        conv1 = F.conv2d(IMAGE, weights["conv1.weight"], weights["conv1.bias"])
        conv2 = F.relu(F.conv2d(F.max_pool2d(F.relu(conv1), 2), weights["conv2.weight"], weights["conv2.bias"]))
        unrectified = F.relu(F.conv2d(F.max_pool2d(conv1, 2), weights["conv2.weight"], weights["conv2.bias"]))
    return F.relu(conv1), conv2, unrectified


def check_maps_come_from_the_model(maps):
    """Each map, rectified, is its convolution's output for the image (whatever its ReLU does)."""
    conv1, conv2, unrectified = expected_maps(maps)
    for name, value, candidates in zip(("conv1", "conv2"), maps["maps"], ([conv1], [conv2, unrectified]), strict=True):
        difference = min((F.relu(value) - expected).abs().max().item() for expected in candidates)
        assert difference < 1e-5, _(
            "the {name} maps are not {name}'s output for the image (off by up to {difference:.3g})"
        ).format(name=name, difference=difference)


@pytest.mark.points(2)
@pytest.mark.task("feature_maps", "MnistCNN")
def test_feature_map_values(maps):
    """feature_maps: after ReLU, conv2 fed with conv1's pooled maps"""
    got = maps["maps"]
    assert isinstance(got, list) and len(got) == 2, _("feature_maps did not return (conv1 maps, conv2 maps)")
    for name, value, expected in zip(("conv1", "conv2"), got, expected_maps(maps)[:2], strict=True):
        assert isinstance(value, torch.Tensor), _("the {name} maps are a {value}, expected a tensor").format(
            name=name, value=value
        )
        assert value.shape == expected.shape, _("the {name} maps have the wrong shape").format(name=name)
        assert value.min() >= 0, _("the {name} maps have negative values ({min:.3g}): apply torch.relu").format(
            name=name, min=value.min()
        )
        difference = (value - expected).abs().max().item()
        assert difference < 1e-5, _("the {name} maps differ from ReLU({name}(...)) by up to {difference:.3g}").format(
            name=name, difference=difference
        ) + (_(": feed conv2 with pool(ReLU(conv1(image)))") if name == "conv2" else "")


@pytest.mark.points(2)
@pytest.mark.task("HighAccuracyCNN")
def test_high_accuracy_layer_shapes(high_accuracy, high_accuracy_mine):
    """HighAccuracyCNN: output shape of each layer"""
    check_layer_calls(high_accuracy, HIGH_ACCURACY_LAYERS, X_HIGH)
    check_reproduced(high_accuracy, high_accuracy_mine[0], X_HIGH)


@pytest.mark.points(2)
@pytest.mark.task("HighAccuracyCNN")
def test_high_accuracy_parameters(high_accuracy, high_accuracy_mine):
    """HighAccuracyCNN: 1,625,866 parameters"""
    check_parameters(high_accuracy, "HighAccuracyCNN", HIGH_ACCURACY_PARAMETERS, high_accuracy_mine[0], X_HIGH)


def check_dropped(layer, clean, got, p):
    """`got`, what `layer` received in training mode, must be `clean` (what it receives in
    evaluation mode, computed here) with about a fraction p of it zeroed and the rest scaled by 1 / (1 - p)."""
    assert got is not None and got.shape == clean.shape, _(
        "in training mode, {layer} gets {value}, expected {one}"
    ).format(layer=layer, value=None if got is None else one(got.shape), one=one(clean.shape))
    # Where a dropout's work shows; the ratios are exact but for rounding (fc1 sums 12,544 products).
    seen = clean.abs() > 0.05
    ratio, kept = got[seen] / clean[seen], got[seen] != 0
    if kept.all() and (ratio - 1).abs().max() < 1e-2:
        raise AssertionError(
            _("no dropout before {layer} in training mode: expected one of rate {p} (nn.Dropout({p}))").format(
                layer=layer, p=p
            )
        )
    scale, expected = ratio[kept], 1 / (1 - p)
    if not ((scale - expected).abs() < 1e-2 * expected).all():
        median = scale.median().item()
        if (scale - median).abs().max() < 1e-2 * median:
            raise AssertionError(
                _(
                    "the dropout before {layer} drops {value:.2f} of its inputs in training mode (it scales "
                    "the others by {median:.3f}), expected {p}"
                ).format(layer=layer, value=1 - 1 / median, median=median, p=p)
            )
        raise AssertionError(
            _(
                "in training mode, {layer}'s inputs are not its evaluation-mode inputs with some zeroed "
                "and the rest scaled by 1 / (1 - {p})"
            ).format(layer=layer, p=p)
        )
    dropped, count = 1 - kept.double().mean().item(), kept.numel()
    assert abs(dropped - p) < 6 * math.sqrt(p * (1 - p) / count) + 0.01, _(
        "the dropout before {layer} zeroes {dropped:.1%} of its inputs in training mode, expected {p:.0%}"
    ).format(layer=layer, dropped=dropped, p=p)


@pytest.mark.points(1)
@pytest.mark.task("HighAccuracyCNN")
def test_high_accuracy_dropout(high_accuracy, high_accuracy_mine):
    """HighAccuracyCNN: dropout 0.25 before fc1, 0.5 before fc2"""
    layers = high_accuracy["layers"]
    for name, (_unused, p) in DROPOUT.items():  # the modules' own rates, when there are such modules: a precise reason
        layer = layers.get(name)
        if layer is not None and layer["type"] == "Dropout":
            assert layer["p"] == p, _("{name} drops {p} of its inputs, expected {expected_p}").format(
                name=name, p=layer["p"], expected_p=p
            )
    # What counts: what fc1 and fc2 receive in training mode, against what they receive without dropout.
    run = high_accuracy["train"]
    assert run["error"] is None, _("the forward pass fails in training mode: {error}").format(error=run["error"])
    inputs = {call["layer"]: call["input"] for call in run["calls"] if call["layer"] in ("fc1", "fc2")}
    model = high_accuracy_mine[0]  # the weights the student's model had in that pass
    with torch.no_grad():
        check_dropped("fc1", model.features(X_DROPOUT), inputs.get("fc1"), DROPOUT["dropout1"][1])
        check_dropped("fc2", F.relu(model.fc1(inputs["fc1"])), inputs.get("fc2"), DROPOUT["dropout2"][1])


@pytest.mark.points(3)
@pytest.mark.task("HighAccuracyCNN")
def test_high_accuracy_he_init(high_accuracy):
    """HighAccuracyCNN: He (Kaiming) normal weights, zero biases"""
    state = high_accuracy["initial"]  # the weights of a new HighAccuracyCNN, as its __init__ left them
    for name in HIGH_ACCURACY_PARAMETERS:
        weight, bias = state.get(f"{name}.weight"), state.get(f"{name}.bias")
        assert weight is not None and weight.dim() >= 2, _(
            "HighAccuracyCNN has no convolution or linear layer {name}"
        ).format(name=name)
        w = weight.double()
        fan_in, std = w[0].numel(), w.std().item()
        he = math.sqrt(2 / fan_in)
        default = (
            _(" (PyTorch's default init: the He init never ran)") if abs(std * math.sqrt(3 * fan_in) - 1) < 0.1 else ""
        )
        assert abs(std / he - 1) < 0.2, _(
            "{name} weights have std {std:.4f}, expected He's sqrt(2 / fan_in) = sqrt(2 / {fan_in}) = "
            "{he:.4f}{default}: nn.init.kaiming_normal_(m.weight, nonlinearity='relu')"
        ).format(name=name, std=std, fan_in=fan_in, he=he, default=default)
        largest = bias.abs().max().item() if bias is not None and bias.numel() else 0.0
        assert largest == 0, _("{name} bias is not zero (up to {largest:.3g}): nn.init.zeros_(m.bias)").format(
            name=name, largest=largest
        )
        # Enough weights to tell a normal (kurtosis 3) from a uniform distribution (1.8).
        if w.numel() >= 10_000:
            kurtosis = ((w - w.mean()) / w.std()).pow(4).mean().item()
            assert abs(kurtosis - 3) < 0.3, _(
                "{name} weights are not normally distributed (kurtosis {kurtosis:.2f}; normal: 3, uniform: "
                "1.8): use nn.init.kaiming_normal_"
            ).format(name=name, kurtosis=kurtosis)
