"""The two CNNs of cnns.py: the Fashion-MNIST CNN (layers, shapes, parameters) and the BatchNorm CNN
(layers, parameters, and what its BatchNorm layers do in training and in evaluation mode).

Every input is drawn for this grading. The probe fills the student's model with weights (and
BatchNorm statistics) drawn from a seed of this grading (`grader.probing.fill`), the grader fills
its own copy of the architecture (architectures.py) alike, and the two must compute the same layer
outputs (fashion_cnn), or the same layer outputs, logits and statistics (BatchNormCNN): a shape or
a count is only believed when the outputs agree.
"""

import pytest
import torch
from torch import nn

from grader.i18n import _, number
from grader.probing import fill
from grader.testing import architectures_for, derived_seed, generator, probes_for

probes = probes_for(__file__)
architectures = architectures_for(__file__)

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
FASHION_IMAGES = 2
DROPOUT_INPUTS = 4096  # what each Dropout layer drops from, in training mode: about half


FASHION_X = torch.rand(FASHION_IMAGES, 1, 28, 28, generator=generator("fashion_cnn images"))
DROPOUT_NOISE = torch.rand(DROPOUT_INPUTS, generator=generator("fashion_cnn dropout")) + 0.5  # never 0


FASHION_SEED = derived_seed("fashion_cnn weights")


@pytest.fixture(scope="module")
def fashion(submission):
    return submission.run(probes.fashion_outputs, FASHION_SEED, FASHION_X, DROPOUT_NOISE)


def off_by(got, expected):
    """How far a returned tensor is from the grader's, relative to the grader's scale (inf: another shape)."""
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        return float("inf")
    difference = (got.double() - expected.double()).abs().nan_to_num(nan=float("inf")).max().item()
    return difference / (1.0 + expected.abs().max().item())


def fashion_reproduced(found):
    """The returned outputs must be what the Fashion-MNIST CNN computes with the same weights."""
    net = architectures.fashion_cnn()
    fill(net, FASHION_SEED)
    layers = found["layers"]
    assert len(layers) == len(FASHION_LAYERS), _(
        "fashion_cnn has {n_layers} layers, expected {n_fashion_layers}"
    ).format(n_layers=len(layers), n_fashion_layers=len(FASHION_LAYERS))
    net.eval()
    x = FASHION_X
    with torch.no_grad():
        for index, ((name, _unused, _unused), layer, got) in enumerate(zip(FASHION_LAYERS, net, layers, strict=True)):
            x = layer(x)
            off = off_by(got["output"], x)
            assert off < 1e-4, _(
                "{name} (layer {index}) does not compute what the notebook's {name} does with the same "
                "weights (off by {off:.3g})"
            ).format(name=name, index=index, off=off)


@pytest.mark.points(4)
@pytest.mark.task("fashion_cnn")
def test_fashion_cnn_layer_shapes(fashion):
    """fashion_cnn: each layer's type and output shape"""
    layers = fashion["layers"]
    for index, ((name, kind, shape), got) in enumerate(zip(FASHION_LAYERS, layers, strict=False)):
        assert got["layer"] == kind, _("layer {index} is {layer}, expected {kind} ({name})").format(
            index=index, layer=got["layer"], kind=kind, name=name
        )
        assert got["output"] is not None, _("{name} (layer {index}) fails on its input {input}: {error}").format(
            name=name, index=index, input=got.get("input"), error=got.get("error")
        )
        got_shape = [1, *got["output"].shape[1:]]
        assert got_shape == shape, _("{name} output is {got_shape}, expected {shape}").format(
            name=name, got_shape=got_shape, shape=shape
        )
        assert len(got["output"]) == FASHION_IMAGES, _(
            "{name} returns {n_output} outputs for {fashion_images} images"
        ).format(name=name, n_output=len(got["output"]), fashion_images=FASHION_IMAGES)
    assert len(layers) == len(FASHION_LAYERS), _(
        "fashion_cnn has {n_layers} layers, expected {n_fashion_layers}"
    ).format(n_layers=len(layers), n_fashion_layers=len(FASHION_LAYERS))
    fashion_reproduced(fashion)


