"""Data sets: digits, IDX, Fashion-MNIST (Debian copy), CIFAR-10 batches, image folders,
load_image, normalisation, augmentation."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from convnet.data import (
    CONTENT_MD5,
    DEBIAN_FASHION_DIR,
    FASHION_CLASSES,
    MD5,
    Dataset,
    Normalizer,
    augment_batch,
    default_augmentation,
    load_cifar10,
    load_dataset,
    load_idx_dataset,
    load_image,
    load_image_folder,
    md5_file,
    read_idx,
    safe_unpickle,
    train_val_split,
    write_idx,
)
from convnet.data.cifar import read_batch
from convnet.data.transforms import augment_draws
from convnet.errors import DataError
from convnet.keyed_random import SampleKeys


# ------------------------------------------------------------------------------------- digits
def test_digits_sizes_range_and_classes():
    train, test = load_dataset("digits")
    assert len(train) + len(test) == 1797
    assert train.x.shape[1:] == (8, 8, 1) and train.x.dtype == np.float32
    assert train.y.dtype == np.int64
    assert 0.0 == train.x.min() and train.x.max() == 1.0
    assert train.classes == [str(i) for i in range(10)]
    assert abs(len(test) / 1797 - 0.2) < 0.01
    assert not train.hflip
    # Stratified: every class holds ~20% of its images in test.
    share = test.class_counts() / (train.class_counts() + test.class_counts())
    assert np.all(np.abs(share - 0.2) < 0.02)


def test_digits_split_reproducible_and_disjoint():
    a_train, a_test = load_dataset("digits")
    b_train, b_test = load_dataset("digits")
    np.testing.assert_array_equal(a_test.x, b_test.x)
    np.testing.assert_array_equal(a_train.y, b_train.y)
    c_train, c_test = load_dataset("digits", seed=1)
    assert not np.array_equal(a_test.x, c_test.x)
    # Disjoint: no test image equals a train image at the same label, via row hashes.
    train_rows = {r.tobytes() for r in a_train.x.reshape(len(a_train), -1)}
    test_rows = [r.tobytes() for r in a_test.x.reshape(len(a_test), -1)]
    # A few digits are exact duplicates in the UCI data; nearly all must be unseen.
    assert sum(r in train_rows for r in test_rows) < 5


def test_train_val_split_stratified_reproducible():
    train, _ = load_dataset("digits")
    rest, val = train_val_split(train, 0.1, seed=3)
    rest2, val2 = train_val_split(train, 0.1, seed=3)
    np.testing.assert_array_equal(val.y, val2.y)
    np.testing.assert_array_equal(rest.x, rest2.x)
    assert len(rest) + len(val) == len(train)
    assert np.all(val.class_counts() >= 1)
    with pytest.raises(DataError, match="between 0 and 1"):
        train.split(1.5)


def test_dataset_validates():
    with pytest.raises(DataError, match=r"\(N, H, W, D\)"):
        Dataset(np.zeros((3, 4, 4)), np.zeros(3), ["a"])
    with pytest.raises(DataError, match="labels range"):
        Dataset(np.zeros((2, 4, 4, 1)), np.array([0, 2]), ["a", "b"])
    with pytest.raises(DataError, match="3 images but labels"):
        Dataset(np.zeros((3, 4, 4, 1)), np.zeros(2), ["a"])


def test_unknown_name():
    with pytest.raises(DataError, match="unknown data set 'nope'.*digits"):
        load_dataset("nope")


# ---------------------------------------------------------------------------------------- IDX
def _write_mnist_dir(d, n_train=12, n_test=5, gz=False, hw=(6, 5)):
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    sfx = ".gz" if gz else ""
    data = {}
    for part, n in (("train", n_train), ("t10k", n_test)):
        imgs = rng.integers(0, 256, size=(n, *hw), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(d / f"{part}-images-idx3-ubyte{sfx}", imgs)
        write_idx(d / f"{part}-labels-idx1-ubyte{sfx}", labels)
        data[part] = (imgs, labels)
    return data


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, gz):
    data = _write_mnist_dir(tmp_path, gz=gz)
    train, test = load_idx_dataset(tmp_path, "mnist", [str(i) for i in range(10)])
    assert train.x.shape == (12, 6, 5, 1) and test.x.shape == (5, 6, 5, 1)
    np.testing.assert_allclose(train.x[..., 0] * 255, data["train"][0], atol=1e-4)
    np.testing.assert_array_equal(test.y, data["t10k"][1])
    if gz:
        assert (tmp_path / "train-images-idx3-ubyte.gz").read_bytes()[:2] == b"\x1f\x8b"


def test_idx_other_dtypes_round_trip(tmp_path):
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "f.idx", a)), a)
    b = np.arange(-5, 5, dtype=np.int32)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "i.idx", b)), b)


def _header(dtype_byte, dims):
    return struct.pack(">HBB", 0, dtype_byte, len(dims)) + struct.pack(f">{len(dims)}I", *dims)


def test_idx_bad_magic_names_file(tmp_path):
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(_header(0x08, (2, 3, 3))[:2] + b"\x0d\x03" + _header(0x08, (2, 3, 3))[4:]
                  + bytes(2 * 9 * 4))
    with pytest.raises(DataError) as e:
        read_idx(p, 0x803)
    msg = str(e.value)
    assert str(p) in msg and "0x00000d03" in msg and "0x00000803" in msg and "float32" in msg


def test_idx_not_idx_at_all(tmp_path):
    p = tmp_path / "x"
    p.write_bytes(b"PK\x03\x04hello world")
    with pytest.raises(DataError, match="0x504b.*IDX"):
        read_idx(p, 0x803)


def test_idx_wrong_dim_count(tmp_path):
    # Labels file written with 2 dimensions instead of 1.
    p = tmp_path / "train-labels-idx1-ubyte"
    p.write_bytes(_header(0x08, (4, 1)) + bytes(4))
    with pytest.raises(DataError, match=r"2 dimensions, expected 1") as e:
        read_idx(p, 0x801)
    assert str(p) in str(e.value)


def test_idx_truncated_payload(tmp_path):
    p = tmp_path / "imgs"
    p.write_bytes(_header(0x08, (3, 4, 4)) + bytes(3 * 16 - 5))
    with pytest.raises(DataError, match=r"truncated.*3 x 4 x 4.*48 bytes.*has 43") as e:
        read_idx(p, 0x803)
    assert str(p) in str(e.value)
    p.write_bytes(_header(0x08, (3, 4, 4)) + bytes(3 * 16 + 2))
    with pytest.raises(DataError, match="trailing bytes"):
        read_idx(p, 0x803)
    p.write_bytes(_header(0x08, (3, 4, 4))[:9])
    with pytest.raises(DataError, match="3 dimensions .* only 9 bytes"):
        read_idx(p)


def test_idx_truncated_gzip(tmp_path):
    p = tmp_path / "imgs.gz"
    full = gzip.compress(_header(0x08, (50, 8, 8)) + os.urandom(50 * 64))
    p.write_bytes(full[: len(full) // 2])
    with pytest.raises(DataError, match="corrupt or truncated gzip") as e:
        read_idx(p)
    assert str(p) in str(e.value)


def test_idx_count_mismatch(tmp_path):
    _write_mnist_dir(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(11, np.uint8))
    with pytest.raises(DataError, match="12 images but .*11 labels"):
        load_idx_dataset(tmp_path)


def test_named_mnist_from_data_dir_and_missing(tmp_path):
    _write_mnist_dir(tmp_path / "m", gz=True)
    train, test = load_dataset("mnist", data_dir=tmp_path / "m")
    assert train.classes == [str(i) for i in range(10)] and not train.hflip
    with pytest.raises(DataError, match="no mnist IDX files"):
        load_dataset("mnist", data_dir=tmp_path / "empty")
    with pytest.raises(DataError, match="mnist not found.*download=True") as err:
        load_dataset("mnist", cache_dir=tmp_path / "cache")
    # each fix in both spellings, each labelled: the command line's and Python's
    msg = str(err.value)
    assert "convnet train --download, or in Python download=True" in msg
    assert "--data-dir DIR (convnet train, eval), or in Python data_dir=DIR" in msg
    assert "t10k-labels-idx1-ubyte[.gz]" in msg and "point --data" not in msg
    # A directory path of IDX files is detected.
    train2, _ = load_dataset(tmp_path / "m")
    np.testing.assert_array_equal(train2.x, train.x)


# --------------------------------------------------------------------- Fashion-MNIST (Debian)
needs_debian = pytest.mark.skipif(
    not (DEBIAN_FASHION_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"Debian's dataset-fashion-mnist is not installed ({DEBIAN_FASHION_DIR} missing); "
    "apt-get install dataset-fashion-mnist",
)


@needs_debian
def test_fashion_mnist_from_debian(tmp_path):
    train, test = load_dataset("fashion-mnist", cache_dir=tmp_path)  # empty cache -> Debian
    assert train.x.shape == (60000, 28, 28, 1) and test.x.shape == (10000, 28, 28, 1)
    assert train.classes == FASHION_CLASSES and train.hflip
    np.testing.assert_array_equal(train.class_counts(), np.full(10, 6000))
    np.testing.assert_array_equal(test.class_counts(), np.full(10, 1000))
    # The published statistics of Fashion-MNIST: mean 0.2860, std 0.3530.
    norm = Normalizer.fit(train.x)
    assert abs(norm.mean[0] - 0.2860) < 1e-3 and abs(norm.std[0] - 0.3530) < 1e-3


@needs_debian
def test_fashion_mnist_md5_table():
    """Debian recompresses the .gz files (new gzip header) but keeps their content: each file
    matches either the published .gz MD5 or the content MD5 of our table."""
    for gz_name, published in MD5["fashion-mnist"].items():
        path = DEBIAN_FASHION_DIR / gz_name
        stem = gz_name.removesuffix(".gz")
        content = __import__("hashlib").md5(gzip.decompress(path.read_bytes())).hexdigest()
        assert md5_file(path) == published or content == CONTENT_MD5["fashion-mnist"][stem]
        assert content == CONTENT_MD5["fashion-mnist"][stem]
    assert len(set(MD5["fashion-mnist"].values())) == 4


# ---------------------------------------------------------------------------------- CIFAR-10
class Py2Pickler(pickle._Pickler):
    """Writes ``bytes`` as Python 2 ``str`` opcodes, as the real CIFAR-10 batches were written
    (Python 3's protocol 2 would instead call ``_codecs.encode``)."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_bytes(self, obj):
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes


def _py2_dump(obj, path):
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    path.write_bytes(buf.getvalue())


def _make_cifar(root, n=6, names=("airplane", "automobile", "bird")):
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(1)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        nhwc = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, len(names), size=n)]
        chw_rows = nhwc.transpose(0, 3, 1, 2).reshape(n, 3072)  # the real on-disk layout
        _py2_dump({b"batch_label": name.encode(), b"labels": labels, b"data": chw_rows,
                   b"filenames": [f"img{i}.png".encode() for i in range(n)]}, d / name)
        batches[name] = (nhwc, labels)
    _py2_dump({b"label_names": [s.encode() for s in names], b"num_cases_per_batch": n,
               b"num_vis": 3072}, d / "batches.meta")
    return d, batches


