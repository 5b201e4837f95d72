"""Pooling: max and average pooling by hand, depth-wise max pooling, global average pooling three ways.

A pooling window of k x k slides with stride s (by default s = k: windows side by side) and keeps,
per channel, the largest value (max pooling) or the mean (average pooling). Windows that would
cross the border are dropped, so H_out = (H - k) // s + 1, as nn.MaxPool2d does without padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def windows(x: torch.Tensor, kernel_size: int, stride: int | None = None) -> torch.Tensor:
    """Every kernel_size x kernel_size window of every channel: x (N, C, H, W) -> (N, C, H_out, W_out, k, k).

    Window (i, j) starts at row i * stride, column j * stride; stride defaults to kernel_size.
    Loops, or Tensor.unfold (a sliding view along one dimension), both do it.
    """
    raise NotImplementedError("windows: every pooling window")


def max_pool2d(x: torch.Tensor, kernel_size: int, stride: int | None = None) -> torch.Tensor:
    """Max pooling by hand (no F.max_pool2d or nn.MaxPool2d): x (N, C, H, W) -> (N, C, H_out, W_out)."""
    return None  # the largest value of each window


def avg_pool2d(x: torch.Tensor, kernel_size: int, stride: int | None = None) -> torch.Tensor:
    """Average pooling by hand (no F.avg_pool2d or nn.AvgPool2d): x (N, C, H, W) -> (N, C, H_out, W_out)."""
    return None  # the mean of each window


class DepthMaxPool2d(nn.Module):
    """Max pooling across channels ("depth-wise"): height and width are kept, channels are pooled.

    Output channel c is the largest of input channels c * stride - padding ... + kernel_size - 1, at
    each pixel. x: (N, C, H, W) -> (N, C_out, H, W), C_out = (C + 2 * padding - kernel_size) // stride + 1.
    x may be a non-contiguous view (a crop of permuted images, as in the notebook).
    """

    def __init__(self, kernel_size: int, stride: int | None = None, padding: int = 0):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        # One row of C channels per pixel, (N, H * W, C), so that 1-D pooling slides along the channels.
        z = None  # (N, H * W, C); x may be non-contiguous
        z = F.max_pool1d(z, kernel_size=self.kernel_size, stride=self.stride, padding=self.padding)
        return None  # back to (N, C_out, H, W)


def global_avg_pool_mean(x: torch.Tensor) -> torch.Tensor:
    """Global average pooling as a mean over height and width: x (N, C, H, W) -> (N, C, 1, 1)."""
    return None


def global_avg_pool_adaptive(x: torch.Tensor) -> torch.Tensor:
    """Global average pooling with nn.AdaptiveAvgPool2d (one output pixel): x (N, C, H, W) -> (N, C, 1, 1)."""
    return None


def global_avg_pool_kernel(x: torch.Tensor) -> torch.Tensor:
    """Global average pooling with nn.AvgPool2d, one window as large as x: x (N, C, H, W) -> (N, C, 1, 1)."""
    return None
