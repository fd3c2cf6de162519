"""Activations, batch norm and the loss: float64 gradient checks, PyTorch as the oracle,
float32 against a float64 reference, numerical stability, and the loss's input validation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as tF
from hypothesis import given, settings
from hypothesis import strategies as st

from convnet.errors import ConvnetError, InputError, ShapeError
from convnet.ops.activations import (
    leaky_relu_backward,
    leaky_relu_forward,
    relu_backward,
    relu_forward,
    sigmoid_backward,
    sigmoid_forward,
    tanh_backward,
    tanh_forward,
)
from convnet.ops.loss import softmax, softmax_cross_entropy
from convnet.ops.norm import batchnorm_backward, batchnorm_forward
from gradcheck import numeric_grad as _numeric_grad  # noqa: E402
from gradcheck import rel_error  # noqa: E402

FAST = settings(max_examples=25, deadline=None)


def numeric_grad(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central differences of ``f(x)`` (see gradcheck.numeric_grad)."""
    return _numeric_grad(lambda: f(x), x, h)


def nchw(x: np.ndarray) -> np.ndarray:
    """NHWC -> NCHW (or (N, D) unchanged) for PyTorch."""
    return x.transpose(0, 3, 1, 2).copy() if x.ndim == 4 else x.copy()


def nhwc(x: np.ndarray) -> np.ndarray:
    return x.transpose(0, 2, 3, 1) if x.ndim == 4 else x


shapes = st.one_of(
    st.tuples(st.integers(1, 3), st.integers(1, 4)),
    st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)),
)

# ------------------------------------------------------------------------------- activations
ACTIVATIONS = {
    "relu": (lambda x: relu_forward(x), relu_backward, lambda t: torch.relu(t)),
    "leaky": (lambda x: leaky_relu_forward(x, 0.1), leaky_relu_backward,
              lambda t: tF.leaky_relu(t, 0.1)),
    "leaky_neg": (lambda x: leaky_relu_forward(x, -0.3), leaky_relu_backward,
                  lambda t: tF.leaky_relu(t, -0.3)),
    "tanh": (tanh_forward, tanh_backward, torch.tanh),
    "sigmoid": (sigmoid_forward, sigmoid_backward, torch.sigmoid),
}


def away_from_zero(x: np.ndarray) -> np.ndarray:
    """Keep |x| >= 0.05 so a finite-difference step never crosses a kink at 0."""
    return np.where(np.abs(x) < 0.05, np.sign(x + 1e-12) * 0.05 + x, x)


@FAST
@given(st.sampled_from(sorted(ACTIVATIONS)), shapes, st.integers(0, 2**31 - 1))
def test_activation_gradients_match_central_differences(name, shape, seed):
    fwd, bwd, _ = ACTIVATIONS[name]
    rng = np.random.default_rng(seed)
    x = away_from_zero(rng.standard_normal(shape) * 3)
    out, cache = fwd(x)
    dout = rng.standard_normal(out.shape)
    dx = bwd(dout, cache)
    num = numeric_grad(lambda v: float(np.sum(fwd(v)[0] * dout)), x)
    np.testing.assert_allclose(dx, num, rtol=1e-6, atol=1e-8)


