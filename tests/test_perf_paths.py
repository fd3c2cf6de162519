"""The fast paths of the performance work agree with the plain paths they replace.

Paths are selected explicitly with :func:`convnet.ops.conv.force_path` (never by setting the
measured thresholds); every path is also held to the plain reference in ``test_ops_paths.py``.

- the blocked im2col (any block size gives the same result as one block per batch),
- the stride-1 input gradient as a flipped convolution (vs GEMM + col2im, and vs PyTorch),
- the compiled max-pool kernels (vs the pure-NumPy kernels, exactly, ties and NaN included),
- Sequential's execution plan (RELU/POOL swap, in-place RELU) vs running the layers one by one,
- the per-thread scratch buffers (two threads at once),
- Winograd F(2x2, 3x3) for 3x3 stride-1 layers (vs im2col in float64, float32 vs float64, PyTorch).
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import convnet as cn
from convnet.arith import effective_extent
from convnet.ops import _jit, _threads, conv_fast, conv_paths, winograd
from convnet.ops import conv as C
from convnet.ops import pool as P
from convnet.ops.conv import ConvPath, InputGradPath, force_path


@pytest.fixture
def winograd_everywhere():
    """Every 3x3 stride-1 convolution runs as Winograd (dilated "same" ones on sub-images),
    however small (thresholds aside)."""
    with force_path((ConvPath.WINOGRAD, ConvPath.SUBIMAGES)):
        yield


@pytest.fixture
def one_image_blocks():
    """The im2col and Winograd blocks hold one image each."""
    with force_path(block_bytes=1):
        yield


# ------------------------------------------------------------------------- blocked im2col
@settings(max_examples=25, deadline=None)
@given(N=st.integers(1, 4), H=st.integers(3, 7), D=st.integers(1, 4), K=st.integers(1, 3),
       F=st.integers(1, 3), S=st.integers(1, 2), Pd=st.integers(0, 1), dil=st.integers(1, 2),
       bias=st.booleans(), seed=st.integers(0, 999))
def test_blocks_of_any_size_give_the_same_conv(N, H, D, K, F, S, Pd, dil, bias,
                                                seed):
    if effective_extent(F, dil) > H + 2 * Pd:
        return
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, H, H, D))
    W = rng.standard_normal((K, F, F, D))
    b = rng.standard_normal(K) if bias else None
    args = ((S, S), (Pd, Pd), (dil, dil))

    def run():
        out, cache = C.conv2d_forward(x, W, b, *args)
        dx, dW, db = C.conv2d_backward(np.cos(out), cache)
        tout, tcache = C.conv_transpose2d_forward(x, W.transpose(3, 1, 2, 0), b, *args)
        tgrads = C.conv_transpose2d_backward(np.sin(tout), tcache)
        return [out, dx, dW, db, tout, *tgrads]

    with force_path(block_bytes=1):                       # one image per block
        small = run()
    with force_path(block_bytes=2**40):                   # the whole batch in one block
        whole = run()
    _assert_all_close(small, whole, 1e-12)


@settings(max_examples=30, deadline=None)
@given(N=st.integers(1, 3), H=st.integers(3, 8), Wd=st.integers(3, 8), D=st.integers(1, 6),
       Fh=st.integers(1, 3), Fw=st.integers(2, 3), S=st.integers(1, 2), Pd=st.integers(0, 1),
       dil=st.integers(1, 2), ones=st.booleans(), seed=st.integers(0, 999))
def test_im2col_planes_gather_equals_the_rows_gather(N, H, Wd, D, Fh, Fw, S, Pd, dil, ones,
                                                      seed):
    """The transposed, plane-by-plane gather of thin inputs (depth <= 4 by default) builds
    exactly the matrix of the row-by-row gather: strides, dilation, padding, the ones column."""
    if effective_extent(Fh, dil) > H + 2 * Pd or effective_extent(Fw, dil) > Wd + 2 * Pd:
        return
    x = np.random.default_rng(seed).standard_normal((N, H, Wd, D))
    out_hw = C.conv_grid((H, Wd), (Fh, Fw), (S, S), (Pd, Pd), (dil, dil))
    args = (x, (Fh, Fw), (S, S), (Pd, Pd), (dil, dil), out_hw, ones)
    planes = C._im2col(*args, planes=True).copy()
    rows = C._im2col(*args, planes=False).copy()
    np.testing.assert_array_equal(planes, rows)


def _assert_all_close(got, want, tol):
    """Two lists of results agree pairwise to ``tol`` (a None only where the other is None)."""
    for a, c in zip(got, want, strict=True):
        if a is None:
            assert c is None
        else:
            np.testing.assert_allclose(a, c, rtol=tol, atol=tol)


# ------------------------------------------------------------ flipped-convolution input gradient
@settings(max_examples=30, deadline=None)
@given(N=st.integers(1, 3), H=st.integers(2, 7), Wd=st.integers(2, 7), D=st.integers(1, 5),
       K=st.integers(1, 4), Fh=st.integers(1, 3), Fw=st.integers(1, 3), dil=st.integers(1, 2),
       data=st.data())
def test_flipped_input_gradient_equals_col2im(N, H, Wd, D, K, Fh, Fw, dil, data):
    eh, ew = effective_extent(Fh, dil), effective_extent(Fw, dil)
    ph = data.draw(st.integers(0, eh - 1))
    pw = data.draw(st.integers(0, ew - 1))
    Ho, Wo = H + 2 * ph - eh + 1, Wd + 2 * pw - ew + 1
    if Ho < 1 or Wo < 1:
        return
    rng = np.random.default_rng(data.draw(st.integers(0, 999)))
    _assert_input_grad_paths_agree(
        rng.standard_normal((N, Ho, Wo, K)), rng.standard_normal((K, Fh, Fw, D)),
        ((H, Wd), (1, 1), (ph, pw), (dil, dil)), {},
        InputGradPath.FLIPPED, InputGradPath.COL2IM)


def _assert_input_grad_paths_agree(dout, W, args, common, one, other):
    """``conv2d_input_grad`` on the paths ``one`` and ``other`` (two kernels for the same
    sums), with the :func:`force_path` settings ``common``, agree in float64."""
    results = []
    for path in (one, other):
        with force_path(input_grad=path, **common):
            assert C.choose_input_grad_path(dout.shape, W.shape, *args) is path
            results.append(C.conv2d_input_grad(dout, W, *args))
    np.testing.assert_allclose(results[0], results[1], rtol=1e-12, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(N=st.integers(1, 3), H=st.integers(2, 8), Wd=st.integers(2, 8), D=st.integers(1, 4),
       K=st.integers(1, 4), F=st.integers(1, 3), S=st.integers(1, 3), dil=st.integers(1, 2),
       data=st.data())
def test_col2im_on_transposed_planes_equals_col2im(N, H, Wd, D, K, F, S, dil, data):
    """The thin-dx path (transposed buffers) against the plain scatter, any stride/padding."""
    e = effective_extent(F, dil)
    P = data.draw(st.integers(0, e - 1))
    Ho, Wo = (H + 2 * P - e) // S + 1, (Wd + 2 * P - e) // S + 1
    if Ho < 1 or Wo < 1:
        return
    rng = np.random.default_rng(data.draw(st.integers(0, 999)))
    _assert_input_grad_paths_agree(
        rng.standard_normal((N, Ho, Wo, K)), rng.standard_normal((K, F, F, D)),
        ((H, Wd), (S, S), (P, P), (dil, dil)), {"block_bytes": 1},   # several blocks
        InputGradPath.COL2IM_PLANES, InputGradPath.COL2IM)


@pytest.mark.parametrize("F, P, dil, a", [(3, 1, 1, 0), (3, 0, 2, 1), (2, 1, 1, 0), (3, 2, 2, 0)])
def test_flipped_path_matches_torch_conv_transpose(F, P, dil, a):
    """A stride-1 DECONV with K >= FLIP_MIN_DEPTH output channels (the depth of the input
    gradient it computes) runs the flipped path; PyTorch is the oracle."""
    rng = np.random.default_rng(0)
    D, K = 3, conv_paths.FLIP_MIN_DEPTH
    x = rng.standard_normal((2, 5, 6, D))
    W = rng.standard_normal((D, F, F, K)) * 0.1            # ours: (D, F, F, K) = torch (D, K, F, F)
    out_hw = (4 + (F - 1) * dil + 1 - 2 * P + a, 5 + (F - 1) * dil + 1 - 2 * P + a)
    # an output padding leaves rows no input reaches: col2im then (conv_paths)
    assert (C.choose_input_grad_path(x.shape, W.shape, out_hw, (1, 1), (P, P), (dil, dil))
            is InputGradPath.FLIPPED) == (a == 0)
    out, _ = C.conv_transpose2d_forward(x, W, None, (1, 1), (P, P), (dil, dil), (a, a))
    ref = torch.nn.functional.conv_transpose2d(
        torch.from_numpy(x.transpose(0, 3, 1, 2)), torch.from_numpy(W.transpose(0, 3, 1, 2)),
        stride=1, padding=P, output_padding=a, dilation=dil).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-10)


def test_flipped_path_float32_against_float64():
    rng = np.random.default_rng(3)
    dout = rng.standard_normal((4, 9, 9, 8))
    W = rng.standard_normal((8, 3, 3, 32)) * 0.2
    args = ((9, 9), (1, 1), (1, 1), (1, 1))
    ref = C.conv2d_input_grad(dout, W, *args)
    got = C.conv2d_input_grad(dout.astype(np.float32), W.astype(np.float32), *args)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


# ------------------------------------------------------------------- compiled max pooling
def test_numba_is_installed():
    # numba is a dependency: without it the pool tests below would only test the fallback
    assert _jit.HAVE_NUMBA




def _same_without_numba(run):
    """``run()`` with the compiled kernels and with the NumPy ones: equal arrays, exactly."""
    fast = run()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_jit, "HAVE_NUMBA", False)
        plain = run()
    for a, b in zip(fast, plain, strict=True):
        np.testing.assert_array_equal(a, b)
    return fast, plain


@settings(max_examples=40, deadline=None)
@given(N=st.integers(1, 3), H=st.integers(1, 8), Wd=st.integers(1, 8), D=st.integers(1, 5),
       Fh=st.integers(1, 3), Fw=st.integers(1, 3), Sh=st.integers(1, 3), Sw=st.integers(1, 3),
       data=st.data(), dtype=st.sampled_from([np.float32, np.float64]))
def test_compiled_maxpool_equals_numpy_kernel(N, H, Wd, D, Fh, Fw, Sh, Sw, data,
                                              dtype):
    Ph = data.draw(st.integers(0, Fh // 2))
    Pw = data.draw(st.integers(0, Fw // 2))
    if Fh > H + 2 * Ph or Fw > Wd + 2 * Pw:
        return
    rng = np.random.default_rng(data.draw(st.integers(0, 999)))
    x = rng.integers(-2, 3, (N, H, Wd, D)).astype(dtype)  # few values: many ties
    if data.draw(st.booleans()):
        x.flat[rng.integers(0, x.size)] = np.nan
    cfg = ((Fh, Fw), (Sh, Sw), (Ph, Pw))

    def run():
        out, cache = P.maxpool2d_forward(x, *cfg)
        dout = np.arange(1, out.size + 1, dtype=dtype).reshape(out.shape)
        return out, cache[0], P.maxpool2d_backward(dout, cache)

    fast, plain = _same_without_numba(run)
    assert fast[1].dtype == plain[1].dtype


@settings(max_examples=30, deadline=None)
@given(N=st.integers(1, 3), H=st.integers(2, 9), Wd=st.integers(2, 9), D=st.integers(1, 9),
       relu=st.booleans(), nan=st.booleans(), seed=st.integers(0, 999),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_2x2_pool_kernels_equal_numpy_kernels(N, H, Wd, D, relu, nan, seed, dtype):
    """The 2x2 stride-2 kernels (evaluation, training with the argmax, the RELU fused or not;
    odd sizes drop the last row/col) against the NumPy kernels, exactly: ties, zeros, NaN."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, (N, H, Wd, D)).astype(dtype)
    if nan:
        x.flat[rng.integers(0, x.size, 3)] = np.nan
    cfg = ((2, 2), (2, 2), (0, 0))

    def run():
        ev, _ = P.maxpool2d_forward(x, *cfg, need_index=False, relu=relu)
        out, cache = P.maxpool2d_forward(x, *cfg, relu=relu)
        dout = np.arange(1, out.size + 1, dtype=dtype).reshape(out.shape)
        dout.flat[::3] = np.inf                 # masked by the RELU (0) or routed, in both
        return ev, out, cache[0], P.maxpool2d_backward(dout, cache,
                                                       relu_out=out if relu else None)

    _same_without_numba(run)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("inplace", [False, True])
