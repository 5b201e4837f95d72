"""Preprocessing and augmentation (augment.py), on scikit-learn's two sample photos.

The photos reach the probes cropped to a window drawn for this grading, with a little noise. The
weights' own transforms are torchvision's (ResNet18_Weights and ConvNeXt_Base_Weights describe their
preprocessing without any download): the grader computes what they give and compares.

A random transform is checked by replaying it: the probe describes the student's transform (each
step's class and constructor arguments) and returns what it gave under seeds the grader drew; the
grader rebuilds the same steps from torchvision's own classes and runs them under the same seeds.
Every check (shape, type, two draws differ, the augmentations and the normalization it holds)
is then made on the grader's replay, and only counts when the replay reproduces the returned
outputs. BoxedImages runs on an augmentation the grader chose: the grader transforms each image
and its box in one call itself, and compares.
"""

import sys
from functools import cache

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2

from grader.data import sample_photos
from grader.i18n import _
from grader.testing import generator, probes_for

probes = probes_for(__file__)

WEIGHTS = probes.WEIGHTS
CROP = 224  # both weights' crop size
DRAWS = 6  # seeds per photo, for BoxedImages
MAX_MEAN_GAP = 0.02  # the weights' transforms vs an equivalent pipeline (rounding after resizing): at most 0.005
MAX_REPLAY_GAP = 1e-4  # a replay of the same steps on the same machine gives the same values
MAX_BOX_GAP = 0.01  # pixels
# The augmentations the statement asks for, each as the transform classes that provide it.
AUGMENTATIONS = {
    "a horizontal flip": ("RandomHorizontalFlip",),
    "a rotation": ("RandomRotation", "RandomAffine"),
    "a random crop": ("RandomResizedCrop", "RandomCrop"),
    "colour jitter": ("ColorJitter",),
}


@cache
def the_photos():
    """scikit-learn's two sample photos, uint8 (2, 3, 427, 640), read once."""
    return sample_photos()


def photo_crops(label, low=(320, 420)):
    """The photos, cropped to one window size drawn for this grading (each photo at a place of its
    own) and with a little noise: uint8 (2, 3, h, w)."""
    photos = the_photos()
    rng = generator(label)
    height, width = photos.shape[-2:]
    h = int(torch.randint(low[0], height + 1, (1,), generator=rng))
    w = int(torch.randint(low[1], width + 1, (1,), generator=rng))
    crops = []
    for photo in photos:
        top = int(torch.randint(0, height - h + 1, (1,), generator=rng))
        left = int(torch.randint(0, width - w + 1, (1,), generator=rng))
        crops.append(photo[:, top : top + h, left : left + w])
    x = torch.stack(crops).int() + torch.randint(-3, 4, (len(crops), 3, h, w), generator=rng)
    return x.clamp(0, 255).to(torch.uint8)


def seeds(label, count):
    rng = generator(label)
    return [int(s) for s in torch.randint(2**31, (count,), generator=rng)]


# --- rebuilding and replaying a transform --------------------------------------------------


class NotReplayable(Exception):
    """A described transform that the grader cannot rebuild from torchvision's classes."""


_ENUMS = {"InterpolationMode": InterpolationMode}
_TYPES = {
    "Tensor": torch.Tensor,
    **{name: getattr(tv_tensors, name) for name in ("Image", "Video", "Mask", "BoundingBoxes")},
}


def _value(data):
    """A described constructor argument, as the object it stands for."""
    if isinstance(data, list):
        return [_value(v) for v in data]
    if isinstance(data, tuple):
        return tuple(_value(v) for v in data)
    if not isinstance(data, dict):
        return data
    if "transform" in data:
        return rebuild(data["transform"])
    if "enum" in data and data["enum"] in _ENUMS:
        return _ENUMS[data["enum"]](data["value"])
    if "dtype" in data and isinstance(getattr(torch, str(data["dtype"]), None), torch.dtype):
        return getattr(torch, data["dtype"])
    if "type" in data and data["type"] in _TYPES:
        return _TYPES[data["type"]]
    if "dict" in data:
        return {_value(k): _value(v) for k, v in data["dict"]}
    raise NotReplayable(
        _("an argument the grader cannot rebuild ({unknown})").format(unknown=data.get("unknown", data))
    )


def rebuild(steps):
    """The grader's own copy of a described transform, from torchvision's classes only."""
    module, _unused, name = str(steps.get("class", "")).rpartition(".")
    in_torchvision = module == "torchvision.transforms" or module.startswith("torchvision.transforms.")
    cls = getattr(sys.modules.get(module), name, None) if in_torchvision and not name.startswith("_") else None
    if not isinstance(cls, type):
        raise NotReplayable(
            _("{value} is not one of torchvision's transforms").format(value=name or steps.get("class"))
        )
    args = {key: _value(value) for key, value in steps["args"].items()}
    if name == "ImageClassification":  # the weights' preset keeps its sizes as one-item lists
        args = {key: value[0] if key in ("crop_size", "resize_size") else value for key, value in args.items()}
    try:
        return cls(**args)
    except Exception as exc:
        raise NotReplayable(
            _("{name} cannot be rebuilt from its arguments ({exc})").format(name=name, exc=exc)
        ) from None


