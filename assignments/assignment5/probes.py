"""The probes of assignment5: they run in the sandbox, on inputs the grader chose, and return data.

No expected value lives here: the tests (tests/*.py) compare what comes back with their own
computation. `sub.transfer` and `sub.augment` are the student's modules, `sub.device` the device.

Big models are not handed over whole: a ResNet-18 is built from a seed the grader drew (torchvision's
own initialisation, which the grader repeats), a ConvNeXt-Base is built on the "meta" device with
only the parts that compute filled in from a seed (`fill_`), and what comes back of them is a few
numbers per tensor (`fingerprint`) where the whole tensors are not needed. The plain helpers here
(the networks, `fill_`, `fingerprint`, `box_augmentation`, `kit_preprocess`) are the grader's too.
"""

import enum
import inspect
import math
import zlib

import torch
import torchvision
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook
from torchvision import tv_tensors
from torchvision.models import ConvNeXt_Base_Weights, ResNet18_Weights
from torchvision.models.resnet import BasicBlock, conv1x1
from torchvision.transforms import v2

from grader.probing import TensorBatches, recording, state_of

WEIGHTS = {
    "ResNet18_Weights": ResNet18_Weights.IMAGENET1K_V1,
    "ConvNeXt_Base_Weights": ConvNeXt_Base_Weights.IMAGENET1K_V1,
}
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


# --- helpers the grader uses too ------------------------------------------------------------


def seeded_resnet18(seed):
    """torchvision's ResNet-18 (weights=None), initialised by torchvision from `seed`: the grader
    builds the same network from the same seed."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return torchvision.models.resnet18(weights=None)


def fill_(module, seed):
    """Overwrite the parameters and floating buffers of `module`, in order, with values drawn from
    `seed`: uniform in +-1/sqrt(fan-in) (+-1 for vectors)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in [*module.parameters(), *(b for b in module.buffers() if b.is_floating_point())]:
            bound = 1 / math.sqrt(t[0].numel()) if t.dim() > 1 else 1.0
            values = torch.rand(t.shape, generator=generator, dtype=torch.float64) * 2 - 1
            t.copy_(values * bound)
    return module


def fingerprint(tensors, seed, samples=16):
    """A few numbers per tensor that a change of it changes: its sum, its sum of squares and
    `samples` of its entries, at places drawn from `seed` and the tensor's name."""
    out = {}
    for name, t in tensors.items():
        flat = t.detach().reshape(-1).to("cpu", torch.float64)
        generator = torch.Generator().manual_seed((seed + zlib.crc32(name.encode())) % 2**62)
        places = torch.randint(max(len(flat), 1), (samples,), generator=generator)
        picked = flat[places] if len(flat) else torch.zeros(samples, dtype=torch.float64)
        out[name] = torch.cat([flat.sum().view(1), flat.square().sum().view(1), picked])
    return out


class MiniResNet(nn.Module):
    """ResNet-18's layout and names (conv1, bn1, layer1 ... layer4, avgpool, fc) at a small scale.

    One BasicBlock per stage, `width` channels in the first (2x, 4x, 8x in the next ones), for
    one-channel images: x (N, 1, H, W) -> logits (N, num_classes).
    """

    def __init__(self, num_classes, width):
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
    def stage(inputs, outputs, stride):
        shortcut = None if stride == 1 else nn.Sequential(conv1x1(inputs, outputs, stride), nn.BatchNorm2d(outputs))
        return nn.Sequential(BasicBlock(inputs, outputs, stride, shortcut))

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def tiny_resnet(state):
    """The network of the loop checks: a 3-class MiniResNet of width 4, in double precision, with
    the grader's weights."""
    model = MiniResNet(3, width=4).double()
    model.load_state_dict(state)
    return model


def freeze_for_last_layers(model):
    """The kit's own freezing, so that the loop checks do not depend on the student's: layer4 and fc learn."""
    model.requires_grad_(False)
    model.layer4.requires_grad_(True)
    model.fc.requires_grad_(True)


