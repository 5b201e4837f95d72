"""The probes of assignment2: they run in the sandbox, on inputs the grader chose, and return data.

No expected value lives here: the tests (tests/*.py) compare what comes back with their own
computation. `sub.lenet` and `sub.training` are the student's modules, `sub.device` the device.
"""

import math

import torch
from torch import nn

from grader import d2l
from grader.probing import (
    ModeSpy,
    TensorBatches,
    fill,
    layer_outputs,
    record_training,
    recording,
    state_of,
    to_float,
)


def lenet_outputs(sub, x, seed):
    """Each layer's parameter count, then, with weights drawn from the grader's `seed`, each layer's
    output for the images x (N, 1, 28, 28)."""
    net = sub.lenet.net
    counts = [sum(p.numel() for p in layer.parameters()) for layer in net.children()]
    fill(net, seed)
    return {"counts": counts, "layers": layer_outputs(net, x)}


def tiny_net():
    """A LeNet in miniature for 1x8x8 inputs, with batch norm, whose running statistics change
    only in training mode: x (N, 1, 8, 8) -> logits (N, 10). Its first layer records the modes."""
    return nn.Sequential(
        ModeSpy(), nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Sigmoid(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(27, 10)
    )


def train_tiny(sub, train, test, epochs, lr):
    """train_ch6 on the tiny net: the weights it started from (after its own init), after every
    optimizer step and at the end, and what it called on the way (grader.probing.record_training)."""
    net = tiny_net()
    device = torch.device(sub.device)
    record = record_training(net, train, device, lambda: sub.training.train_ch6(net, train, test, epochs, lr, device))
    del record["result"]  # train_ch6's (loss, accuracy, accuracy) is not graded
    return record


def evaluate_tiny(sub, state, batches):
    """evaluate_accuracy_gpu on the tiny net with the given weights, handed over in training mode."""
    net = tiny_net()
    net.load_state_dict(state)
    net.train()
    accuracy = sub.training.evaluate_accuracy_gpu(net, batches, torch.device(sub.device))
    return {"accuracy": float(accuracy), "state": state_of(net), "modes": net[0].seen}


def train_lenet(sub, train_x, train_y, budget):
    """The student's LeNet trained by the student's train_ch6 on the grader's training images: its
    weights, and the points train_ch6 handed its d2l Animator (for the report's picture only).

    No test image comes here: the grader evaluates the weights itself.
    """
    device = torch.device(sub.device)
    x, y = to_float(train_x).to(device), train_y.to(device)
    train_iter = TensorBatches(x, y, budget["batch_size"], shuffle=True)
    every = len(y) // budget["val_size"]  # a strided slice: the training images are sorted by class
    validation = TensorBatches(x[::every][: budget["val_size"]], y[::every][: budget["val_size"]], 1000)
    epochs = budget.get("epochs") or math.ceil(budget["steps"] / len(train_iter))
    net = sub.lenet.net
    with recording(animator=(d2l.Animator, "add")) as calls:
        sub.training.train_ch6(net, train_iter, validation, epochs, budget["lr"], device)
    return {"state": state_of(net), "history": plotted(calls)}


def plotted(calls):
    """The points the last d2l Animator called kept, {legend: [(x, y), ...]}, as numbers; {} when
    there are none to take. Only a picture is made of them: this never fails the probe."""
    try:
        history = calls[-1][1].history
        return {
            str(name)[:40]: [(float(x), float(y)) for x, y in points[-5000:]]
            for name, points in list(history.items())[:6]
        }
    except Exception:
        return {}