def test_relu_backward_selects_compiled_and_not(monkeypatch, dtype, inplace):
    """The RELU's backward is a select in both paths (and on 3 threads): Inf and NaN gradients
    where the output is 0 give 0, where it is positive pass; 0 at exactly 0."""
    from convnet.ops import activations as A

    monkeypatch.setattr(_threads, "SPLIT_MIN_ELEMENTS", 0)
    monkeypatch.setattr(_threads, "workers", lambda: 3)
    rng = np.random.default_rng(11)
    x = rng.integers(-2, 3, (5, 4, 3, 2)).astype(dtype)
    out, cache = A.relu_forward(x)
    dout = rng.standard_normal(x.shape).astype(dtype)
    dout.flat[::4] = np.inf
    dout.flat[1::7] = np.nan
    want = np.where(x > 0, dout, 0)

    def run():
        d = dout.copy()
        got = A.relu_backward(d, cache, inplace=inplace)
        assert (got is d) == inplace
        return [got]

    fast, _ = _same_without_numba(run)
    np.testing.assert_array_equal(fast[0], want)
    assert not np.isnan(fast[0][x <= 0]).any()


@pytest.mark.parametrize("compiled", [True, False] if _jit.HAVE_NUMBA else [False])
def test_pool_on_winograd_tiles_breaks_ties_like_the_pool(monkeypatch, winograd_everywhere,
                                                         compiled):
    """Small integer inputs and weights make exact ties inside windows (and whole windows of
    equal values): the first maximum in row-major order wins, as in the 2x2 pool kernels and
    PyTorch, so the index, the output and the routed gradients are those of CONV then POOL."""
    monkeypatch.setattr(winograd, "HAVE_NUMBA", compiled)
    rng = np.random.default_rng(5)
    x = rng.integers(-1, 2, (2, 6, 6, 2)).astype(np.float32)
    W = rng.integers(-1, 2, (3, 3, 3, 2)).astype(np.float32)
    W[0] = 0                                                  # filter 0: every window a tie
    b = np.array([0.5, 0.0, -1.0], np.float32)
    conv, conv_cache = C.conv2d_forward(x, W, b, (1, 1), (1, 1))
    for relu in (True, False):
        ref, pool_cache = P.maxpool2d_forward(conv, (2, 2), (2, 2), (0, 0), relu=relu)
        out, idx, cache, conv_hw = C.conv2d_maxpool_forward(x, W, b, (1, 1), relu=relu)
        assert (idx[..., 0] == 0).all() and np.mean(idx == pool_cache[0]) == 1.0
        np.testing.assert_array_equal(out, ref)
        g = rng.standard_normal(out.shape).astype(np.float32)
        dconv = P.maxpool2d_backward(g, pool_cache, relu_out=ref if relu else None)
        want = C.conv2d_backward(dconv, conv_cache)
        got = C.conv2d_maxpool_backward(g, idx, out if relu else None, cache, conv_hw)
        for a, c in zip(got, want, strict=True):
            np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-5)


