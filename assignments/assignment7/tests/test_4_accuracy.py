"""Trained accuracy: SimpleCNN split, trained and chosen by the student's split_indices and fit, scored here.

The probe gets the training images and labels only (normalized as make_transform would), splits
them with split_indices, trains a new SimpleCNN with fit, which keeps the epoch of best validation
accuracy, and returns its weights; no test image enters the sandbox. The grader loads the weights
into its own SimpleCNN (architectures.py) and evaluates it on the test images itself: the
accuracy, the confusion matrix, each class's accuracy, and five test images with their predicted
class. The budget and threshold come from the profile (spec.toml), calibrated in calibration.md.
"""

import pytest
import torch

from grader import figures
from grader.i18n import _
from grader.probing import to_float
from grader.testing import architectures_for, derived_seed, evaluation_device, load_in_order, predict, probes_for

probes = probes_for(__file__)
architectures = architectures_for(__file__)
SHOWN = 5  # test images drawn with their predictions


def record_figures(record_property, history, test_x, predicted, labels, classes):
    """The training curves (the student's history: drawn, never scored), the confusion matrix, each
    class's accuracy, and five test images with their predictions (the grader's): the first of each
    class, then the first the model got wrong."""
    if isinstance(history, dict):
        series = {
            name: [[epoch + 1, value] for epoch, value in enumerate(history.get(key) or [])]
            for key, name in (
                ("train_loss", "train loss"),
                ("val_loss", "validation loss"),
                ("val_accuracy", "validation accuracy"),
            )
        }
        title = _("SimpleCNN: loss and accuracy per epoch (as fit reported them)")
        figures.record(record_property, "training", figures.curves(title, series, xlabel=_("epoch")))
    count = len(classes)
    title = _("SimpleCNN trained: the test images' true class (rows) against the predicted one (columns)")
    figures.record(record_property, "confusion", figures.confusion(title, predicted, labels, count, classes))
    right = torch.bincount(labels[predicted == labels], minlength=count).double()
    per_class = (right / torch.bincount(labels, minlength=count).double().clamp_min(1)).tolist()
    title = _("SimpleCNN trained: each class's test accuracy")
    figures.record(record_property, "per class", figures.bars(title, classes, per_class, top=1.0))
    firsts = [int(index) for c in range(count) for index in (labels == c).nonzero().flatten()[:1]]
    mistakes = (predicted != labels).nonzero().flatten().tolist()
    shown = list(dict.fromkeys(firsts + mistakes + list(range(len(labels)))))[:SHOWN]  # a mistake where there is one
    title = _("SimpleCNN trained: five test images, their true and predicted class")
    figure = figures.predictions(
        title, test_x[shown] * 0.5 + 0.5, [classes[i] for i in labels[shown]], [classes[i] for i in predicted[shown]]
    )
    figures.record(record_property, "predictions", figure)


@pytest.mark.points(8)
@pytest.mark.accuracy
@pytest.mark.task("SimpleCNN", "split_indices", "fit", "train_one_epoch", "evaluate")
def test_simple_cnn_accuracy(submission, profile, dataset, record_property):
    """SimpleCNN + split_indices + fit: trained test accuracy"""
    budget, classes = profile.budget, dataset.classes
    seed = derived_seed("split") % 10**6
    result = submission.run(probes.train_weights, dataset.train.x, dataset.train.y, len(classes), budget, seed)
    model = architectures.SimpleCNN(len(classes), dataset.train.x.shape[-1])
    state = result.get("state") if isinstance(result, dict) else None
    problem = load_in_order(model, state)
    assert not problem, _("SimpleCNN's {problem}").format(problem=problem)
    device = evaluation_device(profile)
    test_x = ((to_float(dataset.test.x) - 0.5) / 0.5).to(device)
    labels = dataset.test.y
    predicted = predict(model.to(device), test_x).cpu()
    accuracy = (predicted == labels).double().mean().item()
    record_property("accuracy", round(accuracy, 4))
    record_property("min_accuracy", profile.min_accuracy)
    record_figures(record_property, result.get("history"), test_x.cpu(), predicted, labels, classes)
    assert accuracy >= profile.min_accuracy, _(
        "test accuracy {accuracy:.1%} is below the {threshold:.0%} required (SimpleCNN, {epochs} epochs of SGD "
        "lr {lr} momentum 0.9, batch {batch_size}, on {name})"
    ).format(
        accuracy=accuracy,
        threshold=profile.min_accuracy,
        epochs=budget["epochs"],
        lr=budget["lr"],
        batch_size=budget["batch_size"],
        name=dataset.name,
    )
