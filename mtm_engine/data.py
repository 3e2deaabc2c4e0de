"""Datasets: registry, the paper's transforms applied once per split, seeded batch iteration.

The paper's transforms (Section IV-B, Table 2) are deterministic: resize to 44, centre-crop to
36, normalise. So each split is resized and cropped ONCE into 8-bit pixels [N, C, 36, 36] that stay
on the training device, normalised a batch at a time there (a quarter of float32's memory: F-MNIST at
data.size = 224 is 3.5 GB, not 14), and an epoch is a seeded permutation of it, not a per-sample pipeline.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from mtm_engine.catalogue import DATASETS, load
from mtm_engine.config import FOLDER_PREFIX, DataSpec
from mtm_engine.errors import DataError

RESIZE, CROP = 44, 36          # Table 2
HELD_OUT_FRACTION = 0.2        # digits and flat image folders have no test split: a fixed 20% is held out
_HELD_OUT_SEED = 20260101      # fixed, independent of every run's seeds, so the test set never moves
_TRANSFORM_CHUNK = 4096        # images transformed at a time, to bound the peak memory


@dataclass
class Split:
    x: Tensor      # [N, C, S, S] uint8 pixels, resized and cropped (Table 2); S = data.size (36, the paper's)
    y: Tensor      # [N] long
    mean: Tensor   # [C] float32: the normalisation on the [0, 1] scale, applied by images()
    std: Tensor    # [C] float32

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device) -> "Split":
        return Split(self.x.to(device), self.y.to(device), self.mean.to(device), self.std.to(device))

    def subset(self, index: Tensor) -> "Split":
        """The images at `index` (positions [n] or a mask [N]), with the same normalisation."""
        return Split(self.x[index], self.y[index], self.mean, self.std)

    def images(self, index: Tensor | slice = slice(None)) -> Tensor:
        """The images at `index`, normalised: float32 [n, C, S, S] on the split's device."""
        pixels = self.x[index].float().div_(255.0)
        return pixels.sub_(self.mean.view(1, -1, 1, 1)).div_(self.std.view(1, -1, 1, 1))

    def chunks(self, size: int) -> Iterator[Tensor]:
        """All images in order, normalised `size` at a time (evaluation's batches): [<= size, C, S, S]."""
        for start in range(0, len(self), size):
            yield self.images(slice(start, start + size))


@dataclass
class Dataset:
    name: str
    train: Split
    val: Split
    test: Split
    classes: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return self.train.x.shape[1]

    @property
    def nbytes(self) -> int:
        """What the three splits take in memory (8-bit pixels and labels)."""
        return sum(s.x.nbytes + s.y.nbytes for s in (self.train, self.val, self.test))

    def to(self, device: torch.device) -> "Dataset":
        return Dataset(self.name, self.train.to(device), self.val.to(device), self.test.to(device), self.classes)


@dataclass
class RawData:
    """Images as float in [0, 1], [N, C, H, W], before the paper's transforms."""
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    classes: list[str]
    # Normalisation on the [0, 1] pixel scale; None: measured on the training images.
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


# Table 2 gives the MNIST-family values on the 0-255 scale (33.3149, 78.5639): divided by 255
# here, because our pixels are in [0, 1]. (The original code mixed the two scales for CIFAR.)
_MNIST_MEAN, _MNIST_STD = (33.3149 / 255,), (78.5639 / 255,)
_TORCHVISION = {
    # name: (torchvision class name, mean, std)
    "mnist": ("MNIST", _MNIST_MEAN, _MNIST_STD),
    "fashion-mnist": ("FashionMNIST", _MNIST_MEAN, _MNIST_STD),
    "kmnist": ("KMNIST", _MNIST_MEAN, _MNIST_STD),
    "cifar10": ("CIFAR10", (0.491, 0.482, 0.447), (0.202, 0.200, 0.201)),
    "cifar100": ("CIFAR100", (0.507, 0.487, 0.441), (0.201, 0.198, 0.202)),
}


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mtm" / "datasets"


def _expected_files(cls: type) -> tuple[Path, list[str]]:
    """(sub-folder of root, archive names) that torchvision reads for `cls`."""
    if hasattr(cls, "resources"):   # MNIST family: ROOT/<ClassName>/raw/*.gz
        return Path(cls.__name__) / "raw", [Path(url).name for url, _ in cls.resources]
    return Path("."), [cls.filename]   # CIFAR: ROOT/cifar-10-python.tar.gz