def frozen_batchnorms(model):
    """The names of the BatchNorm layers whose parameters are all frozen."""
    return {
        name
        for name, module in model.named_modules()
        if isinstance(module, BATCH_NORMS) and not any(p.requires_grad for p in module.parameters())
    }


def kit_preprocess(x, mean, std):
    """The kit backbone's preprocessing: uint8 digits (N, 1, 28, 28) -> float, normalized with `mean` and `std`."""
    return (x.float() / 255 - mean) / std


def box_augmentation(params):
    """The augmentation the BoxedImages check hands the student's dataset, with the grader's
    parameters: a flip, a rotation and a random resized crop, on uint8 images and their boxes."""
    return v2.Compose(
        [
            v2.RandomHorizontalFlip(p=params["flip"]),
            v2.RandomRotation(degrees=params["degrees"]),
            v2.RandomResizedCrop(params["size"], scale=tuple(params["scale"]), antialias=True),
        ]
    )


def describe(layer):
    """A layer as data: its class name and, for a linear layer, its sizes."""
    return {
        "type": type(layer).__name__,
        "in": getattr(layer, "in_features", None),
        "out": getattr(layer, "out_features", None),
    }


def _first_line(exc):
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _as_data(value, depth):
    if depth > 20:
        return {"unknown": "a too deeply nested transform"}
    if isinstance(value, enum.Enum):  # before str: InterpolationMode is a str
        return {"enum": type(value).__name__, "value": value.value}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.dtype):
        return {"dtype": str(value).removeprefix("torch.")}
    if isinstance(value, type):
        return {"type": value.__name__}
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, (list, tuple)):
        items = [_as_data(v, depth + 1) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, dict):
        return {"dict": [[_as_data(k, depth + 1), _as_data(v, depth + 1)] for k, v in value.items()]}
    if callable(value):
        return {"transform": transform_steps(value, depth + 1)}
    return {"unknown": type(value).__name__}


def transform_steps(transform, depth=0):
    """A transform as data, for the grader to rebuild and replay: {"class": "module.Name",
    "args": {...}}, its constructor's arguments read back from its attributes (a container's
    transforms described in turn)."""
    cls = type(transform)
    try:
        parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    except (TypeError, ValueError):
        parameters = []
    args = {}
    for parameter in parameters:
        if parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD) and hasattr(
            transform, parameter.name
        ):
            args[parameter.name] = _as_data(getattr(transform, parameter.name), depth)
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "args": args}


def _plain(x):
    """A tensor as plain data (tv_tensors are tensor subclasses)."""
    return x.as_subclass(torch.Tensor).detach().cpu().clone()


def summary(image):
    """What a transform gave, small: its shape, its dtype and a 4x-downsampled copy (the grader's
    replay of the same transform must give the same)."""
    if not isinstance(image, torch.Tensor):
        return {"type": type(image).__name__}
    x = _plain(image)
    out = {"type": "Tensor", "shape": list(x.shape), "dtype": str(x.dtype).removeprefix("torch.")}
    if x.dim() >= 2 and x.shape[-1] >= 4 and x.shape[-2] >= 4:
        out["thumb"] = nn.functional.avg_pool2d(x.double().reshape(-1, 1, *x.shape[-2:]), 4).reshape(
            *x.shape[:-2], x.shape[-2] // 4, x.shape[-1] // 4
        )
    return out


def _seeded_call(transform, image, seed):
    torch.manual_seed(seed)
    return transform(image)


# --- augment.py -----------------------------------------------------------------------------


def eval_outputs(sub, images):
    """eval_transform(weights) on the grader's images (uint8 (N, 3, H, W)), for each weights."""
    torch.set_num_threads(1)  # image work on one thread: several fight for a busy machine's cores
    return {name: _plain(sub.augment.eval_transform(weights)(images)) for name, weights in WEIGHTS.items()}