def test_relu_leaves_its_argument_alone_unless_asked():
    layer = cn.ReLU()
    x = np.array([[-1.0, 2.0]])
    out = layer.forward(x, train=True)
    assert out is not x and x[0, 0] == -1.0
    d = np.array([[5.0, 5.0]])
    assert layer.backward(d) is not d and d[0, 0] == 5.0
    out = layer.forward(x, train=True, inplace=True)
    assert out is x and x[0, 0] == 0.0
    assert layer.backward(d, inplace=True) is d and d[0, 0] == 0.0


def test_blocks_on_two_threads_give_the_same_results():
    """The thread pool over the blocks (2 workers, single-threaded BLAS) against one thread."""
    assert _threads.blas() is not None, "threadpoolctl is a dependency"
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 8, 8, 4))
    W = rng.standard_normal((5, 3, 3, 4))
    b = rng.standard_normal(5)

    def run():
        out, cache = C.conv2d_forward(x, W, b, (1, 1), (1, 1), (1, 1))
        dx, dW, db = C.conv2d_backward(np.cos(out), cache)
        tout, tcache = C.conv_transpose2d_forward(x, W.transpose(3, 1, 2, 0), b, (2, 2), (1, 1),
                                                  (1, 1), (1, 1))
        return [out, dx, dW, db, tout, *C.conv_transpose2d_backward(np.sin(tout), tcache)]

    with pytest.MonkeyPatch.context() as mp, force_path(block_bytes=1):
        mp.setattr(_threads, "workers", lambda: 1)
        serial = run()
        threads_before = _threads.blas().get_num_threads()
        mp.setattr(_threads, "workers", lambda: 2)
        pooled = run()
    assert _threads.blas().get_num_threads() == threads_before    # restored after every layer
    for a, c in zip(serial, pooled, strict=True):
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-12)