@contextlib.contextmanager
def _extraction_lock(root: Path) -> Iterator[None]:
    """Held while a torchvision dataset under `root` is read or extracted. torchvision extracts archives
    in place, so without it, runs or trials that start together on a fresh dataset read half-written
    files ("shape '[60000, 28, 28]' is invalid"). The lock file lives in the cache (the root may be
    read-only); where the cache cannot be written, nothing is extracted there either, and no lock is taken."""
    path = _cache_dir() / "locks" / f"{hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]}.lock"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "a")
    except OSError:
        yield
        return
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)   # released when fh closes, however the load ends
        yield


def _torchvision_split(name: str, spec: DataSpec, train: bool):
    with _extraction_lock(Path(spec.root).expanduser()):
        return _torchvision_split_unlocked(name, spec, train)


def _torchvision_split_unlocked(name: str, spec: DataSpec, train: bool):
    import torchvision.datasets

    cls_name = _TORCHVISION[name][0]
    cls = getattr(torchvision.datasets, cls_name)
    root = Path(spec.root).expanduser()
    sub, archives = _expected_files(cls)
    with contextlib.suppress(RuntimeError):
        return cls(str(root), train=train, download=False)
    # Not extracted yet. If the archives are here, the data root is only read: never write into it
    # (a shared data folder, writable or not), but extract through links in a mirror in the cache;
    # torchvision then checks the md5 and extracts without touching the network.
    base = root
    present = [a for a in archives if (root / sub / a).is_file()]
    if present:
        base = _cache_dir() / cls_name.lower() / hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]
        with contextlib.suppress(RuntimeError):   # extracted there before: no need to check the archives again
            return cls(str(base), train=train, download=False)
    corrupt = [a for a in present if not _intact(cls, root / sub / a)]
    if corrupt:
        raise DataError(f"{root / sub / corrupt[0]} is damaged (its md5 is not torchvision's); replace it with an "
                        f"intact copy{'' if spec.download else ', or delete it and set data.download = true'}")
    if len(present) < len(archives) and not spec.download:   # never fetch the rest behind the user's back
        raise DataError(_missing(name, root / sub, [a for a in archives if a not in present], "data.download is false"))
    if present:
        (base / sub).mkdir(parents=True, exist_ok=True)
        for a in present:
            link = base / sub / a
            if not link.exists():
                link.symlink_to((root / sub / a).resolve())
    chatter = io.StringIO()  # torchvision prints its download attempts; keep stdout clean
    try:
        with contextlib.redirect_stdout(chatter):
            return cls(str(base), train=train, download=True)
    except (RuntimeError, OSError) as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise DataError(_missing(name, root / sub, archives, reason)) from None


def _intact(cls: type, archive: Path) -> bool:
    """Whether an archive has the md5 torchvision knows for it (a damaged one would make torchvision
    download a fresh copy: never, offline or with data.download = false)."""
    from torchvision.datasets.utils import check_integrity

    md5 = dict((Path(url).name, md5) for url, md5 in getattr(cls, "resources", ())).get(archive.name) \
        or getattr(cls, "tgz_md5", None)
    return md5 is None or check_integrity(str(archive), md5)


def _missing(name: str, folder: Path, archives: list[str], reason: str) -> str:
    return (
        f"dataset {name!r} is not in {folder} and could not be downloaded ({reason}); "
        f"put {', '.join(archives)} there, or set data.root to the folder that holds them"
    )


def load_torchvision(spec: DataSpec) -> RawData:
    """A dataset of torchvision's (data.dataset names it), from data.root (downloaded there if allowed)."""
    name = spec.dataset
    train, test = _torchvision_split(name, spec, True), _torchvision_split(name, spec, False)

    def images(ds) -> Tensor:
        x = torch.as_tensor(ds.data)
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)   # -> [N, C, H, W]
        return x.float().div_(255.0)

    _, mean, std = _TORCHVISION[name]
    return RawData(images(train), torch.as_tensor(train.targets, dtype=torch.long),
                   images(test), torch.as_tensor(test.targets, dtype=torch.long),
                   list(train.classes), mean, std)


def load_digits(spec: DataSpec) -> RawData:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0   # [1797, 1, 8, 8]
    y = torch.as_tensor(digits.target, dtype=torch.long)
    return _hold_out_test(x, y, [str(i) for i in range(10)])


def _hold_out_test(x: Tensor, y: Tensor, classes: list[str]) -> RawData:
    """Split a set with no test split of its own: a fixed, seed-independent 20% becomes the test set."""
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(_HELD_OUT_SEED))
    n_test = round(len(y) * HELD_OUT_FRACTION)
    test, train = perm[:n_test], perm[n_test:]
    return RawData(x[train], y[train], x[test], y[test], classes)


