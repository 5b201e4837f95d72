"""New heads and freezing (transfer.py), on torchvision's own ResNet-18 and ConvNeXt-Base.

The models are built with weights=None (nothing is downloaded); ConvNeXt-Base (88.6 M parameters)
is built on PyTorch's "meta" device, which has shapes but no data: its structure, freezing and
optimizer are checked without spending 350 MB and seconds of initialisation. Freezing is checked
three ways: which parameters require gradients, which ones the optimizer holds, and which ones one
real optimizer step moves, BatchNorm running statistics included.
"""

import copy

import pytest
import torch
import torchvision

from grader.testing import state_of

CIFAR_CLASSES, FLOWERS_CLASSES, LR = 10, 102, 1e-3
# What each variant trains, as the statement gives it: parameter-name prefixes ("" is every name).
TRAINED = {"last_layer": ("fc.",), "last_layers": ("layer4.", "fc."), "all_layers": ("",)}
STEP_VARIANTS = ("last_layer", "last_layers")  # those with a frozen part, for the one-step checks


def describe(layer):
    """A layer as data: its class name and, for a linear layer, its sizes."""
    return {
        "type": type(layer).__name__,
        "in": getattr(layer, "in_features", None),
        "out": getattr(layer, "out_features", None),
    }


def optimizer_contents(optimizer, model, before):
    """The names of the tensors an optimizer holds, in the model's terms, and its learning rates.

    before: {id: name} of the model's parameters before the student's code ran, to name what is
    no longer in the model (the old head).
    """
    names = {id(p): name for name, p in model.named_parameters()}
    held = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            if id(p) in names:
                held.append(names[id(p)])
            else:
                held.append(f"old {before[id(p)]}" if id(p) in before else "a tensor outside the model")
    return {"held": held, "lrs": [group["lr"] for group in optimizer.param_groups]}


def resnet_head(sub):
    """Probe: replace_resnet_head on a fresh ResNet-18, and the model's output for two images."""
    torch.set_num_threads(1)  # a tiny workload: one thread is faster than several fighting over cores
    model = torchvision.models.resnet18(weights=None)
    head = sub.transfer.replace_resnet_head(model, CIFAR_CLASSES)
    model.eval()
    with torch.no_grad():
        shape = list(model(torch.rand(2, 3, 64, 64)).shape)
    return {"fc": describe(model.fc), "returned_is_fc": head is model.fc, "output": shape}


def resnet_variants(sub):
    """Probe: prepare_resnet on a fresh ResNet-18, each variant: what requires gradients, what the optimizer holds."""
    base = torchvision.models.resnet18(weights=None)
    out = {}
    for variant in TRAINED:
        model = copy.deepcopy(base)
        before = {id(p): name for name, p in model.named_parameters()}
        optimizer = sub.transfer.prepare_resnet(model, CIFAR_CLASSES, variant, LR)
        out[variant] = {
            "parameters": {name: p.requires_grad for name, p in model.named_parameters()},
            **optimizer_contents(optimizer, model, before),
        }
    return out


def one_step(sub, variant):
    """Probe: prepare_resnet, then one step of the student's train on one fixed batch: what changed."""
    torch.set_num_threads(1)
    model = torchvision.models.resnet18(weights=None)
    optimizer = sub.transfer.prepare_resnet(model, CIFAR_CLASSES, variant, LR)
    generator = torch.Generator().manual_seed(0)
    batch = (torch.rand(4, 3, 64, 64, generator=generator), torch.tensor([0, 3, 5, 9]))
    before = state_of(model)
    sub.transfer.train(model, optimizer, [batch], 1, "cpu")
    after = state_of(model)
    parameters = {name for name, _ in model.named_parameters()}
    changed = {name for name in after if name in before and not torch.equal(before[name], after[name])}
    return {
        "moved": sorted(changed & parameters),
        "buffers": {name: name in changed for name in after if name not in parameters},
    }


def convnext_for_flowers(sub):
    """Probe: the notebook's ConvNeXt-Base for Flowers102, built on the meta device (shapes, no data).

    New head for 102 classes, everything frozen but the classifier, an optimizer: what each holds.
    """
    with torch.device("meta"):  # the student's new head is created on it too
        model = torchvision.models.convnext_base(weights=None)
        before = {id(p): name for name, p in model.named_parameters()}
        head = sub.transfer.replace_convnext_head(model, FLOWERS_CLASSES)
        sub.transfer.set_trainable(model, ("classifier",))
        optimizer = sub.transfer.make_optimizer(model, LR)
    contents = optimizer_contents(optimizer, model, before)
    parameters = {name: [p.numel(), p.requires_grad] for name, p in model.named_parameters()}
    model.to_empty(device="meta")  # all on meta, wherever the new head was put
    model.eval()
    try:
        shape = list(model(torch.empty(1, 3, 224, 224, device="meta")).shape)
    except Exception as exc:  # reported by the test, after what explains it
        shape = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return {
        "classifier": [describe(layer) for layer in model.classifier],
        "returned_is_head": head is model.classifier[-1],
        "output": shape,
        "parameters": parameters,
        **contents,
    }


