"""LeNet (lenet.py): the layers of `net`, their output shapes, their parameters, and the trained net.

The probe puts weights drawn for this grading into the student's net, passes random images (drawn
too) through each layer and returns every output. The grader's own LeNet, with the same weights,
recomputes each output: a shape, a count or an output is only believed when they agree. The
grader's LeNet is an answer (official/answers.py): a student's bundle checks the statement's shapes
and counts only, and skips the trained accuracy.
"""

import pytest
import torch

from grader import figures
from grader.i18n import _, number
from grader.probing import fill, to_float
from grader.testing import derived_seed, evaluate, generator, load_in_order, official_for, official_only, probes_for

probes = probes_for(__file__)
official = official_for(__file__)  # the grader's own LeNet; None in a student's bundle
REPRODUCED = "with the same weights, each layer computes what the course's own LeNet computes"

# The layers, their names in messages, and their output shapes for one 1x28x28 image.
EXPECTED = [
    ("conv1", "Conv2d", [6, 28, 28]),
    ("sigmoid", "Sigmoid", [6, 28, 28]),
    ("pool1", "AvgPool2d", [6, 14, 14]),
    ("conv2", "Conv2d", [16, 10, 10]),
    ("sigmoid", "Sigmoid", [16, 10, 10]),
    ("pool2", "AvgPool2d", [16, 5, 5]),
    ("flatten", "Flatten", [400]),
    ("fc1", "Linear", [120]),
    ("sigmoid", "Sigmoid", [120]),
    ("fc2", "Linear", [84]),
    ("sigmoid", "Sigmoid", [84]),
    ("fc3", "Linear", [10]),
]
# Weights plus biases: conv1 6*1*5*5 + 6, conv2 16*6*5*5 + 16, fc1 400*120 + 120, ...
LAYER_PARAMETERS = {"conv1": 156, "conv2": 2416, "fc1": 48120, "fc2": 10164, "fc3": 850}
TOTAL_PARAMETERS = 61706
IMAGES = 2


@pytest.fixture(scope="module")
def images():
    return torch.rand(IMAGES, 1, 28, 28, generator=generator("lenet images"))


@pytest.fixture(scope="module")
def grader_lenet():
    """The grader's LeNet (None in a student's bundle), with weights drawn for this grading: the
    student's net gets the same."""
    seed = derived_seed("lenet weights")
    if official is None:
        return None, seed
    net = official.lenet()
    fill(net, seed)
    return net, seed


@pytest.fixture(scope="module")
def outputs(submission, images, grader_lenet):
    return submission.run(probes.lenet_outputs, images, grader_lenet[1])


def check_reproduced(outputs, images, grader_lenet, only=None):
    """With the same weights, each of the student's layers (`only` those named) must compute what
    LeNet's does on the input the student's net gave it: a layer is judged on its own, whatever
    the layers before it compute."""
    net, _unused = grader_lenet
    if net is None:  # a student's bundle: the official grading recomputes
        return
    x = images
    with torch.no_grad():
        layers = zip(EXPECTED, net, outputs["layers"], strict=False)  # a missing layer: the shape test says so
        for index, ((name, _unused, _unused), layer, got) in enumerate(layers):
            assert got["output"] is not None, _("{name} (layer {index}) fails on its input: {error}").format(
                name=name, index=index, error=got.get("error")
            )
            if only is None or name in only:
                try:
                    expected = layer(x)
                except RuntimeError:
                    raise AssertionError(
                        _("{name} (layer {index}) gets {input} from the layer before: LeNet's cannot take it").format(
                            name=name, index=index, input=list(x.shape)
                        )
                    ) from None
                difference = (got["output"].double() - expected.double()).abs().max().item()
                wrong = _(
                    "{name} (layer {index}) does not compute what LeNet's {name} does (off by {difference:.3g})"
                ).format(name=name, index=index, difference=difference)
                assert got["output"].shape == expected.shape and difference < 1e-4, wrong
            x = got["output"]


