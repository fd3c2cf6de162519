"""Checkpoints: round trip, atomic writes, and refusal of anything unsafe or damaged."""

from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest

import convnet as cn
from convnet.errors import CheckpointError
from convnet.optim import Adam
from convnet.train import checkpoint as ck

SPEC = "INPUT(6x6x1) -> CONV(4,F=3,P=1) -> BN -> RELU -> POOL -> DROPOUT(0.5) -> FC(3)"


def _trained_net(seed: int = 0) -> tuple[cn.Sequential, Adam]:
    net = cn.build(SPEC, seed=seed)
    opt = Adam(lr=1e-2)
    rng = np.random.default_rng(seed)
    x = rng.random((8, 6, 6, 1), dtype=np.float32)
    y = rng.integers(0, 3, 8)
    for _ in range(2):
        _, d = cn.softmax_cross_entropy(net.forward(x, train=True), y)
        net.backward(d)
        opt.step(net)
    return net, opt


def test_round_trip_keeps_everything(tmp_path):
    net, opt = _trained_net()
    data_rng = np.random.default_rng(7)
    data_rng.random(3)
    p = ck.save(net, tmp_path / "m.npz", optimizer=opt, epoch=4, metrics={"loss": 0.5},
                history=[{"epoch": 1, "loss": 1.0}], classes=["a", "b", "c"],
                normalizer={"mean": np.array([0.5]), "std": np.array([0.25])},
                config={"lr": 0.01}, data_rng=data_rng, note="hello")
    c = ck.load_checkpoint(p)
    assert c.spec == net.spec and c.epoch == 4 and c.classes == ["a", "b", "c"]
    assert c.metrics == {"loss": 0.5} and c.history == [{"epoch": 1, "loss": 1.0}]
    assert c.extra == {"note": "hello"} and c.config == {"lr": 0.01}
    for key, v in net.state_dict().items():
        np.testing.assert_array_equal(c.net.state_dict()[key], v)
    assert c.net.state_dict()["bn1.running_var"].tolist() != [1, 1, 1, 1]  # buffers saved
    for key, v in opt.state_dict().items():
        np.testing.assert_array_equal(c.optimizer[key], v)
    np.testing.assert_array_equal(c.normalizer["std"], [0.25])
    # both generators continue exactly where they were
    assert c.net.rng.random() == net.rng.random()
    restored = ck.rng_state_from_json(c.rng["data"])
    assert restored.random() == data_rng.random()
    # same predictions; cn.load gives the network with classes attached
    x = np.random.default_rng(1).random((5, 6, 6, 1), dtype=np.float32)
    loaded = cn.load(p)
    np.testing.assert_array_equal(loaded.predict(x), net.predict(x))
    assert loaded.classes == ["a", "b", "c"]
    # a run directory resolves to best.npz, else last.npz
    os.replace(p, tmp_path / "last.npz")
    assert ck.load_checkpoint(tmp_path).path.name == "last.npz"


def test_atomic_write_leaves_previous_checkpoint_on_crash(tmp_path, monkeypatch):
    path = tmp_path / "last.npz"
    net1, _ = _trained_net(seed=1)
    ck.save(net1, path, epoch=1)
    net2, _ = _trained_net(seed=2)

    def crash(src, dst):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        ck.save(net2, path, epoch=2)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.npz"]  # no temp file left
    c = ck.load_checkpoint(path)
    assert c.epoch == 1
    np.testing.assert_array_equal(c.net["conv1"].params["W"], net1["conv1"].params["W"])


def test_atomic_write_cleans_up_when_interrupted_while_writing(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    net, _ = _trained_net()
    ck.save(net, path, epoch=3)

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ck.save(net, path, epoch=4)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]
    assert ck.load_checkpoint(path).epoch == 3


def _good(tmp_path) -> tuple[str, dict[str, np.ndarray]]:
    net, opt = _trained_net()
    p = ck.save(net, tmp_path / "good.npz", optimizer=opt)
    with np.load(p) as z:
        return str(p), {k: z[k] for k in z.files}


