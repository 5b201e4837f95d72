"""train_one_epoch, evaluate and fit (training.py), checked on tiny networks and random batches.

The weights and batches are drawn for this grading. The probes run the student's functions on a
SimpleCNN in miniature for 3x8x8 images and return what came out: the weights after every
optimizer step and at the end, what was returned, and (for fit) the weights at the start of each
pass over the validation batches. The grader follows every step itself (grader.training_check)
and recomputes each loss, accuracy and choice of epoch here: each test passes when its own
property holds, whatever else is wrong. train_one_epoch and evaluate run on a net with batch
norm, whose running statistics move in training mode only; fit on one without, so that its tests
do not hang on evaluate's mode.
"""

import functools
import math

import pytest
import torch
import torch.nn.functional as F

from grader.i18n import _
from grader.probing import state_of
from grader.testing import derived_seed, generator, max_difference, one_thread, probes_for
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
CLASSES, LR = 3, 0.05


def random_batches(label, sizes):
    """Batches (x (n, 3, 8, 8) in [-1, 1), y (n,) in 0..2) of the given sizes, drawn for this grading."""
    rng = generator(label)
    return [
        (torch.rand(n, 3, 8, 8, generator=rng) * 2 - 1, torch.randint(0, CLASSES, (n,), generator=rng)) for n in sizes
    ]


def initial_weights(label, batch_norm=True):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derived_seed(label))
        return state_of(probes.tiny_net(batch_norm))


# --- train_one_epoch -----------------------------------------------------------------------------

TRAIN = random_batches("epoch batches", [4, 4, 4])
INITIAL = initial_weights("epoch weights")
LOOP = Loop(
    probes.tiny_net, TRAIN, 1, LR, function="train_one_epoch", model="model", call="model(x) against y", momentum=0.9
)


@pytest.fixture(scope="module")
def epoch(submission):
    return submission.run(probes.one_epoch, INITIAL, TRAIN, LR)


@pytest.fixture(scope="module")
def epoch_trajectory(epoch):
    return follow(LOOP, epoch, INITIAL)


@pytest.mark.points(2)
@pytest.mark.task("train_one_epoch")
def test_train_one_epoch_moves_batches(epoch, epoch_trajectory):
    """train_one_epoch: moves every batch to the device"""
    moved_to_device(epoch, epoch_trajectory, model=False)


@pytest.mark.points(2)
@pytest.mark.task("train_one_epoch")
def test_train_one_epoch_zeroes_gradients(epoch, epoch_trajectory):
    """train_one_epoch: zeroes the gradients before every batch"""
    zeroed_every_batch(epoch, epoch_trajectory)


@pytest.mark.points(2)
@pytest.mark.task("train_one_epoch")
def test_train_one_epoch_steps_every_batch(epoch_trajectory):
    """train_one_epoch: one optimizer step per batch"""
    every_batch_stepped(epoch_trajectory)


@pytest.mark.points(3)
@pytest.mark.task("train_one_epoch")
def test_train_one_epoch_follows_sgd(epoch_trajectory):
    """train_one_epoch: the weights follow the optimizer on the cross-entropy"""
    follows_the_loop(epoch_trajectory)


@pytest.mark.points(2)
@pytest.mark.task("train_one_epoch")
def test_train_one_epoch_training_mode(epoch, epoch_trajectory):
    """train_one_epoch: training mode (the model comes in evaluation mode)"""
    modes = [forward["training"] for forward in epoch["forwards"]]
    assert modes, _("the model never ran a forward pass")
    assert all(modes), _("{count} of {total} training batches ran in evaluation mode: call model.train()").format(
        count=modes.count(False), total=len(modes)
    )
    training_and_evaluation_modes(epoch_trajectory)


@pytest.mark.points(2)
@pytest.mark.task("train_one_epoch")
def test_train_one_epoch_returns_mean_loss(epoch, epoch_trajectory):
    """train_one_epoch: returns the mean of the batch losses"""
    losses = [loss for loss, _right in training_passes(epoch_trajectory)]
    got, want = epoch["result"], sum(losses) / len(losses)
    assert isinstance(got, float), _("train_one_epoch returned {got}, expected a number").format(got=got)
    if math.isclose(got, sum(losses), rel_tol=1e-4):
        pytest.fail(_("train_one_epoch returned the sum of the batch losses, expected their mean"))
    assert math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-5), _(
        "train_one_epoch returned {got:.4f}, expected the mean batch loss {want:.4f}"
    ).format(got=got, want=want)


