"""Hostile checkpoints: one schema validation of the whole file before use, sizes from the
headers before any allocation, the stored spec read as text only, and every failure one
CheckpointError naming the file (exit status 2 and one line from the command line)."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import convnet as cn
from convnet.cli.main import main
from convnet.errors import CheckpointError, ConvnetError, InputError
from convnet.optim import Adam
from convnet.safety import caps
from convnet.train import checkpoint as ck

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
SPEC = "INPUT(6x6x1) -> CONV(4,F=3,P=1) -> BN -> RELU -> POOL -> FC(3)"
CLI = {"arch": SPEC, "data": "digits", "optimizer": "adam", "lr": 0.001, "momentum": None,
       "weight_decay": None, "schedule": "cosine", "epochs": 2, "batch_size": 8, "seed": 0,
       "augment": None, "val_split": 0.1, "early_stop": None, "threads": 1,
       "arch_spec": SPEC}


def _arrays(tmp_path, **kw) -> dict[str, np.ndarray]:
    net = cn.build(SPEC, seed=0)
    opt = Adam(lr=1e-3)
    x = np.random.default_rng(0).random((4, 6, 6, 1), dtype=np.float32)
    _, d = cn.softmax_cross_entropy(net.forward(x, train=True), np.array([0, 1, 2, 0]))
    net.backward(d)
    opt.step(net)
    p = ck.save(net, tmp_path / "good.npz", optimizer=opt, classes=["a", "b", "c"],
                normalizer={"mean": [0.5], "std": [0.25]}, config={"cli": CLI, "step": 1},
                **kw)
    with np.load(p) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> dict[str, np.ndarray]:
    return _arrays(tmp_path_factory.mktemp("good"))


def _write(path, arrays) -> str:
    np.savez(path, **arrays)
    return str(path)


def _refused(path, *patterns: str) -> str:
    with pytest.raises(CheckpointError) as e:
        ck.load_checkpoint(path)
    msg = str(e.value)
    assert str(path) in msg
    for p in patterns:
        assert p in msg, (p, msg)
    return msg


def _npy(header: str | bytes, data: bytes = b"", version: int = 1) -> bytes:
    if isinstance(header, str):
        try:
            h = header.encode("latin-1")
        except UnicodeEncodeError:  # NumPy's version 3 headers are UTF-8
            h, version = header.encode("utf-8"), 3
    size = len(h).to_bytes(2 if version == 1 else 4, "little")
    return b"\x93NUMPY" + bytes([version, 0]) + size + h + data


def _zip(path, members: dict[str, bytes], compress=zipfile.ZIP_STORED) -> str:
    with zipfile.ZipFile(path, "w", compress) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return str(path)


def _members(arrays) -> dict[str, bytes]:
    out = {}
    for k, v in arrays.items():
        buf = io.BytesIO()
        np.save(buf, v)
        out[f"{k}.npy"] = buf.getvalue()
    return out


# ------------------------------------------------------------------- the spec is text, only text
def test_stored_spec_is_never_a_path_or_a_zoo_name(tmp_path, good, monkeypatch):
    monkeypatch.setenv("CONVNET_SECRET_FOR_TEST", "hunter2-do-not-print")
    for spec in ("/proc/self/environ", "lenet5", str(tmp_path / "arch.txt")):
        (tmp_path / "arch.txt").write_text(SPEC)  # a real spec file: still not read
        p = _write(tmp_path / "m.npz", {**good, "spec": np.array(spec)})
        msg = _refused(p, "does not build")
        assert "hunter2" not in msg and "CONVNET_SECRET" not in msg


def test_errors_quote_only_short_escaped_excerpts(tmp_path, good):
    long_text = "\x1b[2J" + "A" * 100_000
    p = _write(tmp_path / "m.npz", {**good, "format": np.array(long_text[:60])})
    msg = _refused(p, "format")
    assert "\x1b" not in msg and "\\x1b" in msg
    p = _write(tmp_path / "m.npz", {**good, "meta": np.array(long_text)})
    msg = _refused(p, "not valid JSON")
    assert len(msg) < 500 and "\x1b" not in msg


# ---------------------------------------------------------------- sizes before any allocation
def test_zip_bomb_member_is_refused_from_the_zip_directory(tmp_path, good):
    members = _members(good)
    # 64 MiB of zeros declared (and really there) in a member of ~64 KB
    members["loop/order.npy"] = _npy("{'descr': '<i8', 'fortran_order': False, 'shape': "
                                     f"({8 * 2**20},), }}".ljust(117) + "\n",
                                     bytes(64 * 2**20))
    p = _zip(tmp_path / "bomb.npz", members, zipfile.ZIP_DEFLATED)
    assert os.path.getsize(p) < 2**20
    with caps(checkpoint_bytes=16 * 2**20):
        _refused(p, "once decompressed", "--max-checkpoint-bytes", "CONVNET_MAX_CHECKPOINT_BYTES")


def test_zip_bomb_under_the_cap_is_refused_by_its_inflation(tmp_path, good):
    # 4.5 MB -> 1.1 GB was the review's; here 128 MiB of zeros in a ~130 KB file, default cap
    members = _members(good)
    members["loop/order.npy"] = _npy("{'descr': '<i8', 'fortran_order': False, 'shape': "
                                     f"({16 * 2**20},), }}".ljust(117) + "\n",
                                     bytes(128 * 2**20))
    p = _zip(tmp_path / "bomb.npz", members, zipfile.ZIP_DEFLATED)
    assert os.path.getsize(p) < 2**20
    _refused(p, "a zip bomb", "inflate to 134,2")


def test_npy_header_claiming_a_trillion_floats_is_refused_before_reading(tmp_path, good):
    members = _members(good)
    members["param/fc1.W.npy"] = _npy("{'descr': '<f4', 'fortran_order': False, "
                                      "'shape': (1000000, 1000000), }".ljust(117) + "\n",
                                      bytes(64))
    p = _zip(tmp_path / "huge.npz", members)
    _refused(p, "param/fc1.W", "4,000,000,000,000 bytes", "the archive says the member holds 64")


def test_stored_spec_that_would_allocate_gigabytes_is_refused_first(tmp_path, good):
    # INPUT(100000x1x1) -> FC(9999) is a billion weights: 4 GB before anything is compared
    p = _write(tmp_path / "m.npz", {**good, "spec": np.array("INPUT(100000x1x1) -> FC(9999)")})
    _refused(p, "999,909,999 parameters", "refused before allocating")


def test_member_count_is_bounded(tmp_path, good, monkeypatch):
    monkeypatch.setattr(ck, "MAX_MEMBERS", len(good) - 1)
    _refused(_write(tmp_path / "m.npz", good), "members (a checkpoint has at most")


def test_file_over_the_cap_is_refused_before_it_is_opened_as_zip(tmp_path, good):
    p = _write(tmp_path / "m.npz", good)
    with caps(checkpoint_bytes=1000):
        _refused(p, "over the limit of 1,000 bytes")
    assert ck.load_checkpoint(p).epoch == 0


# ------------------------------------------------------------------------------- npy headers
@SETTINGS
@given(header=st.one_of(
    st.text(max_size=120),
    st.builds(lambda d, f, s: repr({"descr": d, "fortran_order": f, "shape": s}),
              st.one_of(st.sampled_from(["<f4", "|O", "<U5", "V8", "<c8", "S3", "<M8"]),
                        st.text(max_size=8)),
              st.one_of(st.booleans(), st.integers(-2, 2)),
              st.one_of(st.tuples(st.integers(-5, 10**13)), st.lists(st.integers(0, 3)),
                        st.integers(), st.none())),
    st.just("(" * 5000), st.just("{'descr': '<f4', " * 300)))
def test_any_npy_header_is_read_or_refused(tmp_path, good, header):
    members = _members(good)
    members["param/fc1.b.npy"] = _npy(header, bytes(12))
    p = _zip(tmp_path / "h.npz", members)
    try:
        ck.load_checkpoint(p)
    except CheckpointError as e:
        assert str(p) in str(e)


@pytest.mark.parametrize("header, message", [
    ("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), ", "malformed .npy header"),
    ("{'descr': '|O', 'fortran_order': False, 'shape': (3,), }", "pickled object array"),
    ("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (3,), }", "object arrays, rec"),
    ("{'descr': '<f4', 'fortran_order': False, 'shape': (-3,), }", "is not"),
    ("__import__('os').system('true')", "malformed"),
])
def test_bad_npy_headers(tmp_path, good, header, message):
    members = _members(good)
    members["param/fc1.b.npy"] = _npy(header, bytes(12))
    _refused(_zip(tmp_path / "h.npz", members), message)


@pytest.mark.parametrize("key", ["spec", "meta", "format", "optim/optimizer"])
@pytest.mark.parametrize("code", [0x110000, 0xFFFFFFFF, 0xD800])
def test_text_members_with_invalid_code_points(tmp_path, good, key, code):
    # found by fuzz/run.py: NumPy makes a malformed str of UTF-32 past U+10FFFF (SystemError
    # when it is indexed); surrogates are not text either
    members = _members(good)
    members[f"{key}.npy"] = _npy("{'descr': '<U2', 'fortran_order': False, 'shape': (), }"
                                 .ljust(117) + "\n", b"A\0\0\0" + code.to_bytes(4, "little"))
    _refused(_zip(tmp_path / "t.npz", members), f"{key!r} is not valid text")


# ------------------------------------------------------------------------------- the schema
def test_meta_nested_a_hundred_thousand_deep(tmp_path, good):
    deep = '{"extra": ' + "[" * 100_000 + "]" * 100_000 + "}"
    _refused(_write(tmp_path / "m.npz", {**good, "meta": np.array(deep)}), "'meta'")
    deep = '{"extra": {"a": ' + "[" * 50 + "]" * 50 + "}}"
    _refused(_write(tmp_path / "m.npz", {**good, "meta": np.array(deep)}), "nested more than 32")


@pytest.mark.parametrize("change, message", [
    ({"norm/mean": np.array(["a"])}, "normalisation"),
    ({"norm/std": np.array([np.inf], np.float32)}, "finite with std > 0"),
    ({"norm/std": np.array([0.0], np.float32)}, "finite with std > 0"),
    ({"norm/std": np.array([np.nan], np.float32)}, "finite with std > 0"),
    ({"norm/std": np.array([-1.0], np.float32)}, "finite with std > 0"),
    ({"norm/mean": np.array([np.inf], np.float32)}, "finite with std > 0"),
    ({"param/fc1.W": np.zeros((36, 3), np.int64)}, "not floating point"),
    ({"version": np.array(10**6)}, "version"),
    ({"version": np.array("1")}, "version"),
    ({"dtype": np.array("float16")}, "dtype"),
    ({"spec": np.zeros(3)}, "'spec' must be a text scalar"),
    ({"rng": np.array('{"net": {"bit_generator": "__class__"}}')}, "net rng"),
    ({"rng": np.array('{"net": 5}')}, "rng.net"),
    ({"loop/order": np.array(["x"])}, "loop/order"),
    ({"loop/sums": np.zeros(5)}, "loop/sums"),
    ({"optim/conv1.W.exp_avg": np.zeros(7, np.float32)}, "optim/conv1.W.exp_avg"),
    ({"optim/ghost.W.exp_avg": np.zeros(7, np.float32)}, "optim/ghost.W.exp_avg"),
    ({"extra/thing": np.zeros(1)}, "unknown member"),
])
def test_members_against_the_schema(tmp_path, good, change, message):
    _refused(_write(tmp_path / "m.npz", {**good, **change}), message)


def _meta(good) -> dict:
    return json.loads(str(good["meta"]))


@pytest.mark.parametrize("path, value, message", [
    (("epoch",), -1, "epoch"), (("epoch",), "3", "epoch"), (("epoch",), 10**12, "epoch"),
    (("classes",), ["a", 1, "c"], "classes"), (("classes",), ["a" * 5000] * 3, "classes"),
    (("history",), [1, 2], "history"), (("metrics",), [], "metrics"),
    (("input", "range"), [1, 0], "input.range"), (("input", "shape"), [0], "input.shape"),
    (("input", "shape"), [7, 7, 1], "input.shape"),
    (("input", "mode"), "CMYK", "input.mode"), (("config", "step"), -5, "config.step"),
    (("config", "cli"), "sgd", "config.cli"),
    (("config", "cli", "lr"), "fast", "config.cli.lr"),
    (("config", "cli", "lr"), -1.0, "config.cli.lr"),
    (("config", "cli", "batch_size"), 0, "config.cli.batch_size"),
    (("config", "cli", "optimizer"), "rmsprop", "config.cli.optimizer"),
    (("config", "cli", "augment"), "yes", "config.cli.augment"),
    (("config", "cli", "val_split"), 1.5, "config.cli.val_split"),
])
def test_meta_fields_against_the_schema(tmp_path, good, path, value, message):
    meta = _meta(good)
    target = meta
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    _refused(_write(tmp_path / "m.npz", {**good, "meta": np.array(json.dumps(meta))}), message)


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                     | st.text(max_size=5),
                     lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c,
                                                                          max_size=3),
                     max_leaves=8)


@SETTINGS
@given(key=st.sampled_from(sorted(ck.CLI_SCHEMA)), value=_json, drop=st.booleans())
def test_any_run_config_is_accepted_or_refused_before_resume(tmp_path_factory, good, key, value,
                                                            drop):
    """Generated cli configs: each either passes the schema (and resume can read every field it
    needs) or is one CheckpointError naming the field."""
    meta = _meta(good)
    cli = meta["config"]["cli"]
    if drop:
        cli.pop(key, None)
    else:
        cli[key] = value
    p = _write(tmp_path_factory.mktemp("cfg") / "m.npz", {**good, "meta": np.array(json.dumps(meta))})
    try:
        c = ck.load_checkpoint(p)
    except CheckpointError as e:
        assert f"config.cli.{key}" in str(e) or f"lacks {key!r}" in str(e)
    else:  # what `convnet train --resume` does with it
        from convnet.cli import train

        s = train._settings(_no_args(), c.config["cli"])
        for k in (k for k, f in ck.CLI_SCHEMA.items() if f.required):
            assert k in s


def _no_args():
    import argparse

    from convnet.cli import train

    p = argparse.ArgumentParser()
    train.add_arguments(p)
    return p.parse_args([])


# ------------------------------------------------------------------------ mutated whole files
@SETTINGS
@given(data=st.data())
def test_mutated_checkpoints_load_or_are_one_checkpoint_error(tmp_path_factory, good, data):
    raw = bytearray(open(_write(tmp_path_factory.mktemp("mut") / "g.npz", good), "rb").read())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        action = data.draw(st.sampled_from(["flip", "insert", "cut"]))
        if action == "flip":
            raw[i] = data.draw(st.integers(0, 255))
        elif action == "insert":
            raw[i:i] = data.draw(st.binary(min_size=1, max_size=8))
        else:
            del raw[i:i + data.draw(st.integers(1, 64))]
    p = tmp_path_factory.mktemp("mut") / "m.npz"
    p.write_bytes(bytes(raw))
    try:
        c = ck.load_checkpoint(p)
    except CheckpointError as e:
        assert str(p) in str(e)
    else:
        assert c.net.spec == SPEC


# ----------------------------------------------------------------------- files that are not
def test_special_files_are_refused(tmp_path):
    fifo = tmp_path / "x.npz"
    os.mkfifo(fifo)
    _refused(fifo, "is a FIFO (named pipe), not a regular file")
    link = tmp_path / "zero.npz"
    link.symlink_to("/dev/zero")
    _refused(link, "is a character device")


# ---------------------------------------------------------------- non-finite model outputs
def test_weights_of_3e38_are_loaded_but_their_scores_never_printed(tmp_path, capsys):
    # the output overflows (the engine checks each layer's input, not the last output)
    net = cn.build("INPUT(6x6x1) -> FC(3)", seed=0)
    for layer in net.layers:
        if "W" in layer.params:
            layer.params["W"][...] = 3e38
    p = str(cn.save(net, tmp_path / "huge.npz"))
    net = cn.load(p)  # finite weights: a valid file
    from convnet.safety import check_finite_scores

    with np.errstate(all="ignore"):
        scores = net.predict(np.ones((2, 6, 6, 1), np.float32))
    with pytest.raises(InputError, match="not finite"):
        check_finite_scores(scores, p)
    img = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray(np.full((6, 6), 200, np.uint8)).save(img)
    code = main(["visualize", p, "--image", str(img), "-o", str(tmp_path / "r.html")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("convnet visualize: error: ")
    # the page's probabilities: softmax refuses non-finite scores before any JSON is written
    assert "JSON compliant" not in err and "scores contain NaN or Inf" in err


# ------------------------------------------------------------------------ writing checkpoints
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_checkpoints_follow_the_umask(tmp_path, umask, mode):
    net = cn.build("INPUT(4x4x1) -> FC(2)", seed=0)
    old = os.umask(umask)
    try:
        p = cn.save(net, tmp_path / f"m{umask:o}.npz")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(p).st_mode) == mode


_FULL_DISK = r"""
import resource, signal, sys, numpy as np, convnet as cn
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
path = sys.argv[1]
cn.save(cn.build("INPUT(4x4x1) -> FC(2)", seed=0), path)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    cn.save(cn.build("INPUT(40x40x1) -> FC(10)", seed=1), path)
except OSError as e:
    print(type(e).__name__, e.errno, e.filename, e.strerror, sep="|")
