"""Hand-made line filters (filters.py) on scikit-learn's two sample photos and on drawn lines.

The images are drawn for this grading: windows of the photos of a drawn size at a drawn place
(their centre crop lands on other pixels every time), lines at drawn places, filters of drawn
sizes. The expected values come from torchvision's CenterCrop and F.conv2d, here.
"""

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF

from grader.data import sample_photos
from grader.i18n import _
from grader.testing import generator, probes_for

probes = probes_for(__file__)

CROP = (70, 120)
LINE_IMAGE = (70, 120)  # black, with one white line


def randint(rng, low, high):
    """A whole number in low..high (both included), drawn from rng."""
    return int(torch.randint(low, high + 1, (1,), generator=rng))


def margin(rng, low, high, remainder):
    """A margin (image size - crop size) in low..high that is `remainder` modulo 4: with 1 the centre
    rounds down (round(2a + 0.5) = 2a), with 3 up (round(2a + 1.5) = 2a + 2), with 0 or 2 it is exact."""
    value = randint(rng, low, high)
    return value - (value - remainder) % 4


def photo_window(photos, label, margins):
    """A window of the photos (2, 3, 70 + dh, 120 + dw) at a drawn place, dh and dw drawn with the
    remainders `margins` (see `margin`)."""
    rng = generator(label)
    height = CROP[0] + margin(rng, 5, photos.shape[-2] - CROP[0], margins[0])
    width = CROP[1] + margin(rng, 5, photos.shape[-1] - CROP[1], margins[1])
    top, left = randint(rng, 0, photos.shape[-2] - height), randint(rng, 0, photos.shape[-1] - width)
    return photos[:, :, top : top + height, left : left + width].contiguous()


@pytest.fixture(scope="module")
def photos():
    """uint8 (2, 3, 427, 640): the china and flower photos."""
    return sample_photos()


def shape_of(out):
    return list(out.shape) if isinstance(out, torch.Tensor) else out if isinstance(out, str) else type(out).__name__


def max_error(got, expected):
    """The largest absolute difference; a NaN anywhere is as far as can be."""
    return (got.double() - expected.double()).abs().nan_to_num(nan=float("inf")).max().item()


