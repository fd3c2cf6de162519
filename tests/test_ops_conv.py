"""ops/conv.py: gradient checks, PyTorch as oracle, the shared transposed-conv kernel, seed facts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from convnet import arith
from convnet.ops import conv as C
from convnet.ops.conv import (
    conv2d_backward,
    conv2d_forward,
    conv2d_input_grad,
    conv2d_weight_grad,
    conv_transpose2d_backward,
    conv_transpose2d_forward,
)
from gradcheck import numeric_grad as _numeric_grad

torch.set_num_threads(1)


# ---------------------------------------------------------------------------- configurations
@st.composite
def conv_configs(draw, max_side=7):
    """A CONV configuration that works in floor mode: any stride, cropped or exact."""
    F = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    S = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    P = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    dil = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    hw = []
    for i in range(2):
        fe = arith.effective_extent(F[i], dil[i])
        lo = max(1, fe - 2 * P[i])        # lo: the filter exactly covers the padded input
        hw.append(draw(st.integers(lo, max(lo, min(max_side, lo + 2 * S[i] + 1)))))
    return dict(N=draw(st.integers(1, 2)), H=hw[0], W=hw[1], D=draw(st.integers(1, 3)),
                K=draw(st.integers(1, 3)), F=F, S=S, P=P, dil=dil, bias=draw(st.booleans()))


@st.composite
def deconv_configs(draw):
    """A transposed-CONV configuration with a positive output size; any valid output padding."""
    F = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    S = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dil = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    hw = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    P, a = [], []
    for i in range(2):
        a.append(draw(st.integers(0, max(S[i], dil[i]) - 1)))
        full = arith.deconv_output_size(hw[i], F[i], S[i], 0, a[i], dil[i])
        P.append(draw(st.integers(0, min(2, (full - 1) // 2))))
    return dict(N=draw(st.integers(1, 2)), H=hw[0], W=hw[1], D=draw(st.integers(1, 3)),
                K=draw(st.integers(1, 3)), F=F, S=S, P=tuple(P), dil=dil, a=tuple(a),
                bias=draw(st.booleans()))


def _arrays(cfg, rng, dtype, transpose=False):
    N, H, W, D, K, F = cfg["N"], cfg["H"], cfg["W"], cfg["D"], cfg["K"], cfg["F"]
    x = rng.standard_normal((N, H, W, D)).astype(dtype)
    Wshape = (D, F[0], F[1], K) if transpose else (K, F[0], F[1], D)
    Wt = rng.standard_normal(Wshape).astype(dtype)
    b = rng.standard_normal(K).astype(dtype) if cfg["bias"] else None
    return x, Wt, b


def _random_conv_config(rng):
    """Same space as conv_configs, from a NumPy generator (for the many-configuration sweeps)."""
    F = tuple(int(v) for v in rng.integers(1, 6, 2))
    S = tuple(int(v) for v in rng.integers(1, 4, 2))
    P = tuple(int(v) for v in rng.integers(0, 3, 2))
    dil = tuple(int(v) for v in rng.integers(1, 3, 2))
    hw = []
    for i in range(2):
        lo = max(1, arith.effective_extent(F[i], dil[i]) - 2 * P[i])
        hw.append(int(rng.integers(lo, lo + 3 * S[i] + 4)))
    return dict(N=int(rng.integers(1, 4)), H=hw[0], W=hw[1], D=int(rng.integers(1, 6)),
                K=int(rng.integers(1, 6)), F=F, S=S, P=P, dil=dil, bias=bool(rng.integers(2)))


def _random_deconv_config(rng):
    F = tuple(int(v) for v in rng.integers(1, 6, 2))
    S = tuple(int(v) for v in rng.integers(1, 4, 2))
    dil = tuple(int(v) for v in rng.integers(1, 3, 2))
    hw = tuple(int(v) for v in rng.integers(1, 7, 2))
    P, a = [], []
    for i in range(2):
        a.append(int(rng.integers(0, max(S[i], dil[i]))))
        full = arith.deconv_output_size(hw[i], F[i], S[i], 0, a[i], dil[i])
        P.append(int(rng.integers(0, min(3, (full - 1) // 2 + 1))))
    return dict(N=int(rng.integers(1, 4)), H=hw[0], W=hw[1], D=int(rng.integers(1, 6)),
                K=int(rng.integers(1, 6)), F=F, S=S, P=tuple(P), dil=dil, a=tuple(a),
                bias=bool(rng.integers(2)))


# ------------------------------------------------------------------ central-difference checks
def _assert_grads(forward, backward, arrays, names):
    """Loss = sum(out * G) for a fixed random G, so dL/dout = G."""
    out, cache = forward()
    G = np.random.default_rng(1).standard_normal(out.shape)
    analytic = backward(G, cache)
    for arr, name, got in zip(arrays, names, analytic, strict=True):
        if arr is None:
            assert got is None, f"{name} should be None without a bias"
            continue
        num = _numeric_grad(lambda: float(np.sum(forward()[0] * G)), arr)
        np.testing.assert_allclose(got, num, rtol=1e-6, atol=1e-7, err_msg=name)


@settings(max_examples=75, deadline=None)
@given(cfg=conv_configs(), seed=st.integers(0, 2**16))
def test_conv2d_gradients_central_difference(cfg, seed):
    x, W, b = _arrays(cfg, np.random.default_rng(seed), np.float64)
    args = (cfg["S"], cfg["P"], cfg["dil"])
    _assert_grads(lambda: conv2d_forward(x, W, b, *args), conv2d_backward,
                  (x, W, b), ("dx", "dW", "db"))


@settings(max_examples=75, deadline=None)
@given(cfg=deconv_configs(), seed=st.integers(0, 2**16))
def test_conv_transpose2d_gradients_central_difference(cfg, seed):
    x, W, b = _arrays(cfg, np.random.default_rng(seed), np.float64, transpose=True)
    args = (cfg["S"], cfg["P"], cfg["dil"], cfg["a"])
    _assert_grads(lambda: conv_transpose2d_forward(x, W, b, *args), conv_transpose2d_backward,
                  (x, W, b), ("dx", "dW", "db"))


@pytest.mark.parametrize("cfg", [
    # floor-cropped: (7 - 3 + 0)/2 + 1 = 3 rows; (8 - 3)/3 + 1 = 2.67 -> 2 cols: input cols 6, 7
    # are never read and must get zero gradient
    dict(N=1, H=7, W=8, D=1, K=2, F=(3, 3), S=(2, 3), P=(0, 0), dil=(1, 1), bias=True),
    # filter exactly the input size, batch 1, depth 1
    dict(N=1, H=4, W=3, D=1, K=1, F=(4, 3), S=(2, 2), P=(0, 0), dil=(1, 1), bias=False),
    # 1x1 fast path, stride 1 and stride 2
    dict(N=2, H=3, W=3, D=3, K=2, F=(1, 1), S=(1, 1), P=(0, 0), dil=(1, 1), bias=True),
    dict(N=2, H=4, W=5, D=2, K=2, F=(1, 1), S=(2, 2), P=(0, 0), dil=(1, 1), bias=True),
    # padding larger than the dilated filter reaches: offsets reading only zeros
    dict(N=1, H=2, W=2, D=2, K=1, F=(2, 2), S=(3, 1), P=(2, 2), dil=(1, 2), bias=True),
])
def test_conv2d_gradients_named_cases(cfg):
    x, W, b = _arrays(cfg, np.random.default_rng(0), np.float64)
    args = (cfg["S"], cfg["P"], cfg["dil"])
    _assert_grads(lambda: conv2d_forward(x, W, b, *args), conv2d_backward,
                  (x, W, b), ("dx", "dW", "db"))


def test_floor_cropped_inputs_get_zero_gradient():
    x = np.random.default_rng(0).standard_normal((1, 7, 8, 1))
    W = np.ones((1, 3, 3, 1))
    out, cache = conv2d_forward(x, W, None, (2, 3), (0, 0), (1, 1))
    assert out.shape == (1, 3, 2, 1)
    dx, _, _ = conv2d_backward(np.ones_like(out), cache)
    assert np.all(dx[:, :, 6:] == 0) and np.all(dx[:, :, :6] != 0)


# -------------------------------------------------------------------------- PyTorch oracle
def _nchw(a):
    return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))


def _nhwc(t):
    return t.detach().permute(0, 2, 3, 1).numpy()


def _rel_err(got, ref):
    return float(np.max(np.abs(got - ref)) / max(np.max(np.abs(ref)), 1e-12))


def _torch_reference(cfg, x, W, b, G, transpose):
    """Float64 forward and gradients from PyTorch, converted back to our layouts."""
    xt = _nchw(x.astype(np.float64)).requires_grad_()
    # conv weight (K,Fh,Fw,D) -> torch (K,D,Fh,Fw); transposed (D,Fh,Fw,K) -> torch (in=D,out=K,Fh,Fw)
    Wt = torch.from_numpy(W.astype(np.float64).transpose(0, 3, 1, 2).copy()).requires_grad_()
    bt = torch.from_numpy(b.astype(np.float64)).requires_grad_() if b is not None else None
    if transpose:
        out = torch.nn.functional.conv_transpose2d(
            xt, Wt, bt, cfg["S"], cfg["P"], cfg["a"], dilation=cfg["dil"])
    else:
        out = torch.nn.functional.conv2d(xt, Wt, bt, cfg["S"], cfg["P"], cfg["dil"])
    out.backward(_nchw(G.astype(np.float64)))
    return (_nhwc(out), _nhwc(xt.grad), Wt.grad.permute(0, 2, 3, 1).numpy(),
            None if b is None else bt.grad.numpy())


def _compare_with_torch(cfg, rng, transpose):
    x, W, b = _arrays(cfg, rng, np.float32, transpose)
    if transpose:
        out, cache = conv_transpose2d_forward(x, W, b, cfg["S"], cfg["P"], cfg["dil"], cfg["a"])
        G = rng.standard_normal(out.shape).astype(np.float32)
        grads = conv_transpose2d_backward(G, cache)
    else:
        out, cache = conv2d_forward(x, W, b, cfg["S"], cfg["P"], cfg["dil"])
        G = rng.standard_normal(out.shape).astype(np.float32)
        grads = conv2d_backward(G, cache)
    ref = _torch_reference(cfg, x, W, b, G, transpose)
    for name, got, want in zip(("out", "dx", "dW", "db"), (out, *grads), ref, strict=True):
        if want is None:
            assert got is None
            continue
        assert got.dtype == np.float32, f"{name} was upcast to {got.dtype}"
        assert got.shape == want.shape, (name, got.shape, want.shape, cfg)
        err = _rel_err(got, want)
        assert err <= 1e-4, f"{name}: relative error {err:.2e} for {cfg}"


@pytest.mark.parametrize("chunk", range(4))
def test_conv2d_matches_torch_on_random_configs(chunk):
    rng = np.random.default_rng(100 + chunk)
    for _ in range(40):                                   # 4 x 40 = 160 configurations
        _compare_with_torch(_random_conv_config(rng), rng, transpose=False)


@pytest.mark.parametrize("chunk", range(2))
def test_conv_transpose2d_matches_torch_on_random_configs(chunk):
    rng = np.random.default_rng(200 + chunk)
    for _ in range(40):                                   # 2 x 40 = 80 configurations
        _compare_with_torch(_random_deconv_config(rng), rng, transpose=True)


def test_reference_network_conv_layer_matches_torch():
    """The benchmark's second layer at a real size (larger sums than the random sweeps)."""
    cfg = dict(N=8, H=14, W=14, D=32, K=64, F=(3, 3), S=(1, 1), P=(1, 1), dil=(1, 1), bias=True)
    _compare_with_torch(cfg, np.random.default_rng(3), transpose=False)


