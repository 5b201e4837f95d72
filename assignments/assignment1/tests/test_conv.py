"""Convolution (conv.py): the output-size formula, the parameter shapes and conv2d by hand.

Every expected value comes from PyTorch itself, here, outside the sandbox: output sizes from
nn.Conv2d, feature maps from F.conv2d. Next to the course's own examples (the digit "7", the
notebook's 70x120 crop), every test draws sizes, images and filters of its own for this grading:
an answer learnt by heart for the examples does not earn the point.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from grader.data import sample_photos
from grader.i18n import _
from grader.testing import generator, probes_for

probes = probes_for(__file__)

# The digit "7" of the CNN walk-through and its horizontal-line kernel.
DIGIT_SEVEN = [[1, 1, 1, 0, 0], [0, 0, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 1, 0], [0, 0, 0, 1, 1]]
HORIZONTAL_KERNEL = [[1, 1, 1], [0, 0, 0], [-1, -1, -1]]
# The walk-through prints [[2, 1, 0], [1, 0, 0], [0, 0, 1]] as the feature map: five of its nine values are wrong.
DIGIT_SEVEN_MAP = [[2, 0, -1], [1, 0, 0], [1, 1, 0]]
DRAWN_DIGITS = 3  # drawn 5x5 images of 0s and 1s, through the same kernel


def randint(rng, low, high):
    """A whole number in low..high (both included), drawn from rng."""
    return int(torch.randint(low, high + 1, (1,), generator=rng))


def one_axis_cases(rng, count):
    """(size, kernel_size, padding, stride) along one axis; the last one where the floor matters."""
    cases = []
    while len(cases) < count:
        kernel, padding, stride = randint(rng, 1, 7), randint(rng, 0, 3), randint(rng, 1, 4)
        size = randint(rng, max(kernel - 2 * padding, 1), 40)
        if len(cases) < count - 1 or (size + 2 * padding - kernel) % stride:
            cases.append((size, kernel, padding, stride))
    return cases


def valid_and_same_cases(rng):
    """One axis with "valid", one with "same", and an (H, W) pair with "same" (stride 1: PyTorch's rule)."""
    size, kernel = randint(rng, 8, 40), randint(rng, 1, 7)
    square, odd = randint(rng, 8, 40), randint(rng, 1, 4) * 2 + 1
    pair = (randint(rng, 8, 40), randint(rng, 8, 40))
    return [(size, kernel, "valid", 1), (square, kernel + 1, "same", 1), (pair, odd, "same", 1)]


def pair_cases(rng, count):
    """(H, W) sizes, each other argument an int or a pair, drawn so that every output is at least 1."""
    cases = []
    for index in range(count):
        kernel = (randint(rng, 1, 6), randint(rng, 1, 6))
        padding = (randint(rng, 0, 3), randint(rng, 0, 3))
        stride = (randint(rng, 1, 3), randint(rng, 1, 3))
        size = tuple(randint(rng, max(k - 2 * p, 1), 30) for k, p in zip(kernel, padding, strict=True))
        if index == 1:  # a square kernel and one stride for both axes, written as ints
            kernel, stride = kernel[0], stride[0]
            size = tuple(max(s, kernel) for s in size)
        cases.append((size, kernel, padding, stride))
    return cases


def size_cases():
    """(size, kernel_size, padding, stride), as conv_output_size takes them, in three groups."""
    rng = generator("conv_output_size")
    return {
        # the course's own example of the floor: 8, 3, stride 3 is 2.67 without it
        "one axis": [(8, 3, 0, 3), *one_axis_cases(rng, 4)],
        "valid and same": valid_and_same_cases(rng),
        "(H, W) pairs": pair_cases(rng, 3),
    }


SIZE_CASES = size_cases()
# The notebook's 70x120 crop through a 7x7 Conv2d: no padding, "same", and stride 2 with padding 3.
CROP_SETTINGS = [(7, 0, 1), (7, "same", 1), (7, 3, 2)]
CROP_SIZES = [(64, 114), (70, 120), (35, 60)]  # what the notebook prints
_rng = generator("conv_output_size crop")
DRAWN_IMAGE = (randint(_rng, 20, 100), randint(_rng, 20, 160))  # the same three layers on an image of this size
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


def check_sizes(got, cases, expected):
    assert isinstance(got, list) and len(got) == len(cases), _("conv_output_size returned something else than sizes")
    for args, size, wanted in zip(cases, got, expected, strict=True):
        call_text = f"conv_output_size({', '.join(repr(a) for a in args)})"
        assert not isinstance(size, float), _(
            "{call_text} returned the float {size}: sizes are whole, use // (floor)"
        ).format(call_text=call_text, size=size)
        assert size == wanted, _("{call_text} is {size}, expected {wanted}").format(
            call_text=call_text, size=size, wanted=wanted
        )


def shape_of(out):
    return list(out.shape) if isinstance(out, torch.Tensor) else out if isinstance(out, str) else type(out).__name__


def max_error(got, expected):
    """The largest absolute difference; a NaN anywhere is as far as can be."""
    return (got.double() - expected.double()).abs().nan_to_num(nan=float("inf")).max().item()


@pytest.mark.points(3)
@pytest.mark.task("conv_output_size")
@pytest.mark.parametrize("group", SIZE_CASES)
def test_output_size_matches_conv2d(submission, group):
    """conv_output_size: the output size nn.Conv2d gives"""
    cases = SIZE_CASES[group]
    got = submission.run(probes.each, "conv", "conv_output_size", cases)
    check_sizes(got, cases, [torch_output_size(*case) for case in cases])


@pytest.mark.points(1)
@pytest.mark.task("conv_output_size")
def test_output_size_of_the_crop(submission):
    """conv_output_size: the notebook's 70x120 crop through a 7x7 kernel: 64x114, 70x120, 35x60"""
    crop_cases = [((70, 120), *setting) for setting in CROP_SETTINGS]
    drawn_cases = [(DRAWN_IMAGE, *setting) for setting in CROP_SETTINGS]
    expected = [torch_output_size(*case) for case in crop_cases + drawn_cases]
    assert expected[: len(crop_cases)] == CROP_SIZES  # the notebook's figures hold
    got = submission.run(probes.each, "conv", "conv_output_size", crop_cases + drawn_cases)
    check_sizes(got, crop_cases + drawn_cases, expected)


@pytest.mark.points(1)
@pytest.mark.task("conv_parameter_shapes")
def test_parameter_shapes(submission):
    """conv_parameter_shapes: the weight and bias shapes of nn.Conv2d ([32, 3, 7, 7] and [32] for the notebook's)"""
    rng = generator("conv_parameter_shapes")
    cases = [(3, 32, 7), (randint(rng, 1, 16), randint(rng, 1, 64), randint(rng, 1, 7))]
    cases.append((randint(rng, 1, 16), randint(rng, 1, 64), (randint(rng, 1, 7), randint(rng, 1, 7))))
    got = submission.run(probes.each, "conv", "conv_parameter_shapes", cases)
    for case, shapes in zip(cases, got, strict=True):
        layer = nn.Conv2d(*case, device="meta")
        expected = (tuple(layer.weight.shape), tuple(layer.bias.shape))
        assert shapes == expected, _(
            "conv_parameter_shapes{case} is {shapes}, expected {expected} (weight, bias)"
        ).format(case=case, shapes=shapes, expected=expected)


def check_conv(got, x, w, b, stride, padding, where):
    """Compare with F.conv2d and name the likely mistake."""
    expected = F.conv2d(x, w, b, stride=stride, padding=padding)
    assert shape_of(got) == list(expected.shape), _("conv2d output is {shape_of}, expected {shape} ({where})").format(
        shape_of=shape_of(got), shape=list(expected.shape), where=where
    )
    error = max_error(got, expected)
    if error <= 1e-4:
        return
    flipped = F.conv2d(x, w.flip(-2, -1), b, stride=stride, padding=padding)
    assert max_error(got, flipped) > 1e-4, _(
        "conv2d flips the kernel ({where}): PyTorch's conv2d is a cross-correlation, no flip"
    ).format(where=where)
    assert b is None or max_error(got, F.conv2d(x, w, None, stride=stride, padding=padding)) > 1e-4, _(
        "conv2d leaves out the bias ({where}): add bias[o] to every pixel of output channel o"
    ).format(where=where)
    raise AssertionError(
        _("conv2d differs from F.conv2d by up to {error:.3g} ({where})").format(error=error, where=where)
    )


@pytest.mark.points(2)
@pytest.mark.task("conv2d")
def test_digit_seven_feature_map(submission):
    """conv2d: the digit "7" with the horizontal-line kernel"""
    image = torch.tensor(DIGIT_SEVEN, dtype=torch.float32)[None, None]
    kernel = torch.tensor(HORIZONTAL_KERNEL, dtype=torch.float32)[None, None]
    expected = F.conv2d(image, kernel)
    assert expected[0, 0].tolist() == DIGIT_SEVEN_MAP  # the walk-through's map is wrong
    digits = torch.randint(0, 2, (DRAWN_DIGITS, 1, 5, 5), generator=generator("digits")).float()
    seven, drawn = submission.run(probes.each, "conv", "conv2d", [(image, kernel), (digits, kernel)])
    assert shape_of(seven) == [1, 1, 3, 3], _("conv2d output is {shape_of}, expected [1, 1, 3, 3]").format(
        shape_of=shape_of(seven)
    )
    if max_error(seven, expected) > 1e-5:
        assert max_error(seven, F.conv2d(image, kernel.flip(-2, -1))) > 1e-5, _(
            "conv2d flips the kernel (a true convolution): PyTorch's conv2d is a cross-correlation, no flip"
        )
        raise AssertionError(
            _("conv2d gives {seven}, expected {digit_seven_map}").format(
                seven=seven[0, 0].tolist(), digit_seven_map=DIGIT_SEVEN_MAP
            )
        )
    check_conv(
        drawn,
        digits,
        kernel,
        None,
        1,
        0,
        _("{drawn_digits} drawn 5x5 images of 0s and 1s, the same kernel").format(drawn_digits=DRAWN_DIGITS),
    )


@pytest.mark.points(3)
@pytest.mark.task("conv2d", "conv_output_size")
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_matches_f_conv2d(submission, case):
    """conv2d: equals F.conv2d on random inputs"""
    x_shape, w_shape, with_bias, stride, padding = CONV_CASES[case]
    rng = generator(f"conv2d {case}")
    x, w = torch.randn(x_shape, generator=rng), torch.randn(w_shape, generator=rng)
    b = torch.randn(w_shape[0], generator=rng) if with_bias else None
    (got,) = submission.run(probes.each, "conv", "conv2d", [(x, w, b, stride, padding)])
    check_conv(got, x, w, b, stride, padding, f"x {list(x_shape)}, weight {list(w_shape)}, {case}")


@pytest.fixture(scope="module")
def crop():
    """A 70x120 crop of the two photos, in [0, 1]: (2, 3, 70, 120), at a place drawn for this grading
    (the notebook's centre crop is one of them), and its (top, left)."""
    photos = sample_photos()
    rng = generator("photo crop")
    top, left = randint(rng, 0, photos.shape[-2] - 70), randint(rng, 0, photos.shape[-1] - 120)
    return photos[:, :, top : top + 70, left : left + 120].float() / 255, (top, left)


@pytest.mark.points(1)
@pytest.mark.task("conv2d", "conv_output_size")
@pytest.mark.parametrize("layer", ["no padding", "stride 2, padding 3"])
def test_conv2d_on_the_photo_crop(submission, profile, crop, layer):
    """conv2d: equals F.conv2d on the 70x120 photo crop with 7x7 filters"""
    image, (top, left) = crop
    stride, padding = (1, 0) if layer == "no padding" else (2, 3)
    rng = generator(f"photo crop filters {layer}")
    w = torch.randn(profile.budget["crop_filters"], 3, 7, 7, generator=rng)
    b = torch.randn(len(w), generator=rng)
    (got,) = submission.run(probes.each, "conv", "conv2d", [(image, w, b, stride, padding)])
    where = _("the photos' 70x120 crop at ({top}, {left}), {n_w} filters of 7x7, {layer}").format(
        top=top, left=left, n_w=len(w), layer=layer
    )
    check_conv(got, image, w, b, stride, padding, where)
