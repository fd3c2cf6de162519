"""`convnet visualize` and `convnet plot` without a browser: the data embedded in the page is the
engine's, the page is self-contained, the PNGs are drawn, and bad input exits 2 with one line."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
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
from viznets import EXOTIC, GRAPH, SPEC, images, make_net


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


@pytest.mark.parametrize("name", ["f.jpg", "f.npz", "f"])
def test_plot_refuses_an_output_that_is_not_png(run_dir, tmp_path, capsys, name):
    assert main(["plot", str(run_dir), "--what", "filters", "-o", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "plot writes PNG images" in err
    assert not (tmp_path / name).exists()


def test_colormap_is_the_page_scale():
    lo, hi, stops = plots.layer_scale(np.array([-2.0, 1.0]))
    assert (lo, hi) == (-2.0, 2.0) and stops is plots.DIVERGING
    rgb = plots.colormap(np.array([-2.0, 0.0, 2.0]), lo, hi, stops)
    assert rgb.tolist() == [[33, 102, 172], [247, 247, 247], [178, 24, 43]]
    lo, hi, stops = plots.layer_scale(np.array([0.0, 3.0]))
    assert stops is plots.VIRIDIS and (lo, hi) == (0.0, 3.0)


# ---------------------------------------------------------------------------- axes and ticks
@pytest.mark.parametrize("lo, hi, n, kwargs, expected", [
    (0.8531, 0.9163, 6, {}, [0.84, 0.86, 0.88, 0.9, 0.92]),     # accuracies: zoomed, not 0-1
    (0.217, 0.311, 6, {}, [0.2, 0.25, 0.3, 0.35]),              # the 0.217, 0.311
    (0.0, 1.0, 6, {}, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
    (1, 10, 8, {"integer": True}, [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]),
    (1, 15, 8, {"integer": True, "inside": True}, [2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0]),
    (1, 3, 8, {"integer": True, "inside": True}, [1.0, 2.0, 3.0]),  # never 2.29 or 1.5
    (1, 1, 8, {"integer": True, "inside": True}, [1.0]),
    (-4.3, 4.3, 5, {"inside": True}, [-4.0, -2.0, 0.0, 2.0, 4.0]),
    (-3.2, 7.9, 5, {}, [-5.0, 0.0, 5.0, 10.0]),
    (120, 980, 6, {}, [0.0, 200.0, 400.0, 600.0, 800.0, 1000.0]),
    (1e-5, 3e-5, 4, {}, [1e-05, 2e-05, 3e-05]),
    (5, 5, 5, {}, [4.6, 4.8, 5.0, 5.2, 5.4]),                   # an empty range is widened
    (0.3, 0.1, 5, {}, [0.1, 0.15, 0.2, 0.25, 0.3]),             # bounds in either order
    (-1.5, 0.5, 2, {}, [-2.0, 0.0, 2.0]),                       # around 0: 3 ticks at least
    (1.2, 1.7, 2, {}, [1.0, 2.0]),
])
def test_nice_ticks_table(lo, hi, n, kwargs, expected):
    from convnet.viz.common import nice_ticks

    assert nice_ticks(lo, hi, n, **kwargs) == expected


@settings(max_examples=300, deadline=None)
@given(st.floats(-1e4, 1e4), st.floats(1e-3, 1e5), st.integers(2, 12), st.booleans())
@example(-1e-05, 90001.0, 11, False)   # a bound a rounding error away from a tick
def test_nice_ticks_are_the_roundest_that_fit(lo, span, n, inside):
    """Evenly spaced multiples of a 1-2-5 step; covering [lo, hi] (or inside it), at most n,
    and the next smaller 1-2-5 step would need more than n. (Ranges a chart meets: a span of
    at least 1e-7 of the values, so float rounding stays far below a step.)"""
    import math

    from convnet.viz.common import nice_ticks

    hi = lo + span
    ticks = nice_ticks(lo, hi, n, inside=inside)
    if not inside and lo < 0 < hi:
        n = max(n, 3)  # -1, 0, 1 at least
    assert 1 <= len(ticks) <= n
    if len(ticks) < 2:
        return
    measured = ticks[1] - ticks[0]
    k = math.floor(math.log10(measured))
    mantissa, e = min(((m, e) for m in (1, 2, 5) for e in (k, k + 1)),
                      key=lambda c: abs(c[0] * 10.0 ** c[1] - measured))
    step = mantissa * 10.0 ** e
    assert abs(step - measured) <= 1e-6 * step           # 1, 2 or 5 times a power of ten
    assert all(abs((b - a) - step) <= 1e-6 * step
               for a, b in zip(ticks, ticks[1:], strict=False))
    tol = 1e-9 * max(1.0, abs(lo), abs(hi))
    if inside:
        assert lo - tol <= ticks[0] and ticks[-1] <= hi + tol
    else:
        assert ticks[0] <= lo + tol and ticks[-1] >= hi - tol
    smaller = {5: 2, 2: 1, 1: 0.5}[mantissa] * 10.0 ** e  # the next rounder step down
    if inside:
        count = math.floor(hi / smaller + 1e-9) - math.ceil(lo / smaller - 1e-9) + 1
    else:
        count = math.ceil(hi / smaller - 1e-9) - math.floor(lo / smaller + 1e-9) + 1
    assert count > n


@pytest.mark.parametrize("value, ticks, percent, text", [
    (0.2, [0.2, 0.25, 0.3], False, "0.20"),
    (0.3, [0.2, 0.25, 0.3], False, "0.30"),
    (0.86, [0.84, 0.86, 0.88], True, "86%"),
    (0.875, [0.85, 0.875, 0.9], True, "87.5%"),
    (1000.0, [0.0, 500.0, 1000.0], False, "1000"),
    (-2.0, [-4.0, -2.0, 0.0], False, "-2"),
])
def test_tick_labels_share_their_decimals(value, ticks, percent, text):
    from convnet.viz.common import fmt_tick

    assert fmt_tick(value, ticks, percent) == text


def test_curve_extent_zooms_the_accuracy_axis():
    from convnet.viz.common import curve_extent

    history = [{"epoch": e, "accuracy": a, "val_accuracy": a + 0.01}
               for e, a in zip(range(1, 8), [0.87, 0.89, 0.90, 0.91, 0.915, 0.92, 0.92],
                               strict=True)]
    epochs, (lo, hi), (e0, e1) = curve_extent(history, ["accuracy", "val_accuracy"], True)
    assert (lo, hi) == (0.86, 0.94) and (e0, e1) == (1, 7) and epochs[0] == 1.0
    _, (lo, hi), _ = curve_extent([{"loss": 2.31}, {"loss": 0.217}], ["loss"], False)
    assert (lo, hi) == (0.0, 2.5)


def test_page_curves_have_whole_epochs_and_round_ticks():
    from convnet.viz.page import curves_svg

    history = [{"epoch": e, "loss": 1.0 / e + 0.17, "accuracy": 0.80 + 0.008 * e}
               for e in range(1, 16)]
    loss = curves_svg(history, "loss")
    ticks = re.findall(r'<text class="tick"[^>]*text-anchor="(end|middle)">([^<]*)</text>', loss)
    y = [t for a, t in ticks if a == "end"]
    x = [t for a, t in ticks if a == "middle"]
    assert x == ["2", "4", "6", "8", "10", "12", "14"]       # whole epochs, 1-2-5 steps
    assert y == ["0.2", "0.4", "0.6", "0.8", "1.0", "1.2"]      # 0.237 .. 1.17, zoomed
    acc = curves_svg(history, "acc")
    y = re.findall(r'text-anchor="end">([^<]*)</text>', acc)
    assert y == ["80%", "85%", "90%", "95%"]   # 80.8% .. 92%: zoomed, as percentages


def test_the_page_counts_the_whole_test_set_like_eval(run_dir, tmp_path):
    from convnet.data import load_dataset
    from convnet.viz.page import load_model

    info = load_model(run_dir)
    _, test = load_dataset("digits")
    page = visualize(info.net, tmp_path / "all.html", test_set=test, samples=2,
                     classes=info.classes)
    text = page.read_text(encoding="utf-8")
    data = embedded(text)
    assert data["test"]["count"] == data["test"]["total"] == len(test) == 359
    r = cn.evaluate(info.net, test, normalizer=info.net.normalizer)
    assert data["test"]["accuracy"] == pytest.approx(r["accuracy"])   # what `convnet eval` says
    assert f"Accuracy on all 359 test images: <b>{100 * r['accuracy']:.2f}%</b>" in text
    part = embedded(visualize(info.net, tmp_path / "part.html", test_set=test, samples=2,
                              max_eval=100).read_text(encoding="utf-8"))
    assert (part["test"]["count"], part["test"]["total"]) == (100, 359)
    assert "100 of the 359 test images, drawn at random" in render_html(part)
    with pytest.raises(ConfigError, match="max_eval=0"):
        visualize(info.net, tmp_path / "x.html", test_set=test, max_eval=0)


# --------------------------------------------------------------------------------- the PNGs
def test_curves_figure_has_integer_epochs_and_a_zoomed_accuracy_axis():
    history = [{"epoch": e, "loss": 1.0 / e, "val_loss": 1.1 / e, "accuracy": 0.85 + 0.01 * e,
                "val_accuracy": 0.86 + 0.005 * e} for e in range(1, 8)]
    fig = plots.plot_curves(history)
    loss_ax, acc_ax = fig.axes[:2]
    for ax in (loss_ax, acc_ax):
        fig.canvas.draw()
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)
    assert acc_ax.get_ylim() == (0.86, 0.92)
    labels = [t.get_text() for t in acc_ax.get_yticklabels()]
    assert labels == ["86%", "88%", "90%", "92%"]
    legend = [t.get_text() for t in acc_ax.get_legend().get_texts()]
    assert "val_accuracy (best 89.50%, epoch 7)" in legend
    assert fig.get_layout_engine().__class__.__name__ == "ConstrainedLayoutEngine"


def test_confusion_figure_rotates_every_label_alike_and_has_a_colour_bar():
    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
             "Sneaker", "Bag", "Ankle boot"]
    cm = np.diag(np.full(10, 90)) + 1
    fig = plots.plot_confusion(cm, names)
    ax = fig.axes[0]
    xlabels = ax.get_xticklabels()
    assert [t.get_text() for t in xlabels] == names
    assert {t.get_rotation() for t in xlabels} == {45.0}
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    assert sum(a.get_label() == "<colorbar>" for a in fig.axes) == 1
    assert "accuracy 91.00% on 1,000 images" in ax.get_title()  # 10 x 91 on the diagonal
    with pytest.raises(ConfigError, match="3 class names for a 10x10 matrix"):
        plots.plot_confusion(cm, names[:3])


def test_filter_depth_slices_are_drawn_apart():
    net = cn.build("INPUT(8x8x3) -> CONV(4,F=3) -> RELU -> CONV(5,F=3) -> FC(2)", seed=0)
    fig = plots.plot_filters(net)
    images = [a.get_images()[0].get_array() for a in fig.axes if a.get_images()
              and a.get_label() != "<colorbar>"]
    first, second = images  # conv1 on RGB input: colour tiles; conv2: 5 rows of 4 slices
    second = np.ma.filled(second.astype(float), np.nan)
    gaps = np.flatnonzero(np.all(np.isnan(second), axis=0))     # white columns
    inner = gaps[(gaps > gaps.min()) & (gaps < second.shape[1] - 1)]
    assert len(np.split(inner, np.flatnonzero(np.diff(inner) > 1) + 1)) >= 3  # 3 gaps: 4 slices
    assert sum(a.get_label() == "<colorbar>" for a in fig.axes) == 1  # conv2; RGB conv1 has none
    # one colour scale per layer, symmetric around zero
    cbar = next(a for a in fig.axes if a.get_label() == "<colorbar>")
    lo, hi = cbar.get_ylim()
    assert lo == pytest.approx(-hi)


# ------------------------------------------------------------------- branching networks
def graph_data(spec: str = GRAPH, n: int = 2) -> tuple[cn.Graph, np.ndarray, dict]:
    net = make_net(spec, seed=1)
    raw = images(n, net.input_shape, seed=2)
    return net, raw, build_data(net, [Sample(raw[i], f"g{i}") for i in range(n)])


def acts_of(data: dict, i: int) -> np.ndarray:
    """Layer ``i``'s embedded activations for every sample (-1: the normalised input)."""
    if i < 0:
        shape = data["model"]["input_shape"]
        return np.stack([decode_float32(s["input"], shape) for s in data["samples"]])
    shape = data["layers"][i]["out_shape"]
    return np.stack([decode_float32(s["acts"][i], shape) for s in data["samples"]])


