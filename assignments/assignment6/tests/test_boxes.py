"""Bounding boxes (boxes.py): format conversion, area, IoU, and boxes that follow their image through v2 transforms.

Every box is drawn for this grading. Conversions, areas and IoUs are compared with torchvision.ops
on random boxes; the IoU cases worked out by hand (identical, overlapping, nested, touching,
disjoint) are moved, stretched and turned at random (which leaves an IoU as it is) and compared
with torchvision.ops.box_iou too. The transforms run on random crops of scikit-learn's two sample
photos with a random box on each; the grader runs each transform on the same photo and box itself.
"""

import math

import pytest
import torch
from torchvision import tv_tensors
from torchvision.ops import box_area, box_convert, box_iou

from grader.data import sample_photos
from grader.i18n import _
from grader.testing import derived_seed, generator, probes_for

probes = probes_for(__file__)


def check_tensor(value, what, shape):
    """Fail with a one-line reason unless `value` is a tensor of `shape`."""
    if isinstance(value, dict) and "error" in value:
        pytest.fail(_("{what} raised {error}").format(what=what, error=value["error"]))
    assert isinstance(value, torch.Tensor), _("{what} returned {value!r}, not a tensor").format(what=what, value=value)
    assert list(value.shape) == list(shape), _("{what} has shape {shape}, expected {expected_shape}").format(
        what=what, shape=list(value.shape), expected_shape=list(shape)
    )
    return value.double()


def show(row):
    return "(" + ", ".join(f"{v:g}" for v in row.tolist()) + ")"


def random_cxcywh(count, rng):
    centres = torch.rand(count, 2, generator=rng) * 100
    sizes = 1 + torch.rand(count, 2, generator=rng) * 50
    return torch.cat([centres, sizes], dim=1)


# IoU cases worked out by hand: (name, box a, box b, IoU).
IOU_CASES = [
    ("identical", [0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 4.0, 4.0], 1.0),
    ("overlapping by a corner", [0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0], 1 / 7),  # 1 / (4 + 4 - 1)
    ("nested", [0.0, 0.0, 4.0, 4.0], [1.0, 1.0, 3.0, 3.0], 0.25),  # the inner box's 4 over the outer's 16
    ("touching along an edge", [0.0, 0.0, 2.0, 2.0], [2.0, 0.0, 4.0, 2.0], 0.0),
    ("disjoint", [0.0, 0.0, 1.0, 1.0], [2.0, 2.0, 3.0, 3.0], 0.0),  # no clamp: (-1) * (-1) = 1 "overlap"
    ("side by side", [0.0, 0.0, 2.0, 2.0], [3.0, 0.0, 5.0, 2.0], 0.0),  # no clamp: (-1) * 2 = -2
]


def moved_case(a, b, rng):
    """The pair (a, b) moved, stretched along each axis by a power of 2, maybe turned a quarter
    (x and y swapped) and maybe swapped: exact in float32, and with the same IoU."""
    pair = torch.tensor([a, b])
    if torch.rand(1, generator=rng).item() < 0.5:
        pair = pair[:, [1, 0, 3, 2]]
    scale = 2.0 ** torch.randint(-1, 4, (2,), generator=rng).float()
    shift = torch.randint(0, 200, (2,), generator=rng).float()
    pair = pair * scale.repeat(2) + shift.repeat(2)
    if torch.rand(1, generator=rng).item() < 0.5:
        pair = pair.flip(0)
    return pair[:1], pair[1:]


def inputs():
    rng = generator("box inputs")
    cxcywh = random_cxcywh(8, rng)
    return {
        "cxcywh": cxcywh,
        "xyxy_a": box_convert(cxcywh, "cxcywh", "xyxy"),
        "xyxy_b": box_convert(random_cxcywh(5, rng), "cxcywh", "xyxy"),
        "pairs": [moved_case(a, b, rng) for _, a, b, _ in IOU_CASES],
    }


INPUTS = inputs()


@pytest.fixture(scope="module")
def results(submission):
    return submission.run(probes.box_functions, INPUTS["cxcywh"], INPUTS["xyxy_a"], INPUTS["xyxy_b"], INPUTS["pairs"])


def first_difference(got, expected, rows):
    """The first row where got and expected differ: a message fragment."""
    index = int(((got - expected).abs().max(dim=1).values > 1e-4).nonzero()[0])
    return _("{show} gives {show2}, expected {expected_show}").format(
        show=show(rows[index]), show2=show(got[index]), expected_show=show(expected[index])
    )