def step_list(transform):
    """The steps of a (rebuilt) transform, flattened out of Compose, RandomApply...: [{"name", "mean", "std"}]."""
    inner = getattr(transform, "transforms", None)
    if isinstance(inner, (list, tuple, torch.nn.ModuleList)):
        return [step for t in inner for step in step_list(t)]
    mean, std = getattr(transform, "mean", None), getattr(transform, "std", None)
    return [
        {
            "name": type(transform).__name__,
            "mean": None if mean is None else [float(v) for v in mean],
            "std": None if std is None else [float(v) for v in std],
        }
    ]


def described_names(steps):
    """The class names of a described transform's steps, flattened out of containers."""
    names = [str(steps.get("class", "")).rpartition(".")[2]]
    for value in steps.get("args", {}).values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict) and "transform" in item:
                names += described_names(item["transform"])
    return names


def replay(transform, image, seed):
    """The transform of `image` under `seed`, on one thread, as the probe ran it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return probes._plain(transform(image))
    finally:
        torch.set_num_threads(threads)


def reproduces(got, replayed):
    """ "" when a probe's summary of an output is the replay's, else how it differs."""
    expected = probes.summary(replayed)
    for key in ("type", "shape", "dtype"):
        if got.get(key) != expected.get(key):
            return _("its {key} is {get}, the replay's {get2}").format(
                key=key, get=got.get(key), get2=expected.get(key)
            )
    if "thumb" in expected:
        gap = (got["thumb"] - expected["thumb"]).abs().max().item() if "thumb" in got else float("inf")
        if not gap <= MAX_REPLAY_GAP:
            return _("its values differ from the replay's by up to {gap:.3g}").format(gap=gap)
    return ""


def replayed(what, steps, images, seeds_used, outputs):
    """Rebuild a described transform and replay it: (the rebuilt transform, the replays, "" or why
    they are not what the probe returned). outputs[i][j]: the summary of images[i] under seeds_used[j]."""
    try:
        transform = rebuild(steps)
    except NotReplayable as exc:
        return (
            None,
            None,
            _("{what} holds a step the grader cannot rebuild to replay it: {exc}").format(what=what, exc=exc),
        )
    replays = []
    for image, row in zip(images, outputs, strict=True):
        replays.append([])
        for seed, got in zip(seeds_used, row, strict=True):
            try:
                again = replay(transform, image, seed)
            except Exception as exc:
                return (
                    transform,
                    None,
                    _("{what}'s steps, rebuilt by the grader, fail: {first_line}").format(
                        what=what, first_line=probes._first_line(exc)
                    ),
                )
            difference = reproduces(got, again)
            if difference:
                names = ", ".join(described_names(steps)[1:]) or described_names(steps)[0]
                return (
                    transform,
                    None,
                    (
                        _(
                            "{what} does not give what its own steps ({names}) give when the grader replays them under "
                            "the same seed: {difference}"
                        ).format(what=what, names=names, difference=difference)
                    ),
                )
            replays[-1].append(again)
    return transform, replays, ""


# --- eval_transform ----------------------------------------------------------------------------


EVAL_IMAGES = photo_crops("eval images")


@pytest.fixture(scope="module")
def evaluated(submission):
    return submission.run(probes.eval_outputs, EVAL_IMAGES)


def mean_gap(got, expected):
    return (got.double() - expected.double()).abs().mean().item()


@pytest.mark.points(4)
@pytest.mark.task("eval_transform")
@pytest.mark.parametrize("weights", list(WEIGHTS))
def test_eval_transform_is_the_weights_own(evaluated, weights):
    """eval_transform: the weights' own preprocessing"""
    got = evaluated[weights]
    expected = WEIGHTS[weights].transforms()(EVAL_IMAGES)
    assert list(got.shape) == list(expected.shape), _(
        "eval_transform({weights}) gives {shape} for the photos, expected {expected_shape}"
    ).format(weights=weights, shape=list(got.shape), expected_shape=list(expected.shape))
    assert got.dtype == torch.float32, _("eval_transform({weights}) gives {dtype}, expected torch.float32").format(
        weights=weights, dtype=got.dtype
    )
    gap = mean_gap(got, expected)
    preset = WEIGHTS[weights].transforms()
    assert gap < MAX_MEAN_GAP, _(
        "eval_transform({weights}) differs from the weights' transforms() by {gap:.3f} on average: "
        "they resize to {resize_size0}, crop {crop_size0} and normalize with mean {mean}, std {std}"
    ).format(
        weights=weights,
        gap=gap,
        resize_size0=preset.resize_size[0],
        crop_size0=preset.crop_size[0],
        mean=preset.mean,
        std=preset.std,
    )


