"""Training and evaluating a classifier on a device: `train_ch6` of the d2l book, without d2l.

`grader.d2l` provides the few d2l helpers used here (Accumulator, accuracy, Timer, Animator).
"""

import torch
from torch import nn

from grader import d2l


def evaluate_accuracy_gpu(net, data_iter, device=None):
    """The fraction of correct predictions of `net` over `data_iter`, computed on `device`.

    net: maps X (N, C, H, W) to logits (N, num_classes); data_iter yields (X, y), y: (N,).
    Without `device`, the device of the model's parameters.
    """
    if isinstance(net, nn.Module):
        None  # evaluation mode: no dropout, batch norm uses its running statistics
        if not device:
            device = next(iter(net.parameters())).device
    metric = d2l.Accumulator(2)  # correct predictions, predictions
    with torch.no_grad():
        for X, y in data_iter:
            if isinstance(X, list):
                X = [x.to(device) for x in X]
            else:
                X = X.to(device)
            y = y.to(device)
            metric.add(None, None)  # correct predictions in this batch, its size
    return metric[0] / metric[1]


def train_ch6(net, train_iter, test_iter, num_epochs, lr, device):
    """Train `net` with minibatch SGD on the cross-entropy loss, on `device`.

    Returns the last epoch's (train loss, train accuracy, test accuracy).
    """

    def init_weights(m):
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(m.weight)

    net.apply(init_weights)
    print("training on", device)
    None  # move the model to the device
    None  # the optimizer
    None  # the loss function
    animator = d2l.Animator(xlabel="epoch", xlim=[1, num_epochs], legend=["train loss", "train acc", "test acc"])
    timer, num_batches = d2l.Timer(), len(train_iter)
    for epoch in range(None):
        # Sum of training loss, sum of training accuracy, no. of examples
        metric = d2l.Accumulator(3)
        net.train()
        for i, (X, y) in enumerate(None):
            timer.start()
            None  # zero the gradients
            X, y = None, None  # which device?
            y_hat = None
            batch_loss = None  # the loss
            None  # backward
            None  # update
            with torch.no_grad():
                metric.add(batch_loss * X.shape[0], d2l.accuracy(y_hat, y), X.shape[0])
            timer.stop()
            train_l = metric[0] / metric[2]
            train_acc = metric[1] / metric[2]
            # max(..., 1): the book's `num_batches // 5` divides by zero below 5 batches
            if (i + 1) % max(num_batches // 5, 1) == 0 or i == num_batches - 1:
                animator.add(epoch + (i + 1) / num_batches, (train_l, train_acc, None))  # None: no point, not a blank
        test_acc = None  # evaluate the model on test_iter
        animator.add(epoch + 1, (None, None, test_acc))  # these Nones: no point, not blanks
    print(f"loss {train_l:.3f}, train acc {train_acc:.3f}, test acc {test_acc:.3f}")
    print(f"{metric[2] * num_epochs / timer.sum():.1f} examples/sec on {device}")
    return train_l, train_acc, test_acc