def test_fc_gemms_split_over_threads_agree():
    rng = np.random.default_rng(6)
    layer = cn.FC(300)
    layer.build((400,), rng=rng, dtype=np.float64)
    x = rng.standard_normal((37, 400))
    dout = rng.standard_normal((37, 300))

    def run():
        out = layer.forward(x, train=True)
        got = [out, layer.backward(dout), layer.grads["W"].copy(), layer.grads["b"].copy()]
        layer.forward(x, train=True)
        layer.backward_params(dout)                   # dW alone (a first layer): split GEMM
        return [*got, layer.grads["W"].copy()]

    calls = []
    real = _threads.concurrently
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_threads, "concurrently", lambda *f: (calls.append(len(f)), real(*f))[1])
        mp.setattr(_threads, "workers", lambda: 1)
        serial = run()
        mp.setattr(_threads, "workers", lambda: 3)
        mp.setattr(_threads, "SPLIT_MIN_MACS", 0)
        split = run()
    assert calls == [2, 2]             # dW and dx on two threads (both runs: serial in the first)
    np.testing.assert_allclose(serial[2], x.T @ dout, rtol=1e-12)
    np.testing.assert_allclose(serial[1], dout @ layer.params["W"].T, rtol=1e-12)
    for a, c in zip(serial, split, strict=True):
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-12)


def test_single_blas_scope_records_workers_and_restores_blas():
    """One switch per pass: BLAS at 1 thread inside (nested scopes too), the kernels see the
    count from before, and the count comes back when the outermost scope ends, even on error."""
    ctl = _threads.blas()
    before = ctl.get_num_threads()
    ctl.set_num_threads(2)
    try:
        with _threads.single_blas():
            assert ctl.get_num_threads() == 1 and _threads.workers() == 2
            with _threads.single_blas():
                assert ctl.get_num_threads() == 1 and _threads.workers() == 2
            assert ctl.get_num_threads() == 1
        assert ctl.get_num_threads() == 2 and _threads.workers() == 2
        with pytest.raises(RuntimeError), _threads.single_blas():
            raise RuntimeError("a layer failed")
        assert ctl.get_num_threads() == 2
    finally:
        ctl.set_num_threads(before)


def test_network_passes_run_inside_the_scope(monkeypatch):
    net = cn.Sequential([cn.Conv(4, 3, P=1), cn.ReLU(), cn.FC(3)], input_shape=(5, 5, 2), seed=0)
    seen = []
    real = net.layers[0]._forward

    def spy(*args, **kwargs):
        seen.append(_threads.blas().get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(net.layers[0], "_forward", spy)
    ctl = _threads.blas()
    before = ctl.get_num_threads()
    ctl.set_num_threads(2)
    try:
        net.forward(np.zeros((2, 5, 5, 2), np.float32))
        assert seen == [1] and ctl.get_num_threads() == 2
    finally:
        ctl.set_num_threads(before)


def test_map_blocks_keeps_order_and_reraises_a_helpers_error():
    blocks = [(k, k + 1) for k in range(40)]
    assert _threads.map_blocks(lambda a, b: a * 10 + b, blocks, 2) == [k * 11 + 1 for k in range(40)]
    threads = set()
    both = threading.Event()

    def record(a, b):
        threads.add(threading.get_ident())
        if len(threads) == 2:
            both.set()
        both.wait(timeout=30)                   # each block waits until both threads took one
        return a

    assert _threads.map_blocks(record, blocks, 2) == list(range(40))
    assert len(threads) == 2 and threading.get_ident() in threads     # the caller works too

    def fail(a, b):
        if a == 7:
            raise ValueError("block 7")
        return a

    with pytest.raises(ValueError, match="block 7"):
        _threads.map_blocks(fail, blocks, 2)
    assert _threads.map_blocks(lambda a, b: a, blocks, 2) == list(range(40))   # pool still usable


def test_spin_wait_sees_another_threads_write_and_gives_up():
    assert _jit.spin_until is not None
    flags = np.zeros(2, dtype=np.int64)
    assert _jit.spin_until(flags, 0, 0, 1)
    assert not _jit.spin_until(flags, 0, 1, 100_000)             # nobody writes: gives up
    writer = threading.Timer(0.01, lambda: flags.__setitem__(1, 7))
    writer.start()
    assert _jit.spin_until(flags, 1, 7, 10**12)                  # seen, long before 10^12
    writer.join()


@pytest.mark.parametrize("spin_tries", [0, 1_000_000])
def test_pool_hands_out_every_block_with_and_without_spinning(monkeypatch, spin_tries):
    monkeypatch.setattr(_threads, "SPIN_TRIES", spin_tries)
    for n in (2, 3, 50):
        blocks = [(k, k + 1) for k in range(n)]
        for _ in range(20):
            assert _threads.map_blocks(lambda a, b: a, blocks, 2) == list(range(n))


def test_pool_is_rebuilt_in_a_forked_child():
    """Threads do not survive fork(): a child must not wait for helpers it does not have."""
    blocks = [(k, k + 1) for k in range(8)]
    assert _threads.map_blocks(lambda a, b: a, blocks, 2) == list(range(8))   # parent's pool
    pid = os.fork()
    if pid == 0:                                          # the child
        ok = _threads.map_blocks(lambda a, b: a, blocks, 2) == list(range(8))
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


@pytest.mark.parametrize("n, parts", [(1, 2), (2, 2), (7, 3), (128, 2)])
def test_row_blocks_cover_every_row_once(n, parts):
    blocks = _threads.row_blocks(n, parts)
    assert blocks[0][0] == 0 and blocks[-1][1] == n
    assert all(a < b for a, b in blocks) and all(b == c for (_, b), (c, _) in zip(blocks, blocks[1:], strict=False))


# ------------------------------------------------------------------------ scratch buffers
def test_scratch_buffers_are_per_thread(one_image_blocks):
    rng = np.random.default_rng(0)
    jobs = [(rng.standard_normal((6, 9, 9, 4)), rng.standard_normal((5, 3, 3, 4))) for _ in range(4)]
    expected = [C.conv2d_forward(x, W, None, (1, 1), (1, 1), (1, 1))[0] for x, W in jobs]
    results: dict[int, list[np.ndarray]] = {}

    def work(k: int) -> None:
        x, W = jobs[k]
        results[k] = [C.conv2d_forward(x, W, None, (1, 1), (1, 1), (1, 1))[0] for _ in range(20)]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, outs in results.items():
        for out in outs:
            np.testing.assert_array_equal(out, expected[k])


# ------------------------------------------------------------------ Winograd F(2x2, 3x3)
def _conv_both_ways(x, W, b, P, dout):
    """Forward and gradients by Winograd (however small) and by im2col (no fast path)."""
    args = ((1, 1), (P, P), (1, 1))
    results = []
    for path in (ConvPath.WINOGRAD, ConvPath.IM2COL):
        # dx as a conv of dout: Winograd again (where the backward is not one pass)
        with force_path(path, input_grad=InputGradPath.FLIPPED):
            out, cache = C.conv2d_forward(x, W, b, *args)
            results.append((out, *C.conv2d_backward(dout, cache)))
    return results


@pytest.mark.parametrize("compiled", [True, False] if _jit.HAVE_NUMBA else [False])
@settings(max_examples=25, deadline=None)
@given(N=st.integers(1, 3), H=st.integers(1, 9), Wd=st.integers(1, 9), D=st.integers(1, 5),
       K=st.integers(1, 4), P=st.integers(0, 2), bias=st.booleans(), seed=st.integers(0, 999))
def test_winograd_equals_im2col_in_float64(compiled, N, H, Wd, D, K, P, bias, seed):
    """Odd and even, square and not, P = 0..2, batch 1, depth 1: tiles padded to even sizes."""
    if H + 2 * P < 3 or Wd + 2 * P < 3:
        return
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, H, Wd, D))
    W = rng.standard_normal((K, 3, 3, D))
    b = rng.standard_normal(K) if bias else None
    dout = rng.standard_normal((N, H + 2 * P - 2, Wd + 2 * P - 2, K))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(winograd, "HAVE_NUMBA", compiled)
        wino, plain = _conv_both_ways(x, W, b, P, dout)
    assert wino[0].shape == dout.shape and wino[1].shape == x.shape
    for w, p in zip(wino, plain, strict=True):
        if p is None:
            assert w is None
        else:
            np.testing.assert_allclose(w, p, rtol=1e-10, atol=1e-10 * np.abs(p).max())