def test_graph_data_has_every_layer_its_inputs_and_the_engines_merges():
    net, raw, data = graph_data()
    layers = data["layers"]
    assert [m["name"] for m in layers] == [ly.name for ly in net.layers]
    names = ["input", *(ly.name for ly in net.layers)]
    for i, m in enumerate(layers):
        assert m["input_idx"] == list(net.inputs_of[i])
        assert m["inputs"] == [names[k + 1] for k in net.inputs_of[i]]
        assert len(data["samples"][0]["acts"]) == len(net.layers)
    acts = {i: acts_of(data, i) for i in range(-1, len(layers))}
    np.testing.assert_array_equal(acts[-1], raw)  # no normaliser: the input as given
    adds = [i for i, m in enumerate(layers) if m["kind"] == "ADD"]
    cats = [i for i, m in enumerate(layers) if m["kind"] == "CAT"]
    assert len(adds) == 3 and len(cats) == 2
    for i in adds:   # an ADD's volume is the sum of its inputs' volumes, as embedded
        a, b = (acts[k] for k in layers[i]["input_idx"])
        np.testing.assert_allclose(acts[i], a + b, rtol=1e-6, atol=1e-6)
    for i in cats:   # a CAT's is theirs stacked along depth, at the offsets the page reads
        parts = [acts[k] for k in layers[i]["input_idx"]]
        np.testing.assert_array_equal(acts[i], np.concatenate(parts, axis=-1))
        assert layers[i]["offsets"] == list(np.cumsum([0] + [p.shape[-1] for p in parts[:-1]]))
        assert layers[i]["input_shapes"] == [list(p.shape[1:]) for p in parts]
    # each layer applied to the volumes it reads gives its own (the walk back the page does)
    for i, layer in enumerate(net.layers):
        ins = [acts[k] for k in net.inputs_of[i]]
        got = layer.forward(ins[0] if layer.arity == 1 else ins)
        np.testing.assert_allclose(got, acts[i], rtol=1e-5, atol=1e-5)


