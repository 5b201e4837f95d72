"""Training a transferred model (transfer.py): train_mode, train, fine_tune, and the trained accuracy.

The loop checks run the student's functions on a ResNet in miniature (ResNet-18's layout and
names, a few channels), in double precision, from weights and on batches drawn for this grading;
the grader recomputes the same steps itself (AdamW, cross-entropy, frozen BatchNorm layers in
evaluation mode) and compares the weights and statistics. What the probes see on the way (modes,
steps, zero_grad calls, which optimizer held what) makes a failure's reason precise; it earns no
point unless the weights match too. The accuracy test transfers a backbone to a new task:

- quick (CPU, offline): the kit pre-trains a small ResNet on one part of the MNIST subset (which
  digit, 0-9) here, in the grader's process; the probe receives its weights and, with the student's
  code, replaces its head, freezes the rest and trains the head on a new, small task from the other
  part (is the digit 5 or more? 5 images of each digit). The kit also trains the same network from
  scratch on the same small task with the same budget: transfer must beat it.
- full (GPU): ResNet-18 with torchvision's ImageNet weights, read from the torch cache (never
  downloaded), on CIFAR-10, with the student's training transform.

Either way the probe returns the weights of what the variant trains (the head, for last_layer),
and the grader puts them in its own copy of the pretrained network and tests it on images whose
labels never reach the sandbox. Which parts each variant trains is an answer (official/answers.py):
a student's bundle skips the accuracy test.
"""

import math
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from grader.i18n import _, number
from grader.probing import TensorBatches, state_of
from grader.testing import (
    accuracy_of,
    derived_seed,
    evaluate,
    generator,
    load_in_order,
    max_difference,
    official_for,
    official_only,
    one_thread,
    probes_for,
)

probes = probes_for(__file__)
pytestmark = pytest.mark.training  # they run training loops: `grade --watch` leaves them to a key press
official = official_for(__file__)  # the parts each variant trains; None in a student's bundle

TRAIN_LR, TRAIN_STEPS = 0.01, 5  # 5 steps over 2 batches: train must walk the batches again
HEAD_STEPS, ALL_STEPS = 3, 2
TOLERANCE = 1e-9  # double precision, the same operations on the same machine
DIGIT_MEAN, DIGIT_STD = 0.1307, 0.3081  # the kit backbone's own preprocessing (MNIST's statistics)
DIGITS = 10  # the kit backbone's classes: which digit


def tiny_state():
    """The tiny ResNet's initial weights, drawn for this grading."""
    with torch.random.fork_rng():
        torch.manual_seed(derived_seed("tiny resnet weights"))
        return state_of(probes.MiniResNet(3, width=4).double())


def random_batches(label, count, size):
    """`count` batches (x (size, 1, 16, 16) in [0, 1), y (size,) in 0..2), in double precision."""
    rng = generator(label)
    return [
        (torch.rand(size, 1, 16, 16, generator=rng, dtype=torch.float64), torch.randint(0, 3, (size,), generator=rng))
        for _ in range(count)
    ]


TINY_STATE = tiny_state()
BATCHES = random_batches("train batches", 2, 6)
MODE_X = random_batches("train_mode batch", 1, 6)[0][0]


def adamw_steps(model, batches, steps, lr, accumulate=False):
    """The kit's training loop: AdamW on the trainable parameters, cross-entropy, `steps` steps cycling over `batches`.

    Frozen BatchNorm layers stay in evaluation mode. Returns the loss of each step.
    """
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    kit_train_mode(model)
    losses = []
    while len(losses) < steps:
        for x, y in batches:
            if not accumulate:
                optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if len(losses) == steps:
                break
    return losses


def kit_train_mode(model):
    """The statement's policy: training mode, but for BatchNorm layers whose parameters are all frozen."""
    frozen = probes.frozen_batchnorms(model)
    model.train()
    for name, module in model.named_modules():
        if name in frozen:
            module.eval()


