"""Preprocessing for a pretrained model, and data augmentation for the training split only.

Pretrained weights come with the preprocessing they were trained with: `weights.transforms()`
(ResNet18_Weights.IMAGENET1K_V1: resize the shorter side to 256, centre-crop 224x224, scale to
[0, 1], normalize with ImageNet's mean and std). The new dataset must go through the same, or the
features the network learned no longer fit its input. Augmentation (random flips, rotations,
crops, colour changes) makes more training images out of each one; validation and test images
are never augmented: they measure the model on the data as it is.

The transforms are torchvision.transforms.v2: one call on an image and its bounding boxes draws
one set of random parameters and moves the boxes with the image.
"""

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2


def eval_transform(weights) -> torch.nn.Module:
    """The preprocessing `weights` (a torchvision WeightsEnum member) expect, unchanged.

    Takes uint8 (..., 3, H, W) or a PIL image; returns float32 (..., 3, 224, 224), normalized.
    """
    return None


def train_transform(weights) -> v2.Compose:
    """Random augmentation that ends like eval_transform: float32 (3, crop, crop) with the weights' normalization.

    The notebook's choice: a horizontal flip (p = 0.5), a rotation of up to 30 degrees, a random
    crop of 80% to 100% of the image resized to the weights' crop size, and colour jitter
    (brightness, contrast and saturation 0.2, hue 0.1).
    """
    preset = weights.transforms()  # its crop size, mean and std
    return v2.Compose(
        [
            v2.ToImage(),
            v2.RandomHorizontalFlip(p=0.5),
            None,  # a random rotation of up to 30 degrees
            v2.RandomResizedCrop(None, scale=(0.8, 1.0), antialias=True),
            None,  # colour jitter: brightness, contrast and saturation 0.2, hue 0.1
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=None, std=None),
        ]
    )


def split_transforms(weights) -> dict[str, torch.nn.Module]:
    """The transform of each split: augmentation for "train" only, the weights' own for "valid" and "test"."""
    return {"train": None, "valid": None, "test": None}


class BoxedImages(torch.utils.data.Dataset):
    """Images with one bounding box each, transformed together (the notebook's FlowersWithBBox).

    images: uint8 (N, 3, H, W); boxes: float (N, 4), one (cx, cy, w, h) box per image, in pixels;
    labels: (N,). Item i is (image, {"label": int, "bbox": BoundingBoxes (1, 4) in CXCYWH}): the
    transformed image and its box on the transformed canvas.
    """

    def __init__(self, images: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, transform) -> None:
        self.images, self.boxes, self.labels, self.transform = images, boxes, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        image = tv_tensors.Image(self.images[index])
        height, width = image.shape[-2:]
        bbox = tv_tensors.BoundingBoxes(self.boxes[index : index + 1], format=None, canvas_size=None)
        image, bbox = None  # one call: the same crop, flip and rotation for both
        return image, {"label": int(self.labels[index]), "bbox": bbox}
