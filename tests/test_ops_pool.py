"""Pooling kernels: float64 gradient checks, PyTorch as the oracle, ties, floor cropping."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as tF
from hypothesis import given, settings
from hypothesis import strategies as st

from convnet.arith import conv_output_size
from convnet.ops.pool import (
    avgpool2d_backward,
    avgpool2d_forward,
    global_avgpool_backward,
    global_avgpool_forward,
    maxpool2d_backward,
    maxpool2d_forward,
)
from gradcheck import numeric_grad as _numeric_grad  # noqa: E402
from gradcheck import rel_error  # noqa: E402

FAST = settings(max_examples=30, deadline=None)


def numeric_grad(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central differences of ``f(x)`` (see gradcheck.numeric_grad)."""
    return _numeric_grad(lambda: f(x), x, h)


def to_torch(x: np.ndarray) -> torch.Tensor:
    """NHWC NumPy -> contiguous NCHW tensor that requires grad."""
    return torch.tensor(x.transpose(0, 3, 1, 2).copy(), requires_grad=True)


def from_torch(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().transpose(0, 2, 3, 1)


@st.composite
def pool_configs(draw, max_pad_rule: bool = True):
    """Non-square F, S, P; padding at most F//2 (PyTorch's limit); H, W from exactly fitting up
    to several rows past it, so floor-cropped configurations are common."""
    F = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    S = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    P = (draw(st.integers(0, F[0] // 2)), draw(st.integers(0, F[1] // 2)))
    H = draw(st.integers(max(1, F[0] - 2 * P[0]), F[0] - 2 * P[0] + 6))
    W = draw(st.integers(max(1, F[1] - 2 * P[1]), F[1] - 2 * P[1] + 6))
    N = draw(st.integers(1, 2))
    D = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**31 - 1))
    return (N, H, W, D), F, S, P, seed


def random_config(rng: np.random.Generator):
    F = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
    S = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    P = (int(rng.integers(0, F[0] // 2 + 1)), int(rng.integers(0, F[1] // 2 + 1)))
    H = int(rng.integers(max(1, F[0] - 2 * P[0]), F[0] - 2 * P[0] + 9))
    W = int(rng.integers(max(1, F[1] - 2 * P[1]), F[1] - 2 * P[1] + 9))
    shape = (int(rng.integers(1, 4)), H, W, int(rng.integers(1, 5)))
    return shape, F, S, P


def distinct_values(shape, rng) -> np.ndarray:
    """Values at least 0.01 apart, so a finite-difference step never changes an argmax."""
    n = int(np.prod(shape))
    return (rng.permutation(n) * 0.01 - n * 0.005).reshape(shape).astype(np.float64)


# ---------------------------------------------------------------------------- gradient checks
@FAST
@given(pool_configs())
def test_maxpool_gradient_matches_central_differences(cfg):
    shape, F, S, P, seed = cfg
    rng = np.random.default_rng(seed)
    x = distinct_values(shape, rng)
    out, cache = maxpool2d_forward(x, F, S, P)
    Ho = conv_output_size(shape[1], F[0], S[0], P[0], floor=True)
    Wo = conv_output_size(shape[2], F[1], S[1], P[1], floor=True)
    assert out.shape == (shape[0], Ho, Wo, shape[3])
    dout = rng.standard_normal(out.shape)
    dx = maxpool2d_backward(dout, cache)
    num = numeric_grad(lambda v: float(np.sum(maxpool2d_forward(v, F, S, P)[0] * dout)), x)
    np.testing.assert_allclose(dx, num, rtol=1e-6, atol=1e-8)


@FAST
@given(pool_configs())
def test_avgpool_gradient_matches_central_differences(cfg):
    shape, F, S, P, seed = cfg
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    out, cache = avgpool2d_forward(x, F, S, P)
    dout = rng.standard_normal(out.shape)
    dx = avgpool2d_backward(dout, cache)
    num = numeric_grad(lambda v: float(np.sum(avgpool2d_forward(v, F, S, P)[0] * dout)), x)
    np.testing.assert_allclose(dx, num, rtol=1e-6, atol=1e-8)


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 3), st.integers(1, 5), st.integers(1, 5), st.integers(1, 3),
       st.integers(0, 2**31 - 1))
def test_global_avgpool_gradient_matches_central_differences(N, H, W, D, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, H, W, D))
    out, cache = global_avgpool_forward(x)
    assert out.shape == (N, D)
    np.testing.assert_allclose(out, x.mean(axis=(1, 2)))
    dout = rng.standard_normal(out.shape)
    dx = global_avgpool_backward(dout, cache)
    assert dx.flags.writeable and dx.shape == x.shape
    num = numeric_grad(lambda v: float(np.sum(global_avgpool_forward(v)[0] * dout)), x)
    np.testing.assert_allclose(dx, num, rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------------------- PyTorch as oracle
def _check_against_torch(kind: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape, F, S, P = random_config(rng)
    fwd, bwd = {"max": (maxpool2d_forward, maxpool2d_backward),
                "avg": (avgpool2d_forward, avgpool2d_backward)}[kind]
    x32 = rng.standard_normal(shape).astype(np.float32)
    x64 = x32.astype(np.float64)  # the float64 reference sees exactly the same inputs
    xt = to_torch(x64)
    if kind == "max":
        ot = tF.max_pool2d(xt, F, S, P)
    else:
        ot = tF.avg_pool2d(xt, F, S, P, count_include_pad=True)
    dout64 = rng.standard_normal(tuple(from_torch(ot).shape))
    ot.backward(torch.tensor(dout64.transpose(0, 3, 1, 2).copy()))
    where = f"{kind} pool x={shape} F={F} S={S} P={P}"

    out64, cache = fwd(x64, F, S, P)
    dx64 = bwd(dout64, cache)
    np.testing.assert_allclose(out64, from_torch(ot), rtol=1e-12, atol=1e-12, err_msg=where)
    np.testing.assert_allclose(dx64, from_torch(xt.grad), rtol=1e-12, atol=1e-12, err_msg=where)

    out32, cache32 = fwd(x32, F, S, P)
    dx32 = bwd(dout64.astype(np.float32), cache32)
    assert out32.dtype == np.float32 and dx32.dtype == np.float32, where
    assert rel_error(out32, out64) <= 1e-4, where
    assert rel_error(dx32, dx64) <= 1e-4, where


@pytest.mark.parametrize("seed", range(80))
def test_maxpool_agrees_with_torch(seed):
    _check_against_torch("max", seed)


@pytest.mark.parametrize("seed", range(80))
def test_avgpool_agrees_with_torch(seed):
    _check_against_torch("avg", 1000 + seed)


# -------------------------------------------------------------------------------------- ties
def test_maxpool_tie_sends_gradient_to_first_maximum():
    x = np.array([[5, 1, 2, 2],
                  [5, 3, 2, 2],
                  [0, 7, 4, 1],
                  [7, 7, 1, 4]], dtype=np.float64).reshape(1, 4, 4, 1)
    out, cache = maxpool2d_forward(x, (2, 2), (2, 2), (0, 0))
    dx = maxpool2d_backward(np.ones_like(out), cache)[0, :, :, 0]
    expected = np.array([[1, 0, 1, 0],
                         [0, 0, 0, 0],
                         [0, 1, 1, 0],
                         [0, 0, 0, 0]], dtype=np.float64)
    np.testing.assert_array_equal(dx, expected)
    xt = to_torch(x)
    tF.max_pool2d(xt, 2, 2).sum().backward()
    np.testing.assert_array_equal(dx, from_torch(xt.grad)[0, :, :, 0])


@pytest.mark.parametrize("F,S,P", [((2, 2), (2, 2), (0, 0)), ((3, 3), (2, 2), (1, 1)),
                                   ((3, 2), (1, 2), (1, 0)), ((2, 3), (3, 1), (1, 1)),
                                   ((4, 4), (4, 4), (2, 2)), ((1, 1), (2, 2), (0, 0))])
@pytest.mark.parametrize("seed", range(4))
def test_maxpool_many_ties_match_torch(F, S, P, seed):
    # Values from {0, 1, 2}: most windows hold several equal maxima, and overlapping windows
    # share them; the accumulated gradient must land exactly where PyTorch puts it.
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 3, size=(2, 9, 8, 3)).astype(np.float64)
    out, cache = maxpool2d_forward(x, F, S, P)
    dout = rng.standard_normal(out.shape)
    dx = maxpool2d_backward(dout, cache)
    xt = to_torch(x)
    ot = tF.max_pool2d(xt, F, S, P)
    ot.backward(torch.tensor(dout.transpose(0, 3, 1, 2).copy()))
    np.testing.assert_array_equal(out, from_torch(ot))
    np.testing.assert_allclose(dx, from_torch(xt.grad), rtol=1e-12, atol=1e-12)


def test_maxpool_all_equal_window_overlapping_accumulates():
    x = np.ones((1, 3, 3, 1))
    out, cache = maxpool2d_forward(x, (2, 2), (1, 1), (0, 0))
    dx = maxpool2d_backward(np.ones_like(out), cache)[0, :, :, 0]
    # Every 2x2 window picks its top-left pixel.
    np.testing.assert_array_equal(dx, [[1, 1, 0], [1, 1, 0], [0, 0, 0]])


# ------------------------------------------------------------------------------ special cases
def test_floor_cropped_rows_and_cols_get_zero_gradient():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 7, 6, 3))
    for fwd, bwd in [(maxpool2d_forward, maxpool2d_backward),
                     (avgpool2d_forward, avgpool2d_backward)]:
        out, cache = fwd(x, (2, 2), (2, 2), (0, 0))
        assert out.shape == (2, 3, 3, 3)  # floor(5/2) + 1 = 3 rows: row 6 is never read
        dx = bwd(np.ones_like(out), cache)
        assert np.all(dx[:, 6, :, :] == 0)
        assert np.all(dx[:, :6, :, :].sum(axis=(1, 2)) == pytest.approx(9.0))


def test_padding_counts_as_minus_infinity_for_max_and_zero_for_avg():
    x = -np.ones((1, 2, 2, 1))
    out, _ = maxpool2d_forward(x, (2, 2), (1, 1), (1, 1))
    np.testing.assert_array_equal(out[0, :, :, 0], -np.ones((3, 3)))
    out, _ = avgpool2d_forward(x, (2, 2), (1, 1), (1, 1))
    np.testing.assert_allclose(out[0, :, :, 0], [[-0.25, -0.5, -0.25],
                                                  [-0.5, -1.0, -0.5],
                                                  [-0.25, -0.5, -0.25]])


def test_maxpool_large_window_uses_wider_index_and_matches_torch():
    # 17x16 = 272 offsets do not fit in uint8.
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 17, 18, 2))
    out, cache = maxpool2d_forward(x, (17, 16), (1, 1), (0, 0))
    assert cache[0].dtype == np.uint16
    dout = rng.standard_normal(out.shape)
    dx = maxpool2d_backward(dout, cache)
    xt = to_torch(x)
    ot = tF.max_pool2d(xt, (17, 16), 1)
    ot.backward(torch.tensor(dout.transpose(0, 3, 1, 2).copy()))
    np.testing.assert_allclose(out, from_torch(ot))
    np.testing.assert_allclose(dx, from_torch(xt.grad))