def listing(names, limit=3):
    names = list(names)
    shown = ", ".join(names[:limit])
    return (
        _("{shown} and {n_names} more").format(shown=shown, n_names=len(names) - limit) if len(names) > limit else shown
    )


def state_gaps(got, expected):
    """The largest differences of the weights and of the BatchNorm statistics: (weights, statistics)."""
    if not isinstance(got, dict) or set(got) != set(expected):
        return math.inf, math.inf
    buffers = {name for name in expected if name.rsplit(".", 1)[-1] in ("running_mean", "running_var")}
    parameters = {name for name in expected if name not in buffers and not name.endswith("num_batches_tracked")}
    return tuple(
        max_difference({k: got[k] for k in names}, {k: expected[k] for k in names}) for names in (parameters, buffers)
    )


# --- train_mode ----------------------------------------------------------------------------------


def train_mode_recomputed():
    """The grader's own: the statement's modes, then one forward pass of MODE_X: the buffers."""
    model = probes.tiny_resnet(TINY_STATE)
    probes.freeze_for_last_layers(model)
    kit_train_mode(model)
    with one_thread(), torch.no_grad():
        model(MODE_X)
    return {name: b.detach().clone() for name, b in model.named_buffers()}


@pytest.mark.points(3)
@pytest.mark.task("train_mode")
def test_train_mode_keeps_frozen_batchnorm_in_eval(submission):
    """train_mode: training mode, but frozen BatchNorm layers in evaluation mode"""
    got = submission.run(probes.modes_after_train_mode, TINY_STATE, MODE_X)
    training = got["training"]
    assert training["model"], _("train_mode left the model in evaluation mode: call model.train() first")
    drifting = [name for name in got["frozen_batchnorms"] if training[name]]
    assert not drifting, _(
        "frozen BatchNorm layers are in training mode ({listing}): their running statistics would "
        "drift away from the pretrained ones"
    ).format(listing=listing(drifting))
    stuck = [name for name in got["trainable_batchnorms"] if not training[name]]
    assert not stuck, _("trainable BatchNorm layers are in evaluation mode ({listing}): only frozen ones are").format(
        listing=listing(stuck)
    )
    batchnorms = set(got["frozen_batchnorms"]) | set(got["trainable_batchnorms"])
    others = [name for name, mode in training.items() if not mode and name not in batchnorms]
    assert not others, _("train_mode put layers other than BatchNorm in evaluation mode: {listing}").format(
        listing=listing(others)
    )
    expected = train_mode_recomputed()
    gap = max_difference(got["buffers"], expected)
    assert gap < TOLERANCE, _(
        "after train_mode, one forward pass changes the BatchNorm statistics otherwise than in the "
        "statement's modes (off by up to {gap:.3g}): frozen BatchNorm layers keep theirs, "
        "trainable ones update them"
    ).format(gap=gap)


# --- train -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(submission):
    return submission.run(probes.train_tiny, TINY_STATE, BATCHES, TRAIN_STEPS, TRAIN_LR)


def recomputed(accumulate=False):
    """The tiny ResNet after the kit's AdamW loop from the same weights on the same batches: (state, losses)."""
    model = probes.tiny_resnet(TINY_STATE)
    probes.freeze_for_last_layers(model)
    with one_thread():
        losses = adamw_steps(model, BATCHES, TRAIN_STEPS, TRAIN_LR, accumulate)
    return state_of(model), losses


