"""Convolution (conv.py): the output-size formula, the parameter shapes and conv2d by hand.

Every expected value comes from PyTorch itself, here, outside the sandbox: output sizes from
nn.Conv2d, feature maps from F.conv2d.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from grader.data import sample_photos

# The digit "7" of the CNN walk-through and its horizontal-line kernel.
DIGIT_SEVEN = [[1, 1, 1, 0, 0], [0, 0, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 1, 0], [0, 0, 0, 1, 1]]
HORIZONTAL_KERNEL = [[1, 1, 1], [0, 0, 0], [-1, -1, -1]]
# The walk-through prints [[2, 1, 0], [1, 0, 0], [0, 0, 1]] as the feature map: five of its nine values are wrong.

# (size, kernel_size, padding, stride), as conv_output_size takes them, in three groups.
SIZE_CASES = {
    "one axis": [(5, 3, 0, 1), (28, 5, 2, 1), (32, 3, 1, 2), (8, 3, 0, 3), (7, 2, 0, 2)],
    "valid and same": [(9, 3, "valid", 1), (10, 4, "same", 1), ((28, 28), 5, "same", 1)],
    "(H, W) pairs": [((15, 20), (3, 5), (1, 2), (2, 1)), ((11, 6), (5, 1), (0, 3), (3, 2)), ((9, 9), 3, (2, 0), 2)],
}
# The notebook's 70x120 crop through a 7x7 Conv2d: no padding, "same", and stride 2 with padding 3.
CROP_CASES = [((70, 120), 7, 0, 1), ((70, 120), 7, "same", 1), ((70, 120), 7, 3, 2)]
CROP_SIZES = [(64, 114), (70, 120), (35, 60)]  # what the notebook prints
# x shape, weight shape, bias?, stride, padding
CONV_CASES = {
    "one channel": ((1, 1, 5, 5), (1, 1, 3, 3), False, 1, 0),
    "channels and bias": ((2, 3, 8, 9), (4, 3, 3, 3), True, 1, 0),
    "padding 1": ((2, 3, 8, 9), (4, 3, 3, 3), True, 1, 1),
    "stride 2": ((2, 3, 9, 11), (4, 3, 3, 3), True, 2, 0),
    "5x3 kernel, stride (2, 1), padding (2, 1)": ((2, 2, 11, 13), (3, 2, 5, 3), True, (2, 1), (2, 1)),
}


def torch_output_size(size, kernel_size, padding, stride):
    """The output size nn.Conv2d gives on a blank image (small: computing it costs nothing)."""
    h, w = size if isinstance(size, tuple) else (size, size)
    layer = nn.Conv2d(1, 1, kernel_size, stride=stride, padding=padding)
    with torch.no_grad():
        out = tuple(layer(torch.zeros(1, 1, h, w)).shape[-2:])
    return out if isinstance(size, tuple) else out[0]


def call(sub, function, *args):
    """Probe: sub.conv.<function>(*args); tensors come back detached."""
    out = getattr(sub.conv, function)(*args)
    return out.detach() if isinstance(out, torch.Tensor) else out


def each(sub, function, cases):
    """Probe: sub.conv.<function>(*args) for each args in cases, in one sandbox run."""
    return [getattr(sub.conv, function)(*args) for args in cases]


def check_sizes(got, cases, expected):
    for args, size, wanted in zip(cases, got, expected, strict=True):
        call_text = f"conv_output_size({', '.join(repr(a) for a in args)})"
        assert not isinstance(size, float), f"{call_text} returned the float {size}: sizes are whole, use // (floor)"
        assert size == wanted, f"{call_text} is {size}, expected {wanted}"


def shape_of(out):
    return list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__


def max_error(got, expected):
    return (got.double() - expected.double()).abs().max().item()


@pytest.mark.points(3)
@pytest.mark.task("conv_output_size")
@pytest.mark.parametrize("group", SIZE_CASES)
def test_output_size_matches_conv2d(submission, group):
    """conv_output_size: the output size nn.Conv2d gives"""
    cases = SIZE_CASES[group]
    got = submission.run(each, "conv_output_size", cases)
    check_sizes(got, cases, [torch_output_size(*case) for case in cases])


@pytest.mark.points(1)
@pytest.mark.task("conv_output_size")
def test_output_size_of_the_crop(submission):
    """conv_output_size: the notebook's 70x120 crop through a 7x7 kernel: 64x114, 70x120, 35x60"""
    assert [torch_output_size(*case) for case in CROP_CASES] == CROP_SIZES  # the notebook's figures hold
    check_sizes(submission.run(each, "conv_output_size", CROP_CASES), CROP_CASES, CROP_SIZES)


