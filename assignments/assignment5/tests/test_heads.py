"""New heads and freezing (transfer.py), on torchvision's own ResNet-18 and ConvNeXt-Base.

No pretrained weights are downloaded. The ResNet-18 of these checks is torchvision's, initialised
from a seed drawn for this grading, which the grader repeats to build the same network itself.
ConvNeXt-Base (88.6 M parameters) is built on PyTorch's "meta" device, which has shapes but no
data, except its last block and its classifier, filled in from a seed of the grading's: its
structure, freezing and optimizer are checked without spending 350 MB and seconds.

What the probes report (which parameters require gradients, what the optimizer holds, what
moved) makes a failure's reason precise; the points rest on the grader's own computation with
the same network and inputs: the model's output through the grader's head weights put in the head
the student's function returned, the gradients of one backward pass, the weights after one step
of the student's optimizer (AdamW on exactly the trainable parameters) and after one step of the
student's `train` (frozen BatchNorm statistics kept), compared tensor by tensor.
"""

import math
from functools import cache

import pytest
import torch
import torchvision
from torch import nn

from grader.i18n import _, number
from grader.probing import state_of
from grader.testing import derived_seed, generator, load_in_order, probes_for

probes = probes_for(__file__)

CIFAR_CLASSES, FLOWERS_CLASSES, LR = 10, 102, 1e-3
# What each variant trains, as the statement gives it: parameter-name prefixes ("" is every name).
TRAINED = {"last_layer": ("fc.",), "last_layers": ("layer4.", "fc."), "all_layers": ("",)}
STEP_VARIANTS = ("last_layer", "last_layers")  # those with a frozen part, for the checks of train
FEATURES = 512  # ResNet-18's, into fc
TOLERANCE = 1e-9  # double precision, the same operations on the same machine

RESNET_SEED = derived_seed("resnet18 weights")
FINGERPRINT_SEED = derived_seed("fingerprints")


def uniform(shape, bound, rng, dtype=torch.float32):
    return ((torch.rand(shape, generator=rng, dtype=torch.float64) * 2 - 1) * bound).to(dtype)


def head_inputs():
    rng = generator("resnet head")
    x = torch.rand(2, 3, 64, 64, generator=rng)
    bound = 1 / math.sqrt(FEATURES)
    return x, uniform((CIFAR_CLASSES, FEATURES), bound, rng), uniform((CIFAR_CLASSES,), bound, rng)


HEAD_X, HEAD_WEIGHT, HEAD_BIAS = head_inputs()
STEP_RNG = generator("resnet step batch")
STEP_X = torch.rand(4, 3, 32, 32, generator=STEP_RNG, dtype=torch.float64)
STEP_Y = torch.randint(0, CIFAR_CLASSES, (4,), generator=STEP_RNG)


def listing(names, limit=3):
    """A few names for a message: 'a, b, c and 12 more'."""
    names = list(names)
    shown = ", ".join(names[:limit])
    return (
        _("{shown} and {n_names} more").format(shown=shown, n_names=len(names) - limit) if len(names) > limit else shown
    )


def trained_names(names, variant):
    return {name for name in names if name.startswith(TRAINED[variant])}


class OneThread:
    """The grader's recomputations on one thread, as the probes ran: the same order of operations."""

    def __enter__(self):
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.threads)


def differing(got, expected, tolerance=TOLERANCE):
    """The names whose fingerprints differ (or that only one side has), in the expected order."""
    names = list(expected) + [name for name in got if name not in expected]
    out = []
    for name in names:
        a, b = got.get(name), expected.get(name)
        if a is None or b is None or a.shape != b.shape or not ((a - b).abs() <= tolerance * (1 + b.abs())).all():
            out.append(name)
    return out


def grader_resnet(head):
    """The grader's ResNet-18 from this grading's seed, with a Linear(512, 10) head holding `head`
    (a state dict): (model, "" or why the head does not fit)."""
    model = probes.seeded_resnet18(RESNET_SEED)
    model.fc = nn.Linear(FEATURES, CIFAR_CLASSES)
    problem = load_in_order(model.fc, head)
    return model, problem and _("the new fc's weights do not fit a Linear(512, {cifar_classes}): {problem}").format(
        cifar_classes=CIFAR_CLASSES, problem=problem
    )