@pytest.mark.points(5)
@pytest.mark.task("train", "train_mode")
def test_train_follows_adamw(trained):
    """train: num_steps steps of the given optimizer on the cross-entropy, cycling over the batches"""
    steps = trained["steps"]
    assert steps, _("train never stepped the optimizer: call optimizer.step() after loss.backward()")
    assert steps == TRAIN_STEPS, _(
        "train made {steps} optimizer steps for num_steps = {train_steps} over 2 batches: walk "
        "train_iter again until num_steps steps are done"
    ).format(steps=steps, train_steps=TRAIN_STEPS)
    assert trained["zero_grads"] >= steps, _("zero_grad() ran {zero_grads} times for {steps} steps").format(
        zero_grads=trained["zero_grads"], steps=steps
    )
    final = trained["final"]
    if max(state_gaps(final, recomputed(accumulate=True)[0])) < TOLERANCE:
        pytest.fail(_("the update keeps the previous steps' gradients: zero the gradients before each step"))
    expected, losses = recomputed()
    weights_gap, buffers_gap = state_gaps(final, expected)
    assert weights_gap < TOLERANCE and buffers_gap < TOLERANCE, _(
        "after {train_steps} steps the weights differ from AdamW (lr={train_lr}) on the "
        "cross-entropy by up to {weights_gap:.3g}, the BatchNorm statistics by up to "
        "{buffers_gap:.3g}"
    ).format(train_steps=TRAIN_STEPS, train_lr=TRAIN_LR, weights_gap=weights_gap, buffers_gap=buffers_gap)
    got = trained["losses"]
    assert got is not None and len(got) == TRAIN_STEPS, _(
        "train returned {value} losses, expected one per step ({train_steps})"
    ).format(value=None if got is None else len(got), train_steps=TRAIN_STEPS)
    assert all(math.isclose(a, b, abs_tol=TOLERANCE) for a, b in zip(got, losses, strict=True)), _(
        "train returned the losses {value}, expected {expected_value}"
    ).format(value=[round(v, 4) for v in got], expected_value=[round(v, 4) for v in losses])


# --- fine_tune ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def schedule(submission):
    return submission.run(probes.fine_tune_tiny, TINY_STATE, BATCHES, HEAD_STEPS, ALL_STEPS, TRAIN_LR)


def fine_tune_recomputed():
    """The notebook's schedule, by the kit: the head alone with AdamW at lr, then everything with a
    new AdamW at lr / 10; frozen BatchNorm layers in evaluation mode."""
    model = probes.tiny_resnet(TINY_STATE)
    model.requires_grad_(False)
    model.fc.requires_grad_(True)
    with one_thread():
        adamw_steps(model, BATCHES, HEAD_STEPS, TRAIN_LR)
        model.requires_grad_(True)
        adamw_steps(model, BATCHES, ALL_STEPS, TRAIN_LR / 10)
    return state_of(model)


@pytest.mark.points(5)
@pytest.mark.task("fine_tune", "set_trainable", "make_optimizer", "train")
def test_fine_tune_freezes_then_unfreezes(schedule):
    """fine_tune: the head alone at lr, then everything with a new optimizer at lr / 10"""
    records, every = schedule["records"], schedule["parameters"]
    assert len(records) == HEAD_STEPS + ALL_STEPS, _(
        "fine_tune made {n_records} optimizer steps, expected head_steps + all_steps = {head_steps}"
    ).format(n_records=len(records), head_steps=HEAD_STEPS + ALL_STEPS)
    head = ["fc.bias", "fc.weight"]
    first, second = records[:HEAD_STEPS], records[HEAD_STEPS:]
    for step in first:
        assert step["held"] == head, _("phase 1's optimizer holds {listing}, expected only the head ({join})").format(
            listing=listing(step["held"]), join=", ".join(head)
        )
        assert set(step["moved"]) <= set(head), _("phase 1 moved frozen weights: {listing}").format(
            listing=listing(step["moved"])
        )
        assert step["lrs"] == [TRAIN_LR], _("phase 1's learning rate is {lrs}, expected lr = {train_lr}").format(
            lrs=step["lrs"], train_lr=TRAIN_LR
        )
    for step in second:
        assert step["optimizer"] != first[0]["optimizer"], _(
            "phase 2 steps the phase-1 optimizer, which holds only the head: build a new one after unfreezing"
        )
        assert step["held"] == every, _(
            "phase 2's optimizer holds {n_held} of the model's {n_every} parameters: unfreeze them all"
        ).format(n_held=len(step["held"]), n_every=len(every))
        assert step["lrs"] == [pytest.approx(TRAIN_LR / 10)], _(
            "phase 2's learning rate is {lrs}, expected lr / 10 = {train_lr:g}"
        ).format(lrs=step["lrs"], train_lr=TRAIN_LR / 10)
    assert any(name not in head for step in second for name in step["moved"]), _("phase 2 never moved the backbone")
    weights_gap, buffers_gap = state_gaps(schedule["final"], fine_tune_recomputed())
    assert weights_gap < TOLERANCE and buffers_gap < TOLERANCE, _(
        "after fine_tune the weights differ from the schedule's (AdamW on the head at lr = "
        "{train_lr}, then on everything at lr / 10) by up to {weights_gap:.3g}, the BatchNorm "
        "statistics by up to {buffers_gap:.3g}"
    ).format(train_lr=TRAIN_LR, weights_gap=weights_gap, buffers_gap=buffers_gap)


