"""train, evaluate and confusion_matrix (training.py), checked on tiny networks and fixed batches.

The probes run the student's functions on a miniature CNN for 1x8x8 images. A hook records, at
every forward pass, the model's weights, its mode and whether gradients are on; spies count
`.to()`, `zero_grad()` and optimizer steps. The tests then recompute here, outside the sandbox,
what the optimizer, the loss and the metrics should have given. These probes run on the CPU in
every profile, so that the recomputation matches to 1e-5; the accuracy tests use the profile's
device.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from grader.testing import TRAINING_CALLS, max_difference, moves_to, recording, state_of

SGD_LR, ADAMW_LR, EPOCHS, BATCH = 0.05, 0.01, 2, 4
BATCHES_PER_EPOCH = 3
NUM_CLASSES = 10


def tiny_net(dropout=0.0):
    """A MnistCNN in miniature: x (N, 1, 8, 8) -> conv 3x3 (6x6) -> ReLU -> pool (3x3) -> logits (N, 10)."""
    return nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(dropout), nn.Linear(27, 10)
    )


def fixed_batches(seed, sizes):
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.rand(n, 1, 8, 8, generator=generator), torch.randint(0, NUM_CLASSES, (n,), generator=generator))
        for n in sizes
    ]


def train_batches():
    return fixed_batches(1, [BATCH] * BATCHES_PER_EPOCH)


def record_forwards(net):
    """Append (weights, training mode, gradients on, input) to a list at every forward pass of `net`."""
    seen = []
    net.register_forward_pre_hook(
        lambda m, args: seen.append(
            {"state": state_of(m), "training": m.training, "grad": torch.is_grad_enabled(), "x": args[0].cpu()}
        )
    )
    return seen


def as_number(value):
    """A float for a number or a one-element tensor; the name of its type for anything else."""
    if isinstance(value, (int, float)) or (isinstance(value, torch.Tensor) and value.numel() == 1):
        return float(value)
    return type(value).__name__


def train_tiny(sub, optimizer):
    """Probe: train() on the tiny net for 2 epochs of 3 batches, starting in evaluation mode."""
    torch.manual_seed(0)
    net = tiny_net().eval()  # as evaluate() leaves a model: train() must switch training mode back on
    batches = train_batches()
    forwards = record_forwards(net)
    steps = []
    hook = register_optimizer_step_post_hook(
        lambda opt, args, kwargs: steps.append(
            {
                "type": type(opt).__name__,
                "lr": opt.param_groups[0]["lr"],
                "momentum": opt.param_groups[0].get("momentum"),
            }
        )
    )
    device = torch.device("cpu")
    x_ids, y_ids = {id(x) for x, _ in batches}, {id(y) for _, y in batches}
    with recording(**TRAINING_CALLS) as calls:
        try:
            if optimizer == "sgd":  # the default
                losses = sub.training.train(net, batches, EPOCHS, SGD_LR, device)
            else:
                losses = sub.training.train(net, batches, EPOCHS, ADAMW_LR, device, optimizer=optimizer)
        finally:
            hook.remove()

    def moved(ids):
        return sum(label == "tensor_to" and id(obj) in ids and moves_to(a, k, device) for label, obj, a, k in calls)

    return {
        "losses": [as_number(v) for v in losses] if isinstance(losses, (list, tuple)) else as_number(losses),
        "forwards": forwards,
        "final": state_of(net),
        "steps": steps,
        "zero_grads": sum(label.endswith("zero_grad") for label, *_ in calls),
        "net_moved": any(label == "module_to" and obj is net and moves_to(a, k, device) for label, obj, a, k in calls),
        "x_moved": moved(x_ids),
        "y_moved": moved(y_ids),
    }


def optimizer_reference(initial, optimizer, accumulate=False):
    """The weights after 2 epochs of `optimizer` on the fixed batches, recomputed here."""
    net = tiny_net()
    net.load_state_dict(initial)
    if optimizer == "sgd":
        opt = torch.optim.SGD(net.parameters(), lr=SGD_LR, momentum=0.9)
    else:
        opt = torch.optim.AdamW(net.parameters(), lr=ADAMW_LR)
    for _ in range(EPOCHS):
        for x, y in train_batches():
            if not accumulate:
                opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
    return state_of(net)


def check_update(trained, optimizer, kind, lr, momentum=None):
    """The optimizer seen at each step, then the final weights against the recomputed ones."""
    steps, forwards = trained["steps"], trained["forwards"]
    assert steps, "the optimizer never steps: call optimizer.step() after loss.backward()"
    first = steps[0]
    assert first["type"] == kind, f"train(optimizer={optimizer!r}) trains with {first['type']}, expected {kind}"
    assert first["lr"] == lr, f"the optimizer's learning rate is {first['lr']}, expected the lr passed to train, {lr}"
    if momentum is not None:
        assert first["momentum"] == momentum, f"SGD's momentum is {first['momentum']}, expected {momentum}"
    assert forwards, "the model never ran a forward pass during training"
    initial, final = forwards[0]["state"], trained["final"]
    assert max_difference(initial, final) > 0, (
        "the weights never changed: is loss.backward() or optimizer.step() missing?"
    )
    assert max_difference(final, optimizer_reference(initial, optimizer, accumulate=True)) > 1e-5, (
        "the update keeps the previous batches' gradients: call optimizer.zero_grad() before every backward()"
    )
    difference = max_difference(final, optimizer_reference(initial, optimizer))
    assert difference < 1e-5, (
        f"the weights differ from {kind} (lr={lr}) on the cross-entropy of model(images) against labels"
        f" by up to {difference:.3g}"
    )


@pytest.fixture(scope="module")
def trained(submission):
    return submission.run(train_tiny, "sgd")


@pytest.mark.points(2)
@pytest.mark.task("train")
def test_train_moves_to_device(trained):
    """train: moves the model and every batch to the device"""
    assert trained["net_moved"], "the model is never moved to the device: call model.to(device)"
    batches = EPOCHS * BATCHES_PER_EPOCH
    assert trained["x_moved"] >= batches, f"images moved to the device in {trained['x_moved']} of {batches} batches"
    assert trained["y_moved"] >= batches, f"labels moved to the device in {trained['y_moved']} of {batches} batches"


@pytest.mark.points(2)
@pytest.mark.task("train")
def test_train_zeroes_gradients(trained):
    """train: zeroes the gradients before every batch"""
    count, batches = trained["zero_grads"], EPOCHS * BATCHES_PER_EPOCH
    assert count, "zero_grad() is never called: gradients pile up from batch to batch"
    assert count >= batches, f"zero_grad() ran {count} times for {batches} batches"


@pytest.mark.points(2)
@pytest.mark.task("train")
def test_train_steps_every_batch(trained):
    """train: one optimizer step per batch"""
    steps, batches = len(trained["steps"]), EPOCHS * BATCHES_PER_EPOCH
    assert steps, "the optimizer never steps: call optimizer.step() after loss.backward()"
    assert steps == batches, f"the optimizer stepped {steps} times for {EPOCHS} epochs of {BATCHES_PER_EPOCH} batches"


@pytest.mark.points(4)
@pytest.mark.task("train", "make_optimizer")
def test_train_sgd_momentum(trained):
    """train: SGD with momentum 0.9 at the learning rate given"""
    check_update(trained, "sgd", "SGD", SGD_LR, momentum=0.9)


@pytest.mark.points(2)
@pytest.mark.task("train", "make_optimizer")
def test_train_adamw(submission):
    """train: AdamW when optimizer="adamw" (practice 1)"""
    check_update(submission.run(train_tiny, "adamw"), "adamw", "AdamW", ADAMW_LR)


@pytest.mark.points(2)
@pytest.mark.task("train")
def test_train_uses_training_mode(trained):
    """train: training mode for every batch"""
    modes = [f["training"] for f in trained["forwards"]]
    assert modes, "the model never ran a forward pass during training"
    assert all(modes), (
        f"{modes.count(False)} of {len(modes)} training batches ran in evaluation mode (dropout off):"
        " call model.train() at the start of each epoch"
    )


@pytest.mark.points(3)
@pytest.mark.task("train")
def test_train_returns_epoch_losses(trained):
    """train: returns the mean batch loss of each epoch"""
    losses, forwards = trained["losses"], trained["forwards"]
    assert isinstance(losses, list), f"train returned a {losses}, expected a list of {EPOCHS} losses, one per epoch"
    assert len(losses) == EPOCHS, f"train returned {len(losses)} losses for {EPOCHS} epochs: append one per epoch"
    assert all(isinstance(v, float) for v in losses), f"train returned {losses}, expected numbers (loss.item())"
    batches = EPOCHS * BATCHES_PER_EPOCH
    assert len(forwards) == batches, f"the model ran {len(forwards)} forward passes for {batches} batches"
    # Each batch's loss under the weights the model had when it saw the batch.
    net, batch_losses = tiny_net(), []
    for forward in forwards:
        labels = [y for x, y in train_batches() if torch.equal(x, forward["x"])]
        assert labels, "the model ran on images that are not one of the training batches"
        net.load_state_dict(forward["state"])
        with torch.no_grad():
            batch_losses.append(F.cross_entropy(net(forward["x"]), labels[0]).item())
    expected = [
        sum(batch_losses[i : i + BATCHES_PER_EPOCH]) / BATCHES_PER_EPOCH for i in range(0, batches, BATCHES_PER_EPOCH)
    ]
    shown = ", ".join(f"{v:.4f}" for v in losses), ", ".join(f"{v:.4f}" for v in expected)
    if all(math.isclose(g, e * BATCHES_PER_EPOCH, rel_tol=1e-4) for g, e in zip(losses, expected, strict=True)):
        raise AssertionError(f"train returned [{shown[0]}], the sums of the batch losses: divide by the batch count")
    assert all(math.isclose(g, e, rel_tol=1e-4) for g, e in zip(losses, expected, strict=True)), (
        f"train returned [{shown[0]}], expected the mean batch loss of each epoch, [{shown[1]}]"
    )


def run_on_tiny(sub, function):
    """Probe: evaluate() or confusion_matrix() on a tiny net with dropout, handed over in training mode.

    About half of the labels are the model's own predictions, so the accuracy is neither 0 nor 1.
    """
    torch.manual_seed(3)
    net = tiny_net(dropout=0.5)
    sizes = [5, 5, 2] if function == "evaluate" else [16, 16, 16, 16]
    batches = fixed_batches(4, sizes)
    with torch.no_grad():
        net.eval()
        batches = [(x, torch.where(torch.arange(len(y)) % 2 == 0, net(x).argmax(1), y)) for x, y in batches]
    net.train()
    forwards = record_forwards(net)
    state = state_of(net)
    device = torch.device("cpu")
    if function == "evaluate":
        result = sub.training.evaluate(net, batches, device)
        result = as_number(result)
    else:
        result = sub.training.confusion_matrix(net, batches, NUM_CLASSES, device)
        result = torch.as_tensor(result).cpu() if hasattr(result, "__len__") else type(result).__name__
    forwards = [{"training": f["training"], "grad": f["grad"]} for f in forwards]
    return {"result": result, "state": state, "batches": batches, "forwards": forwards}


def predictions(run):
    """(predicted, true) classes of the tiny net, in evaluation mode, over the probe's batches."""
    net = tiny_net(dropout=0.5)
    net.load_state_dict(run["state"])
    net.eval()
    with torch.no_grad():
        predicted = torch.cat([net(x).argmax(1) for x, _ in run["batches"]])
    return predicted, torch.cat([y for _, y in run["batches"]])


