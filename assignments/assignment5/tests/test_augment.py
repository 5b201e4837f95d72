"""Preprocessing and augmentation (augment.py), on scikit-learn's two sample photos (427 x 640).

The weights' own transforms are torchvision's (ResNet18_Weights and ConvNeXt_Base_Weights describe
their preprocessing without any download); the grader computes what they give here and compares.
Augmentation is checked by what it does (two draws differ, the test split's never do) and by what
it is made of; the box check follows each photo's box and a mask of the region it frames through
the student's training transform, and compares where each ended.
"""

import pytest
import torch
from torchvision import tv_tensors
from torchvision.models import ConvNeXt_Base_Weights, ResNet18_Weights
from torchvision.ops import box_iou, masks_to_boxes
from torchvision.transforms import v2

from grader.data import sample_photos

WEIGHTS = {
    "ResNet18_Weights": ResNet18_Weights.IMAGENET1K_V1,
    "ConvNeXt_Base_Weights": ConvNeXt_Base_Weights.IMAGENET1K_V1,
}
CROP = 224  # both weights' crop size
# CXCYWH boxes on the photos: the pagoda, then the dahlia.
PHOTO_BOXES = [[215.0, 220.0, 310.0, 380.0], [306.0, 222.0, 280.0, 276.0]]
DRAWS = 6  # random draws per photo
MIN_IOU = 0.85  # a box that moves with its image overlaps its region's new place by 0.96 or more
MAX_MEAN_GAP = 0.02  # the weights' transforms vs an equivalent pipeline (rounding after resizing): at most 0.005
# The augmentations the statement asks for, each as the transform classes that provide it.
AUGMENTATIONS = {
    "a horizontal flip": ("RandomHorizontalFlip",),
    "a rotation": ("RandomRotation", "RandomAffine"),
    "a random crop": ("RandomResizedCrop", "RandomCrop"),
    "colour jitter": ("ColorJitter",),
}


def pipeline(transform):
    """The steps of a transform, flattened out of Compose, RandomApply...: [{"name", "mean", "std"}]."""
    inner = getattr(transform, "transforms", None)
    if isinstance(inner, (list, tuple, torch.nn.ModuleList)):
        return [step for t in inner for step in pipeline(t)]
    mean, std = getattr(transform, "mean", None), getattr(transform, "std", None)
    return [
        {
            "name": type(transform).__name__,
            "mean": None if mean is None else [float(v) for v in mean],
            "std": None if std is None else [float(v) for v in std],
        }
    ]


def leaves(sample):
    """The items of a nested sample (tuples, lists, dicts), as a flat list."""
    if isinstance(sample, (tuple, list)):
        return [leaf for item in sample for leaf in leaves(item)]
    if isinstance(sample, dict):
        return [leaf for item in sample.values() for leaf in leaves(item)]
    return [sample]


def plain(x):
    """A tensor as plain data (tv_tensors are tensor subclasses)."""
    return x.as_subclass(torch.Tensor).detach().clone()


def draws(transform, image, seeds):
    """The transform of one image under each seed."""
    out = []
    for seed in seeds:
        torch.manual_seed(seed)
        out.append(plain(transform(image)))
    return out


def eval_outputs(sub, photos):
    """Probe: eval_transform(weights) on both photos at once, for each weights."""
    torch.set_num_threads(1)  # image work on one thread: several fight for a busy machine's cores
    return {name: plain(sub.augment.eval_transform(weights)(photos)) for name, weights in WEIGHTS.items()}


def train_draws(sub, photos):
    """Probe: two draws of train_transform(ResNet-18's weights) on each photo, and its steps."""
    torch.set_num_threads(1)
    transform = sub.augment.train_transform(ResNet18_Weights.IMAGENET1K_V1)
    return {
        "draws": [draws(transform, photo, (1, 2)) for photo in photos],
        "steps": pipeline(transform),
    }


def split_outputs(sub, photos):
    """Probe: split_transforms(ResNet-18's weights): each split's transform, twice, on both photos."""
    torch.set_num_threads(1)
    splits = sub.augment.split_transforms(ResNet18_Weights.IMAGENET1K_V1)
    return {name: draws(transform, photos, (1, 2)) for name, transform in splits.items()}