def listing(names, limit=3):
    """A few names for a message: 'a, b, c and 12 more'."""
    names = list(names)
    shown = ", ".join(names[:limit])
    return f"{shown} and {len(names) - limit} more" if len(names) > limit else shown


def trained_names(names, variant):
    return {name for name in names if name.startswith(TRAINED[variant])}


@pytest.fixture(scope="module")
def expected_resnet():
    """ResNet-18 with a 10-class head, built here: its parameter names and sizes are the expected ones."""
    model = torchvision.models.resnet18(num_classes=CIFAR_CLASSES)
    return {name: p.numel() for name, p in model.named_parameters()}


@pytest.mark.points(3)
@pytest.mark.task("replace_resnet_head")
def test_resnet_head(submission):
    """replace_resnet_head: ResNet-18's fc becomes Linear(512, 10)"""
    got = submission.run(resnet_head)
    fc = got["fc"]
    assert fc["type"] == "Linear", f"model.fc is a {fc['type']}, expected a new nn.Linear"
    assert fc["in"] == 512, f"the new fc takes {fc['in']} features, expected ResNet-18's 512 (model.fc.in_features)"
    assert fc["out"] == CIFAR_CLASSES, f"the new fc has {fc['out']} outputs, expected one per class: {CIFAR_CLASSES}"
    assert got["output"] == [2, CIFAR_CLASSES], f"the model's output is {got['output']}, expected [2, {CIFAR_CLASSES}]"
    assert got["returned_is_fc"], "replace_resnet_head must return the new head, the module now at model.fc"


@pytest.fixture(scope="module")
def variants(submission):
    return submission.run(resnet_variants)


@pytest.mark.points(6)
@pytest.mark.task("prepare_resnet", "replace_resnet_head", "set_trainable", "VARIANTS")
@pytest.mark.parametrize("variant", list(TRAINED))
def test_trainable_parameters(variants, expected_resnet, variant):
    """prepare_resnet: which parameters require gradients"""
    parameters = variants[variant]["parameters"]
    assert set(parameters) == set(expected_resnet), (
        f"the model's parameters are not ResNet-18's: {listing(set(parameters) ^ set(expected_resnet))}"
    )
    expected = trained_names(expected_resnet, variant)
    trainable = {name for name, trains in parameters.items() if trains}
    frozen_head = sorted(name for name in expected - trainable if name.startswith("fc."))
    assert not frozen_head, f"the new head is frozen in {variant} ({listing(frozen_head)}): it would stay random"
    missing = sorted(expected - trainable)
    assert not missing, (
        f"{listing(missing)} should learn in {variant} but are frozen ({variant} trains {TRAINED[variant]})"
    )
    extra = sorted(trainable - expected)
    assert not extra, f"{len(extra)} parameters that {variant} freezes still require gradients: {listing(extra)}"
    count, total = sum(expected_resnet[n] for n in trainable), sum(expected_resnet[n] for n in expected)
    assert count == total, f"{count:,} trainable parameters in {variant}, expected {total:,}"


@pytest.mark.points(6)
@pytest.mark.task("prepare_resnet", "make_optimizer", "replace_resnet_head", "set_trainable", "VARIANTS")
@pytest.mark.parametrize("variant", list(TRAINED))
def test_optimizer_holds_exactly_the_trainable_parameters(variants, variant):
    """prepare_resnet: the optimizer holds exactly the trainable parameters"""
    got = variants[variant]
    held = got["held"]
    outside = [name for name in held if name.startswith(("old ", "a tensor"))]
    assert not outside, (
        f"the optimizer holds tensors that are no longer in the model ({listing(outside)}): "
        "it was built before the head was replaced, and never updates the new one"
    )
    assert len(held) == len(set(held)), "the optimizer holds some parameters twice"
    trainable = {name for name, trains in got["parameters"].items() if trains}
    frozen = [name for name in held if name not in trainable]
    assert not frozen, (
        f"in {variant} the optimizer holds {len(frozen)} frozen parameters ({listing(frozen)}): "
        "give it only those that require gradients"
    )
    missing = sorted(trainable - set(held))
    assert not missing, f"in {variant} the optimizer misses trainable parameters: {listing(missing)}"
    assert all(lr == LR for lr in got["lrs"]), f"the optimizer's learning rate is {got['lrs']}, expected lr = {LR}"


@pytest.fixture(scope="module")
def stepped(submission):
    return {variant: submission.run(one_step, variant) for variant in STEP_VARIANTS}


