"""Round 2's fast paths against the plain paths they replace, on the shapes they were made for.

    python bench/bench_round2_paths.py              # 1 thread, process CPU time (steady on a
                                                    # shared machine); --threads 2 for both cores

Each row times the same call with the fast path and with the plain one (forced with
``convnet.ops.conv.force_path`` or the module switch), interleaved, median of the repetitions,
and checks that the two agree. Prints a Markdown table (bench/README.md, "Round 2", quotes it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any


def _time(fa: Callable[[], Any], fb: Callable[[], Any], reps: int) -> tuple[float, float]:
    fa(), fb()
    ta: list[float] = []
    tb: list[float] = []
    for r in range(reps):
        for fn, acc in (((fa, ta), (fb, tb)) if r % 2 == 0 else ((fb, tb), (fa, ta))):
            t0 = time.process_time()
            n = 0
            while True:
                fn()
                n += 1
                if time.process_time() - t0 > 0.05:
                    break
            acc.append((time.process_time() - t0) / n)
    return statistics.median(ta), statistics.median(tb)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import numpy as np

    from convnet.ops import activations as A
    from convnet.ops import conv as C
    from convnet.ops import grouped as G
    from convnet.ops import norm as Nm
    from convnet.ops.conv import ConvPath, InputGradPath, force_path
    from convnet.ops.conv_paths import DepthwisePath

    rng = np.random.default_rng(0)
    f32 = np.float32
    rows = []

    def row(what: str, shape: str, fast: Callable[[], Any], plain: Callable[[], Any]) -> None:
        a, b = fast(), plain()
        for x, y in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,),
                        strict=True):
            if x is not None:
                np.testing.assert_allclose(x, y, rtol=2e-3, atol=2e-3 * float(np.abs(y).max()))
        tf, tp = _time(fast, plain, args.reps)
        rows.append((what, shape, 1e3 * tp, 1e3 * tf, tp / tf))
        print(f"  {what:34s} {shape:34s} plain {1e3 * tp:8.3f} ms  fast {1e3 * tf:8.3f} ms  "
              f"{tp / tf:5.2f}x", flush=True)

    # DIRECT_SMALL: seed004's two CONV layers, forward, weight gradient, input gradient
    for N, hw, D, K in ((128, 32, 1, 3), (128, 14, 3, 6), (32, 14, 3, 6), (1, 32, 1, 3)):
        x = rng.standard_normal((N, hw, hw, D)).astype(f32)
        W = rng.standard_normal((K, 5, 5, D)).astype(f32)
        b = np.zeros(K, f32)
        g = rng.standard_normal((N, hw - 4, hw - 4, K)).astype(f32)
        shape = f"{N}x{hw}x{hw}x{D} -> {K}, 5x5"

        def fwd(path: ConvPath) -> Callable[[], Any]:
            def f() -> Any:
                with force_path(path):
                    return C.conv2d_forward(x, W, b)[0].copy()
            return f

        def wgrad(path: ConvPath) -> Callable[[], Any]:
            def f() -> Any:
                with force_path(path):
                    return C.conv2d_weight_grad(x, g, (5, 5))
            return f

        def dx(path: InputGradPath) -> Callable[[], Any]:
            def f() -> Any:
                with force_path(input_grad=path):
                    return C.conv2d_input_grad(g, W, (hw, hw)).copy()
            return f

        row("CONV forward (DIRECT_SMALL)", shape, fwd(ConvPath.DIRECT_SMALL),
            fwd(ConvPath.IM2COL))
        row("CONV dW (DIRECT_SMALL)", shape, wgrad(ConvPath.DIRECT_SMALL), wgrad(ConvPath.IM2COL))
        if D > 1:
            row("CONV dx (DIRECT_SMALL)", shape, dx(InputGradPath.DIRECT_SMALL),
                dx(InputGradPath.COL2IM_PLANES))

    # DepthwisePath.DIRECT: MobileNet-v2 blocks at 32x32 input (16x16x144, 8x8x192) and S=2
    for N, hw, D, S in ((32, 16, 144, 1), (32, 8, 192, 1), (32, 32, 96, 2), (1, 16, 144, 1)):
        x = rng.standard_normal((N, hw, hw, D)).astype(f32)
        W = rng.standard_normal((D, 3, 3, 1)).astype(f32)
        shape = f"{N}x{hw}x{hw}x{D}, 3x3 S={S}"

        def dw_fwd(path: DepthwisePath) -> Callable[[], Any]:
            def f() -> Any:
                with force_path(depthwise=path):
                    return G.grouped_conv2d_forward(x, W, None, (S, S), (1, 1), (1, 1), D)[0]
            return f

        with force_path(depthwise=DepthwisePath.TAPS):
            out, cache = G.grouped_conv2d_forward(x, W, None, (S, S), (1, 1), (1, 1), D)
        dout = rng.standard_normal(out.shape).astype(f32)

        def dw_bwd(path: DepthwisePath) -> Callable[[], Any]:
            def f() -> Any:
                with force_path(depthwise=path):
                    dx_, dW_, _ = G.grouped_conv2d_backward(dout, cache)
                    return dx_, dW_
            return f

        row("DWCONV forward (DIRECT)", shape, dw_fwd(DepthwisePath.DIRECT),
            dw_fwd(DepthwisePath.TAPS))
        row("DWCONV backward (DIRECT)", shape, dw_bwd(DepthwisePath.DIRECT),
            dw_bwd(DepthwisePath.TAPS))

    # compiled BN training and RELU6 backward
    for N, hw, D in ((32, 16, 144), (32, 32, 16), (128, 8, 64)):
        x = rng.standard_normal((N, hw, hw, D)).astype(f32)
        dout = rng.standard_normal(x.shape).astype(f32)
        gamma, beta = np.ones(D, f32), np.zeros(D, f32)
        shape = f"{N}x{hw}x{hw}x{D}"

        def bn(use: bool) -> Callable[[], Any]:
            def f() -> Any:
                Nm.USE_COMPILED = use
                try:
                    out, cache = Nm.batchnorm_forward(x, gamma, beta, np.zeros(D, f32),
                                                      np.ones(D, f32), 0.1, 1e-5, True)
                    return (out, *Nm.batchnorm_backward(dout, cache))
                finally:
                    Nm.USE_COMPILED = True
            return f

        row("BN train forward + backward", shape, bn(True), bn(False))
    x = rng.uniform(-2, 8, (32, 16, 16, 144)).astype(f32)
    out, cache = A.relu6_forward(x)
    g = rng.standard_normal(x.shape).astype(f32)
    row("RELU6 backward (compiled)", "32x16x16x144", lambda: A.relu6_backward(g, cache).copy(),
        lambda: np.where((cache > 0) & (cache < 6), g, f32(0)))

    print(f"\n{args.threads} thread(s), process CPU time, median of {args.reps}; load "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}\n")
    print("| path | shape | plain ms | fast ms | gain |\n|---|---|---:|---:|---:|")
    for what, shape, tp, tf, r in rows:
        print(f"| {what} | {shape} | {tp:.3f} | {tf:.3f} | {r:.2f}x |")


if __name__ == "__main__":
    sys.exit(main())
