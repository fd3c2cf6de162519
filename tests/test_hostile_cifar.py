"""Hostile CIFAR batches: the restricted unpickler never runs code, never allocates past the
caps, never crashes by signal (a tuple nested 10**6 deep used to segfault it), and every
failure is one DataError (exit status 2 and one line from the command line)."""

from __future__ import annotations

import io
import pickle
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convnet.data.cifar import (
    MAX_PICKLE_DEPTH,
    META,
    TEST_BATCH,
    TRAIN_BATCHES,
    RestrictedUnpickler,
    read_batch,
    safe_unpickle,
)
from convnet.errors import DataError
from convnet.safety import caps

SETTINGS = settings(max_examples=80, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def _load(data: bytes):
    return RestrictedUnpickler(io.BytesIO(data), source="fuzz", encoding="bytes").load()


def _deep_tuple(n: int) -> bytes:
    return b"\x80\x02N" + b"\x85" * n + b"."  # None, then TUPLE1 n times


def _batch_dir(tmp_path, hostile: bytes):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    good = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}, protocol=4)
    for name in (*TRAIN_BATCHES, TEST_BATCH):
        (d / name).write_bytes(good)
    (d / META).write_bytes(pickle.dumps({b"label_names": [b"a", b"b"]}, protocol=4))
    (d / TRAIN_BATCHES[0]).write_bytes(hostile)
    return d


@pytest.mark.parametrize("depth", [MAX_PICKLE_DEPTH + 1, 10**4])
def test_deep_tuples_are_refused_while_reading(depth):
    with pytest.raises(DataError, match=f"nested more than {MAX_PICKLE_DEPTH} deep"):
        _load(_deep_tuple(depth))
    # as a dict key (hashing it is what crashed CPython) and inside a frozenset
    with pytest.raises(DataError, match="nested more than"):
        _load(b"\x80\x02}" + _deep_tuple(depth)[2:-1] + b"K\x01s.")
    with pytest.raises(DataError, match="nested more than"):
        _load(b"\x80\x04(" + _deep_tuple(depth)[2:-1] + b"\x91.")


def test_a_tuple_nested_a_million_deep_is_exit_2_and_one_line_not_a_signal(tmp_path):
    d = _batch_dir(tmp_path, _deep_tuple(10**6))
    proc = subprocess.run(
        [sys.executable, "-m", "convnet.cli.main", "train", "--data", str(d), "--arch",
         "INPUT(32x32x3) -> FC(2)", "--epochs", "1", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("convnet train: error: ")
    assert "data_batch_1" in lines[0] and "nested more than" in lines[0]


def test_deep_lists_and_dicts_are_bounded_too():
    with pytest.raises(DataError, match="nested more than"):
        _load(b"\x80\x02" + b"(" * 300 + b"l" * 300 + b".")  # MARK ... LIST, 300 deep
    nested = b"\x80\x02" + b"}(U\x01k" * 150 + b"N" + b"u" * 150 + b"."
    with pytest.raises(DataError, match="nested more than"):
        _load(nested)


def test_billion_laughs_labels_are_refused_before_numpy_expands_them(tmp_path):
    x = [0] * 10
    for _ in range(8):  # 10**9 labels once expanded; 10 KB of pickle
        x = [x] * 10
    p = tmp_path / "laughs"
    p.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": x},
                               protocol=4))
    assert p.stat().st_size < 50_000
    with pytest.raises(DataError, match="flat list of whole numbers"):
        read_batch(p)


class _Reduce:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("payload, message", [
    (_Reduce(eval, ("1+1",)), "builtins.eval"),
    (_Reduce(np.load, ("x",)), "numpy.load"),
    (_Reduce(getattr, (np.ndarray, "tofile")), "builtins.getattr"),
    (_Reduce(np.ndarray, ((10**12,),)), "calls"),
    (_Reduce(np.dtype, ("O",)), "array of type"),
    (_Reduce(np.dtype, ("V1000000",)), "array of type"),
    (_Reduce(np.dtype, ([("a", "f4")],)), "array of type"),
])
def test_code_and_objects_are_refused(payload, message):
    with pytest.raises(DataError, match=message):
        _load(pickle.dumps(payload, protocol=4))