@pytest.fixture(scope="module")
def evaluated(submission):
    return submission.run(run_on_tiny, "evaluate")


@pytest.mark.points(2)
@pytest.mark.task("evaluate", "predict")
def test_evaluate_accuracy(evaluated):
    """evaluate: the fraction of correct predictions"""
    predicted, true = predictions(evaluated)
    correct, total = (predicted == true).sum().item(), len(true)
    got = evaluated["result"]
    assert isinstance(got, float), f"evaluate returned a {got}, expected a float in [0, 1]"
    hint = ""
    if math.isclose(got, correct):
        hint = ": the count, not the fraction"
    elif math.isclose(got, 100 * correct / total, rel_tol=1e-6):
        hint = ": a percentage, expected a fraction in [0, 1]"
    assert math.isclose(got, correct / total, rel_tol=1e-6), (
        f"evaluate returned {got:.4f}, expected {correct}/{total} = {correct / total:.4f}{hint}"
    )


@pytest.mark.points(2)
@pytest.mark.task("evaluate", "predict")
def test_evaluate_uses_eval_mode(evaluated):
    """evaluate: evaluation mode, no gradients"""
    forwards = evaluated["forwards"]
    assert forwards, "evaluate never ran the model"
    assert not any(f["training"] for f in forwards), (
        "evaluate ran the model in training mode (dropout on): call model.eval() first"
    )
    assert not any(f["grad"] for f in forwards), "evaluate tracks gradients: run the model under torch.no_grad()"