@FAST
@given(st.floats(-2.0, 2.0), shapes, st.integers(0, 2**31 - 1))
def test_leaky_relu_any_alpha_gradient(alpha, shape, seed):
    rng = np.random.default_rng(seed)
    x = away_from_zero(rng.standard_normal(shape))
    out, cache = leaky_relu_forward(x, alpha)
    np.testing.assert_allclose(out, np.where(x > 0, x, alpha * x))
    dout = rng.standard_normal(out.shape)
    num = numeric_grad(lambda v: float(np.sum(leaky_relu_forward(v, alpha)[0] * dout)), x)
    np.testing.assert_allclose(leaky_relu_backward(dout, cache), num, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activations_agree_with_torch(name, seed):
    fwd, bwd, tfn = ACTIVATIONS[name]
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in rng.integers(1, 5, size=int(rng.choice([2, 4]))))
    x32 = (rng.standard_normal(shape) * 4).astype(np.float32)
    x64 = x32.astype(np.float64)
    dout64 = rng.standard_normal(shape)
    xt = torch.tensor(x64, requires_grad=True)
    ot = tfn(xt)
    ot.backward(torch.tensor(dout64))
    out64, cache = fwd(x64)
    np.testing.assert_allclose(out64, ot.detach().numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(bwd(dout64, cache), xt.grad.numpy(), rtol=1e-12, atol=1e-15)
    out32, cache32 = fwd(x32)
    dx32 = bwd(dout64.astype(np.float32), cache32)
    assert out32.dtype == np.float32 and dx32.dtype == np.float32
    assert rel_error(out32, out64) <= 1e-4
    assert rel_error(dx32, bwd(dout64, cache)) <= 1e-4


def test_relu_gradient_at_zero_is_zero_like_torch():
    x = np.array([[-1.0, 0.0, 2.0]])
    out, cache = relu_forward(x)
    np.testing.assert_array_equal(relu_backward(np.ones_like(x), cache), [[0, 0, 1]])


def test_sigmoid_is_stable_and_precise_at_extremes():
    x = np.array([[-1000.0, -80.0, -30.0, 0.0, 30.0, 1000.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning from exp
        for dtype in (np.float32, np.float64):
            out, _ = sigmoid_forward(x.astype(dtype))
            assert out.dtype == dtype and np.all(np.isfinite(out))
    out, _ = sigmoid_forward(x)
    ref = torch.sigmoid(torch.tensor(x)).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-14)  # relative: e^-80 is not flushed to 0
    assert out[0, 1] > 0


# -------------------------------------------------------------------------------- batch norm
def _bn_inputs(shape, rng):
    D = shape[-1]
    x = rng.standard_normal(shape) * 2 + 0.5
    gamma = rng.standard_normal(D) + 1.0
    beta = rng.standard_normal(D)
    rm = rng.standard_normal(D) * 0.1
    rv = rng.uniform(0.5, 1.5, D)
    return x, gamma, beta, rm, rv


bn_shapes = st.one_of(
    st.tuples(st.integers(2, 5), st.integers(1, 4)),
    st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)),
).filter(lambda s: np.prod(s[:-1]) > 1)


@FAST
@given(bn_shapes, st.booleans(), st.integers(0, 2**31 - 1))
def test_batchnorm_gradients_match_central_differences(shape, train, seed):
    rng = np.random.default_rng(seed)
    x, gamma, beta, rm, rv = _bn_inputs(shape, rng)

    def run(x_, g_, b_):
        # copies: train mode updates the running statistics in place
        return batchnorm_forward(x_, g_, b_, rm.copy(), rv.copy(), 0.1, 1e-5, train)[0]

    dout = rng.standard_normal(shape)
    out, cache = batchnorm_forward(x, gamma, beta, rm.copy(), rv.copy(), 0.1, 1e-5, train)
    dx, dgamma, dbeta = batchnorm_backward(dout, cache)
    num_x = numeric_grad(lambda v: float(np.sum(run(v, gamma, beta) * dout)), x)
    num_g = numeric_grad(lambda v: float(np.sum(run(x, v, beta) * dout)), gamma)
    num_b = numeric_grad(lambda v: float(np.sum(run(x, gamma, v) * dout)), beta)
    np.testing.assert_allclose(dx, num_x, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dgamma, num_g, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dbeta, num_b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("seed", range(40))
def test_batchnorm_agrees_with_torch(seed):
    rng = np.random.default_rng(seed)
    train = bool(seed % 2)
    if seed % 4 < 2:
        shape = (int(rng.integers(2, 9)), int(rng.integers(1, 6)))
    else:
        shape = tuple(int(s) for s in rng.integers(1, 5, size=4))
        shape = (shape[0] + 1, *shape[1:])
    momentum, eps = float(rng.uniform(0.01, 0.5)), float(10.0 ** rng.uniform(-5, -2))
    x, gamma, beta, rm, rv = _bn_inputs(shape, rng)
    x = x.astype(np.float32).astype(np.float64)
    dout = rng.standard_normal(shape)

    xt = torch.tensor(nchw(x), requires_grad=True)
    gt = torch.tensor(gamma, requires_grad=True)
    bt = torch.tensor(beta, requires_grad=True)
    rmt, rvt = torch.tensor(rm), torch.tensor(rv)
    ot = tF.batch_norm(xt, rmt, rvt, gt, bt, training=train, momentum=momentum, eps=eps)
    ot.backward(torch.tensor(nchw(dout)))

    rm64, rv64 = rm.copy(), rv.copy()
    out, cache = batchnorm_forward(x, gamma, beta, rm64, rv64, momentum, eps, train)
    dx, dgamma, dbeta = batchnorm_backward(dout, cache)
    tol = {"rtol": 1e-9, "atol": 1e-11}
    np.testing.assert_allclose(out, nhwc(ot.detach().numpy()), **tol)
    np.testing.assert_allclose(dx, nhwc(xt.grad.numpy()), **tol)
    np.testing.assert_allclose(dgamma, gt.grad.numpy(), **tol)
    np.testing.assert_allclose(dbeta, bt.grad.numpy(), **tol)
    np.testing.assert_allclose(rm64, rmt.numpy(), **tol)  # running stats updated in place
    np.testing.assert_allclose(rv64, rvt.numpy(), **tol)  # (unbiased variance, like torch)
    if not train:
        np.testing.assert_array_equal(rm64, rm)

    f32 = np.float32
    rm32, rv32 = rm.astype(f32), rv.astype(f32)
    out32, cache32 = batchnorm_forward(x.astype(f32), gamma.astype(f32), beta.astype(f32),
                                       rm32, rv32, momentum, eps, train)
    dx32, dg32, db32 = batchnorm_backward(dout.astype(f32), cache32)
    for a in (out32, dx32, dg32, db32, rm32, rv32):
        assert a.dtype == f32
    for a, ref in [(out32, out), (dx32, dx), (dg32, dgamma), (db32, dbeta), (rm32, rm64),
                   (rv32, rv64)]:
        assert rel_error(a, ref) <= 1e-4


# -------------------------------------------------------------------------------------- loss
loss_shapes = st.one_of(
    st.tuples(st.integers(1, 4), st.integers(1, 6)),
    st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 3), st.integers(1, 4)),
)


