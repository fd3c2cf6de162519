"""Shape arithmetic: each formula against its defining inequality, and the receptive field
against brute force (perturb one input pixel; backpropagate from one output unit)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import convnet as cn
from convnet import arith
from convnet.arith import ReceptiveField, Window
from convnet.errors import ShapeError

SETTINGS = settings(max_examples=200, deadline=None)

sizes = st.integers(1, 64)
extents = st.integers(1, 9)
strides = st.integers(1, 6)
pads = st.integers(0, 4)
dils = st.integers(1, 3)


# ------------------------------------------------------------------------ output sizes
@SETTINGS
@given(W=sizes, F=extents, S=strides, P=pads, d=dils)
def test_conv_output_size_floor_satisfies_defining_inequality(W, F, S, P, d):
    f_eff = arith.effective_extent(F, d)
    assume(f_eff <= W + 2 * P)
    out = arith.conv_output_size(W, F, S, P, d, floor=True)
    # Chainer's property: the last window fits, one more would not
    assert (out - 1) * S + f_eff <= W + 2 * P < out * S + f_eff
    assert out >= 1


@SETTINGS
@given(W=sizes, F=extents, S=strides, P=pads, d=dils)
def test_conv_output_size_exact_iff_fits(W, F, S, P, d):
    f_eff = arith.effective_extent(F, d)
    if f_eff > W + 2 * P:
        assert not arith.conv_fits(W, F, S, P, d)
        with pytest.raises(ShapeError, match="larger than the padded input"):
            arith.conv_output_size(W, F, S, P, d)
        return
    if arith.conv_fits(W, F, S, P, d):
        out = arith.conv_output_size(W, F, S, P, d)
        assert (out - 1) * S + f_eff == W + 2 * P  # the windows tile the padded input exactly
        assert arith.conv_output_exact(W, F, S, P, d) == out
    else:
        with pytest.raises(ShapeError, match="is not whole"):
            arith.conv_output_size(W, F, S, P, d)
        assert arith.conv_output_exact(W, F, S, P, d).denominator != 1


@SETTINGS
@given(W=st.integers(1, 40), F=extents, S=strides, P=pads, d=dils, data=st.data())
def test_deconv_is_the_inverse_of_conv(W, F, S, P, d, data):
    a = data.draw(st.integers(0, S - 1))
    out = arith.deconv_output_size(W, F, S, P, a, d)
    assume(out >= 1 and arith.effective_extent(F, d) <= out + 2 * P)
    # a CONV with the same F, S, P maps the DECONV's output back to its input size
    assert arith.conv_output_size(out, F, S, P, d, floor=True) == W
    if a == 0:
        assert arith.conv_output_size(out, F, S, P, d) == W  # and it fits exactly


@SETTINGS
@given(W=sizes, F=extents, P=pads, d=dils)
def test_strides_that_fit_really_fit(W, F, P, d):
    fits = arith.strides_that_fit(W, F, P, d)
    if arith.effective_extent(F, d) > W + 2 * P:
        assert fits == []
        return
    assert fits and fits == sorted(fits) and fits[0] == 1
    for s in fits:
        assert arith.conv_fits(W, F, s, P, d)
    if len(fits) < 8:  # the list is complete: every other stride up to the span fails
        span = W + 2 * P - arith.effective_extent(F, d)
        for s in set(range(1, span + 1)) - set(fits):
            assert not arith.conv_fits(W, F, s, P, d)


@SETTINGS
@given(W=sizes, F=extents, S=strides, P=pads, d=dils)
def test_padding_that_fits_is_the_smallest_that_fits(W, F, S, P, d):
    p = arith.padding_that_fits(W, F, S, P, d)
    if p is None:
        assert not any(arith.conv_fits(W, F, S, q, d) for q in range(P, P + S + 1))
    else:
        assert p >= P and arith.conv_fits(W, F, S, p, d)
        assert not any(arith.conv_fits(W, F, S, q, d) for q in range(P, p))


@SETTINGS
@given(W=sizes, F=extents, d=dils)
def test_same_padding_preserves_size(W, F, d):
    p = arith.same_padding(F, d)
    if arith.effective_extent(F, d) % 2 == 0:
        assert p is None
    else:
        assert arith.conv_output_size(W, F, 1, p, d) == W


# ------------------------------------------------------------------ seeds' worked examples
@pytest.mark.parametrize(("W", "F", "S", "P", "out"), [
    (32, 5, 1, 2, 32),   # 32x32x3, ten 5x5 filters, stride 1, pad 2 -> 32x32x10
    (32, 5, 1, 0, 28),   # (32 - 5)/1 + 1 = 28
    (28, 5, 1, 0, 24),
    (7, 3, 1, 0, 5),     # 7x7 input, 3x3 filter -> 5x5
    (7, 3, 2, 0, 3),     # stride 2 -> 3x3
    (7, 3, 1, 1, 7),     # pad 1 -> 7x7
    (9, 3, 1, 0, 7),     # the padded 7x7 seen as 9x9
    (227, 11, 4, 0, 55),  # AlexNet's first layer
    (5, 3, 1, 1, 5),
])
def test_seed_output_sizes(W, F, S, P, out):
    assert arith.conv_output_size(W, F, S, P) == out


def test_seed_7x7_stride3_rejected_with_what_fits():
    with pytest.raises(ShapeError) as e:
        arith.window_output_hw((7, 7), Window(F=(3, 3), S=(3, 3)),
                               where="conv2 (CONV K=8 F=3 S=3 P=0) on 7x7x1")
    assert str(e.value).startswith(
        "conv2 (CONV K=8 F=3 S=3 P=0) on 7x7x1: (7 - 3 + 2*0)/3 + 1 = 2.33 is not a whole number: "
        "stride 3 does not fit. Strides that fit: 1, 2, 4. Or pad P=1 with S=3 -> 3x3.")


def test_seed_counts():
    assert arith.conv_params(5, D=3, K=10) == 760          # (5*5*3 + 1)*10
    assert arith.conv_params(5, D=3, K=1, bias=False) == 75  # weights of one 5x5x3 filter
    assert arith.conv_params(11, D=3, K=96) == 34_944
    assert arith.conv_params_unshared((55, 55), 11, D=3, K=96) == 105_705_600
    assert arith.fc_params(150, 100) == 15_100             # 6x5x5 -> 150 -> 100
    assert arith.conv_macs((55, 55), 11, 3, 96) == 55 * 55 * 96 * 363
    assert arith.fc_macs(25_088, 4096) == 102_760_448


def test_training_memory_and_bytes():
    m = arith.training_memory(1000, 500, batch=4, itemsize=4, optimizer_slots=2)
    assert m == {"params": 4000, "grads": 4000, "optimizer": 8000, "activations": 8000,
                 "total": 24000}
    assert arith.fmt_bytes(0) == "0 B"
    assert arith.fmt_bytes(1024) == "1 KiB"
    assert arith.fmt_bytes(1023 * 1024 + 1000) == "1 MiB"
    assert arith.fmt_bytes(3 * 2**30) == "3 GiB"


# -------------------------------------------------------------------- receptive fields
def test_receptive_field_known_networks():
    vgg = {r.name: r for r in arith.layer_rows(cn.build("vgg16", weights=False))}
    assert (vgg["conv13"].rf.size[0], vgg["conv13"].rf.jump[0]) == (196, 16)
    assert (vgg["pool5"].rf.size[0], vgg["pool5"].rf.jump[0]) == (212, 32)
    assert vgg["fc1"].rf.whole and vgg["fc3"].rf.whole
    alex = {r.name: r for r in arith.layer_rows(cn.build("alexnet", weights=False))}
    # the published AlexNet receptive fields: 11, 19, 51, 67, 99, 131, 163, 195
    got = [int(alex[n].rf.size[0]) for n in
           ("conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool3")]
    assert got == [11, 19, 51, 67, 99, 131, 163, 195]
    assert alex["conv1"].rf.jump == (4, 4) and alex["conv1"].rf.start == (5, 5)


def test_receptive_field_deconv_divides_the_stride():
    rfs = arith.receptive_fields([Window(F=(2, 2), S=(2, 2)), Window(F=(2, 2), S=(2, 2))],
                                 transposed=[False, True])
    assert rfs[0].jump == (2, 2) and rfs[1].jump == (1, 1)
    assert rfs[1].size == (3, 3)  # 2 + (2 - 1)*1
    one = arith.receptive_fields([Window(F=(3, 3), S=(2, 2))], transposed=[True])[0]
    assert one.jump == (Fraction(1, 2), Fraction(1, 2))


def _influence_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(mask)
    return rows.min(), rows.max(), cols.min(), cols.max()


def _random_window_net(draw, allow_max: bool, allow_deconv: bool):
    """A random stack of CONV / POOL (and DECONV) layers that fits a small input."""
    H = draw(st.integers(6, 16))
    W = draw(st.integers(6, 16))
    shape = (H, W, 1)
    layers = []
    for _ in range(draw(st.integers(1, 3))):
        kinds = ["conv", "avg"] + (["max"] if allow_max else []) + \
            (["deconv"] if allow_deconv else [])
        kind = draw(st.sampled_from(kinds))
        F = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
        S = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        if kind == "conv":
            P = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
            d = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
            layer = cn.Conv(K=draw(st.integers(1, 2)), F=F, S=S, P=P, dilation=d, floor=True)
        elif kind == "deconv":
            layer = cn.ConvTranspose(K=draw(st.integers(1, 2)), F=F, S=S)
        else:
            P = (draw(st.integers(0, F[0] // 2)), draw(st.integers(0, F[1] // 2)))
            cls = cn.AvgPool if kind == "avg" else cn.MaxPool
            layer = cls(F=F, S=S, P=P, floor=True)
        try:
            shape = layer.infer_shape(shape)
        except ShapeError:
            continue
        if shape[0] * shape[1] > 400:
            break
        layers.append(layer)
    assume(layers)
    return (H, W, 1), layers


def _positive_weights(net: cn.Sequential, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _, p, _ in net.parameters():
        p[...] = rng.uniform(0.5, 1.5, p.shape)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_receptive_field_contains_every_pixel_that_changes_an_output(data):
    in_shape, layers = _random_window_net(data.draw, allow_max=True, allow_deconv=True)
    net = cn.Sequential(layers, in_shape, seed=0, dtype=np.float64)
    rows = arith.layer_rows(net)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, *in_shape))
    base = net.forward(x)
    r, c = data.draw(st.integers(0, in_shape[0] - 1)), data.draw(st.integers(0, in_shape[1] - 1))
    x2 = x.copy()
    x2[0, r, c, 0] += 10.0
    changed = np.abs(net.forward(x2) - base)[0].max(axis=-1) > 1e-9
    rf = rows[-1].rf
    for i, j in zip(*np.nonzero(changed), strict=True):
        (top, bottom), (left, right) = rf.box((int(i), int(j)))
        assert top <= r <= bottom and left <= c <= right, (i, j, rf)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_receptive_field_equals_extent_of_influence(data):
    # positive weights and average pooling, no ReLU: nothing hides an input's influence, so the
    # pixels with a nonzero gradient of one output unit fill the RF box wherever it lies inside
    # the image (exactly: each box edge inside the image is an edge of the influence)
    in_shape, layers = _random_window_net(data.draw, allow_max=False, allow_deconv=False)
    net = cn.Sequential(layers, in_shape, seed=0, dtype=np.float64)
    _positive_weights(net, 2)
    rf = arith.layer_rows(net)[-1].rf
    H, W, K = net.output_shape
    i, j = data.draw(st.integers(0, H - 1)), data.draw(st.integers(0, W - 1))
    net.forward(np.ones((1, *in_shape)), train=True)
    dout = np.zeros((1, H, W, K))
    dout[0, i, j, 0] = 1.0
    dx = net.backward(dout)[0, :, :, 0]
    (t, b), (lft, rgt) = rf.box((i, j))
    if not (dx > 0).any():  # a unit that sees only padding: its box cannot lie in the image
        assert not (0 <= t and b < in_shape[0] and 0 <= lft and rgt < in_shape[1])
        return
    top, bottom, left, right = _influence_box(dx > 0)
    assert all(v.denominator == 1 for v in (t, b, lft, rgt))  # CONV/POOL boxes are whole pixels
    assert t <= top and bottom <= b and lft <= left and right <= rgt
    if t >= 0:
        assert top == t
    if b <= in_shape[0] - 1:
        assert bottom == b
    if lft >= 0:
        assert left == lft
    if rgt <= in_shape[1] - 1:
        assert right == rgt
    if 0 <= t and b < in_shape[0] and 0 <= lft and rgt < in_shape[1]:
        assert (bottom - top + 1, right - left + 1) == tuple(rf.size)


def test_receptive_field_box_doc():
    rf = ReceptiveField(size=(Fraction(5), Fraction(3)), jump=(Fraction(2), Fraction(1)),
                        start=(Fraction(1), Fraction(0)))
    assert rf.box((2, 3)) == ((3, 7), (2, 4))


def test_layer_macs_and_rows_match_layers():
    net = cn.build("INPUT(28x28x1) -> CONV(8,F=3,P=1) -> RELU -> POOL -> DECONV(4,F=2,S=2) "
                   "-> FLATTEN -> FC(10)", weights=False)
    rows = arith.layer_rows(net, batch=2)
    assert [r.macs for r in rows] == [
        28 * 28 * 8 * 9, 0, 0, 14 * 14 * 8 * 2 * 2 * 4, 0, 28 * 28 * 4 * 10]
    assert [r.params for r in rows] == [80, 0, 0, 2 * 2 * 8 * 4 + 4, 0, 3136 * 10 + 10]
    assert rows[0].activation_bytes == 28 * 28 * 8 * 2 * 4
    assert not rows[4].rf.whole and rows[5].rf.whole  # FC after FLATTEN sees the whole input
    assert math.prod(rows[4].output_shape) == 3136
