"""train and evaluate_tm (training.py), checked on a tiny BatchNorm network and random batches; then a
CNN of cnns.py trained with them.

The weights and batches are drawn for this grading. The probe runs the student's `train` on a tiny
net with batch norm, whose running statistics change only in training mode, from the grader's
weights, and returns the weights and statistics after every optimizer step and at the end, and
the history. The grader follows every step itself (grader.training_check): each test passes when
the steps the grader recognizes have its property right, whatever else is wrong. What the probe
saw on the way (moves, zero_grad calls, steps, modes, gradients on or off) makes a failure's
reason precise; it earns no point alone.
"""

import math

import pytest
import torch

from grader.i18n import _
from grader.probing import state_of, to_float
from grader.testing import (
    architectures_for,
    derived_seed,
    evaluate,
    evaluation_device,
    generator,
    load_in_order,
    max_difference,
    probes_for,
)
from grader.training_check import (
    Loop,
    every_batch_stepped,
    follow,
    follows_the_loop,
    moved_to_device,
    training_and_evaluation_modes,
    training_passes,
    zeroed_every_batch,
)

probes = probes_for(__file__)
pytestmark = pytest.mark.training  # they run training loops: `grade --watch` leaves them to a key press
architectures = architectures_for(__file__)  # the grader's own copies of the profile's CNNs
LR, EPOCHS = 0.1, 2
TRAIN_BATCH, VALID_BATCH = 4, 3  # different sizes tell training passes from evaluation passes
TRAIN_BATCHES, VALID_BATCHES = 3, 2


def random_batches(label, count, size):
    """`count` batches (x (size, 1, 8, 8) in [0, 1), y (size,) in 0..9), drawn for this grading."""
    rng = generator(label)
    return [
        (torch.rand(size, 1, 8, 8, generator=rng), torch.randint(0, 10, (size,), generator=rng)) for _ in range(count)
    ]