@pytest.mark.points(2)
@pytest.mark.task("box_cxcywh_to_xyxy")
def test_cxcywh_to_xyxy(results):
    """box_cxcywh_to_xyxy: agrees with torchvision.ops.box_convert"""
    rows = INPUTS["cxcywh"]
    got = check_tensor(results["to_xyxy"], "box_cxcywh_to_xyxy", rows.shape)
    expected = box_convert(rows.double(), "cxcywh", "xyxy")
    assert torch.allclose(got, expected, atol=1e-4), _(
        "box (cx, cy, w, h) = {first_difference}: x1 = cx - w/2, x2 = cx + w/2 (half the width)"
    ).format(first_difference=first_difference(got, expected, rows))


@pytest.mark.points(2)
@pytest.mark.task("box_xyxy_to_cxcywh")
def test_xyxy_to_cxcywh(results):
    """box_xyxy_to_cxcywh: agrees with torchvision.ops.box_convert"""
    rows = INPUTS["xyxy_a"]
    got = check_tensor(results["to_cxcywh"], "box_xyxy_to_cxcywh", rows.shape)
    expected = box_convert(rows.double(), "xyxy", "cxcywh")
    assert torch.allclose(got, expected, atol=1e-4), _(
        "box (x1, y1, x2, y2) = {first_difference}: cx = (x1 + x2)/2, w = x2 - x1"
    ).format(first_difference=first_difference(got, expected, rows))


@pytest.mark.points(1)
@pytest.mark.task("box_area")
def test_box_area(results):
    """box_area: width times height"""
    rows = INPUTS["xyxy_a"]
    got = check_tensor(results["area"], "box_area", [len(rows)])
    expected = box_area(rows.double())
    assert torch.allclose(got, expected, rtol=1e-5), _("box_area gives {got}, expected {expected}").format(
        got=got.tolist(), expected=expected.tolist()
    )


@pytest.mark.points(2)
@pytest.mark.task("box_iou", "box_area")
def test_iou_matches_torchvision(results):
    """box_iou: every pair, as torchvision.ops.box_iou computes it"""
    a, b = INPUTS["xyxy_a"], INPUTS["xyxy_b"]
    got = check_tensor(results["iou"], "box_iou", [len(a), len(b)])
    difference = (got - box_iou(a.double(), b.double())).abs().max().item()
    assert difference < 1e-5, _(
        "box_iou differs from torchvision.ops.box_iou by up to {difference:.3g} on 8 x 5 boxes"
    ).format(difference=difference)


def check_case(results, name):
    """One hand-made case, moved: the student's IoU against torchvision's (and the hand value)."""
    index = next(i for i, case in enumerate(IOU_CASES) if case[0] == name)
    a, b = INPUTS["pairs"][index]
    got = check_tensor(results["pairs"][index], _("box_iou on one {name} pair").format(name=name), [1, 1]).item()
    expected = box_iou(a.double(), b.double()).item()
    assert math.isclose(expected, IOU_CASES[index][3], abs_tol=1e-12)  # the grader's own consistency
    return show(a[0]), show(b[0]), got, expected


@pytest.mark.points(2)
@pytest.mark.task("box_iou", "box_area")
def test_iou_of_disjoint_boxes_is_zero(results):
    """box_iou: 0 for boxes that do not overlap"""
    for name in ("disjoint", "side by side"):
        a, b, got, expected = check_case(results, name)
        assert math.isclose(got, expected, abs_tol=1e-6), _(
            "IoU of the {name} boxes {a} and {b} is {got:.4g}, expected 0: clamp the intersection's "
            "width and height at 0 (clamp(min=0)) before multiplying them"
        ).format(name=name, a=a, b=b, got=got)


@pytest.mark.points(2)
@pytest.mark.task("box_iou", "box_area")
def test_iou_by_hand(results):
    """box_iou: identical, overlapping, nested and touching boxes"""
    for name in ("identical", "overlapping by a corner", "nested", "touching along an edge"):
        a, b, got, expected = check_case(results, name)
        assert math.isclose(got, expected, abs_tol=1e-6), _(
            "IoU of the {name} boxes {a} and {b} is {got:.4g}, expected {expected:.4g}"
        ).format(name=name, a=a, b=b, got=got, expected=expected)


