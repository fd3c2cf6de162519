"""The execution plan (convnet/net/plan.py): which layers a network fuses, runs in place or
swaps, declared by the layer classes, against the plain order of the layers one by one."""

from __future__ import annotations

import numpy as np
import pytest

import convnet as cn
from convnet.net.plan import ConvPoolStep, FoldedStep, PoolActStep
from convnet.ops import _jit, winograd
from convnet.ops import conv as C
from convnet.ops.conv_paths import ConvPath, force_path


@pytest.fixture
def winograd_everywhere():
    """Every 3x3 stride-1 CONV runs as Winograd, however small (the path selector's override)."""
    with force_path((ConvPath.WINOGRAD, ConvPath.SUBIMAGES)):
        yield


def _steps(net, train=True):
    """Each step as (step type, layer kinds, in place forward, in place backward)."""
    return [(type(s).__name__, tuple(ly.kind for ly in s.layers),
             getattr(s, "inplace_forward", False), getattr(s, "inplace_backward", False))
            for s in net._plan.steps(train)]


SPEC = ("INPUT(10x10x3) -> CONV(6,F=3,P=1) -> RELU -> POOL -> CONV(8,F=3,P=1) -> RELU "
        "-> POOL(F=3,S=2,P=1,floor=true) -> DECONV(4,F=2,S=2) -> RELU -> FC(7) -> RELU -> FC(5)")


def _plain_pass(net, x, dout):
    """The layers one by one in their own order, with no in-place writes."""
    out = x
    for layer in net.layers:
        out = layer.forward(out, train=True)
    scores = out.copy()
    d = dout
    for layer in reversed(net.layers):
        d = layer.backward(d)
    return scores, d, {name: g.copy() for name, _, g in net.parameters()}


def test_plan_swaps_relu_and_pool_fuses_them_and_works_in_place():
    net = cn.build(SPEC, seed=0)
    steps = _steps(net)
    # 3x3 S1 CONV -> RELU -> 2x2 POOL: the RELU swapped after the POOL, all on the tiles
    assert steps[0] == ("ConvPoolStep", ("CONV", "POOL", "RELU"), False, False)
    assert steps[1:3] == [("LayerStep", ("CONV",), False, False),      # 3x3/S2 POOL: no tile
                          ("PoolActStep", ("POOL", "RELU"), False, False)]
    assert steps[3:5] == [("LayerStep", ("DECONV",), False, False),
                          ("LayerStep", ("RELU",), True, True)]
    assert steps[-2] == ("LayerStep", ("RELU",), True, True)       # after FC, before FC
    assert steps[-1] == ("LayerStep", ("FC",), False, False)
    placed = sorted(id(ly) for s in net._plan.train for ly in s.layers)
    assert placed == sorted(id(ly) for ly in net.layers)          # every layer exactly once


class _MyConv(cn.Conv):
    """A subclass that changes the kernel: the plan must not fuse it by inheritance."""

    def _op(self, x, W, b, memo=None):
        out, cache = super()._op(x, W, b, memo)
        return out * 1.0, cache


class _MyReLU(cn.ReLU):
    kind = "MYRELU"


def test_fusions_are_declared_by_each_class_not_inherited():
    """A subclass of CONV is not fused with the next POOL (nor a BN folded into it) and a
    subclass of RELU neither swaps with a POOL nor works in place: the traits a class declares
    are read from its own body only."""
    conv = _MyConv(6, F=3, P=1)
    net = cn.Sequential([conv, cn.BatchNorm(), cn.ReLU(), cn.MaxPool(), _MyReLU(), cn.MaxPool(),
                         cn.FC(3)], input_shape=(8, 8, 2), seed=0)
    assert _steps(net) == [
        ("LayerStep", ("CONV",), False, False), ("LayerStep", ("BN",), False, False),
        ("PoolActStep", ("POOL", "RELU"), False, False),
        ("LayerStep", ("MYRELU",), False, False), ("LayerStep", ("POOL",), False, False),
        ("LayerStep", ("FC",), False, False)]
    assert not any(isinstance(s, FoldedStep) for s in net._plan.eval)
    plain = cn.Sequential([cn.Conv(6, F=3, P=1), cn.BatchNorm(), cn.ReLU(), cn.MaxPool(),
                           cn.ReLU(), cn.MaxPool(), cn.FC(3)], input_shape=(8, 8, 2), seed=0)
    assert isinstance(plain._plan.eval[0], FoldedStep)


