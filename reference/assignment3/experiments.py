"""The homework's experiments, as functions that return their results instead of printing them.

`make_model` is a class or function that returns a fresh, untrained model: `MnistCNN`.
"""

from collections.abc import Callable, Iterable

import torch
from torch import nn
from training import evaluate, train


def epochs_experiment(
    make_model: Callable[[], nn.Module],
    data_loader: Iterable,
    device: torch.device | str,
    epoch_counts: Iterable[int] = (5, 10),
    lr: float = 0.01,
) -> dict[int, list[float]]:
    """Question 1: train a fresh model for each number of epochs.

    Returns {epochs: the mean training loss of each epoch}, e.g. {5: [5 floats], 10: [10 floats]}.
    """
    results = {}
    for epochs in epoch_counts:
        model = make_model()  # a new model: continuing the last run would count its epochs twice
        results[epochs] = train(model, data_loader, epochs, lr, device)  # its loss per epoch
    return results


def learning_rate_experiment(
    make_model: Callable[[], nn.Module],
    train_loader: Iterable,
    valid_loader: Iterable,
    device: torch.device | str,
    rates: Iterable[float] = (0.001, 0.01, 0.1),
    epochs: int = 5,
) -> dict[float, float]:
    """Question 3: train a fresh model with each learning rate for `epochs` epochs.

    Returns {learning rate: the trained model's accuracy on `valid_loader`}. Rates are compared on
    validation data, never on the test set: the test set judges the model chosen, once, at the end.
    """
    results = {}
    for lr in rates:
        model = make_model()
        train(model, train_loader, epochs, lr, device)  # train it with this learning rate
        results[lr] = evaluate(model, valid_loader, device)  # its accuracy on valid_loader
    return results
