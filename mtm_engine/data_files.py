"""Where each dataset's files lie on disk, found without torch: the TUI's Compose says whether a
dataset is really there before a run is launched (importing torchvision would cost it seconds).
`data.py` reads the same layout through torchvision; a test holds the two to the same names."""

from __future__ import annotations

from pathlib import Path

from mtm_engine.config import FOLDER_PREFIX, DataSpec

_MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                "t10k-labels-idx1-ubyte.gz")
# name: (folder under data.root, archives, what torchvision extracts them to, under that folder)
LAYOUT = {
    "mnist": ("MNIST/raw", _MNIST_FILES, tuple(f.removesuffix(".gz") for f in _MNIST_FILES)),
    "fashion-mnist": ("FashionMNIST/raw", _MNIST_FILES, tuple(f.removesuffix(".gz") for f in _MNIST_FILES)),
    "kmnist": ("KMNIST/raw", _MNIST_FILES, tuple(f.removesuffix(".gz") for f in _MNIST_FILES)),
    "cifar10": (".", ("cifar-10-python.tar.gz",), ("cifar-10-batches-py",)),
    "cifar100": (".", ("cifar-100-python.tar.gz",), ("cifar-100-python",)),
}


def missing_dataset(spec: DataSpec) -> str | None:
    """Why the dataset is not on disk where the spec says (one line, with absolute paths), or None where it
    is: the embedded digits always are; a torchvision dataset is there as its archives or as extracted."""
    if spec.dataset.startswith(FOLDER_PREFIX):
        path = Path(spec.dataset[len(FOLDER_PREFIX):]).expanduser().absolute()
        return None if path.is_dir() else f"folder {path} does not exist"
    if spec.dataset not in LAYOUT:
        return None
    sub, archives, extracted = LAYOUT[spec.dataset]
    folder = (Path(spec.root).expanduser() / sub).absolute()
    if all((folder / f).exists() for f in archives) or all((folder / f).exists() for f in extracted):
        return None
    return f"{spec.dataset} is not in {folder.resolve()} (it needs {', '.join(archives)})"
