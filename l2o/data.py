"""Datasets, Gaussian random projection and standardisation (paper section 4).

The paper trains two-layer nets on "randomly projected and normalized" versions of
MNIST, the Toronto Faces Dataset (TFD), CIFAR-10 and CIFAR-100.  This module

1. finds and reads the images (:func:`load`),
2. turns them into the paper's inputs (:func:`prepare`, book/design.md, D10):
   pixels scaled to ``[0, 1]``, flattened, multiplied by a Gaussian random matrix
   ``P (D_raw, dim)`` and standardised per projected dimension with the
   *training-set* mean and standard deviation,
3. wraps the result in the objective :class:`l2o.problems.MLPProblem`
   (:func:`make_problem`),
4. downloads the public datasets for users who have none (:func:`download`, and
   ``python -m l2o.data download mnist --data-dir DIR``).

Where the data come from
------------------------
The data folder is the ``data_dir`` argument, else ``$L2O_DATA_DIR``, else
``~/.cache/l2o``.  For each dataset the first source found wins:

========  ===========================================================================
name      sources, in the order they are tried
========  ===========================================================================
mnist     ``mnist.npz``; ``raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``
cifar10   ``cifar10.npz`` (complete); ``raw/cifar-10-python.tar.gz``;
          ``cifar10_subset.npz`` (class-balanced subset)
cifar100  ``cifar100.npz`` (complete); ``raw/cifar-100-python.tar.gz``;
          ``cifar100_subset.npz`` (class-balanced subset)
faces     ``tfd.npz`` (user-supplied TFD); ``fer2013_subset.npz`` (FER2013 stand-in)
========  ===========================================================================

A complete copy is preferred to a subset, so that a user who downloads the full
CIFAR archive gets it even when the subset sits in the same folder.  ``"tfd"`` is an
alias of ``"faces"``.  TFD is licence-restricted: this package cannot fetch it.  Put
your own copy in ``tfd.npz`` with keys ``x_train (N, 48, 48) uint8``, ``y_train (N,)``
integers in ``0..6`` (anger, disgust, fear, happy, sad, surprise, neutral), and
optionally ``x_test``/``y_test`` and ``class_names (7,)``.  Otherwise the FER2013
subset (48x48 grey faces, the same seven expressions) stands in, and every result
says so through :attr:`RawDataset.source` / :meth:`PreparedDataset.describe`.

The ``.npz`` files hold ``x_train``, ``y_train``, ``x_test``, ``y_test`` (uint8 images
``(N, H, W)`` or ``(N, H, W, 3)``, integer labels), optionally ``class_names`` (or
``fine_label_names`` for CIFAR-100); they are read with ``allow_pickle=False``.  The
pickled batches inside the CIFAR archives are read with a restricted unpickler that
only admits numpy arrays.
"""

from __future__ import annotations

import argparse
import codecs
import gzip
import hashlib
import http.client
import logging
import os
import pickle
import posixpath
import socket
import struct
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = [
    "DATASETS",
    "DatasetNotFoundError",
    "DatasetFormatError",
    "DownloadError",
    "ChecksumError",
    "RawDataset",
    "PreparedDataset",
    "resolve_data_dir",
    "load",
    "projection_matrix",
    "prepare",
    "make_problem",
    "download",
    "clear_cache",
    "main",
]

#: Canonical dataset names.  ``"tfd"`` is accepted as an alias of ``"faces"``.
DATASETS = ("mnist", "cifar10", "cifar100", "faces")
_ALIASES = {"tfd": "faces"}
SPLITS = ("train", "test")
ENV_VAR = "L2O_DATA_DIR"
DEFAULT_DATA_DIR = Path("~/.cache/l2o")

#: Image shape of one example, per dataset.
IMAGE_SHAPES = {
    "mnist": (28, 28),
    "cifar10": (32, 32, 3),
    "cifar100": (32, 32, 3),
    "faces": (48, 48),
}
N_CLASSES = {"mnist": 10, "cifar10": 10, "cifar100": 100, "faces": 7}
#: Size of the complete (train, test) splits; fewer rows means a subset.
FULL_SIZES = {"mnist": (60000, 10000), "cifar10": (50000, 10000), "cifar100": (50000, 10000)}
DISPLAY_NAMES = {"mnist": "MNIST", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}