def test_cifar10_python_batches(tmp_path):
    d, batches = _make_cifar(tmp_path)
    train, test = load_cifar10(tmp_path)  # the parent directory works too
    assert train.x.shape == (30, 32, 32, 3) and test.x.shape == (6, 32, 32, 3)
    assert train.classes == ["airplane", "automobile", "bird"] and train.hflip
    np.testing.assert_allclose(test.x * 255, batches["test_batch"][0], atol=1e-3)
    np.testing.assert_allclose(train.x[6:12] * 255, batches["data_batch_2"][0], atol=1e-3)
    np.testing.assert_array_equal(test.y, batches["test_batch"][1])
    # Red channel of image 0 is the first 1024 stored values, row-major.
    raw = safe_unpickle(d / "test_batch")[b"data"]
    np.testing.assert_array_equal(raw[0, :1024].reshape(32, 32), batches["test_batch"][0][0, :, :, 0])
    train2, _ = load_dataset("cifar10", data_dir=d)
    np.testing.assert_array_equal(train2.y, train.y)


def test_cifar_python3_pickle_protocol4(tmp_path):
    p = tmp_path / "b"
    arr = np.arange(3072 * 2, dtype=np.uint8).reshape(2, 3072)
    p.write_bytes(pickle.dumps({"data": arr, "labels": [1, 0]}, protocol=4))
    x, y = read_batch(p)
    assert x.shape == (2, 32, 32, 3) and list(y) == [1, 0]


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_cifar_malicious_pickle_refused(tmp_path):
    d, _ = _make_cifar(tmp_path)
    _py2_dump({b"data": _Evil(), b"labels": []}, d / "data_batch_3")
    with pytest.raises(DataError, match=r"data_batch_3: refused to load.*(posix|os)\.system"):
        load_cifar10(d)
    p = tmp_path / "evil2"
    p.write_bytes(pickle.dumps({"data": __import__("collections").OrderedDict()}))
    with pytest.raises(DataError, match="collections.OrderedDict"):
        safe_unpickle(p)
    # Python 3 writes bytes at protocol 2 through _codecs.encode: refused, with a hint.
    p.write_bytes(pickle.dumps({b"data": b"x"}, protocol=2))
    with pytest.raises(DataError, match="_codecs.encode.*protocol 4"):
        safe_unpickle(p)