# --- boxes on a canvas, and through v2 transforms ----------------------------------------------


def canvases(rng):
    """Two (boxes (N, 4) CXCYWH, height, width), the height never the width."""
    cases = []
    for count in (1, 3):
        height = int(torch.randint(200, 480, (1,), generator=rng))
        difference = int(torch.randint(20, 160, (1,), generator=rng))
        width = height + difference if count == 1 else height - difference  # wider, then taller
        size = torch.tensor([width, height], dtype=torch.float32)
        centres = (0.3 + 0.4 * torch.rand(count, 2, generator=rng)) * size
        sides = (0.1 + 0.4 * torch.rand(count, 2, generator=rng)) * size
        cases.append((torch.cat([centres, sides], dim=1), height, width))
    return cases


CANVASES = canvases(generator("make_boxes"))


@pytest.mark.points(2)
@pytest.mark.task("make_boxes")
def test_make_boxes(submission):
    """make_boxes: BoundingBoxes in CXCYWH on a (height, width) canvas"""
    for made, (boxes, height, width) in zip(submission.run(probes.made_boxes, CANVASES), CANVASES, strict=True):
        if "error" in made:
            pytest.fail(_("make_boxes raised {error}").format(error=made["error"]))
        got = check_tensor(made["value"], "make_boxes", boxes.shape)
        assert made["is_bounding_boxes"], _("make_boxes returned a {type}, expected tv_tensors.BoundingBoxes").format(
            type=made["type"]
        )
        assert made["format"] == "CXCYWH", _("the boxes' format is {format}, expected CXCYWH").format(
            format=made["format"]
        )
        assert torch.equal(got, boxes.double()), _("make_boxes holds {got}, expected {boxes}").format(
            got=got.tolist(), boxes=boxes.tolist()
        )
        canvas = made["canvas_size"]
        if canvas != [height, width]:
            cx = boxes[0, 0].item()
            named = " = (width, height)" if canvas == [width, height] else ""
            flipped = f"{canvas[1] - cx:g}" if canvas and len(canvas) == 2 else _("nowhere")
            pytest.fail(
                _(
                    "canvas_size is {value}{named}, expected ({height}, {width}) = (height, width): a "
                    "horizontal flip would send the centre x = {cx:g} to {flipped}, not to {width} - {cx:g}"
                ).format(value=tuple(canvas or ()), named=named, height=height, width=width, cx=cx, flipped=flipped)
            )


def photo_crops(rng):
    """A random crop of each sample photo (height 320-427, width 480-640, so never square) and a
    random CXCYWH box (1, 4) well inside it, its centre away from the middle column (a flip moves it)."""
    crops, boxes = [], []
    for photo in sample_photos():
        height = int(torch.randint(320, 428, (1,), generator=rng))
        width = int(torch.randint(480, 641, (1,), generator=rng))
        top = int(torch.randint(0, 427 - height + 1, (1,), generator=rng))
        left = int(torch.randint(0, 640 - width + 1, (1,), generator=rng))
        crops.append(photo[:, top : top + height, left : left + width].contiguous())
        u = torch.rand(4, generator=rng)
        side = 1 if u[0] < 0.5 else -1
        cx = width * (0.5 + side * (0.08 + 0.12 * u[1].item()))
        cy = height * (0.35 + 0.3 * u[2].item())
        w, h = width * (0.2 + 0.25 * u[3].item()), height * (0.2 + 0.25 * u[0].item())
        boxes.append(torch.tensor([[cx, cy, w, h]]))
    return crops, boxes


PHOTOS, PHOTO_BOXES = photo_crops(generator("photo crops"))


def transform_runs(rng):
    """(photo index, transform name, size, torch seed) of every run; sizes and seeds drawn here."""
    runs = []
    for index, photo in enumerate(PHOTOS):
        height, width = photo.shape[-2:]
        resize = torch.randint(150, 300, (2,), generator=rng).tolist()
        margins = torch.randint(6, 31, (2,), generator=rng).tolist()  # the crop starts `margins` in
        runs += [
            (index, "horizontal flip", None, 0),
            (index, "resize", resize, 0),
            (index, "centre crop", [height - 2 * margins[0], width - 2 * margins[1]], 0),
            (index, "rotation by 90 degrees", None, 0),
        ]
        runs += [
            (index, "notebook pipeline", None, derived_seed(f"notebook pipeline {index} {k}") % 2**31) for k in (0, 1)
        ]
    return runs


