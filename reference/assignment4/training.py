"""The chapter-4 training loop: `train` and `evaluate_tm`, with a torchmetrics metric, on a device.

`metric` is a torchmetrics metric such as `torchmetrics.Accuracy(task="multiclass", num_classes=10)`:
`metric.reset()` forgets what it has seen, `metric.update(y_pred, y)` adds a batch, and
`metric.compute()` gives the value over everything seen since the last reset.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from torchmetrics import Metric

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def evaluate_tm(model: nn.Module, data_loader: Batches, metric: Metric, device: torch.device) -> torch.Tensor:
    """The metric of `model` over `data_loader`, as a 0-dim tensor.

    model: maps X (N, C, H, W) to logits (N, num_classes); data_loader yields (X, y), y: (N,).
    """
    model.eval()  # evaluation mode: no dropout, batch norm uses its running statistics
    metric.reset()  # forget the batches of earlier calls
    with torch.no_grad():  # no gradients: saves memory and time
        for X_batch, y_batch in data_loader:
            X_batch, y_batch = X_batch.to(device), y_batch.to(device)
            y_pred = model(X_batch)
            metric.update(y_pred, y_batch)  # add the batch to the metric
    return metric.compute()


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    metric: Metric,
    train_loader: Batches,
    valid_loader: Batches,
    n_epochs: int,
    device: torch.device,
) -> dict[str, list[float]]:
    """Train `model` (already on `device`) for `n_epochs` epochs over `train_loader`.

    Returns the history: per epoch, the mean of the batch losses ("train_losses"), the metric over
    the epoch's training batches ("train_metrics") and over `valid_loader` ("valid_metrics").
    """
    history = {"train_losses": [], "train_metrics": [], "valid_metrics": []}
    for epoch in range(n_epochs):
        total_loss = 0.0
        metric.reset()  # forget the previous epoch's batches
        model.train()  # training mode: dropout on, batch norm uses the batch's statistics
        for X_batch, y_batch in train_loader:
            X_batch, y_batch = X_batch.to(device), y_batch.to(device)  # which device?
            y_pred = model(X_batch)
            loss = loss_fn(y_pred, y_batch)
            # Backpropagation
            optimizer.zero_grad()  # zero the gradients
            loss.backward()  # backward
            optimizer.step()  # update
            total_loss += loss.item()
            metric.update(y_pred, y_batch)
        history["train_losses"].append(total_loss / len(train_loader))  # the mean of the batch losses
        history["train_metrics"].append(metric.compute().item())
        history["valid_metrics"].append(evaluate_tm(model, valid_loader, metric, device).item())  # on valid_loader
        print(
            f"Epoch {epoch + 1}/{n_epochs}, "
            f"train loss: {history['train_losses'][-1]:.4f}, "
            f"train metric: {history['train_metrics'][-1]:.4f}, "
            f"valid metric: {history['valid_metrics'][-1]:.4f}"
        )
    return history
