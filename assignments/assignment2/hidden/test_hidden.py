"""Hidden checks of LeNet and train_ch6: run by `grade batch`, never shipped to students.

They check what the public tests leave out: that `net` treats each image of a batch on its own,
and that `train_ch6` returns what it reports (the last epoch's loss, train and test accuracy).
"""

import math

import pytest
import torch

from grader.i18n import _
from grader.probing import fill
from grader.testing import derived_seed, generator, official_for, probes_for

probes = probes_for(__file__)
lenet = official_for(__file__).lenet  # hidden tests never leave the kit
BATCH = 6
LR, EPOCHS = 0.5, 2


@pytest.mark.points(2)
@pytest.mark.task("net")
def test_batch_logits_are_per_image(submission):
    """net: one finite row of 10 logits per image, whatever else is in the batch"""
    x = torch.rand(BATCH, 1, 28, 28, generator=generator("hidden batch"))
    net, seed = lenet(), derived_seed("hidden weights")
    fill(net, seed)
    logits = submission.run(probes.batch_and_single_logits, x, seed)
    batch, single = logits["batch"], logits["single"]
    assert list(batch.shape) == [BATCH, 10], _("a batch of {batch} images gives {shape}, expected [6, 10]").format(
        batch=BATCH, shape=list(batch.shape)
    )
    assert torch.isfinite(batch).all(), _("{sum} logits are NaN or infinite").format(
        sum=int((~torch.isfinite(batch)).sum())
    )
    difference = (batch - single).abs().max().item()
    assert difference < 1e-5, _("an image's logits change by up to {difference:.3g} with the rest of its batch").format(
        difference=difference
    )
    with torch.no_grad():  # with the same weights, the net must compute LeNet's logits
        off = (net(x) - batch).abs().max().item()
    assert off < 1e-4, _("the logits are not LeNet's (off by {off:.3g})").format(off=off)


def random_batches(rng, count, size):
    """`count` batches (x (size, 1, 4, 4) in [0, 1), y (size,) in 0..2)."""
    return [
        (torch.rand(size, 1, 4, 4, generator=rng), torch.randint(0, 3, (size,), generator=rng)) for _ in range(count)
    ]


@pytest.mark.points(2)
@pytest.mark.training
@pytest.mark.task("train_ch6", "evaluate_accuracy_gpu")
def test_train_ch6_returns_last_epoch_metrics(submission):
    """train_ch6: returns the last epoch's train loss, train accuracy and test accuracy"""
    rng = generator("hidden train_ch6")
    train, test = random_batches(rng, 3, 8), random_batches(rng, 2, 5)
    result = submission.run(probes.train_and_return, train, test, EPOCHS, LR)
    assert result["count"] == 3, _("train_ch6 returned {count} items, expected 3").format(count=result["count"])
    assert result["numbers"], _("train_ch6 returned something other than three numbers")
    loss, train_acc, test_acc = result["numbers"]
    assert math.isfinite(loss) and loss > 0, _("the returned train loss is {loss}").format(loss=loss)
    assert 0 <= train_acc <= 1, _("the returned train accuracy is {train_acc}, not a fraction").format(
        train_acc=train_acc
    )
    net = probes.linear_model()
    net.load_state_dict(result["final"])
    with torch.no_grad():
        correct = sum((net(x).argmax(1) == y).sum().item() for x, y in test)
    total = sum(len(y) for _, y in test)
    assert math.isclose(test_acc, correct / total), _(
        "the returned test accuracy is {test_acc:.4f}; the final weights get {correct}/{total} = {correct2:.4f}"
    ).format(test_acc=test_acc, correct=correct, total=total, correct2=correct / total)