@pytest.mark.points(4)
@pytest.mark.task("prepare_resnet", "train", "make_optimizer", "replace_resnet_head", "set_trainable", "VARIANTS")
@pytest.mark.parametrize("variant", STEP_VARIANTS)
def test_one_step_moves_only_the_trainable_parameters(stepped, variant):
    """prepare_resnet + train: one real step moves the head, never a frozen weight"""
    moved = stepped[variant]["moved"]
    frozen_moved = [name for name in moved if not name.startswith(TRAINED[variant])]
    assert not frozen_moved, (
        f"one training step in {variant} changed {len(frozen_moved)} weights that {variant} freezes "
        f"({listing(frozen_moved)}): frozen weights must stay bit-identical"
    )
    still = [name for name in ("fc.weight", "fc.bias") if name not in moved]
    assert not still, (
        f"one training step in {variant} left the new head unchanged ({listing(still)}): is it in the optimizer?"
    )
    if variant == "last_layers":
        assert any(name.startswith("layer4.") for name in moved), (
            "one training step in last_layers left layer4 unchanged"
        )


@pytest.mark.points(4)
@pytest.mark.task("train", "train_mode", "prepare_resnet", "set_trainable", "VARIANTS")
@pytest.mark.parametrize("variant", STEP_VARIANTS)
def test_frozen_batchnorm_keeps_its_statistics(stepped, variant):
    """train: frozen BatchNorm layers keep their running statistics; trainable ones update them"""
    buffers = stepped[variant]["buffers"]  # every BatchNorm statistic: did one step change it?
    drifted = [name for name, changed in buffers.items() if changed and not name.startswith(TRAINED[variant])]
    assert not drifted, (
        f"one training step in {variant} changed the running statistics of frozen BatchNorm layers "
        f"({listing(drifted)}): keep frozen BatchNorm layers in eval mode while training"
    )
    kept = [name for name, changed in buffers.items() if not changed and name.startswith(TRAINED[variant])]
    assert not kept, (
        f"trainable BatchNorm layers kept their running statistics in {variant} ({listing(kept)}): "
        "only frozen ones stay in eval mode"
    )


@pytest.fixture(scope="module")
def convnext(submission):
    return submission.run(convnext_for_flowers)


@pytest.mark.points(3)
@pytest.mark.task("replace_convnext_head")
def test_convnext_head(convnext):
    """replace_convnext_head: ConvNeXt-Base's classifier[2] becomes Linear(1024, 102)"""
    layers = [layer["type"] for layer in convnext["classifier"]]
    assert layers == ["LayerNorm2d", "Flatten", "Linear"], (
        f"the classifier is {layers}, expected ['LayerNorm2d', 'Flatten', 'Linear']: replace classifier[2] only"
    )
    head = convnext["classifier"][2]
    assert head["in"] == 1024, f"classifier[2] takes {head['in']} features, expected ConvNeXt-Base's 1024"
    assert head["out"] == FLOWERS_CLASSES, f"classifier[2] has {head['out']} outputs, expected {FLOWERS_CLASSES}"
    assert convnext["output"] == [1, FLOWERS_CLASSES], (
        f"the model's output is {convnext['output']}, expected [1, {FLOWERS_CLASSES}]"
    )
    # torchvision's published count (1000 classes), with the 1000-class head swapped for a 102-class one.
    imagenet_total = torchvision.models.ConvNeXt_Base_Weights.IMAGENET1K_V1.meta["num_params"]
    expected = imagenet_total - (1024 * 1000 + 1000) + (1024 * FLOWERS_CLASSES + FLOWERS_CLASSES)
    total = sum(numel for numel, _ in convnext["parameters"].values())
    assert total == expected, f"the model has {total:,} parameters, expected {expected:,}"
    assert convnext["returned_is_head"], "replace_convnext_head must return the new head, now at model.classifier[2]"


@pytest.mark.points(3)
@pytest.mark.task("set_trainable", "make_optimizer", "replace_convnext_head")
def test_convnext_freezing(convnext):
    """set_trainable + make_optimizer: ConvNeXt-Base frozen but its classifier, the optimizer holds just that"""
    parameters = convnext["parameters"]
    trainable = {name for name, (_, trains) in parameters.items() if trains}
    expected = {name for name in parameters if name.startswith("classifier.")}
    assert trainable, "every parameter is frozen: the classifier must learn"
    assert not trainable - expected, (
        f"{len(trainable - expected)} feature-extractor parameters still require gradients: "
        f"{listing(sorted(trainable - expected))}"
    )
    assert not expected - trainable, f"classifier parameters are frozen: {listing(sorted(expected - trainable))}"
    count = sum(parameters[name][0] for name in trainable)
    expected_count = 2 * 1024 + 1024 * FLOWERS_CLASSES + FLOWERS_CLASSES  # LayerNorm2d weight and bias, the head
    assert count == expected_count, f"{count:,} trainable parameters, expected {expected_count:,}"
    held = convnext["held"]
    assert sorted(held) == sorted(trainable), (
        f"the optimizer holds {len(held)} tensors ({listing(sorted(held))}), expected exactly the "
        f"{len(trainable)} trainable ones ({listing(sorted(trainable))})"
    )