MNIST_CLASSES = tuple(str(i) for i in range(10))
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle",
    "bicycle", "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can",
    "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud",
    "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin",
    "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo",
    "keyboard", "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man",
    "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree",
    "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray",
    "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper",
    "snail", "snake", "spider", "squirrel", "streetcar", "sunflower",
    "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf",
    "woman", "worm",
)
#: TFD expression labels 1..7, stored here as 0..6 (FER2013 uses the same order).
TFD_CLASSES = ("anger", "disgust", "fear", "happy", "sad", "surprise", "neutral")
_DEFAULT_CLASSES = {
    "mnist": MNIST_CLASSES,
    "cifar10": CIFAR10_CLASSES,
    "cifar100": CIFAR100_CLASSES,
    "faces": TFD_CLASSES,
}

# Canonical file names of the original distributions.
MNIST_RAW_FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
CIFAR_ARCHIVES = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}

#: Where :func:`download` looks, in order (the first host that answers is used).
#: The first MNIST host is the original; it often refuses scripted downloads, so a
#: widely used mirror of the same files follows.  The checksums decide, not the host.
DEFAULT_BASE_URLS = {
    "mnist": (
        "https://yann.lecun.com/exdb/mnist/",
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
    ),
    "cifar10": ("https://www.cs.toronto.edu/~kriz/",),
    "cifar100": ("https://www.cs.toronto.edu/~kriz/",),
}
#: Published MD5 checksums of the canonical files (32 hex digits = MD5, 64 = SHA-256).
CHECKSUMS = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "cifar10": {"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"},
    "cifar100": {"cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85"},
}

_PROJECTION_CHUNK = 4096  # rows projected at once: bounds memory to ~100 MB in float64


# ---------------------------------------------------------------------- errors
class DatasetNotFoundError(FileNotFoundError):
    """No source of the requested dataset exists in the data folder."""

    def __str__(self) -> str:  # FileNotFoundError would prefix an errno otherwise
        return str(self.args[0]) if self.args else ""


class DatasetFormatError(ValueError):
    """A dataset file exists but cannot be read or has the wrong content."""