@pytest.mark.points(1)
@pytest.mark.task("conv_parameter_shapes")
def test_parameter_shapes(submission):
    """conv_parameter_shapes: the weight and bias shapes of nn.Conv2d ([32, 3, 7, 7] and [32] for the notebook's)"""
    cases = [(3, 32, 7), (1, 6, 5), (16, 8, (3, 5))]
    got = submission.run(each, "conv_parameter_shapes", cases)
    for case, shapes in zip(cases, got, strict=True):
        layer = nn.Conv2d(*case, device="meta")
        expected = (tuple(layer.weight.shape), tuple(layer.bias.shape))
        assert shapes == expected, f"conv_parameter_shapes{case} is {shapes}, expected {expected} (weight, bias)"


@pytest.mark.points(2)
@pytest.mark.task("conv2d")
def test_digit_seven_feature_map(submission):
    """conv2d: the digit "7" with the horizontal-line kernel"""
    image = torch.tensor(DIGIT_SEVEN, dtype=torch.float32)[None, None]
    kernel = torch.tensor(HORIZONTAL_KERNEL, dtype=torch.float32)[None, None]
    got = submission.run(call, "conv2d", image, kernel)
    expected = F.conv2d(image, kernel)
    assert expected[0, 0].tolist() == [[2, 0, -1], [1, 0, 0], [1, 1, 0]]  # the walk-through's map is wrong
    assert shape_of(got) == [1, 1, 3, 3], f"conv2d output is {shape_of(got)}, expected [1, 1, 3, 3]"
    assert not torch.equal(got, F.conv2d(image, kernel.flip(-2, -1))), (
        "conv2d flips the kernel (a true convolution): PyTorch's conv2d is a cross-correlation, no flip"
    )
    assert torch.equal(got, expected), f"conv2d gives {got[0, 0].tolist()}, expected {expected[0, 0].tolist()}"


def random_filters(w_shape, with_bias, generator):
    """Filters (C_out, C_in, kH, kW) and a bias (C_out,) or None, drawn from `generator`."""
    w = torch.randn(w_shape, generator=generator)
    return w, torch.randn(w_shape[0], generator=generator) if with_bias else None


def check_conv(got, x, w, b, stride, padding, where):
    """Compare with F.conv2d and name the likely mistake."""
    expected = F.conv2d(x, w, b, stride=stride, padding=padding)
    assert shape_of(got) == list(expected.shape), (
        f"conv2d output is {shape_of(got)}, expected {list(expected.shape)} ({where})"
    )
    error = max_error(got, expected)
    if error <= 1e-4:
        return
    flipped = F.conv2d(x, w.flip(-2, -1), b, stride=stride, padding=padding)
    assert max_error(got, flipped) > 1e-4, (
        f"conv2d flips the kernel ({where}): PyTorch's conv2d is a cross-correlation, no flip"
    )
    assert b is None or max_error(got, F.conv2d(x, w, None, stride=stride, padding=padding)) > 1e-4, (
        f"conv2d leaves out the bias ({where}): add bias[o] to every pixel of output channel o"
    )
    raise AssertionError(f"conv2d differs from F.conv2d by up to {error:.3g} ({where})")


@pytest.mark.points(3)
@pytest.mark.task("conv2d", "conv_output_size")
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_matches_f_conv2d(submission, case):
    """conv2d: equals F.conv2d on random inputs"""
    x_shape, w_shape, with_bias, stride, padding = CONV_CASES[case]
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(x_shape, generator=generator)
    w, b = random_filters(w_shape, with_bias, generator)
    got = submission.run(call, "conv2d", x, w, b, stride, padding)
    check_conv(got, x, w, b, stride, padding, f"x {list(x_shape)}, weight {list(w_shape)}, {case}")


@pytest.fixture(scope="module")
def crop():
    """The notebook's 70x120 centre crop of the two photos, in [0, 1]: (2, 3, 70, 120).

    torchvision's CenterCrop((70, 120)) of a 427x640 photo starts at row round(357 / 2) = 178, column 260.
    """
    return sample_photos()[:, :, 178:248, 260:380].float() / 255


@pytest.mark.points(1)
@pytest.mark.task("conv2d", "conv_output_size")
@pytest.mark.parametrize("layer", ["no padding", "stride 2, padding 3"])
def test_conv2d_on_the_photo_crop(submission, profile, crop, layer):
    """conv2d: equals F.conv2d on the 70x120 photo crop with 7x7 filters"""
    stride, padding = (1, 0) if layer == "no padding" else (2, 3)
    w, b = random_filters((profile.budget["crop_filters"], 3, 7, 7), True, torch.Generator().manual_seed(42))
    got = submission.run(call, "conv2d", crop, w, b, stride, padding)
    check_conv(got, crop, w, b, stride, padding, f"the photo crop, {len(w)} filters of 7x7, {layer}")
