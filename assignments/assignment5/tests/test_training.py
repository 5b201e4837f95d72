"""Training a transferred model (transfer.py): train_mode, train, fine_tune, and the trained accuracy.

The loop checks run the student's functions on a ResNet in miniature (ResNet-18's layout and
names, a few channels), in double precision, on fixed batches; the grader recomputes AdamW on the
same batches and compares. The accuracy test transfers a backbone to a new task:

- quick (CPU, offline): the kit pre-trains a small ResNet on one part of the MNIST subset (which
  digit, 0-9) here, in the grader's process; the probe receives its weights and, with the student's
  code, replaces its head, freezes the rest and trains the head on a new, small task from the other
  part (is the digit 5 or more? 5 images of each digit). The kit also trains the same network from
  scratch on the same small task with the same budget: transfer must beat it.
- full (GPU): ResNet-18 with torchvision's ImageNet weights, read from the torch cache (never
  downloaded), on CIFAR-10, with the student's transforms.
"""

import math
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook
from torchvision.models.resnet import BasicBlock, conv1x1

from grader.data import TensorBatches
from grader.testing import accuracy_of, grading_seed, max_difference, recording, state_of

TRAIN_LR, TRAIN_STEPS = 0.01, 5  # 5 steps over 2 batches: train must walk the batches again
HEAD_STEPS, ALL_STEPS = 3, 2
DIGIT_MEAN, DIGIT_STD = 0.1307, 0.3081  # the kit backbone's own preprocessing (MNIST's statistics)
DIGITS = 10  # the kit backbone's classes: which digit


class MiniResNet(nn.Module):
    """ResNet-18's layout and names (conv1, bn1, layer1 ... layer4, avgpool, fc) at a small scale.

    One BasicBlock per stage, `width` channels in the first (2x, 4x, 8x in the next ones), for
    one-channel images: x (N, 1, H, W) -> logits (N, num_classes).
    """

    def __init__(self, num_classes: int, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(2)
        self.layer1 = self.stage(width, width, 1)
        self.layer2 = self.stage(width, 2 * width, 2)
        self.layer3 = self.stage(2 * width, 4 * width, 2)
        self.layer4 = self.stage(4 * width, 8 * width, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8 * width, num_classes)

    @staticmethod
    def stage(inputs: int, outputs: int, stride: int) -> nn.Sequential:
        shortcut = None if stride == 1 else nn.Sequential(conv1x1(inputs, outputs, stride), nn.BatchNorm2d(outputs))
        return nn.Sequential(BasicBlock(inputs, outputs, stride, shortcut))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def tiny_resnet():
    """The network of the loop checks: a 3-class MiniResNet of width 4, in double precision."""
    torch.manual_seed(0)
    return MiniResNet(3, width=4).double()


def freeze_for_last_layers(model):
    """The kit's own freezing, so that the loop checks do not depend on the student's: layer4 and fc learn."""
    model.requires_grad_(False)
    model.layer4.requires_grad_(True)
    model.fc.requires_grad_(True)


def fixed_batches():
    generator = torch.Generator().manual_seed(1)
    return [
        (
            torch.rand(6, 1, 16, 16, generator=generator, dtype=torch.float64),
            torch.randint(0, 3, (6,), generator=generator),
        )
        for _ in range(2)
    ]


def frozen_batchnorms(model):
    """The names of the BatchNorm layers whose parameters are all frozen."""
    return {
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.BatchNorm2d) and not any(p.requires_grad for p in module.parameters())
    }


def adamw_steps(model, batches, steps, lr, accumulate=False):
    """The kit's training loop: AdamW on the trainable parameters, cross-entropy, `steps` steps cycling over `batches`.

    Frozen BatchNorm layers stay in evaluation mode. Returns the loss of each step.
    """
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    frozen = frozen_batchnorms(model)
    model.train()
    for name, module in model.named_modules():
        if name in frozen:
            module.eval()
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


