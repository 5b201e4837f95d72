"""The homework's experiments (experiments.py): what they return, and how they get it.

Each experiment runs twice. On tiny networks and random batches drawn for this grading, on the
CPU, where the grader hands `make_model` the weights of every model it builds and recomputes every
run here: the losses, the final weights and the accuracies must be those of fresh models trained
with the right epochs and learning rates. And with MnistCNN on a slice of the training images (the
profile's `experiments` budget), on the profile's device, where the grader scores the trained
weights itself: the training loss must fall, and each rate's accuracy must be its model's on the
validation images. No probe sees the test set: the learning rates are compared on validation images.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from grader.i18n import _, ngettext
from grader.probing import state_of, to_float
from grader.testing import architectures_for, derived_seed, generator, load_in_order, max_difference, probes_for
from grader.training_check import weights_of

probes = probes_for(__file__)
pytestmark = pytest.mark.training  # they run training loops: `grade --watch` leaves them to a key press
architectures = architectures_for(__file__)

EPOCH_COUNTS = [5, 10]
RATES = [0.001, 0.01, 0.1]
EPOCHS_LR = 0.01  # epochs_experiment's learning rate
TINY_RATE_EPOCHS = 2  # the epochs the tiny learning-rate experiment is asked for
NUM_CLASSES = 10


def models(count):
    return ngettext("{count} model", "{count} models", count).format(count=count)


# --- the tiny runs, recomputed here ------------------------------------------------------------


def random_batches(label, sizes):
    rng = generator(label)
    return [(torch.rand(n, 1, 8, 8, generator=rng), torch.randint(0, NUM_CLASSES, (n,), generator=rng)) for n in sizes]


def tiny_states(label, count):
    """The weights of `count` tiny nets drawn for this grading: make_model's k-th model starts from the k-th."""
    with torch.random.fork_rng():
        torch.manual_seed(derived_seed(label))
        return [state_of(probes.tiny_net()) for _ in range(count)]


EPOCHS_BATCHES = random_batches("epochs_experiment batches", [8, 8])
EPOCHS_STATES = tiny_states("epochs_experiment weights", 4)
# 24 training and 25 validation images: an accuracy on one is never one on the other (but 0 and 1)
RATES_TRAIN = random_batches("learning_rate_experiment train", [8, 8, 8])
RATES_VALID = random_batches("learning_rate_experiment valid", [10, 10, 5])
RATES_STATES = tiny_states("learning_rate_experiment weights", 5)


# train() as asked, then its mistakes that train's own tests name (test_2_training.py): an experiment
# is judged on what it does with train, whatever train gets wrong.
TRAIN_MISTAKES = ({}, {"zero_grad": False}, {"momentum": 0.0}, {"step": False})


def sgd_run(state, batches, epochs, lr, momentum=0.9, zero_grad=True, step=True):
    """train() recomputed: SGD with momentum 0.9 from `state`, in training mode, for `epochs` epochs
    (or with one of TRAIN_MISTAKES). The mean batch loss of each epoch, and the weights after each."""
    net = probes.tiny_net()
    net.load_state_dict(state)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)
    losses, states = [], []
    for _unused in range(epochs):
        net.train()
        total = 0.0
        for x, y in batches:
            if zero_grad:
                optimizer.zero_grad()
            loss = F.cross_entropy(net(x), y)
            loss.backward()
            if step:
                optimizer.step()
            total += loss.item()
        losses.append(total / len(batches))
        states.append(state_of(net))
    return losses, states


def tiny_accuracy(state, batches, training=False):
    """The accuracy of the tiny net with `state`, in evaluation mode (or in training mode, evaluate's
    mistake), over the batches: computed here."""
    net = probes.tiny_net()
    net.load_state_dict(state)
    net.train(training)
    with torch.no_grad():
        correct = sum((net(x).argmax(1) == y).sum().item() for x, y in batches)
    return correct / sum(len(y) for _, y in batches)


def same(a, b):
    return max_difference(a, b) < 1e-4


def losses_match(got, expected):
    """epochs_experiment's losses: the epochs' mean batch losses, or their sums (train's mistake,
    named by its own test)."""
    return isinstance(got, list) and any(
        len(got) == len(expected)
        and all(
            isinstance(g, float) and math.isclose(g, e * k, rel_tol=1e-4) for g, e in zip(got, expected, strict=True)
        )
        for k in (1, len(EPOCHS_BATCHES))
    )