# --- train_transform -----------------------------------------------------------------------------


TRAIN_PHOTOS = photo_crops("train photos")
TRAIN_SEEDS = seeds("train seeds", 2)


@pytest.fixture(scope="module")
def augmented(submission):
    got = submission.run(probes.train_draws, TRAIN_PHOTOS, TRAIN_SEEDS)
    transform, replays, problem = replayed("train_transform", got["steps"], TRAIN_PHOTOS, TRAIN_SEEDS, got["draws"])
    return {**got, "transform": transform, "replays": replays, "problem": problem}


def check_replayed(augmented):
    assert not augmented["problem"], augmented["problem"]


@pytest.mark.points(3)
@pytest.mark.task("train_transform")
def test_train_transform_augments(augmented):
    """train_transform: a float 3x224x224 image, different at every draw"""
    for first, _unused in augmented["draws"]:
        assert first.get("shape") == [3, CROP, CROP], _("train_transform gives {shape}, expected [3, 224, 224]").format(
            shape=first.get("shape", first["type"])
        )
        assert first["dtype"] == "float32", _("train_transform gives torch.{dtype}, expected torch.float32").format(
            dtype=first["dtype"]
        )
    check_replayed(augmented)
    for index, (first, second) in enumerate(augmented["replays"]):
        assert list(first.shape) == [3, CROP, CROP] and first.dtype == torch.float32
        assert not torch.equal(first, second), _(
            "two draws of train_transform on photo {index} are identical: it does not augment"
        ).format(index=index)


@pytest.mark.points(2)
@pytest.mark.task("train_transform")
def test_train_transform_has_the_augmentations(augmented):
    """train_transform: flip, rotation, random crop and colour jitter"""
    for steps in (described_names(augmented["steps"]), None):
        if steps is None:  # the same on the grader's own copy, once it reproduces the outputs
            check_replayed(augmented)
            steps = [step["name"] for step in step_list(augmented["transform"])]
        for what, classes in AUGMENTATIONS.items():
            assert any(name in classes for name in steps), _("train_transform has no {what} ({join})").format(
                what=what, join=" or ".join(classes)
            )


@pytest.mark.points(2)
@pytest.mark.task("train_transform")
def test_train_transform_normalizes_like_the_weights(augmented):
    """train_transform: the weights' own normalization"""
    check_replayed(augmented)
    preset = WEIGHTS["ResNet18_Weights"].transforms()
    normalizations = [step for step in step_list(augmented["transform"]) if step["mean"] is not None]
    assert normalizations, _("train_transform never normalizes: end it with v2.Normalize and the weights' mean and std")
    for step in normalizations:
        assert step["mean"] == pytest.approx(preset.mean) and step["std"] == pytest.approx(preset.std), _(
            "train_transform normalizes with mean {mean}, std {std}: the pretrained weights expect "
            "mean {mean2}, std {std2}"
        ).format(mean=step["mean"], std=step["std"], mean2=preset.mean, std2=preset.std)


# --- split_transforms ------------------------------------------------------------------------------


SPLIT_IMAGES = photo_crops("split images")
SPLIT_SEEDS = seeds("split seeds", 2)


@pytest.fixture(scope="module")
def splits(submission):
    return submission.run(probes.split_outputs, SPLIT_IMAGES, SPLIT_SEEDS)


@pytest.mark.points(4)
@pytest.mark.task("split_transforms", "eval_transform", "train_transform")
def test_only_the_training_split_is_augmented(splits):
    """split_transforms: augmentation on train only; valid and test get the weights' own preprocessing"""
    assert "type" not in splits, _("split_transforms returns a {type}, expected a dict").format(type=splits.get("type"))
    assert sorted(splits) == ["test", "train", "valid"], _(
        "split_transforms gives {splits}, expected train, valid, test"
    ).format(splits=sorted(splits))
    expected = WEIGHTS["ResNet18_Weights"].transforms()(SPLIT_IMAGES)
    for split in ("valid", "test"):
        first, second = splits[split]["outputs"]
        if "thumb" in first and "thumb" in second:
            assert torch.equal(first["thumb"], second["thumb"]), _(
                "the {split} transform gives two different results for the same photos: augmentation must "
                "stay on the training split"
            ).format(split=split)
    replays = {}
    for split, got in splits.items():
        what = _("the {split} transform").format(split=split)
        _unused, again, problem = replayed(what, got["steps"], [SPLIT_IMAGES], SPLIT_SEEDS, [got["outputs"]])
        assert not problem, problem
        replays[split] = again[0]
    for split in ("valid", "test"):
        first, second = replays[split]
        assert torch.equal(first, second), _(
            "the {split} transform gives two different results for the same photos: augmentation must "
            "stay on the training split"
        ).format(split=split)
        assert list(first.shape) == list(expected.shape), _("the {split} transform gives {shape}").format(
            split=split, shape=list(first.shape)
        )
        gap = mean_gap(first, expected)
        assert gap < MAX_MEAN_GAP, _(
            "the {split} transform differs from the weights' own by {gap:.3f} on average"
        ).format(split=split, gap=gap)
    first, second = replays["train"]
    assert not torch.equal(first, second), _("the train transform gives the same result twice: it does not augment")