def test_graph_data_says_what_every_branch_is():
    net, _, data = graph_data()
    layers, tree = data["layers"], data["structure"]
    by_name = {m["name"]: i for i, m in enumerate(layers)}

    def flat(items):
        for it in items:
            if isinstance(it, dict):
                for branch in it["branches"]:
                    yield from flat(branch)
                yield it["merge"]
            else:
                yield it

    assert list(flat(tree)) == list(range(len(layers)))   # every layer once, in network order
    add1, add2, cat1 = (layers[by_name[n]] for n in ("add1", "add2", "cat1"))
    assert [ln["role"] for ln in add1["lanes"]] == ["main", "identity"]
    assert [ln["role"] for ln in add2["lanes"]] == ["main", "shortcut"]
    assert add2["lanes"][1]["projection"] and not add2["lanes"][0]["projection"]
    assert "projected (inserted)" in add2["lanes"][1]["text"]     # the summary's words
    assert [ln["text"] for ln in cat1["lanes"]] == [f"branch {b} of 3" for b in (1, 2, 3)]
    assert layers[by_name["conv4"]]["inserted"] == "projection"   # the 1x1 CONV with S=2
    assert layers[by_name["bn3"]]["inserted"] == "projection"
    assert "inserted" not in layers[by_name["conv3"]]
    # a layer's place: [merge, lane] from the outermost block in (conv8: branch 2 of the CAT
    # nested in the main branch of the last RES)
    assert layers[by_name["conv8"]]["block"] == [[by_name["add3"], 0], [by_name["cat2"], 1]]
    assert layers[by_name["dwconv1"]]["block"] == [[by_name["cat1"], 1]]
    assert "block" not in layers[by_name["conv6"]]
    conv6 = layers[by_name["conv6"]]
    assert conv6["groups"] == 2 and conv6["weights"]["W"]["shape"] == [6, 1, 1, 7]
    assert conv6["hyper_text"].endswith("G=2")
    assert layers[by_name["dwconv1"]]["groups"] == 6


