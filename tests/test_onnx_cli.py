"""Every verb that takes a MODEL reads a .onnx file (issue 14): summary, explain, eval, predict,
convert, scan, visualize, plot, export; `convnet import` writes a checkpoint; `convnet train
--init` fine-tunes an imported model."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from PIL import Image

import convnet as cn
from convnet.cli.main import main
from convnet.interop.onnx_export import export_onnx
from convnet.train.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A digits classifier trained one epoch, exported with its class names, normalisation and
    data set; its fully convolutional twin; a digit image and a larger one."""
    from convnet.data import Normalizer, load_dataset

    d = tmp_path_factory.mktemp("onnx_cli")
    train, test = load_dataset("digits")
    net = cn.build("digits", seed=0)
    norm = Normalizer.fit(train.x)
    cn.fit(net, train, epochs=1, batch_size=64, normalizer=norm, seed=0)
    info = {"shape": [8, 8, 1], "range": [0.0, 1.0], "mode": "L", "dataset": "digits"}
    onnx_path = export_onnx(net, d / "digits.onnx", classes=train.classes, normalizer=norm,
                            input_info=info)
    npz = cn.save(net, d / "digits.npz", classes=train.classes, normalizer=norm,
                  input_info=info)
    image = d / "digit.png"
    Image.fromarray((test.x[0, :, :, 0] * 255).astype(np.uint8), mode="L").save(image)
    big = d / "big.png"
    Image.fromarray((np.random.default_rng(0).random((24, 32)) * 255).astype(np.uint8),
                    mode="L").save(big)
    return {"dir": d, "onnx": onnx_path, "npz": npz, "image": image, "big": big, "net": net,
            "norm": norm}


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_summary_and_explain_read_onnx(models, capsys):
    spec = models["net"].spec
    code, out, _ = run(capsys, "summary", models["onnx"])
    assert code == 0 and spec in " ".join(out.split()) and "38,282" in out   # long lines wrap
    code, out, _ = run(capsys, "explain", models["onnx"])
    assert code == 0 and "conv1: CONV(16,F=3,P=1)" in out and "Flattens the 4x4x32" in out


def test_eval_and_predict_read_onnx_with_its_metadata(models, capsys):
    code, from_onnx, _ = run(capsys, "eval", models["onnx"], "--json")   # data set: metadata
    assert code == 0
    code, from_npz, _ = run(capsys, "eval", models["npz"], "--json")
    a, b = json.loads(from_onnx), json.loads(from_npz)
    assert a["accuracy"] == b["accuracy"] and a["confusion"] == b["confusion"]
    assert a["classes"] == b["classes"]
    code, out, _ = run(capsys, "predict", models["onnx"], models["image"], "--top-k", "2")
    code2, out2, _ = run(capsys, "predict", models["npz"], models["image"], "--top-k", "2")
    assert code == code2 == 0 and out.splitlines()[1:] == out2.splitlines()[1:]


def test_convert_and_scan_read_onnx(models, capsys):
    d = models["dir"]
    code, out, _ = run(capsys, "convert", models["onnx"], "--fully-convolutional", "-o",
                       d / "fcn.onnx")
    assert code == 0 and "ONNX, any image size" in out
    dims = [x.dim_value or x.dim_param
            for x in onnx.load(d / "fcn.onnx").graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", 1, "H", "W"]
    code, out, _ = run(capsys, "scan", d / "fcn.onnx", models["big"], "-o", d / "scan")
    assert code == 0 and (d / "scan" / "scan.png").exists()
    code, out, _ = run(capsys, "scan", models["onnx"], models["big"], "-o", d / "scan2")
    assert code == 0
    assert np.allclose(np.load(d / "scan" / "scores.npy"), np.load(d / "scan2" / "scores.npy"),
                       rtol=1e-5, atol=1e-5)


def test_visualize_and_plot_read_onnx(models, capsys):
    d = models["dir"]
    code, out, _ = run(capsys, "visualize", models["onnx"], "--image", models["image"], "-o",
                       d / "page.html", "--samples", "0")
    assert code == 0 and (d / "page.html").stat().st_size > 10_000
    code, out, _ = run(capsys, "plot", models["onnx"], "--what", "filters", "-o", d / "f.png")
    assert code == 0 and (d / "f.png").exists()


def test_export_and_import_verbs(models, capsys):
    d = models["dir"]
    code, out, err = run(capsys, "export", models["onnx"], "-o", d / "again.onnx", "--nhwc",
                         "--bake-normalization")
    assert code == 0, err
    assert "input 'input' float32 (N, 8, 8, 1) NHWC" in out
    assert "normalization (baked into the graph: give it images in [0, 1])" in out
    assert "onnxruntime gives convnet's scores to a relative" in out
    code, out, _ = run(capsys, "import", d / "again.onnx", "-o", d / "again.npz", "--layers")
    assert code == 0 and models["net"].spec in " ".join(out.split()) and "conv1" in out
    ckpt = load_checkpoint(d / "again.npz")
    assert ckpt.classes == [str(i) for i in range(10)]
    assert np.array_equal(ckpt.normalizer["mean"], models["norm"].mean)    # from the graph
    assert np.array_equal(ckpt.normalizer["std"], models["norm"].std)
    x = np.random.default_rng(0).random((2, 8, 8, 1), dtype=np.float32)
    assert np.array_equal(ckpt.net.forward(x), models["net"].forward(x))
    code, out, _ = run(capsys, "export", "resnet-cifar", "-o", d / "r.onnx", "--input", "16x16x3")
    assert code == 0 and "random weights (seed 0)" in out


def test_errors_are_one_line(models, capsys):
    d = models["dir"]
    bad = d / "bad.onnx"
    bad.write_bytes(b"garbage" * 20)
    for verb in ("summary", "eval", "predict", "visualize", "export"):
        argv = [verb, bad] + ([models["image"]] if verb == "predict" else []) + (
            ["-o", d / "x.onnx"] if verb == "export" else [])
        code, out, err = run(capsys, *argv)
        assert code == 2, verb
        assert err.strip().splitlines()[-1].startswith(
            f"convnet {verb}: error: bad.onnx: not an ONNX model"), (verb, err)


def test_train_init_from_onnx_replaces_the_last_fc(models, tmp_path, capsys):
    # a model with 5 outputs, fine-tuned on the 10 digits: its last FC is replaced
    five = cn.build("INPUT(8x8x1) -> CONV(8,F=3,P=1) -> RELU -> POOL -> FC(16) -> RELU -> FC(5)",
                    seed=0)
    path = export_onnx(five, tmp_path / "five.onnx")
    code, out, err = run(capsys, "train", "--init", path, "--epochs", "1", "--out",
                         tmp_path / "run")
    assert code == 0, err
    assert (f"--init {path}: starting from the model's weights; its last layer fc2 (FC(5), 5 "
            "outputs) is replaced by a new FC(10) with random weights, for the 10 classes of "
            "digits") in err
    ckpt = load_checkpoint(tmp_path / "run" / "last.npz")
    assert ckpt.spec.endswith("FC(16) -> RELU -> FC(10)")
    assert ckpt.config["cli"]["init"] == str(path)
    code, out, err = run(capsys, "train", "--init", path, "--arch", "digits")
    assert code == 2 and "--init takes the architecture from the model" in err
