"""The homework's experiments (experiments.py): what they return, and how they get it.

The probes run the student's experiments with MnistCNN on a slice of the training images (the
profile's `experiments` budget) and watch which models get built and trained at which learning
rate. They never see the test set: the learning rates are compared on validation images.
"""

import math
import numbers

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from grader.data import TensorBatches, to_float

EPOCH_COUNTS = [5, 10]
RATES = [0.001, 0.01, 0.1]


def plain(value):
    """Numbers, tensors, lists and dicts as plain Python data; anything else as the name of its type."""
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return f"a {type(value).__name__}"


def models(count):
    return f"{count} model" + ("" if count == 1 else "s")


def batches(x, y, size, device, shuffle=False):
    return TensorBatches(to_float(x).to(device), y.to(device), size, shuffle=shuffle)


def run_epochs_experiment(sub, x, y, budget):
    """Probe: epochs_experiment(MnistCNN, ...) with its default epoch counts; how many forward passes each model ran."""
    device = torch.device(sub.device)
    forwards = []

    def make_model():
        model = sub.cnn.MnistCNN()
        index = len(forwards)
        forwards.append(0)
        model.register_forward_pre_hook(lambda m, args: forwards.__setitem__(index, forwards[index] + 1))
        return model

    loader = batches(x, y, budget["batch_size"], device, shuffle=True)
    results = sub.experiments.epochs_experiment(make_model, loader, device)
    return {"results": plain(results), "forwards": forwards}


def run_learning_rate_experiment(sub, x, y, valid_x, valid_y, budget):
    """Probe: learning_rate_experiment(MnistCNN, ...) with its default rates.

    For each model built: the learning rates its optimizer stepped with, and its accuracy on the
    validation images, computed here after the experiment.
    """
    device = torch.device(sub.device)
    models, rates = [], []

    def make_model():
        models.append(sub.cnn.MnistCNN())
        rates.append(set())
        return models[-1]

    def on_step(optimizer, args, kwargs):
        stepped = {id(p) for group in optimizer.param_groups for p in group["params"]}
        for model, seen in zip(models, rates, strict=True):
            if any(id(p) in stepped for p in model.parameters()):
                seen.update(group["lr"] for group in optimizer.param_groups)

    hook = register_optimizer_step_post_hook(on_step)
    try:
        results = sub.experiments.learning_rate_experiment(
            make_model,
            batches(x, y, budget["batch_size"], device, shuffle=True),
            batches(valid_x, valid_y, 1000, device),
            device,
            epochs=budget["lr_epochs"],
        )
    finally:
        hook.remove()
    accuracies = []
    with torch.no_grad():
        for model in models:
            model.eval()
            predicted = torch.cat([model(images).argmax(1) for images, _ in batches(valid_x, valid_y, 1000, device)])
            accuracies.append((predicted.cpu() == valid_y).float().mean().item())
    return {"results": plain(results), "rates": [sorted(seen) for seen in rates], "accuracies": accuracies}


def training_slices(dataset, budget):
    """A fixed shuffle of the training split, cut into (train images, labels, valid images, labels)."""
    order = torch.randperm(len(dataset.train), generator=torch.Generator().manual_seed(0))
    train, valid = order[: budget["train_images"]], order[budget["train_images"] :][: budget["valid_images"]]
    return dataset.train.x[train], dataset.train.y[train], dataset.train.x[valid], dataset.train.y[valid]


@pytest.fixture(scope="module")
def epochs_run(submission, profile, dataset):
    x, y, _, _ = training_slices(dataset, profile.budget["experiments"])
    return submission.run(run_epochs_experiment, x, y, profile.budget["experiments"])


@pytest.fixture(scope="module")
def rates_run(submission, profile, dataset):
    budget = profile.budget["experiments"]
    return submission.run(run_learning_rate_experiment, *training_slices(dataset, budget), budget)


@pytest.mark.points(2)
@pytest.mark.task("epochs_experiment", "train")
def test_epochs_experiment_returns_losses(epochs_run):
    """epochs_experiment: one loss per epoch, for 5 and 10 epochs"""
    results = epochs_run["results"]
    assert isinstance(results, dict), f"epochs_experiment returned {results}, expected a dict {{epochs: losses}}"
    assert sorted(results) == EPOCH_COUNTS, f"the results are keyed {sorted(results)}, expected {EPOCH_COUNTS}"
    for epochs in EPOCH_COUNTS:
        losses = results[epochs]
        assert isinstance(losses, list), f"the {epochs}-epoch result is {losses}, expected a list of losses"
        assert len(losses) == epochs, f"the {epochs}-epoch run has {len(losses)} losses, expected one per epoch"
        assert all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in losses), (
            f"the {epochs}-epoch losses are not all positive finite numbers: {losses}"
        )