@pytest.fixture(scope="module")
def epochs_tiny(submission):
    run = submission.run(probes.epochs_tiny, EPOCHS_STATES, EPOCHS_BATCHES)
    # Each model with a state of the grader's, retrained here for as many epochs as its final weights show.
    run["trajectories"] = []
    longest = sum(EPOCH_COUNTS) + 2
    for index, model in enumerate(run["models"]):
        if index >= len(EPOCHS_STATES):
            run["trajectories"].append(None)
            continue
        trajectory = None
        for mistake in TRAIN_MISTAKES:
            losses, states = sgd_run(EPOCHS_STATES[index], EPOCHS_BATCHES, longest, EPOCHS_LR, **mistake)
            epochs = next((e + 1 for e, state in enumerate(states) if same(state, model["final"])), None)
            if epochs is not None:
                trajectory = losses[:epochs]
                break
        run["trajectories"].append(trajectory)
    return run


def check_epoch_results(results):
    assert isinstance(results, dict), _(
        "epochs_experiment returned {results}, expected a dict {{epochs: losses}}"
    ).format(results=results)
    assert sorted(results) == EPOCH_COUNTS, _("the results are keyed {results}, expected {epoch_counts}").format(
        results=sorted(results), epoch_counts=EPOCH_COUNTS
    )
    for epochs in EPOCH_COUNTS:
        losses = results[epochs]
        assert isinstance(losses, list), _("the {epochs}-epoch result is {losses}, expected a list of losses").format(
            epochs=epochs, losses=losses
        )
        assert len(losses) == epochs, _("the {epochs}-epoch run has {n_losses} losses, expected one per epoch").format(
            epochs=epochs, n_losses=len(losses)
        )
        assert all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in losses), _(
            "the {epochs}-epoch losses are not all positive finite numbers: {losses}"
        ).format(epochs=epochs, losses=losses)


@pytest.mark.points(2)
@pytest.mark.task("epochs_experiment", "train")
def test_epochs_experiment_returns_losses(epochs_tiny):
    """epochs_experiment: one loss per epoch, for 5 and 10 epochs"""
    results = epochs_tiny["results"]
    check_epoch_results(results)
    # Each list must be the epochs' mean losses of a training that took place, as recomputed here.
    trajectories = [t for t in epochs_tiny["trajectories"] if t]
    assert trajectories, _(
        "no model's final weights are those of SGD at lr {epochs_lr} (momentum 0.9) from the "
        "weights make_model() gave it: pass lr to train (and see train's tests)"
    ).format(epochs_lr=EPOCHS_LR)
    for epochs in EPOCH_COUNTS:
        got = results[epochs]
        found = any(
            losses_match(got, trajectory[start : start + epochs])
            for trajectory in trajectories
            for start in range(len(trajectory) - epochs + 1)
        )
        assert found, _(
            "the {epochs}-epoch losses {value} are not the mean batch losses of {epochs} epochs of SGD "
            "(lr {epochs_lr}) of any of the models built: pass lr to train, and return what it returns"
        ).format(epochs=epochs, value=[round(v, 4) for v in got], epochs_lr=EPOCHS_LR)


@pytest.mark.points(2)
@pytest.mark.task("epochs_experiment", "train")
def test_epochs_experiment_fresh_models(epochs_tiny):
    """epochs_experiment: a fresh model for each run"""
    trained = [model for model in epochs_tiny["models"] if model["forwards"]]
    assert len(trained) == len(EPOCH_COUNTS), _(
        "{models} trained for {n_epoch_counts} runs: call make_model() for each epoch count, or "
        "the 10-epoch run goes on from the 5-epoch model (15 epochs in all)"
    ).format(models=models(len(trained)), n_epoch_counts=len(EPOCH_COUNTS))
    results = epochs_tiny["results"]
    assert isinstance(results, dict) and sorted(results) == EPOCH_COUNTS, _("no losses for 5 and 10 epochs")
    trajectories = epochs_tiny["trajectories"]
    used = set()
    for epochs in EPOCH_COUNTS:
        # A fresh model: it starts from the weights make_model gave it, and trains for exactly these epochs.
        fresh = [
            index
            for index, trajectory in enumerate(trajectories)
            if trajectory and index not in used and len(trajectory) == epochs
            if losses_match(results[epochs], trajectory)
        ]
        if not fresh:
            longer = [t for t in trajectories if t and len(t) > epochs and losses_match(results[epochs], t[-epochs:])]
            assert not longer, _(
                "the {epochs}-epoch run goes on from a model already trained ({n_longer0} epochs in all): "
                "call make_model() for each epoch count"
            ).format(epochs=epochs, n_longer0=len(longer[0]))
            raise AssertionError(
                _(
                    "no model built by make_model() was trained for exactly {epochs} epochs of SGD (lr "
                    "{epochs_lr}) with the losses returned for {epochs} epochs: see train's tests"
                ).format(epochs=epochs, epochs_lr=EPOCHS_LR)
            )
        used.add(fresh[0])