@pytest.mark.parametrize("shape, P", [((2, 9, 7, 16), 1), ((1, 8, 8, 32), 0), ((3, 5, 11, 3), 2)])
def test_winograd_float32_against_float64(shape, P):
    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape)
    W = rng.standard_normal((24, 3, 3, shape[3])) * 0.2
    b = rng.standard_normal(24)
    dout = rng.standard_normal((shape[0], shape[1] + 2 * P - 2, shape[2] + 2 * P - 2, 24))
    ref = _conv_both_ways(x, W, b, P, dout)[1]                    # im2col, float64
    got = _conv_both_ways(*(a.astype(np.float32) for a in (x, W, b)), P,
                          dout.astype(np.float32))[0]             # Winograd, float32
    for g, r in zip(got, ref, strict=True):                       # out, dx, dW, db
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4 * np.abs(r).max())


def test_winograd_runs_on_deep_layers_and_matches_torch(monkeypatch):
    """With the default thresholds a cifar10-sized layer takes the Winograd paths (forward,
    input and weight gradients), and its training step agrees with PyTorch."""
    calls = []
    real, real_bwd = conv_fast.winograd_conv, conv_fast.winograd_backward
    monkeypatch.setattr(conv_fast, "winograd_conv", lambda *a: (calls.append(1), real(*a))[1])
    monkeypatch.setattr(conv_fast, "winograd_backward",
                        lambda *a: (calls.append(0), real_bwd(*a))[1])
    rng = np.random.default_rng(8)
    N = -(-conv_paths.WINOGRAD_MIN_TILES // 64)                   # 16x16 outputs: 64 tiles each
    x = rng.standard_normal((N, 16, 16, 32))
    W = rng.standard_normal((32, 3, 3, 32)) * 0.1
    b = rng.standard_normal(32)
    out, cache = C.conv2d_forward(x, W, b, (1, 1), (1, 1), (1, 1))
    dout = np.cos(out)
    dx, dW, db = C.conv2d_backward(dout, cache)
    assert calls == [1, 0]                                        # forward; dW and dx
    tx = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_()
    tW = torch.from_numpy(W.transpose(0, 3, 1, 2).copy()).requires_grad_()
    tb = torch.from_numpy(b).requires_grad_()
    tout = torch.nn.functional.conv2d(tx, tW, tb, padding=1)
    tout.backward(torch.from_numpy(dout.transpose(0, 3, 1, 2).copy()))
    np.testing.assert_allclose(out, tout.detach().numpy().transpose(0, 2, 3, 1), rtol=1e-10,
                               atol=1e-10)
    np.testing.assert_allclose(dx, tx.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-10,
                               atol=1e-10)
    np.testing.assert_allclose(dW, tW.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-10,
                               atol=1e-10)
    np.testing.assert_allclose(db, tb.grad.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("compiled", [True, False] if _jit.HAVE_NUMBA else [False])
@pytest.mark.parametrize("H, Wd, P, dilation", [(14, 14, 1, 1), (9, 7, 0, 1), (10, 12, 0, 1),
                                                 (8, 11, 2, 1), (12, 8, 2, 2), (5, 6, 3, 1)])
def test_winograd_backward_in_one_pass_equals_the_separate_gradients(monkeypatch,
                                                                       winograd_everywhere,
                                                                       compiled, H, Wd, P,
                                                                       dilation):
    """The one-pass backward (dx from the tile gradients dV = dM U^T) against the separate
    weight gradient and flipped-convolution dx, against PyTorch, and dW alone (need_dx=False).
    Odd sizes and P != 1 crop or pad the tile grid on the right and bottom; P = 0 on even sizes
    reaches the last padded column (only the tile before it adds there); P = 3 drops more
    than one ring of the padded gradient; dilation 2 runs on sub-images."""
    monkeypatch.setattr(winograd, "HAVE_NUMBA", compiled)
    rng = np.random.default_rng(H * Wd + P)
    x = rng.standard_normal((3, H, Wd, 5))
    W = rng.standard_normal((6, 3, 3, 5))
    b = rng.standard_normal(6)
    calls = []
    real = conv_fast.winograd_backward
    monkeypatch.setattr(conv_fast, "winograd_backward",       # with the filters: dx too
                        lambda *a: (calls.append(len(a) == 4 and a[3] is not None), real(*a))[1])
    out, cache = C.conv2d_forward(x, W, b, (1, 1), (P, P), (dilation, dilation))
    dout = np.cos(out)
    fused = C.conv2d_backward(dout, cache)
    dW_only = C.conv2d_backward(dout, cache, need_dx=False)
    with force_path(fused_backward=False):
        separate = C.conv2d_backward(dout, cache)
    assert calls[:2] == [True, False]                        # one pass with dx, then dW alone
    tx = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_()
    tW = torch.from_numpy(W.transpose(0, 3, 1, 2).copy()).requires_grad_()
    tout = torch.nn.functional.conv2d(tx, tW, torch.from_numpy(b), padding=P, dilation=dilation)
    tout.backward(torch.from_numpy(dout.transpose(0, 3, 1, 2).copy()))
    ref_dx, ref_dW = tx.grad.numpy().transpose(0, 2, 3, 1), tW.grad.numpy().transpose(0, 2, 3, 1)
    assert dW_only[0] is None
    for got, ref in ((fused[0], ref_dx), (separate[0], ref_dx), (fused[1], ref_dW),
                     (dW_only[1], ref_dW), (separate[1], ref_dW)):
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10 * np.abs(ref).max())
    np.testing.assert_allclose(fused[2], dout.sum(axis=(0, 1, 2)), rtol=1e-12)


def test_winograd_blocks_on_two_threads_give_the_same_results(monkeypatch, winograd_everywhere,
                                                               one_image_blocks):
    """Per-thread scratch (V, M, the padded block) and the in-order sum of the dW partials."""
    assert _threads.blas() is not None, "threadpoolctl is a dependency"
    rng = np.random.default_rng(9)
    x = rng.standard_normal((5, 7, 6, 4))
    W = rng.standard_normal((3, 3, 3, 4))
    b = rng.standard_normal(3)

    def run():
        out, cache = C.conv2d_forward(x, W, b, (1, 1), (1, 1), (1, 1))
        return [out, *C.conv2d_backward(np.cos(out), cache)]

    monkeypatch.setattr(_threads, "workers", lambda: 1)
    serial = run()
    monkeypatch.setattr(_threads, "workers", lambda: 2)
    pooled = run()
    for a, c in zip(serial, pooled, strict=True):
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-12)