def train_draws(sub, photos, seeds):
    """train_transform(ResNet-18's weights): its steps, and its output on each photo under each seed."""
    torch.set_num_threads(1)
    transform = sub.augment.train_transform(ResNet18_Weights.IMAGENET1K_V1)
    return {
        "steps": transform_steps(transform),
        "draws": [[summary(_seeded_call(transform, photo, seed)) for seed in seeds] for photo in photos],
    }


def split_outputs(sub, images, seeds):
    """split_transforms(ResNet-18's weights): each split's steps, and its output on the images under each seed."""
    torch.set_num_threads(1)
    splits = sub.augment.split_transforms(ResNet18_Weights.IMAGENET1K_V1)
    if not isinstance(splits, dict):
        return {"type": type(splits).__name__}
    return {
        str(name): {
            "steps": transform_steps(transform),
            "outputs": [summary(_seeded_call(transform, images, seed)) for seed in seeds],
        }
        for name, transform in splits.items()
    }


def boxed_items(sub, photos, boxes, labels, params, seeds):
    """BoxedImages over the grader's photos, boxes (CXCYWH) and labels, with the grader's
    augmentation (`box_augmentation(params)`): every item under each seed."""
    torch.set_num_threads(1)
    dataset = sub.augment.BoxedImages(photos, boxes, labels, box_augmentation(params))
    items = []
    for seed in seeds:
        for index in range(len(labels)):
            torch.manual_seed(seed)
            image, target = dataset[index]
            box = target["bbox"]
            is_boxes = isinstance(box, tv_tensors.BoundingBoxes)
            items.append(
                {
                    "index": index,
                    "seed": seed,
                    "image": _plain(image) if isinstance(image, torch.Tensor) else None,
                    "label": target["label"] if isinstance(target["label"], (int, str)) else repr(target["label"]),
                    "box_type": type(box).__name__,
                    "canvas": list(box.canvas_size) if is_boxes else None,
                    "box": _plain(v2.functional.convert_bounding_box_format(box, new_format="XYXY"))
                    if is_boxes
                    else None,
                }
            )
    return items


# --- transfer.py: heads and freezing ----------------------------------------------------------


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


def _load_head(head, weight, bias):
    """Put the grader's weights in a head: "" when they fit, else why not."""
    try:
        with torch.no_grad():
            head.weight.copy_(weight)
            head.bias.copy_(bias)
    except Exception as exc:  # reported by the test, after what explains it
        return _first_line(exc)
    return ""


def resnet_head(sub, seed, x, weight, bias):
    """replace_resnet_head on a seeded ResNet-18; the grader's head weights put in the head it
    returned; the model's output on x then."""
    torch.set_num_threads(1)  # a small workload: one thread is faster than several fighting over cores
    model = seeded_resnet18(seed)
    head = sub.transfer.replace_resnet_head(model, len(bias))
    model.eval()
    out = {"fc": describe(model.fc), "returned_is_fc": head is model.fc, "loaded": _load_head(head, weight, bias)}
    if not out["loaded"]:
        with torch.no_grad():
            out["output"] = model(x)
    return out


def resnet_variants(sub, seed, num_classes, variants, lr, x, y, fingerprint_seed):
    """prepare_resnet on a seeded ResNet-18, each variant: what requires gradients, what the
    optimizer holds, the head it started from; then, in double precision and evaluation mode, one
    backward of the cross-entropy on (x, y) (which gradients exist) and one step of its optimizer."""
    torch.set_num_threads(1)
    out = {}
    for variant in variants:
        model = seeded_resnet18(seed)
        before = {id(p): name for name, p in model.named_parameters()}
        optimizer = sub.transfer.prepare_resnet(model, num_classes, variant, lr)
        got = {
            "parameters": {name: p.requires_grad for name, p in model.named_parameters()},
            **optimizer_contents(optimizer, model, before),
            "head": state_of(model.fc),
        }
        model.double().eval()  # the same Parameter objects: the optimizer still holds them
        try:
            nn.functional.cross_entropy(model(x), y).backward()
        except Exception as exc:  # reported by the test, after what explains it
            got["error"] = _first_line(exc)
        else:
            got["grads"] = fingerprint(
                {name: p.grad for name, p in model.named_parameters() if p.grad is not None}, fingerprint_seed
            )
            optimizer.step()
            got["stepped"] = fingerprint(model.state_dict(), fingerprint_seed)
        out[variant] = got
    return out