@pytest.mark.points(4)
@pytest.mark.task("net")
@pytest.mark.official(REPRODUCED)
def test_layer_output_shapes(outputs, images, grader_lenet):
    """net: each layer's type and output shape"""
    layers = outputs["layers"]
    for index, ((name, kind, shape), got) in enumerate(zip(EXPECTED, layers, strict=False)):
        assert got["layer"] == kind, _("layer {index} is {layer}, expected {kind} ({name})").format(
            index=index, layer=got["layer"], kind=kind, name=name
        )
        assert got["output"] is not None, _("{name} (layer {index}) fails on its input {input}: {error}").format(
            name=name, index=index, input=got.get("input"), error=got.get("error")
        )
        got_shape = [1, *got["output"].shape[1:]]
        assert got_shape == [1, *shape], _("{name} output is {got_shape}, expected {value}").format(
            name=name, got_shape=got_shape, value=[1, *shape]
        )
        assert len(got["output"]) == IMAGES, _("{name} returns {n_output} outputs for {images} images").format(
            name=name, n_output=len(got["output"]), images=IMAGES
        )
    assert len(layers) == len(EXPECTED), _("net has {n_layers} layers, expected {n_expected}").format(
        n_layers=len(layers), n_expected=len(EXPECTED)
    )
    check_reproduced(outputs, images, grader_lenet)


@pytest.mark.points(2)
@pytest.mark.task("net")
@pytest.mark.official(REPRODUCED)
def test_parameter_count(outputs, images, grader_lenet):
    """net: 61,706 parameters"""
    total = sum(outputs["counts"])
    assert total == TOTAL_PARAMETERS, _("net has {total} parameters, expected {total_parameters}").format(
        total=number(total), total_parameters=number(TOTAL_PARAMETERS)
    )
    check_reproduced(outputs, images, grader_lenet, only=LAYER_PARAMETERS)


@pytest.mark.points(2)
@pytest.mark.task("net")
@pytest.mark.official(REPRODUCED)
def test_parameters_per_layer(outputs, images, grader_lenet):
    """net: parameters of each layer"""
    counts = outputs["counts"]
    names = [name for name, _, _ in EXPECTED]
    assert len(counts) == len(names), _("net has {n_counts} layers, expected {n_names}").format(
        n_counts=len(counts), n_names=len(names)
    )
    for name, count in zip(names, counts, strict=False):
        if name in LAYER_PARAMETERS:
            expected = LAYER_PARAMETERS[name]
            assert count == expected, _("{name} has {count} parameters, expected {expected}").format(
                name=name, count=number(count), expected=number(expected)
            )
    check_reproduced(outputs, images, grader_lenet, only=LAYER_PARAMETERS)


@pytest.mark.points(10)
@pytest.mark.accuracy
@pytest.mark.task("net", "train_ch6", "evaluate_accuracy_gpu")
@pytest.mark.official("the trained weights, in the course's own LeNet, reach the required test accuracy")
def test_trained_accuracy(submission, profile, dataset, record_property):
    """net + train_ch6: trained test accuracy"""
    lenet = official_only(official).lenet  # before training: a student's bundle skips the test
    trained = submission.run(probes.train_lenet, dataset.train.x, dataset.train.y, profile.budget)
    state = trained.get("state") if isinstance(trained, dict) else None
    curves = trained.get("history") if isinstance(trained, dict) else None  # the student's numbers: only drawn
    figures.record(record_property, "training", figures.curves(_("the curves train_ch6 drew while training"), curves))
    net = lenet()  # the grader's own: the student's weights are evaluated here, on images no sandbox sees
    problem = load_in_order(net, state)
    assert not problem, problem
    accuracy = evaluate(net, to_float(dataset.test.x), dataset.test.y)
    record_property("accuracy", round(accuracy, 4))
    record_property("min_accuracy", profile.min_accuracy)
    budget = profile.budget
    steps, epochs = _("{steps} steps"), _("{epochs} epochs")
    spent = steps.format(steps=number(budget["steps"])) if "steps" in budget else epochs.format(epochs=budget["epochs"])
    assert accuracy >= profile.min_accuracy, _(
        "test accuracy {accuracy:.1%} is below the {min_accuracy:.0%} required ({spent} on {name})"
    ).format(accuracy=accuracy, min_accuracy=profile.min_accuracy, spent=spent, name=dataset.name)