def test_cifar_bad_files(tmp_path):
    d, _ = _make_cifar(tmp_path)
    (d / "test_batch").write_bytes(b"\x80\x02}q\x00(U\x04data")  # cut short
    with pytest.raises(DataError, match="test_batch: not a readable pickle"):
        load_cifar10(d)
    _py2_dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, d / "test_batch")
    with pytest.raises(DataError, match=r"test_batch: b'data' must be a uint8 array \(N, 3072\)"):
        load_cifar10(d)
    (d / "data_batch_5").unlink()
    with pytest.raises(DataError, match="data_batch_5: missing"):
        load_cifar10(d)


# ------------------------------------------------------------------------------ image folders
def _save(path, mode, size, color, fmt):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path, fmt)


def test_image_folder_mixed_sizes_modes(tmp_path):
    root = tmp_path / "imgs"
    for i in range(5):
        _save(root / "cat" / f"c{i}.png", "RGB", (20, 10), (200, 10, 10), "PNG")  # W=20, H=10
        _save(root / "dog" / f"d{i}.jpg", "RGB", (20, 10), (10, 10, 200), "JPEG")
    _save(root / "dog" / "big.jpg", "L", (64, 48), 128, "JPEG")
    _save(root / "cat" / "alpha.png", "RGBA", (7, 9), (0, 0, 0, 0), "PNG")
    (root / "cat" / ".DS_Store").write_bytes(b"junk")  # hidden: ignored
    train, test = load_dataset(root, test_fraction=0.25)
    assert train.classes == ["cat", "dog"]
    assert train.x.shape[1:] == (10, 20, 3)  # most common size (H x W), majority mode RGB
    assert len(train) + len(test) == 12 and np.all(test.class_counts() >= 1)
    assert train.x.min() >= 0 and train.x.max() <= 1
    # A transparent pixel is flattened onto white.
    g_train, g_test = load_image_folder(root, image_size=(4, 4), grayscale=True, test_fraction=0.25)
    assert g_train.x.shape[1:] == (4, 4, 1)
    both = Dataset(np.concatenate([g_train.x, g_test.x]), np.concatenate([g_train.y, g_test.y]),
                   g_train.classes)
    assert np.isclose(both.x.max(), 1.0, atol=1e-6)