@contextmanager
def one_thread():
    """Small networks train faster on one thread than on several competing for a busy machine's cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def as_floats(values):
    return None if values is None else [float(v) for v in values]


def modes_after_train_mode(sub):
    """Probe: train_mode on a tiny ResNet (layer4 and fc trainable), starting from evaluation mode."""
    model = tiny_resnet()
    freeze_for_last_layers(model)
    model.eval()
    sub.transfer.train_mode(model)
    batchnorms = {name for name, module in model.named_modules() if isinstance(module, nn.BatchNorm2d)}
    return {
        "training": {name or "model": module.training for name, module in model.named_modules()},
        "frozen_batchnorms": sorted(frozen_batchnorms(model)),
        "trainable_batchnorms": sorted(batchnorms - frozen_batchnorms(model)),
    }


def train_tiny(sub):
    """Probe: the student's train for TRAIN_STEPS steps on a tiny ResNet, with the kit's freezing and AdamW."""
    torch.set_num_threads(1)
    model = tiny_resnet()
    freeze_for_last_layers(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=TRAIN_LR)
    initial = state_of(model)
    steps = []
    hook = register_optimizer_step_post_hook(lambda opt, args, kwargs: steps.append(1))
    with recording(
        optimizer_zero_grad=(torch.optim.Optimizer, "zero_grad"), module_zero_grad=(nn.Module, "zero_grad")
    ) as calls:
        try:
            losses = sub.transfer.train(model, optimizer, fixed_batches(), TRAIN_STEPS, "cpu")
        finally:
            hook.remove()
    return {
        "initial": initial,
        "final": state_of(model),
        "steps": len(steps),
        "zero_grads": len(calls),
        "losses": as_floats(losses),
    }


def fine_tune_tiny(sub):
    """Probe: the student's fine_tune on a tiny ResNet; at each step: which optimizer, what it holds, what moved."""
    torch.set_num_threads(1)
    model = tiny_resnet()
    names = {id(p): name for name, p in model.named_parameters()}
    optimizers, records, previous = [], [], [state_of(model)]

    def record(optimizer, args, kwargs):
        if not any(optimizer is seen for seen in optimizers):
            optimizers.append(optimizer)  # kept alive: a new optimizer cannot reuse an old one's id
        now = state_of(model)
        records.append(
            {
                "optimizer": next(i for i, seen in enumerate(optimizers) if seen is optimizer),
                "held": sorted(
                    names.get(id(p), "a tensor outside the model") for g in optimizer.param_groups for p in g["params"]
                ),
                "lrs": [group["lr"] for group in optimizer.param_groups],
                "moved": sorted(name for name in names.values() if not torch.equal(now[name], previous[0][name])),
            }
        )
        previous[0] = now

    hook = register_optimizer_step_post_hook(record)
    try:
        sub.transfer.fine_tune(model, ("fc",), fixed_batches(), HEAD_STEPS, ALL_STEPS, TRAIN_LR, "cpu")
    finally:
        hook.remove()
    return {"records": records, "parameters": sorted(names.values())}


def listing(names, limit=3):
    names = list(names)
    shown = ", ".join(names[:limit])
    return f"{shown} and {len(names) - limit} more" if len(names) > limit else shown


@pytest.mark.points(3)
@pytest.mark.task("train_mode")
def test_train_mode_keeps_frozen_batchnorm_in_eval(submission):
    """train_mode: training mode, but frozen BatchNorm layers in evaluation mode"""
    got = submission.run(modes_after_train_mode)
    training = got["training"]
    assert training["model"], "train_mode left the model in evaluation mode: call model.train() first"
    drifting = [name for name in got["frozen_batchnorms"] if training[name]]
    assert not drifting, (
        f"frozen BatchNorm layers are in training mode ({listing(drifting)}): "
        "their running statistics would drift away from the pretrained ones"
    )
    stuck = [name for name in got["trainable_batchnorms"] if not training[name]]
    assert not stuck, f"trainable BatchNorm layers are in evaluation mode ({listing(stuck)}): only frozen ones are"
    batchnorms = set(got["frozen_batchnorms"]) | set(got["trainable_batchnorms"])
    others = [name for name, mode in training.items() if not mode and name not in batchnorms]
    assert not others, f"train_mode put layers other than BatchNorm in evaluation mode: {listing(others)}"


@pytest.fixture(scope="module")
def trained(submission):
    return submission.run(train_tiny)


def recomputed(initial, accumulate=False):
    """The tiny ResNet after the kit's AdamW loop from the same weights on the same batches: (state, losses)."""
    model = tiny_resnet()
    model.load_state_dict(initial)
    freeze_for_last_layers(model)
    with one_thread():
        losses = adamw_steps(model, fixed_batches(), TRAIN_STEPS, TRAIN_LR, accumulate)
    return state_of(model), losses