def _load_folder(spec: DataSpec) -> RawData:
    """torchvision ImageFolder layout: PATH/<class>/<image>, or PATH/train/<class>/... and
    PATH/test/<class>/... Images are resized and cropped one at a time (they may differ in size)."""
    from torchvision.datasets import ImageFolder

    path = Path(spec.dataset[len(FOLDER_PREFIX):]).expanduser()
    if not path.is_dir():
        raise DataError(f"data.dataset = {spec.dataset!r}: folder {path} does not exist")

    def read(folder: Path) -> tuple[Tensor, Tensor, list[str]]:
        try:
            ds = ImageFolder(str(folder))
        except (FileNotFoundError, OSError) as exc:
            raise DataError(f"{folder}: not an image folder ({exc}); lay it out as <class>/<image>") from None
        images = []
        for file, _ in ds.samples:
            try:
                img = ds.loader(file)
            except OSError as exc:   # PIL's UnidentifiedImageError among them
                raise DataError(f"{file} is not an image ({type(exc).__name__}); remove it from {folder}") from None
            images.append(TF.center_crop(TF.resize(TF.pil_to_tensor(img), [RESIZE], antialias=True), [CROP]))
        return torch.stack(images).float().div_(255.0), torch.as_tensor(ds.targets), ds.classes

    if (path / "train").is_dir() and (path / "test").is_dir():
        train_x, train_y, classes = read(path / "train")
        test_x, test_y, test_classes = read(path / "test")
        if test_classes != classes:
            raise DataError(f"{path}: train/ and test/ hold different classes; give them the same sub-folders")
        return RawData(train_x, train_y, test_x, test_y, classes)
    return _hold_out_test(*read(path))


def to_pixels(x: Tensor) -> Tensor:
    """Images in [0, 1] as 8-bit pixels (rounded): float [N, C, H, W] -> uint8 [N, C, H, W]."""
    return x.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)


def paper_transform(x: Tensor, size: int = CROP) -> Tensor:
    """Table 2's resize to 44x44 and centre-crop to 36x36, as 8-bit pixels (the normalisation comes per
    batch: Split.images). x: [N, C, H, W] in [0, 1] -> uint8 [N, C, 36, 36]. With another `size`
    (data.size), images are resized straight to size x size instead (not at all if they have it).
    Rounding the resized images to 8 bits moves a pixel by at most 0.5/255 of the range."""
    out = torch.empty(len(x), x.shape[1], size, size, dtype=torch.uint8)   # written in place: no copy at the end
    for start in range(0, len(x), _TRANSFORM_CHUNK):   # float working memory for one chunk at a time
        chunk = x[start:start + _TRANSFORM_CHUNK]
        if chunk.shape[-2:] != (size, size):
            chunk = (TF.center_crop(TF.resize(chunk, [RESIZE, RESIZE], antialias=True), [CROP, CROP]) if size == CROP
                     else TF.resize(chunk, [size, size], antialias=True))
        out[start:start + len(chunk)] = to_pixels(chunk)
    return out


def load_dataset(spec: DataSpec) -> Dataset:
    """Load, transform once, and split the training set into train/validation (seeded)."""
    name = spec.dataset
    if not (name.startswith(FOLDER_PREFIX) or name in DATASETS):
        raise DataError(f"data.dataset = {name!r}: unknown; choose one of {', '.join(DATASETS)}, or folder:<path>")
    loader = _load_folder if name.startswith(FOLDER_PREFIX) else load(DATASETS[name].function)
    raw = loader(spec)
    if len(raw.classes) < 2:
        raise DataError(f"data.dataset = {name!r}: {len(raw.classes)} class; a classifier needs at least 2")
    n_train = len(raw.train_y) - (max(1, round(len(raw.train_y) * spec.val_fraction)) if spec.val_fraction else 0)
    if n_train < len(raw.classes) or len(raw.test_y) == 0:
        raise DataError(f"data.dataset = {name!r}: {len(raw.train_y)} training and {len(raw.test_y)} test images are "
                        f"too few for the splits (validation {spec.val_fraction:g}); add images")
    if raw.mean is None or raw.std is None:   # measured on the training images only
        mean, std = raw.train_x.mean(dim=(0, 2, 3)), raw.train_x.std(dim=(0, 2, 3)).clamp_min(1e-6)
    else:
        mean, std = torch.tensor(raw.mean), torch.tensor(raw.std)
    mean, std = mean.float(), std.float()
    perm = torch.randperm(len(raw.train_y), generator=torch.Generator().manual_seed(spec.split_seed))
    n_val = max(1, round(len(perm) * spec.val_fraction)) if spec.val_fraction > 0 else 0   # 0: train on all
    # The raw images are put in the split's order (validation first) before the transform, so that validation
    # and training are two views of its one output: the (data.size-scaled) output is never copied.
    pixels, labels = paper_transform(raw.train_x[perm], spec.size), raw.train_y[perm]
    data = Dataset(name, Split(pixels[n_val:], labels[n_val:], mean, std), Split(pixels[:n_val], labels[:n_val], mean, std),
                   Split(paper_transform(raw.test_x, spec.size), raw.test_y, mean, std), raw.classes)
    return without_classes(data, spec.holdout_classes) if spec.holdout_classes else data