def test_image_folder_corrupt_file_named(tmp_path):
    root = tmp_path / "imgs"
    _save(root / "a" / "ok.png", "L", (5, 5), 0, "PNG")
    _save(root / "b" / "ok.png", "L", (5, 5), 0, "PNG")
    bad = root / "b" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    with pytest.raises(DataError) as e:
        load_image_folder(root)
    assert str(bad) in str(e.value)
    # A truncated PNG whose header is fine fails at decode time, still named.
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8)).save(buf, "PNG")
    bad.write_bytes(buf.getvalue()[:200])
    with pytest.raises(DataError) as e:
        load_image_folder(root)
    assert str(bad) in str(e.value)


def test_image_folder_train_test_layout(tmp_path):
    for part, n in (("train", 3), ("test", 2)):
        for cls in ("x", "y"):
            for i in range(n):
                _save(tmp_path / part / cls / f"{i}.png", "L", (6, 6), i * 40, "PNG")
    train, test = load_image_folder(tmp_path)
    assert len(train) == 6 and len(test) == 4 and train.x.shape[1:] == (6, 6, 1)
    with pytest.raises(DataError, match="no class folders"):
        load_image_folder(tmp_path / "train" / "x")


# ------------------------------------------------------------------------------- load_image
def test_load_image_conversions(tmp_path):
    p = tmp_path / "photo.png"
    rgb = np.zeros((200, 300, 3), np.uint8)
    rgb[..., 0] = 255
    Image.fromarray(rgb).save(p)
    img, notes = load_image(p, (28, 28, 1))
    assert img.shape == (28, 28, 1) and img.dtype == np.float32
    assert any("converted RGB -> grayscale" in n for n in notes)
    assert "resized 200x300 -> 28x28 (HxW)" in notes
    np.testing.assert_allclose(img, 0.299, atol=2 / 255)  # luma of pure red
    gray = tmp_path / "g.png"
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(gray)
    img, notes = load_image(gray, (8, 8, 3))
    assert img.shape == (8, 8, 3) and notes == ["converted L -> RGB"] and np.all(img == 1.0)
    img, notes = load_image(gray, (8, 8, 1))
    assert notes == []
    deep = tmp_path / "d.png"
    Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(deep)
    img, _ = load_image(deep, (4, 4, 1))
    np.testing.assert_allclose(img, 1.0)


