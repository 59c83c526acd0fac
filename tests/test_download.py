"""Downloads over real loopback HTTP: verification, truncation, corruption, no leftovers."""

import functools
import gzip
import hashlib
import io
import pickle
import socket
import struct
import subprocess
import sys
import tarfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from l2o import data
from l2o.data import ChecksumError, DownloadError

ROOT = Path(__file__).resolve().parents[1]
MNIST_FILES = list(data.CHECKSUMS["mnist"])
TIMEOUT = 5.0  # seconds; every transfer here is loopback and tiny


# ------------------------------------------------------------------ fake canonical files
def idx_gz(arr):
    arr = np.asarray(arr, dtype=np.uint8)
    head = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    return gzip.compress(head + arr.tobytes(), mtime=0)


def cifar10_tar_gz(x, y):
    rows = np.ascontiguousarray(x.transpose(0, 3, 1, 2).reshape(len(x), 3072))
    members = {"batches.meta": {b"label_names": [n.encode() for n in data.CIFAR10_CLASSES]}}
    for i in range(5):
        members[f"data_batch_{i + 1}"] = {b"labels": [int(v) for v in y[i::5]], b"data": rows[i::5]}
    members["test_batch"] = {b"labels": [int(v) for v in y[:2]], b"data": rows[:2]}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, obj in members.items():
            blob = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo("cifar-10-batches-py/" + name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return buf.getvalue()


def md5(blob):
    return hashlib.md5(blob).hexdigest()


@pytest.fixture
def fake_mnist():
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (20, 28, 28)),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, 20),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (6, 28, 28)),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, 6),
    }
    blobs = {k: idx_gz(v) for k, v in arrays.items()}
    return arrays, blobs, {k: md5(b) for k, b in blobs.items()}


# ---------------------------------------------------------------------- the server
class _Handler(SimpleHTTPRequestHandler):
    """Serves ``directory``; under ``/short/`` it announces 1000 bytes more than it sends."""

    protocol_version = "HTTP/1.0"  # one request per connection: the close ends the body

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        self.server.requests.append(self.path)
        if self.path.startswith("/short/"):
            blob = (Path(self.directory) / "good" / Path(self.path).name).read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(blob) + 1000))
            self.end_headers()
            self.wfile.write(blob)
            return
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving ``tmp_path/www``; yields (root, base url)."""
    www = tmp_path / "www"
    www.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(www)))
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield httpd, www, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def publish(www, folder, blobs):
    d = www / folder
    d.mkdir(exist_ok=True)
    for name, blob in blobs.items():
        (d / name).write_bytes(blob)


def leftovers(raw):
    return sorted(p.name for p in raw.glob("*")) if raw.exists() else []


@pytest.fixture(autouse=True)
def _fresh_cache():
    data.clear_cache()
    yield
    data.clear_cache()


# ------------------------------------------------------------------------ tests
def test_good_download_verifies_and_loads(server, fake_mnist, tmp_path):
    httpd, www, url = server
    arrays, blobs, sums = fake_mnist
    publish(www, "good", blobs)
    dest = tmp_path / "data"
    paths = data.download("mnist", data_dir=dest, base_url=url + "/good/", checksums=sums,
                          timeout=TIMEOUT)
    assert sorted(p.name for p in paths) == sorted(MNIST_FILES)
    assert leftovers(dest / "raw") == sorted(MNIST_FILES)  # no .part files
    for name, blob in blobs.items():
        assert (dest / "raw" / name).read_bytes() == blob
    train = data.load("mnist", data_dir=dest)
    assert np.array_equal(train.images, arrays["train-images-idx3-ubyte.gz"])
    assert np.array_equal(train.labels, arrays["train-labels-idx1-ubyte.gz"])
    test = data.load("mnist", "test", data_dir=dest)
    assert np.array_equal(test.images, arrays["t10k-images-idx3-ubyte.gz"])
    # A second call finds the verified files and fetches nothing.
    n = len(httpd.requests)
    data.download("mnist", data_dir=dest, base_url=url + "/good/", checksums=sums,
                  timeout=TIMEOUT)
    assert len(httpd.requests) == n == 4


def test_cifar10_archive_download_and_load(server, tmp_path):
    httpd, www, url = server
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8), np.arange(10)
    blob = cifar10_tar_gz(x, y)
    publish(www, "good", {"cifar-10-python.tar.gz": blob})
    data.download("cifar10", data_dir=tmp_path, base_url=url + "/good",
                  checksums={"cifar-10-python.tar.gz": hashlib.sha256(blob).hexdigest()},
                  timeout=TIMEOUT)
    ds = data.load("cifar10", data_dir=tmp_path)
    order = np.concatenate([np.arange(10)[i::5] for i in range(5)])  # batch by batch
    assert np.array_equal(ds.images, x[order]) and np.array_equal(ds.labels, y[order])
    assert leftovers(tmp_path / "raw") == ["cifar-10-python.tar.gz"]


def test_corrupted_file_is_detected_removed_and_reported(server, fake_mnist, tmp_path):
    httpd, www, url = server
    _, blobs, sums = fake_mnist
    bad = dict(blobs)
    flipped = bytearray(bad["train-labels-idx1-ubyte.gz"])
    flipped[len(flipped) // 2] ^= 0xFF
    bad["train-labels-idx1-ubyte.gz"] = bytes(flipped)
    publish(www, "bad", bad)
    with pytest.raises(ChecksumError) as info:
        data.download("mnist", data_dir=tmp_path, base_url=url + "/bad/", checksums=sums,
                      timeout=TIMEOUT)
    msg = str(info.value)
    for part in ("train-labels-idx1-ubyte.gz", "Checksum mismatch",
                 sums["train-labels-idx1-ubyte.gz"], md5(bytes(flipped)), "removed", "retry"):
        assert part in msg
    names = leftovers(tmp_path / "raw")
    assert "train-labels-idx1-ubyte.gz" not in names
    assert not [n for n in names if n.endswith(".part")]
    with pytest.raises(data.DatasetNotFoundError):  # nothing usable was left
        data.load("mnist", data_dir=tmp_path)


def test_transfer_cut_short_is_detected_and_removed(server, fake_mnist, tmp_path):
    httpd, www, url = server
    _, blobs, sums = fake_mnist
    publish(www, "good", blobs)
    with pytest.raises(DownloadError) as info:
        data.download("mnist", data_dir=tmp_path, base_url=url + "/short/", checksums=sums,
                      timeout=TIMEOUT)
    assert not isinstance(info.value, ChecksumError)  # caught by the length check
    msg = str(info.value)
    size = len(blobs[MNIST_FILES[0]])
    assert "truncated" in msg and f"received {size} of {size + 1000} bytes" in msg
    assert "removed" in msg and "retry" in msg
    assert leftovers(tmp_path / "raw") == []


def test_truncated_file_fails_its_checksum(server, fake_mnist, tmp_path):
    httpd, www, url = server
    _, blobs, sums = fake_mnist
    short = {k: v[: len(v) // 2] for k, v in blobs.items()}  # honest length, cut file
    publish(www, "cut", short)
    with pytest.raises(ChecksumError, match="truncated or corrupt"):
        data.download("mnist", data_dir=tmp_path, base_url=url + "/cut/", checksums=sums,
                      timeout=TIMEOUT)
    assert leftovers(tmp_path / "raw") == []


def test_published_checksums_are_enforced_by_default(server, fake_mnist, tmp_path):
    httpd, www, url = server
    _, blobs, _ = fake_mnist
    publish(www, "good", blobs)
    with pytest.raises(ChecksumError, match="f68b3c2dcbeaaa9fbdd348bbdeb94873"):
        data.download("mnist", data_dir=tmp_path, base_url=url + "/good/", timeout=TIMEOUT)
    assert leftovers(tmp_path / "raw") == []


def test_existing_bad_file_is_replaced(server, fake_mnist, tmp_path):
    httpd, www, url = server
    _, blobs, sums = fake_mnist
    publish(www, "good", blobs)
    raw = tmp_path / "raw"
    raw.mkdir()
    target = raw / "t10k-images-idx3-ubyte.gz"
    target.write_bytes(blobs["t10k-images-idx3-ubyte.gz"][:50])  # an old partial file
    data.download("mnist", data_dir=tmp_path, base_url=url + "/good/", checksums=sums,
                  timeout=TIMEOUT)
    assert target.read_bytes() == blobs["t10k-images-idx3-ubyte.gz"]
    assert "/good/t10k-images-idx3-ubyte.gz" in httpd.requests


def test_missing_file_on_server_is_reported(server, fake_mnist, tmp_path):
    httpd, www, url = server
    _, blobs, sums = fake_mnist
    publish(www, "good", {k: v for k, v in blobs.items() if not k.startswith("t10k-labels")})
    with pytest.raises(DownloadError, match="404"):
        data.download("mnist", data_dir=tmp_path, base_url=url + "/good/", checksums=sums,
                      timeout=TIMEOUT)
    assert not [n for n in leftovers(tmp_path / "raw") if n.endswith(".part")]


def test_unreachable_server_gives_clear_error(tmp_path):
    with socket.socket() as s:  # a loopback port that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/mnist/"
    start = time.monotonic()
    with pytest.raises(DownloadError) as info:
        data.download("mnist", data_dir=tmp_path, base_url=url, timeout=TIMEOUT)
    assert time.monotonic() - start < 2 * TIMEOUT
    msg = str(info.value)
    assert "Could not download" in msg and url in msg and "retry" in msg
    assert leftovers(tmp_path / "raw") == []


def test_default_hosts_tried_in_order(server, fake_mnist, tmp_path, monkeypatch):
    httpd, www, url = server
    _, blobs, sums = fake_mnist
    publish(www, "good", blobs)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/"
    monkeypatch.setitem(data.DEFAULT_BASE_URLS, "mnist", (dead, url + "/good/"))
    data.download("mnist", data_dir=tmp_path / "a", checksums=sums, timeout=TIMEOUT)
    assert leftovers(tmp_path / "a" / "raw") == sorted(MNIST_FILES)
    monkeypatch.setitem(data.DEFAULT_BASE_URLS, "mnist", (dead, url + "/missing/"))
    with pytest.raises(DownloadError, match="Every host failed") as info:
        data.download("mnist", data_dir=tmp_path / "b", checksums=sums, timeout=TIMEOUT)
    assert dead in str(info.value) and "HTTP 404" in str(info.value)
    assert leftovers(tmp_path / "b" / "raw") == []


def test_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="licence"):
        data.download("tfd", data_dir=tmp_path)
    with pytest.raises(ValueError, match="Unknown file"):
        data.download("mnist", data_dir=tmp_path, checksums={"mnist.npz": "0" * 32})
    with pytest.raises(ValueError, match="Invalid checksum"):
        data.download("cifar10", data_dir=tmp_path,
                      checksums={"cifar-10-python.tar.gz": "abc"})


def test_cli_download(server, fake_mnist, tmp_path, monkeypatch, capsys):
    httpd, www, url = server
    _, blobs, sums = fake_mnist
    publish(www, "good", blobs)
    argv = ["download", "mnist", "--data-dir", str(tmp_path), "--base-url", url + "/good/",
            "--timeout", str(TIMEOUT), "--quiet"]
    assert data.main(argv) == 1  # fake files fail the published checksums
    assert "Checksum mismatch" in capsys.readouterr().err
    for name, digest in sums.items():
        monkeypatch.setitem(data.CHECKSUMS["mnist"], name, digest)
    assert data.main(argv) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in MNIST_FILES)
    assert leftovers(tmp_path / "raw") == sorted(MNIST_FILES)


def test_cli_module_entry_point(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "l2o.data", "info", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert str(tmp_path) in proc.stdout and "mnist" in proc.stdout and "not found" in proc.stdout