class MaskTracer:
    """Wraps a v2 transform: a call that holds an image also carries a mask of the current box's region.

    The mask goes through the same call, hence the same random parameters, as the image; it is kept
    aside, and the wrapped transform's output is returned unchanged.
    """

    def __init__(self, transform, boxes, size):
        self.transform, self.boxes, self.size = transform, boxes, size
        self.index, self.masks = 0, []

    def region(self):
        height, width = self.size
        x1, y1, x2, y2 = v2.functional.convert_bounding_box_format(
            torch.tensor([self.boxes[self.index]]),
            tv_tensors.BoundingBoxFormat.CXCYWH,
            tv_tensors.BoundingBoxFormat.XYXY,
        )[0].tolist()
        mask = torch.zeros(1, height, width, dtype=torch.uint8)
        mask[:, round(y1) : round(y2), round(x1) : round(x2)] = 1
        return tv_tensors.Mask(mask)

    def __call__(self, *inputs):
        sample = inputs if len(inputs) > 1 else inputs[0]
        if not any(isinstance(x, torch.Tensor) and not isinstance(x, tv_tensors.BoundingBoxes) for x in leaves(sample)):
            return self.transform(sample)  # no image in this call: nothing to follow
        out, mask = self.transform((sample, self.region()))
        self.masks.append(plain(mask))
        return out


def boxed_items(sub, photos):
    """Probe: BoxedImages over the photos with the student's training transform; where boxes and regions went."""
    torch.set_num_threads(1)
    tracer = MaskTracer(
        sub.augment.train_transform(ResNet18_Weights.IMAGENET1K_V1), PHOTO_BOXES, tuple(photos.shape[-2:])
    )
    dataset = sub.augment.BoxedImages(photos, torch.tensor(PHOTO_BOXES), torch.tensor([0, 1]), tracer)
    items = []
    for draw in range(DRAWS):
        for index in range(len(dataset)):
            tracer.index, tracer.masks = index, []
            torch.manual_seed(draw)
            image, target = dataset[index]
            box = target["bbox"]
            is_boxes = isinstance(box, tv_tensors.BoundingBoxes)
            items.append(
                {
                    "index": index,
                    "image": list(image.shape),
                    "label": target["label"],
                    "box_type": type(box).__name__,
                    "canvas": list(box.canvas_size) if is_boxes else None,
                    "box": plain(v2.functional.convert_bounding_box_format(box, new_format="XYXY"))
                    if is_boxes
                    else None,
                    "masks": tracer.masks,
                }
            )
    return items


@pytest.fixture(scope="module")
def photos():
    """The photos, loaded once here and handed to each probe (scikit-learn is slow to import)."""
    return sample_photos()


@pytest.fixture(scope="module")
def evaluated(submission, photos):
    return submission.run(eval_outputs, photos)


def mean_gap(got, expected):
    return (got.double() - expected.double()).abs().mean().item()


@pytest.mark.points(4)
@pytest.mark.task("eval_transform")
@pytest.mark.parametrize("weights", list(WEIGHTS))
def test_eval_transform_is_the_weights_own(evaluated, photos, weights):
    """eval_transform: the weights' own preprocessing"""
    got = evaluated[weights]
    expected = WEIGHTS[weights].transforms()(photos)
    assert list(got.shape) == list(expected.shape), (
        f"eval_transform({weights}) gives {list(got.shape)} for the photos, expected {list(expected.shape)}"
    )
    assert got.dtype == torch.float32, f"eval_transform({weights}) gives {got.dtype}, expected torch.float32"
    gap = mean_gap(got, expected)
    preset = WEIGHTS[weights].transforms()
    assert gap < MAX_MEAN_GAP, (
        f"eval_transform({weights}) differs from the weights' transforms() by {gap:.3f} on average: they resize to "
        f"{preset.resize_size[0]}, crop {preset.crop_size[0]} and normalize with mean {preset.mean}, std {preset.std}"
    )


@pytest.fixture(scope="module")
def augmented(submission, photos):
    return submission.run(train_draws, photos)


