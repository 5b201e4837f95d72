"""train and evaluate_tm (training.py), checked on a tiny BatchNorm network and fixed batches; then a CNN
of cnns.py trained with them.

The probes run the student's functions on a small network that records, at every forward pass,
its mode, whether gradients were on, and the batch size; they spy on `.to()`, `zero_grad()` and
optimizer steps, and snapshot the weights and BatchNorm statistics. The tests then replay the
training here, outside the sandbox, and compare.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from grader.data import TensorBatches, to_float
from grader.testing import accuracy_of, max_difference, moves_to, recording, state_of

LR, EPOCHS = 0.1, 2
TRAIN_BATCH, VALID_BATCH = 4, 3  # different sizes tell training passes from evaluation passes
TRAIN_BATCHES, VALID_BATCHES = 3, 2


class Spy(nn.Module):
    """An identity layer that remembers (training mode?, gradients on?, batch size) at every pass."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append((self.training, torch.is_grad_enabled(), x.shape[0]))
        return x


def tiny_net():
    """A small CNN with BatchNorm for 1x8x8 inputs: x (N, 1, 8, 8) -> logits (N, 10)."""
    return nn.Sequential(
        Spy(), nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(27, 10)
    )


def fixed_batches(seed, count, size):
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.rand(size, 1, 8, 8, generator=generator), torch.randint(0, 10, (size,), generator=generator))
        for _ in range(count)
    ]


class Accuracy:
    """What train and evaluate_tm need of torchmetrics.Accuracy(task="multiclass"): reset, update, compute.

    The tests use this small stand-in: importing torchmetrics costs seconds in every sandbox.
    """

    def __init__(self):
        self.correct, self.count = 0, 0

    def reset(self):
        self.correct, self.count = 0, 0

    def update(self, preds, target):  # preds: logits (N, C), target: (N,)
        self.correct += (preds.argmax(1) == target).sum().item()
        self.count += target.numel()

    def compute(self):
        return torch.tensor(self.correct / self.count if self.count else 0.0)


def train_tiny(sub):
    """Probe: train on the tiny net, SGD, two epochs of three batches, recording what it does."""
    torch.manual_seed(0)
    device = torch.device(sub.device)
    net = tiny_net().to(device)
    initial = state_of(net)
    train, valid = fixed_batches(1, TRAIN_BATCHES, TRAIN_BATCH), fixed_batches(2, VALID_BATCHES, VALID_BATCH)
    x_ids, y_ids = {id(x) for x, _ in train}, {id(y) for _, y in train}
    optimizer = torch.optim.SGD(net.parameters(), lr=LR)
    steps = []
    hook = register_optimizer_step_post_hook(lambda opt, args, kwargs: steps.append(1))
    with recording(
        tensor_to=(torch.Tensor, "to"),
        optimizer_zero_grad=(torch.optim.Optimizer, "zero_grad"),
        module_zero_grad=(nn.Module, "zero_grad"),
    ) as calls:
        try:
            history = sub.training.train(
                net, optimizer, nn.CrossEntropyLoss(), Accuracy(), train, valid, EPOCHS, device
            )
        finally:
            hook.remove()

    def moved(ids):
        return sum(label == "tensor_to" and id(obj) in ids and moves_to(a, k, device) for label, obj, a, k in calls)

    return {
        "x_moved": moved(x_ids),
        "y_moved": moved(y_ids),
        "zero_grads": sum(label.endswith("zero_grad") for label, *_ in calls),
        "steps": len(steps),
        "modes": net[0].seen,
        "initial": initial,
        "final": state_of(net),
        "history": history if isinstance(history, dict) else repr(history)[:200],
    }


def replay(initial, accumulate=False):
    """train's weights and history, recomputed here: SGD on the cross-entropy, then evaluation.

    The SGD step is written out: the first torch.optim step imports torch._dynamo, seconds here.
    """
    net = tiny_net()
    net.load_state_dict(initial)
    history = {"train_losses": [], "train_metrics": [], "valid_metrics": []}
    for _ in range(EPOCHS):
        net.train()
        losses, correct = [], 0
        for x, y in fixed_batches(1, TRAIN_BATCHES, TRAIN_BATCH):
            y_pred = net(x)
            loss = F.cross_entropy(y_pred, y)
            if not accumulate:
                net.zero_grad()
            loss.backward()
            with torch.no_grad():
                for p in net.parameters():
                    p -= LR * p.grad
            losses.append(loss.item())
            correct += (y_pred.argmax(1) == y).sum().item()
        history["train_losses"].append(sum(losses) / len(losses))
        history["train_metrics"].append(correct / (TRAIN_BATCHES * TRAIN_BATCH))
        net.eval()
        with torch.no_grad():
            right = sum((net(x).argmax(1) == y).sum().item() for x, y in fixed_batches(2, VALID_BATCHES, VALID_BATCH))
        history["valid_metrics"].append(right / (VALID_BATCHES * VALID_BATCH))
    return state_of(net), history