def test_memory_bound_passes_split_over_threads_agree(monkeypatch):
    """Pooling (with and without the argmax), RELU and BN by ranges of images on 3 threads
    (every pass split, whatever its size) against one thread."""
    from convnet.ops import activations as A
    from convnet.ops import norm as Nm

    rng = np.random.default_rng(11)
    x = rng.standard_normal((7, 9, 8, 5))
    g, b = rng.standard_normal(5), rng.standard_normal(5)

    def run():
        out = []
        for need in (True, False):
            p, cache = P.maxpool2d_forward(x, (3, 3), (2, 2), (1, 1), need_index=need)
            out.append(p)
            if need:
                out.append(P.maxpool2d_backward(np.cos(p), cache))
        r, rc = A.relu_forward(x)
        out += [r, A.relu_backward(np.sin(x), rc)]
        for train in (True, False):
            y, bc = Nm.batchnorm_forward(x, g, b, np.zeros(5), np.ones(5), 0.1, 1e-5, train)
            out += [y, *Nm.batchnorm_backward(np.cos(y), bc)]
        return out

    monkeypatch.setattr(_threads, "workers", lambda: 1)
    serial = run()
    monkeypatch.setattr(_threads, "workers", lambda: 3)
    monkeypatch.setattr(_threads, "SPLIT_MIN_ELEMENTS", 0)
    monkeypatch.setattr(_threads, "SPLIT_MIN_MACS", 0)
    split = run()
    for a, c in zip(serial, split, strict=True):
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-12)


def test_winograd_filter_transform_is_kept_while_the_weights_stay_the_same(monkeypatch):
    """An evaluation pass keeps the transformed filters in the layer and reuses them; weights
    changed in place (by a user, an optimiser step, ``load_state_dict``) are seen at once, and
    a training pass transforms every time."""
    made = []
    real = winograd.filter_transform
    monkeypatch.setattr(winograd, "filter_transform", lambda W: (made.append(1), real(W))[1])
    net = cn.build("INPUT(8x8x32) -> CONV(32,F=3,P=1) -> RELU -> FC(3)", seed=0, dtype="float64")
    x = np.random.default_rng(10).standard_normal((2, 8, 8, 32))  # 32 tiles: Winograd
    first = net.forward(x)
    np.testing.assert_array_equal(net.forward(x), first)
    assert len(made) == 1
    saved = {k: v.copy() for k, v in net.state_dict().items()}
    net.layers[0].params["W"][3, 1, 2, 5] += 0.5                  # in place: same array
    changed = net.forward(x)
    assert len(made) == 2
    fresh = cn.build(net.spec, seed=1, dtype="float64")
    fresh.load_state_dict(net.state_dict())
    np.testing.assert_array_equal(changed, fresh.forward(x))
    assert not np.array_equal(changed, first)
    net.load_state_dict(saved)
    np.testing.assert_array_equal(net.forward(x), first)
    made.clear()
    net.forward(x, train=True)
    assert net.layers[0]._memo == {}                      # training drops what evaluation kept
    net.forward(x, train=True)
    assert len(made) == 2
    deconv = cn.build("INPUT(10x10x32) -> DECONV(32,F=3,P=1)", seed=0)  # stride 1: Winograd
    y = np.random.default_rng(12).standard_normal((1, 10, 10, 32)).astype(np.float32)
    made.clear()
    np.testing.assert_array_equal(deconv.forward(y), deconv.forward(y))
    assert len(made) == 1


