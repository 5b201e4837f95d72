"""Pictures in reports: the figure data a grading test records, bounded, and how they are drawn.

A test records a figure's data, never an image:

    figures.record(record_property, "training", figures.curves("LeNet: training", history))

The data travel in the test's record; the report keeps them per test (`TestResult.figures`) and
draws each into a PNG (`TestResult.images`: PrairieLearn's `{"label", "url"}` with a base64 data
URL), within `IMAGE_BUDGET` for the whole report. Every format shows those images. A hidden test's
figures are never kept, so never drawn. Values that come from the sandbox (a training curve) are
only drawn, never scored; a figure that cannot be made or drawn is left out, it never fails a test.

Kinds of figure data (JSON):
  curves  {"series": {name: [[x, y], ...]}, "xlabel"}                   lines (training curves)
  matrix  {"values": [[count, ...], ...], "labels"}                     a confusion matrix: rows true
  maps    {"image": pixels (H, W), "maps": pixels (C, H, W)}            feature maps of one image
  boxes   {"images": pixels (N, H, W), "true", "predicted": [[x1, y1, x2, y2], ...],
           "true_labels", "predicted_labels"}                           boxes on a few images
  bars    {"labels", "values", "xlabel", "horizontal", "top"}           a bar chart (the class page's)
  predictions {"images": pixels (N, H, W, 3), "true", "predicted": [class name, ...]}
                                                                        colour images and their classes
every one with its "kind" and "title". pixels: {"shape", "uint8": base64}, each image scaled to 0..255
(a colour image as a whole, its channels last).
"""

from __future__ import annotations

import base64
import functools
import html
import io
import itertools
import math
import re
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from grader.i18n import _

if TYPE_CHECKING:  # the tests' side has torch loaded; a report is built and drawn without it
    import torch

PREFIX = "figure:"  # a test's record_property name for a figure's data
IMAGE_BUDGET = 800_000  # characters of data URLs per report: PrairieLearn reads results of up to 1 MB
MAX_SERIES, MAX_POINTS = 6, 400
MAX_CLASSES = 20
MAX_MAPS, MAX_SIDE = 16, 64
MAX_BOX_IMAGES = 8
_DPI = 80
_NAME = re.compile(r"[^\w .,:;()/+%=-]")  # what a student's series name keeps (drawn as plain text)
_DRAWING = threading.Lock()  # matplotlib's state is not thread-safe; a batch builds reports on threads


def record(record_property: Callable[[str, Any], None], name: str, figure: dict[str, Any] | None) -> None:
    """Record a figure's data for the test's report (nothing when it could not be made)."""
    if figure is not None:
        record_property(PREFIX + name, figure)


def _never_fails(make: Callable[..., dict[str, Any] | None]) -> Callable[..., dict[str, Any] | None]:
    """A figure is a picture, not a check: making one never fails the test that records it."""

    @functools.wraps(make)
    def safe(*args: Any, **kwargs: Any) -> dict[str, Any] | None:
        try:
            return make(*args, **kwargs)
        except Exception:
            return None

    return safe


