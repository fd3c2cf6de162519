"""`convnet visualize` and `convnet plot` without a browser: the data embedded in the page is the
engine's, the page is self-contained, the PNGs are drawn, and bad input exits 2 with one line."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

import convnet as cn
from convnet.cli.main import main
from convnet.errors import ConfigError
from convnet.viz import plots
from convnet.viz.page import (
    Sample,
    architecture_svg,
    build_data,
    decode_float32,
    evaluate_test,
    layer_activations,
    read_metrics_log,
    render_html,
    visualize,
)
from viznets import EXOTIC, SPEC, images, make_net


def embedded(html_text: str) -> dict:
    m = re.search(r'<script type="application/json" id="cn-data">(.*?)</script>', html_text, re.S)
    assert m, "the page has no embedded data"
    return json.loads(m.group(1))


def train_tiny_run(run_dir):
    """A run directory as `convnet train` leaves it (best.npz with class names and normaliser,
    metrics.jsonl / metrics.csv): 2 epochs of `fit` on the 8x8 digits, about a second; a
    random-weights checkpoint and a made-up log if the training module is missing."""
    from convnet.data import Normalizer, load_digits

    train, test = load_digits()
    net = cn.build(SPEC, seed=0)
    norm = Normalizer.fit(train.x)
    info = {"shape": [8, 8, 1], "range": [0, 1], "dataset": "digits"}
    try:
        from convnet.train import MetricsLog, ModelCheckpoint, fit
    except ImportError:
        from convnet.train.checkpoint import save

        save(net, run_dir / "best.npz", classes=train.classes, normalizer=norm, epoch=2,
             input_info=info)
        (run_dir / "metrics.jsonl").write_text(
            '{"epoch": 1, "loss": 1.4, "val_accuracy": 0.7}\n'
            '{"epoch": 2, "loss": 0.5, "val_accuracy": 0.85}\n', encoding="utf-8")
        return run_dir
    fit(net, train, test, epochs=2, batch_size=32, lr=0.01, normalizer=norm, input_info=info,
        callbacks=[MetricsLog(run_dir), ModelCheckpoint(run_dir)])
    return run_dir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("run"))


# ------------------------------------------------------------------------- embedded data
@pytest.mark.parametrize("spec", [SPEC, EXOTIC])
def test_embedded_activations_are_the_engines(spec):
    net = make_net(spec)
    net.normalizer = {"mean": np.full(net.input_shape[2], 0.4, np.float32),
                      "std": np.full(net.input_shape[2], 0.2, np.float32)}
    raw = images(3, net.input_shape, seed=1)
    data = build_data(net, [Sample(raw[i], f"img{i}", label=i % 3) for i in range(3)])
    x = (raw - 0.4) / np.float32(0.2)
    scores = net.forward(x)
    acts = [np.stack([decode_float32(smp["acts"][i], m["out_shape"]) for smp in data["samples"]])
            for i, m in enumerate(data["layers"])]
    # the last one is exactly what net.forward returns (same batch: the same BLAS sums),
    # unless net.forward folds a BN into the CONV before it (another rounding)
    if any(type(s).__name__ == "FoldedStep" for s in net._plan.eval):
        np.testing.assert_allclose(acts[-1], scores, rtol=1e-5, atol=1e-5)
    else:
        np.testing.assert_array_equal(acts[-1], scores)
    # and each one is its layer applied to the one before
    prev = x
    for layer, a in zip(net.layers, acts, strict=True):
        np.testing.assert_array_equal(layer.forward(prev), a)
        prev = a
    for n, smp in enumerate(data["samples"]):
        np.testing.assert_array_equal(decode_float32(smp["input"], net.input_shape), x[n])
        np.testing.assert_array_equal(decode_float32(smp["raw"], net.input_shape), raw[n])
        last = acts[-1][n]                       # the page's probabilities: from its volumes
        p = np.exp(last.astype(np.float64) - last.max())
        np.testing.assert_allclose(smp["probs"], p / p.sum(), rtol=1e-6)
        assert smp["pred"] == int(last.argmax()) == int(scores[n].argmax())
    for layer, meta in zip(net.layers, data["layers"], strict=True):
        for key, value in {**layer.params, **layer.buffers}.items():
            w = meta["weights"][key]
            np.testing.assert_array_equal(decode_float32(w["data"], w["shape"]), value)


def test_first_conv_activation_matches_torch():
    import torch

    net = make_net()
    x = images(2, (8, 8, 1), seed=3)
    conv1 = layer_activations(net, x)[0]
    W, b = net.layers[0].params["W"], net.layers[0].params["b"]
    ref = torch.nn.functional.conv2d(
        torch.from_numpy(x.transpose(0, 3, 1, 2)).double(),
        torch.from_numpy(W.transpose(0, 3, 1, 2)).double(), torch.from_numpy(b).double(),
        padding=1).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(conv1, ref, atol=1e-5)


def test_receptive_fields_and_shapes_come_from_arith():
    net = make_net()
    data = build_data(net, [Sample(np.zeros((8, 8, 1), np.float32), "zero")])
    rows = cn.arith.layer_rows(net)
    for meta, row, layer in zip(data["layers"], rows, net.layers, strict=True):
        assert meta["rf"]["size"] == [float(v) for v in row.rf.size]
        assert meta["rf"]["jump"] == [float(v) for v in row.rf.jump]
        assert meta["params"] == row.params and meta["macs"] == row.macs
        assert meta["out_shape"] == list(layer.output_shape)
    assert data["layers"][0]["window"] == {"F": [3, 3], "S": [1, 1], "P": [1, 1],
                                           "dilation": [1, 1]}
    assert data["flatten"] == {"layer": 6, "name": "fc1", "kind": "FC", "shape": [2, 2, 6],
                               "n": 24}


def test_budget_and_map_caps_are_said_on_the_page():
    net = make_net()
    samples = [Sample(im, f"i{k}") for k, im in enumerate(images(5, (8, 8, 1)))]
    data = build_data(net, samples, budget_floats=1, max_maps=2)
    assert len(data["samples"]) == 1
    assert any("4 of 5 images were left out" in n for n in data["notes"])
    assert any("At most 2 activation maps" in n for n in data["notes"])
    assert data["layers"][0]["maps_shown"] == 2
    page = render_html(data)
    assert "4 of 5 images were left out" in page


def test_bad_inputs_raise_convnet_errors():
    net = make_net()
    with pytest.raises(ConfigError, match="at least one input image"):
        build_data(net, [])
    with pytest.raises(ConfigError, match="8x8x1"):
        build_data(net, [Sample(np.zeros((9, 9, 1), np.float32), "big")])
    vec = cn.build("INPUT(64) -> FC(10)", seed=0)
    with pytest.raises(ConfigError, match="vectors"):
        build_data(vec, [Sample(np.zeros(64, np.float32), "v")])


def test_evaluate_test_finds_the_most_confident_mistakes():
    net = make_net()
    x = images(40, (8, 8, 1), seed=5)
    scores = net.forward(x)
    pred = scores.argmax(1)
    y = (pred + np.arange(40) % 2) % 10  # half right, half wrong
    result = evaluate_test(net, x, y, num_wrong=5)
    assert result.confusion.sum() == 40 and np.trace(result.confusion) == 20
    assert result.accuracy == 0.5
    conf = [w["confidence"] for w in result.wrong]
    assert conf == sorted(conf, reverse=True) and len(conf) == 5
    for w in result.wrong:
        assert w["pred"] == pred[w["index"]] != y[w["index"]]


# ----------------------------------------------------------------------------- the page
def test_page_is_self_contained_and_its_data_survives(tmp_path):
    net = make_net()
    hist = [{"epoch": 1, "loss": 2.0, "accuracy": 0.5}, {"epoch": 2, "loss": 1.0, "accuracy": 0.7}]
    classes = [f"</script><b>{i}" for i in range(10)]  # hostile names stay data
    out = visualize(net, tmp_path / "r.html", images=[Sample(images(1, (8, 8, 1))[0], "x")],
                    history=hist, classes=classes)
    text = out.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text
    links = re.findall(r"""\s(?:src|href)\s*=\s*["']?([^"'\s>]*)""", text)
    assert links and all(u.startswith("#") for u in links), links  # in-page anchors only
    assert "<link" not in text and "@import" not in text
    assert "default-src 'none'" in text  # the CSP forbids any request the page could make
    data = embedded(text)
    assert data["classes"] == classes
    assert data["model"]["spec"] == net.spec
    assert 'data-metric="loss"' in text and 'data-metric="acc"' in text
    assert "%%" not in text  # every placeholder was filled


def test_architecture_svg_names_every_layer_with_its_hyperparameters():
    net = make_net()
    data = build_data(net, [Sample(np.zeros((8, 8, 1), np.float32), "z")])
    svg = architecture_svg(data["layers"], net.input_shape)
    for layer in net.layers:
        assert f">{layer.name}<" in svg
    assert "K=4 F=3 S=1 P=1" in svg and "K=6 F=3 S=1 P=0" in svg and "F=2 S=2 P=0" in svg
    assert ">8x8x4<" in svg and ">2x2x6<" in svg and ">10<" in svg


def test_read_metrics_log(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(
        '{"epoch": 1, "loss": 2.0, "phase": "train"}\n{"epoch": 1, "val_loss": 2.5}\n'
        '{"epoch": 2, "loss": 1.0}\n{"epoch": 3, "lo', encoding="utf-8")
    log = read_metrics_log(tmp_path)
    assert log == [{"epoch": 1.0, "loss": 2.0, "val_loss": 2.5}, {"epoch": 2.0, "loss": 1.0}]
    csv_dir = tmp_path / "c"
    csv_dir.mkdir()
    (csv_dir / "metrics.csv").write_text("epoch,loss,accuracy\n1,0.9,0.5\n2,0.5,0.8\n")
    assert read_metrics_log(csv_dir)[1] == {"epoch": 2.0, "loss": 0.5, "accuracy": 0.8}
    assert read_metrics_log(tmp_path / "none", [{"epoch": 1, "loss": 3}]) == \
        [{"epoch": 1.0, "loss": 3.0}]


# ------------------------------------------------------------------------------------ CLI
def test_cli_visualize_writes_the_page_from_a_run_directory(run_dir, tmp_path, capsys):
    img = tmp_path / "digit.png"
    Image.fromarray((images(1, (16, 16))[0] * 255).astype(np.uint8)).save(img)
    out = tmp_path / "report.html"
    rc = main(["visualize", str(run_dir), "--image", str(img), "--data", "digits",
               "--samples", "4", "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    text = out.read_text(encoding="utf-8")
    data = embedded(text)
    assert data["classes"] == [str(i) for i in range(10)]
    assert data["samples"][0]["source"] == "file"
    assert "resized 16x16 -> 8x8" in " ".join(data["samples"][0]["notes"])
    assert len(data["test"]["confusion"]) == 10
    assert sum(map(sum, data["test"]["confusion"])) == data["test"]["count"] == 359
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in data["history"]] == [float(r["epoch"]) for r in logged]
    assert [h["loss"] for h in data["history"]] == [r["loss"] for r in logged]
    assert 'class="confusion"' in text and 'data-metric="loss"' in text
    # normalised input embedded, the raw image shown
    x = decode_float32(data["samples"][0]["input"])
    raw = decode_float32(data["samples"][0]["raw"])
    assert not np.allclose(x, raw)


@pytest.mark.parametrize("argv, needle", [
    (["visualize", "no/such/model.npz"], "no such checkpoint"),
    (["plot", "no/such/model.npz", "--what", "filters"], "no such checkpoint"),
])
def test_cli_missing_model_is_one_line_and_exit_2(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"convnet {argv[0]}: error:") and needle in err
    assert len(err.splitlines()) == 1


def test_cli_missing_image_is_one_line_and_exit_2(run_dir, tmp_path, capsys):
    assert main(["visualize", str(run_dir), "--image", str(tmp_path / "nope.png"),
                 "-o", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("convnet visualize: error:") and "nope.png" in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "r.html").exists()
    assert main(["plot", str(run_dir), "--what", "activations", "--image",
                 str(tmp_path / "nope.png"), "-o", str(tmp_path / "a.png")]) == 2


def test_cli_a_spec_gets_random_weights_and_says_so(tmp_path, capsys):
    img = tmp_path / "x.png"
    Image.new("L", (8, 8), 128).save(img)
    out = tmp_path / "r.html"
    assert main(["visualize", SPEC, "--image", str(img), "-o", str(out)]) == 0
    assert "untrained" in " ".join(embedded(out.read_text(encoding="utf-8"))["notes"])


@pytest.mark.parametrize("what", ["filters", "activations", "curves", "confusion"])
def test_cli_plot_writes_pngs(run_dir, tmp_path, what, capsys):
    out = tmp_path / f"{what}.png"
    assert main(["plot", str(run_dir), "--what", what, "-o", str(out)]) == 0, \
        capsys.readouterr().err
    img = Image.open(out).convert("RGB")
    assert img.size[0] >= 300 and img.size[1] >= 200
    colours = img.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 30  # drawn, not a blank canvas


def test_plot_errors_teach(run_dir, tmp_path, capsys):
    assert main(["plot", str(run_dir), "--what", "filters", "--layer", "fc1",
                 "-o", str(tmp_path / "f.png")]) == 2
    assert "CONV layers: conv1, conv2" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="no metrics log"):
        plots.plot_curves([])


def test_colormap_is_the_page_scale():
    lo, hi, stops = plots.layer_scale(np.array([-2.0, 1.0]))
    assert (lo, hi) == (-2.0, 2.0) and stops is plots.DIVERGING
    rgb = plots.colormap(np.array([-2.0, 0.0, 2.0]), lo, hi, stops)
    assert rgb.tolist() == [[33, 102, 172], [247, 247, 247], [178, 24, 43]]
    lo, hi, stops = plots.layer_scale(np.array([0.0, 3.0]))
    assert stops is plots.VIRIDIS and (lo, hi) == (0.0, 3.0)