@pytest.mark.points(3)
@pytest.mark.task("train_transform")
def test_train_transform_augments(augmented):
    """train_transform: a float 3x224x224 image, different at every draw"""
    for index, (first, second) in enumerate(augmented["draws"]):
        assert list(first.shape) == [3, CROP, CROP], (
            f"train_transform gives {list(first.shape)}, expected [3, 224, 224]"
        )
        assert first.dtype == torch.float32, f"train_transform gives {first.dtype}, expected torch.float32"
        assert not torch.equal(first, second), (
            f"two draws of train_transform on photo {index} are identical: it does not augment"
        )


@pytest.mark.points(2)
@pytest.mark.task("train_transform")
def test_train_transform_has_the_augmentations(augmented):
    """train_transform: flip, rotation, random crop and colour jitter"""
    names = [step["name"] for step in augmented["steps"]]
    for what, classes in AUGMENTATIONS.items():
        assert any(name in classes for name in names), f"train_transform has no {what} ({' or '.join(classes)})"


@pytest.mark.points(2)
@pytest.mark.task("train_transform")
def test_train_transform_normalizes_like_the_weights(augmented):
    """train_transform: the weights' own normalization"""
    preset = ResNet18_Weights.IMAGENET1K_V1.transforms()
    normalizations = [step for step in augmented["steps"] if step["mean"] is not None]
    assert normalizations, "train_transform never normalizes: end it with v2.Normalize and the weights' mean and std"
    for step in normalizations:
        assert step["mean"] == pytest.approx(preset.mean) and step["std"] == pytest.approx(preset.std), (
            f"train_transform normalizes with mean {step['mean']}, std {step['std']}: the pretrained weights expect "
            f"mean {preset.mean}, std {preset.std}"
        )


@pytest.fixture(scope="module")
def splits(submission, photos):
    return submission.run(split_outputs, photos)


@pytest.mark.points(4)
@pytest.mark.task("split_transforms", "eval_transform", "train_transform")
def test_only_the_training_split_is_augmented(splits, photos):
    """split_transforms: augmentation on train only; valid and test get the weights' own preprocessing"""
    assert sorted(splits) == ["test", "train", "valid"], (
        f"split_transforms gives {sorted(splits)}, expected train, valid, test"
    )
    expected = ResNet18_Weights.IMAGENET1K_V1.transforms()(photos)
    for split in ("valid", "test"):
        first, second = splits[split]
        assert torch.equal(first, second), (
            f"the {split} transform gives two different results for the same photos: "
            "augmentation must stay on the training split"
        )
        assert list(first.shape) == list(expected.shape), f"the {split} transform gives {list(first.shape)}"
        gap = mean_gap(first, expected)
        assert gap < MAX_MEAN_GAP, f"the {split} transform differs from the weights' own by {gap:.3f} on average"
    first, second = splits["train"]
    assert not torch.equal(first, second), "the train transform gives the same result twice: it does not augment"


@pytest.fixture(scope="module")
def boxed(submission, photos):
    return submission.run(boxed_items, photos)


@pytest.mark.points(4)
@pytest.mark.task("BoxedImages", "train_transform")
def test_box_moves_with_its_image(boxed):
    """BoxedImages: each box goes through the same flip, rotation and crop as its image"""
    for item in boxed:
        index = item["index"]
        assert item["label"] == index, f"item {index} has label {item['label']!r}, expected {index}"
        assert item["image"] == [3, CROP, CROP], f"item {index}'s image is {item['image']}, expected [3, 224, 224]"
        assert item["box"] is not None, f"item {index}'s bbox is a {item['box_type']}, not a tv_tensors.BoundingBoxes"
        assert item["canvas"] == [CROP, CROP], (
            f"item {index}'s box lies on a {item['canvas']} canvas, expected its transformed image's [224, 224]"
        )
        assert len(item["masks"]) == 1, (
            f"item {index}: the transform ran on the image {len(item['masks'])} times, expected once"
        )
        region = masks_to_boxes(item["masks"][0]).double()
        iou = box_iou(item["box"].double(), region).item()
        assert iou >= MIN_IOU, (
            f"item {index}'s box overlaps where its region of the photo went by IoU {iou:.2f}: "
            "transform the image and its box in one call, so they get the same random flip, rotation and crop"
        )