def _number(value: Any) -> float | None:
    """A finite float, clipped to a drawable range, or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return max(-1e9, min(1e9, float(value)))


def _evenly(items: Sequence[Any], count: int) -> list[Any]:
    """At most `count` items, evenly spread, the last one kept."""
    if len(items) <= count:
        return list(items)
    step = (len(items) - 1) / (count - 1)
    return [items[round(i * step)] for i in range(count)]


def _pixels(images: torch.Tensor) -> dict[str, Any]:
    """Images (..., H, W) as bytes, each scaled to 0..255 on its own, at most MAX_SIDE a side."""
    import torch

    x = images.detach().cpu().double().nan_to_num(0.0, 0.0, 0.0)
    if x.shape[-1] > MAX_SIDE or x.shape[-2] > MAX_SIDE:
        size = [min(MAX_SIDE, x.shape[-2]), min(MAX_SIDE, x.shape[-1])]
        flat = x.reshape(-1, 1, *x.shape[-2:])
        x = torch.nn.functional.interpolate(flat, size=size, mode="area").reshape(*x.shape[:-2], *size)
    flat = x.reshape(-1, x.shape[-2] * x.shape[-1])
    low, high = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    scaled = ((flat - low) / (high - low).clamp_min(1e-12) * 255).round().to(torch.uint8).reshape(x.shape)
    return {"shape": list(scaled.shape), "uint8": base64.b64encode(scaled.numpy().tobytes()).decode()}


def _colour_pixels(images: torch.Tensor) -> dict[str, Any]:
    """Colour images (N, 3, H, W) as bytes (N, H, W, 3), each scaled to 0..255 as a whole, so that
    its colours keep their balance; at most MAX_SIDE a side."""
    x = images.detach().cpu().double().nan_to_num(0.0, 0.0, 0.0)
    if x.shape[-1] > MAX_SIDE or x.shape[-2] > MAX_SIDE:
        import torch

        x = torch.nn.functional.interpolate(
            x, size=[min(MAX_SIDE, x.shape[-2]), min(MAX_SIDE, x.shape[-1])], mode="area"
        )
    flat = x.reshape(len(x), -1)
    low, high = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    scaled = ((flat - low) / (high - low).clamp_min(1e-12) * 255).round().byte().reshape(x.shape)
    scaled = scaled.permute(0, 2, 3, 1).contiguous()
    return {"shape": list(scaled.shape), "uint8": base64.b64encode(scaled.numpy().tobytes()).decode()}


def _unpixels(pixels: dict[str, Any]) -> Any:
    import numpy as np

    shape = [int(n) for n in pixels["shape"]]
    data = np.frombuffer(base64.b64decode(pixels["uint8"]), dtype=np.uint8)
    return data.reshape(shape)


def _boxes(boxes: torch.Tensor) -> list[list[float | None]]:
    return [[_number(v) for v in box] for box in boxes.detach().cpu().double().reshape(-1, 4).tolist()]


@_never_fails
def curves(title: str, series: Any, xlabel: str | None = None) -> dict[str, Any] | None:
    """Lines from {name: [(x, y), ...]}, e.g. the points a d2l Animator kept. The values may come
    from the sandbox: only finite numbers are kept, at most MAX_SERIES lines of MAX_POINTS points."""
    if not isinstance(series, dict):
        return None
    lines: dict[str, list[list[float]]] = {}
    for name, points in itertools.islice(series.items(), MAX_SERIES):
        if not isinstance(points, (list, tuple)):
            continue
        kept = []
        for point in points[: 100 * MAX_POINTS]:
            if isinstance(point, (list, tuple)) and len(point) == 2:
                x, y = _number(point[0]), _number(point[1])
                if x is not None and y is not None:
                    kept.append([x, y])
        label = _NAME.sub("", str(name)[:200])[:40].strip() or f"line {len(lines) + 1}"
        if kept and label not in lines:
            lines[label] = _evenly(kept, MAX_POINTS)
    figure = {"kind": "curves", "title": title, "xlabel": xlabel or _("epoch"), "series": lines}
    return figure if lines else None


@_never_fails
def confusion(
    title: str, predicted: torch.Tensor, labels: torch.Tensor, classes: int, names: Sequence[str] = ()
) -> dict[str, Any] | None:
    """The confusion matrix of predicted against true classes (rows true, columns predicted), the
    classes named by `names` (default: their numbers)."""
    import torch

    if classes > MAX_CLASSES:
        return None
    pairs = labels.detach().cpu().long().reshape(-1) * classes + predicted.detach().cpu().long().reshape(-1)
    counts = torch.bincount(pairs.clamp(0, classes * classes - 1), minlength=classes * classes)
    return {
        "kind": "matrix",
        "title": title,
        "labels": [str(name)[:20] for name in names] if names else [str(c) for c in range(classes)],
        "values": counts.reshape(classes, classes).tolist(),
    }


@_never_fails
def feature_maps(title: str, image: torch.Tensor, maps: torch.Tensor) -> dict[str, Any] | None:
    """One image (C, H, W) or (H, W) and the feature maps (C', H', W') a layer makes of it."""
    if maps.ndim != 3 or image.ndim not in (2, 3):
        return None
    shown = image if image.ndim == 2 else image.double().mean(0)
    return {"kind": "maps", "title": title, "image": _pixels(shown), "maps": _pixels(maps[:MAX_MAPS])}


@_never_fails
def boxes(
    title: str,
    images: torch.Tensor,
    true: torch.Tensor,
    predicted: torch.Tensor,
    true_labels: torch.Tensor,
    predicted_labels: torch.Tensor,
) -> dict[str, Any] | None:
    """A few images (N, C, H, W) or (N, H, W) with their true and predicted boxes (N, 4), XYXY in pixels."""
    count = min(len(images), MAX_BOX_IMAGES)
    shown = images[:count].double()
    if shown.ndim == 4:
        shown = shown.mean(1)
    if shown.shape[-1] > MAX_SIDE or shown.shape[-2] > MAX_SIDE:
        return None  # boxes are in the images' pixels: no rescaling
    return {
        "kind": "boxes",
        "title": title,
        "images": _pixels(shown),
        "true": _boxes(true[:count]),
        "predicted": _boxes(predicted[:count]),
        "true_labels": [int(v) for v in true_labels[:count].tolist()],
        "predicted_labels": [int(v) for v in predicted_labels[:count].tolist()],
    }


@_never_fails
def predictions(
    title: str, images: torch.Tensor, true: Sequence[str], predicted: Sequence[str]
) -> dict[str, Any] | None:
    """A few colour images (N, 3, H, W), each with its true and its predicted class."""
    count = min(len(images), MAX_BOX_IMAGES)
    return {
        "kind": "predictions",
        "title": title,
        "images": _colour_pixels(images[:count]),
        "true": [str(name)[:20] for name in true[:count]],
        "predicted": [str(name)[:20] for name in predicted[:count]],
    }


@_never_fails
def bars(
    title: str,
    labels: Sequence[str],
    values: Sequence[float],
    xlabel: str = "",
    horizontal: bool = False,
    top: float | None = None,
) -> dict[str, Any] | None:
    """A bar chart: one bar per label (a score histogram, each test's pass rate), the value axis up
    to `top` (default: the largest value), in whole numbers when every value is one."""
    kept = [(str(label)[:60], _number(value) or 0.0) for label, value in zip(labels, values, strict=True)]
    return {
        "kind": "bars",
        "title": title,
        "labels": [label for label, _ in kept],
        "values": [value for _, value in kept],
        "xlabel": xlabel,
        "horizontal": horizontal,
        "top": _number(top),
    }


# --- drawing -------------------------------------------------------------------------------------


def draw(figure: dict[str, Any]) -> bytes | None:
    """A figure's PNG, or None when matplotlib is missing or the data cannot be drawn."""
    drawer = _DRAWERS.get(figure.get("kind", "")) if isinstance(figure, dict) else None
    if drawer is None:
        return None
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError:
        return None
    with _DRAWING, matplotlib.rc_context({"text.parse_math": False, "font.size": 8}):
        try:
            chart = Figure(dpi=_DPI, layout="constrained")
            drawer(chart, figure)  # no title: the image's label is its caption wherever it is shown
            out = io.BytesIO()
            chart.savefig(out, format="png", dpi=_DPI, metadata={"Software": None})
        except Exception:  # data the drawing chokes on: no picture, never a failed grading
            return None
    return out.getvalue()


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def draw_images(tests: Sequence[Any]) -> None:
    """Draw every test's figures into its `images` ({"label", "url"}), in order, while the report's
    IMAGE_BUDGET lasts: a figure past it keeps its data but gets no image."""
    spent = sum(len(image["url"]) for test in tests for image in test.images)
    for test in tests:
        for figure in test.figures.values():
            png = draw(figure)
            if png is None:
                continue
            url = data_url(png)
            if spent + len(url) > IMAGE_BUDGET:
                continue
            spent += len(url)
            test.images.append({"label": str(figure.get("title", ""))[:120], "url": url})


def image_tags(images: Sequence[dict[str, str]]) -> str:
    """HTML for a test's images: each a figure with its label as the caption (data URLs only)."""
    tags = []
    for image in images:
        url, label = image.get("url", ""), html.escape(image.get("label", ""))
        if url.startswith("data:image/png;base64,"):
            image = f'<img src="{html.escape(url)}" alt="{label}">'
            tags.append(f"<figure>{image}<figcaption>{label}</figcaption></figure>")
    return "".join(tags)


def _draw_curves(chart: Any, figure: dict[str, Any]) -> None:
    chart.set_size_inches(6, 3.4)
    axes = chart.add_subplot()
    for name, points in figure["series"].items():
        xs, ys = zip(*points, strict=True)
        axes.plot(xs, ys, marker="." if len(points) < 30 else None, label=str(name))
    axes.set_xlabel(str(figure.get("xlabel", "")))
    axes.grid(alpha=0.3)
    axes.legend()


def _draw_matrix(chart: Any, figure: dict[str, Any]) -> None:
    import numpy as np

    values = np.array(figure["values"], dtype=float)
    labels = [str(label) for label in figure["labels"]]
    chart.set_size_inches(4.6, 4.2)
    axes = chart.add_subplot()
    axes.imshow(values, cmap="Blues")
    for (row, column), count in np.ndenumerate(values):
        if count:
            dark = count > values.max() / 2
            axes.text(column, row, f"{count:g}", ha="center", va="center", fontsize=6, color="w" if dark else "k")
    axes.set_xticks(range(len(labels)), labels)
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel(_("predicted class"))
    axes.set_ylabel(_("true class"))


def _draw_maps(chart: Any, figure: dict[str, Any]) -> None:
    image, maps = _unpixels(figure["image"]), _unpixels(figure["maps"])
    columns = min(6, len(maps) + 1)
    rows = math.ceil((len(maps) + 1) / columns)
    chart.set_size_inches(0.9 * columns, 0.95 * rows + 0.3)
    for index, (tile, name) in enumerate([(image, "image"), *((m, str(i)) for i, m in enumerate(maps))]):
        axes = chart.add_subplot(rows, columns, index + 1)
        axes.imshow(tile, cmap="gray" if index == 0 else "viridis", interpolation="nearest")
        axes.set_title(name, fontsize=7)
        axes.set_axis_off()


def _draw_boxes(chart: Any, figure: dict[str, Any]) -> None:
    from matplotlib.patches import Rectangle

    images = _unpixels(figure["images"])
    chart.set_size_inches(1.5 * len(images), 1.9)
    rows = zip(
        images, figure["true"], figure["predicted"], figure["true_labels"], figure["predicted_labels"], strict=True
    )
    for index, (image, true, predicted, label, guess) in enumerate(rows):
        axes = chart.add_subplot(1, len(images), index + 1)
        axes.imshow(image, cmap="gray", interpolation="nearest")
        for box, color, style in ((true, "tab:green", "-"), (predicted, "tab:red", "--")):
            if all(v is not None for v in box):
                x1, y1, x2, y2 = box
                axes.add_patch(
                    Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color=color, linestyle=style, linewidth=1.5)
                )
        axes.set_title(_("true {label} / got {guess}").format(label=label, guess=guess), fontsize=7)
        axes.set_xlim(-0.5, image.shape[1] - 0.5)
        axes.set_ylim(image.shape[0] - 0.5, -0.5)
        axes.set_axis_off()


