"""FC -> CONV conversion, score maps on larger images, and the zero-padding caveat (issue 5)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import convnet as cn
from convnet.fcn import maps
from convnet.fcn.convert import conversion_plan, scores_from_map
from convnet.fcn.explain import conversion_text

RNG = np.random.default_rng(0)


def rand_images(n, h, w, d, seed=0):
    return np.random.default_rng(seed).standard_normal((n, h, w, d)).astype(np.float32)


def randomize_bn(net, seed=1):
    """Non-trivial BN statistics and affine parameters (fresh BN layers are the identity)."""
    rng = np.random.default_rng(seed)
    for layer in net.layers:
        if layer.kind == "BN":
            D = layer.params["gamma"].shape[0]
            layer.params["gamma"][...] = rng.uniform(0.5, 1.5, D)
            layer.params["beta"][...] = rng.normal(0, 0.2, D)
            layer.buffers["running_mean"][...] = rng.normal(0, 0.2, D)
            layer.buffers["running_var"][...] = rng.uniform(0.5, 2.0, D)


# ------------------------------------------------------------------------------ conversion
CONVERTIBLE = [
    "INPUT(8x8x1) -> CONV(4,F=3) -> RELU -> POOL -> FC(16) -> RELU -> FC(3)",
    "INPUT(12x12x3) -> CONV(6,F=3,P=1) -> BN -> RELU -> POOL -> CONV(8,F=(3,2),S=(1,2)) -> RELU"
    " -> FLATTEN -> DROPOUT(0.3) -> FC(20) -> BN -> RELU -> DROPOUT(0.5) -> FC(5)",
    "INPUT(9x9x2) -> CONV(8,F=3,S=2,P=1) -> RELU -> CONV(6,F=3,P=1) -> GAP -> FC(4)",
    "INPUT(28x28x1) -> CONV(16,F=3,P=1) -> RELU -> POOL -> CONV(32,F=3,P=1) -> RELU -> POOL "
    "-> CONV(64,F=3,P=1) -> RELU -> CONV(10,F=1) -> GAP",
    "INPUT(6x6x2) -> FLATTEN -> FC(7) -> TANH -> FC(2,bias=false)",
]


@pytest.mark.parametrize("spec", CONVERTIBLE)
def test_conversion_equals_original_on_random_networks(spec):
    net = cn.build(spec, seed=3)
    randomize_bn(net)
    fcn = net.to_fully_convolutional()
    assert fcn.fully_convolutional and len(fcn.output_shape) == 3
    assert fcn.output_shape[:2] == (1, 1)
    assert fcn.num_params == net.num_params  # the same numbers, reshaped
    assert not any(ly.kind in ("FC", "FLATTEN", "GAP") for ly in fcn.layers)
    x = rand_images(5, *net.input_shape)
    want = net.forward(x)
    got = fcn.forward(x)
    assert got.shape == (5, 1, 1, net.output_shape[0])
    np.testing.assert_allclose(scores_from_map(got), want, atol=1e-5, rtol=0)
    # the original is untouched and still agrees
    np.testing.assert_array_equal(net.forward(x), want)


def test_conversion_float64_is_exact_to_rounding():
    net = cn.build(CONVERTIBLE[1], seed=1, dtype=np.float64)
    randomize_bn(net)
    fcn = net.to_fully_convolutional()
    x = rand_images(3, *net.input_shape).astype(np.float64)
    assert fcn.dtype == np.float64
    np.testing.assert_allclose(scores_from_map(fcn.forward(x)), net.forward(x), atol=1e-12)


def test_fc_weights_are_reshaped_in_flatten_order():
    net = cn.build("INPUT(4x5x3) -> CONV(2,F=1) -> FC(6) -> FC(2)", seed=0)
    fcn = net.to_fully_convolutional()
    W_fc = net["fc1"].params["W"]  # (4*5*2, 6), rows (row, col, depth)
    W_conv = fcn["conv2"].params["W"]  # (6, 4, 5, 2)
    assert W_conv.shape == (6, 4, 5, 2)
    for k in range(6):
        for r in range(4):
            for c in range(5):
                for d in range(2):
                    assert W_conv[k, r, c, d] == W_fc[(r * 5 + c) * 2 + d, k]
    assert fcn["conv3"].params["W"].shape == (2, 1, 1, 6)
    assert fcn.spec == "INPUT(4x5x3) -> CONV(2,F=1) -> CONV(6,F=4x5) -> CONV(2,F=1)"


def test_conversion_of_a_shapes_only_network_and_vgg():
    vgg = cn.build("vgg16", weights=False)
    fcn = vgg.to_fully_convolutional()
    assert fcn.num_params == vgg.num_params
    kinds = [ly.to_spec() for ly in fcn.layers if ly.kind == "CONV"][-3:]
    assert kinds == ["CONV(4096,F=7)", "CONV(4096,F=1)", "CONV(1000,F=1)"]
    # CS231n: 224 -> 384 gives a 6x6 map of 1000 scores = 36 crops at stride 32
    assert fcn.shapes_for((384, 384, 3))[-1] == (6, 6, 1000)
    assert maps.total_stride(fcn) == (32, 32)


def test_conversion_refuses_what_has_no_conv_form():
    with pytest.raises(cn.ConfigError, match="vector"):
        cn.build("INPUT(20) -> FC(5)", seed=0).to_fully_convolutional()
    with pytest.raises(cn.ConfigError, match="per-position|FLATTEN"):
        cn.build("INPUT(4x4x2) -> FLATTEN -> BN -> FC(3)", seed=0).to_fully_convolutional()


def test_conversion_on_a_trained_network_with_bn_and_dropout():
    train, _ = cn.load_dataset("digits")
    net = cn.build("INPUT(8x8x1) -> CONV(8,F=3,P=1) -> BN -> RELU -> POOL -> DROPOUT(0.25) "
                   "-> FC(32) -> RELU -> DROPOUT(0.5) -> FC(10)", seed=0)
    h = cn.fit(net, (train.x[:256], train.y[:256]), epochs=2, batch_size=32, lr=0.01)
    assert h.last["loss"] < 2.3
    assert np.abs(net["bn1"].buffers["running_mean"]).max() > 0  # it really trained
    fcn = net.to_fully_convolutional()
    x = train.x[256:320]
    np.testing.assert_allclose(scores_from_map(fcn.forward(x)), net.forward(x), atol=1e-5)
    # and a converted net trains too: per-position labels on its (N, 1, 1, K) output
    h2 = cn.fit(fcn, (x, train.y[256:320, None, None]), epochs=1, batch_size=16, lr=1e-3)
    assert np.isfinite(h2.last["loss"])


def test_conversion_survives_a_checkpoint(tmp_path):
    net = cn.build(CONVERTIBLE[0], seed=0)
    fcn = net.to_fully_convolutional()
    path = cn.save(fcn, tmp_path / "fcn.npz")
    again = cn.load(path)
    x = rand_images(2, 16, 16, 1)
    np.testing.assert_array_equal(again.forward(x), fcn.forward(x))


# ------------------------------------------------------------------- score maps vs crops
@st.composite
def unpadded_nets(draw):
    """A random CONV/POOL stack without padding, then FC layers, GAP or a 1x1 CONV head, with an
    input size that fits, built backwards from the final volume."""
    n_blocks = draw(st.integers(1, 3))
    layers, hw = [], draw(st.integers(1, 3))
    for _ in range(n_blocks):
        block = []
        if draw(st.booleans()):
            S = draw(st.sampled_from([1, 2]))
            block.append((f"POOL(F={S},S={S})" if S > 1 else "POOL(F=2,S=1)", 2 if S == 1 else S, S))
        F = draw(st.integers(1, 3))
        S = draw(st.sampled_from([1, 1, 2, 3]))
        block.append(("RELU", None, None))
        block.append((f"CONV({draw(st.integers(2, 5))},F={F},S={S})", F, S))
        for text, F_, S_ in block:  # from output towards input
            if F_ is not None:
                hw = S_ * (hw - 1) + F_
            layers.insert(0, text)
    head = draw(st.sampled_from(["FC(6) -> RELU -> FC(3)", "GAP", "CONV(3,F=1) -> GAP",
                                 "FLATTEN -> FC(3)"]))
    spec = f"INPUT({hw}x{hw}x{draw(st.integers(1, 2))}) -> " + " -> ".join(layers) + f" -> {head}"
    extra = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    return spec, extra


@settings(max_examples=25, deadline=None)
@given(unpadded_nets(), st.integers(0, 2**16))
def test_map_equals_every_crop_without_padding(case, seed):
    spec, (k_rows, k_cols) = case
    net = cn.build(spec, seed=seed % 100)
    fcn = net.to_fully_convolutional()
    T = maps.total_stride(fcn)
    H0, W0, D = net.input_shape
    H, W = H0 + k_rows * T[0], W0 + k_cols * T[1]
    x = rand_images(2, H, W, D, seed)
    one_pass = maps.score_map(fcn, x)
    assert one_pass.shape == (2, k_rows + 1, k_cols + 1, net.output_shape[-1])
    loop = maps.crop_scores(net, x)
    np.testing.assert_allclose(one_pass, loop, atol=2e-5, rtol=1e-5)


def test_cs231n_analogue_28_to_48_gives_36_crops_at_stride_4():
    # VGG: 224 -> 384 at stride 32 -> 6x6. Here 28 -> 48 at stride 4 -> 6x6, no padding.
    net = cn.build("INPUT(28x28x1) -> CONV(8,F=5) -> RELU -> POOL -> CONV(16,F=5) -> RELU -> POOL"
                   " -> FC(32) -> RELU -> FC(10)", seed=0)
    fcn = net.to_fully_convolutional()
    assert maps.total_stride(fcn) == (4, 4)
    x = rand_images(1, 48, 48, 1)
    m = fcn.forward(x)
    assert m.shape == (1, 6, 6, 10)
    for i, j in [(0, 0), (2, 5), (5, 5)]:
        crop = x[:, 4 * i:4 * i + 28, 4 * j:4 * j + 28]
        np.testing.assert_allclose(m[0, i, j], net.forward(crop)[0], atol=1e-5)


def test_crop_scores_at_another_stride_subsamples_the_dense_map():
    net = cn.build("INPUT(6x6x1) -> CONV(3,F=3) -> RELU -> FC(2)", seed=0)
    x = rand_images(1, 12, 12, 1)
    dense = maps.score_map(net, x)  # stride 1: 7x7
    np.testing.assert_allclose(maps.crop_scores(net, x, (2, 3)), dense[:, ::2, ::3], atol=1e-5)


# ---------------------------------------------------------------------- zero padding
PADDED = ("INPUT(12x12x1) -> CONV(4,F=3,P=1) -> RELU -> POOL -> CONV(6,F=3,P=1) -> RELU -> POOL"
          " -> FC(5)")


def test_with_zero_padding_the_map_is_not_the_crops():
    net = cn.build(PADDED, seed=0)
    fcn = net.to_fully_convolutional()
    x = np.abs(rand_images(1, 24, 24, 1))
    m, loop = maps.score_map(fcn, x), maps.crop_scores(net, x)
    assert m.shape == loop.shape == (1, 4, 4, 5)
    assert np.abs(m - loop).max() > 1e-3  # every crop sees zeros where the image has pixels
    # on the original size they agree exactly
    np.testing.assert_allclose(scores_from_map(fcn.forward(x[:, :12, :12])),
                               net.forward(x[:, :12, :12]), atol=1e-5)


def test_with_zero_padding_interior_feature_units_agree_and_the_border_ring_differs():
    net = cn.build(PADDED, seed=0)
    fi = maps.feature_layer_index(net)
    assert net.layers[fi].name == "pool2"
    rows, cols = maps.interior_units(net)
    assert (rows, cols) == (slice(1, 2), slice(1, 2))  # 3x3 volume: 1 interior unit, ring of 8
    x = np.abs(rand_images(1, 24, 24, 1, seed=4))
    fcn = net.to_fully_convolutional()

    def trunk(z):  # the layers up to the volume the FC reads (layers take any size)
        for layer in fcn.layers[:fi + 1]:
            z = layer.forward(z)
        return z

    big = trunk(x)  # features of the whole image, stride 4
    T = 4
    for i, j in [(0, 0), (1, 2), (3, 3)]:
        crop = x[:, T * i:T * i + 12, T * j:T * j + 12]
        small = trunk(crop)  # the crop's own 3x3 volume, zero-padded at its border
        window = big[:, i:i + 3, j:j + 3]
        inside = np.zeros((3, 3), bool)
        inside[rows, cols] = True
        np.testing.assert_allclose(small[:, inside], window[:, inside], atol=1e-5)
        assert np.abs(small[:, ~inside] - window[:, ~inside]).max() > 1e-4


def test_map_unit_sees_its_receptive_field_box_and_nothing_else():
    net = cn.build(PADDED, seed=0)
    fcn = net.to_fully_convolutional()
    rf = maps.map_receptive_field(fcn)
    assert [int(v) for v in rf.jump] == [4, 4]
    (top, bottom), (left, right) = rf.box((1, 1))
    # the crop of unit (1, 1) is rows 4..15; the unit sees 3 more pixels on each side
    assert (top, bottom) == (1, 18) and (left, right) == (1, 18)
    x = np.abs(rand_images(1, 24, 24, 1, seed=5))
    base = fcn.forward(x)[0, 1, 1]
    for r, c, changes in [(2, 8, True), (17, 8, True), (8, 1, True),  # outside the crop, in the box
                          (19, 8, False), (8, 0, False), (0, 8, False)]:  # outside the box
        y = x.copy()
        y[0, r, c, 0] += 5.0
        moved = np.abs(fcn.forward(y)[0, 1, 1] - base).max() > 1e-6
        assert moved == changes, (r, c)


# ------------------------------------------------------------------------ sizes that fit
def test_size_that_does_not_fit_lists_the_sizes_that_do():
    net = cn.build("INPUT(28x28x1) -> CONV(8,F=3,P=1) -> RELU -> POOL -> CONV(8,F=3,P=1) -> POOL"
                   " -> FC(10)", seed=0)
    fcn = net.to_fully_convolutional()
    assert maps.sizes_that_fit(fcn, upto=44) == [28, 32, 36, 40, 44]
    with pytest.raises(cn.ShapeError) as err:
        maps.score_map(fcn, np.zeros((1, 30, 32, 1), np.float32))
    msg = str(err.value)
    assert "30x32x1" in msg and "pool2" in msg and "7.50" in msg
    assert "rows: sizes that fit: 28 + 4k: 28, 32, 36, 40" in msg
    assert "nearest to 30: 28 or 32" in msg and "cols:" not in msg
    with pytest.raises(cn.ShapeError, match="cols: sizes that fit: 28 \\+ 4k"):
        maps.check_input_size(fcn, (32, 29, 1))
    with pytest.raises(cn.ShapeError, match="smaller|larger than the padded input|sizes that fit"):
        maps.check_input_size(fcn, (20, 28, 1))
    with pytest.raises(cn.ShapeError, match="H x W x 1"):
        maps.check_input_size(fcn, (32, 32, 3))
    assert maps.map_shape(net, (36, 40)) == (3, 4, 10)


def test_score_map_converts_a_classifier_and_keeps_a_map_network():
    net = cn.build("INPUT(8x8x1) -> CONV(3,F=3) -> RELU -> FC(4)", seed=0)
    x = rand_images(3, 10, 9, 1)
    m = maps.score_map(net, x, batch_size=2)
    assert m.shape == (3, 3, 2, 4)
    seg = cn.build("INPUT(8x8x1) -> CONV(3,F=3,P=1) -> POOL -> DECONV(4,F=2,S=2)", seed=0)
    assert maps.as_fully_convolutional(seg) is seg
    assert maps.total_stride(seg) == (1, 1)  # POOL halves, DECONV doubles
    with pytest.raises(cn.ConfigError, match="DECONV"):
        maps.total_stride(cn.build("INPUT(8x8x1) -> DECONV(2,F=2,S=2)", weights=False))


# ------------------------------------------------------------------------- explanation
def test_conversion_text_without_padding():
    net = cn.build("INPUT(8x8x1) -> CONV(4,F=3) -> POOL -> FLATTEN -> FC(16) -> FC(3)",
                   weights=False)
    text = conversion_text(net, (12, 12))
    assert "FLATTEN is dropped" in text
    assert "fc1: FC(16) reads 3x3x4 = 36 numbers -> CONV(16,F=3): (3 - 3 + 2*0)/1 + 1 = 1" in text
    assert "3*3*4*16 + 16 = 592 parameters either way" in text
    assert "fc2: FC(3) reads 1x1x16" in text and "CONV(3,F=1)" in text
    assert "(12 - 8)/2 + 1 = 3, a 3x3x3 map" in text and "9 crops of 8x8" in text
    assert "unit (i, j) sees rows 2i + [0, 7]" in text
    assert "No zero padding" in text and "exactly" in text


def test_conversion_text_with_padding_states_the_caveat():
    text = conversion_text(cn.build("fashion", weights=False))
    assert "(48 - 28)/4 + 1 = 6, a 6x6x10 map" in text and "36 crops" in text
    assert "Receptive field of each map unit: 34 input pixels" in text
    assert "rows 4i + [-3, 30]" in text
    assert "NOT exactly the crop-by-crop scores" in text and "conv1, conv2" in text
    assert "the 25 whose receptive field lies inside the crop" in text
    vgg = conversion_text(cn.build("vgg16", weights=False), (384, 384))
    assert "(384 - 224)/32 + 1 = 6, a 6x6x1000 map" in vgg
    assert "CONV(4096,F=7)" in vgg and "7*7*512*4096 + 4096 = 102,764,544" in vgg


def test_conversion_plan_names_each_replacement():
    net = cn.build("INPUT(9x9x2) -> CONV(8,F=3,S=2,P=1) -> RELU -> GAP -> FC(4)", weights=False)
    plan = [(old.kind, new.to_spec() if new else None) for old, new in conversion_plan(net)]
    assert plan == [("CONV", "CONV(8,F=3,S=2,P=1)"), ("RELU", "RELU"),
                    ("GAP", "AVGPOOL(F=5,S=1)"), ("FC", "CONV(4,F=1)")]


def test_explain_adds_the_receptive_field_and_the_padding_caveat():
    text = " ".join(cn.explain("fashion").split())
    assert "Receptive field of each map unit: 34 input pixels" in text
    assert "NOT exactly the crop-by-crop scores" in text
    plain = " ".join(cn.explain("INPUT(8x8x1) -> CONV(4,F=3) -> POOL -> FC(3)").split())
    assert "No zero padding" in plain
    assert "Receptive field of each map unit" not in cn.explain("INPUT(8x8x1) -> CONV(2,F=3)")


# -------------------------------------------------------------------------------- the CLI
def test_cli_convert_and_scan(tmp_path, capsys):
    from PIL import Image

    from convnet.cli.main import main

    net = cn.build("INPUT(12x12x1) -> CONV(4,F=3) -> RELU -> POOL -> FC(8) -> RELU -> FC(3)",
                   seed=0)
    model = cn.save(net, tmp_path / "m.npz", classes=["a", "b/c", "d"],
                    normalizer={"mean": np.array([0.5]), "std": np.array([0.25])})
    assert main(["convert", str(model), "--fully-convolutional", "-o",
                 str(tmp_path / "f.npz")]) == 0
    out = capsys.readouterr().out
    assert "CONV(8,F=5)" in out and "No zero padding" in out and "wrote" in out
    fcn = cn.load(tmp_path / "f.npz")
    assert fcn.classes == ["a", "b/c", "d"] and fcn.normalizer is not None
    x = rand_images(2, 12, 12, 1)
    np.testing.assert_allclose(scores_from_map(fcn.forward(x)), net.forward(x), atol=1e-5)

    img = (np.random.default_rng(0).random((21, 17)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "big.png")
    assert main(["scan", str(model), str(tmp_path / "big.png"), "-o", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "cropped 21x17 -> 20x16" in out and "5x3 map of 3 classes" in out
    probs = np.load(tmp_path / "s" / "probs.npy")
    assert probs.shape == (5, 3, 3)
    np.testing.assert_allclose(probs.sum(-1), 1, atol=1e-5)
    # the map is the classifier on each (normalised) crop
    crop = (img[None, 4:16, 2:14, None].astype(np.float32) / 255 - 0.5) / 0.25
    np.testing.assert_allclose(probs[2, 1], cn.softmax(net.forward(crop))[0], atol=1e-5)
    # the summary: one line per class with its share of wins, best probability and crop
    # (the crops are 12x12, 2 pixels apart)
    flat = probs.reshape(-1, 3)
    wins = np.bincount(flat.argmax(1), minlength=3)
    for k, name in enumerate(["a", "b/c", "d"]):
        i, j = divmod(int(flat[:, k].argmax()), 3)
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(name + " "))
        assert f"({wins[k]}/15)" in line and f"{flat[:, k].max():.3f}" in line
        assert f"rows {2 * i}-{2 * i + 11}, cols {2 * j}-{2 * j + 11} (unit {i},{j})" in line
    # one overview picture, no per-class files unless asked for
    overview = Image.open(tmp_path / "s" / "scan.png")
    assert overview.format == "PNG" and overview.size[0] >= 800
    assert len(overview.convert("RGB").getcolors(1 << 20)) > 100
    assert not list((tmp_path / "s").glob("heat_*.png"))
    assert "P(b/c)" in (tmp_path / "s" / "scores.txt").read_text()
    assert main(["scan", str(model), str(tmp_path / "big.png"), "-o", str(tmp_path / "h"),
                 "--per-class-maps", "--top", "2"]) == 0
    heats = sorted(p.name for p in (tmp_path / "h").glob("heat_*.png"))
    top2 = sorted(np.argsort(-flat.max(0))[:2].tolist())
    assert heats == [f"heat_{k}_{['a', 'b_c', 'd'][k]}.png" for k in top2]
    assert np.asarray(Image.open(tmp_path / "h" / heats[0])).shape == (20, 16, 3)
    capsys.readouterr()

    assert main(["scan", str(model), str(tmp_path / "big.png"), "-o", str(tmp_path / "t"),
                 "--no-crop"]) == 2
    assert "sizes that fit: 12 + 2k" in capsys.readouterr().err
    assert main(["convert", "vgg16", "--fully-convolutional", "-o", "x.npz"]) == 2
    assert main(["convert", str(model)]) == 2


def test_class_summary_counts_wins_and_finds_each_best_crop():
    from convnet.fcn.scan import Scan, class_summary, summary_text

    rng = np.random.default_rng(3)
    scores = rng.normal(size=(4, 6, 5)).astype(np.float32)
    probs = cn.softmax(scores)
    scan = Scan(np.zeros((19, 27, 1), np.float32), scores, probs, (3, 4), (10, 7), [])
    names = ["ant", "bee", "cat", "dog", "eel"]
    summary = class_summary(scan, names)
    assert sum(c.wins for c in summary) == 24
    assert sum(c.share for c in summary) == pytest.approx(1.0)
    by_name = {c.name: c for c in summary}
    for k, name in enumerate(names):
        c = by_name[name]
        i, j = np.unravel_index(np.argmax(probs[..., k]), (4, 6))
        assert c.unit == (i, j) and c.best == pytest.approx(probs[i, j, k])
        assert c.rows == (3 * i, 3 * i + 9) and c.cols == (4 * j, 4 * j + 6)
        assert c.wins == int(np.sum(probs.argmax(-1) == k))
    # most wins first, ties by best probability
    assert [(-c.wins, -c.best) for c in summary] == sorted((-c.wins, -c.best) for c in summary)
    text = summary_text(scan, names, limit=2)
    assert "19x27 image -> 4x6 map of 5 classes: 24 crops of 10x7, 3x4 pixels apart" in text
    assert text.count("(unit ") == 2 and "and 3 classes" in text
    with pytest.raises(cn.ShapeError, match="2 class names for a map of 5 classes"):
        class_summary(scan, ["a", "b"])


def test_overview_figure_has_a_panel_per_class_and_one_colour_bar():
    from convnet.fcn.scan import Scan, overview_figure

    probs = cn.softmax(np.random.default_rng(0).normal(size=(3, 5, 4)).astype(np.float32))
    image = np.random.default_rng(1).random((16, 24, 3)).astype(np.float32)
    fig = overview_figure(Scan(image, probs, probs, (2, 4), (12, 8), []), list("wxyz"), [0, 2])
    titles = [ax.get_title() for ax in fig.axes]
    assert any(t.startswith("w: best ") for t in titles)
    assert any(t.startswith("y: best ") for t in titles)
    assert not any(t.startswith(("x: ", "z: ")) for t in titles)
    assert sum(ax.get_label() == "<colorbar>" for ax in fig.axes) == 1


def test_heat_map_averages_the_crops_covering_each_pixel():
    from convnet.fcn.scan import heat_map

    values = np.array([[1.0, 0.0], [0.0, 0.0]], np.float32)
    heat = heat_map(values, (6, 6), stride=(2, 2), crop=(4, 4))
    assert heat[0, 0] == 1.0 and heat[5, 5] == 0.0
    assert heat[2, 2] == pytest.approx(0.25)  # covered by all four crops, one of them 1
    assert heat[2, 0] == pytest.approx(0.5)  # covered by crops (0,0) and (1,0)


# ------------------------------------------------------------------------ networks without FC
def test_a_1x1xk_output_trains_and_evaluates_like_class_scores():
    """A network ending in CONV to 1x1xK takes per-image labels: its (N, 1, 1, K) scores are
    the class scores, so fit and evaluate give what the same network with a FLATTEN would."""
    from convnet.data import load_dataset

    train, test = load_dataset("digits")
    conv_end = "INPUT(8x8x1) -> CONV(8,F=3,P=1) -> RELU -> POOL -> CONV(10,F=4)"
    a = cn.build(conv_end, seed=0)
    b = cn.build(conv_end + " -> FLATTEN", seed=0)
    assert a.output_shape == (1, 1, 10) and b.output_shape == (10,)
    ha = cn.fit(a, train, epochs=1, batch_size=64, lr=1e-2)
    hb = cn.fit(b, train, epochs=1, batch_size=64, lr=1e-2)
    assert ha["loss"] == pytest.approx(hb["loss"], rel=1e-5)
    ra, rb = cn.evaluate(a, test), cn.evaluate(b, test)
    assert ra["predictions"].shape == (len(test),) and ra["count"] == len(test)
    np.testing.assert_array_equal(ra["predictions"], rb["predictions"])
    np.testing.assert_array_equal(ra["confusion"], rb["confusion"])
    assert "mean_iou" not in ra  # per-image labels: no segmentation measures
    assert ra["accuracy"] > 0.5


def test_scan_memory_is_checked_from_the_shapes_before_running(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from convnet.cli.main import main
    from convnet.errors import ShapeError
    from convnet.fcn import scan as scan_mod

    net = cn.build("INPUT(8x8x1) -> CONV(16,F=3,P=1) -> RELU -> POOL -> FC(3)", seed=0)
    total, layer, most = scan_mod.scan_memory(net, (200, 200))
    # input 200x200x1, conv1 and relu1 200x200x16, pool1 100x100x16, the map 97x97x3
    assert total == 4 * (200 * 200 * (1 + 16 + 16) + 100 * 100 * 16 + 97 * 97 * 3)
    assert layer == "conv1 (200x200x16)" and most == 4 * 200 * 200 * 16

    def forward(*a, **k):
        raise AssertionError("ran before the memory check")

    image = np.zeros((200, 200, 1), np.float32)
    monkeypatch.setattr(type(maps.as_fully_convolutional(net)), "forward", forward)
    with pytest.raises(ShapeError, match=r"scan: a 200x200 image through this network needs "
                                         r"about 5\.[0-9]+ MiB of activations \(2\.44 MiB in "
                                         r"conv1 \(200x200x16\) alone\), more than the limit "
                                         r"of 1 MiB.*--max-memory"):
        scan_mod.scan_image(net, image, max_bytes=2**20)
    monkeypatch.undo()
    assert scan_mod.scan_image(net, image).probs.shape == (97, 97, 3)
    # the command line: one line, exit 2; the flag raises the limit
    cn.save(net, tmp_path / "m.npz")
    Image.fromarray(np.zeros((200, 200), np.uint8)).save(tmp_path / "big.png")
    argv = ["scan", str(tmp_path / "m.npz"), str(tmp_path / "big.png"), "-o", str(tmp_path / "o")]
    assert main([*argv, "--max-memory", "1MiB"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("convnet scan: error: scan: a 200x200 image")
    assert main([*argv, "--max-memory", "64MiB"]) == 0


def test_scan_decodes_the_image_once(tmp_path, monkeypatch):
    from PIL import Image

    import convnet.data.images as images
    from convnet.fcn.scan import read_image

    Image.fromarray(np.arange(120, dtype=np.uint8).reshape(10, 12)).save(tmp_path / "a.png")
    real, calls = images.open_image, []
    monkeypatch.setattr(images, "open_image", lambda p: calls.append(p) or real(p))
    a = read_image(tmp_path / "a.png", 1)
    assert len(calls) == 1
    assert a.shape == (10, 12, 1) and a[0, 1, 0] == np.float32(1) / np.float32(255)


@pytest.mark.parametrize("name", ["fcn.png", "fcn", "fcn.npz.txt"])
def test_convert_refuses_an_output_that_is_neither_npz_nor_onnx(tmp_path, capsys, name):
    from convnet.cli.main import main

    model = tmp_path / "m.npz"
    cn.save(cn.build("INPUT(8x8x1) -> CONV(4,F=3) -> RELU -> FC(3)", seed=0), model)
    assert main(["convert", str(model), "--fully-convolutional", "-o",
                 str(tmp_path / name)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "a checkpoint (.npz) or an ONNX file (.onnx)" in err
    assert not (tmp_path / name).exists()