def train_step(sub, seed, num_classes, variant, lr, x, y, fingerprint_seed):
    """prepare_resnet on a seeded ResNet-18, in double precision, then one step of the student's
    train on the batch (x, y): the head it started from, what changed, and the weights after."""
    torch.set_num_threads(1)
    model = seeded_resnet18(seed)
    optimizer = sub.transfer.prepare_resnet(model, num_classes, variant, lr)
    head = state_of(model.fc)
    model.double()
    before = state_of(model)
    sub.transfer.train(model, optimizer, [(x, y)], 1, "cpu")
    after = model.state_dict()
    parameters = {name for name, _ in model.named_parameters()}
    changed = {name for name in after if name in before and not torch.equal(before[name], after[name])}
    return {
        "head": head,
        "moved": sorted(changed & parameters),
        "buffers": {name: name in changed for name in after if name not in parameters},
        "final": fingerprint(after, fingerprint_seed),
    }


def convnext_parts(model):
    """The parts of a ConvNeXt that the ConvNeXt check computes: its last block and its classifier."""
    return model.features[-1][-1], model.classifier


def convnext_for_flowers(sub, seed, num_classes, lr, features, y, weight, bias, fingerprint_seed):
    """The notebook's ConvNeXt-Base for Flowers102: new head, everything frozen but the classifier,
    an optimizer. Built on the meta device (shapes, no data) but for its last block and its
    classifier, filled from `seed`: the grader's head weights put in the head replace_convnext_head
    returned, those two parts run in double precision on `features` (N, 1024, 1, 1), one backward of
    the cross-entropy on y, one step of the optimizer."""
    torch.set_num_threads(1)
    with torch.device("meta"):
        model = torchvision.models.convnext_base(weights=None)
    for part in convnext_parts(model):
        fill_(part.to_empty(device="cpu"), seed)
    before = {id(p): name for name, p in model.named_parameters()}
    head = sub.transfer.replace_convnext_head(model, num_classes)
    sub.transfer.set_trainable(model, ("classifier",))
    optimizer = sub.transfer.make_optimizer(model, lr)
    out = {
        "classifier": [describe(layer) for layer in model.classifier],
        "returned_is_head": head is model.classifier[-1],
        "parameters": {name: [p.numel(), p.requires_grad] for name, p in model.named_parameters()},
        **optimizer_contents(optimizer, model, before),
        "loaded": _load_head(head, weight, bias),
    }
    if out["loaded"]:
        return out
    block, classifier = convnext_parts(model)
    block.double(), classifier.double()  # the same Parameter objects: the optimizer still holds them
    model.eval()  # no stochastic depth
    try:
        logits = classifier(model.avgpool(block(features)))
    except Exception as exc:
        out["loaded"] = _first_line(exc)
        return out
    out["output"] = logits.detach().clone()
    nn.functional.cross_entropy(logits, y).backward()
    optimizer.step()
    out["classifier_after"] = state_of(classifier)
    out["block_after"] = fingerprint(block.state_dict(), fingerprint_seed)
    return out


# --- transfer.py: training --------------------------------------------------------------------