# ------------------------------------------------------------------ one kernel, used both ways
def test_conv_transpose2d_forward_is_conv2d_input_grad(monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 3, 3)).astype(np.float32)
    W = rng.standard_normal((3, 3, 2, 5)).astype(np.float32)
    S, P, dil, a = (2, 3), (1, 0), (1, 2), (1, 2)
    out, _ = conv_transpose2d_forward(x, W, None, S, P, dil, a)
    hw = (arith.deconv_output_size(4, 3, 2, 1, 1, 1), arith.deconv_output_size(3, 2, 3, 0, 2, 2))
    assert out.shape == (2, *hw, 5)
    np.testing.assert_array_equal(out, conv2d_input_grad(x, W, hw, S, P, dil))

    calls = []
    real = C.conv2d_input_grad

    def spy(*args, **kwargs):
        calls.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(C, "conv2d_input_grad", spy)
    conv_transpose2d_forward(x, W, None, S, P, dil, a)
    xc = rng.standard_normal((1, 6, 6, 5)).astype(np.float32)
    out, cache = conv2d_forward(xc, W, None, (1, 1), (0, 0), (1, 1))
    conv2d_backward(out, cache)
    assert calls == [hw, (6, 6)], "transposed forward and conv backward must share the kernel"


def test_conv_transpose2d_backward_dx_is_conv2d_forward():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 4, 2))
    W = rng.standard_normal((2, 3, 3, 4))
    out, cache = conv_transpose2d_forward(x, W, None, (2, 2), (1, 1), (1, 1), (1, 0))
    dout = rng.standard_normal(out.shape)
    dx, dW, _ = conv_transpose2d_backward(dout, cache)
    np.testing.assert_array_equal(dx, conv2d_forward(dout, W, None, (2, 2), (1, 1), (1, 1))[0])
    # roles swapped: the transposed conv's input is the conv's output gradient
    np.testing.assert_allclose(dW, conv2d_weight_grad(dout, x, (3, 3), (2, 2), (1, 1), (1, 1)),
                               rtol=1e-12)