def test_graph_budget_counts_every_layer_of_every_branch():
    net = make_net(GRAPH)
    per = 2 * 243 + sum(int(np.prod(s)) for s in net.shapes)
    samples = [Sample(im, f"i{k}") for k, im in enumerate(images(4, net.input_shape))]
    data = build_data(net, samples, budget_floats=2 * per + 1)
    assert len(data["samples"]) == 2
    assert any("2 of 4 images were left out" in n and f"{per:,} floats" in n
               for n in data["notes"])


def test_graph_drawing_has_lanes_that_fork_and_merge():
    net, _, data = graph_data(n=1)
    svg = architecture_svg(data["layers"], net.input_shape, data["structure"])
    assert svg.count('class="blk blk-res"') == 3 and svg.count('class="blk blk-cat"') == 2
    heads = re.findall(r'class="lane-head"[^>]*><title>[^<]*</title>([^<]*)</text>', svg)
    assert heads == ["RES[ main branch", "| shortcut: identity",
                     "RES[ main branch", "| shortcut: projection (inserted)",
                     "CAT[ branch 1 of 3", "| branch 2 of 3", "| branch 3 of 3",
                     "RES[ main branch", "CAT[ branch 1 of 2", "| branch 2 of 2",
                     "| shortcut: identity"]
    assert svg.count('class="wire identity"') == 2       # the identity shortcuts' lines
    assert svg.count('class="merge-sym merge-res"') == 3
    for i in range(len(net.layers)):                       # every layer can be clicked
        assert svg.count(f'data-layer="{i}"') == 1
    assert re.search(r'class="arch-col inserted" data-layer="\d+"><title>conv4 ', svg)
    assert "K=6 F=1 S=1 P=0 G=2" in svg
    # on the page: the drawing, the note that says how to read it, the layer table's branches
    page = render_html(data)
    assert "lanes that fork from the block's input" in page
    table = page[page.index("<table class='layers'>"):]
    assert "<th>reads</th>" in table and "relu1 + conv1" in table and "bn2 + bn3" in table
    assert "shortcut, projected (inserted)" in table
    assert "conv5, relu6_1, pool1" in table