def test_load_image_errors(tmp_path):
    bad = tmp_path / "nope.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="nope.jpg: not an image"):
        load_image(bad, (8, 8, 1))
    with pytest.raises(DataError, match="missing.png: file not found"):
        load_image(tmp_path / "missing.png", (8, 8, 1))
    with pytest.raises(DataError, match="D = 1 .* or 3"):
        load_image(bad, (8, 8, 2))


# ---------------------------------------------------------------------- normalisation
def test_normalizer_fitted_on_train_only():
    rng = np.random.default_rng(0)
    train = rng.normal([0.2, 0.5, 0.8], [0.1, 0.2, 0.3], size=(64, 5, 5, 3)).astype(np.float32)
    test = train + 10.0  # very different: must not influence the statistics
    norm = Normalizer.fit(train)
    ref = train.astype(np.float64)
    np.testing.assert_allclose(norm.mean, ref.mean(axis=(0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(norm.std, ref.std(axis=(0, 1, 2)), rtol=1e-5)
    z = norm.apply(train)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=(0, 1, 2)), 1, atol=1e-4)
    np.testing.assert_allclose(norm.apply(test).mean(axis=(0, 1, 2)), 10 / norm.std, rtol=1e-4)
    back = Normalizer.from_arrays(norm.to_arrays("norm."), "norm.")
    np.testing.assert_array_equal(back.mean, norm.mean)
    np.testing.assert_allclose(norm.invert(z), train, atol=1e-5)
    # Through an npz without pickling, as a checkpoint stores it.
    buf = io.BytesIO()
    np.savez(buf, **norm.to_arrays())
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as f:
        np.testing.assert_array_equal(Normalizer.from_arrays(f).std, norm.std)


def test_normalizer_constant_channel_and_errors():
    x = np.zeros((4, 2, 2, 1), np.float32)
    norm = Normalizer.fit(x)
    assert norm.std[0] == 1.0 and np.all(norm.apply(x) == 0)
    with pytest.raises(DataError, match="3 channel"):
        norm.apply(np.zeros((1, 2, 2, 3)))
    with pytest.raises(DataError, match="no 'mean'"):
        Normalizer.from_arrays({})


# ---------------------------------------------------------------------- augmentation
def _crop_flip_reference(x, oy, ox, flips, pad):
    """Loop reference: pad each image, crop at its offset, maybe flip."""
    n, h, w, _ = x.shape
    out = np.empty_like(x)
    for i in range(n):
        p = np.pad(x[i], ((pad, pad), (pad, pad), (0, 0)))
        crop = p[oy[i] : oy[i] + h, ox[i] : ox[i] + w]
        out[i] = crop[:, ::-1] if flips[i] else crop
    return out


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 5), h=st.integers(1, 7), w=st.integers(1, 7), d=st.integers(1, 3),
       pad=st.integers(0, 3), flip=st.booleans(), seed=st.integers(0, 2**31))