def test_truncated_and_non_npz_files_are_refused(tmp_path):
    p, _ = _good(tmp_path)
    data = open(p, "rb").read()
    for n in (0, 10, len(data) // 2, len(data) - 30):
        bad = tmp_path / f"trunc{n}.npz"
        bad.write_bytes(data[:n])
        with pytest.raises(CheckpointError, match=f"trunc{n}.npz"):
            ck.load_checkpoint(bad)
    text = tmp_path / "notes.npz"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="notes.npz.*not an .npz"):
        cn.load(text)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        cn.load(tmp_path / "missing.npz")
    np.save(tmp_path / "plain.npy", np.zeros(3))  # an .npy, not an .npz
    with pytest.raises(CheckpointError, match="plain.npy"):
        cn.load(tmp_path / "plain.npy")


def test_corrupt_member_is_refused(tmp_path):
    p, arrays = _good(tmp_path)
    # flip bytes inside a compressed-free member: the CRC check must catch it
    raw = bytearray(open(p, "rb").read())
    with zipfile.ZipFile(p) as z:
        info = z.getinfo("param/conv1.W.npy")
    start = info.header_offset + 30 + len(info.filename) + 200
    raw[start:start + 16] = b"\xff" * 16
    bad = tmp_path / "flipped.npz"
    bad.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="flipped.npz"):
        ck.load_checkpoint(bad)


class _Evil:
    def __reduce__(self):
        return (open, (os.environ["CONVNET_TEST_PWNED"], "w"))


def test_pickled_object_array_is_refused_and_never_executed(tmp_path, monkeypatch):
    _, arrays = _good(tmp_path)
    marker = tmp_path / "pwned"
    monkeypatch.setenv("CONVNET_TEST_PWNED", str(marker))
    obj = np.empty(1, dtype=object)
    obj[0] = _Evil()
    arrays["param/conv1.W"] = obj
    bad = tmp_path / "evil.npz"
    np.savez(bad, **arrays)  # numpy pickles the object array here
    with pytest.raises(CheckpointError, match="evil.npz.*pickled"):
        ck.load_checkpoint(bad)
    assert not marker.exists()


@pytest.mark.parametrize("change, message", [
    (lambda a: a.pop("spec"), "missing 'spec'"),
    (lambda a: a.pop("param/fc1.W"), "missing fc1.W"),
    (lambda a: a.update({"param/extra.W": np.zeros(2)}), "unexpected extra.W"),
    (lambda a: a.update({"param/fc1.b": np.zeros(4, np.float32)}), r"fc1.b: expected shape \(3,\), received \(4,\)"),
    (lambda a: a.update({"param/fc1.b": np.full(3, np.nan, np.float32)}), "NaN"),
    (lambda a: a.update({"spec": np.array("INPUT(6x6x1) -> CONV(4,F=9)")}), "does not build"),
    (lambda a: a.update({"format": np.array("something-else")}), "format"),
    (lambda a: a.update({"meta": np.array("{not json")}), "not valid JSON"),
    (lambda a: a.update({"rng": np.array('{"net": {"bit_generator": "Nope"}}')}), "rng"),
    (lambda a: a.update({"norm/mean": np.zeros(3, np.float32),
                         "norm/std": np.ones(3, np.float32)}), "channel"),
    (lambda a: a.update({"meta": np.array('{"classes": ["a"]}')}), "1 class names"),
])
def test_invalid_contents_are_refused(tmp_path, change, message):
    _, arrays = _good(tmp_path)
    change(arrays)
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    with pytest.raises(CheckpointError, match=message) as info:
        ck.load_checkpoint(bad)
    assert "bad.npz" in str(info.value)


def test_save_to_a_directory_is_a_clear_error(tmp_path):
    import convnet as cn

    net = cn.build("INPUT(4x4x1) -> FC(2)", seed=0)
    with pytest.raises(cn.CheckpointError, match="is a directory: give a file name"):
        cn.save(net, tmp_path)
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind
