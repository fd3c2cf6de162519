"""Downloads from mirrors, against a local HTTP server on 127.0.0.1 (no internet needed)."""

from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading

import numpy as np
import pytest

from convnet.data import cache_dir, download_file, load_dataset, write_idx
from convnet.data import download as dl
from convnet.errors import DataError

GOOD = b"the real file " * 1000
GOOD_MD5 = hashlib.md5(GOOD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    """Routes: /good/NAME serves FILES[NAME]; /refuse/ 404s; /truncated/ announces the full
    length then closes after half; /corrupt/ serves altered bytes of the right length."""

    files: dict[str, bytes] = {}
    hits: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.hits.append(self.path)
        kind, _, name = self.path.lstrip("/").partition("/")
        body = self.files.get(name)
        if kind == "refuse" or body is None:
            self.send_error(404, "Not Found")
            return
        if kind == "corrupt":
            body = body[:-10] + b"X" * 10
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if kind == "truncated":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def _files():
    _Handler.files = {"f.bin": GOOD}
    _Handler.hits = []


def _leftovers(d):
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def test_good_mirror(server, tmp_path):
    path = download_file("f.bin", GOOD_MD5, [f"{server}/good/"], tmp_path / "c")
    assert path.read_bytes() == GOOD and _leftovers(tmp_path / "c") == ["f.bin"]
    # Second call: verified cache hit, no request.
    _Handler.hits.clear()
    assert download_file("f.bin", GOOD_MD5, [f"{server}/good/"], tmp_path / "c") == path
    assert _Handler.hits == []


def test_a_download_follows_the_umask(server, tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        path = download_file("f.bin", GOOD_MD5, [f"{server}/good/"], tmp_path / "c")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_refusing_mirror_then_good(server, tmp_path):
    seen = []
    path = download_file("f.bin", GOOD_MD5, [f"{server}/refuse", f"{server}/good"], tmp_path,
                         progress=seen.append)
    assert path.read_bytes() == GOOD
    assert _Handler.hits == ["/refuse/f.bin", "/good/f.bin"]
    assert len(seen) == 2 and "refuse/f.bin" in seen[0]


def test_truncated_download_deleted_and_reported(server, tmp_path):
    with pytest.raises(DataError) as e:
        download_file("f.bin", GOOD_MD5, [f"{server}/truncated/"], tmp_path)
    msg = str(e.value)
    assert "f.bin" in msg and f"{server}/truncated/f.bin" in msg and "truncated" in msg
    assert _leftovers(tmp_path) == []


def test_corrupt_download_deleted_and_reported(server, tmp_path):
    with pytest.raises(DataError) as e:
        download_file("f.bin", GOOD_MD5, [f"{server}/corrupt/", f"{server}/refuse/"], tmp_path)
    msg = str(e.value)
    assert "could not download f.bin" in msg and "tried 2 mirror(s)" in msg
    assert f"does not match the published {GOOD_MD5}" in msg and "HTTP 404" in msg
    assert _leftovers(tmp_path) == []


def test_corrupt_then_good_mirror(server, tmp_path):
    path = download_file("f.bin", GOOD_MD5, [f"{server}/corrupt/", f"{server}/good/"], tmp_path)
    assert path.read_bytes() == GOOD


def test_stale_cached_file_replaced(server, tmp_path):
    (tmp_path / "f.bin").write_bytes(b"old and wrong")
    path = download_file("f.bin", GOOD_MD5, [f"{server}/good/"], tmp_path)
    assert path.read_bytes() == GOOD


def test_unreachable_mirror(tmp_path):
    # Port 9 on localhost: connection refused, reported, no file left.
    with pytest.raises(DataError, match="127.0.0.1:9/f.bin"):
        download_file("f.bin", GOOD_MD5, ["http://127.0.0.1:9/"], tmp_path, timeout=5)
    assert _leftovers(tmp_path) == []


def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("CONVNET_DATA", str(tmp_path / "env"))
    assert cache_dir() == tmp_path / "env"
    assert cache_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("CONVNET_DATA")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "convnet"


def test_md5_tables_complete():
    for name in ("mnist", "fashion-mnist"):
        assert set(dl.MD5[name]) == {
            "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
        }
        assert all(len(v) == 32 and int(v, 16) >= 0 for v in dl.MD5[name].values())
        assert len(dl.MIRRORS[name]) >= 2


def _fake_mnist_files(tmp_path):
    rng = np.random.default_rng(0)
    files = {}
    for part, n in (("train", 20), ("t10k", 10)):
        for kind, arr in (("images-idx3", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)),
                          ("labels-idx1", (np.arange(n) % 10).astype(np.uint8))):
            name = f"{part}-{kind}-ubyte.gz"
            files[name] = write_idx(tmp_path / name, arr).read_bytes()
    return files


def test_load_dataset_downloads_mnist(server, tmp_path, monkeypatch):
    files = _fake_mnist_files(tmp_path)
    _Handler.files = files
    monkeypatch.setitem(dl.MD5, "mnist", {k: hashlib.md5(v).hexdigest() for k, v in files.items()})
    monkeypatch.setitem(dl.MIRRORS, "mnist", [f"{server}/refuse/", f"{server}/good/"])
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="download=True"):
        load_dataset("mnist", cache_dir=cache)
    train, test = load_dataset("mnist", cache_dir=cache, download=True)
    assert train.x.shape == (20, 28, 28, 1) and len(test) == 10
    assert sorted(_leftovers(cache / "mnist")) == sorted(files)
    # Now cached: no more requests.
    _Handler.hits.clear()
    load_dataset("mnist", cache_dir=cache)
    assert _Handler.hits == []


