"""Hostile IDX files: every header is checked in Python integers against the file and the cap
before anything is allocated, and every failure is one DataError naming the file."""

from __future__ import annotations

import gzip
import math
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import convnet as cn
from convnet.data.idx import (
    IDX_TYPES,
    IMAGES_MAGIC,
    parse_idx,
    read_idx,
    read_idx_header,
    write_idx,
)
from convnet.errors import DataError
from convnet.safety import caps

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def _header(dtype_byte: int, dims) -> bytes:
    return struct.pack(">HBB", 0, dtype_byte, len(dims)) + struct.pack(f">{len(dims)}I", *dims)


def test_dims_whose_int64_product_wraps_are_refused_with_the_true_size(tmp_path):
    # 2**22 x 2**21 x 2**21 = 2**64: an int64 product says 0, and 0 bytes would "match".
    p = tmp_path / "wrap-idx3-ubyte"
    p.write_bytes(_header(0x08, (2**22, 2**21, 2**21)))
    with pytest.raises(DataError) as e:
        read_idx(p, IMAGES_MAGIC)
    msg = str(e.value)
    assert str(p) in msg and f"{2**64:,} bytes" in msg and "truncated" in msg and "-" not in \
        msg.split("=")[-1].split("bytes")[0]


def test_lying_dims_message_never_prints_a_negative_count(tmp_path):
    # int64 overflow made this product negative before
    p = tmp_path / "neg"
    dims = (2**31 + 5, 2**31 + 7, 3)
    p.write_bytes(_header(0x0E, dims) + bytes(16))
    with pytest.raises(DataError) as e:
        read_idx(p)
    assert f"{math.prod(dims) * 8:,}" in str(e.value) and " -" not in str(e.value)


@SETTINGS
@given(dtype_byte=st.sampled_from(sorted(IDX_TYPES)),
       dims=st.lists(st.integers(0, 2**32 - 1), min_size=0, max_size=6),
       extra=st.integers(-64, 64), gz=st.booleans())
def test_any_header_against_any_payload_is_read_exactly_or_refused(tmp_path, dtype_byte, dims,
                                                                   extra, gz):
    """Generated files: a payload that matches the header is read; anything else is one
    DataError naming the file (never MemoryError, never a wrapped size)."""
    itemsize = IDX_TYPES[dtype_byte].itemsize
    need = math.prod(dims) * itemsize
    size = max(0, min(need, 4096) + extra) if need <= 4096 else max(0, 4096 + extra)
    data = _header(dtype_byte, dims) + bytes(size)
    p = tmp_path / ("f.gz" if gz else "f")
    p.write_bytes(gzip.compress(data) if gz else data)
    representable = math.prod(d for d in dims if d) * itemsize < 2**63  # NumPy's shape limit
    with caps(data_bytes=1 << 20):
        if size == need and representable:
            arr = read_idx(p)
            assert arr.shape == tuple(dims) and arr.dtype == IDX_TYPES[dtype_byte].newbyteorder("=")
        else:
            with pytest.raises(DataError) as e:
                read_idx(p)
            assert str(p) in str(e.value)


@SETTINGS
@given(data=st.binary(max_size=300))
def test_random_bytes_are_one_data_error(data):
    try:
        arr = parse_idx(data, "fuzz")
    except DataError as e:
        assert str(e).startswith("fuzz")
    else:
        assert isinstance(arr, np.ndarray)


def test_gzip_bomb_is_refused_from_the_header_without_inflating(tmp_path):
    # a small .gz whose header announces more than the cap: refused before inflating
    dims = (2000, 1000, 1000)  # 2 GB of zeros claimed, the stream would inflate to all of it
    body = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunks = [body.compress(_header(0x08, dims))]
    zeros = bytes(1 << 20)
    for _ in range(64):  # 64 MiB of real zeros, plenty to show it is not inflated
        chunks.append(body.compress(zeros))
    chunks.append(body.flush())
    p = tmp_path / "bomb-idx3-ubyte.gz"
    p.write_bytes(b"".join(chunks))
    assert p.stat().st_size < 200_000
    with caps(data_bytes=10 * 2**20), pytest.raises(DataError) as e:
        read_idx(p, IMAGES_MAGIC)
    msg = str(e.value)
    assert str(p) in msg and "2,000,000,000 bytes" in msg and "--max-data-bytes" in msg \
        and "CONVNET_MAX_DATA_BYTES" in msg


def test_gzip_that_inflates_past_its_header_is_refused_not_read(tmp_path):
    # the header says 10 bytes, the stream holds 20 MiB more: stop after the announced payload
    p = tmp_path / "liar.gz"
    p.write_bytes(gzip.compress(_header(0x08, (10,)) + bytes(10) + bytes(20 * 2**20)))
    with pytest.raises(DataError, match="liar.gz: IDX payload has trailing bytes"):
        read_idx(p)


def test_the_cap_is_raised_by_the_environment_variable(tmp_path, monkeypatch):
    p = tmp_path / "labels"
    p.write_bytes(_header(0x08, (5000,)) + bytes(5000))
    monkeypatch.setenv("CONVNET_MAX_DATA_BYTES", "4k")
    with pytest.raises(DataError, match="over the limit of 4,000 bytes"):
        read_idx(p)
    monkeypatch.setenv("CONVNET_MAX_DATA_BYTES", "8KiB")
    assert read_idx(p).shape == (5000,)
    monkeypatch.setenv("CONVNET_MAX_DATA_BYTES", "lots")
    with pytest.raises(cn.ConfigError, match="CONVNET_MAX_DATA_BYTES='lots'"):
        read_idx(p)


def _mnist_dir(d, hw_train, hw_test):
    d.mkdir()
    rng = np.random.default_rng(0)
    for part, hw in (("train", hw_train), ("t10k", hw_test)):
        write_idx(d / f"{part}-images-idx3-ubyte",
                          rng.integers(0, 255, (6, *hw), dtype=np.uint8))
        write_idx(d / f"{part}-labels-idx1-ubyte", np.arange(6, dtype=np.uint8) % 3)


@SETTINGS
@given(hw_train=st.tuples(st.integers(1, 9), st.integers(1, 9)),
       hw_test=st.tuples(st.integers(1, 9), st.integers(1, 9)))
def test_train_and_test_of_different_image_sizes_fail_at_load(tmp_path_factory, hw_train,
                                                              hw_test):
    d = tmp_path_factory.mktemp("idx") / "set"
    _mnist_dir(d, hw_train, hw_test)
    if hw_train == hw_test:
        train, test = cn.load_dataset(d)
        assert train.input_shape == test.input_shape == (*hw_train, 1)
    else:
        with pytest.raises(DataError) as e:
            cn.load_dataset(d)
        msg = str(e.value)
        assert f"{hw_train[0]}x{hw_train[1]}" in msg and f"{hw_test[0]}x{hw_test[1]}" in msg \
            and "one image size" in msg


def test_header_is_read_alone(tmp_path):
    p = tmp_path / "imgs.gz"
    p.write_bytes(gzip.compress(_header(0x08, (3, 4, 5)) + bytes(60)))
    h = read_idx_header(p, IMAGES_MAGIC)
    assert h.dims == (3, 4, 5) and h.payload_bytes == 60 and h.header_bytes == 16