@pytest.mark.points(2)
@pytest.mark.task("fashion_cnn")
def test_fashion_cnn_parameter_count(fashion):
    """fashion_cnn: 1,413,834 parameters"""
    total = sum(fashion["counts"])
    assert total == FASHION_TOTAL, _("fashion_cnn has {total} parameters, expected {fashion_total}").format(
        total=number(total), fashion_total=number(FASHION_TOTAL)
    )
    fashion_reproduced(fashion)


def dropout_checked(found):
    """Each Dropout layer, in training mode, zeroes about half of the grader's inputs and doubles the rest."""
    dropouts = found["dropouts"]
    rates = [d["p"] for d in dropouts]
    assert rates == [0.5, 0.5], _("the dropout rates are {rates}, expected [0.5, 0.5]").format(rates=rates)
    for index, dropout in enumerate(dropouts):
        out = dropout["output"]
        name = f"dropout{index + 1}"
        assert isinstance(out, torch.Tensor) and out.shape == DROPOUT_NOISE.shape, _(
            "{name} changes the shape of its input in training mode"
        ).format(name=name)
        kept = out != 0
        fraction = kept.double().mean().item()
        scaled = torch.allclose(out[kept].double(), 2 * DROPOUT_NOISE[kept].double(), rtol=1e-5, atol=1e-6)
        assert scaled and 0.4 < fraction < 0.6, _(
            "in training mode {name} kept {fraction:.0%} of {dropout_inputs} inputs{value}: expected "
            "dropout 0.5 (half zeroed, the rest doubled)"
        ).format(
            name=name, fraction=fraction, dropout_inputs=number(DROPOUT_INPUTS), value="" if scaled else ", not doubled"
        )


@pytest.mark.points(2)
@pytest.mark.task("fashion_cnn")
def test_fashion_cnn_parameters_per_layer(fashion):
    """fashion_cnn: parameters of each layer, and dropout 0.5"""
    counts, names = fashion["counts"], [name for name, _, _ in FASHION_LAYERS]
    assert len(counts) == len(names), _("fashion_cnn has {n_counts} layers, expected {n_names}").format(
        n_counts=len(counts), n_names=len(names)
    )
    for name, count in zip(names, counts, strict=False):
        if name in FASHION_PARAMETERS:
            expected = FASHION_PARAMETERS[name]
            assert count == expected, _("{name} has {count} parameters, expected {expected}").format(
                name=name, count=number(count), expected=number(expected)
            )
    dropout_checked(fashion)
    fashion_reproduced(fashion)


# --- BatchNormCNN -----------------------------------------------------------------------------

# The layers of cnn_layers for a batch of 2 images, then those of fc_layers.
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


def filled_bn_cnn(num_classes, seed):
    """The grader's BatchNormCNN with the weights and statistics the probe gives the student's."""
    model = architectures.BatchNormCNN(num_classes)
    fill(model, seed)
    return model


BN_SEED = derived_seed("BatchNormCNN weights")
BN_LAYERS_X = torch.rand(2, 1, 28, 28, generator=generator("BatchNormCNN layer images"))


def close(a, b):
    return isinstance(a, torch.Tensor) and a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-4)


def check_layers(part, layers, expected):
    for index, ((kind, shape), got) in enumerate(zip(expected, layers, strict=False)):
        assert got["layer"] == kind, _("{part}[{index}] is {layer}, expected {kind}").format(
            part=part, index=index, layer=got["layer"], kind=kind
        )
        assert got["output"] is not None, _("{part}[{index}] fails on its input {input}: {error}").format(
            part=part, index=index, input=got.get("input"), error=got.get("error")
        )
        got_shape = list(got["output"].shape)
        assert got_shape == shape, _("{part}[{index}] ({kind}) output is {got_shape}, expected {shape}").format(
            part=part, index=index, kind=kind, got_shape=got_shape, shape=shape
        )
    assert len(layers) == len(expected), _("{part} has {n_layers} layers, expected {n_expected}").format(
        part=part, n_layers=len(layers), n_expected=len(expected)
    )