def initial_weights():
    """The tiny net's weights, drawn for this grading (its BatchNorm statistics start at 0 and 1)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derived_seed("train weights"))
        return state_of(probes.tiny_net())


TRAIN = random_batches("train batches", TRAIN_BATCHES, TRAIN_BATCH)
VALID = random_batches("train validation batches", VALID_BATCHES, VALID_BATCH)
INITIAL = initial_weights()


LOOP = Loop(probes.tiny_net, TRAIN, EPOCHS, LR, function="train", model="model", call="model(X) against y")


@pytest.fixture(scope="module")
def trained(submission):
    return submission.run(probes.train_tiny, INITIAL, TRAIN, VALID, EPOCHS, LR)


@pytest.fixture(scope="module")
def trajectory(trained):
    return follow(LOOP, trained, INITIAL)


@pytest.mark.points(2)
@pytest.mark.task("train")
def test_train_moves_batches_to_device(trained, trajectory):
    """train: moves every batch to the device"""
    moved_to_device(trained, trajectory, model=False)


@pytest.mark.points(2)
@pytest.mark.task("train")
def test_train_zeroes_gradients_every_batch(trained, trajectory):
    """train: zeroes the gradients at every batch"""
    zeroed_every_batch(trained, trajectory)


@pytest.mark.points(2)
@pytest.mark.task("train")
def test_train_steps_optimizer_every_batch(trajectory):
    """train: one optimizer step per batch"""
    every_batch_stepped(trajectory)


@pytest.mark.points(4)
@pytest.mark.task("train", "evaluate_tm")
def test_train_update_matches(trajectory):
    """train: the weights follow the optimizer on loss_fn(model(X), y)"""
    follows_the_loop(trajectory)


@pytest.mark.points(3)
@pytest.mark.task("train", "evaluate_tm")
def test_train_and_eval_modes(trained, trajectory):
    """train: training mode to train, evaluation mode to validate"""
    modes = [(forward["training"], forward["size"]) for forward in trained["forwards"]]
    training = [mode for mode, size in modes if size == TRAIN_BATCH]
    validating = [mode for mode, size in modes if size == VALID_BATCH]
    assert training, _("the model never ran on train_loader")
    assert all(training), _("some training batches ran in evaluation mode: call model.train()")
    assert validating, _("the model never ran on valid_loader: evaluate it at the end of every epoch")
    assert not any(validating), _(
        "the model ran valid_loader in training mode: BatchNorm used each batch's statistics (call model.eval())"
    )
    training_and_evaluation_modes(trajectory)  # the running statistics move in training mode only


def valid_metrics(state, train_right):
    """The accuracy over VALID of the tiny net with `state`, in evaluation mode first; then the values
    of evaluate_tm's own mistakes, which evaluate_tm's tests judge: training mode, and the metric
    not reset (still counting the epoch's `train_right` of its training images)."""
    net = probes.tiny_net()
    net.load_state_dict(state)
    total, seen = VALID_BATCHES * VALID_BATCH, TRAIN_BATCHES * TRAIN_BATCH
    values = []
    with torch.no_grad():
        for training in (False, True):
            right = sum((net.train(training)(x).argmax(1) == y).sum().item() for x, y in VALID)
            values += [right / total, (right + train_right) / (total + seen)]
    return values


@pytest.mark.points(3)
@pytest.mark.task("train", "evaluate_tm")
def test_train_history(trained, trajectory):
    """train: the history of losses and metrics, one entry per epoch"""
    history = trained["history"]
    assert isinstance(history, dict), _("train returned {history}, expected the history dict").format(history=history)
    passes = training_passes(trajectory)  # the training batches' losses and predictions, as the grader recognized them
    epochs = [passes[epoch * TRAIN_BATCHES : (epoch + 1) * TRAIN_BATCHES] for epoch in range(EPOCHS)]
    expected = {
        "train_losses": [[sum(loss for loss, _right in epoch) / TRAIN_BATCHES] for epoch in epochs],
        "train_metrics": [[sum(right for _loss, right in epoch) / (TRAIN_BATCHES * TRAIN_BATCH)] for epoch in epochs],
        "valid_metrics": [
            valid_metrics(trajectory.after_epoch(number), sum(right for _loss, right in epoch))
            for number, epoch in enumerate(epochs)
        ],
    }
    hints = {
        "train_losses": "the mean of the epoch's batch losses",
        "train_metrics": "the metric over the epoch's training batches (reset it at the start of each epoch)",
        "valid_metrics": "evaluate_tm on valid_loader",
    }
    for key, values in expected.items():
        got = history.get(key)
        numbers = isinstance(got, list) and all(isinstance(v, (int, float, torch.Tensor)) for v in got)
        assert numbers and len(got) == EPOCHS, _("history[{key!r}] is {got}, expected {epochs} numbers").format(
            key=key, got=got, epochs=EPOCHS
        )
        for epoch, (value, accepted) in enumerate(zip(got, values, strict=True)):
            assert any(math.isclose(float(value), want, abs_tol=1e-4) for want in accepted), _(
                "history[{key!r}][{epoch}] is {value:.4f}, expected {want:.4f}: {hint}"
            ).format(key=key, epoch=epoch, value=float(value), want=accepted[0], hint=hints[key])


# --- evaluate_tm ------------------------------------------------------------------------------


def evaluation_inputs():
    """The tiny net's weights with running statistics of their own (so that evaluation mode makes a
    difference), batches (the last one short) of which about half are labelled with the net's own
    prediction, and 20 labels that the metric has already seen predicted wrong. Drawn again until
    an evaluation in training mode returns neither evaluation mode's accuracy (on some draws the two
    agree, and that mistake kept the value test's points) nor what a metric never reset would (the
    value test would then blame that)."""
    for attempt in range(100):
        again = f" {attempt}" if attempt else ""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derived_seed("evaluate_tm weights" + again))
            net = probes.tiny_net()
        rng = generator("evaluate_tm statistics" + again)
        with torch.no_grad():
            net[2].running_mean.copy_(0.2 + 0.4 * torch.rand(3, generator=rng))
            net[2].running_var.copy_(0.05 + 0.15 * torch.rand(3, generator=rng))
        net.eval()
        batches = random_batches("evaluate_tm batches" + again, 3, 5)
        batches[-1] = (batches[-1][0][:2], batches[-1][1][:2])
        with torch.no_grad():  # label about half of the images with the model's own prediction
            batches = [(x, torch.where(torch.arange(len(y)) % 2 == 0, net(x).argmax(1), y)) for x, y in batches]
        stale = torch.randint(0, 10, (20,), generator=rng)
        state = state_of(net)
        (right, total), (wrong_mode, _unused) = (correct_predictions(t, state, batches) for t in (False, True))
        if wrong_mode / total not in (right / total, right / (total + len(stale))):
            return state, batches, stale
    raise RuntimeError("no evaluation inputs on which the two modes differ")  # the grader's own bug


def correct_predictions(training, state=None, batches=None):
    """How many of the evaluation images the net gets right, in evaluation or training mode (batch by
    batch, as a loop does), and how many there are: computed here."""
    net = probes.tiny_net()
    net.load_state_dict(EVAL_STATE if state is None else state)
    net.train(training)
    batches = EVAL_BATCHES if batches is None else batches
    with torch.no_grad():
        correct = sum((net(x).argmax(1) == y).sum().item() for x, y in batches)
    return correct, sum(len(y) for _, y in batches)


EVAL_STATE, EVAL_BATCHES, STALE = evaluation_inputs()


@pytest.fixture(scope="module")
def evaluated(submission):
    return submission.run(probes.evaluate_tiny, EVAL_STATE, EVAL_BATCHES, STALE)


def computed_by_an_evaluation(evaluated, modes):
    """Fails unless the returned value is one that a pass over the batches in one of `modes` gives,
    with the metric reset or not (the value test judges which): the backing of the mode and
    gradient tests, whose spies only make the reason precise."""
    got = evaluated["value"]
    values = []
    for training in modes:
        correct, total = correct_predictions(training)
        values += [correct / total, correct / (total + len(STALE))]
    assert any(math.isclose(got, value, abs_tol=1e-6) for value in values), _(
        "evaluate_tm returned {got:.4f}, which no pass of the model over data_loader gives"
    ).format(got=got)


