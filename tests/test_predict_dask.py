"""`convnet predict --workers N` on a real Dask LocalCluster (2 worker processes) gives what one
process gives: the same top-k classes, probabilities within 1e-5, in input order, broken images
in the error column. One module, one cluster start (a few seconds)."""

from __future__ import annotations

import csv

import distributed  # the test extra installs Dask: this test always runs
import numpy as np
import pytest
from PIL import Image

import convnet as cn
from convnet.cli import predict as predict_cli
from convnet.cli.main import main


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # two cluster starts: ~15 s on 2 busy cores (still run by the suite)
def test_dask_local_cluster_equals_one_process(tmp_path, capsys):
    net = cn.build("INPUT(16x16x3) -> CONV(8,F=3,P=1) -> RELU -> POOL -> FC(5)", seed=0)
    model = tmp_path / "m.npz"
    cn.save(net, model, classes=list("abcde"),
            normalizer={"mean": np.full(3, 0.4, np.float32), "std": np.full(3, 0.2, np.float32)})
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    root.mkdir()
    for i in range(45):
        Image.fromarray(rng.integers(0, 256, (16 + i % 5, 16, 3), dtype=np.uint8)) \
            .save(root / f"{i:03d}.png")
    (root / "020x.png").write_bytes(b"not a png at all")
    one, many = tmp_path / "one.csv", tmp_path / "many.csv"
    assert main(["predict", str(model), str(root), "--out", str(one), "--batch-size", "8"]) == 1
    assert main(["predict", str(model), str(root), "--out", str(many), "--batch-size", "8",
                 "--workers", "2", "--save-input", str(tmp_path / "seen")]) == 1
    assert "1 could not be read" in capsys.readouterr().err
    a, b = _rows(one), _rows(many)
    assert [r["path"] for r in a] == [r["path"] for r in b] == \
        sorted(str(p) for p in root.iterdir())
    for ra, rb in zip(a, b, strict=True):
        assert ra["error"] == rb["error"] and ra["warning"] == rb["warning"]
        assert [ra[f"class_{k}"] for k in (1, 2, 3)] == [rb[f"class_{k}"] for k in (1, 2, 3)]
        for k in (1, 2, 3):
            if ra["error"]:
                assert ra[f"prob_{k}"] == rb[f"prob_{k}"] == ""
            else:
                assert abs(float(ra[f"prob_{k}"]) - float(rb[f"prob_{k}"])) <= 1e-5
    assert [r["path"] for r in b if r["error"]] == [str(root / "020x.png")]
    # the workers wrote what the network saw
    assert len(list((tmp_path / "seen").glob("*.input.png"))) == 45
    # this process never loaded a model for the workers: they cache their own
    assert not predict_cli._MODELS
    # a running cluster, by its scheduler's address (here one in this process: quick to start)
    with distributed.LocalCluster(n_workers=1, processes=False, dashboard_address=None) as c:
        sched = tmp_path / "sched.csv"
        assert main(["predict", str(model), str(root), "--out", str(sched), "--batch-size", "8",
                     "--scheduler", c.scheduler_address]) == 1
    assert [(r["path"], r["class_1"], r["error"]) for r in _rows(sched)] == \
        [(r["path"], r["class_1"], r["error"]) for r in a]


@pytest.mark.parametrize("address", ["badaddr", "::::"])
def test_a_bad_scheduler_address_is_one_error_line(address, tmp_path, capsys):
    model = tmp_path / "m.npz"
    cn.save(cn.build("INPUT(8x8x1) -> FC(3)", seed=0), model, classes=list("abc"))
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    code = main(["predict", str(model), str(tmp_path / "a.png"), "--scheduler", address])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert err.strip().splitlines() == [
        err.strip().splitlines()[0]] and "not a Dask scheduler address" in err
    assert "tcp://HOST:PORT" in err


def test_the_max_flags_travel_with_each_dask_task(tmp_path):
    from convnet.safety import caps

    model = tmp_path / "m.npz"
    cn.save(cn.build("INPUT(8x8x1) -> FC(3)", seed=0), model, classes=list("abc"))
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    submitted = []

    class Client:  # records what a worker process would be sent
        def submit(self, fn, *args, **kwargs):
            submitted.append((fn, args))
            return type("F", (), {"result": lambda self: []})()

        def scheduler_info(self):
            return {"workers": {"w": {}}}

    dask = predict_cli._Dask(None)
    dask.client = Client()
    stamp = predict_cli._stamp(model)
    chunk = [(str(tmp_path / "a.png"), None)]
    with caps(image_pixels=50):
        list(dask.rows(stamp, [chunk], "pad", False, 1))
    fn, args = submitted[0]
    # the worker (another process: no override of its own) applies the client's caps
    predict_cli._MODELS.clear()
    rows = fn(*args)
    predict_cli._MODELS.clear()
    assert "over the limit of 50 pixels" in rows[0]["error"], rows