def test_reconstruct_and_setstate_are_checked():
    from numpy._core.multiarray import _reconstruct

    with caps(data_bytes=2**20):
        with pytest.raises(DataError, match="over the limit"):  # 8 TB announced
            _load(pickle.dumps(_Reduce(_reconstruct, (np.ndarray, (10**12,), b"b")),
                               protocol=4))
    with pytest.raises(DataError, match="only plain numpy arrays"):
        _load(pickle.dumps(_Reduce(_reconstruct, (None, (0,), b"b")), protocol=4))
    # an array state that lies about its data size, and a dtype state that is not plain
    good = pickle.dumps(np.arange(6, dtype=np.uint8), protocol=4)
    bad = good.replace(b"\x00\x01\x02\x03\x04\x05", b"\x00\x01\x02")
    bad = bad.replace(b"C\x06", b"C\x03")
    with pytest.raises(DataError):
        _load(bad)
    bad = good.replace(b"J\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t",
                       b"J\x00\x00\x10\x00J\xff\xff\xff\xffK\x00t")
    with pytest.raises(DataError, match="dtype state"):
        _load(bad)
    np.testing.assert_array_equal(_load(good), np.arange(6, dtype=np.uint8))
    # a dtype set by BUILD is a fresh copy: numpy's shared uint8 dtype is never touched
    assert np.dtype("u1").byteorder == "|"


def test_instantiating_opcodes_are_refused():
    for op in (b"\x81", b"\x92", b"o", b"i", b"\x82", b"\x83", b"\x84"):  # NEWOBJ(_EX), OBJ...
        with pytest.raises(DataError):
            _load(b"\x80\x04(N" + op + b"\x00\x00\x00\x00.")


@pytest.mark.parametrize("n", [2**48, 2**63 - 1])
def test_announced_lengths_are_checked_before_allocating(n):
    # found by fuzz/run.py: the pure-Python unpickler allocates a BYTEARRAY8's announced length
    # before reading it (MemoryError); FRAME and the other lengths are read, not allocated
    data = b"\x80\x05\x96" + n.to_bytes(8, "little") + b"abc."
    with pytest.raises(DataError, match="announced in 15 bytes of input"):
        _load(data)
    frame = b"\x80\x04\x95" + n.to_bytes(8, "little") + b"N."
    assert _load(frame) is None  # the frame is what is there, nothing is reserved for it


def test_object_count_is_capped():
    data = pickle.dumps(list(range(5000)), protocol=4)
    with caps(pickle_objects=1000), pytest.raises(DataError, match="object count"):
        _load(data)
    assert len(_load(data)) == 5000


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
    | st.binary(max_size=20) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.tuples(children, children)
    | st.dictionaries(st.binary(max_size=5) | st.integers(), children, max_size=4)
    | st.frozensets(st.integers(), max_size=4),
    max_leaves=40)


@SETTINGS
@given(value=_values, protocol=st.integers(2, 5))
def test_plain_data_round_trips_at_every_protocol(value, protocol):
    data = pickle.dumps(value, protocol=protocol)
    if protocol >= 4:
        assert _load(data) == value
        return
    # Protocols 2 and 3 write Python 3 bytes and sets as calls (_codecs.encode,
    # builtins.frozenset, __builtin__.bytes): refused by design, naming the call.
    try:
        assert _load(data) == value
    except DataError as e:
        assert "refused to load: the pickle asks for " in str(e)
        assert any(name in str(e) for name in ("_codecs.encode", "builtin"))


@SETTINGS
@given(protocol=st.integers(2, 5), dtype=st.sampled_from(["u1", "i8", "f4", "<f8", ">i4", "?"]),
       shape=st.lists(st.integers(0, 4), max_size=3))
def test_numeric_arrays_round_trip(protocol, dtype, shape):
    a = (np.arange(int(np.prod(shape))) % 7).astype(dtype).reshape(shape)
    data = pickle.dumps({b"a": a}, protocol=protocol)
    if b"_codecs" in data:
        return
    np.testing.assert_array_equal(_load(data)[b"a"], a)


@SETTINGS
@given(data=st.data())
def test_mutated_batches_load_or_are_one_data_error(tmp_path, data):
    """Generated files: a valid batch with random bytes replaced, inserted or cut."""
    raw = bytearray(pickle.dumps({b"data": np.arange(3072 * 2, dtype=np.uint8).reshape(2, 3072),
                                  b"labels": [1, 0]}, protocol=4))
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(raw) - 1))
        action = data.draw(st.sampled_from(["flip", "insert", "cut"]))
        if action == "flip":
            raw[i] = data.draw(st.integers(0, 255))
        elif action == "insert":
            raw[i:i] = data.draw(st.binary(min_size=1, max_size=8))
        else:
            del raw[i:i + data.draw(st.integers(1, 8))]
    p = tmp_path / "batch"
    p.write_bytes(bytes(raw))
    try:
        x, y = read_batch(p)
    except DataError as e:
        assert str(p) in str(e)
    else:
        assert x.shape[1:] == (32, 32, 3) and y.dtype == np.int64


def test_special_files_are_refused(tmp_path):
    import os

    fifo = tmp_path / "data_batch_1"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="is a FIFO"):
        safe_unpickle(fifo)
    with pytest.raises(DataError, match="character device"):
        safe_unpickle("/dev/zero")