RUNS = transform_runs(generator("transform runs"))


@pytest.fixture(scope="module")
def transformed(submission):
    return submission.run(probes.transform_photos, PHOTOS, PHOTO_BOXES, RUNS)


def run_result(transformed, index):
    """(image, boxes) of one run, with one-line reasons for what is wrong."""
    name = RUNS[index][1]
    result = transformed[index]
    if isinstance(result, dict):
        pytest.fail(_("transform_with_boxes with a {name} raised {error}").format(name=name, error=result["error"]))
    assert isinstance(result, list) and len(result) == 2, _(
        "transform_with_boxes returned {result!r}, expected (image, boxes)"
    ).format(result=result)
    image, boxes = result
    assert isinstance(image, torch.Tensor) and isinstance(boxes, torch.Tensor), _(
        "transform_with_boxes must return the transformed image and boxes, both tensors"
    )
    return image, boxes.double()


def expected_run(index):
    """The grader's own run: the same transform, with the same seed, on the photo and its box."""
    photo_index, name, size, seed = RUNS[index]
    photo = PHOTOS[photo_index]
    boxes = tv_tensors.BoundingBoxes(PHOTO_BOXES[photo_index], format="CXCYWH", canvas_size=tuple(photo.shape[-2:]))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        image, boxes = probes.build_transform(name, size)(tv_tensors.Image(photo), boxes)
    return image.as_subclass(torch.Tensor), boxes.as_subclass(torch.Tensor).double()


def described(index):
    photo_index, name, size, _unused = RUNS[index]
    height, width = PHOTOS[photo_index].shape[-2:]
    resized = _(" to {height} x {width}").format(height=size[0], width=size[1]) if size else ""
    return _("{name}{resized} of a {height} x {width} photo").format(
        name=name, resized=resized, height=height, width=width
    )


@pytest.mark.points(4)
@pytest.mark.task("transform_with_boxes")
@pytest.mark.parametrize("name", ["horizontal flip", "resize", "centre crop", "rotation by 90 degrees"])
def test_boxes_follow_the_image(transformed, name):
    """transform_with_boxes: the boxes move with the image"""
    for index in (i for i, run in enumerate(RUNS) if run[1] == name):
        image, boxes = run_result(transformed, index)
        want_image, want_boxes = expected_run(index)
        what = described(index)
        assert torch.equal(image, want_image), _("after a {what}, the image is not the transformed photo").format(
            what=what
        )
        box = PHOTO_BOXES[RUNS[index][0]].double()
        if boxes.shape == box.shape and torch.allclose(boxes, box, atol=0.5):
            pytest.fail(
                _(
                    "after a {what} the boxes did not move: pass the image and its BoundingBoxes to the "
                    "transform together"
                ).format(what=what)
            )
        assert boxes.shape == want_boxes.shape and torch.allclose(boxes, want_boxes, atol=0.05), _(
            "after a {what} the box {show} became {value}, expected {expected_show} (is canvas_size (height, width)?)"
        ).format(
            what=what,
            show=show(box[0]),
            value=[round(v, 2) for v in boxes.flatten().tolist()],
            expected_show=show(want_boxes[0]),
        )


@pytest.mark.points(3)
@pytest.mark.task("transform_with_boxes")
def test_one_random_draw_for_image_and_boxes(transformed):
    """transform_with_boxes: the notebook's random augmentation moves image and boxes alike"""
    for index in (i for i, run in enumerate(RUNS) if run[1] == "notebook pipeline"):
        image, boxes = run_result(transformed, index)
        want_image, want_boxes = expected_run(index)
        seed = RUNS[index][3]
        assert torch.equal(image, want_image), _(
            "with seed {seed}, the image is not the photo under this seed's flip, rotation and crop"
        ).format(seed=seed)
        difference = (boxes - want_boxes).abs().max().item() if boxes.shape == want_boxes.shape else math.inf
        assert difference < 0.05, _(
            "with seed {seed}, the box is {difference:.1f} px away from where the image's flip, "
            "rotation and crop put it: transform the image and its boxes in one call, so that both get "
            "the same random draw"
        ).format(seed=seed, difference=difference)