@cache
def expected_resnet():
    """ResNet-18 with a 10-class head, built here: its parameter names and sizes are the expected ones."""
    model = torchvision.models.resnet18(num_classes=CIFAR_CLASSES)
    return {name: p.numel() for name, p in model.named_parameters()}


# --- replace_resnet_head ------------------------------------------------------------------------


@pytest.mark.points(3)
@pytest.mark.task("replace_resnet_head")
def test_resnet_head(submission):
    """replace_resnet_head: ResNet-18's fc becomes Linear(512, 10)"""
    got = submission.run(probes.resnet_head, RESNET_SEED, HEAD_X, HEAD_WEIGHT, HEAD_BIAS)
    fc = got["fc"]
    assert fc["type"] == "Linear", _("model.fc is a {type}, expected a new nn.Linear").format(type=fc["type"])
    assert fc["in"] == FEATURES, _(
        "the new fc takes {in_features} features, expected ResNet-18's 512 (model.fc.in_features)"
    ).format(in_features=fc["in"])
    assert fc["out"] == CIFAR_CLASSES, _(
        "the new fc has {out} outputs, expected one per class: {cifar_classes}"
    ).format(out=fc["out"], cifar_classes=CIFAR_CLASSES)
    assert got["returned_is_fc"], _("replace_resnet_head must return the new head, the module now at model.fc")
    assert not got["loaded"], _("the returned head does not take a Linear(512, 10)'s weights: {loaded}").format(
        loaded=got["loaded"]
    )
    output = got["output"]
    assert list(output.shape) == [2, CIFAR_CLASSES], _("the model's output is {shape}, expected [2, 10]").format(
        shape=list(output.shape)
    )
    model, _unused = grader_resnet({"weight": HEAD_WEIGHT, "bias": HEAD_BIAS})
    model.eval()
    with OneThread(), torch.no_grad():
        expected = model(HEAD_X)
    gap = (output.double() - expected.double()).abs().max().item()
    assert gap <= 1e-4 * (1 + expected.abs().max().item()), _(
        "with the grader's weights in the returned head, the model's output is not ResNet-18's "
        "features through that head (off by up to {gap:.3g}): replace only model.fc, by the head "
        "you return"
    ).format(gap=gap)


# --- prepare_resnet: what requires gradients, what the optimizer holds ----------------------------


@pytest.fixture(scope="module")
def variants(submission):
    return submission.run(
        probes.resnet_variants, RESNET_SEED, CIFAR_CLASSES, list(TRAINED), LR, STEP_X, STEP_Y, FINGERPRINT_SEED
    )


def recompute_variant(variant, head):
    """The grader's own: the variant's parameters trainable, one backward pass in evaluation mode
    (the gradients that exist) and one AdamW step on exactly those: (grads, stepped, problem)."""
    model, problem = grader_resnet(head)
    if problem:
        return None, None, problem
    model.double().eval()
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(TRAINED[variant]))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR)
    with OneThread():
        nn.functional.cross_entropy(model(STEP_X), STEP_Y).backward()
        grads = probes.fingerprint(
            {name: p.grad for name, p in model.named_parameters() if p.grad is not None}, FINGERPRINT_SEED
        )
        optimizer.step()
    return grads, probes.fingerprint(model.state_dict(), FINGERPRINT_SEED), ""


@pytest.fixture(scope="module")
def recomputed(variants):
    """Each variant's recomputation, done once, when a test first needs it."""
    done = {}

    def of(variant):
        if variant not in done:
            done[variant] = recompute_variant(variant, variants[variant]["head"])
        return done[variant]

    return of


