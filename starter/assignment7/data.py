"""Getting images ready: the note's normalization, and a training/validation split without leakage.

The validation images choose the model (the epoch whose weights are kept), so they must come out
of the training images: the test images are looked at once, at the very end. The note validated
on its test loader; here the test set stays apart.
"""

import torch
from torchvision import transforms


def make_transform() -> transforms.Compose:
    """The note's preprocessing of a PIL image (H x W, RGB): a float tensor (3, H, W), each channel
    scaled from [0, 255] to [0, 1], then normalized with mean 0.5 and standard deviation 0.5."""
    return transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize(None, None)]  # to [-1, 1]
    )


def split_indices(count: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split the indices 0..count-1 of a training set into (training, validation), both int64 (n,).

    The validation part holds round(count * val_fraction) indices drawn at random; the training
    part holds every other index. Both are drawn from a torch.Generator seeded with `seed`: the
    same seed gives the same split, another seed another one.
    """
    generator = torch.Generator().manual_seed(seed)
    order = None  # the indices in a random order
    val_size = None
    return None  # (training, validation): no index in both