class DownloadError(OSError):
    """A download failed; nothing partial was left behind."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ChecksumError(DownloadError):
    """A downloaded file does not match its published checksum (and was removed)."""


# ------------------------------------------------------------------ containers
@dataclass(frozen=True, eq=False)
class RawDataset:
    """One split of a dataset as stored: uint8 images and integer labels.

    Attributes:
        name: canonical dataset name (one of :data:`DATASETS`).
        split: ``"train"`` or ``"test"``.
        images: ``(N, H, W)`` or ``(N, H, W, 3)`` uint8 in ``[0, 255]`` (read-only).
        labels: ``(N,)`` int64 in ``[0, n_classes)`` (read-only).
        class_names: one name per class, in label order.
        n_classes: number of classes.
        source: which data were used, for figure captions, e.g.
            ``"FER2013 subset (stand-in for TFD): fer2013_subset.npz"``.
        display_name: short name for figure titles, e.g. ``"CIFAR-10"``.
        is_subset: ``True`` when the split holds fewer examples than the original.
        note: caveats worth reporting next to a result.
        path: the file (or, for MNIST IDX, the folder) that was read.
    """

    name: str
    split: str
    images: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    class_names: tuple[str, ...] = field(repr=False)
    n_classes: int
    source: str
    display_name: str
    is_subset: bool
    note: str
    path: Path

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass(frozen=True, eq=False)
class PreparedDataset:
    """Projected, standardised inputs ready for :class:`l2o.problems.MLPProblem`.

    Attributes:
        name: canonical dataset name.
        split: ``"train"`` or ``"test"``.
        x: inputs ``(M, dim)``; each column has mean 0 and variance 1 over the
            *training* split (so only approximately on the test split).
        y: labels ``(M,)``, ``torch.long``.
        n_classes: number of classes ``c``.
        class_names: one name per class.
        dim: projected dimension ``d``.
        n_raw: pixel count ``D_raw`` before projection (784, 2304 or 3072).
        projection_seed: seed of the Gaussian projection matrix.
        source, display_name, is_subset, note: as in :class:`RawDataset`.
    """

    name: str
    split: str
    x: torch.Tensor = field(repr=False)
    y: torch.Tensor = field(repr=False)
    n_classes: int
    class_names: tuple[str, ...] = field(repr=False)
    dim: int
    n_raw: int
    projection_seed: int
    source: str
    display_name: str
    is_subset: bool
    note: str

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def describe(self) -> str:
        """One line of provenance for a figure caption or a results file."""
        return (
            f"{self.display_name} {self.split}, {len(self)} examples: "
            f"{self.n_raw} pixels in [0, 1] -> {self.dim}-d Gaussian random projection "
            f"(seed {self.projection_seed}), standardised with training-set statistics; "
            f"source: {self.source}"
        )


@dataclass(frozen=True)
class _Source:
    """A located dataset file.  ``signature`` changes when the files change."""

    name: str
    kind: str  # "npz", "idx" or "cifar_tar"
    path: Path
    signature: tuple
    complete_hint: bool  # the file is meant to hold the complete dataset
    label: str  # how to name the file in ``source``


# -------------------------------------------------------------- name handling
def _canonical(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a string, got {type(name).__name__}")
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        valid = ", ".join(repr(n) for n in DATASETS + tuple(_ALIASES))
        raise ValueError(f"Unknown dataset {name!r}; valid names are {valid}")
    return key


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"Invalid split {split!r}; valid splits are 'train', 'test'")
    return split


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data folder: ``data_dir``, else ``$L2O_DATA_DIR``, else ``~/.cache/l2o``."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return Path(env).expanduser()
    return DEFAULT_DATA_DIR.expanduser()


def _data_dir_origin(data_dir) -> str:
    if data_dir is not None:
        return "the data_dir argument"
    if os.environ.get(ENV_VAR, "").strip():
        return f"${ENV_VAR}"
    return f"the default (${ENV_VAR} is not set)"


# ------------------------------------------------------------------- locating
def _signature(paths: Iterable[Path]) -> tuple:
    out = []
    for p in paths:
        st = p.stat()
        out.append((str(p.resolve()), st.st_mtime_ns, st.st_size))
    return tuple(out)


def _mnist_raw_paths(raw: Path) -> dict | None:
    """The four IDX files (``.gz`` or uncompressed) in ``raw``, or None if any is missing."""
    found = {}
    for key, stem in MNIST_RAW_FILES.items():
        for candidate in (raw / f"{stem}.gz", raw / stem):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            return None
    return found


def _locate(name: str, data_dir=None) -> _Source:
    """Find the first available source of ``name`` (see the module docstring)."""
    root = resolve_data_dir(data_dir)
    raw = root / "raw"

    def npz(fname, complete, label=None):
        p = root / fname
        if p.is_file():
            return _Source(name, "npz", p, _signature([p]), complete, label or fname)
        return None

    candidates = []
    if name == "mnist":
        candidates.append(lambda: npz("mnist.npz", True))

        def idx():
            paths = _mnist_raw_paths(raw)
            if paths is None:
                return None
            return _Source(name, "idx", raw, _signature(paths.values()), True,
                           "raw IDX files in " + str(raw))

        candidates.append(idx)
    elif name in ("cifar10", "cifar100"):
        archive = raw / CIFAR_ARCHIVES[name]
        candidates.append(lambda: npz(f"{name}.npz", True))
        candidates.append(
            lambda: _Source(name, "cifar_tar", archive, _signature([archive]), True,
                            archive.name) if archive.is_file() else None
        )
        candidates.append(lambda: npz(f"{name}_subset.npz", False))
    else:  # faces
        candidates.append(lambda: npz("tfd.npz", True))
        candidates.append(lambda: npz("fer2013_subset.npz", False))
    for make in candidates:
        src = make()
        if src is not None:
            logger.debug("dataset %s: using %s", name, src.path)
            return src
    raise DatasetNotFoundError(_not_found_message(name, root, data_dir))


def _not_found_message(name: str, root: Path, data_dir) -> str:
    raw = root / "raw"
    where = f"{root} (chosen by {_data_dir_origin(data_dir)})"
    if name == "faces":
        return (
            f"No face dataset found. Looked in {where} for:\n"
            f"  - {root / 'tfd.npz'}: the Toronto Face Database (TFD). TFD is "
            "licence-restricted and cannot be downloaded by this package; obtain it "
            "from its authors and save it as tfd.npz with keys x_train (N,48,48) uint8, "
            "y_train (N,) integers 0..6, optionally x_test, y_test, class_names;\n"
            f"  - {root / 'fer2013_subset.npz'}: the FER2013 stand-in for TFD prepared "
            "for this project (see shared/data/MANIFEST.md); copy it there or set "
            f"${ENV_VAR} to the folder that holds it."
        )
    get = (
        f"To get it, run `python -m l2o.data download {name} --data-dir {root}` "
        f"(or call l2o.data.download({name!r}, data_dir=...)), or set ${ENV_VAR} to a "
        "folder that holds one of these files."
    )
    if name == "mnist":
        idx = ", ".join(f"{stem}.gz" for stem in MNIST_RAW_FILES.values())
        return (
            f"MNIST not found. Looked in {where} and {raw} for:\n"
            f"  - {root / 'mnist.npz'} (keys x_train, y_train, x_test, y_test), or\n"
            f"  - the original IDX files in {raw}: {idx} (gzipped or not).\n" + get
        )
    title = DISPLAY_NAMES[name]
    return (
        f"{title} not found. Looked in {where} and {raw} for:\n"
        f"  - {root / (name + '.npz')} (complete; keys x_train, y_train, x_test, y_test),\n"
        f"  - {raw / CIFAR_ARCHIVES[name]} (the original python archive), or\n"
        f"  - {root / (name + '_subset.npz')} (the class-balanced subset in this "
        "project's shared data folder).\n" + get
    )


# -------------------------------------------------------------------- readers
def _read_npz(src: _Source, split: str):
    path = src.path
    x_key, y_key = f"x_{split}", f"y_{split}"
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            missing = [k for k in (x_key, y_key) if k not in keys]
            if missing:
                if split == "test" and "x_train" in keys and "y_train" in keys:
                    raise DatasetFormatError(
                        f"{path} has no test split (keys {missing} are absent); only "
                        "split='train' is available from this file"
                    )
                raise DatasetFormatError(
                    f"{path} lacks the key(s) {missing}; expected x_train, y_train, "
                    f"x_test, y_test (found {sorted(keys)})"
                )
            images = z[x_key]
            labels = z[y_key]
            names = None
            for k in ("class_names", "fine_label_names", "label_names"):
                if k in keys:
                    names = tuple(str(s) for s in z[k].tolist())
                    break
    except DatasetFormatError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError,
            TypeError, AttributeError) as exc:
        raise DatasetFormatError(
            f"{path} is not a readable .npz archive ({type(exc).__name__}: {exc}); "
            "replace it with a good copy"
        ) from exc
    return images, labels, names


def _read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file (unsigned-byte data), optionally gzipped."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetFormatError(f"{path} cannot be read ({exc}); download it again") from exc
    # Header: two zero bytes, a type code (0x08 = unsigned byte), the number of dims,
    # then one big-endian uint32 per dimension.
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DatasetFormatError(f"{path} is not an unsigned-byte IDX file (bad header)")
    ndim = data[3]
    head = 4 + 4 * ndim
    if len(data) < head:
        raise DatasetFormatError(f"{path} is truncated (incomplete IDX header)")
    dims = struct.unpack(">" + "I" * ndim, data[4:head])
    expected = int(np.prod(dims, dtype=np.int64))
    if len(data) - head != expected:
        raise DatasetFormatError(
            f"{path} holds {len(data) - head} data bytes, its header announces {expected}; "
            "the file is truncated or corrupt: download it again"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=head).reshape(dims)


def _array_reconstructor():
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class _ArrayUnpickler(pickle.Unpickler):
    """Admits only what a pickled dict of numpy arrays, lists and strings needs."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _array_reconstructor,
        ("numpy._core.multiarray", "_reconstruct"): _array_reconstructor,
        ("numpy", "ndarray"): lambda: np.ndarray,
        ("numpy", "dtype"): lambda: np.dtype,
        ("_codecs", "encode"): lambda: codecs.encode,  # bytes pickled by Python 3
    }

    def find_class(self, module, name):
        get = self._ALLOWED.get((module, name))
        if get is None:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return get()