@pytest.mark.points(2)
@pytest.mark.task("epochs_experiment")
def test_epochs_experiment_fresh_models(epochs_run):
    """epochs_experiment: a fresh model for each run"""
    trained = [count for count in epochs_run["forwards"] if count]
    assert len(trained) == len(EPOCH_COUNTS), (
        f"{models(len(trained))} trained for {len(EPOCH_COUNTS)} runs: call make_model() for each epoch count,"
        " or the 10-epoch run goes on from the 5-epoch model (15 epochs in all)"
    )


@pytest.mark.points(1)
@pytest.mark.task("epochs_experiment", "train")
def test_epochs_experiment_loss_falls(epochs_run):
    """epochs_experiment: the loss falls at lr 0.01"""
    results = epochs_run["results"]
    assert isinstance(results, dict) and sorted(results) == EPOCH_COUNTS, "no losses for 5 and 10 epochs"
    for epochs, losses in results.items():
        numbers = isinstance(losses, list) and len(losses) > 1 and all(isinstance(v, float) for v in losses)
        assert numbers, f"the {epochs}-epoch run returned {losses}, expected a loss per epoch"
        assert losses[-1] < 0.8 * losses[0], (
            f"the {epochs}-epoch loss goes from {losses[0]:.3f} to {losses[-1]:.3f}: at lr 0.01 it should end below"
            f" {0.8 * losses[0]:.3f} (a bug in train, or a learning rate that is not passed on?)"
        )


@pytest.mark.points(2)
@pytest.mark.task("learning_rate_experiment", "evaluate", "predict")
def test_learning_rate_experiment_returns_accuracies(rates_run):
    """learning_rate_experiment: one accuracy in [0, 1] per rate"""
    results = rates_run["results"]
    assert isinstance(results, dict), f"learning_rate_experiment returned {results}, expected a dict {{rate: accuracy}}"
    assert sorted(results) == RATES, f"the results are keyed {sorted(results)}, expected the rates {RATES}"
    for rate in RATES:
        accuracy = results[rate]
        assert isinstance(accuracy, float), f"the accuracy for lr {rate} is {accuracy}, expected a float"
        hint = ": a percentage? expected a fraction" if 1 < accuracy <= 100 else ""
        assert 0 <= accuracy <= 1, f"the accuracy for lr {rate} is {accuracy}, not in [0, 1]{hint}"


@pytest.mark.points(2)
@pytest.mark.task("learning_rate_experiment", "train", "make_optimizer")
def test_learning_rate_experiment_fresh_models(rates_run):
    """learning_rate_experiment: a fresh model trained with each rate"""
    trained = [rates for rates in rates_run["rates"] if rates]
    used = sorted({rate for rates in trained for rate in rates})
    assert used, "no optimizer ever stepped during the experiment: see train's tests"
    assert used == RATES, f"the models trained with learning rates {used}, expected {RATES}: pass each rate to train"
    shared = next((rates for rates in trained if len(rates) > 1), None)
    assert shared is None, f"one model trained with the rates {shared} in turn: call make_model() for each rate"
    assert len(trained) == len(RATES), f"{models(len(trained))} trained for {len(RATES)} rates"


@pytest.mark.points(2)
@pytest.mark.task("learning_rate_experiment", "evaluate", "predict")
def test_learning_rate_experiment_validation_accuracy(rates_run):
    """learning_rate_experiment: each rate's trained model, scored on the validation images"""
    results = rates_run["results"]
    assert isinstance(results, dict) and sorted(results) == RATES, "no accuracies keyed by the rates"
    runs = zip(rates_run["rates"], rates_run["accuracies"], strict=True)
    scores = {rates[0]: accuracy for rates, accuracy in runs if len(rates) == 1}  # models trained with one rate
    for rate in RATES:
        assert rate in scores, f"no model was trained with lr {rate} alone: pass each rate to train"
        got, expected = results[rate], scores[rate]
        assert isinstance(got, float), f"for lr {rate} it returned {got}, expected a float"
        assert abs(got - expected) < 1e-4, (
            f"for lr {rate} it returned {got:.4f}, but the model trained with lr {rate} scores {expected:.4f} on"
            " valid_loader: evaluate each trained model on valid_loader"
        )