def check_layer_values(part, layers, mine, x):
    """Each returned layer output must be the grader's layer output on the same input and weights."""
    with torch.no_grad():
        for index, (layer, got) in enumerate(zip(mine, layers, strict=True)):
            x = layer(x)
            assert close(got["output"], x), _(
                "{part}[{index}] ({layer}) does not compute what the slides' layer does with these weights "
                "and statistics (evaluation mode)"
            ).format(part=part, index=index, layer=got["layer"])
    return x


def bn_cnn_reproduced(found, num_classes):
    """BatchNormCNN(num_classes), filled alike, must give the grader's logits on the same images."""
    model = filled_bn_cnn(num_classes, BN_SEED).eval()
    with torch.no_grad():
        expected = model(BN_LAYERS_X)
    assert close(found["output"], expected), _(
        "BatchNormCNN({num_classes}) does not compute the slides' model: with the same weights and "
        "statistics, its logits differ (off by {off_by:.3g})"
    ).format(num_classes=num_classes, off_by=off_by(found["output"], expected))
    return model


@pytest.fixture(scope="module")
def bn_layers(submission):
    return submission.run(probes.bn_cnn_layers, 10, BN_SEED, BN_LAYERS_X)


@pytest.mark.points(3)
@pytest.mark.task("BatchNormCNN")
def test_batchnorm_cnn_layers(bn_layers):
    """BatchNormCNN: each layer's type and output shape"""
    check_layers("cnn_layers", bn_layers["cnn"], BN_CNN_LAYERS)
    check_layers("fc_layers", bn_layers["fc"], BN_FC_LAYERS)
    output = list(bn_layers["output"].shape)
    assert output == [2, 10], _("BatchNormCNN(10) maps 2 images to {output}, expected [2, 10]").format(output=output)
    model = bn_cnn_reproduced(bn_layers, 10)
    features = check_layer_values("cnn_layers", bn_layers["cnn"], model.cnn_layers, BN_LAYERS_X)
    check_layer_values("fc_layers", bn_layers["fc"], model.fc_layers, features.flatten(1))


@pytest.mark.points(2)
@pytest.mark.parametrize("num_classes", sorted(BN_CNN_PARAMETERS))
@pytest.mark.task("BatchNormCNN")
def test_batchnorm_cnn_parameter_count(submission, num_classes, bn_layers):
    """BatchNormCNN: parameter count (6,178 for 10 classes)"""
    found = bn_layers if num_classes == 10 else submission.run(probes.bn_cnn_layers, num_classes, BN_SEED, BN_LAYERS_X)
    total, expected = sum(torch.Size(shape).numel() for shape in found["shapes"]), BN_CNN_PARAMETERS[num_classes]
    assert total == expected, _("BatchNormCNN({num_classes}) has {total} parameters, expected {expected}").format(
        num_classes=num_classes, total=number(total), expected=number(expected)
    )
    bn_cnn_reproduced(found, num_classes)


BN_BATCH = 8  # images in the batch the BatchNorm checks run on
BN_X = torch.rand(BN_BATCH, 1, 28, 28, generator=generator("BatchNormCNN batch"))
NORM_KINDS = ["BatchNorm2d"] * 3 + ["BatchNorm1d"]


def the_norms(model):
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def norms_described(found, evaluation=False):
    """The student's BatchNorm layers as claimed: the right kinds, with running statistics and momentum 0.1."""
    norms = found["norms"]
    kinds = [n["layer"] for n in norms]
    assert kinds == NORM_KINDS, _("the model's BatchNorm layers are {kinds}, expected {norm_kinds}").format(
        kinds=kinds, norm_kinds=NORM_KINDS
    )
    for index, norm in enumerate(norms):
        name = _("BatchNorm layer {index} ({layer})").format(index=index + 1, layer=norm["layer"])
        consequence = _(": in evaluation mode it normalizes with each batch's statistics") if evaluation else ""
        assert norm["running"], _(
            "{name} keeps no running statistics (track_running_stats=False?){consequence}"
        ).format(name=name, consequence=consequence)
        assert norm["momentum"] == 0.1, _("{name} has momentum {momentum}, expected the default 0.1").format(
            name=name, momentum=norm["momentum"]
        )
        assert isinstance(norm["eps"], float) and 0 < norm["eps"] <= 1e-2, _("{name} has eps {eps}").format(
            name=name, eps=norm["eps"]
        )
        assert norm["affine"], _("{name} learns no scale and shift (affine=False)").format(name=name)