def _assert_plan_matches_plain_order(net, x, dout, need_dx=True):
    """The network's plan (swaps, fusions, in-place writes) against :func:`_plain_pass`."""
    ref_scores, ref_dx, ref_grads = _plain_pass(net, x, dout)
    scores = net.forward(x, train=True)
    dx = net.backward(dout.copy(), need_dx=need_dx)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-13, atol=1e-13)
    if need_dx:
        np.testing.assert_allclose(dx, ref_dx, rtol=1e-13, atol=1e-13)
    else:
        assert dx is None
    for name, _, g in net.parameters():
        np.testing.assert_allclose(g, ref_grads[name], rtol=1e-12, atol=1e-12, err_msg=name)


def test_plan_gives_the_same_scores_and_gradients_as_the_plain_order():
    net = cn.build(SPEC, seed=0, dtype=np.float64)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 10, 10, 3))
    x_before = x.copy()
    _assert_plan_matches_plain_order(net, x, rng.standard_normal((3, 5)))
    np.testing.assert_array_equal(x, x_before)              # the caller's input is never written


@pytest.mark.parametrize("compiled", [True, False])
def test_fused_pool_relu_first_in_the_network_and_without_numba(monkeypatch, compiled):
    """POOL -> RELU as the first step (its backward is the last one run), and the NumPy pool
    kernels (the mask taken before routing) against the plain order."""
    if not compiled:
        monkeypatch.setattr(_jit, "HAVE_NUMBA", False)
    net = cn.build("INPUT(8x8x2) -> POOL(F=3,S=2,P=1,floor=true) -> RELU -> FC(3)", seed=0,
                   dtype=np.float64)
    assert isinstance(net._plan.train[0], PoolActStep)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 8, 8, 2))
    dout = rng.standard_normal((4, 3))
    for need_dx in (True, False):
        _assert_plan_matches_plain_order(net, x, dout, need_dx)


@pytest.mark.parametrize("compiled", [True, False] if _jit.HAVE_NUMBA else [False])
@pytest.mark.parametrize("spec", [
    "INPUT(9x8x3) -> CONV(4,F=3,P=1) -> RELU -> POOL(floor=true) -> FC(3)",
    "INPUT(8x8x2) -> CONV(5,F=3) -> RELU -> CONV(4,F=3,P=1) -> POOL -> FC(3)",
    "INPUT(10x10x2) -> CONV(4,F=3,P=2) -> POOL -> RELU -> CONV(3,F=3,P=1) -> RELU -> POOL -> FC(2)",
])
def test_conv_and_pool_on_winograd_tiles_match_the_plain_order(monkeypatch, winograd_everywhere,
                                                               compiled, spec):
    """CONV -> POOL (-> RELU) in one step on Winograd's tiles (thresholds off so these small
    layers take it): first in the network (its backward last, with and without dx), after
    another layer, without a RELU, on an odd grid that a floor-cropped pool crops; against the
    layers one by one (which run the CONV as Winograd too, then the pool), in training and
    evaluation; the compiled tile kernels and the NumPy ones."""
    monkeypatch.setattr(winograd, "HAVE_NUMBA", compiled)
    net = cn.build(spec, seed=0, dtype=np.float64)
    pooled = [step for step in net._plan.train if isinstance(step, ConvPoolStep)]
    assert pooled and all(step.conv.kind == "CONV" for step in pooled)
    calls = []
    real = C.conv2d_maxpool_backward
    monkeypatch.setattr(C, "conv2d_maxpool_backward",
                        lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, *net.input_shape))
    dout = rng.standard_normal((3, *net.output_shape))
    for need_dx in (True, False):
        _assert_plan_matches_plain_order(net, x, dout, need_dx)
    assert len(calls) == 2 * len(pooled)                     # the fused backward really ran
    plain = x
    for layer in net.layers:
        plain = layer.forward(plain)
    np.testing.assert_allclose(net.forward(x), plain, rtol=1e-13, atol=1e-13)