def without_classes(data: Dataset, held_out: tuple[int, ...]) -> Dataset:
    """The dataset without the `held_out` classes in any split (data.holdout_classes), the others
    renumbered 0..K'-1 in their order: the network then has K' outputs or class embeddings, and
    nothing of the held-out classes reaches training, validation or the choice of epoch. The split
    into training and validation images is the same as with every class (it is made before)."""
    missing = [k for k in held_out if k >= data.num_classes]
    if missing:
        raise DataError(f"data.holdout_classes: class {missing[0]} does not exist; {data.name} has classes "
                        f"0..{data.num_classes - 1}")
    kept = [k for k in range(data.num_classes) if k not in held_out]
    if len(kept) < 2:
        raise DataError(f"data.holdout_classes = {list(held_out)} leaves {len(kept)} class to train on; keep at least 2")
    renumber = torch.full((data.num_classes,), -1, dtype=torch.long)
    renumber[kept] = torch.arange(len(kept))

    def keep(split: Split) -> Split:
        new = renumber.to(split.y.device)[split.y]   # [N]: -1 for the held-out classes
        return Split(split.x[new >= 0], new[new >= 0], split.mean, split.std)

    out = Dataset(data.name, keep(data.train), keep(data.val), keep(data.test), [data.classes[k] for k in kept])
    empty = [name for name, before, after in (("validation", data.val, out.val), ("test", data.test, out.test))
             if len(before) and not len(after)]
    if empty:   # the run would train, select no epoch or report no test accuracy, and say nothing
        raise DataError(f"data.holdout_classes = {list(held_out)} leaves the {empty[0]} split of {data.name} without "
                        f"images: it holds only those classes; hold out fewer classes, or add images of the others")
    return out


# Mirror images are still images of the same class here; not for digits or characters.
FLIPPABLE = ("fashion-mnist", "cifar10", "cifar100")


def flips(spec: DataSpec) -> bool:
    """Whether augmentation flips horizontally: data.flip, where "auto" means FLIPPABLE and image folders."""
    return spec.flip == "on" or spec.flip == "auto" and (spec.dataset in FLIPPABLE
                                                          or spec.dataset.startswith(FOLDER_PREFIX))


def augmentation_draws(n: int, generator: torch.Generator, padding: int, flip: bool,
                       device: torch.device) -> Tensor:
    """An epoch's augmentation draws, made at once and sent to the device in one copy (per-batch draws on
    the CPU generator would be three host-to-device copies, each a GPU stall, every batch).
    Returns [n, 3] int64: the crop's row and column offset in [0, 2 * padding], and 1 where the image
    is mirrored (half of them, if `flip`). Row i belongs to the i-th image of the epoch's batch order."""
    draws = torch.zeros(n, 3, dtype=torch.int64)
    if padding:
        draws[:, :2] = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator)
    if flip:
        draws[:, 2] = (torch.rand(n, generator=generator) < 0.5).long()
    return draws.to(device)


def augment(x: Tensor, draws: Tensor, padding: int) -> Tensor:
    """Batch-wise augmentation of cached tensors: a random crop of the image padded by `padding`
    (edge pixels repeated), and a horizontal flip where drawn.
    x: [B, C, H, W] -> [B, C, H, W]; draws: [B, 3] on x's device (augmentation_draws' rows)."""
    B, C, H, W = x.shape
    if padding:
        padded = torch.nn.functional.pad(x, (padding,) * 4, mode="replicate")     # [B, C, H+2p, W+2p]
        rows = (draws[:, 0, None] + torch.arange(H, device=x.device))[:, None, :, None]   # [B, 1, H, 1]
        cols = (draws[:, 1, None] + torch.arange(W, device=x.device))[:, None, None, :]   # [B, 1, 1, W]
        batch = torch.arange(B, device=x.device)[:, None, None, None]
        channel = torch.arange(C, device=x.device)[None, :, None, None]
        x = padded[batch, channel, rows, cols]
    return torch.where(draws[:, 2, None, None, None].bool(), x.flip(-1), x)


def batches(split: Split, batch_size: int, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
    """One epoch: (x [B, C, 36, 36] normalised float32, y [B]) in the order of a seeded permutation."""
    perm = torch.randperm(len(split), generator=generator).to(split.y.device)
    for start in range(0, len(perm), batch_size):
        idx = perm[start:start + batch_size]
        yield split.images(idx), split.y[idx]
