"""Training, evaluating and inspecting a classifier: the lesson's loops as functions.

`data_loader` is anything that yields batches (X, y), X: (N, 1, 28, 28) float, y: (N,) int64:
a torch DataLoader, or the grader's tensor batches.
"""

from collections.abc import Iterable

import torch
from torch import nn


def make_optimizer(name: str, parameters: Iterable[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """The optimizer called `name`: "sgd" is SGD with momentum 0.9 (the lesson's), "adamw" AdamW (practice 1)."""
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=None)
    if name == "adamw":
        return None  # AdamW at learning rate lr
    raise ValueError(f"unknown optimizer {name!r}: use 'sgd' or 'adamw'")


def train(
    model: nn.Module, data_loader: Iterable, epochs: int, lr: float, device: torch.device | str, optimizer: str = "sgd"
) -> list[float]:
    """Train `model` on the cross-entropy loss for `epochs` passes over `data_loader`.

    Returns the mean training loss of each epoch (the mean of its batch losses): `epochs` floats.
    """
    None  # move the model to the device
    opt = make_optimizer(optimizer, model.parameters(), lr)
    criterion = None  # the cross-entropy loss
    losses = []
    for _ in range(epochs):
        None  # training mode: dropout on (evaluate() switches it off)
        running_loss, batches = 0.0, 0
        for images, labels in data_loader:
            images, labels = images.to(device), labels.to(device)
            None  # zero the gradients: they add up across backward() calls otherwise
            loss = None  # the batch's loss
            None  # backpropagation
            None  # update the weights
            running_loss += loss.item()
            batches += 1
        losses.append(None)  # the epoch's mean batch loss
    return losses


def predict(model: nn.Module, data_loader: Iterable, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted classes, true labels) over `data_loader`, both (N,) int64 on the CPU.

    The model runs in evaluation mode (no dropout) and without gradients.
    """
    model.to(device)
    None  # evaluation mode: no dropout
    predicted, true = [], []
    with torch.no_grad():
        for images, labels in data_loader:
            logits = model(images.to(device))
            predicted.append(None)  # the class of the largest logit
            true.append(labels.cpu())
    return torch.cat(predicted), torch.cat(true)


def evaluate(model: nn.Module, data_loader: Iterable, device: torch.device | str) -> float:
    """The fraction of correct predictions of `model` over `data_loader`, in [0, 1]."""
    predicted, true = predict(model, data_loader, device)
    return None  # a fraction in [0, 1]


def confusion_matrix(
    model: nn.Module, data_loader: Iterable, num_classes: int, device: torch.device | str
) -> torch.Tensor:
    """(num_classes, num_classes) int64 counts: row = true class, column = predicted class.

    Entry [t, p] counts the images of class t that the model classified as p; the diagonal holds
    the correct predictions, and each row sums to the number of images of its class.
    """
    predicted, true = predict(model, data_loader, device)
    matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    for t, p in zip(true, predicted, strict=True):
        None  # one more image of class t predicted as p
    return matrix