# --- BoxedImages ----------------------------------------------------------------------------------


def box_inputs():
    """Photos, one CXCYWH box inside each, labels and the augmentation's parameters, drawn for this grading."""
    photos = photo_crops("box photos")
    rng = generator("box inputs")
    height, width = photos.shape[-2:]
    boxes = []
    for _unused in photos:
        w, h = (torch.rand(2, generator=rng) * 0.4 + 0.3).tolist()
        cx, cy = (torch.rand(2, generator=rng) * torch.tensor([1 - w, 1 - h]) + torch.tensor([w, h]) / 2).tolist()
        boxes.append([cx * width, cy * height, w * width, h * height])
    params = {
        "flip": 0.5,
        "degrees": float(torch.randint(15, 41, (1,), generator=rng)),
        "size": int(torch.randint(96, 161, (1,), generator=rng)),
        "scale": [0.6 + 0.25 * float(torch.rand(1, generator=rng)), 1.0],
    }
    labels = torch.randint(0, 102, (len(photos),), generator=rng)
    return photos, torch.tensor(boxes), labels, params


BOX_PHOTOS, BOXES, BOX_LABELS, BOX_PARAMS = box_inputs()
BOX_SEEDS = seeds("box seeds", DRAWS)


@pytest.fixture(scope="module")
def boxed(submission):
    return submission.run(probes.boxed_items, BOX_PHOTOS, BOXES, BOX_LABELS, BOX_PARAMS, BOX_SEEDS)


def expected_item(index, seed):
    """The grader's own: the photo and its box through the augmentation in one call, under `seed`."""
    image = tv_tensors.Image(BOX_PHOTOS[index])
    box = tv_tensors.BoundingBoxes(BOXES[index : index + 1], format="CXCYWH", canvas_size=tuple(image.shape[-2:]))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        image, box = probes.box_augmentation(BOX_PARAMS)(image, box)
    return probes._plain(image), probes._plain(v2.functional.convert_bounding_box_format(box, new_format="XYXY"))


@pytest.mark.points(4)
@pytest.mark.task("BoxedImages")
def test_box_moves_with_its_image(boxed):
    """BoxedImages: each box goes through the same flip, rotation and crop as its image"""
    size = BOX_PARAMS["size"]
    for item in boxed:
        index = item["index"]
        label = int(BOX_LABELS[index])
        assert item["label"] == label, _("item {index} has label {label!r}, expected {expected_label}").format(
            index=index, label=item["label"], expected_label=label
        )
        assert item["image"] is not None, _("item {index}'s image is not a tensor").format(index=index)
        assert list(item["image"].shape) == [3, size, size], _(
            "item {index}'s image is {shape}, expected the transform's [3, {size}, {size}]"
        ).format(index=index, shape=list(item["image"].shape), size=size)
        assert item["box"] is not None, _("item {index}'s bbox is a {box_type}, not a tv_tensors.BoundingBoxes").format(
            index=index, box_type=item["box_type"]
        )
        assert item["canvas"] == [size, size], _(
            "item {index}'s box lies on a {canvas} canvas, expected its transformed image's [{size}, {size}]"
        ).format(index=index, canvas=item["canvas"], size=size)
        image, box = expected_item(index, item["seed"])
        image_gap = (item["image"].double() - image.double()).abs().max().item()
        assert image_gap <= 1, _(
            "item {index}'s image is not the transform of its photo (off by up to {image_gap:.3g}): "
            "call the transform once per item, on the image and its box together"
        ).format(index=index, image_gap=image_gap)
        box_gap = (item["box"].double() - box.double()).abs().max().item() if item["box"].shape == box.shape else None
        assert box_gap is not None and box_gap <= MAX_BOX_GAP, _(
            "item {index}'s box is not where the transform puts it with its image ({value}, expected "
            "{expected_value}): transform the image and its box in one call, so they get the same "
            "random flip, rotation and crop"
        ).format(
            index=index,
            value=[round(v, 1) for v in item["box"].flatten().tolist()],
            expected_value=[round(v, 1) for v in box.flatten().tolist()],
        )