@pytest.fixture(scope="module")
def rates_tiny(submission):
    run = submission.run(probes.rates_tiny, RATES_STATES, RATES_TRAIN, RATES_VALID, TINY_RATE_EPOCHS)
    run["expected"] = {  # each rate's fresh models, trained here by train or by one of its mistakes
        rate: [
            [
                weights_of(sgd_run(state, RATES_TRAIN, TINY_RATE_EPOCHS, rate, **mistake)[1][-1])
                for mistake in TRAIN_MISTAKES
            ]
            for state in RATES_STATES
        ]
        for rate in RATES
    }
    return run


def check_rate_results(results):
    assert isinstance(results, dict), _(
        "learning_rate_experiment returned {results}, expected a dict {{rate: accuracy}}"
    ).format(results=results)
    assert sorted(results) == RATES, _("the results are keyed {results}, expected the rates {rates}").format(
        results=sorted(results), rates=RATES
    )
    for rate in RATES:
        accuracy = results[rate]
        assert isinstance(accuracy, float), _("the accuracy for lr {rate} is {accuracy}, expected a float").format(
            rate=rate, accuracy=accuracy
        )
        hint = ": a percentage? expected a fraction" if 1 < accuracy <= 100 else ""
        assert 0 <= accuracy <= 1, _("the accuracy for lr {rate} is {accuracy}, not in [0, 1]{hint}").format(
            rate=rate, accuracy=accuracy, hint=hint
        )


@pytest.mark.points(2)
@pytest.mark.task("learning_rate_experiment", "evaluate", "predict", "train")
def test_learning_rate_experiment_returns_accuracies(rates_tiny):
    """learning_rate_experiment: one accuracy in [0, 1] per rate"""
    results = rates_tiny["results"]
    check_rate_results(results)
    # Each must be the validation accuracy of a model it trained, as computed here from its final weights.
    # (or, where evaluate forgets eval(), in training mode: evaluate's own test names that)
    scores = [
        tiny_accuracy(model["final"], RATES_VALID, training)
        for model in rates_tiny["models"]
        if model["forwards"]
        for training in (False, True)
    ]
    for rate in RATES:
        assert any(abs(results[rate] - score) < 1e-6 for score in scores), _(
            "the accuracy for lr {rate}, {results:.4f}, is not the accuracy of any trained model on "
            "valid_loader ({join}): evaluate each trained model on valid_loader"
        ).format(rate=rate, results=results[rate], join=", ".join(f"{s:.4f}" for s in scores))


@pytest.mark.points(2)
@pytest.mark.task("learning_rate_experiment", "train", "make_optimizer")
def test_learning_rate_experiment_fresh_models(rates_tiny):
    """learning_rate_experiment: a fresh model trained with each rate"""
    built = rates_tiny["models"]
    trained = [model["rates"] for model in built if model["rates"]]
    used = sorted({rate for rates in trained for rate in rates})
    assert used, _("no optimizer ever stepped during the experiment: see train's tests")
    assert used == RATES, _(
        "the models trained with learning rates {used}, expected {rates}: pass each rate to train"
    ).format(used=used, rates=RATES)
    shared = next((rates for rates in trained if len(rates) > 1), None)
    assert shared is None, _(
        "one model trained with the rates {shared} in turn: call make_model() for each rate"
    ).format(shared=shared)
    assert len(trained) == len(RATES), _("{models} trained for {n_rates} rates").format(
        models=models(len(trained)), n_rates=len(RATES)
    )
    # The outcome: for each rate, a model whose final weights are those of SGD at that rate from its fresh weights.
    for rate in RATES:
        fresh = [
            index
            for index, model in enumerate(built)
            if index < len(RATES_STATES)
            # the weights only: an evaluation in training mode moves the running statistics
            and any(same(weights_of(model["final"]), final) for final in rates_tiny["expected"][rate][index])
        ]
        assert fresh, _(
            "no model built by make_model() ends with the weights of {tiny_rate_epochs} epochs of SGD "
            "at lr {rate} from its fresh weights: train each fresh model for `epochs` epochs at its "
            "rate (see train's tests)"
        ).format(tiny_rate_epochs=TINY_RATE_EPOCHS, rate=rate)


# --- the runs on MNIST, scored here ------------------------------------------------------------