def _unpickle(fileobj, where: str) -> dict:
    try:
        obj = _ArrayUnpickler(fileobj, encoding="bytes").load()
    except Exception as exc:  # any parse failure means a bad archive
        raise DatasetFormatError(f"cannot unpickle {where}: {exc}") from exc
    if not isinstance(obj, dict):
        raise DatasetFormatError(f"{where} does not hold a dict")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _read_cifar_tar(src: _Source, split: str):
    """Read one split from ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``."""
    path = src.path
    if src.name == "cifar10":
        batches = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        meta, label_key, names_key = "batches.meta", "labels", "label_names"
    else:
        batches = ["train" if split == "train" else "test"]
        meta, label_key, names_key = "meta", "fine_labels", "fine_label_names"
    wanted = set(batches) | {meta}
    found: dict[str, dict] = {}
    try:
        # Members are read in memory through extractfile; nothing is extracted to disk.
        with tarfile.open(path, mode="r:gz") as tar:
            for member in tar:
                base = posixpath.basename(member.name)
                if member.isfile() and base in wanted and base not in found:
                    f = tar.extractfile(member)
                    found[base] = _unpickle(f, f"{path}:{member.name}")
    except DatasetFormatError:
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DatasetFormatError(
            f"{path} is not a readable tar.gz archive ({exc}); it is truncated or corrupt: "
            f"delete it and download it again"
        ) from exc
    missing = [b for b in batches if b not in found]
    if missing:
        raise DatasetFormatError(f"{path} lacks the member(s) {missing}")
    images, labels = [], []
    for b in batches:
        d = found[b]
        if "data" not in d or label_key not in d:
            raise DatasetFormatError(f"{path}:{b} lacks the keys 'data' and {label_key!r}")
        data = np.asarray(d["data"])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise DatasetFormatError(
                f"{path}:{b}: 'data' must be (n, 3072) uint8, got {data.shape} {data.dtype}"
            )
        # Each row is 1024 red, then 1024 green, then 1024 blue values, row-major 32x32.
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(d[label_key], dtype=np.int64))
    names = None
    if meta in found and names_key in found[meta]:
        names = tuple(
            s.decode() if isinstance(s, bytes) else str(s) for s in found[meta][names_key]
        )
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels), names