def check_gradients(variants, recomputed, variant):
    """The outcome of the freezing: one backward pass gives exactly the grader's gradients."""
    got = variants[variant]
    expected, _unused, problem = recomputed(variant)
    assert not problem, problem
    assert "error" not in got, _("the model fails after prepare_resnet: {error}").format(error=got.get("error"))
    missing = [name for name in expected if name not in got["grads"]]
    assert not missing, _("one backward pass in {variant} computes no gradient for {listing}: they are frozen").format(
        variant=variant, listing=listing(missing)
    )
    extra = [name for name in got["grads"] if name not in expected]
    assert not extra, _(
        "one backward pass in {variant} computes gradients for {n_extra} parameters that {variant} freezes: {listing}"
    ).format(variant=variant, n_extra=len(extra), listing=listing(extra))
    wrong = differing(got["grads"], expected)
    assert not wrong, _(
        "one backward pass in {variant} gives gradients that differ from the grader's for "
        "{listing}: prepare_resnet must change nothing but the head and which parameters require "
        "gradients"
    ).format(variant=variant, listing=listing(wrong))


@pytest.mark.points(6)
@pytest.mark.task("prepare_resnet", "replace_resnet_head", "set_trainable", "VARIANTS")
@pytest.mark.parametrize("variant", list(TRAINED))
def test_trainable_parameters(variants, recomputed, variant):
    """prepare_resnet: which parameters require gradients"""
    parameters = variants[variant]["parameters"]
    expected_sizes = expected_resnet()
    assert set(parameters) == set(expected_sizes), _("the model's parameters are not ResNet-18's: {listing}").format(
        listing=listing(set(parameters) ^ set(expected_sizes))
    )
    expected = trained_names(expected_sizes, variant)
    trainable = {name for name, trains in parameters.items() if trains}
    frozen_head = sorted(name for name in expected - trainable if name.startswith("fc."))
    assert not frozen_head, _("the new head is frozen in {variant} ({listing}): it would stay random").format(
        variant=variant, listing=listing(frozen_head)
    )
    missing = sorted(expected - trainable)
    assert not missing, _("{listing} should learn in {variant} but are frozen ({variant} trains {trained})").format(
        listing=listing(missing), variant=variant, trained=TRAINED[variant]
    )
    extra = sorted(trainable - expected)
    assert not extra, _("{n_extra} parameters that {variant} freezes still require gradients: {listing}").format(
        n_extra=len(extra), variant=variant, listing=listing(extra)
    )
    count, total = sum(expected_sizes[n] for n in trainable), sum(expected_sizes[n] for n in expected)
    assert count == total, _("{count} trainable parameters in {variant}, expected {total}").format(
        count=number(count), variant=variant, total=number(total)
    )
    check_gradients(variants, recomputed, variant)


@pytest.mark.points(6)
@pytest.mark.task("prepare_resnet", "make_optimizer", "replace_resnet_head", "set_trainable", "VARIANTS")
@pytest.mark.parametrize("variant", list(TRAINED))
def test_optimizer_holds_exactly_the_trainable_parameters(variants, recomputed, variant):
    """prepare_resnet: the optimizer holds exactly the trainable parameters"""
    got = variants[variant]
    held = got["held"]
    outside = [name for name in held if name.startswith(("old ", "a tensor"))]
    assert not outside, _(
        "the optimizer holds tensors that are no longer in the model ({listing}): it was built "
        "before the head was replaced, and never updates the new one"
    ).format(listing=listing(outside))
    assert len(held) == len(set(held)), _("the optimizer holds some parameters twice")
    trainable = {name for name, trains in got["parameters"].items() if trains}
    frozen = [name for name in held if name not in trainable]
    assert not frozen, _(
        "in {variant} the optimizer holds {n_frozen} frozen parameters ({listing}): give it only "
        "those that require gradients"
    ).format(variant=variant, n_frozen=len(frozen), listing=listing(frozen))
    missing = sorted(trainable - set(held))
    assert not missing, _("in {variant} the optimizer misses trainable parameters: {listing}").format(
        variant=variant, listing=listing(missing)
    )
    assert all(lr == LR for lr in got["lrs"]), _("the optimizer's learning rate is {lrs}, expected lr = {lr}").format(
        lrs=got["lrs"], lr=LR
    )
    _unused, expected, problem = recomputed(variant)
    assert not problem, problem
    assert "error" not in got, _("the model fails after prepare_resnet: {error}").format(error=got.get("error"))
    wrong = differing(got["stepped"], expected)
    assert not wrong, _(
        "one step of the optimizer prepare_resnet returned does not give AdamW's (lr={lr}) on "
        "exactly the parameters {variant} trains: {listing} differ"
    ).format(lr=LR, variant=variant, listing=listing(wrong))


