"""Hand-made filters: a vertical and a horizontal line detector on scikit-learn's two sample photos.

As in the chapter-4 notebook: the 70x120 centre crop of the photos, pixels in [0, 1], two 7x7
filters over the 3 colour channels, padding "same" and no bias.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CROP = (70, 120)  # height, width


def center_crop(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The central height x width region of each image, the pixels torchvision's T.CenterCrop keeps.

    images: (N, C, H, W) with H >= height and W >= width -> (N, C, height, width).
    The region starts at row round((H - height) / 2) and column round((W - width) / 2), with Python's
    round (halves go to the even number), as torchvision does.
    """
    top = None
    left = None
    return images[..., top : top + height, left : left + width]


def line_filters(in_channels: int = 3, size: int = 7) -> torch.Tensor:
    """Two line detectors as a conv2d weight (2, in_channels, size, size), float32.

    Filter 0, a vertical line: ones in the middle column (size // 2), in every channel, zeros elsewhere.
    Filter 1, a horizontal line: ones in the middle row.
    """
    filters = torch.zeros(2, in_channels, size, size)
    None  # the vertical line
    None  # the horizontal line
    return filters


def apply_line_filters(images: torch.Tensor) -> torch.Tensor:
    """The two line filters on the 70x120 centre crop: uint8 images (N, C, H, W) -> (N, 2, 70, 120).

    Crop, scale the pixels to [0, 1], then F.conv2d with padding "same" and no bias. Channel 0 is
    the vertical filter's feature map, channel 1 the horizontal one's.
    """
    crop = None  # the 70x120 centre, in [0, 1]
    return None