def test_augment_matches_loop_reference(n, h, w, d, pad, flip, seed):
    x = np.random.default_rng(seed).random((n, h, w, d), dtype=np.float32)
    out = augment_batch(x, np.random.default_rng(seed), pad=pad, flip=flip)
    assert out.shape == x.shape and out.dtype == x.dtype
    # Replay the documented draws: one key from the generator, then each image's offsets and
    # flip from its keyed stream (issue 16: augmentation is a function of the image's key).
    keys = SampleKeys.from_generator(np.random.default_rng(seed), n)
    oy, ox, flips = augment_draws(keys, pad, flip)
    assert oy.min() >= 0 and oy.max() <= 2 * pad and ox.min() >= 0 and ox.max() <= 2 * pad
    np.testing.assert_array_equal(out, _crop_flip_reference(x, oy, ox, flips, pad))
    # the same images keyed by their indices give the same result in any split of the batch
    if n > 1:
        half = n // 2
        parts = [augment_batch(x[:half], SampleKeys(keys.key, 0, np.arange(half)), pad=pad,
                               flip=flip),
                 augment_batch(x[half:], SampleKeys(keys.key, 0, np.arange(half, n)), pad=pad,
                               flip=flip)]
        np.testing.assert_array_equal(np.concatenate(parts), out)


def test_augment_reproducible_and_does_something():
    x = np.random.default_rng(0).random((64, 8, 8, 3), dtype=np.float32)
    a = augment_batch(x, np.random.default_rng(7), pad=2, flip=True)
    b = augment_batch(x, np.random.default_rng(7), pad=2, flip=True)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, x)
    flipped_only = augment_batch(x, np.random.default_rng(1), flip=True)
    same = np.all(flipped_only == x, axis=(1, 2, 3))
    mirrored = np.all(flipped_only == x[:, :, ::-1], axis=(1, 2, 3))
    assert np.all(same | mirrored) and 10 < mirrored.sum() < 54
    np.testing.assert_array_equal(augment_batch(x, np.random.default_rng(0)), x)


def test_default_augmentation_flip_policy():
    assert not default_augmentation("digits").enabled
    assert not default_augmentation("mnist").flip and default_augmentation("mnist").pad == 2
    assert default_augmentation("fashion-mnist").flip
    assert default_augmentation("cifar10") .flip and default_augmentation("cifar10").pad == 4
    assert not default_augmentation("/some/folder").flip
    assert default_augmentation("/some/folder", hflip=True).flip


def test_named_dataset_resized_and_recoloured():
    train, test = load_dataset("digits", image_size=12, grayscale=False)
    assert train.x.shape[1:] == (12, 12, 3) and test.x.shape[1:] == (12, 12, 3)
    np.testing.assert_array_equal(train.x[..., 0], train.x[..., 2])  # gray repeated
    assert train.x.min() >= 0 and train.x.max() <= 1.0 + 1e-6
    base, _ = load_dataset("digits")
    np.testing.assert_array_equal(train.y, base.y)


def test_batches_cover_every_image_once():
    train, _ = load_dataset("digits")
    seen = np.concatenate([y for _, y in train.batches(100, np.random.default_rng(0))])
    assert len(seen) == len(train)
    np.testing.assert_array_equal(np.sort(seen), np.sort(train.y))
    assert [len(y) for _, y in train.batches(1000)] == [1000, len(train) - 1000]
