"""Every path of ops/conv.py and ops/pool.py against the plain reference (ops/reference.py).

- the reference itself: central differences in float64, PyTorch on randomized shapes;
- each ConvPath (forced where it applies) and each InputGradPath against the reference, in
  float64 to 1e-10, and float32 against float64; one image per block against the default blocks;
- the CONV + POOL fusions against the reference CONV then POOL;
- the pooling kernels (compiled and NumPy) against the reference pools;
- choose_path's decisions at the default thresholds, and force_path's scoping.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from convnet import arith
from convnet.ops import _blocks, _jit
from convnet.ops import conv as C
from convnet.ops import pool as Pl
from convnet.ops import reference as R
from convnet.ops.conv import (
    ConvPath,
    InputGradPath,
    choose_input_grad_path,
    choose_path,
    force_path,
)
from gradcheck import numeric_grad

FAST = settings(max_examples=25, deadline=None)


def _grid(hw, F, S, P, d):
    return tuple(arith.conv_output_size(n, f, s, p, dd, floor=True)
                 for n, f, s, p, dd in zip(hw, F, S, P, d, strict=True))


def _close(got, want, tol, what=""):
    if want is None:
        assert got is None, what
        return
    assert got.shape == want.shape, what
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(1.0, np.abs(want).max()),
                               err_msg=what)


def _nchw(a):
    return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))


def _nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


# ------------------------------------------------------------------------- the reference
@st.composite
def conv_cases(draw, F=None, S=None, d=None, P=None, D=None, K=None, max_side=7):
    """A convolution that fits (floor mode), rectangular by default; any field can be fixed."""
    F = F or (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    S = S or (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    d = d or (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    P = P or (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    hw = []
    for k in range(2):
        lo = max(1, arith.effective_extent(F[k], d[k]) - 2 * P[k])
        hw.append(draw(st.integers(lo, max(lo, max_side))))
    D = D or draw(st.integers(1, 4))
    K = K or draw(st.integers(1, 4))
    return dict(N=draw(st.integers(1, 3)), hw=tuple(hw), D=D, K=K, F=F, S=S, P=P, d=d,
                bias=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


def _arrays(case):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["N"], *case["hw"], case["D"]))
    W = rng.standard_normal((case["K"], *case["F"], case["D"])) * 0.5
    b = rng.standard_normal(case["K"]) if case["bias"] else None
    out_hw = _grid(case["hw"], case["F"], case["S"], case["P"], case["d"])
    return x, W, b, rng.standard_normal((case["N"], *out_hw, case["K"]))


def _args(case):
    return case["S"], case["P"], case["d"]


@FAST
@given(case=conv_cases())
def test_reference_conv_matches_torch(case):
    x, W, b, dout = _arrays(case)
    S, P, d = _args(case)
    tx, tW = _nchw(x).requires_grad_(), _nchw(W).requires_grad_()
    tb = None if b is None else torch.from_numpy(b)
    tout = torch.nn.functional.conv2d(tx, tW, tb, stride=S, padding=P, dilation=d)
    tout.backward(_nchw(dout))
    _close(R.conv2d(x, W, b, S, P, d), _nhwc(tout), 1e-12)
    _close(R.conv2d_input_grad(dout, W, x.shape[1:3], S, P, d), _nhwc(tx.grad), 1e-12)
    _close(R.conv2d_weight_grad(x, dout, W.shape[1:3], S, P, d), _nhwc(tW.grad), 1e-12)


@FAST
@given(case=conv_cases(max_side=5), data=st.data())
def test_reference_conv_transpose_matches_torch(case, data):
    S, P, d = _args(case)
    a = tuple(data.draw(st.integers(0, max(s, dd) - 1)) for s, dd in zip(S, d, strict=True))
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["N"], *case["hw"], case["D"]))
    W = rng.standard_normal((case["D"], *case["F"], case["K"]))     # (D, Fh, Fw, K)
    hw = tuple(arith.deconv_output_size(n, f, s, p, aa, dd) for n, f, s, p, aa, dd
               in zip(case["hw"], case["F"], S, P, a, d, strict=True))
    if min(hw) < 1:
        return
    tx, tW = _nchw(x).requires_grad_(), torch.from_numpy(W.transpose(0, 3, 1, 2).copy())
    tW.requires_grad_()
    tout = torch.nn.functional.conv_transpose2d(tx, tW, stride=S, padding=P, output_padding=a,
                                                dilation=d)
    out = R.conv_transpose2d(x, W, None, S, P, d, a)
    _close(out, _nhwc(tout), 1e-12)
    dout = rng.standard_normal(out.shape)
    tout.backward(_nchw(dout))
    dx, dW, _ = R.conv_transpose2d_backward(dout, x, W, S, P, d)
    _close(dx, _nhwc(tx.grad), 1e-12)
    _close(dW, tW.grad.numpy().transpose(0, 2, 3, 1), 1e-12)


def test_reference_conv_gradients_central_difference():
    case = dict(N=2, hw=(5, 6), D=2, K=3, F=(3, 2), S=(2, 1), P=(1, 2), d=(1, 2), bias=True,
                seed=4)
    x, W, b, dout = _arrays(case)
    args = _args(case)

    def loss():
        return float(np.sum(R.conv2d(x, W, b, *args) * dout))

    _close(R.conv2d_input_grad(dout, W, x.shape[1:3], *args), numeric_grad(loss, x), 1e-7)
    _close(R.conv2d_weight_grad(x, dout, W.shape[1:3], *args), numeric_grad(loss, W), 1e-7)
    _close(dout.sum(axis=(0, 1, 2)), numeric_grad(loss, b), 1e-7)


@FAST
@given(N=st.integers(1, 2), H=st.integers(1, 7), Wd=st.integers(1, 7), D=st.integers(1, 3),
       F=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       S=st.tuples(st.integers(1, 3), st.integers(1, 3)), data=st.data())
def test_reference_pools_match_torch(N, H, Wd, D, F, S, data):
    P = (data.draw(st.integers(0, F[0] // 2)), data.draw(st.integers(0, F[1] // 2)))
    if F[0] > H + 2 * P[0] or F[1] > Wd + 2 * P[1]:
        return
    rng = np.random.default_rng(data.draw(st.integers(0, 999)))
    x = rng.integers(-2, 3, (N, H, Wd, D)).astype(np.float64)        # ties everywhere
    out, idx = R.maxpool2d(x, F, S, P)
    tx = _nchw(x).requires_grad_()
    tout = torch.nn.functional.max_pool2d(tx, F, S, P)
    _close(out, _nhwc(tout), 0)
    g = rng.standard_normal(out.shape)
    tout.backward(_nchw(g))
    _close(R.maxpool2d_backward(g, idx, x.shape, F, S, P), _nhwc(tx.grad), 1e-12)
    tx.grad = None
    tout = torch.nn.functional.avg_pool2d(tx, F, S, P)
    _close(R.avgpool2d(x, F, S, P), _nhwc(tout), 1e-12)
    tout.backward(_nchw(g))
    _close(R.avgpool2d_backward(g, x.shape, F, S, P), _nhwc(tx.grad), 1e-12)


# ---------------------------------------------------------------- every ConvPath, forced
def _ours(x, W, b, dout, args):
    """Forward, both backwards (with and without dx) and the standalone weight gradient."""
    out, cache = C.conv2d_forward(x, W, b, *args)
    dx, dW, db = C.conv2d_backward(dout, cache)
    none, dW1, db1 = C.conv2d_backward(dout, cache, need_dx=False)
    assert none is None
    return [out, dx, dW, db, dW1, db1, C.conv2d_weight_grad(x, dout, W.shape[1:3], *args)]


def _reference(x, W, b, dout, args):
    dW = R.conv2d_weight_grad(x, dout, W.shape[1:3], *args)
    db = None if b is None else dout.sum(axis=(0, 1, 2))
    return [R.conv2d(x, W, b, *args), R.conv2d_input_grad(dout, W, x.shape[1:3], *args),
            dW, db, dW, db, dW]


def _check_path(path, case, fused=True):
    x, W, b, dout = _arrays(case)
    args = _args(case)
    want = _reference(x, W, b, dout, args)
    with force_path(path, fused_backward=fused):
        assert choose_path(x.shape, W.shape, *args, dout.shape[1:3], x.dtype) is path
        got = _ours(x, W, b, dout, args)
        with force_path(block_bytes=1):                            # one image per block
            small = _ours(x, W, b, dout, args)
        f32 = _ours(*(None if a is None else a.astype(np.float32) for a in (x, W, b, dout)),
                    args)
    names = ["out", "dx", "dW", "db", "dW (no dx)", "db (no dx)", "conv2d_weight_grad"]
    for g, s, f, w, name in zip(got, small, f32, want, names, strict=True):
        _close(g, w, 1e-10, f"{path}: {name}")
        _close(s, w, 1e-10, f"{path}, one image per block: {name}")
        if w is not None:
            assert f.dtype == np.float32
        _close(f, w, 1e-4, f"{path}, float32: {name}")


@FAST
@given(case=conv_cases())
def test_im2col_path_equals_the_reference(case):
    _check_path(ConvPath.IM2COL, case)


@FAST
@given(case=conv_cases(F=(3, 3), S=(1, 1), d=(1, 1)), fused=st.booleans())
def test_winograd_path_equals_the_reference(case, fused):
    """Odd and even sizes, P = 0..2 (tiles padded and cropped), dx in one pass or separately."""
    _check_path(ConvPath.WINOGRAD, case, fused)


@FAST
@given(dh=st.integers(1, 3), dw=st.integers(1, 3), h=st.integers(1, 4), w=st.integers(1, 4),
       case=conv_cases(F=(3, 3), S=(1, 1)), fused=st.booleans())
def test_subimages_path_equals_the_reference(dh, dw, h, w, case, fused):
    if (dh, dw) == (1, 1):
        return
    case.update(d=(dh, dw), P=(dh, dw), hw=(h * dh, w * dw))
    _check_path(ConvPath.SUBIMAGES, case, fused)


@FAST
@given(case=conv_cases(F=(3, 3), D=1, K=None))
def test_direct_depth1_path_equals_the_reference(case):
    assert _jit.HAVE_NUMBA, "numba is a dependency"
    _check_path(ConvPath.DIRECT_DEPTH1, case)


@FAST
@given(case=conv_cases(S=(1, 1)))
def test_direct_small_path_equals_the_reference(case):
    """The thin-input kernel (any window, dilation and padding, stride 1, depth 1-4) on its
    wide grid, forward and weight gradient, against the reference."""
    assert _jit.HAVE_NUMBA, "numba is a dependency"
    _check_path(ConvPath.DIRECT_SMALL, case)


def test_direct_small_path_applies_only_to_thin_stride_1_inputs():
    with force_path(ConvPath.DIRECT_SMALL):
        assert choose_path((2, 9, 9, 8), (4, 5, 5, 8), (1, 1), (0, 0), (1, 1), (5, 5),
                           np.float32) is ConvPath.DIRECT_SMALL
        assert choose_path((2, 9, 9, 9), (4, 5, 5, 9), (1, 1), (0, 0), (1, 1), (5, 5),
                           np.float32) is ConvPath.IM2COL          # 9 channels
        assert choose_path((2, 9, 9, 3), (4, 3, 3, 3), (2, 2), (0, 0), (1, 1), (4, 4),
                           np.float32) is ConvPath.IM2COL          # stride 2


# ----------------------------------------------------------- every InputGradPath, forced
def _check_input_grad(path, case, a=(0, 0), applies=True):
    """conv2d_input_grad, and the transposed convolution whose forward it is, on ``path``
    (where it ``applies``; else on the path the selector falls back to)."""
    rng = np.random.default_rng(case["seed"])
    S, P, d = _args(case)
    x = rng.standard_normal((case["N"], *case["hw"], case["D"]))   # a DECONV's input
    W = rng.standard_normal((case["D"], *case["F"], case["K"])) * 0.5
    b = rng.standard_normal(case["K"]) if case["bias"] else None
    hw = tuple(arith.deconv_output_size(n, f, s, p, aa, dd) for n, f, s, p, aa, dd
               in zip(case["hw"], case["F"], S, P, a, d, strict=True))
    if min(hw) < 1:
        return
    want = R.conv_transpose2d(x, W, b, S, P, d, a)
    dout = rng.standard_normal(want.shape)
    want_grads = R.conv_transpose2d_backward(dout, x, W, S, P, d)
    with force_path(input_grad=path):
        assert (choose_input_grad_path(x.shape, W.shape, hw, S, P, d) is path) == applies
        _close(C.conv2d_input_grad(x, W, hw, S, P, d), R.conv2d_input_grad(x, W, hw, S, P, d),
               1e-10, f"{path}: conv2d_input_grad")
        for blocks in (None, 1):
            with force_path(block_bytes=blocks):
                out, cache = C.conv_transpose2d_forward(x, W, b, S, P, d, a)
                grads = C.conv_transpose2d_backward(dout, cache)
            _close(out, want, 1e-10, f"{path}: transposed forward")
            for g, w, name in zip(grads, want_grads, ("dx", "dW", "db"), strict=True):
                _close(g, None if name == "db" and b is None else w, 1e-10, f"{path}: {name}")


@FAST
@given(case=conv_cases(max_side=5), data=st.data(),
       path=st.sampled_from([InputGradPath.COL2IM, InputGradPath.COL2IM_PLANES]))
def test_col2im_input_grad_paths_equal_the_reference(case, data, path):
    a = tuple(data.draw(st.integers(0, max(s, dd) - 1))
              for s, dd in zip(case["S"], case["d"], strict=True))
    _check_input_grad(path, case, a)


@FAST
@given(case=conv_cases(S=(1, 1), max_side=5), data=st.data())
def test_flipped_input_grad_path_equals_the_reference(case, data):
    """Stride 1, padding below the dilated extent (the flipped convolution's padding is
    ``Fe - 1 - P``), output padding up to ``d - 1``; the flipped convolution takes whatever
    ConvPath it takes (Winograd where forced too)."""
    F, d = case["F"], case["d"]
    case["P"] = tuple(min(p, arith.effective_extent(f, dd) - 1)
                      for p, f, dd in zip(case["P"], F, d, strict=True))
    a = tuple(data.draw(st.integers(0, dd - 1)) for dd in d)
    conv = data.draw(st.sampled_from([None, ConvPath.IM2COL, ConvPath.WINOGRAD]))
    with force_path(conv):
        # an output padding leaves rows the flipped convolution does not cover: col2im then
        _check_input_grad(InputGradPath.FLIPPED, case, a, applies=a == (0, 0))


def test_flipped_path_declines_rows_only_output_padding_reaches():
    """A 1x1 transposed CONV dilated by (1, 2) with output padding (0, 1): its second column
    is reached by no input (found by hypothesis: the flipped path used to reshape wrongly)."""
    case = {"N": 1, "hw": (1, 1), "D": 1, "K": 1, "F": (1, 1), "S": (1, 1), "P": (0, 0),
            "d": (1, 2), "bias": False, "seed": 0}
    _check_input_grad(InputGradPath.FLIPPED, case, (0, 1), applies=False)


@FAST
@given(case=conv_cases(S=(1, 1)), data=st.data())
def test_direct_small_input_grad_path_equals_the_reference(case, data):
    """The thin-input kernel's input gradient (any window, padding and dilation; output
    padding too, whose rows no window reaches: zeros), and the transposed convolution whose
    forward it is."""
    a = tuple(data.draw(st.integers(0, dd - 1)) for dd in case["d"])
    _check_input_grad(InputGradPath.DIRECT_SMALL, case, a)


@FAST
@given(case=conv_cases(F=(1, 1), S=(1, 1), P=(0, 0), d=(1, 1)))
def test_gemm_input_grad_path_equals_the_reference(case):
    _check_input_grad(InputGradPath.GEMM, case)


# --------------------------------------------------------------------- CONV + POOL fusions
def _conv_pool_reference(case, relu):
    """The reference CONV (3x3, stride 1) -> POOL 2x2 (-> RELU): the arrays, the output, the
    pool's index, a random output gradient ``g`` and the CONV's output gradient it makes."""
    x, W, b, _ = _arrays(case)
    conv = R.conv2d(x, W, b, (1, 1), case["P"])
    assume(min(conv.shape[1:3]) >= 2)                 # one pooling window at least
    out, idx = R.maxpool2d(conv, (2, 2), (2, 2))
    if relu:
        out = np.maximum(out, 0)
    g = np.random.default_rng(case["seed"] + 1).standard_normal(out.shape)
    dconv = R.maxpool2d_backward(np.where(out > 0, g, 0) if relu else g, idx, conv.shape,
                                 (2, 2), (2, 2))
    return x, W, b, out, idx, g, dconv


@FAST
@given(case=conv_cases(F=(3, 3), S=(1, 1), d=(1, 1), max_side=9), relu=st.booleans(),
       need_dx=st.booleans())
def test_conv_and_pool_on_winograd_tiles_equal_the_reference(case, relu, need_dx):
    x, W, b, want, idx, g, dconv = _conv_pool_reference(case, relu)
    pad = case["P"]
    with force_path(ConvPath.WINOGRAD):
        assert C.maxpool_fuses(x.shape, W.shape, (1, 1), pad, (1, 1))
        out, ix, cache, conv_hw = C.conv2d_maxpool_forward(x, W, b, pad, relu=relu)
        dx, dW, db = C.conv2d_maxpool_backward(g, ix, out if relu else None, cache, conv_hw,
                                               need_dx=need_dx)
    _close(out, want, 1e-10)
    np.testing.assert_array_equal(ix, idx)
    _close(dx, R.conv2d_input_grad(dconv, W, x.shape[1:3], (1, 1), pad) if need_dx else None,
           1e-10)
    _close(dW, R.conv2d_weight_grad(x, dconv, (3, 3), (1, 1), pad), 1e-10)
    _close(db, None if b is None else dconv.sum(axis=(0, 1, 2)), 1e-10)


@FAST
@given(case=conv_cases(F=(3, 3), S=(1, 1), d=(1, 1), D=1, max_side=9), relu=st.booleans(),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_one_channel_weight_grad_from_the_pool_equals_the_reference(case, relu, dtype):
    x, W, b, out, idx, g, dconv = _conv_pool_reference(case, relu)
    pad = case["P"]
    assert C.depth1_maxpool_fuses(W.shape, (1, 1), (1, 1), np.dtype(dtype)) == (W.shape[0] >= 8)
    with force_path(ConvPath.DIRECT_DEPTH1):
        assert C.depth1_maxpool_fuses(W.shape, (1, 1), (1, 1), np.dtype(dtype))
    dW, db = C.conv3x3_depth1_maxpool_weight_grad(
        x.astype(dtype), g.astype(dtype), idx.astype(np.uint8),
        out.astype(dtype) if relu else None, pad, dconv.shape[1:3], b is not None)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    _close(dW, R.conv2d_weight_grad(x, dconv, (3, 3), (1, 1), pad), tol)
    _close(db, None if b is None else dconv.sum(axis=(0, 1, 2)), tol)


# ---------------------------------------------------------------------------- the pools
@pytest.mark.parametrize("compiled", [True, False])
@FAST
@given(N=st.integers(1, 2), H=st.integers(1, 8), Wd=st.integers(1, 8), D=st.integers(1, 4),
       F=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       S=st.tuples(st.integers(1, 3), st.integers(1, 3)), data=st.data(),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_pool_kernels_equal_the_reference(compiled, N, H, Wd, D, F, S, data, dtype):
    """The general and the 2x2 kernels (drawn often), compiled and NumPy, with ties."""
    if data.draw(st.booleans()):
        F = S = (2, 2)
    P = (data.draw(st.integers(0, F[0] // 2)), data.draw(st.integers(0, F[1] // 2)))
    if F[0] > H + 2 * P[0] or F[1] > Wd + 2 * P[1]:
        return
    rng = np.random.default_rng(data.draw(st.integers(0, 999)))
    x = rng.integers(-2, 3, (N, H, Wd, D)).astype(dtype)
    want, want_idx = R.maxpool2d(x, F, S, P)
    g = rng.standard_normal(want.shape).astype(dtype)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_jit, "HAVE_NUMBA", compiled)
        out, cache = Pl.maxpool2d_forward(x, F, S, P)
        dx = Pl.maxpool2d_backward(g, cache)
        ev, _ = Pl.maxpool2d_forward(x, F, S, P, need_index=False)
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(ev, want)
    np.testing.assert_array_equal(cache[0], want_idx)
    _close(dx, R.maxpool2d_backward(g, want_idx, x.shape, F, S, P), 1e-6)
    avg, acache = Pl.avgpool2d_forward(x, F, S, P)
    _close(avg, R.avgpool2d(x, F, S, P), 1e-6)
    _close(Pl.avgpool2d_backward(g, acache), R.avgpool2d_backward(g, x.shape, F, S, P), 1e-6)


# ------------------------------------------------------------------- choosing and forcing
@pytest.mark.parametrize("x_shape, W_shape, S, P, d, want", [
    ((128, 32, 32, 32), (32, 3, 3, 32), 1, 1, 1, ConvPath.WINOGRAD),    # cifar10's 2nd layer
    ((1, 14, 14, 32), (64, 3, 3, 32), 1, 1, 1, ConvPath.WINOGRAD),      # 49 tiles at batch 1
    ((1, 8, 8, 64), (64, 3, 3, 64), 1, 1, 1, ConvPath.IM2COL),          # 16 tiles: too few
    ((128, 32, 32, 16), (32, 3, 3, 16), 1, 1, 1, ConvPath.IM2COL),      # 16 channels: too thin
    ((128, 32, 32, 32), (32, 3, 3, 32), 2, 1, 1, ConvPath.IM2COL),      # stride 2
    ((4, 8, 16, 32), (48, 3, 3, 32), 1, 2, 2, ConvPath.SUBIMAGES),      # dilated "same"
    ((4, 8, 16, 32), (48, 3, 3, 32), 1, 1, 2, ConvPath.IM2COL),         # dilated, not "same"
    ((128, 28, 28, 1), (32, 3, 3, 1), 1, 1, 1, ConvPath.DIRECT_DEPTH1),  # grayscale 1st layer
    ((128, 28, 28, 1), (6, 3, 3, 1), 1, 1, 1, ConvPath.DIRECT_SMALL),   # fewer than 8 filters
    ((128, 32, 32, 3), (32, 5, 5, 3), 1, 2, 1, ConvPath.IM2COL),        # 32 filters: GEMM
    ((128, 32, 32, 1), (3, 5, 5, 1), 1, 0, 1, ConvPath.DIRECT_SMALL),   # seed004's layers
    ((128, 14, 14, 3), (6, 5, 5, 3), 1, 0, 1, ConvPath.DIRECT_SMALL),
    ((128, 32, 32, 3), (6, 5, 5, 3), 2, 0, 1, ConvPath.IM2COL),         # stride 2
])
def test_choose_path_at_the_measured_thresholds(x_shape, W_shape, S, P, d, want):
    S, P, d = (S, S), (P, P), (d, d)
    out_hw = _grid(x_shape[1:3], W_shape[1:3], S, P, d)
    assert choose_path(x_shape, W_shape, S, P, d, out_hw, np.float32) is want


@pytest.mark.parametrize("dout_shape, W_shape, hw, S, P, want", [
    ((8, 16, 16, 64), (64, 1, 1, 32), (16, 16), 1, 0, InputGradPath.GEMM),
    ((8, 16, 16, 64), (64, 3, 3, 32), (16, 16), 1, 1, InputGradPath.FLIPPED),
    ((8, 16, 16, 64), (64, 3, 3, 8), (16, 16), 1, 1, InputGradPath.COL2IM),     # D = 8 < 16
    ((8, 8, 8, 64), (64, 3, 3, 32), (16, 16), 2, 1, InputGradPath.COL2IM),      # stride 2
    ((8, 28, 28, 6), (6, 5, 5, 3), (32, 32), 1, 0, InputGradPath.DIRECT_SMALL),   # D = 3
    ((8, 28, 28, 16), (16, 5, 5, 3), (32, 32), 1, 0, InputGradPath.COL2IM_PLANES),  # K = 16
    ((8, 14, 14, 6), (6, 5, 5, 3), (32, 32), 2, 0, InputGradPath.COL2IM_PLANES),  # stride 2
])
def test_choose_input_grad_path_at_the_measured_thresholds(dout_shape, W_shape, hw, S, P, want):
    assert choose_input_grad_path(dout_shape, W_shape, hw, (S, S), (P, P), (1, 1)) is want


def test_force_path_applies_only_where_the_path_can_compute_and_nests():
    deep = ((128, 32, 32, 32), (32, 3, 3, 32), (1, 1), (1, 1), (1, 1), (32, 32))
    five = ((2, 9, 9, 3), (16, 5, 5, 3), (1, 1), (0, 0), (1, 1), (5, 5))   # GEMM usually
    with force_path(ConvPath.IM2COL):
        assert choose_path(*deep) is ConvPath.IM2COL                  # every fast path off
        with force_path(ConvPath.WINOGRAD, fused_backward=False):
            assert choose_path(*five) is ConvPath.IM2COL              # 5x5: cannot, usual
            assert choose_path(*deep) is ConvPath.WINOGRAD
            with force_path(block_bytes=1):                           # names only the size
                assert choose_path(*deep) is ConvPath.WINOGRAD
                assert _blocks.blocks(5, 10, 1) == [(k, k + 1) for k in range(5)]
            assert not C.fused_backward()
        assert C.fused_backward() and choose_path(*deep) is ConvPath.IM2COL
    assert choose_path(*deep) is ConvPath.WINOGRAD
    with pytest.raises(RuntimeError), force_path(ConvPath.IM2COL):
        raise RuntimeError("a test failed")
    assert choose_path(*deep) is ConvPath.WINOGRAD                    # restored on error


# ------------------------------------------------------------ depthwise paths and RELU6
@FAST
@given(case=conv_cases(K=1), dtype=st.sampled_from([np.float64, np.float32]))
def test_depthwise_direct_path_equals_the_numpy_taps(case, dtype):
    """DepthwisePath.DIRECT (compiled, one pass, both gradients together) against TAPS (the
    plain NumPy path) on any window, stride, dilation and padding, with and without dx."""
    from convnet.ops import grouped as G
    from convnet.ops.conv_paths import DepthwisePath, choose_depthwise_path

    rng = np.random.default_rng(case["seed"])
    D = case["D"]
    x = rng.standard_normal((case["N"], *case["hw"], D)).astype(dtype)
    W = (rng.standard_normal((D, *case["F"], 1)) * 0.5).astype(dtype)
    b = rng.standard_normal(D).astype(dtype) if case["bias"] else None
    S, P, d = _args(case)
    runs = {}
    for path in (DepthwisePath.TAPS, DepthwisePath.DIRECT):
        with force_path(depthwise=path):
            assert choose_depthwise_path(1, dtype) is path
            out, cache = G.grouped_conv2d_forward(x, W, b, S, P, d, D)
            dout = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)
            grads = G.grouped_conv2d_backward(dout, cache)
            no_dx = G.grouped_conv2d_backward(dout, cache, need_dx=False)
            runs[path] = [out.copy(), *grads, *no_dx]
    tol = 1e-10 if dtype == np.float64 else 1e-5
    for got, want in zip(runs[DepthwisePath.DIRECT], runs[DepthwisePath.TAPS], strict=True):
        _close(got, want, tol, "depthwise DIRECT against TAPS")
    with force_path(depthwise=DepthwisePath.DIRECT):
        assert choose_depthwise_path(2, dtype) is DepthwisePath.TAPS      # multiplier 2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu6_backward_kernel_equals_the_numpy_select(dtype):
    from convnet.ops import activations as A

    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 8, (3, 5, 4, 7)).astype(dtype)
    x[0, 0, 0, :3] = [0, 6, np.nextafter(dtype(6), dtype(0))]       # the ends and just inside
    g = rng.standard_normal(x.shape).astype(dtype)
    g[1, 1, 1, 1] = np.inf                                             # where the unit is off
    x[1, 1, 1, 1] = -1
    out, cache = A.relu6_forward(x)
    want = np.where((cache > 0) & (cache < 6), g, dtype(0))
    got = A.relu6_backward(g, cache)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, want)


# ------------------------------------------------------------- batch normalisation kernels
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(5, 7), (3, 4, 6, 5), (2, 33, 17, 24), (1, 1, 1, 3)])
def test_compiled_batchnorm_equals_the_numpy_passes(dtype, shape, monkeypatch):
    """The compiled training kernels (forward: sums, centring, normalise; backward: sums, dx)
    against the NumPy passes, running statistics included."""
    from convnet.ops import norm as Nm

    rng = np.random.default_rng(3)
    x = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    D = shape[-1]
    gamma, beta = rng.uniform(0.5, 1.5, D).astype(dtype), rng.standard_normal(D).astype(dtype)
    runs = []
    for use in (False, True):
        monkeypatch.setattr(Nm, "USE_COMPILED", use)
        assert Nm.compiled(x) is use
        rm, rv = np.zeros(D, dtype), np.ones(D, dtype)
        out, cache = Nm.batchnorm_forward(x, gamma, beta, rm, rv, 0.1, 1e-5, True)
        runs.append([out, *Nm.batchnorm_backward(dout, cache), rm, rv])
    tol = 1e-10 if dtype == np.float64 else 2e-4
    for got, want, name in zip(runs[1], runs[0], ("out", "dx", "dgamma", "dbeta", "rm", "rv"),
                               strict=True):
        assert got.dtype == dtype, name
        _close(got, want, tol, f"compiled BN: {name}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_backward_in_place_equals_the_copying_kernel_and_the_select(dtype):
    """The in-place RELU backward (its own kernel, so that it vectorises) against the
    three-array kernel and np.where: an Inf gradient where the unit was off gives 0."""
    from convnet.ops import activations as A

    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 9, 9, 16)).astype(dtype)
    out, cache = A.relu_forward(x)
    g = rng.standard_normal(x.shape).astype(dtype)
    g[0, 0, 0, :2] = np.inf
    cache[0, 0, 0, :2] = [0, 1]
    want = np.where(cache > 0, g, dtype(0))
    copy = A.relu_backward(g, cache)
    assert copy is not g
    buf = g.copy()
    inplace = A.relu_backward(buf, cache, inplace=True)
    assert inplace is buf
    np.testing.assert_array_equal(copy, want)
    np.testing.assert_array_equal(inplace, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu6_forward_kernel_equals_np_clip(dtype):
    from convnet.ops import activations as A

    x = np.random.default_rng(0).uniform(-3, 9, (3, 4, 5, 6)).astype(dtype)
    x[0, 0, 0, :5] = [np.nan, np.inf, -np.inf, 0, 6]
    out, cache = A.relu6_forward(x)
    assert out is cache and out.dtype == dtype
    np.testing.assert_array_equal(out, np.clip(x, 0, 6))