# ------------------------------------------------------------------------- the arena
def test_arena_reuses_a_buffer_only_once_nothing_references_it(monkeypatch):
    from convnet.ops import _arena

    monkeypatch.setattr(_arena, "_buffers", [])
    n = _arena.MIN_BYTES // 4
    a = _arena.empty((n,), np.float32)
    a[:] = 1
    view = a[::2].reshape(-1, 2)                       # a view of a view keeps the buffer
    base = id(view.base)                               # not a reference: that would keep it
    del a
    b = _arena.empty((2, n // 2), np.float32)          # same size: must not take a's buffer
    assert id(b.base) != base and b.flags.c_contiguous and b.shape == (2, n // 2)
    assert np.all(view == 1)
    del view
    c = _arena.empty((n,), np.int32)                   # free now: reused, any dtype/shape
    assert id(c.base) == base and c.dtype == np.int32
    z = _arena.zeros((n // 2,), np.float64)            # b is alive, base is c's: one more
    assert not z.any() and id(z.base) != base and z.base is not b.base
    assert _arena.kept_bytes() == (3 * n * 4, 0)
    small = _arena.empty((3,), np.float32)             # below MIN_BYTES: plain np.empty
    assert small.base is None
    del b, c, z
    assert _arena.kept_bytes() == (3 * n * 4, 3 * n * 4)
    monkeypatch.setattr(_arena, "KEEP_BYTES", n * 4)   # at most one free buffer kept
    d = _arena.empty((2 * n,), np.float32)             # a new size: the oldest free ones go
    assert _arena.kept_bytes() == (3 * n * 4, n * 4)
    del d
    _arena.release()
    assert _arena.kept_bytes() == (0, 0)


def test_arena_hands_a_buffer_to_one_thread_at_a_time(monkeypatch):
    """Two threads allocating the same size at once never get the same buffer: the check that a
    buffer is free and the view that takes it happen under one lock. A sleep after the check
    lets the other thread run there, so that without the lock both would take the buffer."""
    from convnet.ops import _arena

    monkeypatch.setattr(_arena, "_buffers", [])
    real_free = _arena._free
    monkeypatch.setattr(_arena, "_free", lambda i: (real_free(i), time.sleep(1e-4))[0])
    n = _arena.MIN_BYTES // 4
    clashes: list[int] = []

    def work(t):
        held = None                                    # one array held while asking for more
        for k in range(300):
            arr = _arena.empty((n,), np.float32)
            arr[:8] = 10 * t + k % 2
            time.sleep(1e-4)
            clashes.append(int(np.any(arr[:8] != 10 * t + k % 2)))
            held = arr
            del arr
        del held

    threads = [threading.Thread(target=work, args=(t,)) for t in (0, 1)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(clashes) == 600 and sum(clashes) == 0
    assert _arena.kept_bytes()[0] <= 4 * n * 4                  # two per thread at most


# ------------------------------------------------------------- 3x3 on one channel, direct
@settings(max_examples=30, deadline=None)
@given(N=st.integers(1, 3), H=st.integers(3, 9), Wd=st.integers(3, 9), K=st.integers(8, 20),
       S=st.integers(1, 2), Pd=st.integers(0, 2), dil=st.integers(1, 2), bias=st.booleans(),
       seed=st.integers(0, 999))
def test_direct_3x3_one_channel_conv_equals_im2col(N, H, Wd, K, S, Pd, dil, bias, seed):
    """The compiled direct kernels, forward and weight/bias gradients (any stride, padding,
    dilation; with and without bias), against im2col + GEMM in float64, and float32 against
    float64."""
    if effective_extent(3, dil) > min(H, Wd) + 2 * Pd:
        return
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, H, Wd, 1))
    W = rng.standard_normal((K, 3, 3, 1))
    b = rng.standard_normal(K) if bias else None
    args = ((S, S), (Pd, Pd), (dil, dil))
    out_hw = C.conv_grid((H, Wd), (3, 3), *args)
    assert C.choose_path(x.shape, (K, 3, 3, 1), *args, out_hw, x.dtype) is ConvPath.DIRECT_DEPTH1

    def run(x, W, b):
        out, cache = C.conv2d_forward(x, W, b, *args)
        return [out, *C.conv2d_backward(np.cos(out), cache)[1:]]

    direct = run(x, W, b)
    with force_path(ConvPath.IM2COL):
        plain = run(x, W, b)
    f32 = run(x.astype(np.float32), W.astype(np.float32),
              None if b is None else b.astype(np.float32))
    for d, p, f in zip(direct, plain, f32, strict=True):
        if d is None:
            assert p is None and f is None
            continue
        np.testing.assert_allclose(d, p, rtol=1e-11, atol=1e-11)
        assert f.dtype == np.float32 and f.shape == d.shape
        np.testing.assert_allclose(f, d, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(d).max()))


@settings(max_examples=25, deadline=None)
@given(N=st.integers(1, 3), H=st.integers(2, 9), Wd=st.integers(2, 9), K=st.integers(8, 12),
       pad=st.integers(0, 1), relu=st.booleans(), ties=st.booleans(), seed=st.integers(0, 999),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_one_channel_weight_grad_from_the_pooled_gradient(N, H, Wd, K, pad, relu, ties, seed,
                                                           dtype):
    """dW and db of CONV(3x3, one channel) -> POOL 2x2 (-> RELU) straight from the pooled
    gradient and index, against the pool's backward then the dense kernel: odd grids (the
    pool crops), P = 0 and 1, exact ties (integer inputs), float32 and float64."""
    if H + 2 * pad < 4 or Wd + 2 * pad < 4:
        return
    rng = np.random.default_rng(seed)
    x = (rng.integers(-1, 2, (N, H, Wd, 1)) if ties else rng.standard_normal((N, H, Wd, 1)))
    x = x.astype(dtype)
    W = rng.standard_normal((K, 3, 3, 1)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    conv, cache = C.conv2d_forward(x, W, b, (1, 1), (pad, pad))
    out, pcache = P.maxpool2d_forward(conv, (2, 2), (2, 2), (0, 0), relu=relu)
    g = rng.standard_normal(out.shape).astype(dtype)
    dense = P.maxpool2d_backward(g, pcache, relu_out=out if relu else None)
    _, want_dW, want_db = C.conv2d_backward(dense, cache, need_dx=False)
    assert C.depth1_maxpool_fuses(W.shape, (1, 1), (1, 1), np.dtype(dtype))
    dW, db = C.conv3x3_depth1_maxpool_weight_grad(x, g, pcache[0], out if relu else None,
                                                  (pad, pad), conv.shape[1:3], True)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(dW, want_dW, rtol=tol, atol=tol * (1 + np.abs(want_dW).max()))
    np.testing.assert_allclose(db, want_db, rtol=tol, atol=tol * (1 + np.abs(want_db).max()))


@pytest.mark.parametrize("after, wgrad_kernel", [
    ("RELU -> POOL", "conv3x3_depth1_pool_wgrad_kernel"),       # dW from the pooled gradient
    ("POOL(floor=true)", "conv3x3_depth1_pool_wgrad_kernel"),   # no RELU; 13x13 cropped
    ("RELU", "conv3x3_depth1_wgrad_kernel"),                    # the dense output gradient
])
def test_direct_3x3_one_channel_conv_matches_torch_in_a_network(after, wgrad_kernel):
    """A grayscale network's first layer takes the direct paths (its weight gradient straight
    from the POOL's gradient and index when a 2x2 POOL follows); its scores and gradients
    agree with PyTorch's (two threads: the images are split between them)."""
    calls = []
    fwd, wgrad = _jit.conv3x3_depth1_kernel, getattr(_jit, wgrad_kernel)
    size = 13 if "floor" in after else 12
    net = cn.build(f"INPUT({size}x{size}x1) -> CONV(16,F=3,S=1,P=1) -> {after} -> FC(5)",
                   seed=3, dtype=np.float64)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((400, size, size, 1))                 # big enough to be split
    dout = rng.standard_normal((400, 5))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_jit, "conv3x3_depth1_kernel", lambda *a: (calls.append(0), fwd(*a))[1])
        mp.setattr(_jit, wgrad_kernel, lambda *a: (calls.append(1), wgrad(*a))[1])
        mp.setattr(_threads, "workers", lambda: 2)
        scores = net.forward(x, train=True)
        net.backward(dout, need_dx=False)
    assert calls.count(0) == 2 and calls.count(1) == 2              # split in 2 ranges each
    conv, fc = net.layers[0], net.layers[-1]
    tx = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    tW = torch.from_numpy(conv.params["W"].transpose(0, 3, 1, 2).copy()).requires_grad_()
    tb = torch.from_numpy(conv.params["b"].copy()).requires_grad_()
    h = torch.nn.functional.conv2d(tx, tW, tb, padding=1)
    if "RELU" in after:
        h = torch.relu(h)
    if "POOL" in after:
        h = torch.nn.functional.max_pool2d(h, 2)
    ref = h.permute(0, 2, 3, 1).reshape(400, -1) @ torch.from_numpy(fc.params["W"]) \
        + torch.from_numpy(fc.params["b"])
    ref.backward(torch.from_numpy(dout))
    np.testing.assert_allclose(scores, ref.detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(conv.grads["W"], tW.grad.numpy().transpose(0, 2, 3, 1),
                               rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(conv.grads["b"], tb.grad.numpy(), rtol=1e-10, atol=1e-10)


# --------------------------------------------------- dilated 3x3 as Winograd on sub-images
@settings(max_examples=25, deadline=None)
@given(N=st.integers(1, 2), h=st.integers(1, 4), w=st.integers(1, 4), dh=st.integers(1, 3),
       dw=st.integers(2, 3), D=st.integers(1, 4), K=st.integers(1, 4), bias=st.booleans(),
       seed=st.integers(0, 999))
def test_dilated_conv_on_subimages_equals_im2col(N, h, w, dh, dw, D, K, bias, seed):
    """Forward, input, weight and bias gradients of a "same" dilated 3x3 convolution run as
    Winograd on the d x d interleaved sub-images, against im2col in float64."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, h * dh, w * dw, D))
    W = rng.standard_normal((K, 3, 3, D))
    b = rng.standard_normal(K) if bias else None
    args = ((1, 1), (dh, dw), (dh, dw))

    def run():
        out, cache = C.conv2d_forward(x, W, b, *args)
        return [out, *C.conv2d_backward(np.cos(out), cache)]

    flipped = InputGradPath.FLIPPED               # dx as the turned (dilated) convolution too
    with force_path(ConvPath.SUBIMAGES, input_grad=flipped):
        assert C.choose_path(x.shape, W.shape, *args, x.shape[1:3]) is ConvPath.SUBIMAGES
        fast = run()
    with force_path(ConvPath.IM2COL, input_grad=flipped):
        plain = run()
    _assert_all_close(fast, plain, 1e-10)


def test_dilated_conv_on_subimages_matches_torch():
    """At the default thresholds the encoder-decoder's dilated layer (8x16x32 -> 48, d=2)
    takes the sub-image path, and agrees with PyTorch in float32 (against float64)."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((4, 8, 16, 32))
    W = rng.standard_normal((48, 3, 3, 32)) * 0.1
    b = rng.standard_normal(48)
    assert C.choose_path(x.shape, W.shape, (1, 1), (2, 2), (2, 2), (8, 16)) is ConvPath.SUBIMAGES
    out, cache = C.conv2d_forward(x.astype(np.float32), W.astype(np.float32),
                                  b.astype(np.float32), (1, 1), (2, 2), (2, 2))
    dout = np.cos(out.astype(np.float64))
    dx, dW, db = C.conv2d_backward(dout.astype(np.float32), cache)
    tx = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_()
    tW = torch.from_numpy(W.transpose(0, 3, 1, 2).copy()).requires_grad_()
    tb = torch.from_numpy(b).requires_grad_()
    tout = torch.nn.functional.conv2d(tx, tW, tb, padding=2, dilation=2)
    tout.backward(torch.from_numpy(dout.transpose(0, 3, 1, 2).copy()))
    for ours, ref in ((out, tout.detach().numpy().transpose(0, 2, 3, 1)),
                      (dx, tx.grad.numpy().transpose(0, 2, 3, 1)),
                      (dW, tW.grad.numpy().transpose(0, 2, 3, 1)), (db, tb.grad.numpy())):
        assert ours.dtype == np.float32
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