def value_matches(evaluated):
    """The returned value must be the grader's accuracy of the net over the batches, in evaluation mode."""
    correct, total = correct_predictions(training=False)
    got = evaluated["value"]
    if math.isclose(got, correct / (total + len(STALE)), abs_tol=1e-6):
        pytest.fail(_("evaluate_tm counted the metric's earlier updates: call metric.reset() first"))
    assert math.isclose(got, correct / total, abs_tol=1e-6), _(
        "evaluate_tm returned {got:.4f}, expected {correct}/{total} = {correct2:.4f}"
    ).format(got=got, correct=correct, total=total, correct2=correct / total)


@pytest.mark.points(3)
@pytest.mark.task("evaluate_tm")
def test_evaluate_uses_eval_mode(evaluated):
    """evaluate_tm: evaluation mode, so BatchNorm uses and keeps its running statistics"""
    modes = evaluated["modes"]
    assert modes, _("evaluate_tm never ran the model")
    assert not any(mode for mode, _, _ in modes), _(
        "evaluate_tm ran the model in training mode: BatchNorm normalized with each batch's "
        "statistics and moved its running statistics (call model.eval())"
    )
    difference = max_difference(evaluated["after"], EVAL_STATE)
    assert difference == 0, _("evaluate_tm changed the model's weights or statistics by up to {difference:.3g}").format(
        difference=difference
    )
    computed_by_an_evaluation(evaluated, modes=(False,))


@pytest.mark.points(2)
@pytest.mark.task("evaluate_tm")
def test_evaluate_without_gradients(evaluated):
    """evaluate_tm: no gradients (torch.no_grad())"""
    modes = evaluated["modes"]
    assert modes, _("evaluate_tm never ran the model")
    assert not any(grad for _, grad, _ in modes), _(
        "evaluate_tm records gradients: run the model under torch.no_grad()"
    )
    computed_by_an_evaluation(evaluated, modes=(False, True))


@pytest.mark.points(3)
@pytest.mark.task("evaluate_tm")
def test_evaluate_value(evaluated):
    """evaluate_tm: the metric over the whole data_loader"""
    value_matches(evaluated)


# --- a CNN trained with train -----------------------------------------------------------------


MODELS = {"BatchNormCNN": "BatchNormCNN(10)", "fashion_cnn": "fashion_cnn()"}  # the profile's budget picks one


def trained_model(budget, state):
    """The grader's own copy of the profile's CNN with the trained weights, or what does not fit."""
    if not isinstance(state, dict):
        return None, _("the trained weights did not come back")
    if budget["model"] == "fashion_cnn":
        model = architectures.fashion_cnn()
        return model, load_in_order(model, state.get("model"))
    model = architectures.BatchNormCNN(10)
    for part, layers in (("cnn", model.cnn_layers), ("fc", model.fc_layers)):
        problem = load_in_order(layers, state.get(part))
        if problem:
            return model, f"{part}_layers: {problem}"
    return model, ""


@pytest.mark.points(8)
@pytest.mark.accuracy
@pytest.mark.task("BatchNormCNN", "fashion_cnn", "train", "evaluate_tm")
def test_trained_accuracy(submission, profile, dataset, record_property):
    """train: trained test accuracy (quick: BatchNormCNN on MNIST 5k; full: fashion_cnn on Fashion-MNIST)"""
    budget = profile.budget
    assert budget["model"] in MODELS, _("the profile names an unknown model {model!r}").format(model=budget["model"])
    # the validation images: drawn for this grading (the classes of a split may come sorted)
    valid_index = torch.randperm(len(dataset.train.y), generator=generator("validation split"))[: budget["val_size"]]
    state = submission.run(probes.train_cnn, dataset.train.x, dataset.train.y, valid_index, budget)
    model, problem = trained_model(budget, state)  # the grader's own: it scores images no sandbox sees
    assert not problem, _("{models}: {problem}").format(models=MODELS[budget["model"]], problem=problem)
    device = evaluation_device(profile)
    model.to(device)
    accuracy = evaluate(model, to_float(dataset.test.x).to(device), dataset.test.y.to(device))
    record_property("accuracy", round(accuracy, 4))
    record_property("min_accuracy", profile.min_accuracy)
    assert accuracy >= profile.min_accuracy, _(
        "{models} reached {accuracy:.1%} test accuracy, below the {min_accuracy:.0%} required "
        "({epochs} epochs of batch {batch_size}, AdamW lr {lr}, on {name})"
    ).format(
        models=MODELS[budget["model"]],
        accuracy=accuracy,
        min_accuracy=profile.min_accuracy,
        epochs=budget["epochs"],
        batch_size=budget["batch_size"],
        lr=budget["lr"],
        name=dataset.name,
    )