# --- the trained accuracy -------------------------------------------------------------------


def kit_preprocess(x):
    """The kit backbone's preprocessing: uint8 digits (N, 1, 28, 28) -> float, normalized with MNIST's statistics."""
    return probes.kit_preprocess(x, DIGIT_MEAN, DIGIT_STD)


def digit_tasks(dataset, budget):
    """The quick profile's source and target tasks, from the MNIST subset's training images.

    Source (the large dataset): the first `source_per_class` training images of each digit,
    labelled 0-9. Target (the new, small task): `shots` other images of each digit, drawn for this
    grading, labelled 1 when the digit is 5 or more, else 0.
    """
    rng = generator("target shots")
    source, target = [], []
    for digit in range(DIGITS):
        images = (dataset.train.y == digit).nonzero().flatten()
        source.append(images[: budget["source_per_class"]])
        rest = images[budget["source_per_class"] :]
        target.append(rest[torch.randperm(len(rest), generator=rng)[: budget["shots"]]])
    source, target = torch.cat(source), torch.cat(target)
    x, y = dataset.train.x, dataset.train.y
    return (x[source], y[source]), (x[target], (y[target] >= 5).long())


def kit_models(dataset, budget):
    """The kit's side of the quick profile: the pre-trained backbone and the from-scratch accuracy.

    Both use the kit's own loop (AdamW, cross-entropy), here in the grader's process. Returns
    (the backbone's state dict, the target's training images and labels, the test labels, the
    accuracy on the test images of the same network trained from scratch on the target).
    """
    (source_x, source_y), (target_x, target_y) = digit_tasks(dataset, budget)
    test_y = (dataset.test.y >= 5).long()
    with one_thread(), torch.random.fork_rng():
        torch.manual_seed(derived_seed("kit networks"))
        backbone = probes.MiniResNet(DIGITS, budget["width"])
        source = TensorBatches(kit_preprocess(source_x), source_y, budget["pretrain_batch_size"], shuffle=True)
        adamw_steps(backbone, source, budget["pretrain_steps"], budget["pretrain_lr"])
        scratch = probes.MiniResNet(budget["classes"], budget["width"])
        target = TensorBatches(kit_preprocess(target_x), target_y, budget["batch_size"], shuffle=True)
        adamw_steps(scratch, target, budget["steps"], budget["lr"])
        scratch_accuracy = evaluate(scratch, kit_preprocess(dataset.test.x), test_y)
    return state_of(backbone), target_x, target_y, test_y, scratch_accuracy


def imagenet_resnet18(budget):
    """ResNet-18's ImageNet weights from the torch cache, or a skip that says why (the grader never downloads them)."""
    weights = getattr(torchvision.models.ResNet18_Weights, budget["weights"])
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not cached.is_file():
        pytest.skip(
            _(
                "ResNet-18's ImageNet weights are not in the torch cache ({cached}); the grader never downloads them"
            ).format(cached=cached)
        )
    return torch.load(cached, map_location="cpu", weights_only=True)