# --- prepare_resnet + train: one step ----------------------------------------------------------------


@pytest.fixture(scope="module")
def stepped(submission):
    return {
        variant: submission.run(
            probes.train_step, RESNET_SEED, CIFAR_CLASSES, variant, LR, STEP_X, STEP_Y, FINGERPRINT_SEED
        )
        for variant in STEP_VARIANTS
    }


def recompute_step(variant, head):
    """The grader's own step of train: the variant's freezing, training mode but for frozen
    BatchNorm layers, one AdamW step on the cross-entropy: the fingerprints of the state after."""
    model, problem = grader_resnet(head)
    if problem:
        return None, problem
    model.double()
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(TRAINED[variant]))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR)
    frozen = probes.frozen_batchnorms(model)
    model.train()
    for name, module in model.named_modules():
        if name in frozen:
            module.eval()
    with OneThread():
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(STEP_X), STEP_Y).backward()
        optimizer.step()
    return probes.fingerprint(model.state_dict(), FINGERPRINT_SEED), ""


@pytest.fixture(scope="module")
def step_recomputed(stepped):
    return {variant: recompute_step(variant, got["head"]) for variant, got in stepped.items()}


STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def check_step(stepped, step_recomputed, variant, statistics):
    """The outcome of prepare_resnet + one step of train: the grader's weights (statistics=False)
    or BatchNorm statistics (statistics=True), after its own step."""
    got = stepped[variant]
    expected, problem = step_recomputed[variant]
    assert not problem, problem
    names = [name for name in expected if name.endswith(STATISTICS) == statistics]
    wrong = differing(
        {k: v for k, v in got["final"].items() if k.endswith(STATISTICS) == statistics}, {k: expected[k] for k in names}
    )
    what = _("the BatchNorm statistics ") if statistics else ""
    assert not wrong, _(
        "after prepare_resnet and one step of train in {variant}, {what}{listing} differ from the "
        "grader's (AdamW, lr={lr}, on the parameters {variant} trains; frozen BatchNorm layers in "
        "evaluation mode)"
    ).format(variant=variant, what=what, listing=listing(wrong), lr=LR)


@pytest.mark.points(4)
@pytest.mark.task("prepare_resnet", "train", "make_optimizer", "replace_resnet_head", "set_trainable", "VARIANTS")
@pytest.mark.parametrize("variant", STEP_VARIANTS)
def test_one_step_moves_only_the_trainable_parameters(stepped, step_recomputed, variant):
    """prepare_resnet + train: one real step moves the head, never a frozen weight"""
    moved = stepped[variant]["moved"]
    frozen_moved = [name for name in moved if not name.startswith(TRAINED[variant])]
    assert not frozen_moved, _(
        "one training step in {variant} changed {n_frozen_moved} weights that {variant} freezes "
        "({listing}): frozen weights must stay bit-identical"
    ).format(variant=variant, n_frozen_moved=len(frozen_moved), listing=listing(frozen_moved))
    still = [name for name in ("fc.weight", "fc.bias") if name not in moved]
    assert not still, _(
        "one training step in {variant} left the new head unchanged ({listing}): is it in the optimizer?"
    ).format(variant=variant, listing=listing(still))
    if variant == "last_layers":
        assert any(name.startswith("layer4.") for name in moved), _(
            "one training step in last_layers left layer4 unchanged"
        )
    check_step(stepped, step_recomputed, variant, statistics=False)