def test_conv_and_pool_step_runs_the_layers_in_turn_where_winograd_does_not_pay():
    """The same step at a batch too small for Winograd: CONV then POOL, the layers' own
    passes (and the same gradients as the plain order)."""
    net = cn.build("INPUT(6x6x32) -> CONV(32,F=3,P=1) -> RELU -> POOL -> FC(2)", seed=0,
                   dtype=np.float64)
    assert isinstance(net._plan.train[0], ConvPoolStep)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 6, 6, 32))                   # 9 tiles < WINOGRAD_MIN_TILES
    _assert_plan_matches_plain_order(net, x, rng.standard_normal((1, 2)))
    assert net.layers[0]._pooled is False




@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_bn_after_conv_and_deconv_is_folded_in_evaluation(dtype, tol):
    """CONV -> BN and DECONV -> BN in evaluation as one layer with folded weights: the same
    scores as the layers one by one (BN's running statistics, gamma and beta all non-trivial,
    a CONV without bias); training still runs BN on the batch statistics."""
    net = cn.build("INPUT(12x12x3) -> CONV(6,F=3,P=1,bias=false) -> BN -> RELU -> POOL "
                   "-> CONV(8,F=3,P=1) -> BN -> RELU -> DECONV(5,F=2,S=2) -> BN -> RELU "
                   "-> CONV(4,F=1)", seed=0, dtype=dtype)
    folds = [(net.layers.index(s.layer), net.layers.index(s.bn)) for s in net._plan.eval
             if isinstance(s, FoldedStep)]
    assert folds == [(0, 1), (4, 5), (7, 8)]
    rng = np.random.default_rng(3)
    for layer in net.layers:
        if layer.kind == "BN":
            D = layer.params["gamma"].shape[0]
            layer.params["gamma"][:] = rng.uniform(0.5, 2.0, D)
            layer.params["beta"][:] = rng.standard_normal(D)
            layer.buffers["running_mean"][:] = rng.standard_normal(D)
            layer.buffers["running_var"][:] = rng.uniform(0.2, 3.0, D)
    x = rng.standard_normal((3, 12, 12, 3)).astype(dtype)
    plain = x
    for layer in net.layers:
        plain = layer.forward(plain)
    folded = net.forward(x)
    np.testing.assert_allclose(folded, plain, rtol=tol, atol=tol)
    with pytest.raises(cn.ConfigError):                # no backward from a folded pass
        net.layers[0].backward(np.ones((3, 12, 12, 6), dtype))
    scores = net.forward(x, train=True)                # training: BN on batch statistics
    assert scores.shape == (3, 12, 12, 4)
    assert net.backward(np.ones_like(scores)).shape == x.shape




class _ScaledBN(cn.BatchNorm):
    """A BN subclass whose forward differs: it must not be folded by inheritance."""

    def _forward(self, x, train=False):
        return super()._forward(x, train) * 2


def test_a_bn_subclass_is_not_folded_and_evaluates_as_itself():
    net = cn.Sequential([cn.Conv(4, F=3, P=1), _ScaledBN(), cn.ReLU(), cn.FC(3)],
                        input_shape=(6, 6, 2), seed=0)
    assert not any(isinstance(s, FoldedStep) for s in net._plan.eval)
    x = np.random.default_rng(0).standard_normal((2, 6, 6, 2)).astype(np.float32)
    plain = x
    for layer in net.layers:
        plain = layer.forward(plain)
    np.testing.assert_allclose(net.forward(x), plain, rtol=1e-6, atol=1e-6)
