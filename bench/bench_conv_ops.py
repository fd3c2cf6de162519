"""Time our conv forward+backward against PyTorch CPU on the reference network's two CONV layers.

INPUT(28x28x1) -> CONV(32,F=3,P=1) -> RELU -> POOL -> CONV(64,F=3,P=1) -> ... at batch 128,
2 threads. Prints milliseconds per forward+backward (best of repeats); no assertions.
``--path`` runs our layers on a given path wherever it applies (``im2col``: every fast path
off; see ``convnet.ops.conv_paths``), to measure what a fast path saves.

    python bench/bench_conv_ops.py [--batch 128] [--threads 2] [--repeats 30] [--path im2col]
"""

from __future__ import annotations

import argparse
import os
import time


def _best_ms(fns, repeats: int) -> list[float]:
    """Best of ``repeats`` wall-clock runs of each function, run in alternation.

    On a shared machine the minimum is the run other processes disturbed least (timeit's advice),
    and alternating exposes ours and torch's to the same background load.
    """
    for fn in fns:
        fn()                                              # warm-up: first-touch pages, BLAS init
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t0)
    return [1e3 * b for b in best]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--path", default=None,
                    choices=["im2col", "winograd", "subimages", "direct_depth1"],
                    help="force this ConvPath where it applies (default: the measured choice)")
    args = ap.parse_args()
    # BLAS reads its thread count when it loads, so set it before importing numpy.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import numpy as np
    import torch

    from convnet.ops.conv import ConvPath, conv2d_backward, conv2d_forward, force_path

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    N = args.batch
    layers = [  # (name, H, D, K, first layer: no input gradient needed)
        ("conv1 28x28x1 -> 32, F=3 P=1", 28, 1, 32, True),
        ("conv2 14x14x32 -> 64, F=3 P=1", 14, 32, 64, False),
    ]
    print(f"batch {N}, {args.threads} threads, best of {args.repeats}; ms per forward+backward"
          + (f"; path {args.path} where it applies" if args.path else ""))
    total_ours = total_torch = 0.0
    for name, H, D, K, first in layers:
        x = rng.standard_normal((N, H, H, D), dtype=np.float32)
        W = (rng.standard_normal((K, 3, 3, D), dtype=np.float32) * 0.1)
        b = np.zeros(K, np.float32)
        dout = rng.standard_normal((N, H, H, K), dtype=np.float32)

        def ours(x=x, W=W, b=b, dout=dout, first=first):
            _, cache = conv2d_forward(x, W, b, (1, 1), (1, 1), (1, 1))
            conv2d_backward(dout, cache, need_dx=not first)

        xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_(not first)
        Wt = torch.from_numpy(W.transpose(0, 3, 1, 2).copy()).requires_grad_()
        bt = torch.from_numpy(b).requires_grad_()
        gt = torch.from_numpy(dout.transpose(0, 3, 1, 2).copy())

        def theirs(xt=xt, Wt=Wt, bt=bt, gt=gt):
            out = torch.nn.functional.conv2d(xt, Wt, bt, 1, 1)
            out.backward(gt)

        def fwd_only(x=x, W=W, b=b):
            conv2d_forward(x, W, b, (1, 1), (1, 1), (1, 1))

        def torch_fwd(xt=xt, Wt=Wt, bt=bt):
            with torch.no_grad():
                torch.nn.functional.conv2d(xt, Wt, bt, 1, 1)

        with force_path(None if args.path is None else ConvPath(args.path)):
            o, t = _best_ms([ours, theirs], args.repeats)
            of, tf = _best_ms([fwd_only, torch_fwd], args.repeats)
        total_ours += o
        total_torch += t
        print(f"{name:32s} ours {o:7.2f}  torch {t:7.2f}  (forward only: ours {of:6.2f}, "
              f"torch {tf:6.2f})")
    print(f"{'both layers':32s} ours {total_ours:7.2f}  torch {total_torch:7.2f}  "
          f"ratio ours/torch {total_ours / total_torch:.2f}")


if __name__ == "__main__":
    main()
