"""train, evaluate and confusion_matrix (training.py), checked on a tiny network and random batches.

The weights and batches are drawn for this grading. The probes run the student's functions on a
miniature CNN for 1x8x8 images with batch norm, whose running statistics change only in training
mode, and return what came out: the weights after every optimizer step and at the end, the
returned losses, accuracy or matrix. The tests recompute here, outside the sandbox, what the
optimizer, the loss and the metrics should have given; train's tests follow every step
(grader.training_check), so that each passes when the steps the grader recognizes have its
property right, whatever else is wrong. What the probe saw on the way (moves, zero_grad calls,
steps, modes) makes a failure's reason precise; it earns no point alone. These probes run on
the CPU in every profile, so that the recomputation matches to 1e-5; the accuracy tests use the
profile's device.
"""

import functools
import math

import pytest
import torch
import torch.nn.functional as F

from grader.i18n import _
from grader.probing import state_of
from grader.testing import derived_seed, generator, max_difference, probes_for
from grader.training_check import (
    Loop,
    every_batch_stepped,
    follow,
    follows_the_loop,
    moved_to_device,
    training_and_evaluation_modes,
    training_passes,
    weights_of,
    zeroed_every_batch,
)

probes = probes_for(__file__)
pytestmark = pytest.mark.training  # they run training loops: `grade --watch` leaves them to a key press

SGD_LR, ADAMW_LR, EPOCHS, BATCH = 0.05, 0.01, 2, 4
BATCHES_PER_EPOCH = 3
NUM_CLASSES = 10


def random_batches(label, sizes):
    """Batches (x (n, 1, 8, 8) in [0, 1), y (n,) in 0..9) of the given sizes, drawn for this grading."""
    rng = generator(label)
    return [(torch.rand(n, 1, 8, 8, generator=rng), torch.randint(0, NUM_CLASSES, (n,), generator=rng)) for n in sizes]


def initial_weights(label, dropout=0.0):
    """Weights of the tiny net drawn for this grading."""
    with torch.random.fork_rng():
        torch.manual_seed(derived_seed(label))
        return probes.tiny_net(dropout)


TRAIN = random_batches("train batches", [BATCH] * BATCHES_PER_EPOCH)
INITIAL = state_of(initial_weights("train weights"))


LOOP = Loop(
    probes.tiny_net, TRAIN, EPOCHS, SGD_LR, function="train", model="model", call="model(images) against labels",
    momentum=0.9,
)  # fmt: skip


@pytest.fixture(scope="module")
def trained(submission):
    return submission.run(probes.train_tiny, INITIAL, TRAIN, EPOCHS, SGD_LR, "sgd")


@pytest.fixture(scope="module")
def trajectory(trained):
    return follow(LOOP, trained, INITIAL)


@pytest.mark.points(2)
@pytest.mark.task("train")
def test_train_moves_to_device(trained, trajectory):
    """train: moves the model and every batch to the device"""
    moved_to_device(trained, trajectory)


@pytest.mark.points(2)
@pytest.mark.task("train")
def test_train_zeroes_gradients(trained, trajectory):
    """train: zeroes the gradients before every batch"""
    zeroed_every_batch(trained, trajectory)


@pytest.mark.points(2)
@pytest.mark.task("train")
def test_train_steps_every_batch(trajectory):
    """train: one optimizer step per batch"""
    every_batch_stepped(trajectory)


@pytest.mark.points(4)
@pytest.mark.task("train", "make_optimizer")
def test_train_sgd_momentum(trajectory):
    """train: SGD with momentum 0.9 at the learning rate given"""
    follows_the_loop(trajectory)


@functools.cache
def adamw_reference(accumulate, training):
    """train(optimizer="adamw") recomputed here from INITIAL: the final weights, with fresh or piled-up
    gradients, in training or evaluation mode (mistakes that other tests judge)."""
    net = probes.tiny_net()
    net.load_state_dict(INITIAL)
    opt = torch.optim.AdamW(net.parameters(), lr=ADAMW_LR)
    for _unused in range(EPOCHS):
        net.train(training)
        for x, y in TRAIN:
            if not accumulate:
                opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
    return state_of(net)


