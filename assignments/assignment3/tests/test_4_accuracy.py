"""Trained accuracy: the student's models, trained by the student's train(), scored here.

The statement fixes both architectures (MnistCNN's and HighAccuracyCNN's layers, shapes and
parameters). The probe gets the training images and labels, trains a new model with the student's
train() and returns its weights; no test image enters the sandbox. The grader loads the weights
into its own copy of the architecture (architectures.py; by name, so the layers may be declared in
any order) and evaluates it on the test images itself. Budgets and
thresholds come from the profile (spec.toml); the quick profile's are calibrated in calibration.md.
"""

import pytest
import torch
import torch.nn.functional as F

from grader import figures
from grader.i18n import _, number
from grader.probing import to_float
from grader.testing import architectures_for, evaluate, evaluation_device, generator, load_in_order, predict, probes_for

probes = probes_for(__file__)
architectures = architectures_for(__file__)  # the grader's own MnistCNN and HighAccuracyCNN


def training_images(dataset, budget):
    """All training images for an `epochs` budget; for a `steps` budget, steps x batch_size of them,
    in an order drawn for this grading."""
    if "steps" not in budget:
        return dataset.train.x, dataset.train.y
    count = budget["steps"] * budget["batch_size"]
    order = torch.randperm(len(dataset.train), generator=generator("training images"))
    order = order.repeat(-(-count // len(order)))[:count]  # a budget beyond one pass wraps around
    return dataset.train.x[order], dataset.train.y[order]


def check_accuracy(submission, profile, dataset, record_property, class_name, budget, threshold):
    x, y = training_images(dataset, budget)
    state = submission.run(probes.train_weights, class_name, x, y, budget)
    model = architectures.MODELS[class_name]()  # the grader's own: it scores the weights on images no sandbox sees
    problem = load_in_order(model, state)
    assert not problem, _("{class_name}'s {problem}").format(class_name=class_name, problem=problem)
    device = evaluation_device(profile)
    test_x = to_float(dataset.test.x).to(device)
    accuracy = evaluate(model.to(device), test_x, dataset.test.y.to(device))
    record_property("accuracy", round(accuracy, 4))
    record_property("min_accuracy", threshold)
    title = _("{class_name} trained: the test images' true class (rows) against the predicted one (columns)")
    title = title.format(class_name=class_name)
    figures.record(record_property, "confusion", figures.confusion(title, predict(model, test_x), dataset.test.y, 10))
    with torch.no_grad():
        maps = F.relu(model.conv1(test_x[:1]))[0]
    title = _("{class_name} trained: conv1's feature maps (after ReLU) of a test image").format(class_name=class_name)
    figures.record(record_property, "conv1 maps", figures.feature_maps(title, test_x[0], maps))
    steps, epochs = _("{steps} steps"), _("{epochs} epochs")
    spent = steps.format(steps=number(budget["steps"])) if "steps" in budget else epochs.format(epochs=budget["epochs"])
    assert accuracy >= threshold, _(
        "test accuracy {accuracy:.1%} is below the {threshold:.0%} required ({class_name}, {spent} "
        "of {optimizer} lr {lr} on {name})"
    ).format(
        accuracy=accuracy,
        threshold=threshold,
        class_name=class_name,
        spent=spent,
        optimizer=budget["optimizer"],
        lr=budget["lr"],
        name=dataset.name,
    )


@pytest.mark.points(8)
@pytest.mark.accuracy
@pytest.mark.task("MnistCNN", "train", "make_optimizer")
def test_mnist_cnn_accuracy(submission, profile, dataset, record_property):
    """MnistCNN + train: trained test accuracy"""
    budget = profile.budget["mnist_cnn"]
    check_accuracy(submission, profile, dataset, record_property, "MnistCNN", budget, profile.min_accuracy)


@pytest.mark.points(8)
@pytest.mark.accuracy
@pytest.mark.task("HighAccuracyCNN", "train", "make_optimizer")
def test_high_accuracy_cnn_accuracy(submission, profile, dataset, record_property):
    """HighAccuracyCNN + train: trained test accuracy (AdamW)"""
    budget = profile.budget["high_accuracy"]
    check_accuracy(submission, profile, dataset, record_property, "HighAccuracyCNN", budget, budget["min_accuracy"])