"""


def test_a_full_disk_names_the_file_and_keeps_the_previous_one(tmp_path):
    p = tmp_path / "last.npz"
    out = subprocess.run([sys.executable, "-c", _FULL_DISK, str(p)], capture_output=True,
                         text=True, timeout=120)
    kind, errno_, name, message = out.stdout.strip().split("|")
    assert name == str(p) and "previous file is kept" in message and errno_ == "27"  # EFBIG
    assert ck.load_checkpoint(p).net.input_shape == (4, 4, 1)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["last.npz"]


def test_every_failure_is_a_convnet_error(tmp_path, good):
    # the API contract the CLI relies on: ConvnetError (a ValueError), nothing else
    p = _write(tmp_path / "m.npz", {**good, "meta": np.array("[]")})
    with pytest.raises(ConvnetError):
        cn.load(p)


def test_eval_of_a_model_whose_scores_overflow_is_an_error_not_a_nan(tmp_path, capsys):
    """issue 20 (6): `convnet eval` never prints an accuracy from NaN/Inf scores."""
    net = cn.build("INPUT(8x8x1) -> FC(10)", seed=0)
    net.layers[0].params["W"][...] = 3e38
    p = str(cn.save(net, tmp_path / "huge.npz"))
    code = main(["eval", p, "--data", "digits"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "scores on" in err and "are not finite (NaN or Inf)" in err