def _validate(name: str, path: Path, images, labels, names):
    shape = IMAGE_SHAPES[name]
    c = N_CLASSES[name]
    if images.dtype != np.uint8 or images.shape[1:] != shape:
        want = "(N, " + ", ".join(map(str, shape)) + ") uint8"
        raise DatasetFormatError(
            f"{path}: images must be {want}, got {images.shape} {images.dtype}"
        )
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DatasetFormatError(
            f"{path}: labels must be ({images.shape[0]},), got {labels.shape}"
        )
    if labels.dtype.kind not in "iu":
        raise DatasetFormatError(f"{path}: labels must be integers, got {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= c):
        raise DatasetFormatError(
            f"{path}: labels must lie in 0..{c - 1}, found {labels.min()}..{labels.max()}"
        )
    if names is not None and len(names) != c:
        raise DatasetFormatError(f"{path}: {len(names)} class names, expected {c}")
    return labels.astype(np.int64)


@lru_cache(maxsize=2)
def _load_cached(src: _Source, split: str) -> RawDataset:
    name = src.name
    if src.kind == "npz":
        images, labels, names = _read_npz(src, split)
    elif src.kind == "idx":
        paths = _mnist_raw_paths(src.path)
        images = _read_idx(paths[(split, "images")])
        labels = _read_idx(paths[(split, "labels")])
        names = None
    else:
        images, labels, names = _read_cifar_tar(src, split)
    labels = _validate(name, src.path, images, labels, names)
    images = np.ascontiguousarray(images)
    images.flags.writeable = False  # shared through the cache
    labels.flags.writeable = False
    class_names = names or _DEFAULT_CLASSES[name]
    n = images.shape[0]

    if name == "faces":
        if src.complete_hint:
            source = f"TFD (Toronto Face Database, user-supplied): {src.label}"
            display, is_subset, note = "TFD", False, "user-supplied TFD copy"
        else:
            source = f"FER2013 subset (stand-in for TFD): {src.label}"
            display, is_subset = "FER2013 (TFD stand-in)", True
            note = (
                "TFD is licence-restricted; FER2013 (48x48 grey faces, same 7 "
                "expressions, JPEG-decoded, class-balanced subset of ~3,300 training "
                "images to match TFD's size) stands in for it"
            )
    else:
        display = DISPLAY_NAMES[name]
        full = FULL_SIZES[name][SPLITS.index(split)]
        is_subset = n < full
        if is_subset:
            counts = np.bincount(labels, minlength=N_CLASSES[name])
            lo, hi = counts.min(), counts.max()
            per = f"{lo}" if lo == hi else f"{lo}-{hi}"
            source = f"{display} subset, {per} {split} images per class: {src.label}"
            note = f"{n} of the {full} {split} images"
            if not src.complete_hint:
                note += " (class-balanced subset; see MANIFEST.md for the row order)"
        else:
            source = f"{display}, complete: {src.label}"
            note = ""
    return RawDataset(
        name=name, split=split, images=images, labels=labels,
        class_names=tuple(class_names), n_classes=N_CLASSES[name], source=source,
        display_name=display, is_subset=bool(is_subset), note=note, path=src.path,
    )


def load(name: str, split: str = "train", data_dir: str | os.PathLike | None = None) -> RawDataset:
    """Read one split of a dataset as uint8 images and integer labels.

    Args:
        name: ``"mnist"``, ``"cifar10"``, ``"cifar100"`` or ``"faces"`` (alias ``"tfd"``).
        split: ``"train"`` or ``"test"``.
        data_dir: data folder; default ``$L2O_DATA_DIR``, else ``~/.cache/l2o``.

    Returns:
        A :class:`RawDataset`; its ``source`` names the file used.

    Raises:
        ValueError: unknown name or split.
        DatasetNotFoundError: no source exists; the message lists the files and how
            to get them.
        DatasetFormatError: a file exists but is corrupt or has the wrong content.
    """
    key = _canonical(name)
    _check_split(split)
    return _load_cached(_locate(key, data_dir), split)


# ---------------------------------------------------------------- preparation
def projection_matrix(n_raw: int, dim: int, seed: int = 0) -> np.ndarray:
    """The Gaussian random projection ``P (n_raw, dim)``, entries ``N(0, 1/dim)``.

    Drawn as ``Generator(PCG64(seed)).standard_normal((n_raw, dim)) / sqrt(dim)``.  The
    scale makes ``P`` roughly norm-preserving; it has no effect on :func:`prepare`'s
    output, which is standardised afterwards.
    """
    rng = np.random.Generator(np.random.PCG64(seed))
    return rng.standard_normal((n_raw, dim)) / np.sqrt(dim)


def _project(images: np.ndarray, P: np.ndarray) -> np.ndarray:
    """``(images / 255).reshape(N, -1) @ P`` in float64, in chunks to bound memory."""
    flat = images.reshape(images.shape[0], -1)
    out = np.empty((flat.shape[0], P.shape[1]), dtype=np.float64)
    for s in range(0, flat.shape[0], _PROJECTION_CHUNK):
        block = flat[s : s + _PROJECTION_CHUNK].astype(np.float64) / 255.0
        out[s : s + _PROJECTION_CHUNK] = block @ P
    return out


@lru_cache(maxsize=16)
def _prepared_arrays(src: _Source, split: str, dim: int, seed: int):
    """Projected, standardised float64 inputs (read-only) and the split's metadata."""
    train = _load_cached(src, "train")
    P = projection_matrix(int(np.prod(train.images.shape[1:])), dim, seed)
    z_train = _project(train.images, P)
    mean = z_train.mean(axis=0)
    std = z_train.std(axis=0)
    if np.any(std == 0):
        raise DatasetFormatError(
            f"{src.path}: a projected dimension is constant over the training set"
        )
    if split == "train":
        raw, z = train, z_train
    else:
        raw = _load_cached(src, "test")
        z = _project(raw.images, P)
    x = (z - mean) / std  # training statistics for both splits
    x.flags.writeable = False
    # Keep the metadata but not the images, which the cache should not pin in memory.
    meta = replace(raw, images=np.empty((0, *raw.images.shape[1:]), dtype=np.uint8))
    return x, meta


def prepare(
    name: str,
    dim: int,
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    projection_seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> PreparedDataset:
    """The paper's inputs: random projection to ``dim`` dimensions, then standardisation.

    Steps (book/design.md, D10), all in float64 before the final cast to ``dtype``:

    1. pixels ``u`` in ``0..255`` become ``u / 255`` and each image is flattened
       (row-major; RGB images interleave the channels pixel by pixel), giving
       ``X (M, D_raw)``;
    2. ``Z = X P`` with ``P = projection_matrix(D_raw, dim, projection_seed)``;
    3. ``x = (Z - mu) / sigma`` with the per-column mean ``mu`` and (population)
       standard deviation ``sigma`` of the *training* split's ``Z``.  The test split
       uses the same ``P``, ``mu`` and ``sigma``.

    Row order is the stored order (no shuffling): minibatches are drawn at random by
    the objective.  Results are cached in memory per (file, split, dim, seed); each
    call returns fresh tensors, so modifying them does not corrupt the cache.

    Args:
        name: dataset name (see :func:`load`).
        dim: projected dimension ``d`` (48 in the paper, 100 for the enlarged net).
        split: ``"train"`` or ``"test"``.
        data_dir: data folder (see :func:`resolve_data_dir`).
        projection_seed: seed of the projection matrix.
        dtype: floating dtype of :attr:`PreparedDataset.x`.

    Returns:
        A :class:`PreparedDataset` with ``x (M, dim)`` and ``y (M,)``.

    Raises:
        ValueError: unknown name or split, ``dim < 1``, non-floating ``dtype``.
        DatasetNotFoundError, DatasetFormatError: as in :func:`load`.
    """
    key = _canonical(name)
    _check_split(split)
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"Invalid dim: {dim!r} (must be an integer >= 1)")
    if isinstance(projection_seed, bool) or not isinstance(projection_seed, (int, np.integer)) \
            or projection_seed < 0:
        raise ValueError(f"Invalid projection_seed: {projection_seed!r} (must be an integer >= 0)")
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"Invalid dtype: {dtype!r} (must be a floating torch dtype)")
    src = _locate(key, data_dir)
    x64, raw = _prepared_arrays(src, split, int(dim), int(projection_seed))
    x = torch.from_numpy(np.array(x64, dtype=np.float64)).to(dtype)  # private copy
    y = torch.from_numpy(np.array(raw.labels, dtype=np.int64))
    return PreparedDataset(
        name=key, split=split, x=x, y=y, n_classes=raw.n_classes,
        class_names=raw.class_names, dim=int(dim), n_raw=int(np.prod(raw.images.shape[1:])),
        projection_seed=int(projection_seed), source=raw.source,
        display_name=raw.display_name, is_subset=raw.is_subset, note=raw.note,
    )


