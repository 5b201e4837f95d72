"""train_ch6 and evaluate_accuracy_gpu (training.py), checked on a tiny model and random batches.

The batches are drawn for this grading. The probe runs the student's train_ch6 on a tiny net with
batch norm, whose running statistics change only in training mode, over two epochs with an
evaluation between them, and returns the weights it started from, after every step and at the end. The grader
follows every optimizer step itself (grader.training_check): each test passes when the steps the
grader recognizes have its property right, whatever else is wrong. What the probe saw on the way
(moves, zero_grad calls, steps, modes) makes a failure's reason precise; it earns no point alone.
"""

import math

import pytest
import torch

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
    zeroed_every_batch,
)

probes = probes_for(__file__)
pytestmark = pytest.mark.training  # they run training loops: `grade --watch` leaves them to a key press
LR, EPOCHS = 0.1, 2
TRAIN_BATCH, TEST_BATCH = 4, 3  # different sizes tell training passes from evaluation passes


def random_batches(label, count, size):
    """`count` batches (x (size, 1, 8, 8) in [0, 1), y (size,) in 0..9), drawn for this grading."""
    rng = generator(label)
    return [
        (torch.rand(size, 1, 8, 8, generator=rng), torch.randint(0, 10, (size,), generator=rng)) for _ in range(count)
    ]


TRAIN = random_batches("train_ch6 train", 2, TRAIN_BATCH)
TEST = random_batches("train_ch6 test", 2, TEST_BATCH)


LOOP = Loop(probes.tiny_net, TRAIN, EPOCHS, LR, function="train_ch6", model="net", call="net(X) against y")


@pytest.fixture(scope="module")
def trained(submission):
    return submission.run(probes.train_tiny, TRAIN, TEST, EPOCHS, LR)


@pytest.fixture(scope="module")
def trajectory(trained):
    return follow(LOOP, trained)  # from the weights train_ch6 drew itself


@pytest.mark.points(3)
@pytest.mark.task("train_ch6")
def test_moves_model_and_batches_to_device(trained, trajectory):
    """train_ch6: moves the model and every batch to the device"""
    moved_to_device(trained, trajectory)


@pytest.mark.points(3)
@pytest.mark.task("train_ch6")
def test_zeroes_gradients_every_batch(trained, trajectory):
    """train_ch6: zeroes the gradients before every batch"""
    zeroed_every_batch(trained, trajectory)


@pytest.mark.points(2)
@pytest.mark.task("train_ch6")
def test_steps_optimizer_every_batch(trajectory):
    """train_ch6: one optimizer step per batch"""
    every_batch_stepped(trajectory)


@pytest.mark.points(5)
@pytest.mark.task("train_ch6")
def test_sgd_update_matches(trajectory):
    """train_ch6: the weights follow SGD on the cross-entropy"""
    follows_the_loop(trajectory)


@pytest.mark.points(3)
@pytest.mark.task("train_ch6", "evaluate_accuracy_gpu")
def test_train_and_eval_modes(trained, trajectory):
    """train_ch6: training mode to train, evaluation mode to test, every epoch"""
    modes = [(forward["training"], forward["size"]) for forward in trained["forwards"]]
    training = [mode for mode, size in modes if size == TRAIN_BATCH]
    testing = [mode for mode, size in modes if size == TEST_BATCH]
    assert training and all(training[: len(TRAIN)]), _("some training batches ran in evaluation mode: call net.train()")
    assert testing, _("the model never ran on test_iter: evaluate it at the end of every epoch")
    assert not any(testing), _("the model evaluated test_iter in training mode: call net.eval() first")
    assert all(training), _(
        "after the first evaluation, training ran in evaluation mode: call net.train() at the start of every epoch"
    )
    training_and_evaluation_modes(trajectory)


def predicted(state, batches, training):
    """The classes the tiny net with `state` predicts for each batch, in training or evaluation mode."""
    net = probes.tiny_net()
    net.load_state_dict(state)
    net.train(training)
    with torch.no_grad():
        return [net(x).argmax(1) for x, _ in batches]