@pytest.mark.points(4)
@pytest.mark.task("train", "train_mode", "prepare_resnet", "set_trainable", "VARIANTS")
@pytest.mark.parametrize("variant", STEP_VARIANTS)
def test_frozen_batchnorm_keeps_its_statistics(stepped, step_recomputed, variant):
    """train: frozen BatchNorm layers keep their running statistics; trainable ones update them"""
    buffers = stepped[variant]["buffers"]  # every BatchNorm statistic: did one step change it?
    drifted = [name for name, changed in buffers.items() if changed and not name.startswith(TRAINED[variant])]
    assert not drifted, _(
        "one training step in {variant} changed the running statistics of frozen BatchNorm layers "
        "({listing}): keep frozen BatchNorm layers in eval mode while training"
    ).format(variant=variant, listing=listing(drifted))
    kept = [name for name, changed in buffers.items() if not changed and name.startswith(TRAINED[variant])]
    assert not kept, _(
        "trainable BatchNorm layers kept their running statistics in {variant} ({listing}): only "
        "frozen ones stay in eval mode"
    ).format(variant=variant, listing=listing(kept))
    check_step(stepped, step_recomputed, variant, statistics=True)


# --- ConvNeXt-Base for Flowers102 ------------------------------------------------------------------------


def convnext_inputs():
    rng = generator("convnext")
    features = torch.randn(2, 1024, 1, 1, generator=rng, dtype=torch.float64)
    labels = torch.randint(0, FLOWERS_CLASSES, (2,), generator=rng)
    bound = 1 / math.sqrt(1024)
    weight, bias = uniform((FLOWERS_CLASSES, 1024), bound, rng), uniform((FLOWERS_CLASSES,), bound, rng)
    return derived_seed("convnext parts"), features, labels, weight, bias


CONVNEXT_SEED, CONVNEXT_FEATURES, CONVNEXT_LABELS, CONVNEXT_WEIGHT, CONVNEXT_BIAS = convnext_inputs()


@pytest.fixture(scope="module")
def convnext(submission):
    return submission.run(
        probes.convnext_for_flowers,
        CONVNEXT_SEED,
        FLOWERS_CLASSES,
        LR,
        CONVNEXT_FEATURES,
        CONVNEXT_LABELS,
        CONVNEXT_WEIGHT,
        CONVNEXT_BIAS,
        FINGERPRINT_SEED,
    )


@cache
def convnext_recomputed():
    """The grader's own: the same parts from the same seed, classifier[2] = Linear(1024, 102) with
    the grader's weights, only the classifier trainable; its output, then one AdamW step."""
    with torch.device("meta"):
        model = torchvision.models.convnext_base(weights=None)
    for part in probes.convnext_parts(model):
        probes.fill_(part.to_empty(device="cpu"), CONVNEXT_SEED)
    model.classifier[2] = nn.Linear(1024, FLOWERS_CLASSES)
    load_in_order(model.classifier[2], {"weight": CONVNEXT_WEIGHT, "bias": CONVNEXT_BIAS})
    block, classifier = probes.convnext_parts(model)
    block.double(), classifier.double()
    model.requires_grad_(False)
    classifier.requires_grad_(True)
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=LR)
    model.eval()
    with OneThread():
        logits = classifier(model.avgpool(block(CONVNEXT_FEATURES)))
        nn.functional.cross_entropy(logits, CONVNEXT_LABELS).backward()
        optimizer.step()
    return {
        "output": logits.detach(),
        "classifier_after": state_of(classifier),
        "block_after": probes.fingerprint(block.state_dict(), FINGERPRINT_SEED),
    }


def close(a, b, tolerance=TOLERANCE):
    return a.shape == b.shape and ((a.double() - b.double()).abs() <= tolerance * (1 + b.double().abs())).all()