@pytest.mark.points(5)
@pytest.mark.task("train", "train_mode")
def test_train_follows_adamw(trained):
    """train: num_steps steps of the given optimizer on the cross-entropy, cycling over the batches"""
    steps = trained["steps"]
    assert steps, "train never stepped the optimizer: call optimizer.step() after loss.backward()"
    assert steps == TRAIN_STEPS, (
        f"train made {steps} optimizer steps for num_steps = {TRAIN_STEPS} over 2 batches: "
        "walk train_iter again until num_steps steps are done"
    )
    assert trained["zero_grads"] >= steps, f"zero_grad() ran {trained['zero_grads']} times for {steps} steps"
    initial, final = trained["initial"], trained["final"]
    if max_difference(final, recomputed(initial, accumulate=True)[0]) < 1e-9:
        pytest.fail("the update keeps the previous steps' gradients: zero the gradients before each step")
    expected, losses = recomputed(initial)
    buffers = {name for name in expected if name.rsplit(".", 1)[-1] in ("running_mean", "running_var")}
    parameters = {name for name in expected if name not in buffers and not name.endswith("num_batches_tracked")}
    weights_gap = max_difference({k: final[k] for k in parameters}, {k: expected[k] for k in parameters})
    buffers_gap = max_difference({k: final[k] for k in buffers}, {k: expected[k] for k in buffers})
    assert weights_gap < 1e-9 and buffers_gap < 1e-9, (
        f"after {TRAIN_STEPS} steps the weights differ from AdamW (lr={TRAIN_LR}) on the cross-entropy by up to "
        f"{weights_gap:.3g}, the BatchNorm statistics by up to {buffers_gap:.3g}"
    )
    got = trained["losses"]
    assert got is not None and len(got) == TRAIN_STEPS, (
        f"train returned {None if got is None else len(got)} losses, expected one per step ({TRAIN_STEPS})"
    )
    assert all(math.isclose(a, b, abs_tol=1e-9) for a, b in zip(got, losses, strict=True)), (
        f"train returned the losses {[round(v, 4) for v in got]}, expected {[round(v, 4) for v in losses]}"
    )


@pytest.fixture(scope="module")
def schedule(submission):
    return submission.run(fine_tune_tiny)


@pytest.mark.points(5)
@pytest.mark.task("fine_tune", "set_trainable", "make_optimizer", "train")
def test_fine_tune_freezes_then_unfreezes(schedule):
    """fine_tune: the head alone at lr, then everything with a new optimizer at lr / 10"""
    records, every = schedule["records"], schedule["parameters"]
    assert len(records) == HEAD_STEPS + ALL_STEPS, (
        f"fine_tune made {len(records)} optimizer steps, expected head_steps + all_steps = {HEAD_STEPS + ALL_STEPS}"
    )
    head = ["fc.bias", "fc.weight"]
    first, second = records[:HEAD_STEPS], records[HEAD_STEPS:]
    for step in first:
        assert step["held"] == head, (
            f"phase 1's optimizer holds {listing(step['held'])}, expected only the head ({', '.join(head)})"
        )
        assert set(step["moved"]) <= set(head), f"phase 1 moved frozen weights: {listing(step['moved'])}"
        assert step["lrs"] == [TRAIN_LR], f"phase 1's learning rate is {step['lrs']}, expected lr = {TRAIN_LR}"
    for step in second:
        assert step["optimizer"] != first[0]["optimizer"], (
            "phase 2 steps the phase-1 optimizer, which holds only the head: build a new one after unfreezing"
        )
        assert step["held"] == every, (
            f"phase 2's optimizer holds {len(step['held'])} of the model's {len(every)} parameters: unfreeze them all"
        )
        assert step["lrs"] == [pytest.approx(TRAIN_LR / 10)], (
            f"phase 2's learning rate is {step['lrs']}, expected lr / 10 = {TRAIN_LR / 10:g}"
        )
    assert any(name not in head for step in second for name in step["moved"]), "phase 2 never moved the backbone"


# --- the trained accuracy -------------------------------------------------------------------


def kit_preprocess(x):
    """The kit backbone's preprocessing: uint8 digits (N, 1, 28, 28) -> float, normalized with MNIST's statistics."""
    return (x.float() / 255 - DIGIT_MEAN) / DIGIT_STD


class Transformed:
    """Batches (transform(x), y) of an iterable of (x, y) batches: preprocessing on the fly, on x's device."""

    def __init__(self, batches, transform):
        self.batches, self.transform = batches, transform

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        for x, y in self.batches:
            yield self.transform(x), y


def transfer_and_predict(sub, state, train_x, train_y, test_x, budget):
    """Probe: the student's transfer of a pretrained ResNet (weights `state`) to a new task; predictions for test_x.

    The test labels never come here: the grader scores the predictions itself.
    """
    device = torch.device(sub.device)
    if budget["model"] == "resnet18":  # full: ImageNet weights, the student's own transforms
        model = torchvision.models.resnet18()
        transforms = sub.augment.split_transforms(getattr(torchvision.models.ResNet18_Weights, budget["weights"]))
        train_transform, test_transform = transforms["train"], transforms["test"]
    else:  # quick: the kit's backbone, pre-trained on the source digits, and its own preprocessing
        torch.set_num_threads(1)
        model = MiniResNet(DIGITS, budget["width"])
        train_transform = test_transform = kit_preprocess
    model.load_state_dict(state)
    optimizer = sub.transfer.prepare_resnet(model, budget["classes"], budget["variant"], budget["lr"])
    batches = TensorBatches(train_x.to(device), train_y.to(device), budget["batch_size"], shuffle=True)
    sub.transfer.train(model, optimizer, Transformed(batches, train_transform), budget["steps"], device)
    model.eval()
    with torch.no_grad():
        chunks = test_x.to(device).split(500)
        return torch.cat([model(test_transform(chunk)).argmax(1).cpu() for chunk in chunks])


