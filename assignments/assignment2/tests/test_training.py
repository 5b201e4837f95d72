"""train_ch6 and evaluate_accuracy_gpu (training.py), checked on a tiny model and fixed batches.

The probes run the student's functions on a small network that records, at every forward pass,
whether it was in training mode; they spy on `.to()`, `zero_grad()` and optimizer steps, and
snapshot the weights. The tests then compare with SGD recomputed here, outside the sandbox.
"""

import math

import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from grader.data import TensorBatches, to_float
from grader.testing import TRAINING_CALLS, accuracy_of, max_difference, moves_to, recording, state_of

LR, EPOCHS = 0.1, 1
TRAIN_BATCH, TEST_BATCH = 4, 3  # different sizes tell training passes from evaluation passes


class ModeSpy(nn.Module):
    """An identity layer that remembers (training mode?, batch size) at every forward pass."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append((self.training, x.shape[0]))
        return x


def tiny_net():
    """A LeNet in miniature for 1x8x8 inputs: x (N, 1, 8, 8) -> logits (N, 10)."""
    return nn.Sequential(ModeSpy(), nn.Conv2d(1, 3, 3), nn.Sigmoid(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(27, 10))


def fixed_batches(seed, count, size):
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.rand(size, 1, 8, 8, generator=generator), torch.randint(0, 10, (size,), generator=generator))
        for _ in range(count)
    ]


def train_tiny(sub):
    """Probe: train_ch6 on the tiny net for one epoch of two batches, recording what it does."""
    torch.manual_seed(0)
    net = tiny_net()
    train, test = fixed_batches(1, 2, TRAIN_BATCH), fixed_batches(2, 2, TEST_BATCH)
    x_ids, y_ids = {id(x) for x, _ in train}, {id(y) for _, y in train}
    initial = {}

    def snapshot(module, args):  # the weights train_ch6 starts from, after its own init
        if not initial:
            initial.update(state_of(module))

    net.register_forward_pre_hook(snapshot)
    steps = []
    hook = register_optimizer_step_post_hook(lambda opt, args, kwargs: steps.append(1))
    device = torch.device(sub.device)
    with recording(**TRAINING_CALLS) as calls:
        try:
            sub.training.train_ch6(net, train, test, EPOCHS, LR, device)
        finally:
            hook.remove()

    def moved(ids):
        return sum(label == "tensor_to" and id(obj) in ids and moves_to(a, k, device) for label, obj, a, k in calls)

    return {
        "net_moved": any(label == "module_to" and obj is net and moves_to(a, k, device) for label, obj, a, k in calls),
        "x_moved": moved(x_ids),
        "y_moved": moved(y_ids),
        "batches": len(train) * EPOCHS,
        "zero_grads": sum(label.endswith("zero_grad") for label, *_ in calls),
        "steps": len(steps),
        "modes": net[0].seen,
        "initial": initial,
        "final": state_of(net),
    }


def sgd_reference(initial, accumulate=False):
    """The weights after train_ch6's SGD on the same batches, recomputed here."""
    net = tiny_net()
    net.load_state_dict(initial)
    optimizer = torch.optim.SGD(net.parameters(), lr=LR)
    loss = nn.CrossEntropyLoss()
    for _ in range(EPOCHS):
        for x, y in fixed_batches(1, 2, TRAIN_BATCH):
            if not accumulate:
                optimizer.zero_grad()
            loss(net(x), y).backward()
            optimizer.step()
    return state_of(net)


@pytest.fixture(scope="module")
def trained(submission):
    return submission.run(train_tiny)


@pytest.mark.points(3)
@pytest.mark.task("train_ch6")
def test_moves_model_and_batches_to_device(trained):
    """train_ch6: moves the model and every batch to the device"""
    assert trained["net_moved"], "the model is never moved to the device: call net.to(device)"
    batches = trained["batches"]
    assert trained["x_moved"] >= batches, f"images X moved to the device in {trained['x_moved']} of {batches} batches"
    assert trained["y_moved"] >= batches, f"labels y moved to the device in {trained['y_moved']} of {batches} batches"


@pytest.mark.points(3)
@pytest.mark.task("train_ch6")
def test_zeroes_gradients_every_batch(trained):
    """train_ch6: zeroes the gradients before every batch"""
    count, batches = trained["zero_grads"], trained["batches"]
    assert count, "zero_grad() is never called: gradients pile up from batch to batch"
    assert count >= batches, f"zero_grad() ran {count} times for {batches} batches"


@pytest.mark.points(2)
@pytest.mark.task("train_ch6")
def test_steps_optimizer_every_batch(trained):
    """train_ch6: one optimizer step per batch"""
    steps, batches = trained["steps"], trained["batches"]
    assert steps, "the optimizer never steps: call optimizer.step() after backward()"
    assert steps == batches, f"the optimizer stepped {steps} times for {batches} batches"


