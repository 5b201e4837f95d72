"""Trained accuracy: the student's models, trained by the student's train(), scored here.

The probe gets the training images and labels and the test *images*; it returns predictions, and
the test computes the accuracy against labels that never leave this process. Budgets and
thresholds come from the profile (spec.toml); the quick profile's are calibrated in calibration.md.
"""

import pytest
import torch

from grader.data import TensorBatches, to_float
from grader.testing import accuracy_of


def train_and_predict(sub, class_name, train_x, train_y, test_x, budget):
    """Probe: train a new `class_name` with train(), then predict the classes of the test images."""
    device = torch.device(sub.device)
    model = getattr(sub.cnn, class_name)()
    loader = TensorBatches(to_float(train_x).to(device), train_y.to(device), budget["batch_size"], shuffle=True)
    sub.training.train(model, loader, budget.get("epochs", 1), budget["lr"], device, optimizer=budget["optimizer"])
    model.eval()
    with torch.no_grad():
        return torch.cat([model(images.to(device)).argmax(1).cpu() for images in to_float(test_x).split(1000)])


def training_images(dataset, budget):
    """All training images for an `epochs` budget; for a `steps` budget, steps x batch_size of them."""
    if "steps" not in budget:
        return dataset.train.x, dataset.train.y
    count = budget["steps"] * budget["batch_size"]
    order = torch.randperm(len(dataset.train), generator=torch.Generator().manual_seed(0))
    order = order.repeat(-(-count // len(order)))[:count]  # a budget beyond one pass wraps around
    return dataset.train.x[order], dataset.train.y[order]


def check_accuracy(submission, dataset, record_property, class_name, budget, threshold):
    x, y = training_images(dataset, budget)
    predictions = submission.run(train_and_predict, class_name, x, y, dataset.test.x, budget)
    accuracy = accuracy_of(predictions, dataset.test.y)
    record_property("accuracy", round(accuracy, 4))
    record_property("min_accuracy", threshold)
    spent = f"{budget['steps']:,} steps" if "steps" in budget else f"{budget['epochs']} epochs"
    assert accuracy >= threshold, (
        f"test accuracy {accuracy:.1%} is below the {threshold:.0%} required"
        f" ({class_name}, {spent} of {budget['optimizer']} lr {budget['lr']} on {dataset.name})"
    )


@pytest.mark.points(8)
@pytest.mark.accuracy
@pytest.mark.task("MnistCNN", "train", "make_optimizer")
def test_mnist_cnn_accuracy(submission, profile, dataset, record_property):
    """MnistCNN + train: trained test accuracy"""
    budget = profile.budget["mnist_cnn"]
    check_accuracy(submission, dataset, record_property, "MnistCNN", budget, profile.min_accuracy)


@pytest.mark.points(8)
@pytest.mark.accuracy
@pytest.mark.task("HighAccuracyCNN", "train", "make_optimizer")
def test_high_accuracy_cnn_accuracy(submission, profile, dataset, record_property):
    """HighAccuracyCNN + train: trained test accuracy (AdamW)"""
    budget = profile.budget["high_accuracy"]
    check_accuracy(submission, dataset, record_property, "HighAccuracyCNN", budget, budget["min_accuracy"])