# --- evaluate ------------------------------------------------------------------------------------


def evaluations(state, batches):
    """(mean loss per image, accuracy, mean of the batch losses, mean of the batch accuracies) of the
    tiny net over the batches, in evaluation mode and in training mode (in that order)."""
    out = []
    for training in (False, True):
        net = probes.tiny_net()
        net.load_state_dict(state)
        net.train(training)
        losses, rights, sizes = [], [], []
        with torch.no_grad(), one_thread():
            for x, y in batches:
                logits = net(x)
                losses.append(F.cross_entropy(logits, y, reduction="sum").item())
                rights.append((logits.argmax(1) == y).sum().item())
                sizes.append(len(y))
        count = sum(sizes)
        out.append(
            (
                sum(losses) / count,
                sum(rights) / count,
                sum(loss / n for loss, n in zip(losses, sizes, strict=True)) / len(sizes),
                sum(right / n for right, n in zip(rights, sizes, strict=True)) / len(sizes),
            )
        )
    return out


def evaluation_inputs():
    """Weights with running statistics of their own, and batches (the last one short) of which about
    half are labelled with the net's own prediction; drawn again until every mistake the tests name
    changes what comes out, in either mode: training mode, the mean of the batch losses or accuracies."""
    for attempt in range(100):
        again = f" {attempt}" if attempt else ""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derived_seed("evaluate weights" + again))
            net = probes.tiny_net()
        rng = generator("evaluate statistics" + again)
        with torch.no_grad():
            net[1].running_mean.copy_(torch.rand(4, generator=rng) - 0.5)
            net[1].running_var.copy_(0.2 + torch.rand(4, generator=rng))
        net.eval()
        batches = random_batches("evaluate batches" + again, [5, 5, 2])
        with torch.no_grad():
            batches = [(x, torch.where(torch.arange(len(y)) % 2 == 0, net(x).argmax(1), y)) for x, y in batches]
        state = state_of(net)
        evaluation, training = evaluations(state, batches)
        apart = [abs(a - b) for a, b in zip(evaluation, training, strict=True)]  # each value moves with the mode
        apart += [abs(values[0] - values[2]) for values in (evaluation, training)]  # loss per image, per batch
        apart += [abs(values[1] - values[3]) for values in (evaluation, training)]  # accuracy per image, per batch
        if min(apart) > 1e-3:
            return state, batches
    raise RuntimeError("no evaluation inputs on which the mistakes differ")  # the grader's own bug


EVAL_STATE, EVAL_BATCHES = evaluation_inputs()


@pytest.fixture(scope="module")
def evaluated(submission):
    return submission.run(probes.evaluated, EVAL_STATE, EVAL_BATCHES)


def returned_pair(evaluated):
    got = evaluated["result"]
    assert isinstance(got, list) and len(got) == 2 and all(isinstance(v, float) for v in got), _(
        "evaluate returned {got}, expected (loss, accuracy)"
    ).format(got=got)
    return got


@pytest.mark.points(2)
@pytest.mark.task("evaluate")
def test_evaluate_mode_and_no_gradients(evaluated):
    """evaluate: evaluation mode and no gradients (the model comes in training mode)"""
    forwards = evaluated["forwards"]
    assert forwards, _("evaluate never ran the model")
    assert not any(training for training, _grad in forwards), _(
        "evaluate ran the model in training mode: batch norm used each batch's statistics (call model.eval())"
    )
    assert not any(grad for _training, grad in forwards), _("evaluate records gradients: use torch.no_grad()")
    difference = max_difference(evaluated["state"], EVAL_STATE)
    assert difference == 0, _("evaluate changed the model's weights or statistics by up to {difference:.3g}").format(
        difference=difference
    )


