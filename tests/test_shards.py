"""Packed shards (issue 17): the DataSource interface, out-of-core training equal to in-memory
training bit for bit, bounded memory, integrity errors, resumable packing, `convnet pack`."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

import convnet as cn
from convnet.cli.main import main
from convnet.data import (
    Augmentation,
    Dataset,
    DataSource,
    Normalizer,
    ShardedDataset,
    load_dataset,
    load_image_folder,
    open_packed,
    pack,
    pack_arrays,
    train_val_split,
    write_idx,
)
from convnet.data import packing as packing_mod
from convnet.errors import DataError
from convnet.train import Callback, Trainer, fit, load_checkpoint
from convnet.train.checkpoint import LAST

CLASSES = [str(i) for i in range(10)]
SMALL = ("INPUT(8x8x1) -> CONV(8,F=3,P=1) -> BN -> RELU -> POOL -> DROPOUT(0.1) -> FC(32) "
         "-> RELU -> FC(10)")


def _uint8_set(n, shape=(8, 8, 1), seed=0):
    rng = np.random.default_rng(seed)
    # class-dependent brightness so a network has something to learn
    y = rng.integers(0, 10, n)
    u8 = np.clip(rng.normal(20 * y[:, None, None, None], 40, (n, *shape)), 0, 255)
    return u8.astype(np.uint8), y


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """The same 600 images in memory (float32 k/255) and packed in shards of 37."""
    u8, y = _uint8_set(600)
    root = tmp_path_factory.mktemp("packed") / "p"
    pack_arrays(root, (u8[:500], y[:500]), (u8[500:], y[500:]), CLASSES, name="blobs",
                hflip=True, shard_size=37)
    x = u8.astype(np.float32) / np.float32(255)
    mem = Dataset(x[:500], y[:500], CLASSES, name="blobs", hflip=True)
    mem_test = Dataset(x[500:], y[500:], CLASSES, name="blobs", hflip=True)
    return root, mem, mem_test


# ----------------------------------------------------------------------------- the interface
def test_take_gives_the_in_memory_values_bit_for_bit(packed):
    root, mem, mem_test = packed
    train, test = open_packed(root)
    assert isinstance(train, ShardedDataset) and isinstance(train, DataSource)
    assert isinstance(mem, DataSource)
    assert len(train) == 500 and len(test) == 100 and len(train._state.x) == 14
    assert train.input_shape == (8, 8, 1) and train.label_shape == ()
    assert train.classes == CLASSES and train.hflip and train.name == "blobs"
    idx = np.random.default_rng(1).permutation(500)[:123]  # across every shard, any order
    x, y = train.take(idx)
    mx, my = mem.take(idx)
    assert x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(x, mx)
    np.testing.assert_array_equal(y, my)
    np.testing.assert_array_equal(train.take_labels(idx), my)
    np.testing.assert_array_equal(test.take(np.arange(100))[0], mem_test.x)
    assert train.take(np.array([-1]))[1][0] == mem.y[-1]
    with pytest.raises(IndexError, match="out of range for 500"):
        train.take(np.array([500]))
    # views: subset and the stratified split give the in-memory split's indices
    rest, part = train.split(0.1, seed=0)
    m_rest, m_part = mem.split(0.1, seed=0)
    np.testing.assert_array_equal(part.take(np.arange(len(part)))[0], m_part.x)
    np.testing.assert_array_equal(rest.subset(slice(5, 50)).y, m_rest.y[5:50])
    np.testing.assert_array_equal(train.class_counts(), mem.class_counts())
    back = test.to_memory()
    assert isinstance(back, Dataset) and np.array_equal(back.x, mem_test.x)


def test_manifest_statistics_exact_and_normalizer_streams(packed):
    root, mem, _ = packed
    train, _ = open_packed(root)
    m = json.loads((root / "manifest.json").read_text())
    assert m["format"] == "convnet-shards" and m["splits"]["train"]["count"] == 500
    assert m["splits"]["train"]["class_counts"] == mem.class_counts().tolist()
    # the manifest's one-pass statistics, exact, against a float64 two-pass reference
    x64 = np.rint(mem.x.astype(np.float64) * 255) / 255
    np.testing.assert_allclose(train.statistics["mean"], x64.mean(axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(train.statistics["std"], x64.std(axis=(0, 1, 2)), rtol=1e-12)
    # Normalizer.fit over a source reads it chunk by chunk, and equals the array's bit for bit
    a, b = Normalizer.fit(mem.x), Normalizer.fit(train)
    assert np.array_equal(a.mean, b.mean) and np.array_equal(a.std, b.std)


# ------------------------------------------------------------------------------- training
def _train(data, val, prefetch=None, callbacks=(), resume=None, epochs=2):
    net = cn.build(SMALL, seed=1) if resume is None else load_checkpoint(resume).net
    trainer = Trainer(net, data, val, epochs=epochs, batch_size=32, lr=1e-2, seed=3,
                      augment=Augmentation(pad=1, flip=True), normalizer=Normalizer.fit(data),
                      prefetch=prefetch, callbacks=list(callbacks))
    if resume is not None:
        trainer.restore(resume)
    return net, trainer.run()


def test_out_of_core_training_equals_in_memory_bit_for_bit(packed):
    root, mem, _ = packed
    train, _ = open_packed(root)
    runs = []
    for data, prefetch in ((mem, None), (train, None), (train, 0), (train, 3)):
        rest, val = train_val_split(data, 0.1, seed=0)
        net, h = _train(rest, val, prefetch)
        runs.append((net.state_dict(), h["loss"], h["val_loss"], h["val_accuracy"]))
    ref = runs[0]
    for state, *logs in runs[1:]:
        for key, v in ref[0].items():
            np.testing.assert_array_equal(state[key], v, err_msg=key)
        assert logs == list(ref[1:])


class _StopAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_batch_end(self, batch, logs):
        if self.trainer.step == self.step:
            self.trainer.request_stop()


def test_resume_out_of_core_mid_epoch_is_bit_identical(packed, tmp_path):
    from convnet.train import ModelCheckpoint

    root, _, _ = packed
    train, test = open_packed(root)
    full, _ = _train(train, test, prefetch=2)
    _, h = _train(train, test, prefetch=2, callbacks=[_StopAt(20), ModelCheckpoint(tmp_path)])
    assert h.stop_reason == "interrupted"
    resumed, _ = _train(train, test, prefetch=2, resume=tmp_path / LAST)
    for key, v in full.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[key], v, err_msg=key)


def test_per_pixel_labels_pack_and_train_out_of_core(tmp_path):
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (80, 6, 6, 1), dtype=np.uint8)
    y = (u8[..., 0] > 127).astype(np.int64)  # (N, H, W)
    pack_arrays(tmp_path / "seg", (u8[:64], y[:64]), (u8[64:], y[64:]), ["off", "on"],
                shard_size=10)
    train, test = open_packed(tmp_path / "seg")
    assert train.label_shape == (6, 6)
    x = u8.astype(np.float32) / np.float32(255)
    out = []
    for data, val in (((x[:64], y[:64]), (x[64:], y[64:])), (train, test)):
        net = cn.build("INPUT(6x6x1) -> CONV(8,F=3,P=1) -> RELU -> CONV(2,F=1)", seed=0)
        h = fit(net, data, val, epochs=3, batch_size=16, lr=3e-2, seed=0)
        out.append((net.state_dict(), h["val_mean_iou"]))
    assert out[0][1] == out[1][1]
    for key, v in out[0][0].items():
        np.testing.assert_array_equal(out[1][0][key], v)
    assert cn.evaluate(net, test)["count"] == 16 * 36


_PROBE = textwrap.dedent("""
    import json, sys
    import numpy as np

    def status():
        out = {}
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(value.split()[0]) * 1024
        return out

    def reset_peak():  # Linux >= 4.0; elsewhere the peak since start is an upper bound
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass

    import convnet as cn
    from convnet.data import Normalizer, open_packed
    from convnet.train import fit
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # tiny GEMMs: one thread is quicker than handing blocks around

    train, _ = open_packed(sys.argv[1])
    net = cn.build("INPUT(64x64x1) -> FC(10)", seed=0)
    norm = Normalizer(**train.statistics)
    # warm up: imports, compiled kernels, the allocator's first buffers
    fit(net, train.subset(slice(0, 1024)), epochs=1, batch_size=128, lr=1e-3, normalizer=norm,
        prefetch=2)
    reset_peak()
    base = status()["VmRSS"]
    h = fit(net, train, epochs=1, batch_size=128, lr=1e-3, normalizer=norm, prefetch=2)
    print(json.dumps({"delta": status()["VmHWM"] - base, "images": len(train),
                      "loss": h.last["loss"]}))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_memory_stays_bounded_on_a_set_larger_than_the_budget(tmp_path):
    """An epoch over 24,000 images (98 MB as uint8, 393 MB as float32) grows the process's
    resident memory by less than 40 MiB: a few batches, not the data set."""
    budget = 40 << 20
    n = 24_000
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (n, 64, 64, 1), dtype=np.uint8)
    y = rng.integers(0, 10, n)
    pack_arrays(tmp_path / "big", (u8, y), (u8[:10], y[:10]), CLASSES, shard_size=3000)
    assert u8.nbytes > 2 * budget and u8.nbytes * 4 > 8 * budget
    del u8
    out = subprocess.run([sys.executable, "-c", _PROBE, str(tmp_path / "big")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["images"] == n and np.isfinite(r["loss"])
    assert r["delta"] < budget, f"resident memory grew by {r['delta'] / 2**20:.1f} MiB"


# ------------------------------------------------------------------------------ integrity
def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_wrong_hash_shape_dtype_and_truncation_are_data_errors(packed, tmp_path):
    root, _, _ = packed
    # a flipped byte in a shard: found when that shard is first read (lazy), or at open
    bad = _copy(root, tmp_path / "hash")
    shard = bad / "train-x-00003.npy"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    train, _ = open_packed(bad)  # headers fine: opens
    train.take(np.arange(0, 37))  # shard 0 only: fine
    with pytest.raises(DataError, match=r"train-x-00003\.npy: SHA-256 .* but the manifest says"):
        train.take(np.arange(3 * 37, 3 * 37 + 5))
    with pytest.raises(DataError, match=r"train-x-00003\.npy: SHA-256"):
        open_packed(bad, verify="open")
    open_packed(bad, verify="none").train.take(np.arange(120, 125))  # trusted: no check
    # training raises it from the prefetch thread, in the training thread
    with pytest.raises(DataError, match="train-x-00003"):
        fit(cn.build(SMALL, seed=0), open_packed(bad).train, epochs=1, prefetch=2)
    # wrong shape / dtype: a shard from elsewhere
    wrong = _copy(root, tmp_path / "shape")
    np.save(wrong / "test-x-00002.npy", np.zeros((26, 8, 8, 1), np.float32))
    with pytest.raises(DataError, match=r"test-x-00002\.npy: holds 26x8x8x1 float32 but the "
                                        r"manifest says 26x8x8x1 uint8"):
        open_packed(wrong)
    np.save(wrong / "test-x-00002.npy", np.zeros((25, 8, 8, 1), np.uint8))
    with pytest.raises(DataError, match="holds 25x8x8x1 uint8 but the manifest says 26x8x8x1"):
        open_packed(wrong)
    # a truncated shard
    cut = _copy(root, tmp_path / "cut")
    f = cut / "train-y-00002.npy"
    f.write_bytes(f.read_bytes()[:-3])
    with pytest.raises(DataError, match=r"train-y-00002\.npy: .* truncated"):
        open_packed(cut)
    (cut / "train-y-00002.npy").unlink()
    with pytest.raises(DataError, match=r"train-y-00002\.npy: shard file missing"):
        open_packed(cut)


def test_bad_manifests_are_data_errors_naming_the_file(packed, tmp_path):
    root, _, _ = packed
    d = _copy(root, tmp_path / "m")
    text = (d / "manifest.json").read_text()
    (d / "manifest.json").write_text(text[: len(text) // 2])
    with pytest.raises(DataError, match=r"manifest\.json: not valid JSON .*truncated"):
        open_packed(d)
    with pytest.raises(DataError, match=r"manifest\.json: not valid JSON"):
        load_dataset(d)  # load_dataset opens packed directories too
    m = json.loads(text)
    m["splits"]["train"]["shards"][0]["x"] = "../../etc/passwd"
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DataError, match="not a plain .npy name"):
        open_packed(d)
    m = json.loads(text)
    m["splits"]["test"]["count"] = 99
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DataError, match="its shards hold 100 samples but its count is 99"):
        open_packed(d)
    (d / "manifest.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(DataError, match="not a convnet-shards manifest"):
        open_packed(d)


# ---------------------------------------------------------------------------------- packing
def _folder(root, n_per_class=9, broken=True):
    rng = np.random.default_rng(0)
    for c, name in enumerate(("bag", "coat", "shoe")):
        (root / name).mkdir(parents=True)
        for i in range(n_per_class):
            h, w = (12, 10) if i % 4 else (16, 16)  # mixed sizes: the most common wins
            a = np.clip(rng.normal(60 * c + 40, 30, (h, w, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(a).save(root / name / f"{i:02d}.png")
    if broken:
        (root / "coat" / "zz-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    return root


def test_pack_folder_skips_unreadable_and_equals_the_folder_loader(tmp_path):
    root = _folder(tmp_path / "photos")
    result = pack(root, tmp_path / "p", shard_size=5, workers=2)  # decoded by 2 processes
    assert result.made == 7 and result.kept == 0  # 28 files: 23 train, 5 test
    assert [s["path"] for s in result.skipped] == [str(root / "coat" / "zz-broken.png")]
    assert "not an image Pillow can read" in result.skipped[0]["reason"]
    m = json.loads((tmp_path / "p" / "manifest.json").read_text())
    assert m["skipped"] == result.skipped and m["input_shape"] == [12, 10, 3]
    assert m["splits"]["train"]["count"] + m["splits"]["test"]["count"] == 27
    assert not list((tmp_path / "p").glob(".*.tmp")) and not list((tmp_path / "p").glob("*-0*.json"))
    # the folder loader refuses the broken file; without it, it reads the images the pack
    # holds, bit for bit, in the same order and the same train/test split
    with pytest.raises(DataError, match="zz-broken.png"):
        load_image_folder(root)
    (root / "coat" / "zz-broken.png").unlink()
    pack(root, tmp_path / "p2", shard_size=5, workers=0)
    train, test = load_image_folder(root)
    p_train, p_test = load_dataset(tmp_path / "p2")
    for mem, sh in ((train, p_train), (test, p_test)):
        x, y = sh.take(np.arange(len(sh)))
        np.testing.assert_array_equal(x, mem.x)
        np.testing.assert_array_equal(y, mem.y)


def test_pack_is_resumable_atomic_and_repairs(tmp_path, monkeypatch):
    root = _folder(tmp_path / "photos", broken=False)
    whole = pack(root, tmp_path / "whole", shard_size=4, workers=0)
    made = []
    real = packing_mod._make_shard

    def crash_after_three(*args, **kwargs):
        if len(made) == 3:
            raise KeyboardInterrupt  # as Ctrl-C in the middle of the fourth shard
        made.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(packing_mod, "_make_shard", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        pack(root, tmp_path / "p", shard_size=4, workers=0)
    assert not (tmp_path / "p" / "manifest.json").exists()
    assert len(list((tmp_path / "p").glob("*-x-*.npy"))) == 3
    monkeypatch.setattr(packing_mod, "_make_shard", real)
    again = pack(root, tmp_path / "p", shard_size=4, workers=0)
    assert (again.made, again.kept) == (whole.made - 3, 3)
    a = json.loads((tmp_path / "whole" / "manifest.json").read_text())
    b = json.loads((tmp_path / "p" / "manifest.json").read_text())
    assert a["splits"] == b["splits"]  # same shards, same hashes, same statistics
    # a finished pack run again re-checks every shard and re-makes a damaged one
    (tmp_path / "p" / "train-x-00001.npy").write_bytes(b"garbage")
    fixed = pack(root, tmp_path / "p", shard_size=4, workers=0)
    assert (fixed.made, fixed.kept) == (1, whole.made - 1)
    assert json.loads((tmp_path / "p" / "manifest.json").read_text())["splits"] == a["splits"]
    # other settings into the same directory, or a directory of other files: refused
    with pytest.raises(DataError, match=r"holds a pack of other data or settings \(.*size"):
        pack(root, tmp_path / "p", shard_size=4, size="8x8", workers=0)
    with pytest.raises(DataError, match="inside the source folder"):
        pack(root, root / "packed", workers=0)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty .*notes.txt.* and not a pack"):
        pack(root, tmp_path / "other", workers=0)


def test_pack_idx_and_fashion_seg_read_through_the_interface(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "idx"
    d.mkdir()
    for part, n in (("train", 30), ("t10k", 10)):
        write_idx(d / f"{part}-images-idx3-ubyte", rng.integers(0, 256, (n, 5, 7), dtype=np.uint8))
        write_idx(d / f"{part}-labels-idx1-ubyte", rng.integers(0, 3, n).astype(np.uint8))
    mem = load_dataset(d)
    pack(d, tmp_path / "p", shard_size=7)
    for a, b in zip(mem, load_dataset(tmp_path / "p"), strict=True):
        np.testing.assert_array_equal(b.take(np.arange(len(b)))[0], a.x)
        np.testing.assert_array_equal(b.y, a.y)
    from convnet.data.registry import DEBIAN_FASHION_DIR

    if not DEBIAN_FASHION_DIR.is_dir():
        pytest.skip("Fashion-MNIST (Debian's dataset-fashion-mnist) is not installed")
    seg = load_dataset("fashion-seg", n_train=12, n_test=4)
    pack("fashion-seg", tmp_path / "seg", n_train=12, n_test=4, shard_size=5)
    p_train, p_test = load_dataset(tmp_path / "seg")
    assert p_train.label_shape == (32, 64) and p_train.classes[0] == "background"
    for a, b in zip(seg, (p_train, p_test), strict=True):
        x, y = b.take(np.arange(len(b)))
        np.testing.assert_array_equal(x, a.x)
        np.testing.assert_array_equal(y, a.y)


# ----------------------------------------------------------------------------------- CLI
ARCH = "INPUT(12x10x3) -> CONV(4,F=3,P=1) -> RELU -> POOL -> FC(3)"


def test_cli_pack_then_train_equals_training_on_the_folder(tmp_path, capsys):
    root = _folder(tmp_path / "photos", broken=False)
    common = ["--arch", ARCH, "--epochs", "2", "--batch-size", "8"]
    assert main(["train", "--data", str(root), *common, "--out", str(tmp_path / "mem")]) == 0
    assert main(["pack", str(root), "-o", str(tmp_path / "p"), "--shard-size", "6",
                 "--workers", "0"]) == 0
    said = capsys.readouterr().out
    assert "packed 21 train + 6 test images 12x10x3 of 3 classes into 5 shards" in said
    assert f"convnet train --data {tmp_path / 'p'}" in said
    assert main(["train", "--data", str(tmp_path / "p"), *common, "--prefetch", "3",
                 "--out", str(tmp_path / "disk")]) == 0
    a = load_checkpoint(tmp_path / "mem" / LAST).net.state_dict()
    b = load_checkpoint(tmp_path / "disk" / LAST).net.state_dict()
    for key, v in a.items():
        np.testing.assert_array_equal(b[key], v, err_msg=key)
    ra = json.loads((tmp_path / "mem" / "results.json").read_text())
    rb = json.loads((tmp_path / "disk" / "results.json").read_text())
    assert ra["test_accuracy"] == rb["test_accuracy"] and ra["test_loss"] == rb["test_loss"]
    # eval reads the packed test split (the run remembers its data)
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "disk"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == rb["test_accuracy"]


def test_cli_folder_too_large_for_memory_says_how_to_pack(tmp_path, monkeypatch, capsys):
    import convnet.data.images as images

    root = _folder(tmp_path / "my photos", broken=False)
    monkeypatch.setattr(images, "IN_MEMORY_LIMIT", 5_000)  # 27 images of 12x10x3 take 38,880
    assert main(["train", "--data", str(root), "--arch", ARCH, "--epochs", "1",
                 "--out", str(tmp_path / "r")]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("convnet train: error: ") and "27 images of 12x10x3" in line
    # the message's commands work as written
    pack_cmd = re.search(r"convnet (pack .*?) then convnet (train .*?) \(", line)
    assert pack_cmd, line
    assert main([*shlex.split(pack_cmd.group(1)), "--workers", "0"]) == 0
    assert main([*shlex.split(pack_cmd.group(2)), "--arch", ARCH, "--epochs", "1",
                 "--out", str(tmp_path / "r")]) == 0
    assert "test accuracy" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["nosuchdata", "-o", "{tmp}/o"], "unknown data set 'nosuchdata'"),
    (["{tmp}/photos", "-o", "{tmp}/o", "--size", "abc"], "--size: size 'abc': expected HxW"),
    (["{tmp}/photos", "-o", "{tmp}/o", "--n-train", "5"], "--n-train and --n-test are for "
                                                          "fashion-seg"),
])
def test_cli_pack_errors_are_one_line(argv, message, tmp_path, capsys):
    _folder(tmp_path / "photos", n_per_class=2, broken=False)
    argv = [a.format(tmp=tmp_path) for a in argv]
    try:
        code = main(["pack", *argv])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


# ------------------------------------------------------------------- hostile packed directories
def _run_with_timeout(fn, seconds=20):
    """``fn()``'s exception (or None) in a daemon thread: a hang fails the test, never blocks."""
    import threading

    box = {}

    def run():
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["exc"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "hung (reading a FIFO?)"
    return box.get("exc")


def test_shard_header_sizes_never_wrap(tmp_path):
    # 2**40 x 2**40 x 8 x 1 uint8 is 2**83 bytes: int64 arithmetic wraps it to 0, which a file
    # holding only the header then "matches"
    from convnet.data.shards import read_npy_header

    header = "{'descr': '|u1', 'fortran_order': False, 'shape': (1099511627776, " \
             "1099511627776, 8, 1), }"
    header += " " * (-(len(header) + 11) % 64) + "\n"
    f = tmp_path / "train-x-00000.npy"
    f.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode())
    with pytest.raises(DataError, match=r"train-x-00000\.npy: .*9,671,406,556,917,033,397,"
                                        r"649,536 bytes.* truncated"):
        read_npy_header(f)
    # and a pickled shard is refused by the shared header reader, never loaded
    np.save(tmp_path / "obj.npy", np.array([{}, 1], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="pickled object array"):
        read_npy_header(tmp_path / "obj.npy")


def test_manifest_is_read_under_a_cap(packed, tmp_path, monkeypatch):
    root, _, _ = packed
    d = _copy(root, tmp_path / "m")
    monkeypatch.setenv("CONVNET_MAX_MANIFEST_BYTES", "1000")
    with pytest.raises(DataError, match=r"manifest\.json: the manifest is [\d,]+ bytes, over the "
                                        r"limit of 1,000 bytes.*CONVNET_MAX_MANIFEST_BYTES"):
        open_packed(d)
    monkeypatch.delenv("CONVNET_MAX_MANIFEST_BYTES")
    (d / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataError, match=r"manifest\.json: (JSON nested too deeply|not a "
                                        r"convnet-shards)"):
        open_packed(d)


@pytest.mark.parametrize("name", ["train-x-00001.npy", "train-y-00000.npy", "manifest.json"])
def test_a_fifo_in_a_packed_directory_is_refused_not_waited_on(packed, tmp_path, name):
    import os

    root, _, _ = packed
    d = _copy(root, tmp_path / "f")
    (d / name).unlink()
    os.mkfifo(d / name)
    exc = _run_with_timeout(lambda: open_packed(d, verify="none").train.take(np.arange(40, 45)))
    assert isinstance(exc, DataError) and "FIFO" in str(exc) and name in str(exc), exc


def test_shards_and_manifest_follow_the_umask(tmp_path):
    import os
    import stat

    u8, y = _uint8_set(20)
    old = os.umask(0o022)
    try:
        pack_arrays(tmp_path / "p", (u8[:15], y[:15]), (u8[15:], y[15:]), CLASSES, shard_size=8)
    finally:
        os.umask(old)
    for name in ("manifest.json", "pack-job.json", "train-x-00000.npy", "test-y-00000.npy"):
        assert stat.S_IMODE((tmp_path / "p" / name).stat().st_mode) == 0o644, name


@pytest.mark.parametrize("argv, message", [
    (["--size", "100001x8"], "a side of at most 100,000 pixels"),
    (["--size", "9000x9000"], "size 9000x9000: each resized image is 81,000,000 pixels, over "
                              "the limit of 40,000,000 pixels"),
    (["--size", "100x100", "--max-image-pixels", "5000"], "over the limit of 5,000 pixels"),
])
def test_cli_pack_size_is_bounded(argv, message, tmp_path, capsys):
    _folder(tmp_path / "photos", n_per_class=2, broken=False)
    try:
        code = main(["pack", str(tmp_path / "photos"), "-o", str(tmp_path / "o"), *argv,
                     "--workers", "0"])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


def test_max_flags_reach_the_decoding_processes(tmp_path):
    from convnet.safety import caps

    root = _folder(tmp_path / "photos", broken=False)  # 12x10 (120 pixels) and 16x16 (256)
    with caps(image_pixels=200):
        result = pack(root, tmp_path / "p", workers=2)
    reasons = [s["reason"] for s in result.skipped]
    assert len(reasons) == 9 and all("over the limit of 200 pixels" in r for r in reasons), \
        reasons


def test_cli_pack_of_a_fake_cifar10_folder(tmp_path, capsys):
    """issue 17: `convnet pack` of a CIFAR-10 python-batches folder (5 train batches of 6
    images, a test batch of 6): the shards hold the batches' pixels and labels, in order."""
    from test_data import _make_cifar  # the CIFAR batch writer of the data tests

    d, batches = _make_cifar(tmp_path / "cifar", n=6, names=("airplane", "automobile", "bird"))
    out = tmp_path / "packed"
    assert main(["pack", str(d), "-o", str(out), "--shard-size", "8", "--workers", "0"]) == 0
    said = capsys.readouterr().out
    assert "packed 30 train + 6 test images 32x32x3 of 3 classes into 5 shards" in said, said
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["classes"] == ["airplane", "automobile", "bird"]
    train, test = load_dataset(out)
    assert isinstance(train, ShardedDataset) and (len(train), len(test)) == (30, 6)
    assert train.classes == ["airplane", "automobile", "bird"]
    want_x = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    want_y = np.concatenate([batches[f"data_batch_{i}"][1] for i in range(1, 6)])
    for split, x, y in ((train, want_x, want_y), (test, *batches["test_batch"])):
        got_x, got_y = split.take(np.arange(len(split)))
        np.testing.assert_allclose(got_x * 255, x, atol=1e-3)
        np.testing.assert_array_equal(got_y, y)
        np.testing.assert_array_equal(split.y, y)
    # the same as loading the batches into memory
    mem_train, _ = load_dataset("cifar10", data_dir=d)
    np.testing.assert_array_equal(train.take(np.arange(30))[0], mem_train.x)
    # run again on the finished pack: every shard re-checked, nothing re-made
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main(["pack", str(d), "-o", str(out), "--shard-size", "8", "--workers", "0"]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.suffix == ".npy"} == \
        {k: v for k, v in before.items() if k.endswith(".npy")}