def evaluation_inputs():
    """Weights for the tiny net, and batches (the last one short) on which evaluation mode decides
    the accuracy, whatever the seed.

    The running statistics are far from any batch's own (shifted by 2 standard deviations, 5 times
    narrower), so that training mode predicts other classes than evaluation mode for some items:
    every other such item is labelled with its evaluation-mode class, every other item with a class
    neither mode predicts. In evaluation mode the accuracy is then above 0, below 1 and not the mean
    of the batches' accuracies; in training mode it is 0. A draw where fewer than 3 items tell the
    modes apart is drawn again (about one in three)."""
    for attempt in range(40):
        with torch.random.fork_rng():
            torch.manual_seed(derived_seed(f"evaluate weights {attempt}"))
            net = probes.tiny_net()
        batches = random_batches(f"evaluate batches {attempt}", 3, 5)
        batches[-1] = (batches[-1][0][:2], batches[-1][1][:2])
        with torch.no_grad():
            net[6].weight.mul_(10)  # the classes follow the features rather than the biases
            z = net[1](torch.cat([x for x, _ in batches]))
            mean, std = z.mean((0, 2, 3)), z.std((0, 2, 3))
            signs = torch.randint(0, 2, (3,), generator=generator(f"evaluate statistics {attempt}")) * 2 - 1
            net[2].running_mean.copy_(mean + 2 * signs * std)
            net[2].running_var.copy_((std / 5) ** 2)
        state = state_of(net)
        differ, labelled, batch_accuracies = 0, [], []
        for (x, y), evaluating, training in zip(
            batches, predicted(state, batches, False), predicted(state, batches, True), strict=True
        ):
            labels = []
            for drawn, e, t in zip(y.tolist(), evaluating.tolist(), training.tolist(), strict=True):
                differ += e != t
                right = e != t and differ % 2 == 1
                labels.append(e if right else next(c % 10 for c in range(drawn, drawn + 10) if c % 10 not in (e, t)))
            labelled.append((x, torch.tensor(labels)))
            batch_accuracies.append((evaluating == labelled[-1][1]).float().mean().item())
        correct, total = (differ + 1) // 2, sum(len(y) for _, y in batches)
        if differ >= 3 and not math.isclose(sum(batch_accuracies) / len(batches), correct / total):
            return state, labelled
    raise RuntimeError("no draw of evaluation inputs tells evaluation mode from training mode")


EVAL_STATE, EVAL_BATCHES = evaluation_inputs()


@pytest.fixture(scope="module")
def evaluated(submission):
    return submission.run(probes.evaluate_tiny, EVAL_STATE, EVAL_BATCHES)


def expected_accuracy():
    """The grader's own accuracy of the tiny net on the evaluation batches, in evaluation mode."""
    predictions = predicted(EVAL_STATE, EVAL_BATCHES, training=False)
    correct = sum((p == y).sum().item() for p, (_, y) in zip(predictions, EVAL_BATCHES, strict=True))
    return correct, sum(len(y) for _, y in EVAL_BATCHES)


def accuracy_matches(evaluated):
    correct, total = expected_accuracy()
    got = evaluated["accuracy"]
    assert math.isclose(got, correct / total), _(
        "evaluate_accuracy_gpu returned {got:.4f}, expected {correct}/{total} = {correct2:.4f}"
    ).format(got=got, correct=correct, total=total, correct2=correct / total)


@pytest.mark.points(3)
@pytest.mark.task("evaluate_accuracy_gpu")
def test_evaluate_accuracy_matches(evaluated):
    """evaluate_accuracy_gpu: the fraction of correct predictions"""
    accuracy_matches(evaluated)


@pytest.mark.points(2)
@pytest.mark.task("evaluate_accuracy_gpu")
def test_evaluate_uses_eval_mode(evaluated):
    """evaluate_accuracy_gpu: evaluation mode"""
    modes = evaluated["modes"]
    assert modes, _("evaluate_accuracy_gpu never ran the model")
    assert not any(mode for mode, _ in modes), _(
        "evaluate_accuracy_gpu ran the model in training mode: call net.eval()"
    )
    changed = max_difference(evaluated["state"], EVAL_STATE)
    assert changed == 0, _("evaluating changed the model's weights or statistics (by up to {changed:.3g})").format(
        changed=changed
    )
    # training mode gets none of these inputs right: a value only evaluation mode gives shows the mode,
    # be it the fraction or the count (which the accuracy test judges)
    correct, total = expected_accuracy()
    got = evaluated["accuracy"]
    assert any(math.isclose(got, value) for value in (correct / total, correct)), _(
        "evaluate_accuracy_gpu returned {got:.4f}, which evaluation mode does not give ({correct}/{total} correct)"
    ).format(got=got, correct=correct, total=total)