def test_weight_grad_and_need_dx_agree_with_backward():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 9, 7, 3)).astype(np.float32)
    W = rng.standard_normal((4, 3, 2, 3)).astype(np.float32)
    out, cache = conv2d_forward(x, W, None, (2, 2), (1, 0), (2, 1))
    dout = rng.standard_normal(out.shape).astype(np.float32)
    dx, dW, db = conv2d_backward(dout, cache)
    assert db is None
    np.testing.assert_allclose(conv2d_weight_grad(x, dout, (3, 2), (2, 2), (1, 0), (2, 1)), dW,
                               rtol=1e-6)
    skipped, dW2, _ = conv2d_backward(dout, cache, need_dx=False)
    assert skipped is None
    np.testing.assert_array_equal(dW2, dW)
    assert dx.shape == x.shape


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept(dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 5, 3)).astype(dtype)
    W = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    b = np.zeros(4, dtype)
    out, cache = conv2d_forward(x, W, b, (2, 2), (1, 1), (1, 1))
    assert out.dtype == dtype
    assert all(g.dtype == dtype for g in conv2d_backward(out, cache))
    Wt = rng.standard_normal((3, 2, 2, 4)).astype(dtype)
    out, cache = conv_transpose2d_forward(x, Wt, b, (2, 2), (0, 0), (1, 1), (1, 1))
    assert out.dtype == dtype
    assert all(g.dtype == dtype for g in conv_transpose2d_backward(out, cache))