@pytest.mark.points(3)
@pytest.mark.task("evaluate")
def test_evaluate_values(evaluated):
    """evaluate: the mean loss per image and the accuracy over every batch"""
    loss, accuracy = returned_pair(evaluated)
    # judged in the mode the model ran in: the mode test judges that
    modes = {training for training, _grad in evaluated["forwards"]}
    expected = evaluations(EVAL_STATE, EVAL_BATCHES)[1 if modes == {True} else 0]
    want_loss, want_accuracy, batch_loss, batch_accuracy = expected
    count = sum(len(y) for _x, y in EVAL_BATCHES)
    if math.isclose(loss, batch_loss, rel_tol=1e-4) and not math.isclose(loss, want_loss, rel_tol=1e-4):
        pytest.fail(
            _("evaluate's loss is the mean of the batch losses: weigh each by its images (the last batch is short)")
        )
    assert math.isclose(loss, want_loss, rel_tol=1e-4, abs_tol=1e-5), _(
        "evaluate's loss is {got:.4f}, expected the mean cross-entropy per image {want:.4f}"
    ).format(got=loss, want=want_loss)
    if math.isclose(accuracy, batch_accuracy, abs_tol=1e-6):
        pytest.fail(
            _("evaluate's accuracy is the mean of the batch accuracies: count the images right over all batches")
        )
    assert math.isclose(accuracy, want_accuracy, abs_tol=1e-6), _(
        "evaluate's accuracy is {got:.4f}, expected {right}/{count} = {want:.4f}"
    ).format(got=accuracy, right=round(want_accuracy * count), count=count, want=want_accuracy)


# --- fit -----------------------------------------------------------------------------------------

FIT_EPOCHS, FIT_LR = 4, 0.3
net_without_norm = functools.partial(probes.tiny_net, batch_norm=False)


def validation_accuracies(states, valid):
    """The accuracy and the mean loss per image over `valid` of the net without batch norm, for each state."""
    out = []
    net = net_without_norm()
    with torch.no_grad(), one_thread():
        for state in states:
            net.load_state_dict(state)
            x, y = torch.cat([x for x, _y in valid]), torch.cat([y for _x, y in valid])
            logits = net(x)
            out.append(((logits.argmax(1) == y).double().mean().item(), F.cross_entropy(logits, y).item()))
    return out


def fit_states(initial, train, epochs, lr):
    """The weights after each epoch of the fit the statement asks for, recomputed here."""
    net = net_without_norm()
    net.load_state_dict(initial)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    states = []
    with one_thread():
        for _epoch in range(epochs):
            for x, y in train:
                optimizer.zero_grad()
                F.cross_entropy(net(x), y).backward()
                optimizer.step()
            states.append(state_of(net))
    return states


def fit_inputs():
    """Weights and batches on which the best epoch by validation accuracy is one epoch alone, not the
    last, and not the one of the lowest validation loss: drawn again until it is, so that keeping
    the last weights, or choosing by the loss, always shows."""
    for attempt in range(200):
        again = f" {attempt}" if attempt else ""
        initial = initial_weights("fit weights" + again, batch_norm=False)
        train = random_batches("fit batches" + again, [5, 5, 5])
        valid = random_batches("fit validation" + again, [6, 6])  # equal sizes: a mean of batch means is the mean
        scores = validation_accuracies(fit_states(initial, train, FIT_EPOCHS, FIT_LR), valid)
        accuracies = [accuracy for accuracy, _loss in scores]
        best = accuracies.index(max(accuracies))
        lowest_loss = min(range(FIT_EPOCHS), key=lambda e: scores[e][1])
        if accuracies.count(max(accuracies)) == 1 and best != FIT_EPOCHS - 1 and lowest_loss != best:
            return initial, train, valid
    raise RuntimeError("no fit inputs with a best epoch before the last")  # the grader's own bug


FIT_INITIAL, FIT_TRAIN, FIT_VALID = fit_inputs()
FIT_LOOP = Loop(
    net_without_norm,
    FIT_TRAIN,
    FIT_EPOCHS,
    FIT_LR,
    function="fit",
    model="model",
    call="model(x) against y",
    momentum=0.9,
)


@pytest.fixture(scope="module")
def fitted(submission):
    return submission.run(probes.fitted, FIT_INITIAL, FIT_TRAIN, FIT_VALID, FIT_EPOCHS, FIT_LR)


@pytest.fixture(scope="module")
def fit_trajectory(fitted):
    """The steps of fit's training; they end at the last step, before fit loads the best epoch's weights."""
    steps = fitted["steps"]
    last = steps[-1]["state"] if steps and isinstance(steps[-1], dict) else fitted["final"]
    return follow(FIT_LOOP, {**fitted, "final": last}, FIT_INITIAL)