@FAST
@given(loss_shapes, st.integers(0, 2**31 - 1))
def test_loss_gradient_matches_central_differences(shape, seed):
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal(shape) * 3
    y = rng.integers(0, shape[-1], size=shape[:-1])
    loss, dscores = softmax_cross_entropy(scores, y)
    assert isinstance(loss, float)
    num = numeric_grad(lambda v: softmax_cross_entropy(v, y)[0], scores)
    np.testing.assert_allclose(dscores, num, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("seed", range(40))
def test_loss_agrees_with_torch(seed):
    rng = np.random.default_rng(seed)
    if seed % 2:
        shape = (int(rng.integers(1, 9)), int(rng.integers(1, 12)))
    else:
        shape = tuple(int(s) for s in rng.integers(1, 5, size=4))
    scores32 = (rng.standard_normal(shape) * 5).astype(np.float32)
    scores = scores32.astype(np.float64)
    y = rng.integers(0, shape[-1], size=shape[:-1])
    st_ = torch.tensor(nchw(scores), requires_grad=True)
    lt = tF.cross_entropy(st_, torch.tensor(y))
    lt.backward()
    loss, d = softmax_cross_entropy(scores, y)
    assert loss == pytest.approx(lt.item(), rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(d, nhwc(st_.grad.numpy()), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(softmax(scores), nhwc(torch.softmax(torch.tensor(nchw(scores)),
                                                                   dim=1).numpy()), rtol=1e-12)
    loss32, d32 = softmax_cross_entropy(scores32, y.astype(np.int32))
    assert d32.dtype == np.float32 and softmax(scores32).dtype == np.float32
    assert abs(loss32 - loss) <= 1e-4 * max(abs(loss), 1e-3)
    assert rel_error(d32, d) <= 1e-4


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_loss_is_stable_for_huge_scores(dtype):
    scores = np.array([[1e4, 0.0, -1e4], [1e4, 1e4, 1e4], [-1e4, 1e4, 0.0]], dtype=dtype)
    y = np.array([0, 1, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, d = softmax_cross_entropy(scores, y)
        p = softmax(scores)
    assert np.isfinite(loss) and np.all(np.isfinite(d)) and np.all(np.isfinite(p))
    # row 0 is right with certainty, row 1 is a three-way tie, row 2 is wrong by 2e4
    assert loss == pytest.approx((0.0 + np.log(3) + 2e4) / 3, rel=1e-6)
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-6)


def test_loss_per_pixel_mean_over_all_positions():
    rng = np.random.default_rng(1)
    scores = rng.standard_normal((2, 3, 4, 5))
    y = rng.integers(0, 5, size=(2, 3, 4))
    loss, d = softmax_cross_entropy(scores, y)
    flat_loss, flat_d = softmax_cross_entropy(scores.reshape(-1, 5), y.reshape(-1))
    assert loss == pytest.approx(flat_loss, rel=1e-12)
    np.testing.assert_allclose(d.reshape(-1, 5), flat_d, rtol=1e-12)
    # a non-contiguous view (NCHW memory seen as NHWC) gives the same result
    view = np.ascontiguousarray(scores.transpose(0, 3, 1, 2)).transpose(0, 2, 3, 1)
    assert not view.flags.c_contiguous
    loss_v, d_v = softmax_cross_entropy(view, y)
    assert loss_v == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(d_v, d, rtol=1e-12)


@pytest.mark.parametrize("scores,y,exc,words", [
    (np.zeros((3, 4)), np.array([0, 1, 2.0]), InputError, "integer"),
    (np.zeros((3, 4)), np.array([True, False, True]), InputError, "integer"),
    (np.zeros((3, 4)), np.array([0, 4, 1]), InputError, "[0, 4)"),
    (np.zeros((3, 4)), np.array([0, -1, 1]), InputError, "min -1"),
    (np.zeros((3, 4)), np.array([0, 1]), ShapeError, "(3,)"),
    (np.zeros((3, 4)), np.zeros((3, 4), dtype=int), ShapeError, "argmax"),
    (np.zeros((3, 4)), np.zeros((3, 1), dtype=int), ShapeError, "reshape"),
    (np.zeros((2, 3, 3, 4)), np.zeros((2, 9), dtype=int), ShapeError, "(2, 3, 3)"),
    (np.zeros(4), np.array(0), ShapeError, "(N, C)"),
    (np.zeros((0, 4)), np.zeros(0, dtype=int), ShapeError, "empty"),
    (np.array([[0.0, np.nan]]), np.array([0]), InputError, "NaN"),
    (np.array([[0.0, 1.0], [np.inf, 0.0]]), np.array([0, 1]), InputError, "(1, 0)"),
    (np.array([["a", "b"]]), np.array([0]), InputError, "dtype"),
])
def test_loss_validation_raises_documented_errors(scores, y, exc, words):
    with pytest.raises(exc) as info:
        softmax_cross_entropy(scores, y)
    assert isinstance(info.value, ConvnetError) and isinstance(info.value, ValueError)
    assert words in str(info.value)
    assert "softmax_cross_entropy" in str(info.value)


def test_loss_accepts_lists_and_integer_scores():
    loss, d = softmax_cross_entropy([[2, 0], [0, 2]], [0, 1])
    assert d.dtype == np.float64
    assert loss == pytest.approx(np.log(1 + np.exp(-2)))