def expected_filters(in_channels, size):
    filters = torch.zeros(2, in_channels, size, size)
    filters[0, :, :, size // 2] = 1
    filters[1, :, size // 2, :] = 1
    return filters


def line_image(direction, at):
    """uint8 (1, 3, 70, 120): black, with one white line, vertical (at column `at`) or horizontal (at row `at`)."""
    image = torch.zeros(1, 3, *LINE_IMAGE, dtype=torch.uint8)
    if direction == "vertical":
        image[..., at] = 255
    else:
        image[..., at, :] = 255
    return image


def center_crop_case(photos, case):
    """(images, (height, width)) for a case of test_center_crop. One axis's centre rounds down and
    the other's up, the way Python's round does: floor or ceil division misses one of them."""
    if case == "the photos to 70x120":
        return photo_window(photos, "center_crop photos", (3, 1)), CROP
    rng = generator("center_crop small")
    height, width = randint(rng, 2, 8), randint(rng, 2, 8)
    size = (height + margin(rng, 5, 12, 1), width + margin(rng, 5, 12, 3))
    images = torch.randint(0, 256, (randint(rng, 1, 3), randint(rng, 1, 3), *size), generator=rng, dtype=torch.uint8)
    return images, (height, width)


@pytest.mark.points(1)
@pytest.mark.task("center_crop")
@pytest.mark.parametrize("case", ["the photos to 70x120", "a small image"])
def test_center_crop(submission, photos, case):
    """center_crop: the pixels torchvision's CenterCrop keeps"""
    images, size = center_crop_case(photos, case)
    (got,) = submission.run(probes.each, "filters", "center_crop", [(images, *size)])
    expected = TF.center_crop(images, list(size))
    expected_shape = list(expected.shape)
    assert shape_of(got) == expected_shape, _("center_crop output is {shape_of}, expected {expected_shape}").format(
        shape_of=shape_of(got), expected_shape=expected_shape
    )
    assert torch.equal(got, expected), _(
        "center_crop keeps other pixels than the centre {size0}x{size1} of {shape}x{shape2} images "
        "({case}): start at row round((H - height) / 2), column round((W - width) / 2)"
    ).format(size0=size[0], size1=size[1], shape=images.shape[-2], shape2=images.shape[-1], case=case)


@pytest.mark.points(1)
@pytest.mark.task("line_filters")
def test_line_filter_values(submission):
    """line_filters: ones on the middle column (filter 0) and the middle row (filter 1)"""
    rng = generator("line_filters")
    cases = [(3, 7), *((randint(rng, 1, 5), randint(rng, 1, 4) * 2 + 1) for _ in range(2))]  # channels, odd size
    got_all = submission.run(probes.each, "filters", "line_filters", cases)
    for (in_channels, size), got in zip(cases, got_all, strict=True):
        expected = expected_filters(in_channels, size)
        assert shape_of(got) == list(expected.shape), _(
            "line_filters({in_channels}, {size}) is {shape_of}, expected {shape}"
        ).format(in_channels=in_channels, size=size, shape_of=shape_of(got), shape=list(expected.shape))
        for index, line in enumerate(("column", "row")):
            assert torch.equal(got[index].float(), expected[index]), _(
                "filter {index} differs: expected ones in the middle {line} ({size}) of each channel, zeros elsewhere"
            ).format(index=index, line=line, size=size // 2)


@pytest.mark.points(2)
@pytest.mark.task("line_filters", "apply_line_filters", "center_crop")
def test_filters_respond_to_lines(submission):
    """line_filters: filter 0 responds to vertical lines, filter 1 to horizontal ones"""
    rng = generator("lines")
    directions = {"vertical": (0, 1), "horizontal": (1, 0)}  # the filter along the line, the filter across it
    places = {"vertical": randint(rng, 5, LINE_IMAGE[1] - 6), "horizontal": randint(rng, 5, LINE_IMAGE[0] - 6)}
    images = {direction: line_image(direction, places[direction]) for direction in directions}
    responses = submission.run(probes.each, "filters", "apply_line_filters", [(images[d],) for d in directions])
    for (direction, (along, across)), maps in zip(directions.items(), responses, strict=True):
        assert shape_of(maps) == [1, 2, *LINE_IMAGE], _(
            "apply_line_filters output is {shape_of}, expected [1, 2, {line_image0}, {line_image1}]"
        ).format(shape_of=shape_of(maps), line_image0=LINE_IMAGE[0], line_image1=LINE_IMAGE[1])
        # what the line filters give, here: 7 ones over 3 channels on the line (21), 3 across it
        expected = F.conv2d(images[direction].float() / 255, expected_filters(3, 7), padding="same")
        strong, weak = maps[0, along].max().item(), maps[0, across].max().item()
        wanted = expected[0, along].max().item(), expected[0, across].max().item()
        assert strong > weak, _(
            "on a {direction} line, filter {along} peaks at {strong:g} and filter {across} at "
            "{weak:g}: filter {along} should respond most (it is the {direction} line)"
        ).format(direction=direction, along=along, strong=strong, across=across, weak=weak)
        assert (strong, weak) == wanted, _(
            "on a {direction} line the filters peak at {strong:g} and {weak:g}, expected {wanted0:g} "
            "and {wanted1:g} (7 ones over 3 channels, pixels in [0, 1])"
        ).format(direction=direction, strong=strong, weak=weak, wanted0=wanted[0], wanted1=wanted[1])
        peaks = maps[0, along].amax(dim=0 if direction == "vertical" else 1)  # the peak of each column (row)
        position = int(peaks.argmax())
        assert position == places[direction], _(
            "filter {along} peaks at {position}, not on the {direction} line at {places}"
        ).format(along=along, position=position, direction=direction, places=places[direction])


@pytest.mark.points(1)
@pytest.mark.task("apply_line_filters", "line_filters", "center_crop")
def test_apply_line_filters_on_the_photos(submission, photos):
    """apply_line_filters: the feature maps of the 70x120 photo crop"""
    window = photo_window(photos, "apply_line_filters", (0, 2))  # even margins: the centre is exact
    (got,) = submission.run(probes.each, "filters", "apply_line_filters", [(window,)])
    crop = TF.center_crop(window, list(CROP)).float() / 255
    expected = F.conv2d(crop, expected_filters(3, 7), padding="same")
    assert shape_of(got) == [2, 2, *CROP], _(
        "apply_line_filters output is {shape_of}, expected [2, 2, 70, 120]: crop the 70x120 "
        "centre, then padding 'same' keeps its size"
    ).format(shape_of=shape_of(got))
    assert max_error(got, expected * 255) > 1e-2, _(
        "apply_line_filters works on pixels in [0, 255]: scale them to [0, 1] first"
    )
    error = max_error(got, expected)
    assert error < 1e-4, _(
        "apply_line_filters differs from F.conv2d of the crop with the line filters by up to "
        "{error:.3g} ({shape}x{shape2} windows of the photos)"
    ).format(error=error, shape=window.shape[-2], shape2=window.shape[-1])