def make_problem(
    name: str,
    n_in: int,
    n_hidden: int,
    batch_size: int = 64,
    data_dir: str | os.PathLike | None = None,
    dtype: torch.dtype = torch.float32,
    **kw,
):
    """The objective of the paper: a two-layer net on a prepared dataset.

    Args:
        name: dataset name (see :func:`load`).
        n_in: input units, i.e. the projected dimension ``d``.
        n_hidden: hidden units ``h``.
        batch_size: minibatch size ``B``.
        data_dir: data folder.
        dtype: precision of the inputs and hence of the problem.
        **kw: ``split`` and ``projection_seed`` go to :func:`prepare`; anything else
            (``init_std``, ``chunk``) to :class:`l2o.problems.MLPProblem`.

    Returns:
        ``MLPProblem`` named after the dataset's ``display_name`` (e.g. ``"MNIST"`` or
        ``"FER2013 (TFD stand-in)"``).  Use ``prepare(...).describe()`` for the
        complete provenance line.
    """
    from l2o.problems import MLPProblem

    prep_kw = {k: kw.pop(k) for k in ("split", "projection_seed") if k in kw}
    data = prepare(name, n_in, data_dir=data_dir, dtype=dtype, **prep_kw)
    return MLPProblem(
        data.x, data.y, n_hidden, n_classes=data.n_classes, batch_size=batch_size,
        name=data.display_name, **kw,
    )


