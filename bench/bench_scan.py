"""One-pass score map against the crop-by-crop loop.

    python bench/bench_scan.py [--reps 5] [--size 92] [--threads 2]

A classifier trained on 28x28 (the reference network, zero padding and all) is converted to its
fully convolutional form and run once over a larger image; the reference is the original
classifier on every 28x28 crop at the network's total stride (4), scored in batches. Both give
a map of (size - 28)/4 + 1 rows and cols. The one pass computes each CONV activation once, where
overlapping crops recompute them, so the speedup grows with the overlap: ~ (28/4)^2 for the
first layers. (With zero padding the two maps are not equal; see convnet.fcn.maps. The
no-padding network below is timed too, where they are equal, and the difference is printed.)
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

NETS = {
    "reference (P=1)": ("INPUT(28x28x1) -> CONV(32,F=3,P=1) -> RELU -> POOL -> CONV(64,F=3,P=1)"
                        " -> RELU -> POOL -> FC(128) -> RELU -> FC(10)"),
    "no padding": ("INPUT(28x28x1) -> CONV(32,F=5) -> RELU -> POOL -> CONV(64,F=5) -> RELU"
                   " -> POOL -> FC(128) -> RELU -> FC(10)"),
}


def median_time(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--size", type=int, default=92, help="image side (28 + 4k)")
    ap.add_argument("--threads", type=int, default=None,
                    help="BLAS threads (set before numpy loads; default: as configured)")
    args = ap.parse_args()
    if args.threads:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.threads)

    import convnet as cn
    from convnet.fcn import maps

    x = np.random.default_rng(0).random((1, args.size, args.size, 1), dtype=np.float32)
    print(f"image {args.size}x{args.size}, classifier input 28x28, median of {args.reps}")
    for name, spec in NETS.items():
        net = cn.build(spec, seed=0)
        fcn = net.to_fully_convolutional()
        rows, cols, _ = maps.map_shape(fcn, (args.size, args.size))
        one = median_time(lambda fcn=fcn: maps.score_map(fcn, x), args.reps)
        loop = median_time(lambda net=net: maps.crop_scores(net, x, batch_size=128), args.reps)
        diff = np.abs(maps.score_map(fcn, x) - maps.crop_scores(net, x)).max()
        print(f"{name:>16}: {rows}x{cols} map = {rows * cols} crops | one pass {one * 1e3:8.1f} ms"
              f" | crop by crop {loop * 1e3:8.1f} ms | speedup {loop / one:5.1f}x"
              f" | max |difference| {diff:.2e}")


if __name__ == "__main__":
    main()