@pytest.mark.points(3)
@pytest.mark.task("replace_convnext_head")
def test_convnext_head(convnext):
    """replace_convnext_head: ConvNeXt-Base's classifier[2] becomes Linear(1024, 102)"""
    layers = [layer["type"] for layer in convnext["classifier"]]
    assert layers == ["LayerNorm2d", "Flatten", "Linear"], _(
        "the classifier is {layers}, expected ['LayerNorm2d', 'Flatten', 'Linear']: replace classifier[2] only"
    ).format(layers=layers)
    head = convnext["classifier"][2]
    assert head["in"] == 1024, _("classifier[2] takes {in_features} features, expected ConvNeXt-Base's 1024").format(
        in_features=head["in"]
    )
    assert head["out"] == FLOWERS_CLASSES, _("classifier[2] has {out} outputs, expected {flowers_classes}").format(
        out=head["out"], flowers_classes=FLOWERS_CLASSES
    )
    # torchvision's published count (1000 classes), with the 1000-class head swapped for a 102-class one.
    imagenet_total = torchvision.models.ConvNeXt_Base_Weights.IMAGENET1K_V1.meta["num_params"]
    expected = imagenet_total - (1024 * 1000 + 1000) + (1024 * FLOWERS_CLASSES + FLOWERS_CLASSES)
    total = sum(numel for numel, _ in convnext["parameters"].values())
    assert total == expected, _("the model has {total} parameters, expected {expected}").format(
        total=number(total), expected=number(expected)
    )
    assert convnext["returned_is_head"], _("replace_convnext_head must return the new head, now at model.classifier[2]")
    assert not convnext["loaded"], _("the returned head does not take a Linear(1024, 102)'s weights: {loaded}").format(
        loaded=convnext["loaded"]
    )
    output, wanted = convnext["output"], convnext_recomputed()["output"]
    assert list(output.shape) == [2, FLOWERS_CLASSES], _(
        "the classifier's output is {shape}, expected [2, {flowers_classes}]"
    ).format(shape=list(output.shape), flowers_classes=FLOWERS_CLASSES)
    assert close(output, wanted), _(
        "with the grader's weights in the returned head, the classifier does not compute "
        "LayerNorm2d, Flatten and that head: replace classifier[2] only, by the head you return"
    )


@pytest.mark.points(3)
@pytest.mark.task("set_trainable", "make_optimizer", "replace_convnext_head")
def test_convnext_freezing(convnext):
    """set_trainable + make_optimizer: ConvNeXt-Base frozen but its classifier, the optimizer holds just that"""
    parameters = convnext["parameters"]
    trainable = {name for name, (_, trains) in parameters.items() if trains}
    expected = {name for name in parameters if name.startswith("classifier.")}
    assert trainable, _("every parameter is frozen: the classifier must learn")
    assert not trainable - expected, _(
        "{n_trainable} feature-extractor parameters still require gradients: {listing}"
    ).format(n_trainable=len(trainable - expected), listing=listing(sorted(trainable - expected)))
    assert not expected - trainable, _("classifier parameters are frozen: {listing}").format(
        listing=listing(sorted(expected - trainable))
    )
    count = sum(parameters[name][0] for name in trainable)
    expected_count = 2 * 1024 + 1024 * FLOWERS_CLASSES + FLOWERS_CLASSES  # LayerNorm2d weight and bias, the head
    assert count == expected_count, _("{count} trainable parameters, expected {expected_count}").format(
        count=number(count), expected_count=number(expected_count)
    )
    held = convnext["held"]
    assert sorted(held) == sorted(trainable), _(
        "the optimizer holds {n_held} tensors ({listing}), expected exactly the {n_trainable} "
        "trainable ones ({listing2})"
    ).format(
        n_held=len(held), listing=listing(sorted(held)), n_trainable=len(trainable), listing2=listing(sorted(trainable))
    )
    assert not convnext["loaded"], _("the returned head does not take a Linear(1024, 102)'s weights: {loaded}").format(
        loaded=convnext["loaded"]
    )
    wanted = convnext_recomputed()
    moved = differing(convnext["block_after"], wanted["block_after"])
    assert not moved, _("one step changed the last block of the frozen features: {listing}").format(
        listing=listing(moved)
    )
    after, expected_after = convnext["classifier_after"], wanted["classifier_after"]
    wrong = [name for name in expected_after if name not in after or not close(after[name], expected_after[name])]
    wrong += sorted(set(after) - set(expected_after))
    assert not wrong, _(
        "one step of make_optimizer's optimizer does not give AdamW's (lr={lr}) on the classifier: {listing} differ"
    ).format(lr=LR, listing=listing(wrong))