@pytest.mark.points(3)
@pytest.mark.task("confusion_matrix", "predict")
def test_confusion_matrix(submission):
    """confusion_matrix: rows are true classes, columns predictions"""
    from torchmetrics.classification import MulticlassConfusionMatrix

    run = submission.run(run_on_tiny, "confusion_matrix")
    got = run["result"]
    assert isinstance(got, torch.Tensor), f"confusion_matrix returned a {got}, expected a tensor"
    assert list(got.shape) == [NUM_CLASSES] * 2, f"the matrix is {list(got.shape)}, expected [10, 10]"
    predicted, true = predictions(run)
    expected = MulticlassConfusionMatrix(num_classes=NUM_CLASSES)(predicted, true)
    got = got.long()
    if torch.equal(got, expected):
        return
    assert not torch.equal(got, expected.T), (
        "the matrix is transposed: entry [t, p] counts images of true class t predicted as p (torchmetrics' layout)"
    )
    assert not any(f["training"] for f in run["forwards"]), (
        "confusion_matrix ran the model in training mode (dropout on): call model.eval()"
    )
    assert got.sum() == len(true), f"the matrix counts {got.sum()} predictions for {len(true)} images"
    t, p = (got != expected).nonzero()[0].tolist()
    raise AssertionError(
        f"the matrix differs from torchmetrics' MulticlassConfusionMatrix in {(got != expected).sum()} entries,"
        f" first at [{t}, {p}]: {got[t, p]}, expected {expected[t, p]}"
    )