def lesson_cnn(state) -> nn.Module:
    """The grader's own MnistCNN with the trained weights."""
    model = architectures.LessonCNN()
    problem = load_in_order(model, state)
    assert not problem, _("MnistCNN's {problem}").format(problem=problem)
    return model.eval()


def training_slices(dataset, budget):
    """A shuffle of the training split drawn for this grading, cut into (train images, labels, valid images, labels)."""
    order = torch.randperm(len(dataset.train), generator=generator("experiments slices"))
    train, valid = order[: budget["train_images"]], order[budget["train_images"] :][: budget["valid_images"]]
    return dataset.train.x[train], dataset.train.y[train], dataset.train.x[valid], dataset.train.y[valid]


LOSS_IMAGES = 5000  # the training loss is measured here on at most these many of the training images


def mean_loss(state, x, y):
    model = lesson_cnn(state)
    with torch.no_grad():
        return F.cross_entropy(model(x), y).item()


def validation_accuracy(state, x, y):
    model = lesson_cnn(state)
    with torch.no_grad():
        predicted = torch.cat([model(batch).argmax(1) for batch in x.split(1000)])
    return (predicted == y).float().mean().item()


@pytest.mark.points(1)
@pytest.mark.task("epochs_experiment", "train")
def test_epochs_experiment_loss_falls(submission, profile, dataset):
    """epochs_experiment: the loss falls at lr 0.01"""
    budget = profile.budget["experiments"]
    x, y, _unused, _unused = training_slices(dataset, budget)
    run = submission.run(probes.epochs_mnist, x, y, budget)
    results = run["results"]
    assert isinstance(results, dict) and sorted(results) == EPOCH_COUNTS, _("no losses for 5 and 10 epochs")
    for epochs, losses in results.items():
        numbers = isinstance(losses, list) and len(losses) > 1 and all(isinstance(v, float) for v in losses)
        assert numbers, _("the {epochs}-epoch run returned {losses}, expected a loss per epoch").format(
            epochs=epochs, losses=losses
        )
        assert losses[-1] < 0.8 * losses[0], _(
            "the {epochs}-epoch loss goes from {losses0:.3f} to {losses:.3f}: at lr 0.01 it should end "
            "below {value:.3f} (a bug in train, or a learning rate that is not passed on?)"
        ).format(epochs=epochs, losses0=losses[0], losses=losses[-1], value=0.8 * losses[0])
    # The outcome, measured here: the training loss of each trained model, before and after.
    trained = [model for model in run["models"] if model["forwards"]]
    assert trained, _("no model was trained")
    x, y = to_float(x[:LOSS_IMAGES]), y[:LOSS_IMAGES]
    for number, model in enumerate(trained, 1):
        before, after = mean_loss(model["initial"], x, y), mean_loss(model["final"], x, y)
        assert after < 0.8 * before, _(
            "the training loss of model {number} goes from {before:.3f} (as built) to {after:.3f} "
            "(trained), measured by the grader: at lr 0.01 it should end below {value:.3f}"
        ).format(number=number, before=before, after=after, value=0.8 * before)


@pytest.mark.points(2)
@pytest.mark.task("learning_rate_experiment", "evaluate", "predict", "train")
def test_learning_rate_experiment_validation_accuracy(submission, profile, dataset):
    """learning_rate_experiment: each rate's trained model, scored on the validation images"""
    budget = profile.budget["experiments"]
    x, y, valid_x, valid_y = training_slices(dataset, budget)
    run = submission.run(probes.rates_mnist, x, y, valid_x, valid_y, budget)
    results = run["results"]
    assert isinstance(results, dict) and sorted(results) == RATES, _("no accuracies keyed by the rates")
    # models trained with one rate, scored here on the validation images
    valid_x = to_float(valid_x)
    scores = {
        model["rates"][0]: validation_accuracy(model["final"], valid_x, valid_y)
        for model in run["models"]
        if len(model["rates"]) == 1
    }
    # one image scored differently here (another device, another order of sums) is no mistake
    tolerance = 1.5 / len(valid_y)
    for rate in RATES:
        assert rate in scores, _("no model was trained with lr {rate} alone: pass each rate to train").format(rate=rate)
        got, expected = results[rate], scores[rate]
        assert isinstance(got, float), _("for lr {rate} it returned {got}, expected a float").format(rate=rate, got=got)
        assert abs(got - expected) < tolerance, _(
            "for lr {rate} it returned {got:.4f}, but the model trained with lr {rate} scores "
            "{expected:.4f} on valid_loader: evaluate each trained model on valid_loader"
        ).format(rate=rate, got=got, expected=expected)