def validated(fitted):
    """The weights of each validation pass, with their accuracy and loss as the grader computes them."""
    states = fitted["validations"]
    assert states, _("fit never iterates over val_loader: validate after every epoch")
    return states, validation_accuracies(states, FIT_VALID)


@pytest.mark.points(2)
@pytest.mark.task("fit")
def test_fit_trains_with_sgd_momentum(fitted, fit_trajectory):
    """fit: SGD with momentum 0.9 at the learning rate given, for every epoch"""
    names = {step["optimizer"] for step in fitted["steps"] if isinstance(step, dict)}
    assert names <= {"SGD"}, _("fit trains with {names}, expected SGD").format(names=", ".join(sorted(names)))
    every_batch_stepped(fit_trajectory)
    for index, step in enumerate(fit_trajectory.steps):
        assert step.momentum == 0.9, _("step {step} follows SGD with momentum {momentum}, expected 0.9").format(
            step=index + 1, momentum=step.momentum
        )
        assert math.isclose(step.rate, FIT_LR, rel_tol=1e-3), _(
            "the optimizer's learning rate is {rate:.3g}, expected the lr passed to fit, {lr}"
        ).format(rate=step.rate, lr=FIT_LR)


@pytest.mark.points(2)
@pytest.mark.task("fit")
def test_fit_validates_every_epoch(fitted, fit_trajectory):
    """fit: one pass over val_loader after each epoch's training"""
    states, _scores = validated(fitted)
    assert len(states) == FIT_EPOCHS, _("fit validated {count} times in {epochs} epochs").format(
        count=len(states), epochs=FIT_EPOCHS
    )
    if fit_trajectory.step_count != FIT_LOOP.steps:
        return  # the steps are judged by the SGD test: which weights each pass saw cannot be told
    for epoch, state in enumerate(states):
        after = weights_of(fit_trajectory.after_epoch(epoch))
        assert max_difference(weights_of(state), after) < 1e-6, _(
            "validation pass {number} did not see the weights at the end of epoch {number}'s training"
        ).format(number=epoch + 1)


@pytest.mark.points(4)
@pytest.mark.task("fit")
def test_fit_keeps_the_best_model(fitted):
    """fit: the model ends with the weights of the epoch of best validation accuracy"""
    states, scores = validated(fitted)
    accuracies = [accuracy for accuracy, _loss in scores]
    best = accuracies.index(max(accuracies))
    final = weights_of(fitted["final"])
    if max_difference(final, weights_of(states[best])) < 1e-6:
        return
    same = [k for k, state in enumerate(states) if max_difference(final, weights_of(state)) < 1e-6]
    if same:
        raise AssertionError(
            _(
                "the model ends with the weights of epoch {got} (validation accuracy {got_accuracy:.3f}), expected "
                "epoch {best}'s ({best_accuracy:.3f}): keep a copy of the best state_dict (copy.deepcopy) and load it"
            ).format(got=same[-1] + 1, got_accuracy=accuracies[same[-1]], best=best + 1, best_accuracy=accuracies[best])
        )
    raise AssertionError(
        _("the model ends with weights that no validation pass saw: load the best epoch's state_dict at the end")
    )