@pytest.mark.points(5)
@pytest.mark.task("train_ch6")
def test_sgd_update_matches(trained):
    """train_ch6: the weights follow SGD on the cross-entropy"""
    initial, final = trained["initial"], trained["final"]
    assert initial, "the model never ran a forward pass during training"
    assert max_difference(initial, final) > 0, "the weights never changed: is backward() or optimizer.step() missing?"
    if max_difference(final, sgd_reference(initial, accumulate=True)) < 1e-5:
        pytest.fail("the update keeps the previous batch's gradients: zero_grad() comes too late or not at all")
    difference = max_difference(final, sgd_reference(initial))
    assert difference < 1e-5, (
        f"the weights differ from SGD (lr={LR}) on the cross-entropy of net(X) against y by up to {difference:.3g}"
    )


@pytest.mark.points(3)
@pytest.mark.task("train_ch6", "evaluate_accuracy_gpu")
def test_train_and_eval_modes(trained):
    """train_ch6: training mode to train, evaluation mode to test"""
    modes = trained["modes"]
    training = [mode for mode, size in modes if size == TRAIN_BATCH]
    testing = [mode for mode, size in modes if size == TEST_BATCH]
    assert training and all(training), "some training batches ran in evaluation mode: call net.train()"
    assert testing, "the model never ran on test_iter: evaluate it at the end of every epoch"
    assert not any(testing), "the model evaluated test_iter in training mode: call net.eval() first"


def evaluate_tiny(sub):
    """Probe: evaluate_accuracy_gpu on a fixed tiny net, starting in training mode, uneven batches."""
    torch.manual_seed(3)
    net = tiny_net()
    batches = fixed_batches(4, 3, 5)
    batches[-1] = (batches[-1][0][:2], batches[-1][1][:2])
    with torch.no_grad():  # label about half of the images with the model's own prediction
        batches = [(x, torch.where(torch.arange(len(y)) % 2 == 0, net(x).argmax(1), y)) for x, y in batches]
    net[0].seen.clear()
    state = state_of(net)
    accuracy = sub.training.evaluate_accuracy_gpu(net, batches, torch.device(sub.device))
    return {"accuracy": float(accuracy), "state": state, "batches": batches, "modes": net[0].seen}


@pytest.fixture(scope="module")
def evaluated(submission):
    return submission.run(evaluate_tiny)


@pytest.mark.points(3)
@pytest.mark.task("evaluate_accuracy_gpu")
def test_evaluate_accuracy_matches(evaluated):
    """evaluate_accuracy_gpu: the fraction of correct predictions"""
    net = tiny_net()
    net.load_state_dict(evaluated["state"])
    net.eval()
    with torch.no_grad():
        correct = sum((net(x).argmax(1) == y).sum().item() for x, y in evaluated["batches"])
    total = sum(len(y) for _, y in evaluated["batches"])
    got = evaluated["accuracy"]
    assert math.isclose(got, correct / total), (
        f"evaluate_accuracy_gpu returned {got:.4f}, expected {correct}/{total} = {correct / total:.4f}"
    )


@pytest.mark.points(2)
@pytest.mark.task("evaluate_accuracy_gpu")
def test_evaluate_uses_eval_mode(evaluated):
    """evaluate_accuracy_gpu: evaluation mode"""
    modes = evaluated["modes"]
    assert modes, "evaluate_accuracy_gpu never ran the model"
    assert not any(mode for mode, _ in modes), "evaluate_accuracy_gpu ran the model in training mode: call net.eval()"


def train_lenet_and_predict(sub, train_x, train_y, test_x, budget):
    """Probe: train the student's LeNet with the student's train_ch6, then predict the test images.

    The test labels never come here: the grader scores the predictions itself.
    """
    device = torch.device(sub.device)
    x, y = to_float(train_x).to(device), train_y.to(device)
    train_iter = TensorBatches(x, y, budget["batch_size"], shuffle=True)
    every = len(y) // budget["val_size"]  # a strided slice: the training images are sorted by class
    validation = TensorBatches(x[::every][: budget["val_size"]], y[::every][: budget["val_size"]], 1000)
    epochs = budget.get("epochs") or math.ceil(budget["steps"] / len(train_iter))
    net = sub.lenet.net
    sub.training.train_ch6(net, train_iter, validation, epochs, budget["lr"], device)
    net.eval()
    with torch.no_grad():
        return torch.cat([net(batch.to(device)).argmax(1).cpu() for batch in to_float(test_x).split(1000)])


@pytest.mark.points(10)
@pytest.mark.accuracy
@pytest.mark.task("net", "train_ch6", "evaluate_accuracy_gpu")
def test_trained_accuracy(submission, profile, dataset, record_property):
    """net + train_ch6: trained test accuracy"""
    predictions = submission.run(
        train_lenet_and_predict, dataset.train.x, dataset.train.y, dataset.test.x, profile.budget
    )
    accuracy = accuracy_of(predictions, dataset.test.y)
    record_property("accuracy", round(accuracy, 4))
    record_property("min_accuracy", profile.min_accuracy)
    budget = profile.budget
    spent = f"{budget['steps']:,} steps" if "steps" in budget else f"{budget['epochs']} epochs"
    assert accuracy >= profile.min_accuracy, (
        f"test accuracy {accuracy:.1%} is below the {profile.min_accuracy:.0%} required ({spent} on {dataset.name})"
    )