# ----------------------------------------------------------------------------- seeds' facts
def test_seed_7x7_F3_S2_gives_3x3():
    out, _ = conv2d_forward(np.ones((1, 7, 7, 1)), np.ones((1, 3, 3, 1)), None, (2, 2), (0, 0),
                            (1, 1))
    assert out.shape == (1, 3, 3, 1)
    np.testing.assert_array_equal(out, 9.0)


def test_seed_32x32x3_ten_5x5_filters_S1_P2_gives_32x32x10():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 32, 32, 3)).astype(np.float32)
    W = rng.standard_normal((10, 5, 5, 3)).astype(np.float32)
    out, _ = conv2d_forward(x, W, np.zeros(10, np.float32), (1, 1), (2, 2), (1, 1))
    assert out.shape == (2, 32, 32, 10)
    # the centre output is the dot product of the filter with the 5x5x3 patch around it
    np.testing.assert_allclose(out[1, 16, 16, 7], np.sum(x[1, 14:19, 14:19] * W[7]), rtol=1e-5)


def test_transposed_conv_undoes_the_seed_shape():
    out, _ = conv_transpose2d_forward(np.ones((1, 3, 3, 1)), np.ones((1, 3, 3, 1)), None,
                                      (2, 2), (0, 0), (1, 1), (0, 0))
    assert out.shape == (1, 7, 7, 1)
    # overlapping patches add up where S < F: the centre of a 2x2 overlap gets 4 contributions
    assert out[0, 2, 2, 0] == 4.0 and out[0, 0, 0, 0] == 1.0 and out[0, 1, 1, 0] == 1.0