def _add_cifar_batches(tar: tarfile.TarFile) -> None:
    """The real archive's layout, 2 images per batch (pickled by Python 3 at protocol 4; the
    Python 2 format is covered in test_data.py)."""
    import pickle

    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        obj = ({b"label_names": [b"airplane", b"automobile"]} if name == "batches.meta" else
               {b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), b"labels": [0, 1]})
        data = pickle.dumps(obj, protocol=4)
        info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def test_load_dataset_downloads_cifar_archive(server, tmp_path, monkeypatch):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        _add_cifar_batches(tar)
        evil = tarfile.TarInfo("../escape.txt")  # not extracted: only the batch files are
        evil.size = 1
        tar.addfile(evil, io.BytesIO(b"x"))
    blob = buf.getvalue()
    _Handler.files = {"cifar-10-python.tar.gz": blob}
    monkeypatch.setitem(dl.MD5, "cifar10", {"cifar-10-python.tar.gz": hashlib.md5(blob).hexdigest()})
    monkeypatch.setitem(dl.MIRRORS, "cifar10", [f"{server}/good/"])
    train, test = load_dataset("cifar10", cache_dir=tmp_path / "cache", download=True)
    assert train.x.shape == (10, 32, 32, 3) and train.classes == ["airplane", "automobile"]
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "cache" / "escape.txt").exists()


def _cifar_archive(path):
    with tarfile.open(path, mode="w:gz") as tar:
        _add_cifar_batches(tar)
    return path


def test_cifar_extraction_is_atomic(tmp_path, monkeypatch):
    from convnet.data import cifar
    from convnet.data.registry import extract_cifar_archive

    archive = _cifar_archive(tmp_path / "cifar-10-python.tar.gz")
    target = tmp_path / "cifar10"
    real = tarfile.TarFile.makefile
    calls = []

    def full_disk(self, tarinfo, targetpath):  # the third file finds the disk full
        calls.append(targetpath)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(self, tarinfo, targetpath)

    monkeypatch.setattr(tarfile.TarFile, "makefile", full_disk)
    with pytest.raises(DataError, match="No space left on device"):
        extract_cifar_archive(archive, target)
    # no half folder that would be found (it holds test_batch...) and fail to load ever after
    assert cifar.find_batch_dir(target) is None and list(target.iterdir()) == []
    monkeypatch.setattr(tarfile.TarFile, "makefile", real)
    assert extract_cifar_archive(archive, target) == target / "cifar-10-batches-py"
    assert sorted(p.name for p in (target / "cifar-10-batches-py").iterdir()) == sorted(
        [*cifar.TRAIN_BATCHES, cifar.TEST_BATCH, cifar.META])
    assert list(target.iterdir()) == [target / "cifar-10-batches-py"]  # no temporary left
    # a second unpack (another process, later) finds the whole folder and keeps it
    assert extract_cifar_archive(archive, target) == target / "cifar-10-batches-py"
    assert cifar.load_cifar10(target).train.x.shape == (10, 32, 32, 3)