def clear_cache() -> None:
    """Forget every cached dataset (to free memory, or in tests)."""
    _prepared_arrays.cache_clear()
    _load_cached.cache_clear()


# ------------------------------------------------------------------- download
def _hash_name(digest: str) -> str:
    if len(digest) == 32:
        return "md5"
    if len(digest) == 64:
        return "sha256"
    raise ValueError(f"Invalid checksum {digest!r}: expected 32 (MD5) or 64 (SHA-256) hex digits")


def _file_digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo, usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _fetch(url: str, target: Path, digest: str, timeout: float, progress: bool) -> None:
    """Download ``url`` to ``target`` via ``target.part``; verify; rename atomically."""
    algo = _hash_name(digest)
    part = target.with_name(target.name + ".part")
    h = hashlib.new(algo, usedforsecurity=False)
    received, expected = 0, None
    try:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(part, "wb") as out:
                length = resp.headers.get("Content-Length")
                expected = int(length) if length is not None and length.isdigit() else None
                bar = None
                if progress:
                    from tqdm import tqdm

                    bar = tqdm(total=expected, unit="B", unit_scale=True, desc=target.name)
                try:
                    while True:
                        block = resp.read(1 << 16)
                        if not block:
                            break
                        out.write(block)
                        h.update(block)
                        received += len(block)
                        if bar is not None:
                            bar.update(len(block))
                finally:
                    if bar is not None:
                        bar.close()
        except http.client.IncompleteRead as exc:
            received += len(exc.partial)
            raise DownloadError(
                f"Download of {url} was cut short after {received} bytes "
                f"(expected {expected}). The partial file was removed; please retry."
            ) from exc
        except (urllib.error.URLError, http.client.HTTPException, socket.timeout,
                ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(exc, urllib.error.HTTPError):
                reason = f"HTTP {exc.code} {exc.reason}"
            raise DownloadError(
                f"Could not download {url}: {reason}. Nothing was saved; check the "
                "connection or the base URL, then retry."
            ) from exc
        if expected is not None and received != expected:
            raise DownloadError(
                f"Download of {url} is truncated: received {received} of {expected} bytes. "
                "The partial file was removed; please retry."
            )
        got = h.hexdigest()
        if got != digest.lower():
            raise ChecksumError(
                f"Checksum mismatch for {target.name} from {url}: expected {algo} {digest}, "
                f"got {got} ({received} bytes). The file is truncated or corrupt and was "
                "removed; please retry the download."
            )
        os.replace(part, target)
    finally:
        _remove(part)  # no-op after a successful rename


def download(
    name: str,
    data_dir: str | os.PathLike | None = None,
    base_url: str | None = None,
    progress: bool = False,
    checksums: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> list[Path]:
    """Fetch the canonical files of MNIST, CIFAR-10 or CIFAR-100 into ``<data_dir>/raw/``.

    Each file is written to ``<file>.part`` and renamed only after its size matches
    the announced ``Content-Length`` and its checksum matches the published one
    (:data:`CHECKSUMS`).  A failed, truncated or corrupt transfer is deleted and
    reported; nothing partial is left.  Files already present and verified are kept.

    Args:
        name: ``"mnist"``, ``"cifar10"`` or ``"cifar100"`` (TFD cannot be downloaded).
        data_dir: data folder (see :func:`resolve_data_dir`).
        base_url: host folder holding the files; default: :data:`DEFAULT_BASE_URLS`,
            tried in order.
        progress: show a tqdm progress bar per file.
        checksums: ``{file name: hex digest}`` overriding the published values
            (MD5 or SHA-256, told apart by length); meant for tests and mirrors.
        timeout: socket timeout in seconds.

    Returns:
        The paths of the verified files.

    Raises:
        ValueError: unknown or non-downloadable dataset, unknown file in ``checksums``.
        DownloadError: a host could not be reached or a transfer was cut short.
        ChecksumError: a file did not match its checksum.
    """
    key = _canonical(name)
    if key == "faces":
        raise ValueError(
            "TFD is licence-restricted and cannot be downloaded; supply tfd.npz yourself "
            "or use the FER2013 stand-in fer2013_subset.npz (see the l2o.data docstring)"
        )
    expected = dict(CHECKSUMS[key])
    for fname, digest in (checksums or {}).items():
        if fname not in expected:
            raise ValueError(f"Unknown file {fname!r} for {key}; files are {sorted(expected)}")
        _hash_name(digest)
        expected[fname] = digest.lower()
    bases = (base_url,) if base_url else DEFAULT_BASE_URLS[key]
    raw = resolve_data_dir(data_dir) / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    paths = []
    for fname, digest in expected.items():
        target = raw / fname
        if target.is_file():
            if _file_digest(target, _hash_name(digest)) == digest:
                logger.info("%s already present and verified", target)
                paths.append(target)
                continue
            logger.warning("%s fails its checksum; removing it and downloading again", target)
            _remove(target)
        errors: list[DownloadError] = []
        for k, base in enumerate(bases):
            url = base.rstrip("/") + "/" + fname
            logger.info("downloading %s", url)
            try:
                _fetch(url, target, digest, timeout, progress)
            except DownloadError as exc:
                errors.append(exc)
                if k + 1 < len(bases):  # the raised error reports every failure once
                    logger.info("failed (%s); trying the next host", type(exc).__name__)
                continue
            break
        else:
            if len(errors) == 1:
                raise errors[0]
            all_checksum = all(isinstance(e, ChecksumError) for e in errors)
            cls = ChecksumError if all_checksum else DownloadError
            raise cls(f"Every host failed for {fname}:\n" + "\n".join(f"  - {e}" for e in errors))
        paths.append(target)
    # A new file changes the source signature, so caches pick it up automatically.
    return paths


# ------------------------------------------------------------------------ CLI
def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m l2o.data {download,info} ...``; returns the exit code.

    ``info`` reads every dataset it lists (exit code 1 if one is corrupt); a failed
    ``download`` prints its error once (exit code 1).
    """
    from l2o.cli import positive_float

    parser = argparse.ArgumentParser(
        prog="python -m l2o.data", description="Datasets of the l2o reproduction."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_dl = sub.add_parser("download", help="fetch MNIST / CIFAR-10 / CIFAR-100 into DIR/raw")
    p_dl.add_argument("names", nargs="+", choices=["mnist", "cifar10", "cifar100"])
    p_dl.add_argument("--data-dir", default=None, help=f"default: ${ENV_VAR} or ~/.cache/l2o")
    p_dl.add_argument("--base-url", default=None, help="download from this host folder instead")
    p_dl.add_argument("--timeout", type=positive_float, default=60.0,
                      help="socket timeout, seconds")
    p_dl.add_argument("--quiet", action="store_true", help="no progress bars")
    p_info = sub.add_parser("info", help="show which file each dataset would be read from, "
                                         "after reading it (a damaged file is reported)")
    p_info.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    if args.command == "download":
        for n in args.names:
            try:
                paths = download(n, data_dir=args.data_dir, base_url=args.base_url,
                                 progress=not args.quiet, timeout=args.timeout)
            except DownloadError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            for p in paths:
                print(f"{n}: {p}")
        return 0
    root = resolve_data_dir(args.data_dir)
    print(f"data folder: {root}")
    bad = 0
    for n in DATASETS:
        try:
            src = _locate(n, args.data_dir)
        except DatasetNotFoundError:
            print(f"{n:9s} (not found)")
            continue
        try:
            ds = _load_cached(src, "train")  # reads and validates what is listed
        except DatasetFormatError as exc:
            bad += 1
            print(f"{n:9s} {src.path} (corrupt: {exc})")
            continue
        print(f"{n:9s} {src.path} ({len(ds)} training examples)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
