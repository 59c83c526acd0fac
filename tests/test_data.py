"""Datasets: loading, sources, random projection and standardisation (paper section 4)."""

import gzip
import io
import os
import pickle
import struct
import tarfile

import numpy as np
import pytest
import torch

from l2o import data
from l2o.data import DatasetFormatError, DatasetNotFoundError
from l2o.problems import MLPProblem

# name, train images shape, test size, classes, is_subset (for the files in shared/data)
EXPECTED = [
    ("mnist", (60000, 28, 28), 10000, 10, False),
    ("cifar10", (20000, 32, 32, 3), 2000, 10, True),
    ("cifar100", (10000, 32, 32, 3), 2000, 100, True),
    ("faces", (3303, 48, 48), 700, 7, True),
]


# ------------------------------------------------------- writers of the canonical formats
def write_idx(path, arr):
    """An unsigned-byte IDX file (gzipped when the name ends in .gz)."""
    arr = np.asarray(arr, dtype=np.uint8)
    blob = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    blob += arr.tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(blob)


def cifar_rows(images):
    """(n, 32, 32, 3) -> (n, 3072) rows of 1024 R, 1024 G, 1024 B values."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), 3072))


def _add(tar, name, obj):
    blob = obj if isinstance(obj, bytes) else pickle.dumps(obj, protocol=2)
    info = tarfile.TarInfo(name)
    info.size = len(blob)
    tar.addfile(info, io.BytesIO(blob))


def write_cifar10_tar(path, x_train, y_train, x_test, y_test, names):
    folder = "cifar-10-batches-py/"
    with tarfile.open(path, "w:gz") as tar:
        _add(tar, folder + "batches.meta", {b"label_names": [n.encode() for n in names]})
        for i, (xb, yb) in enumerate(zip(np.array_split(x_train, 5), np.array_split(y_train, 5))):
            _add(tar, folder + f"data_batch_{i + 1}",
                 {b"batch_label": b"fake", b"labels": [int(v) for v in yb],
                  b"data": cifar_rows(xb)})
        _add(tar, folder + "test_batch",
             {b"labels": [int(v) for v in y_test], b"data": cifar_rows(x_test)})


def write_cifar100_tar(path, x_train, y_train, x_test, y_test, names):
    folder = "cifar-100-python/"
    with tarfile.open(path, "w:gz") as tar:
        _add(tar, folder + "meta", {b"fine_label_names": [n.encode() for n in names],
                                    b"coarse_label_names": [b"c%d" % i for i in range(20)]})
        for split, xs, ys in (("train", x_train, y_train), ("test", x_test, y_test)):
            _add(tar, folder + split, {b"fine_labels": [int(v) for v in ys],
                                       b"coarse_labels": [int(v) // 5 for v in ys],
                                       b"data": cifar_rows(xs)})


def fake_images(rng, n, shape):
    return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)


@pytest.fixture(autouse=True)
def _fresh_cache():
    data.clear_cache()
    yield
    data.clear_cache()


# --------------------------------------------------------------- the prepared files
@pytest.mark.parametrize("name, shape, n_test, n_classes, is_subset", EXPECTED)
def test_shapes_and_classes(data_dir, name, shape, n_test, n_classes, is_subset):
    train = data.load(name, "train", data_dir=data_dir)
    test = data.load(name, "test", data_dir=data_dir)
    assert train.images.shape == shape and train.images.dtype == np.uint8
    assert test.images.shape == (n_test, *shape[1:])
    assert train.labels.shape == (shape[0],) and train.labels.dtype == np.int64
    assert train.n_classes == n_classes == len(train.class_names)
    # every class is present in both splits
    assert set(np.unique(train.labels)) == set(range(n_classes))
    assert set(np.unique(test.labels)) == set(range(n_classes))
    assert train.is_subset is is_subset and test.is_subset is is_subset
    assert train.path.parent == data_dir
    with pytest.raises(ValueError):  # cached arrays are protected
        train.images[0, 0, 0] = 1


def test_mnist_class_counts_match_manifest(data_dir):
    train = data.load("mnist", data_dir=data_dir)
    counts = np.bincount(train.labels, minlength=10)
    assert counts.tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_default_class_names_match_files(data_dir):
    assert data.load("cifar10", data_dir=data_dir).class_names == data.CIFAR10_CLASSES
    assert data.load("cifar100", data_dir=data_dir).class_names == data.CIFAR100_CLASSES


@pytest.mark.parametrize("name", [e[0] for e in EXPECTED])
def test_standardised_with_training_statistics(data_dir, name):
    p = data.prepare(name, 48, data_dir=data_dir, dtype=torch.float64)
    raw = data.load(name, data_dir=data_dir)
    assert p.x.shape == (len(raw), 48) and p.x.dtype == torch.float64
    torch.testing.assert_close(p.x.mean(0), torch.zeros(48, dtype=torch.float64), rtol=0, atol=1e-5)
    torch.testing.assert_close(p.x.std(0, unbiased=False), torch.ones(48, dtype=torch.float64),
                               rtol=0, atol=1e-5)
    assert p.y.dtype == torch.long and np.array_equal(p.y.numpy(), raw.labels)
    assert p.n_raw == int(np.prod(raw.images.shape[1:])) and p.n_classes == raw.n_classes


def test_matches_a_literal_transcription_of_the_recipe(data_dir):
    # Written out independently of l2o.data; without the 1/sqrt(dim) factor, which
    # standardisation must make irrelevant.
    dim, seed = 16, 3
    tr = np.load(data_dir / "fer2013_subset.npz")
    X = tr["x_train"].reshape(len(tr["x_train"]), -1) / 255.0
    Xt = tr["x_test"].reshape(len(tr["x_test"]), -1) / 255.0
    P = np.random.default_rng(seed).standard_normal((X.shape[1], dim))
    Z, Zt = X @ P, Xt @ P
    mu, sd = Z.mean(0), Z.std(0)
    for split, ref in (("train", (Z - mu) / sd), ("test", (Zt - mu) / sd)):
        got = data.prepare("faces", dim, split, data_dir=data_dir, projection_seed=seed,
                           dtype=torch.float64)
        np.testing.assert_allclose(got.x.numpy(), ref, rtol=0, atol=1e-9)


def test_deterministic_and_seed_dependent(data_dir):
    a = data.prepare("faces", 20, data_dir=data_dir, projection_seed=7)
    data.clear_cache()  # recompute from scratch, not from the cache
    b = data.prepare("faces", 20, data_dir=data_dir, projection_seed=7)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    c = data.prepare("faces", 20, data_dir=data_dir, projection_seed=8)
    assert not torch.allclose(a.x, c.x, atol=1e-2)
    assert c.projection_seed == 8 and "seed 8" in c.describe()


def test_returned_tensors_are_private_copies(data_dir):
    a = data.prepare("faces", 8, data_dir=data_dir)
    before = a.x.clone()
    a.x.zero_()
    b = data.prepare("faces", 8, data_dir=data_dir)  # served from the cache
    assert torch.equal(b.x, before)


def test_test_split_uses_training_statistics(data_dir):
    test = data.prepare("mnist", 48, "test", data_dir=data_dir, dtype=torch.float64)
    assert test.x.shape == (10000, 48) and test.split == "test"
    # Standardised with the training mean/std, so not exactly centred and scaled.
    assert test.x.mean(0).abs().max() > 1e-3
    assert (test.x.std(0) - 1).abs().max() > 1e-3
    assert test.x.mean(0).abs().max() < 0.5  # but the same distribution, roughly


def test_float32_is_the_float64_result_rounded(data_dir):
    x32 = data.prepare("faces", 12, data_dir=data_dir).x
    x64 = data.prepare("faces", 12, data_dir=data_dir, dtype=torch.float64).x
    assert x32.dtype == torch.float32
    assert torch.equal(x32, x64.float())


def test_describe_names_everything(data_dir):
    line = data.prepare("cifar10", 48, data_dir=data_dir).describe()
    for part in ("CIFAR-10", "train", "20000 examples", "3072", "48-d", "seed 0",
                 "cifar10_subset.npz", "subset"):
        assert part in line


def test_make_problem(data_dir):
    prob = data.make_problem("mnist", 48, 48, batch_size=10, data_dir=data_dir,
                             dtype=torch.float64, init_std=0.1, projection_seed=2)
    assert isinstance(prob, MLPProblem)
    assert prob.architecture == "48-48-10" and prob.dim == 2842
    assert prob.batch_size == 10 and prob.init_std == 0.1 and prob.dtype == torch.float64
    ref = data.prepare("mnist", 48, data_dir=data_dir, projection_seed=2, dtype=torch.float64)
    assert torch.equal(prob.x, ref.x) and prob.name == "MNIST"
    faces = data.make_problem("tfd", 48, 48, data_dir=data_dir)
    assert faces.architecture == "48-48-7" and "stand-in" in faces.name


# ---------------------------------------------------------------------- faces source
def test_faces_source_says_which_dataset(data_dir, tmp_path):
    os.symlink(data_dir / "fer2013_subset.npz", tmp_path / "fer2013_subset.npz")
    fer = data.load("tfd", data_dir=tmp_path)
    assert "FER2013" in fer.source and "stand-in for TFD" in fer.source
    assert fer.is_subset and fer.name == "faces"

    rng = np.random.default_rng(0)
    x, y = fake_images(rng, 21, (48, 48)), np.arange(21) % 7
    np.savez(tmp_path / "tfd.npz", x_train=x, y_train=y)
    tfd = data.load("faces", data_dir=tmp_path)  # tfd.npz wins over the stand-in
    assert tfd.source.startswith("TFD") and "FER2013" not in tfd.source
    assert np.array_equal(tfd.images, x) and np.array_equal(tfd.labels, y)
    assert tfd.class_names == data.TFD_CLASSES
    prep = data.prepare("tfd", 8, data_dir=tmp_path)
    assert prep.describe().startswith("TFD train, 21 examples")
    with pytest.raises(DatasetFormatError, match="no test split"):
        data.load("tfd", "test", data_dir=tmp_path)


def test_tfd_labels_out_of_range_rejected(tmp_path):
    x = np.zeros((7, 48, 48), np.uint8)
    np.savez(tmp_path / "tfd.npz", x_train=x, y_train=np.arange(1, 8))  # 1..7, not 0..6
    with pytest.raises(DatasetFormatError, match="0..6"):
        data.load("tfd", data_dir=tmp_path)


# ---------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "name, parts",
    [
        ("mnist", ["mnist.npz", "train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
                   "python -m l2o.data download mnist", "raw"]),
        ("cifar10", ["cifar10.npz", "cifar-10-python.tar.gz", "cifar10_subset.npz",
                     "download cifar10"]),
        ("cifar100", ["cifar100.npz", "cifar-100-python.tar.gz", "cifar100_subset.npz",
                      "download cifar100"]),
        ("tfd", ["tfd.npz", "fer2013_subset.npz", "licence", "x_train (N,48,48) uint8"]),
    ],
)
def test_missing_dataset_message(tmp_path, name, parts):
    with pytest.raises(DatasetNotFoundError) as info:
        data.load(name, data_dir=tmp_path)
    assert isinstance(info.value, FileNotFoundError)
    msg = str(info.value)
    assert str(tmp_path) in msg and "data_dir argument" in msg
    for part in parts:
        assert part in msg, part


def test_data_dir_from_environment_then_default(tmp_path, monkeypatch):
    monkeypatch.setenv("L2O_DATA_DIR", str(tmp_path / "env"))
    assert data.resolve_data_dir() == tmp_path / "env"
    assert data.resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    with pytest.raises(DatasetNotFoundError, match=r"\$L2O_DATA_DIR"):
        data.load("mnist")
    monkeypatch.delenv("L2O_DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.resolve_data_dir() == tmp_path / "home" / ".cache" / "l2o"


def test_corrupt_npz_named_in_error(tmp_path):
    path = tmp_path / "mnist.npz"
    path.write_bytes(b"PK\x03\x04 this is not really a zip archive" * 10)
    with pytest.raises(DatasetFormatError, match="mnist.npz") as info:
        data.load("mnist", data_dir=tmp_path)
    assert str(path) in str(info.value)


def test_truncated_npz_rejected(data_dir, tmp_path):
    blob = (data_dir / "fer2013_subset.npz").read_bytes()
    (tmp_path / "fer2013_subset.npz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DatasetFormatError, match="fer2013_subset.npz"):
        data.load("faces", data_dir=tmp_path)


def test_npz_missing_keys_and_wrong_shapes(tmp_path):
    np.savez(tmp_path / "mnist.npz", x_train=np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(DatasetFormatError, match="y_train"):
        data.load("mnist", data_dir=tmp_path)
    data.clear_cache()
    np.savez(tmp_path / "mnist.npz", x_train=np.zeros((3, 27, 28), np.uint8),
             y_train=np.zeros(3, np.uint8), x_test=np.zeros((1, 28, 28), np.uint8),
             y_test=np.zeros(1, np.uint8))
    with pytest.raises(DatasetFormatError, match=r"\(N, 28, 28\) uint8"):
        data.load("mnist", data_dir=tmp_path)
    np.savez(tmp_path / "mnist.npz", x_train=np.zeros((3, 28, 28), np.uint8),
             y_train=np.zeros(4, np.uint8), x_test=np.zeros((1, 28, 28), np.uint8),
             y_test=np.zeros(1, np.uint8))
    with pytest.raises(DatasetFormatError, match="labels must be"):
        data.load("mnist", data_dir=tmp_path)


def test_argument_validation(data_dir):
    with pytest.raises(ValueError, match="'mnist', 'cifar10', 'cifar100', 'faces'"):
        data.prepare("svhn", 48, data_dir=data_dir)
    with pytest.raises(ValueError, match="Unknown dataset"):
        data.load("imagenet", data_dir=data_dir)
    for dim in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="Invalid dim"):
            data.prepare("faces", dim, data_dir=data_dir)
    with pytest.raises(ValueError, match="Invalid split"):
        data.prepare("faces", 8, split="valid", data_dir=data_dir)
    with pytest.raises(ValueError, match="Invalid projection_seed"):
        data.prepare("faces", 8, data_dir=data_dir, projection_seed=-1)
    with pytest.raises(ValueError, match="Invalid dtype"):
        data.prepare("faces", 8, data_dir=data_dir, dtype=torch.int64)


# ------------------------------------------------------------ the canonical raw formats
def test_mnist_idx_files_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    raw = tmp_path / "raw"
    raw.mkdir()
    xs = {"train": fake_images(rng, 30, (28, 28)), "test": fake_images(rng, 12, (28, 28))}
    ys = {"train": rng.integers(0, 10, 30), "test": rng.integers(0, 10, 12)}
    write_idx(raw / "train-images-idx3-ubyte.gz", xs["train"])
    write_idx(raw / "train-labels-idx1-ubyte.gz", ys["train"])
    write_idx(raw / "t10k-images-idx3-ubyte", xs["test"])  # uncompressed is accepted too
    write_idx(raw / "t10k-labels-idx1-ubyte", ys["test"])
    for split in ("train", "test"):
        ds = data.load("mnist", split, data_dir=tmp_path)
        assert np.array_equal(ds.images, xs[split]) and np.array_equal(ds.labels, ys[split])
        assert "IDX" in ds.source and ds.is_subset  # 30 < 60000 images
    p = data.prepare("mnist", 5, data_dir=tmp_path)
    assert p.x.shape == (30, 5) and p.n_raw == 784


def test_truncated_idx_rejected(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    write_idx(raw / "train-images-idx3-ubyte", np.zeros((4, 28, 28)))
    write_idx(raw / "train-labels-idx1-ubyte.gz", np.zeros(4))
    write_idx(raw / "t10k-images-idx3-ubyte.gz", np.zeros((1, 28, 28)))
    write_idx(raw / "t10k-labels-idx1-ubyte.gz", np.zeros(1))
    path = raw / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DatasetFormatError, match="truncated"):
        data.load("mnist", data_dir=tmp_path)


def test_cifar10_archive_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    x, y = fake_images(rng, 15, (32, 32, 3)), rng.integers(0, 10, 15)
    xt, yt = fake_images(rng, 4, (32, 32, 3)), rng.integers(0, 10, 4)
    (tmp_path / "raw").mkdir()
    names = [f"class{i}" for i in range(10)]
    write_cifar10_tar(tmp_path / "raw" / "cifar-10-python.tar.gz", x, y, xt, yt, names)
    train = data.load("cifar10", data_dir=tmp_path)
    assert np.array_equal(train.images, x) and np.array_equal(train.labels, y)
    assert train.class_names == tuple(names)
    assert "cifar-10-python.tar.gz" in train.source
    test = data.load("cifar10", "test", data_dir=tmp_path)
    assert np.array_equal(test.images, xt) and np.array_equal(test.labels, yt)


def test_cifar100_archive_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    x, y = fake_images(rng, 9, (32, 32, 3)), rng.integers(0, 100, 9)
    xt, yt = fake_images(rng, 3, (32, 32, 3)), rng.integers(0, 100, 3)
    (tmp_path / "raw").mkdir()
    write_cifar100_tar(tmp_path / "raw" / "cifar-100-python.tar.gz", x, y, xt, yt,
                       data.CIFAR100_CLASSES)
    for split, xs, ys in (("train", x, y), ("test", xt, yt)):
        ds = data.load("cifar100", split, data_dir=tmp_path)
        assert np.array_equal(ds.images, xs) and np.array_equal(ds.labels, ys)
    assert ds.class_names == data.CIFAR100_CLASSES and ds.n_classes == 100


def test_complete_sources_preferred_to_subset(tmp_path):
    rng = np.random.default_rng(4)
    x, y = fake_images(rng, 10, (32, 32, 3)), np.arange(10)
    np.savez(tmp_path / "cifar10_subset.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    assert "cifar10_subset.npz" in data.load("cifar10", data_dir=tmp_path).source
    (tmp_path / "raw").mkdir()
    write_cifar10_tar(tmp_path / "raw" / "cifar-10-python.tar.gz", x[::-1], y[::-1], x, y,
                      data.CIFAR10_CLASSES)
    ds = data.load("cifar10", data_dir=tmp_path)  # the new file invalidates the cache
    assert "cifar-10-python.tar.gz" in ds.source and np.array_equal(ds.labels, y[::-1])
    np.savez(tmp_path / "cifar10.npz", x_train=x[:3], y_train=y[:3], x_test=x, y_test=y)
    assert "cifar10.npz" in data.load("cifar10", data_dir=tmp_path).source


class _Sneaky:
    def __reduce__(self):
        return (os.getcwd, ())  # harmless, but any callable must be refused


def test_archive_pickles_cannot_run_code(tmp_path):
    (tmp_path / "raw").mkdir()
    with tarfile.open(tmp_path / "raw" / "cifar-100-python.tar.gz", "w:gz") as tar:
        _add(tar, "cifar-100-python/train", {b"data": _Sneaky(), b"fine_labels": [0]})
    with pytest.raises(DatasetFormatError, match="refusing to load global"):
        data.load("cifar100", data_dir=tmp_path)


def test_truncated_archive_rejected(tmp_path):
    rng = np.random.default_rng(5)
    x, y = fake_images(rng, 10, (32, 32, 3)), np.arange(10)
    (tmp_path / "raw").mkdir()
    path = tmp_path / "raw" / "cifar-10-python.tar.gz"
    write_cifar10_tar(path, x, y, x, y, data.CIFAR10_CLASSES)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DatasetFormatError, match="cifar-10-python.tar.gz"):
        data.load("cifar10", data_dir=tmp_path)