@pytest.mark.points(2)
@pytest.mark.task("fit")
def test_fit_history(fitted, fit_trajectory):
    """fit: the history, one value per epoch, and the best epoch"""
    history = fitted["result"]
    assert isinstance(history, dict), _("fit returned {got}, expected the history dict").format(got=history)
    _states, scores = validated(fitted)
    accuracies = [accuracy for accuracy, _loss in scores]
    for key in ("train_loss", "val_loss", "val_accuracy"):
        values = history.get(key)
        assert isinstance(values, list) and len(values) == FIT_EPOCHS and all(isinstance(v, float) for v in values), _(
            "history[{key!r}] is {got}, expected {epochs} numbers"
        ).format(key=key, got=values, epochs=FIT_EPOCHS)
    for epoch, (accuracy, loss) in enumerate(scores[:FIT_EPOCHS]):
        assert math.isclose(history["val_accuracy"][epoch], accuracy, abs_tol=1e-6), _(
            "history['val_accuracy'][{epoch}] is {got:.4f}, expected {want:.4f}"
        ).format(epoch=epoch, got=history["val_accuracy"][epoch], want=accuracy)
        assert math.isclose(history["val_loss"][epoch], loss, rel_tol=1e-4), _(
            "history['val_loss'][{epoch}] is {got:.4f}, expected {want:.4f}"
        ).format(epoch=epoch, got=history["val_loss"][epoch], want=loss)
    passes = [loss for loss, _right in training_passes(fit_trajectory)]
    per_epoch = len(FIT_TRAIN)
    for epoch in range(FIT_EPOCHS):
        want = sum(passes[epoch * per_epoch : (epoch + 1) * per_epoch]) / per_epoch
        assert math.isclose(history["train_loss"][epoch], want, rel_tol=1e-4), _(
            "history['train_loss'][{epoch}] is {got:.4f}, expected the epoch's mean batch loss {want:.4f}"
        ).format(epoch=epoch, got=history["train_loss"][epoch], want=want)
    best = accuracies.index(max(accuracies)) + 1
    assert history.get("best_epoch") == best, _("history['best_epoch'] is {got}, expected {best}").format(
        got=history.get("best_epoch"), best=best
    )


# --- the confusion matrix ------------------------------------------------------------------------


@pytest.mark.points(3)
@pytest.mark.task("confusion_matrix")
def test_confusion_matrix(submission):
    """confusion_matrix: rows are the true classes, columns the predicted ones"""
    rng = generator("confusion")
    classes = 5
    labels = torch.randint(0, classes - 1, (40,), generator=rng)  # the last class has no image
    predicted = torch.where(
        torch.rand(40, generator=rng) < 0.5, labels, torch.randint(0, classes, (40,), generator=rng)
    )
    want = torch.zeros(classes, classes, dtype=torch.int64)
    for t, p in zip(labels.tolist(), predicted.tolist(), strict=True):
        want[t, p] += 1
    got = submission.run(probes.matrix, predicted, labels, classes)
    assert isinstance(got, torch.Tensor), _("confusion_matrix returned {got}, expected a tensor").format(got=got)
    assert list(got.shape) == [classes, classes], _("the matrix is {got}, expected {want}").format(
        got=list(got.shape), want=[classes, classes]
    )
    if torch.equal(got.double(), want.T.double()) and not torch.equal(want, want.T):
        pytest.fail(_("the matrix is transposed: rows are the true classes, columns the predicted ones"))
    assert torch.equal(got.double(), want.double()), _(
        "{wrong} of the {cells} counts are wrong (rows: true class, columns: predicted class)"
    ).format(wrong=int((got.double() != want.double()).sum()), cells=classes * classes)


@pytest.mark.points(2)
@pytest.mark.task("per_class_accuracy")
def test_per_class_accuracy(submission):
    """per_class_accuracy: each class's right predictions over its images, nan without images"""
    rng = generator("per-class")
    counts = torch.randint(0, 9, (4, 4), generator=rng)
    counts[2] = 0  # a class without images
    counts[0, 0] = 7  # and one with some right
    got = submission.run(probes.class_accuracy, counts)
    rows = counts.sum(1).double()
    want = counts.diagonal().double() / rows
    assert isinstance(got, torch.Tensor) and list(got.shape) == [4], _(
        "per_class_accuracy returned {got}, expected a tensor of 4 values"
    ).format(got=got if not isinstance(got, torch.Tensor) else list(got.shape))
    got = got.double()
    columns = counts.sum(0).double()
    if torch.allclose(
        got[rows > 0], (counts.diagonal().double() / columns)[rows > 0], equal_nan=True
    ) and not torch.allclose(got[rows > 0], want[rows > 0]):
        pytest.fail(_("each value is divided by its column (the predictions), expected its row (the class's images)"))
    assert torch.allclose(got[rows > 0], want[rows > 0], atol=1e-6), _(
        "the accuracies are {got}, expected {want}"
    ).format(got=[round(v, 4) for v in got.tolist()], want=[round(v, 4) for v in want.tolist()])
    assert torch.isnan(got[2]), _("class 2 has no image: its accuracy is nan, not {got}").format(got=got[2].item())