def modes_after_train_mode(sub, state, x):
    """train_mode on the tiny ResNet (layer4 and fc trainable), starting from evaluation mode; the
    modes it left, and the BatchNorm statistics after one forward pass of x in those modes."""
    torch.set_num_threads(1)
    model = tiny_resnet(state)
    freeze_for_last_layers(model)
    model.eval()
    sub.transfer.train_mode(model)
    batchnorms = {name for name, module in model.named_modules() if isinstance(module, BATCH_NORMS)}
    out = {
        "training": {name or "model": module.training for name, module in model.named_modules()},
        "frozen_batchnorms": sorted(frozen_batchnorms(model)),
        "trainable_batchnorms": sorted(batchnorms - frozen_batchnorms(model)),
    }
    with torch.no_grad():
        model(x)
    out["buffers"] = {name: b.detach().clone() for name, b in model.named_buffers()}
    return out


def _as_floats(values):
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        return None


def train_tiny(sub, state, batches, steps, lr):
    """The student's train for `steps` steps on the tiny ResNet, with the kit's freezing and AdamW."""
    torch.set_num_threads(1)
    model = tiny_resnet(state)
    freeze_for_last_layers(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    counted = []
    hook = register_optimizer_step_post_hook(lambda opt, args, kwargs: counted.append(1))
    with recording(
        optimizer_zero_grad=(torch.optim.Optimizer, "zero_grad"), module_zero_grad=(nn.Module, "zero_grad")
    ) as calls:
        try:
            losses = sub.transfer.train(model, optimizer, batches, steps, "cpu")
        finally:
            hook.remove()
    return {"final": state_of(model), "steps": len(counted), "zero_grads": len(calls), "losses": _as_floats(losses)}


def fine_tune_tiny(sub, state, batches, head_steps, all_steps, lr):
    """The student's fine_tune on the tiny ResNet; at each step: which optimizer, what it holds,
    its learning rates, what moved; and the weights at the end."""
    torch.set_num_threads(1)
    model = tiny_resnet(state)
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
        sub.transfer.fine_tune(model, ("fc",), batches, head_steps, all_steps, lr, "cpu")
    finally:
        hook.remove()
    return {"records": records, "parameters": sorted(names.values()), "final": state_of(model)}


# --- the trained accuracy ---------------------------------------------------------------------


class Transformed:
    """Batches (transform(x), y) of an iterable of (x, y) batches: preprocessing on the fly, on x's device."""

    def __init__(self, batches, transform):
        self.batches, self.transform = batches, transform

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        for x, y in self.batches:
            yield self.transform(x), y


def transfer(sub, state, train_x, train_y, budget, parts, kit):
    """The student's transfer of a pretrained ResNet (weights `state`) to a new task: prepare_resnet,
    then train on the grader's training images. Returns the weights of `parts`, the submodules the
    variant trains: the grader puts them in its own copy of the network and tests it itself.

    kit: None for ResNet-18 with ImageNet weights (trained through the student's own training
    transform), else the kit backbone's classes, width, mean and std.
    """
    device = torch.device(sub.device)
    if kit is None:  # full: ImageNet weights, the student's own training transform
        model = torchvision.models.resnet18()
        weights = getattr(ResNet18_Weights, budget["weights"])
        train_transform = sub.augment.split_transforms(weights)["train"]
    else:  # quick: the kit's backbone, pre-trained on the source digits, and its own preprocessing
        torch.set_num_threads(1)
        model = MiniResNet(kit["classes"], kit["width"])

        def train_transform(x):
            return kit_preprocess(x, kit["mean"], kit["std"])

    model.load_state_dict(state)
    optimizer = sub.transfer.prepare_resnet(model, budget["classes"], budget["variant"], budget["lr"])
    batches = TensorBatches(train_x.to(device), train_y.to(device), budget["batch_size"], shuffle=True)
    sub.transfer.train(model, optimizer, Transformed(batches, train_transform), budget["steps"], device)
    return {part: state_of(model.get_submodule(part)) for part in parts}