def test_maxpool_compact_cache_and_nan_propagation():
    x = np.arange(32, dtype=np.float32).reshape(1, 4, 4, 2)
    x[0, 0, 1, 0] = np.nan
    out, cache = maxpool2d_forward(x, (2, 2), (2, 2), (0, 0))
    idx = cache[0]
    assert idx.dtype == np.uint8 and idx.shape == out.shape
    assert all(not isinstance(c, np.ndarray) or c.nbytes <= out.nbytes // 4 for c in cache)
    assert np.isnan(out[0, 0, 0, 0]) and not np.isnan(out[0, 0, 0, 1])
    assert not np.isnan(out[0, 1:, 1:, :]).any()


@FAST
@given(N=st.integers(1, 3), H=st.integers(2, 9), W=st.integers(2, 9), D=st.integers(1, 4),
       F=st.integers(1, 3), S=st.integers(1, 3), P=st.integers(0, 1), seed=st.integers(0, 99))
def test_maxpool_inference_path_equals_training_path(N, H, W, D, F, S, P, seed):
    """Evaluation skips the argmax: the values must be exactly those of the training path."""
    if 2 * P > F or F > H + 2 * P or F > W + 2 * P:
        return
    x = np.random.default_rng(seed).standard_normal((N, H, W, D)).astype(np.float32)
    train_out, cache = maxpool2d_forward(x, (F, F), (S, S), (P, P))
    eval_out, none = maxpool2d_forward(x, (F, F), (S, S), (P, P), need_index=False)
    assert none is None
    np.testing.assert_array_equal(eval_out, train_out)