@pytest.mark.points(2)
@pytest.mark.task("train", "make_optimizer")
def test_train_adamw(submission):
    """train: AdamW when optimizer="adamw" (practice 1)"""
    trained = submission.run(probes.train_tiny, INITIAL, TRAIN, EPOCHS, ADAMW_LR, "adamw")
    steps = trained["steps"]
    assert steps, _("the optimizer never steps: call optimizer.step() after loss.backward()")
    assert steps[0]["optimizer"] == "AdamW", _(
        "train(optimizer={optimizer!r}) trains with {type}, expected {kind}"
    ).format(optimizer="adamw", type=steps[0]["optimizer"], kind="AdamW")
    assert steps[0]["lr"] == ADAMW_LR, _(
        "the optimizer's learning rate is {lr}, expected the lr passed to train, {lr2}"
    ).format(lr=steps[0]["lr"], lr2=ADAMW_LR)
    final = weights_of(trained["final"])
    difference = min(
        max_difference(final, weights_of(adamw_reference(accumulate, training)))
        for accumulate in (False, True)
        for training in (True, False)
    )
    assert difference < 1e-5, _(
        "the weights differ from {kind} (lr={lr}) on the cross-entropy of model(images) against "
        "labels, in training mode, by up to {difference:.3g}"
    ).format(kind="AdamW", lr=ADAMW_LR, difference=max_difference(final, weights_of(adamw_reference(False, True))))


@pytest.mark.points(2)
@pytest.mark.task("train")
def test_train_uses_training_mode(trained, trajectory):
    """train: training mode for every batch"""
    modes = [f["training"] for f in trained["forwards"]]
    assert modes, _("the model never ran a forward pass during training")
    assert all(modes), _(
        "{count} of {n_modes} training batches ran in evaluation mode (dropout off): call "
        "model.train() at the start of each epoch"
    ).format(count=modes.count(False), n_modes=len(modes))
    training_and_evaluation_modes(trajectory)


@pytest.mark.points(3)
@pytest.mark.task("train")
def test_train_returns_epoch_losses(trained, trajectory):
    """train: returns the mean batch loss of each epoch"""
    losses = trained["losses"]
    assert isinstance(losses, list), _(
        "train returned a {losses}, expected a list of {epochs} losses, one per epoch"
    ).format(losses=losses, epochs=EPOCHS)
    assert len(losses) == EPOCHS, _(
        "train returned {n_losses} losses for {epochs} epochs: append one per epoch"
    ).format(n_losses=len(losses), epochs=EPOCHS)
    assert all(isinstance(v, float) for v in losses), _(
        "train returned {losses}, expected numbers (loss.item())"
    ).format(losses=losses)
    batch_loss = [loss for loss, _right in training_passes(trajectory)]  # as the grader recognized them
    expected = [sum(batch_loss[e * len(TRAIN) : (e + 1) * len(TRAIN)]) / len(TRAIN) for e in range(EPOCHS)]
    shown = ", ".join(f"{v:.4f}" for v in losses), ", ".join(f"{v:.4f}" for v in expected)
    if all(math.isclose(g, e * BATCHES_PER_EPOCH, rel_tol=1e-4) for g, e in zip(losses, expected, strict=True)):
        raise AssertionError(
            _("train returned [{shown0}], the sums of the batch losses: divide by the batch count").format(
                shown0=shown[0]
            )
        )
    assert all(math.isclose(g, e, rel_tol=1e-4) for g, e in zip(losses, expected, strict=True)), _(
        "train returned [{shown0}], expected the mean batch loss of each epoch, [{shown1}]"
    ).format(shown0=shown[0], shown1=shown[1])


def evaluation_inputs(label, sizes):
    """Weights for the tiny net (dropout 0.5) with running statistics of their own, so that
    evaluation mode makes a difference, and batches of which about half are labelled with the net's
    own prediction: an accuracy far from 0 and from 1."""
    net = initial_weights(f"{label} weights", dropout=0.5)
    net.train()
    with torch.no_grad():  # running statistics of its own
        for x, _unused in random_batches(f"{label} statistics", [16, 16]):
            net(x * 2 + 0.5)
    net.eval()
    batches = random_batches(f"{label} batches", sizes)
    with torch.no_grad():
        batches = [(x, torch.where(torch.arange(len(y)) % 2 == 0, net(x).argmax(1), y)) for x, y in batches]
    return state_of(net), batches


