"""Hidden checks of LeNet and train_ch6: run by `grade batch`, never shipped to students.

They check what the public tests leave out: that `net` treats each image of a batch on its own,
and that `train_ch6` returns what it reports (the last epoch's loss, train and test accuracy).
"""

import math

import pytest
import torch
from torch import nn

from grader.testing import state_of

BATCH = 6
LR, EPOCHS = 0.5, 2


def batch_and_single_logits(sub):
    """Probe: the logits of a batch of 1x28x28 images, and of each image passed alone."""
    x = torch.rand(BATCH, 1, 28, 28, generator=torch.Generator().manual_seed(7))
    net = sub.lenet.net
    with torch.no_grad():
        return {"batch": net(x), "single": torch.cat([net(image.unsqueeze(0)) for image in x])}


@pytest.mark.points(2)
@pytest.mark.task("net")
def test_batch_logits_are_per_image(submission):
    """net: one finite row of 10 logits per image, whatever else is in the batch"""
    logits = submission.run(batch_and_single_logits)
    batch, single = logits["batch"], logits["single"]
    assert list(batch.shape) == [BATCH, 10], f"a batch of {BATCH} images gives {list(batch.shape)}, expected [6, 10]"
    assert torch.isfinite(batch).all(), f"{int((~torch.isfinite(batch)).sum())} logits are NaN or infinite"
    difference = (batch - single).abs().max().item()
    assert difference < 1e-5, f"an image's logits change by up to {difference:.3g} with the rest of its batch"


def linear_probe_model():
    """A linear classifier for 1x4x4 inputs: x (N, 1, 4, 4) -> logits (N, 3)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3))


def random_batches(generator, count, size):
    """`count` batches (x (size, 1, 4, 4) in [0, 1), y (size,) in 0..2)."""
    return [
        (torch.rand(size, 1, 4, 4, generator=generator), torch.randint(0, 3, (size,), generator=generator))
        for _ in range(count)
    ]


def train_and_return(sub):
    """Probe: train_ch6 on a linear model for two epochs; what it returned and the final weights."""
    torch.manual_seed(11)
    generator = torch.Generator().manual_seed(5)
    net = linear_probe_model()
    train, test = random_batches(generator, 3, 8), random_batches(generator, 2, 5)
    returned = sub.training.train_ch6(net, train, test, EPOCHS, LR, torch.device(sub.device))
    values = list(returned) if isinstance(returned, (tuple, list)) else []
    numbers = [
        float(v) for v in values if isinstance(v, (int, float, torch.Tensor)) and torch.as_tensor(v).numel() == 1
    ]
    return {
        "returned": type(returned).__name__,
        "numbers": numbers if len(numbers) == len(values) else [],
        "count": len(values),
        "final": state_of(net),
        "test": test,
    }


@pytest.mark.points(2)
@pytest.mark.task("train_ch6", "evaluate_accuracy_gpu")
def test_train_ch6_returns_last_epoch_metrics(submission):
    """train_ch6: returns the last epoch's train loss, train accuracy and test accuracy"""
    result = submission.run(train_and_return)
    assert result["count"] == 3, f"train_ch6 returned a {result['returned']} of {result['count']} items, expected 3"
    assert result["numbers"], "train_ch6 returned something other than three numbers"
    loss, train_acc, test_acc = result["numbers"]
    assert math.isfinite(loss) and loss > 0, f"the returned train loss is {loss}"
    assert 0 <= train_acc <= 1, f"the returned train accuracy is {train_acc}, not a fraction"
    net = linear_probe_model()
    net.load_state_dict(result["final"])
    with torch.no_grad():
        correct = sum((net(x).argmax(1) == y).sum().item() for x, y in result["test"])
    total = sum(len(y) for _, y in result["test"])
    assert math.isclose(test_acc, correct / total), (
        f"the returned test accuracy is {test_acc:.4f}; the final weights get {correct}/{total} = {correct / total:.4f}"
    )
