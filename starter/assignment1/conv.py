"""Convolution by hand: the output-size formula, the shapes of a layer's parameters, a cross-correlation.

PyTorch's `nn.Conv2d` and `F.conv2d` compute a *cross-correlation*: the kernel slides over the input
without being flipped. For one channel, a kernel K of size F x F, stride s and no padding:

    S(i, j) = sum over m, n = 0 .. F-1 of  I(i * s + m, j * s + n) * K(m, n)

With C_in input channels the sum also runs over the channels; each of the C_out filters gives one
output channel, plus its bias. Along each axis the output size is

    H_out = floor((H + 2P - F) / S) + 1        (P: zero padding on each side, S: stride)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IntOrPair = int | tuple[int, int]


def _pair(value):
    """An int (or a padding string) for both axes, or a pair as it is."""
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def conv_output_size(
    size: IntOrPair, kernel_size: IntOrPair, padding: IntOrPair | str = 0, stride: IntOrPair = 1
) -> int | tuple[int, int]:
    """The output size of a convolution along one axis; (H_out, W_out) when any argument is a pair.

    size: H, or (H, W). kernel_size, padding, stride: an int, or a pair (along H, along W), as in
    nn.Conv2d. padding may also be "valid" (no padding) or "same" (the output keeps the input's size;
    PyTorch allows it with stride 1 only).
    Examples: conv_output_size(5, 3) == 3; conv_output_size((70, 120), 7) == (64, 114).
    """
    if any(isinstance(a, (tuple, list)) for a in (size, kernel_size, padding, stride)):
        return tuple(
            conv_output_size(*axis) for axis in zip(*map(_pair, (size, kernel_size, padding, stride)), strict=True)
        )
    if padding == "same":
        if stride != 1:
            raise ValueError("padding='same' needs stride 1 (as in nn.Conv2d)")
        return None  # the size that "same" keeps
    if padding == "valid":
        padding = 0
    return None  # the formula of the module's docstring, in whole numbers


def conv_parameter_shapes(
    in_channels: int, out_channels: int, kernel_size: IntOrPair
) -> tuple[tuple[int, int, int, int], tuple[int]]:
    """The shapes of nn.Conv2d(in_channels, out_channels, kernel_size)'s weight and bias, as tuples.

    kernel_size: an int, or (kH, kW). Returns (weight shape, bias shape): one filter of
    in_channels x kH x kW per output channel, and one bias per output channel.
    """
    kh, kw = _pair(kernel_size)
    return None, None  # (weight shape, bias shape)


def conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
) -> torch.Tensor:
    """The cross-correlation of a batch of images with a bank of filters, by hand: what F.conv2d computes.

    x: (N, C_in, H, W); weight: (C_out, C_in, kH, kW); bias: (C_out,) or None.
    stride, padding: an int, or a pair (along H, along W); padding adds zeros on each side.
    Returns (N, C_out, H_out, W_out), H_out and W_out as conv_output_size gives them.
    Loops over output positions, loops over kernel positions, or F.unfold: all fine; F.conv2d,
    torch.conv2d and nn.Conv2d are not.
    """
    raise NotImplementedError("conv2d: the cross-correlation by hand")