EVAL_STATE, EVAL_BATCHES = evaluation_inputs("evaluate", [5, 5, 2])
MATRIX_STATE, MATRIX_BATCHES = evaluation_inputs("confusion_matrix", [16, 16, 16, 16])


def predictions(state, batches):
    """(predicted, true) classes of the tiny net, in evaluation mode, over the batches: computed here."""
    net = probes.tiny_net(dropout=0.5)
    net.load_state_dict(state)
    net.eval()
    with torch.no_grad():
        predicted = torch.cat([net(x).argmax(1) for x, _ in batches])
    return predicted, torch.cat([y for _, y in batches])


@pytest.fixture(scope="module")
def evaluated(submission):
    return submission.run(probes.run_on_tiny, "evaluate", EVAL_STATE, EVAL_BATCHES)


def accuracy_matches(evaluated):
    predicted, true = predictions(EVAL_STATE, EVAL_BATCHES)
    correct, total = (predicted == true).sum().item(), len(true)
    got = evaluated["result"]
    assert isinstance(got, float), _("evaluate returned a {got}, expected a float in [0, 1]").format(got=got)
    hint = ""
    if math.isclose(got, correct):
        hint = _(": the count, not the fraction")
    elif math.isclose(got, 100 * correct / total, rel_tol=1e-6):
        hint = _(": a percentage, expected a fraction in [0, 1]")
    assert math.isclose(got, correct / total, rel_tol=1e-6), _(
        "evaluate returned {got:.4f}, expected {correct}/{total} = {correct2:.4f}{hint}"
    ).format(got=got, correct=correct, total=total, correct2=correct / total, hint=hint)


@pytest.mark.points(2)
@pytest.mark.task("evaluate", "predict")
def test_evaluate_accuracy(evaluated):
    """evaluate: the fraction of correct predictions"""
    accuracy_matches(evaluated)


@pytest.mark.points(2)
@pytest.mark.task("evaluate", "predict")
def test_evaluate_uses_eval_mode(evaluated):
    """evaluate: evaluation mode, no gradients"""
    forwards = evaluated["forwards"]
    assert forwards, _("evaluate never ran the model")
    assert not any(f["training"] for f in forwards), _(
        "evaluate ran the model in training mode (dropout on): call model.eval() first"
    )
    assert not any(f["grad"] for f in forwards), _("evaluate tracks gradients: run the model under torch.no_grad()")
    changed = max_difference(evaluated["state"], EVAL_STATE)
    assert changed == 0, _("evaluating changed the model's weights or statistics (by up to {changed:.3g})").format(
        changed=changed
    )
    accuracy_matches(evaluated)


@pytest.mark.points(3)
@pytest.mark.task("confusion_matrix", "predict")
def test_confusion_matrix(submission):
    """confusion_matrix: rows are true classes, columns predictions"""
    from torchmetrics.classification import MulticlassConfusionMatrix

    run = submission.run(probes.run_on_tiny, "confusion_matrix", MATRIX_STATE, MATRIX_BATCHES)
    got = run["result"]
    assert isinstance(got, torch.Tensor), _("confusion_matrix returned a {got}, expected a tensor").format(got=got)
    assert list(got.shape) == [NUM_CLASSES] * 2, _("the matrix is {shape}, expected [10, 10]").format(
        shape=list(got.shape)
    )
    predicted, true = predictions(MATRIX_STATE, MATRIX_BATCHES)
    expected = MulticlassConfusionMatrix(num_classes=NUM_CLASSES)(predicted, true)
    got = got.long()
    if torch.equal(got, expected):
        return
    assert not torch.equal(got, expected.T), _(
        "the matrix is transposed: entry [t, p] counts images of true class t predicted as p (torchmetrics' layout)"
    )
    assert not any(f["training"] for f in run["forwards"]), _(
        "confusion_matrix ran the model in training mode (dropout on): call model.eval()"
    )
    assert got.sum() == len(true), _("the matrix counts {sum} predictions for {n_true} images").format(
        sum=got.sum(), n_true=len(true)
    )
    t, p = (got != expected).nonzero()[0].tolist()
    raise AssertionError(
        _(
            "the matrix differs from torchmetrics' MulticlassConfusionMatrix in {sum} entries, first "
            "at [{t}, {p}]: {got}, expected {expected}"
        ).format(sum=(got != expected).sum(), t=t, p=p, got=got[t, p], expected=expected[t, p])
    )
