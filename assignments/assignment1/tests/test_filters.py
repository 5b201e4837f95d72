"""Hand-made line filters (filters.py) on scikit-learn's two sample photos and on drawn lines."""

import pytest
import torch
import torch.nn.functional as F

from grader.data import sample_photos

# torchvision's CenterCrop((70, 120)) of a 427x640 photo: row int(round(357 / 2)) = 178, column 260.
PHOTO_CROP = (slice(178, 248), slice(260, 380))
LINE_AT = {"vertical": 60, "horizontal": 35}  # the column, or the row, of the drawn line
# A 7x7 line of ones over 3 channels in [0, 1]: 21 on the line, 3 where the filter crosses it.
ALONG, ACROSS = 21.0, 3.0


@pytest.fixture(scope="module")
def photos():
    """uint8 (2, 3, 427, 640): the china and flower photos."""
    return sample_photos()


def call(sub, function, *args):
    """Probe: sub.filters.<function>(*args)."""
    out = getattr(sub.filters, function)(*args)
    return out.detach() if isinstance(out, torch.Tensor) else out


def each(sub, function, cases):
    """Probe: sub.filters.<function>(*args) for each args in cases, in one sandbox run."""
    return [getattr(sub.filters, function)(*args) for args in cases]


def shape_of(out):
    return list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__


def expected_filters(in_channels, size):
    filters = torch.zeros(2, in_channels, size, size)
    filters[0, :, :, size // 2] = 1
    filters[1, :, size // 2, :] = 1
    return filters


def line_image(direction):
    """uint8 (1, 3, 70, 120): black, with one white line, vertical or horizontal."""
    image = torch.zeros(1, 3, 70, 120, dtype=torch.uint8)
    if direction == "vertical":
        image[..., LINE_AT["vertical"]] = 255
    else:
        image[..., LINE_AT["horizontal"], :] = 255
    return image


@pytest.mark.points(1)
@pytest.mark.task("center_crop")
@pytest.mark.parametrize("case", ["the photos to 70x120", "10x12 to 4x6"])
def test_center_crop(submission, photos, case):
    """center_crop: the pixels torchvision's CenterCrop keeps"""
    if case == "the photos to 70x120":
        images, size, expected = photos, (70, 120), photos[:, :, PHOTO_CROP[0], PHOTO_CROP[1]]
    else:
        images = torch.arange(2 * 10 * 12).reshape(1, 2, 10, 12)
        size, expected = (4, 6), images[:, :, 3:7, 3:9]
    got = submission.run(call, "center_crop", images, *size)
    expected_shape = list(expected.shape)
    assert shape_of(got) == expected_shape, f"center_crop output is {shape_of(got)}, expected {expected_shape}"
    assert torch.equal(got, expected), f"center_crop keeps other pixels than the centre {size[0]}x{size[1]} ({case})"


@pytest.mark.points(1)
@pytest.mark.task("line_filters")
def test_line_filter_values(submission):
    """line_filters: ones on the middle column (filter 0) and the middle row (filter 1)"""
    cases = [(3, 7), (1, 5)]
    for (in_channels, size), got in zip(cases, submission.run(each, "line_filters", cases), strict=True):
        expected = expected_filters(in_channels, size)
        assert shape_of(got) == list(expected.shape), (
            f"line_filters({in_channels}, {size}) is {shape_of(got)}, expected {list(expected.shape)}"
        )
        for index, line in enumerate(("column", "row")):
            assert torch.equal(got[index].float(), expected[index]), (
                f"filter {index} differs: expected ones in the middle {line} ({size // 2}) of each channel, zeros"
                " elsewhere"
            )


@pytest.mark.points(2)
@pytest.mark.task("line_filters", "apply_line_filters", "center_crop")
def test_filters_respond_to_lines(submission):
    """line_filters: filter 0 responds to vertical lines, filter 1 to horizontal ones"""
    directions = {"vertical": (0, 1), "horizontal": (1, 0)}  # the filter along the line, the filter across it
    responses = submission.run(each, "apply_line_filters", [(line_image(direction),) for direction in directions])
    for (direction, (along, across)), maps in zip(directions.items(), responses, strict=True):
        assert shape_of(maps) == [1, 2, 70, 120], (
            f"apply_line_filters output is {shape_of(maps)}, expected [1, 2, 70, 120]"
        )
        strong, weak = maps[0, along].max().item(), maps[0, across].max().item()
        assert strong > weak, (
            f"on a {direction} line, filter {along} peaks at {strong:g} and filter {across} at {weak:g}:"
            f" filter {along} should respond most (it is the {direction} line)"
        )
        assert (strong, weak) == (ALONG, ACROSS), (
            f"on a {direction} line the filters peak at {strong:g} and {weak:g}, expected {ALONG:g} and {ACROSS:g}"
            " (7 ones over 3 channels, pixels in [0, 1])"
        )
        peaks = maps[0, along].amax(dim=0 if direction == "vertical" else 1)  # the peak of each column (row)
        position = int(peaks.argmax())
        assert position == LINE_AT[direction], (
            f"filter {along} peaks at {position}, not on the {direction} line at {LINE_AT[direction]}"
        )


@pytest.mark.points(1)
@pytest.mark.task("apply_line_filters", "line_filters", "center_crop")
def test_apply_line_filters_on_the_photos(submission, photos):
    """apply_line_filters: the feature maps of the 70x120 photo crop"""
    got = submission.run(call, "apply_line_filters", photos)
    crop = photos[:, :, PHOTO_CROP[0], PHOTO_CROP[1]].float() / 255
    expected = F.conv2d(crop, expected_filters(3, 7), padding="same")
    assert shape_of(got) == [2, 2, 70, 120], (
        f"apply_line_filters output is {shape_of(got)}, expected [2, 2, 70, 120]:"
        " crop the 70x120 centre, then padding 'same' keeps its size"
    )
    assert not torch.allclose(got, expected * 255, atol=1e-2), (
        "apply_line_filters works on pixels in [0, 255]: scale them to [0, 1] first"
    )
    error = (got - expected).abs().max().item()
    assert error < 1e-4, (
        f"apply_line_filters differs from F.conv2d of the crop with the line filters by up to {error:.3g}"
    )