def test_chains_are_drawn_as_before():
    """A chain: one row of volumes, no wires, no blocks, whatever the structure says."""
    net = make_net()
    data = build_data(net, [Sample(np.zeros((8, 8, 1), np.float32), "z")])
    svg = architecture_svg(data["layers"], net.input_shape)
    assert svg == architecture_svg(data["layers"], net.input_shape, data["structure"])
    assert data["structure"] == list(range(len(net.layers)))
    assert "wire" not in svg and "blk" not in svg and 'class="arch"' in svg
    assert "<th>reads</th>" not in render_html(data)


@pytest.mark.parametrize("name", ["resnet50", "googlenet", "mobilenet_v2"])
def test_large_graphs_wrap_and_keep_every_layer_clickable(name):
    from convnet.viz.arch import COMPACT_LAYERS, WRAP_WIDTH
    from convnet.viz.page import _layer_meta, _structure

    net = cn.build(name, weights=False)         # shapes only: the drawing needs no weights
    assert len(net.layers) > COMPACT_LAYERS
    metas = _layer_meta(net, 0, 32, 0)
    tree, _ = _structure(net)
    svg = architecture_svg(metas, net.input_shape, tree)
    width, height = (float(v) for v in re.search(r'width="(\d+)" height="(\d+)"', svg).groups())
    assert width <= 1.25 * WRAP_WIDTH + 60          # wrapped into rows, not one long strip
    assert svg.count('class="wire wrap"') >= 3
    for i in range(len(net.layers)):                 # volumes and chips: every one clickable
        assert svg.count(f'data-layer="{i}"') == 1, net.layers[i].name
    assert svg.count("arch-chip") > len(net.layers) // 3   # BN and activations folded


def test_structure_of_a_graph_given_as_nodes():
    net = cn.Graph({"conv": (cn.Conv(4, F=3, P=1), "input"), "bn": (cn.BatchNorm(), "conv"),
                    "add": (cn.Add(), ["bn", "input"]), "relu": (cn.ReLU(), "add"),
                    "fc": (cn.FC(2), "relu")}, input_shape=(6, 6, 4), seed=0)
    data = build_data(net, [Sample(images(1, (6, 6, 4))[0], "x")])
    block = data["structure"][0]
    assert block["kind"] == "RES" and block["branches"] == [[0, 1], []]
    assert data["layers"][2]["inputs"] == ["bn1", "input"]
    assert [ln["role"] for ln in data["layers"][2]["lanes"]] == ["main", "identity"]
