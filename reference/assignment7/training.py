"""Training with validation every epoch, keeping the best model, and reading its mistakes.

`loader` is anything that yields batches (x, y): x (N, 3, H, W) float, y (N,) int64; a torch
DataLoader, or the grader's tensor batches. The note's choices: the cross-entropy loss, SGD with
momentum 0.9.
"""

import copy
from collections.abc import Iterable

import torch
from torch import nn


def train_one_epoch(
    model: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer, device: torch.device | str
) -> float:
    """One pass over `loader` in training mode: for each batch, the gradients zeroed, the
    cross-entropy loss, backpropagation and an optimizer step. Returns the mean of the batch losses."""
    model.train()  # training mode
    criterion = nn.CrossEntropyLoss()
    total, batches = 0.0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)  # the batch on the model's device
        optimizer.zero_grad()  # zero the gradients: backward() adds to them
        loss = criterion(model(x), y)  # the batch's loss
        loss.backward()  # backpropagation
        optimizer.step()  # update the weights
        total += loss.item()
        batches += 1
    return total / batches  # the mean batch loss


def evaluate(model: nn.Module, loader: Iterable, device: torch.device | str) -> tuple[float, float]:
    """(mean cross-entropy per image, fraction of images classified right) over `loader`, in
    evaluation mode and without gradients."""
    model.eval()  # evaluation mode
    criterion = nn.CrossEntropyLoss(reduction="sum")
    loss, correct, count = 0.0, 0, 0
    with torch.no_grad():  # no gradients: nothing is learned here
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            logits = model(x)
            loss += criterion(logits, y).item()  # the sum of the images' losses
            correct += (logits.argmax(dim=1) == y).sum().item()  # the images classified right
            count += len(y)
    return loss / count, correct / count  # per image, not per batch


def fit(
    model: nn.Module, train_loader: Iterable, val_loader: Iterable, epochs: int, lr: float, device: torch.device | str
) -> dict[str, list[float] | int]:
    """Train for `epochs` with SGD (momentum 0.9, learning rate `lr`), validating after each epoch.

    The model ends with the weights of the epoch whose validation accuracy was highest (the first
    such epoch on a tie). Returns the history: "train_loss", "val_loss", "val_accuracy" (one value
    per epoch) and "best_epoch" (counted from 1).
    """
    model.to(device)  # the model on the device
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    history = {"train_loss": [], "val_loss": [], "val_accuracy": [], "best_epoch": 0}
    best_accuracy, best_state = -1.0, None  # None: no weights kept yet, not a blank
    for epoch in range(1, epochs + 1):
        history["train_loss"].append(train_one_epoch(model, train_loader, optimizer, device))
        val_loss, val_accuracy = evaluate(model, val_loader, device)  # validate after each epoch
        history["val_loss"].append(val_loss)
        history["val_accuracy"].append(val_accuracy)
        if val_accuracy > best_accuracy:  # the best so far: keep a copy of its weights
            best_accuracy, history["best_epoch"] = val_accuracy, epoch
            best_state = copy.deepcopy(model.state_dict())  # a copy: state_dict() shares the live tensors
    model.load_state_dict(best_state)  # back to the best epoch's weights
    return history


def predict(model: nn.Module, loader: Iterable, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted classes, true labels) over `loader`, both (N,) int64 on the CPU, in evaluation mode."""
    model.eval()
    predicted, labels = [], []
    with torch.no_grad():
        for x, y in loader:
            predicted.append(model(x.to(device)).argmax(dim=1).cpu())
            labels.append(y.cpu())
    return torch.cat(predicted), torch.cat(labels)


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) int64 counts from predictions and true labels, both (N,) int64:
    entry [t, p] counts the images of true class t predicted as p (rows: true, columns: predicted)."""
    matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    for t, p in zip(labels.tolist(), predicted.tolist(), strict=True):
        matrix[t, p] += 1  # one more image of class t predicted as p
    return matrix


def per_class_accuracy(matrix: torch.Tensor) -> torch.Tensor:
    """From a confusion matrix (rows: true classes), each class's accuracy: the fraction of its
    images predicted right, float (num_classes,). A class without images has no accuracy: nan."""
    right = matrix.diagonal().double()  # the images of each class predicted as that class
    images = matrix.sum(dim=1).double()  # the images of each class
    return right / images  # 0 / 0 is nan: a class without images
