"""train_ch6 and evaluate_accuracy_gpu (training.py), checked on a tiny model and random batches.

The batches are drawn for this grading. The probe runs the student's train_ch6 on a tiny net with
batch norm, whose running statistics change only in training mode, over two epochs with an
evaluation between them, and returns the weights it started from and ended with. The grader
recomputes those two epochs itself: the final weights and statistics match only if every batch
was trained once, in training mode, with fresh gradients, and every evaluation ran in evaluation
mode. What the probe saw on the way (moves, zero_grad calls, steps, modes) makes a failure's reason
precise; it earns no point unless the weights match too.
"""

import math

import pytest
import torch
from torch import nn

from grader.i18n import _
from grader.probing import state_of
from grader.testing import derived_seed, generator, max_difference, probes_for

probes = probes_for(__file__)
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


def sgd_reference(initial, accumulate=False):
    """The tiny net after train_ch6's two epochs from `initial`, recomputed here: SGD on the
    cross-entropy in training mode, then an evaluation of the test batches in evaluation mode."""
    net = probes.tiny_net()
    net.load_state_dict(initial)
    optimizer = torch.optim.SGD(net.parameters(), lr=LR)
    loss = nn.CrossEntropyLoss()
    for _unused in range(EPOCHS):
        net.train()
        for x, y in TRAIN:
            if not accumulate:
                optimizer.zero_grad()
            loss(net(x), y).backward()
            optimizer.step()
        net.eval()
        with torch.no_grad():
            for x, _unused in TEST:
                net(x)
    return state_of(net)


@pytest.fixture(scope="module")
def trained(submission):
    return submission.run(probes.train_tiny, TRAIN, TEST, EPOCHS, LR)


def follows_sgd(trained):
    """The outcome every train_ch6 test stands on: the final weights are those of SGD from the start."""
    initial, final = trained["initial"], trained["final"]
    assert initial, _("the model never ran a forward pass during training")
    weights = {name for name, _ in probes.tiny_net().named_parameters()}  # not the running statistics
    moved = max_difference(*({k: v for k, v in state.items() if k in weights} for state in (initial, final)))
    assert moved > 0, _("the weights never changed: is backward() or optimizer.step() missing?")
    if max_difference(final, sgd_reference(initial, accumulate=True)) < 1e-5:
        pytest.fail(_("the update keeps the previous batch's gradients: zero_grad() comes too late or not at all"))
    difference = max_difference(final, sgd_reference(initial))
    assert difference < 1e-5, _(
        "the weights differ from SGD (lr={lr}) on the cross-entropy of net(X) against y, trained "
        "in training mode and evaluated in evaluation mode, by up to {difference:.3g}"
    ).format(lr=LR, difference=difference)


@pytest.mark.points(3)
@pytest.mark.task("train_ch6")
def test_moves_model_and_batches_to_device(trained):
    """train_ch6: moves the model and every batch to the device"""
    assert trained["net_moved"], _("the model is never moved to the device: call net.to(device)")
    batches = len(TRAIN) * EPOCHS
    assert trained["x_moved"] >= batches, _("images X moved to the device in {x_moved} of {batches} batches").format(
        x_moved=trained["x_moved"], batches=batches
    )
    assert trained["y_moved"] >= batches, _("labels y moved to the device in {y_moved} of {batches} batches").format(
        y_moved=trained["y_moved"], batches=batches
    )
    follows_sgd(trained)


@pytest.mark.points(3)
@pytest.mark.task("train_ch6")
def test_zeroes_gradients_every_batch(trained):
    """train_ch6: zeroes the gradients before every batch"""
    count, batches = trained["zero_grads"], len(TRAIN) * EPOCHS
    assert count, _("zero_grad() is never called: gradients pile up from batch to batch")
    assert count >= batches, _("zero_grad() ran {count} times for {batches} batches").format(
        count=count, batches=batches
    )
    follows_sgd(trained)


@pytest.mark.points(2)
@pytest.mark.task("train_ch6")
def test_steps_optimizer_every_batch(trained):
    """train_ch6: one optimizer step per batch"""
    steps, batches = trained["steps"], len(TRAIN) * EPOCHS
    assert steps, _("the optimizer never steps: call optimizer.step() after backward()")
    assert steps == batches, _("the optimizer stepped {steps} times for {batches} batches").format(
        steps=steps, batches=batches
    )
    follows_sgd(trained)


@pytest.mark.points(5)
@pytest.mark.task("train_ch6")
def test_sgd_update_matches(trained):
    """train_ch6: the weights follow SGD on the cross-entropy"""
    follows_sgd(trained)


@pytest.mark.points(3)
@pytest.mark.task("train_ch6", "evaluate_accuracy_gpu")
def test_train_and_eval_modes(trained):
    """train_ch6: training mode to train, evaluation mode to test, every epoch"""
    modes = trained["modes"]
    training = [mode for mode, size in modes if size == TRAIN_BATCH]
    testing = [mode for mode, size in modes if size == TEST_BATCH]
    assert training and all(training[: len(TRAIN)]), _("some training batches ran in evaluation mode: call net.train()")
    assert testing, _("the model never ran on test_iter: evaluate it at the end of every epoch")
    assert not any(testing), _("the model evaluated test_iter in training mode: call net.eval() first")
    assert all(training), _(
        "after the first evaluation, training ran in evaluation mode: call net.train() at the start of every epoch"
    )
    follows_sgd(trained)


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
    accuracy_matches(evaluated)
