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
    None  # evaluation mode: no dropout, batch norm uses its running statistics
    None  # forget the batches of earlier calls
    with torch.no_grad():  # no gradients: saves memory and time
        for X_batch, y_batch in data_loader:
            X_batch, y_batch = X_batch.to(device), y_batch.to(device)
            y_pred = None
            None  # add the batch to the metric
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
        None  # forget the previous epoch's batches
        None  # training mode: dropout on, batch norm uses the batch's statistics
        for X_batch, y_batch in train_loader:
            X_batch, y_batch = None, None  # which device?
            y_pred = None
            loss = None
            # Backpropagation
            None  # zero the gradients
            None  # backward
            None  # update
            total_loss += loss.item()
            metric.update(y_pred, y_batch)
        history["train_losses"].append(None)  # the mean of the batch losses
        history["train_metrics"].append(metric.compute().item())
        history["valid_metrics"].append(None)  # on valid_loader
        print(
            f"Epoch {epoch + 1}/{n_epochs}, "
            f"train loss: {history['train_losses'][-1]:.4f}, "
            f"train metric: {history['train_metrics'][-1]:.4f}, "
            f"valid metric: {history['valid_metrics'][-1]:.4f}"
        )
    return history