def digit_tasks(dataset, budget, seed):
    """The quick profile's source and target tasks, from the MNIST subset's training images.

    Source (the large dataset): the first `source_per_class` training images of each digit,
    labelled 0-9. Target (the new, small task): `shots` other images of each digit, drawn with
    `seed`, labelled 1 when the digit is 5 or more, else 0.
    """
    generator = torch.Generator().manual_seed(seed)
    source, target = [], []
    for digit in range(DIGITS):
        images = (dataset.train.y == digit).nonzero().flatten()
        source.append(images[: budget["source_per_class"]])
        rest = images[budget["source_per_class"] :]
        target.append(rest[torch.randperm(len(rest), generator=generator)[: budget["shots"]]])
    source, target = torch.cat(source), torch.cat(target)
    x, y = dataset.train.x, dataset.train.y
    return (x[source], y[source]), (x[target], (y[target] >= 5).long())


def kit_models(dataset, budget, seed):
    """The kit's side of the quick profile: the pre-trained backbone and the from-scratch accuracy.

    Both use the kit's own loop (AdamW, cross-entropy), here in the grader's process. Returns
    (the backbone's state dict, the target's training images and labels, the test labels, the
    accuracy on the test images of the same network trained from scratch on the target).
    """
    (source_x, source_y), (target_x, target_y) = digit_tasks(dataset, budget, seed)
    test_y = (dataset.test.y >= 5).long()
    with one_thread():
        torch.manual_seed(seed)
        backbone = MiniResNet(DIGITS, budget["width"])
        source = TensorBatches(kit_preprocess(source_x), source_y, budget["pretrain_batch_size"], shuffle=True)
        adamw_steps(backbone, source, budget["pretrain_steps"], budget["pretrain_lr"])
        scratch = MiniResNet(budget["classes"], budget["width"])
        target = TensorBatches(kit_preprocess(target_x), target_y, budget["batch_size"], shuffle=True)
        adamw_steps(scratch, target, budget["steps"], budget["lr"])
        scratch.eval()
        with torch.no_grad():
            predictions = scratch(kit_preprocess(dataset.test.x)).argmax(1)
    return state_of(backbone), target_x, target_y, test_y, accuracy_of(predictions, test_y)


def imagenet_resnet18(budget):
    """ResNet-18's ImageNet weights from the torch cache, or a skip that says why (the grader never downloads them)."""
    weights = getattr(torchvision.models.ResNet18_Weights, budget["weights"])
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not cached.is_file():
        pytest.skip(
            f"ResNet-18's ImageNet weights are not in the torch cache ({cached}); the grader never downloads them"
        )
    return torch.load(cached, map_location="cpu", weights_only=True)


@pytest.mark.points(10)
@pytest.mark.accuracy
@pytest.mark.task(
    "prepare_resnet", "replace_resnet_head", "set_trainable", "make_optimizer", "train", "train_mode", "VARIANTS"
)
def test_transfer_accuracy(submission, profile, request, record_property):
    """prepare_resnet + train: the transferred model's test accuracy"""
    budget = profile.budget
    seed = grading_seed()
    if budget["model"] == "resnet18":
        state, scratch = imagenet_resnet18(budget), None  # before the dataset: a skip need not load it
        dataset = request.getfixturevalue("dataset")
        train_x, train_y = dataset.train.x[: budget["train_size"]], dataset.train.y[: budget["train_size"]]
        test_y = dataset.test.y
    else:
        dataset = request.getfixturevalue("dataset")
        state, train_x, train_y, test_y, scratch = kit_models(dataset, budget, seed)
    predictions = submission.run(transfer_and_predict, state, train_x, train_y, dataset.test.x, budget)
    accuracy = accuracy_of(predictions, test_y)
    record_property("accuracy", round(accuracy, 4))
    record_property("min_accuracy", profile.min_accuracy)
    task = f"{budget['variant']}, {budget['steps']} steps on {len(train_y):,} {dataset.name} images"
    assert accuracy >= profile.min_accuracy, (
        f"test accuracy {accuracy:.1%} is below the {profile.min_accuracy:.0%} required ({task})"
    )
    if scratch is not None:
        record_property("scratch_accuracy", round(scratch, 4))
        assert accuracy > scratch, (
            f"test accuracy {accuracy:.1%} does not beat the {scratch:.1%} of the same network trained from "
            f"scratch with the same budget ({task})"
        )