def weights(state):
    """A state dict without BatchNorm's statistics, which training mode updates even without an optimizer."""
    return {k: v for k, v in state.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


@pytest.fixture(scope="module")
def trained(submission):
    return submission.run(train_tiny)


BATCHES = TRAIN_BATCHES * EPOCHS


@pytest.mark.points(2)
@pytest.mark.task("train")
def test_train_moves_batches_to_device(trained):
    """train: moves every batch to the device"""
    assert trained["x_moved"] >= BATCHES, f"images X moved to the device in {trained['x_moved']} of {BATCHES} batches"
    assert trained["y_moved"] >= BATCHES, f"labels y moved to the device in {trained['y_moved']} of {BATCHES} batches"


@pytest.mark.points(2)
@pytest.mark.task("train")
def test_train_zeroes_gradients_every_batch(trained):
    """train: zeroes the gradients at every batch"""
    count = trained["zero_grads"]
    assert count, "zero_grad() is never called: gradients pile up from batch to batch"
    assert count >= BATCHES, f"zero_grad() ran {count} times for {BATCHES} batches"


@pytest.mark.points(2)
@pytest.mark.task("train")
def test_train_steps_optimizer_every_batch(trained):
    """train: one optimizer step per batch"""
    steps = trained["steps"]
    assert steps, "the optimizer never steps: call optimizer.step() after loss.backward()"
    assert steps == BATCHES, f"the optimizer stepped {steps} times for {BATCHES} batches"


@pytest.mark.points(4)
@pytest.mark.task("train", "evaluate_tm")
def test_train_update_matches(trained):
    """train: the weights follow the optimizer on loss_fn(model(X), y)"""
    initial, final = trained["initial"], trained["final"]
    assert max_difference(weights(initial), weights(final)) > 0, (
        "the weights never changed: is backward() or optimizer.step() missing?"
    )
    if max_difference(final, replay(initial, accumulate=True)[0]) < 1e-5:
        pytest.fail("the update keeps the previous batches' gradients: zero_grad() is missing")
    difference = max_difference(final, replay(initial)[0])
    assert difference < 1e-4, (
        f"the weights and BatchNorm statistics differ from SGD (lr={LR}) on the cross-entropy of model(X) against y, "
        f"then evaluation, by up to {difference:.3g}"
    )


@pytest.mark.points(3)
@pytest.mark.task("train", "evaluate_tm")
def test_train_and_eval_modes(trained):
    """train: training mode to train, evaluation mode to validate"""
    modes = trained["modes"]
    training = [(mode, grad) for mode, grad, size in modes if size == TRAIN_BATCH]
    validating = [(mode, grad) for mode, grad, size in modes if size == VALID_BATCH]
    assert training, "the model never ran on train_loader"
    assert all(mode for mode, _ in training), "some training batches ran in evaluation mode: call model.train()"
    assert validating, "the model never ran on valid_loader: evaluate it at the end of every epoch"
    assert not any(mode for mode, _ in validating), (
        "the model ran valid_loader in training mode: BatchNorm used each batch's statistics (call model.eval())"
    )


@pytest.mark.points(3)
@pytest.mark.task("train", "evaluate_tm")
def test_train_history(trained):
    """train: the history of losses and metrics, one entry per epoch"""
    history = trained["history"]
    assert isinstance(history, dict), f"train returned {history}, expected the history dict"
    _, expected = replay(trained["initial"])
    for key, values in expected.items():
        got = history.get(key)
        assert isinstance(got, list) and len(got) == EPOCHS, f"history[{key!r}] is {got}, expected {EPOCHS} numbers"
        for epoch, (value, want) in enumerate(zip(got, values, strict=True)):
            hint = {
                "train_losses": "the mean of the epoch's batch losses",
                "train_metrics": "the metric over the epoch's training batches (reset it at the start of each epoch)",
                "valid_metrics": "evaluate_tm on valid_loader",
            }[key]
            assert math.isclose(float(value), want, abs_tol=1e-4), (
                f"history[{key!r}][{epoch}] is {float(value):.4f}, expected {want:.4f}: {hint}"
            )


# --- evaluate_tm ------------------------------------------------------------------------------


def evaluate_tiny(sub):
    """Probe: evaluate_tm on a fixed tiny net (BatchNorm with set running statistics), starting in
    training mode, with a metric that still holds an earlier, wrong update."""
    torch.manual_seed(3)
    device = torch.device(sub.device)
    net = tiny_net()
    with torch.no_grad():
        net[2].running_mean.uniform_(0.2, 0.6)
        net[2].running_var.uniform_(0.05, 0.2)
    batches = fixed_batches(4, 3, 5)
    batches[-1] = (batches[-1][0][:2], batches[-1][1][:2])
    net.eval()
    with torch.no_grad():  # label about half of the images with the model's own prediction
        batches = [(x, torch.where(torch.arange(len(y)) % 2 == 0, net(x).argmax(1), y)) for x, y in batches]
    net.train()
    net.to(device)
    net[0].seen.clear()
    stale = fixed_batches(5, 1, 20)[0][1]
    metric = Accuracy()
    metric.update(F.one_hot((stale + 1) % 10, 10).float().to(device), stale.to(device))  # 20 wrong predictions
    before = state_of(net)
    value = sub.training.evaluate_tm(net, batches, metric, device)
    return {
        "value": float(value),
        "before": before,
        "after": state_of(net),
        "batches": batches,
        "modes": net[0].seen,
    }


@pytest.fixture(scope="module")
def evaluated(submission):
    return submission.run(evaluate_tiny)


@pytest.mark.points(3)
@pytest.mark.task("evaluate_tm")
def test_evaluate_uses_eval_mode(evaluated):
    """evaluate_tm: evaluation mode, so BatchNorm uses and keeps its running statistics"""
    modes = evaluated["modes"]
    assert modes, "evaluate_tm never ran the model"
    assert not any(mode for mode, _, _ in modes), (
        "evaluate_tm ran the model in training mode: BatchNorm normalized with each batch's statistics "
        "and moved its running statistics (call model.eval())"
    )
    difference = max_difference(evaluated["before"], evaluated["after"])
    assert difference == 0, f"evaluate_tm changed the model's weights or statistics by up to {difference:.3g}"


@pytest.mark.points(2)
@pytest.mark.task("evaluate_tm")
def test_evaluate_without_gradients(evaluated):
    """evaluate_tm: no gradients (torch.no_grad())"""
    modes = evaluated["modes"]
    assert modes, "evaluate_tm never ran the model"
    assert not any(grad for _, grad, _ in modes), "evaluate_tm records gradients: run the model under torch.no_grad()"


@pytest.mark.points(3)
@pytest.mark.task("evaluate_tm")
def test_evaluate_value(evaluated):
    """evaluate_tm: the metric over the whole data_loader"""
    net = tiny_net()
    net.load_state_dict(evaluated["before"])
    net.eval()
    with torch.no_grad():
        correct = sum((net(x).argmax(1) == y).sum().item() for x, y in evaluated["batches"])
    total = sum(len(y) for _, y in evaluated["batches"])
    got = evaluated["value"]
    if math.isclose(got, correct / (total + 20), abs_tol=1e-6):
        pytest.fail("evaluate_tm counted the metric's earlier updates: call metric.reset() first")
    assert math.isclose(got, correct / total, abs_tol=1e-6), (
        f"evaluate_tm returned {got:.4f}, expected {correct}/{total} = {correct / total:.4f}"
    )


# --- a CNN trained with train -----------------------------------------------------------------

MODELS = {"BatchNormCNN": "BatchNormCNN(10)", "fashion_cnn": "fashion_cnn()"}  # the profile's budget picks one


def train_and_predict(sub, train_x, train_y, test_x, budget):
    """Probe: train the profile's CNN with the student's train and AdamW, then predict the test images.

    A fixed random part of the training images (val_size) is the validation set: the classes of a
    split may come sorted. The test labels never come here: the grader scores the predictions itself.
    """
    device = torch.device(sub.device)
    x, y = to_float(train_x).to(device), train_y.to(device)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0)).to(device)
    valid, rest = order[: budget["val_size"]], order[budget["val_size"] :]
    train_loader = TensorBatches(x[rest], y[rest], budget["batch_size"], shuffle=True)
    valid_loader = TensorBatches(x[valid], y[valid], 1000)
    model = (sub.cnns.fashion_cnn() if budget["model"] == "fashion_cnn" else sub.cnns.BatchNormCNN(10)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=budget["lr"])
    loss_fn, epochs = nn.CrossEntropyLoss(), budget["epochs"]
    sub.training.train(model, optimizer, loss_fn, Accuracy(), train_loader, valid_loader, epochs, device)
    model.eval()
    with torch.no_grad():
        return torch.cat([model(batch.to(device)).argmax(1).cpu() for batch in to_float(test_x).split(1000)])


@pytest.mark.points(8)
@pytest.mark.accuracy
@pytest.mark.task("BatchNormCNN", "fashion_cnn", "train", "evaluate_tm")
def test_trained_accuracy(submission, profile, dataset, record_property):
    """train: trained test accuracy (quick: BatchNormCNN on MNIST 5k; full: fashion_cnn on Fashion-MNIST)"""
    budget = profile.budget
    assert budget["model"] in MODELS, f"the profile names an unknown model {budget['model']!r}"
    predictions = submission.run(train_and_predict, dataset.train.x, dataset.train.y, dataset.test.x, budget)
    accuracy = accuracy_of(predictions, dataset.test.y)
    record_property("accuracy", round(accuracy, 4))
    record_property("min_accuracy", profile.min_accuracy)
    assert accuracy >= profile.min_accuracy, (
        f"{MODELS[budget['model']]} reached {accuracy:.1%} test accuracy, below the {profile.min_accuracy:.0%} "
        f"required ({budget['epochs']} epochs of batch {budget['batch_size']}, AdamW lr {budget['lr']}, "
        f"on {dataset.name})"
    )
