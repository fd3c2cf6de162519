"""The engine's public contract: layers, Sequential, errors, and the seeds' own facts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import convnet as cn
from convnet.layers.base import check_array
from gradcheck import numeric_grad


def rel_err(a, b):
    return float(np.max(np.abs(a - b)) / max(1e-12, np.max(np.abs(a)) + np.max(np.abs(b))))


# ----------------------------------------------------------------------- the public contract
def test_public_contract_example():
    net = cn.Sequential([cn.Conv(K=32, F=3, P=1), cn.ReLU(), cn.MaxPool(F=2, S=2), cn.FC(10)],
                        input_shape=(28, 28, 1), seed=0)
    x = np.random.default_rng(0).random((5, 28, 28, 1), dtype=np.float32)
    y = np.array([0, 1, 2, 3, 9])
    scores = net.forward(x, train=True)
    assert scores.shape == (5, 10) and scores.dtype == np.float32
    loss, dscores = cn.softmax_cross_entropy(scores, y)
    dx = net.backward(dscores)
    assert dx.shape == x.shape
    assert net.layers[0].params["W"].shape == (32, 3, 3, 1)
    assert net.layers[0].grads["W"].shape == (32, 3, 3, 1)
    assert net.num_params == 32 * 9 + 32 + 14 * 14 * 32 * 10 + 10
    assert net.input_shape == (28, 28, 1) and net.output_shape == (10,)
    layer = cn.Conv(K=4, F=3, S=2, P=1)
    assert layer.build((9, 9, 3)) == (5, 5, 4)
    out = layer.forward(np.ones((2, 9, 9, 3), np.float32), train=True)
    assert out.shape == (2, 5, 5, 4)
    assert layer.backward(np.ones_like(out)).shape == (2, 9, 9, 3)


def _one_of_each():
    return [cn.Conv(3, F=3, P=1), cn.DepthwiseConv(F=3, P=1), cn.ConvTranspose(3, F=2, S=2),
            cn.MaxPool(), cn.AvgPool(), cn.GlobalAvgPool(), cn.FC(3), cn.Flatten(), cn.ReLU(),
            cn.ReLU6(), cn.LeakyReLU(), cn.Tanh(), cn.Sigmoid(), cn.Dropout(0.5),
            cn.BatchNorm()]


@pytest.mark.parametrize("layer", _one_of_each(), ids=lambda ly: ly.kind)
def test_every_layer_used_on_its_own_backpropagates_a_training_forward_only(layer):
    """The same rule and the same error for every layer (the README's contract): backward
    follows a forward(x, train=True), once; after an evaluation forward it is a ConfigError."""
    layer.build((4, 4, 2), rng=np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((3, 4, 4, 2)).astype(np.float32)
    out = layer.forward(x)
    with pytest.raises(cn.ConfigError, match=r"call forward\(x, train=True\) before backward"):
        layer.backward(np.ones_like(out))
    out = layer.forward(x, train=True)
    assert layer.backward(np.ones_like(out)).shape == x.shape
    with pytest.raises(cn.ConfigError, match=r"call forward\(x, train=True\) before backward"):
        layer.backward(np.ones_like(out))


def test_seed_reproducible_and_distinct():
    spec = [cn.Conv(8, 3), cn.ReLU(), cn.FC(4)]
    a = cn.Sequential(spec, (6, 6, 2), seed=1)
    b = cn.Sequential([cn.Conv(8, 3), cn.ReLU(), cn.FC(4)], (6, 6, 2), seed=1)
    c = cn.Sequential([cn.Conv(8, 3), cn.ReLU(), cn.FC(4)], (6, 6, 2), seed=2)
    np.testing.assert_array_equal(a.layers[0].params["W"], b.layers[0].params["W"])
    assert not np.array_equal(a.layers[0].params["W"], c.layers[0].params["W"])


def test_init_he_for_relu_glorot_otherwise():
    net = cn.Sequential([cn.Conv(64, 3), cn.ReLU(), cn.Conv(64, 3), cn.Tanh(), cn.FC(10)],
                        (16, 16, 32), seed=0)
    w_he = net.layers[0].params["W"]
    assert w_he.std() == pytest.approx(np.sqrt(2 / (9 * 32)), rel=0.05)
    w_gl = net.layers[2].params["W"]
    limit = np.sqrt(6 / (9 * 64 + 9 * 64))
    assert np.abs(w_gl).max() <= limit and w_gl.std() == pytest.approx(limit / np.sqrt(3), rel=0.05)
    np.testing.assert_array_equal(net.layers[0].params["b"], 0)


def test_weights_false_allocates_nothing():
    net = cn.Sequential([cn.Conv(64, 3, P=1), cn.ReLU(), cn.FC(4096)], (224, 224, 3),
                        weights=False)
    assert all(not ly.params for ly in net.layers)
    assert net.num_params == (27 * 64 + 64) + (224 * 224 * 64 * 4096 + 4096)
    with pytest.raises(cn.ConfigError):
        net.forward(np.zeros((1, 224, 224, 3)))


# ----------------------------------------------------------------------------- seed facts
def test_seed_cs231n_conv_example():
    layer = cn.Conv(K=10, F=5, S=1, P=2)
    assert layer.build((32, 32, 3)) == (32, 32, 10)
    assert layer.num_params == 760
    assert layer.params["W"][0].size == 75  # 5x5x3 weights per filter


@pytest.mark.parametrize("S,P,expected", [(1, 0, (5, 5, 1)), (2, 0, (3, 3, 1)), (1, 1, (7, 7, 1))])
def test_seed_7x7_cases(S, P, expected):
    assert cn.Conv(K=1, F=3, S=S, P=P).infer_shape((7, 7, 1)) == expected


def test_seed_7x7_stride3_rejected_with_teaching_message():
    net_layers = [cn.Conv(K=8, F=3), cn.ReLU(), cn.Conv(K=8, F=3, S=3)]
    with pytest.raises(cn.ShapeError) as info:
        cn.Sequential(net_layers, input_shape=(9, 9, 1))
    msg = str(info.value)
    assert msg.startswith("conv2 (CONV K=8 F=3 S=3 P=0) on 7x7x8: (7 - 3 + 2*0)/3 + 1 = 2.33 is "
                          "not a whole number: stride 3 does not fit. Strides that fit: 1, 2, 4.")
    assert "Or pad P=1 with S=3 -> 3x3." in msg
    assert "floor=True" in msg


def test_floor_opt_in_keeps_pytorch_rule():
    layer = cn.Conv(K=2, F=3, S=3, floor=True)
    assert layer.build((7, 7, 1)) == (2, 2, 2)
    x = np.random.default_rng(0).standard_normal((1, 7, 7, 1)).astype(np.float32)
    ref = torch.nn.functional.conv2d(
        torch.from_numpy(x).permute(0, 3, 1, 2),
        torch.from_numpy(layer.params["W"]).permute(0, 3, 1, 2),
        torch.from_numpy(layer.params["b"]), stride=3,
    ).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(layer.forward(x), ref, rtol=1e-5, atol=1e-6)


def test_input_equal_to_filter_fits_any_stride():
    for S in (1, 2, 3, 7, 100):
        assert cn.Conv(K=3, F=5, S=S).infer_shape((5, 5, 2)) == (1, 1, 3)


def test_seed004_network_shapes():
    net = cn.Sequential(
        [cn.Conv(3, 5), cn.ReLU(), cn.MaxPool(), cn.Conv(6, 5), cn.ReLU(), cn.MaxPool(),
         cn.Flatten(), cn.FC(100), cn.ReLU(), cn.FC(10)],
        input_shape=(32, 32, 3), seed=0,
    )
    shapes = [s for ly, s in zip(net.layers, net.shapes, strict=True) if ly.kind not in ("RELU",)]
    assert shapes == [(28, 28, 3), (14, 14, 3), (10, 10, 6), (5, 5, 6), (150,), (100,), (10,)]


def test_seed004_stride_zero_rejected():
    with pytest.raises(cn.ShapeError, match=r"CONV: received S=0, including 0, which does not "
                                            r"satisfy `value > 0` \(stride 0 would never move"):
        cn.Conv(3, 5, S=0)


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("make,exc,text", [
    (lambda: cn.Conv(3, 3, P=-1), cn.ShapeError, "P=-1"),
    (lambda: cn.Conv(0, 3), cn.ShapeError, "K=0"),
    (lambda: cn.Conv(3, (3, 0)), cn.ShapeError, "F=(3, 0)"),
    (lambda: cn.Conv(3, 2.5), cn.ShapeError, "whole number"),
    (lambda: cn.Dropout(1.0), cn.ConfigError, "p=1.0"),
    (lambda: cn.LeakyReLU(-1), cn.ConfigError, "alpha"),
    (lambda: cn.ConvTranspose(3, 3, S=2, output_padding=2), cn.ConfigError, "output_padding=2"),
    (lambda: cn.MaxPool(F=2, P=2), cn.ShapeError, "at most half"),
    (lambda: cn.Sequential([cn.Conv(4, 9)], (7, 7, 1)), cn.ShapeError,
     "conv1 (CONV K=4 F=9 S=1 P=0) on 7x7x1: the filter extent 9 is larger than the padded input"),
    (lambda: cn.Sequential([cn.FC(4), cn.Conv(4, 1)], (7, 7, 1)), cn.ShapeError,
     "conv1 (CONV K=4 F=1 S=1 P=0) on 4: needs an H x W x D volume"),
    (lambda: cn.Sequential([cn.FC(4)], (7, 7)), cn.ShapeError, "has no depth"),
    (lambda: cn.Sequential([], (7, 7, 1)), cn.ShapeError, "at least one layer"),
])
def test_bad_configurations(make, exc, text):
    with pytest.raises(exc) as info:
        make()
    assert text in str(info.value)
    assert isinstance(info.value, ValueError)


def test_bad_arrays():
    net = cn.Sequential([cn.Conv(2, 3), cn.FC(3)], (5, 5, 2), seed=0)
    with pytest.raises(cn.ShapeError, match=r"expected an input of shape \(N, 5, 5, 2\).*x\[None\]"):
        net.forward(np.zeros((5, 5, 2)))
    with pytest.raises(cn.ShapeError, match="NCHW"):
        net.forward(np.zeros((1, 2, 5, 5)))
    bad = np.zeros((1, 5, 5, 2))
    bad[0, 1, 1, 1] = np.nan
    with pytest.raises(cn.InputError, match="1 NaN or Inf"):
        net.forward(bad)
    with pytest.raises(cn.InputError):
        check_array(np.array(["a"]), None, np.dtype(np.float32), "x")


def test_layer_reused_twice_rejected():
    relu = cn.ReLU()
    with pytest.raises(cn.ConfigError, match="appears twice"):
        cn.Sequential([cn.FC(3), relu, cn.FC(3), relu], (4,))


# ------------------------------------------------------------------ whole-network gradients
def _net64(seed):
    return cn.Sequential(
        [cn.Conv(3, (3, 2), S=(1, 2), P=(1, 0)), cn.BatchNorm(), cn.LeakyReLU(0.1),
         cn.MaxPool(F=2, S=1), cn.ConvTranspose(2, 3, S=2, P=1, output_padding=1), cn.Tanh(),
         cn.AvgPool(F=2), cn.Dropout(0.3), cn.Conv(2, 1), cn.Sigmoid(), cn.Flatten(), cn.FC(4)],
        input_shape=(6, 8, 2), seed=seed, dtype=np.float64,
    )


def test_whole_network_gradient_check_float64():
    net = _net64(3)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 6, 8, 2))
    y = np.array([1, 3])

    def loss_fn():
        net.rng = np.random.default_rng(42)  # same dropout mask every evaluation
        for ly in net.layers:
            if isinstance(ly, cn.Dropout):
                ly.rng = net.rng
        return cn.softmax_cross_entropy(net.forward(x, train=True), y)[0]

    loss_fn()
    net.rng = np.random.default_rng(42)
    for ly in net.layers:
        if isinstance(ly, cn.Dropout):
            ly.rng = net.rng
    _, d = cn.softmax_cross_entropy(net.forward(x, train=True), y)
    dx = net.backward(d)
    assert rel_err(dx, numeric_grad(loss_fn, x)) < 1e-6
    for name, p, g in net.parameters():
        # conv1.b feeds BN, which removes any constant: its true gradient is 0, so compare with
        # an absolute floor as well
        np.testing.assert_allclose(g, numeric_grad(loss_fn, p), rtol=1e-5, atol=1e-8, err_msg=name)


def test_reference_network_matches_pytorch():
    """The engine issue's reference network, forward and every gradient, against PyTorch."""
    net = cn.Sequential(
        [cn.Conv(32, 3, P=1), cn.ReLU(), cn.MaxPool(), cn.Conv(64, 3, P=1), cn.ReLU(),
         cn.MaxPool(), cn.FC(128), cn.ReLU(), cn.FC(10)],
        input_shape=(28, 28, 1), seed=0,
    )
    rng = np.random.default_rng(1)
    x = rng.random((8, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 8)
    loss, d = cn.softmax_cross_entropy(net.forward(x, train=True), y)
    dx = net.backward(d)

    t = lambda a: torch.tensor(np.asarray(a, np.float64), requires_grad=True)  # noqa: E731
    c1w, c1b = t(net[0].params["W"].transpose(0, 3, 1, 2)), t(net[0].params["b"])
    c2w, c2b = t(net[3].params["W"].transpose(0, 3, 1, 2)), t(net[3].params["b"])
    f1w, f1b = t(net[6].params["W"]), t(net[6].params["b"])
    f2w, f2b = t(net[8].params["W"]), t(net[8].params["b"])
    xt = t(x.transpose(0, 3, 1, 2))
    F = torch.nn.functional
    h = F.max_pool2d(F.relu(F.conv2d(xt, c1w, c1b, padding=1)), 2)
    h = F.max_pool2d(F.relu(F.conv2d(h, c2w, c2b, padding=1)), 2)
    h = h.permute(0, 2, 3, 1).reshape(8, -1)  # NHWC flatten order
    s = F.relu(h @ f1w + f1b) @ f2w + f2b
    lt = F.cross_entropy(s, torch.from_numpy(y))
    lt.backward()
    assert abs(loss - lt.item()) < 1e-5
    assert rel_err(dx, xt.grad.numpy().transpose(0, 2, 3, 1)) < 1e-4
    pairs = [(net[0].grads["W"], c1w.grad.numpy().transpose(0, 2, 3, 1)),
             (net[0].grads["b"], c1b.grad), (net[3].grads["W"],
                                             c2w.grad.numpy().transpose(0, 2, 3, 1)),
             (net[3].grads["b"], c2b.grad), (net[6].grads["W"], f1w.grad),
             (net[6].grads["b"], f1b.grad), (net[8].grads["W"], f2w.grad),
             (net[8].grads["b"], f2b.grad)]
    for ours, ref in pairs:
        assert rel_err(ours, np.asarray(ref)) < 1e-4


def test_float32_network_close_to_float64_reference():
    net32 = _net64(5)
    net32 = cn.Sequential([cn.Conv(4, 3, P=1), cn.ReLU(), cn.MaxPool(), cn.FC(5)], (8, 8, 3),
                          seed=5)
    net64 = cn.Sequential([cn.Conv(4, 3, P=1), cn.ReLU(), cn.MaxPool(), cn.FC(5)], (8, 8, 3),
                          seed=5, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((3, 8, 8, 3))
    s32, s64 = net32.forward(x), net64.forward(x)
    assert s32.dtype == np.float32 and s64.dtype == np.float64
    assert rel_err(s32, s64) < 1e-4


def test_dropout_and_batchnorm_modes():
    d = cn.Dropout(0.25)
    d.build((1000,), rng=np.random.default_rng(0))
    x = np.ones((20, 1000), np.float32)
    out = d.forward(x, train=True)
    assert set(np.unique(out)) <= {0.0, np.float32(1 / 0.75)}
    assert abs((out == 0).mean() - 0.25) < 0.01
    np.testing.assert_array_equal(d.forward(x, train=False), x)
    bn = cn.BatchNorm()
    bn.build((4, 4, 3))
    xb = np.random.default_rng(0).standard_normal((8, 4, 4, 3)).astype(np.float32) * 3 + 2
    yb = bn.forward(xb, train=True)
    np.testing.assert_allclose(yb.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    assert np.all(bn.buffers["running_mean"] != 0)
    assert not np.allclose(bn.forward(xb, train=False), yb)


def test_spec_text_and_repr():
    net = cn.Sequential([cn.Conv(8, (3, 5), S=(2, 1), dilation=2), cn.ReLU(),
                         cn.MaxPool(F=3, S=2, floor=True), cn.GlobalAvgPool(), cn.Dropout(0.5),
                         cn.FC(3)], (33, 32, 3), weights=False)
    assert net.spec == ("INPUT(33x32x3) -> CONV(8,F=3x5,S=2x1,dilation=2) -> RELU -> "
                        "POOL(F=3,S=2,floor=true) -> GAP -> DROPOUT(p=0.5) -> FC(3)")
    assert repr(cn.Conv(4, 3, P=1)) == "Conv(4, F=3, P=1)"
    assert [ly.name for ly in net.layers] == ["conv1", "relu1", "pool1", "gap1", "dropout1", "fc1"]


def test_state_dict_roundtrip_and_mismatch():
    a = cn.Sequential([cn.Conv(4, 3), cn.BatchNorm(), cn.FC(2)], (5, 5, 1), seed=0)
    b = cn.Sequential([cn.Conv(4, 3), cn.BatchNorm(), cn.FC(2)], (5, 5, 1), seed=1)
    b.load_state_dict(a.state_dict())
    x = np.random.default_rng(0).random((2, 5, 5, 1))
    np.testing.assert_array_equal(a.forward(x), b.forward(x))
    c = cn.Sequential([cn.Conv(5, 3), cn.BatchNorm(), cn.FC(2)], (5, 5, 1), seed=1)
    with pytest.raises(cn.ShapeError, match="conv1.W: expected shape"):
        c.load_state_dict(a.state_dict())


def test_backward_without_input_gradient_gives_same_param_grads():
    a = cn.Sequential([cn.Conv(4, 3, P=1), cn.ReLU(), cn.FC(3)], (6, 6, 2), seed=0)
    x = np.random.default_rng(0).random((3, 6, 6, 2), dtype=np.float32)
    _, d = cn.softmax_cross_entropy(a.forward(x, train=True), np.array([0, 1, 2]))
    assert a.backward(d).shape == x.shape
    full = {k: g.copy() for k, _, g in a.parameters()}
    a.forward(x, train=True)
    assert a.backward(d, need_dx=False) is None
    for k, _, g in a.parameters():
        np.testing.assert_array_equal(g, full[k])


def test_layer_used_on_its_own_is_validated_like_a_network():
    layer = cn.Conv(K=2, F=3, S=2)
    with pytest.raises(cn.ShapeError, match="call build"):
        layer.forward(np.zeros((1, 7, 7, 1)))
    layer.build((7, 7, 1))
    assert layer.forward(np.zeros((1, 9, 9, 1))).shape == (1, 4, 4, 2)  # another size that fits
    with pytest.raises(cn.ShapeError, match=r"\(8 - 3 \+ 2\*0\)/2 \+ 1 = 3.50 is not a whole"):
        layer.forward(np.zeros((1, 8, 8, 1)))  # never silently cropped
    with pytest.raises(cn.ShapeError, match=r"expected an input of shape \(N, 7, 7, 1\)"):
        layer.forward(np.zeros((1, 7, 7, 3)))  # depth mismatch
    with pytest.raises(cn.InputError):
        layer.forward(np.full((1, 7, 7, 1), np.inf))


def test_backward_needs_a_training_forward_and_the_right_shape():
    net = cn.Sequential([cn.Conv(2, 3), cn.FC(3)], (5, 5, 1), seed=0)
    with pytest.raises(cn.ConfigError, match="before backward"):
        net.backward(np.zeros((2, 3)))
    net.forward(np.zeros((2, 5, 5, 1)), train=True)
    with pytest.raises(cn.ShapeError, match=r"dout has shape \(3, 3\), but the last forward "
                                            r"returned \(2, 3\)"):
        net.backward(np.zeros((3, 3)))


def test_layer_cannot_join_a_second_network():
    conv = cn.Conv(2, 3)
    cn.Sequential([conv, cn.FC(3)], (5, 5, 1), seed=0)
    with pytest.raises(cn.ConfigError, match="already belongs to another network"):
        cn.Sequential([conv, cn.FC(3)], (5, 5, 1), seed=0)