def _draw_bars(chart: Any, figure: dict[str, Any]) -> None:
    from matplotlib.ticker import MaxNLocator

    labels, values = figure["labels"], figure["values"]
    axes = chart.add_subplot()
    scale = axes.xaxis if figure.get("horizontal") else axes.yaxis
    scale.set_major_locator(MaxNLocator(integer=all(float(v).is_integer() for v in values)))
    if figure.get("top") is not None:
        (axes.set_xlim if figure.get("horizontal") else axes.set_ylim)(0, figure["top"])
    if figure.get("horizontal"):
        chart.set_size_inches(7, 0.8 + 0.22 * len(labels))
        axes.barh(range(len(labels)), values, color="tab:blue")
        axes.set_yticks(range(len(labels)), labels)
        axes.invert_yaxis()
        axes.set_xlabel(str(figure.get("xlabel", "")))
    else:
        chart.set_size_inches(6, 2.8)
        axes.bar(range(len(labels)), values, color="tab:blue")
        axes.set_xticks(range(len(labels)), labels, rotation=30)
        axes.set_ylabel(str(figure.get("xlabel", "")))
    axes.grid(alpha=0.3, axis="x" if figure.get("horizontal") else "y")


def _draw_predictions(chart: Any, figure: dict[str, Any]) -> None:
    images = _unpixels(figure["images"])
    chart.set_size_inches(1.4 * len(images), 1.9)
    for index, (image, true, guess) in enumerate(zip(images, figure["true"], figure["predicted"], strict=True)):
        axes = chart.add_subplot(1, len(images), index + 1)
        axes.imshow(image, interpolation="nearest")
        colour = "tab:green" if true == guess else "tab:red"
        axes.set_title(_("true {label}\ngot {guess}").format(label=true, guess=guess), fontsize=7, color=colour)
        axes.set_axis_off()


_DRAWERS: dict[str, Callable[[Any, dict[str, Any]], None]] = {
    "predictions": _draw_predictions,
    "curves": _draw_curves,
    "matrix": _draw_matrix,
    "maps": _draw_maps,
    "boxes": _draw_boxes,
    "bars": _draw_bars,
}