def evaluate_preprocessed(model, x, y, preprocess, device, batch_size=250):
    """The grader's own test accuracy of `model` on uint8 images x, preprocessed batch by batch on `device`."""
    model.to(device).eval()
    with torch.no_grad():
        predictions = torch.cat([model(preprocess(batch.to(device))).argmax(1).cpu() for batch in x.split(batch_size)])
    return accuracy_of(predictions, y)


def transferred(budget, state, parts, classes, trained):
    """The grader's copy of the pretrained network with a new head and the returned weights in
    the parts the variant trains: (model, "" or why they do not fit)."""
    if budget["model"] == "resnet18":
        model = torchvision.models.resnet18()
    else:
        model = probes.MiniResNet(DIGITS, budget["width"])
    model.load_state_dict(state)
    model.fc = nn.Linear(model.fc.in_features, classes)
    if not isinstance(trained, dict) or set(trained) != set(parts):
        return model, _("the transfer returned {name}, not the weights of {join}").format(
            name=type(trained).__name__, join=", ".join(parts)
        )
    for part in parts:
        problem = load_in_order(model.get_submodule(part), trained[part])
        if problem:
            return model, f"{part}: {problem}"
    return model, ""


@pytest.mark.points(10)
@pytest.mark.accuracy
@pytest.mark.task(
    "prepare_resnet", "replace_resnet_head", "set_trainable", "make_optimizer", "train", "train_mode", "VARIANTS"
)
@pytest.mark.official("the weights trained in the parts the variant trains reach the required test accuracy")
def test_transfer_accuracy(submission, profile, request, record_property):
    """prepare_resnet + train: the transferred model's test accuracy"""
    budget = profile.budget
    parts = official_only(official).PARTS[budget["variant"]]
    if budget["model"] == "resnet18":
        state, scratch, kit = imagenet_resnet18(budget), None, None  # before the dataset: a skip need not load it
        dataset = request.getfixturevalue("dataset")
        train_x, train_y = dataset.train.x[: budget["train_size"]], dataset.train.y[: budget["train_size"]]
        test_y = dataset.test.y
        preset = getattr(torchvision.models.ResNet18_Weights, budget["weights"]).transforms()
        device = profile.device if profile.device != "cuda" or torch.cuda.is_available() else "cpu"
    else:
        dataset = request.getfixturevalue("dataset")
        state, train_x, train_y, test_y, scratch = kit_models(dataset, budget)
        kit = {"classes": DIGITS, "width": budget["width"], "mean": DIGIT_MEAN, "std": DIGIT_STD}
    trained = submission.run(probes.transfer, state, train_x, train_y, budget, parts, kit)
    model, problem = transferred(budget, state, parts, budget["classes"], trained)
    assert not problem, problem
    if kit is None:
        accuracy = evaluate_preprocessed(model, dataset.test.x, test_y, preset, device)
    else:
        with one_thread():
            accuracy = evaluate(model, kit_preprocess(dataset.test.x), test_y)
    record_property("accuracy", round(accuracy, 4))
    record_property("min_accuracy", profile.min_accuracy)
    task = _("{variant}, {steps} steps on {n_train_y} {name} images").format(
        variant=budget["variant"], steps=budget["steps"], n_train_y=number(len(train_y)), name=dataset.name
    )
    assert accuracy >= profile.min_accuracy, _(
        "test accuracy {accuracy:.1%} is below the {min_accuracy:.0%} required ({task})"
    ).format(accuracy=accuracy, min_accuracy=profile.min_accuracy, task=task)
    if scratch is not None:
        record_property("scratch_accuracy", round(scratch, 4))
        assert accuracy > scratch, _(
            "test accuracy {accuracy:.1%} does not beat the {scratch:.1%} of the same network trained "
            "from scratch with the same budget ({task})"
        ).format(accuracy=accuracy, scratch=scratch, task=task)