def bn_pass_reproduced(found, training):
    """The grader's BatchNormCNN, filled alike (with the student's eps), on the same batch in the same mode:
    each BatchNorm layer's input, output and running statistics, then the logits and the whole state."""
    model = filled_bn_cnn(10, BN_SEED)
    norms = the_norms(model)
    seen = []
    for norm, claimed in zip(norms, found["norms"], strict=True):
        norm.eps = claimed["eps"]
        norm.register_forward_hook(lambda m, args, out: seen.append((args[0], out)))
    before = [(n.running_mean.clone(), n.running_var.clone()) for n in norms]
    model.train(training)
    with torch.no_grad():
        logits = model(BN_X)
    mode = "training" if training else "evaluation"
    how = _("the batch's mean and variance") if training else _("its running statistics")
    got_seen = found["seen"]
    assert len(got_seen) == len(norms), _(
        "{n_got_seen} BatchNorm passes for one forward pass, expected {n_norms}"
    ).format(n_got_seen=len(got_seen), n_norms=len(norms))
    for index, (norm, claimed, (x, y), got, (mean, var)) in enumerate(
        zip(norms, found["norms"], seen, got_seen, before, strict=True)
    ):
        name = _("BatchNorm layer {index} ({layer})").format(index=index + 1, layer=claimed["layer"])
        assert close(got["input"], x), _(
            "the input of {name} is not what the slides' layers before it compute with these weights ({mode} mode)"
        ).format(name=name, mode=mode)
        assert close(got["output"], y), _("{name} did not normalize with {how} in {mode} mode").format(
            name=name, how=how, mode=mode
        )
        got_mean, got_var = claimed["mean_after"], claimed["var_after"]
        if training:
            assert close(got_mean, norm.running_mean) and close(got_var, norm.running_var), _(
                "{name}: the running statistics did not move to 0.9 x old + 0.1 x the batch's"
            ).format(name=name)
        else:
            kept = close(got_mean, mean) and close(got_var, var)
            assert kept, _("{name} changed its running statistics in {mode} mode").format(name=name, mode=mode)
    assert close(found["logits"], logits), _("the logits differ from the slides' model's in {mode} mode").format(
        mode=mode
    )
    for part, mine in (("cnn", model.cnn_layers), ("fc", model.fc_layers)):
        state = mine.state_dict()
        theirs = found["after"][part]
        same = len(theirs) == len(state) and all(
            a.shape == b.shape and torch.allclose(a.double(), b.double(), rtol=1e-4, atol=1e-4)
            for a, b in zip(theirs.values(), state.values(), strict=False)
        )
        assert same, _(
            "after a pass in {mode} mode, the weights or statistics of {part}_layers differ from the slides' model's"
        ).format(mode=mode, part=part)


@pytest.mark.points(3)
@pytest.mark.task("BatchNormCNN")
def test_batchnorm_training_mode(submission):
    """BatchNormCNN: in training mode, BatchNorm normalizes with the batch's statistics and updates its running ones"""
    found = submission.run(probes.bn_pass, BN_SEED, BN_X, True)
    norms_described(found)
    bn_pass_reproduced(found, training=True)


@pytest.mark.points(3)
@pytest.mark.task("BatchNormCNN")
def test_batchnorm_evaluation_mode(submission):
    """BatchNormCNN: in evaluation mode, BatchNorm normalizes with its running statistics and keeps them"""
    found = submission.run(probes.bn_pass, BN_SEED, BN_X, False)
    norms_described(found, evaluation=True)
    bn_pass_reproduced(found, training=False)
