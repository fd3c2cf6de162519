"""The performance benchmark: convnet against PyTorch CPU, side by side, in one run.

    python bench/run.py           # everything; writes bench/results/RESULTS.md (10-20 min, 2 cores)
    python bench/run.py --quick   # a fast look (~3 min): fewer repetitions, smaller layer batches
    python bench/run.py --only networks,layers,floors,memory --threads 2 --out FILE.md

What it measures (the performance issue's list):

- **Floors**: the machine's float32 GEMM rate through NumPy's BLAS (the arithmetic ceiling every
  CONV and FC layer is held to) and its memory bandwidth (a large ``np.copyto``: bytes read +
  written per second, the ceiling of pooling, activations and the im2col gather).
- **Networks**: the reference network (zoo ``fashion``), ``cifar10``, ``seed004``, the
  encoder-decoder of the segmentation issue, ResNet-20 (zoo ``resnet-cifar``) and a small
  MobileNet-v2-style network (:data:`MOBILENET_SMALL`), at batch 1, 32 and 128: one training step
  (forward + loss + backward + SGD with momentum 0.9) and one inference pass, images/s; inference
  at batch 1 and 128 also on onnxruntime, running the graph ``convnet.export_onnx`` writes.
- **Layers**: 3x3 CONV on 56x56x64, 1x1 CONV, 3x3 stride-2 CONV, 5x5 CONV, DECONV S=2, MaxPool
  2x2 and 3x3/S2, FC 4096x4096: forward, and forward + backward (input gradient included, as
  PyTorch computes it for an input that requires grad), depthwise 3x3 CONV, BN (training) and
  RELU6; each CONV/DECONV/FC's GFLOP/s and its share of the GEMM rate measured in this run, and
  every row's share of the memory bandwidth.
- **Memory**: peak memory of a training step at batch 128, one fresh subprocess per system and
  network (see :func:`memory_child` for the method).

Fairness: both systems get the same thread count (BLAS/OpenMP environment variables set before
either library loads, ``torch.set_num_threads``), the same weights (``bench/torch_twin.py``),
their natural layouts (NHWC for convnet, NCHW for PyTorch, converted once outside the timing), and
repetitions interleaved ours/theirs, alternating which goes first, with medians reported: the
machine is shared, so a burst of load hits both. The load average before and after is recorded;
distrust a table taken under load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# Encoder-decoder used when the segmentation module is not available: CONV/POOL down, DECONV up.
ENCODER_DECODER_FALLBACK = (
    "INPUT(56x56x1) -> CONV(16,F=3,P=1) -> RELU -> POOL -> CONV(32,F=3,P=1) -> RELU -> POOL "
    "-> DECONV(16,F=2,S=2) -> RELU -> DECONV(11,F=2,S=2)"
)

#: A small MobileNet-v2-style network for 32x32 images (the graph issue's depthwise blocks at the
#: size of the other benchmark networks): a 3x3 CONV, then inverted residual blocks (1x1 expand
#: t = 6, 3x3 depthwise, 1x1 project, BN after each, RELU6 after the first two; RES where size
#: and depth are kept), a 1x1 CONV to 256, GAP and FC(10).
MOBILENET_SMALL = (
    "INPUT(32x32x3) -> CONV(16,F=3,P=1,bias=false) -> BN -> RELU6 "
    "-> CONV(96,F=1,bias=false) -> BN -> RELU6 -> DWCONV(F=3,S=2,P=1,bias=false,floor=true) "
    "-> BN -> RELU6 -> CONV(24,F=1,bias=false) -> BN "
    "-> RES[CONV(144,F=1,bias=false) -> BN -> RELU6 -> DWCONV(F=3,P=1,bias=false) -> BN -> RELU6 "
    "-> CONV(24,F=1,bias=false) -> BN] "
    "-> CONV(144,F=1,bias=false) -> BN -> RELU6 -> DWCONV(F=3,S=2,P=1,bias=false,floor=true) "
    "-> BN -> RELU6 -> CONV(32,F=1,bias=false) -> BN "
    "-> RES[CONV(192,F=1,bias=false) -> BN -> RELU6 -> DWCONV(F=3,P=1,bias=false) -> BN -> RELU6 "
    "-> CONV(32,F=1,bias=false) -> BN] "
    "-> CONV(256,F=1,bias=false) -> BN -> RELU6 -> GAP -> FC(10)"
)

#: batches at which inference is also timed on onnxruntime (the exported ONNX graph)
ORT_BATCHES = (1, 128)


# ------------------------------------------------------------------------------------ set-up
def set_threads(n: int) -> None:
    """Thread count for every BLAS/OpenMP runtime; must run before numpy or torch is imported."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)


#: glibc mallopt parameters (M_TRIM_THRESHOLD, M_MMAP_THRESHOLD) for ``--malloc keep``
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory() -> bool:
    """Tell glibc to keep freed memory in the process (no trimming, no per-array mmap): every
    large array of either system then reuses pages that are already mapped. Without it both
    systems' fresh arrays page-fault on first touch, and that cost depends on the machine's
    memory state and on the other system in the same process: PyTorch's inference of the
    reference network at batch 128 took 8,600 page faults and 29 ms of system time per call
    here (53 ms in all; 32 ms with this setting), and ran at 13 ms when convnet's frees, earlier
    in the same process, had raised glibc's mmap threshold. PyTorch's CPU tuning guide
    recommends jemalloc or tcmalloc for this reason; this is the same effect with glibc.
    convnet reuses its own large arrays (``ops/_arena.py``) either way. Returns whether it was
    applied (glibc only)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30)
                    and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 31))
    except (OSError, AttributeError):
        return False


def network_specs() -> dict[str, str]:
    """Name -> spec text of the benchmarked networks: the four chains, ResNet-20 (zoo
    ``resnet-cifar``) and a small MobileNet-v2-style network (:data:`MOBILENET_SMALL`)."""
    from convnet.spec import zoo

    if "segnet" in zoo.ZOO:                               # the segmentation issue's network
        encdec = zoo.get("segnet")
    else:
        encdec = ENCODER_DECODER_FALLBACK
    return {"reference": zoo.get("fashion"), "cifar10": zoo.get("cifar10"),
            "seed004": zoo.get("seed004"), "encoder-decoder": encdec,
            "resnet-20": zoo.get("resnet-cifar"), "mobilenet-small": MOBILENET_SMALL}


def machine() -> dict[str, str]:
    import numpy as np
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    blas = "?"
    try:
        from threadpoolctl import threadpool_info

        blas = ", ".join(f"{i['internal_api']} {i.get('version')} ({i['num_threads']} threads)"
                         for i in threadpool_info())
    except Exception:
        pass
    return {
        "cpu": f"{cpu}, {os.cpu_count()} logical cores",
        "python": platform.python_version(),
        "numpy": np.__version__, "torch": torch.__version__, "blas": blas,
        "os": platform.platform(),
    }


def load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


# ----------------------------------------------------------------------------------- timing
#: the clock of every measurement; ``--clock cpu`` switches to process CPU time, which a busy
#: machine inflates less (useful with ``--threads 1`` when comparing changes; wall time is what
#: the tables report by default)
CLOCK = time.perf_counter
def _calibrate(fn, min_time: float) -> int:
    """Calls per measurement so that one measurement lasts at least ``min_time`` seconds."""
    t0 = CLOCK()
    fn()
    dt = CLOCK() - t0
    return max(1, int(min_time / max(dt, 1e-6)) + (dt < min_time))


#: Seconds each timed measurement lasts at least (calls are batched to reach it): with 9
#: repetitions of >= 0.2 s each, a few slow phases of the shared machine move the medians
#: less than the 7 x 0.05 s used before did (ratios of one configuration moved by up to 1.6x
#: between runs).
MIN_TIME = 0.2


def time_pair(fa, fb, reps: int, min_time: float) -> tuple[float, float]:
    """Median seconds per call of ``fa`` and ``fb``, measured interleaved.

    Each repetition times both, alternating which goes first, so slow phases of a shared machine
    hit both alike. Calls are batched so one measurement lasts at least ``min_time``.
    """
    fa(), fb()                                            # warm-up: pages, BLAS/OpenMP pools
    na, nb = _calibrate(fa, min_time), _calibrate(fb, min_time)
    ta: list[float] = []
    tb: list[float] = []
    for r in range(reps):
        order = ((fa, na, ta), (fb, nb, tb)) if r % 2 == 0 else ((fb, nb, tb), (fa, na, ta))
        for fn, n, acc in order:
            t0 = CLOCK()
            for _ in range(n):
                fn()
            acc.append((CLOCK() - t0) / n)
    return statistics.median(ta), statistics.median(tb)


# ------------------------------------------------------------------------------------ floors
def floors(quick: bool) -> dict[str, float]:
    """GEMM GFLOP/s (NumPy float32) and memory bandwidth GB/s (read + write of a large copy),
    on the run's clock (:data:`CLOCK`), so the layers' shares of them compare like with like."""
    import numpy as np

    rng = np.random.default_rng(0)
    n = 1024 if quick else 2048
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    ts = []
    a @ b
    for _ in range(5 if quick else 9):
        t0 = CLOCK()
        a @ b
        ts.append(CLOCK() - t0)
    gemm = 2 * n**3 / min(ts) / 1e9                      # the best run: a ceiling, not typical
    gemm_med = 2 * n**3 / statistics.median(ts) / 1e9
    src = np.ones(64 * 2**20 // 4, dtype=np.float32)     # 64 MiB: far beyond the caches
    dst = np.empty_like(src)
    ts = []
    for _ in range(7):
        t0 = CLOCK()
        np.copyto(dst, src)
        ts.append(CLOCK() - t0)
    bw = 2 * src.nbytes / min(ts) / 1e9
    return {"gemm_size": n, "gemm_gflops": gemm, "gemm_gflops_median": gemm_med,
            "bandwidth_gbs": bw}


# ---------------------------------------------------------------------------------- networks
def _labels(net, batch: int, rng) -> Any:
    out = net.output_shape
    classes = out[-1]
    return rng.integers(0, classes, (batch, *out[:-1]))


def ort_session(net: Any, threads: int, tmp: Path) -> Any:
    """An onnxruntime session (``threads`` intra-op threads, sequential) on ``net`` exported by
    :func:`convnet.export_onnx` (NCHW input, as PyTorch's)."""
    import onnxruntime as ort

    import convnet as cn

    path = cn.export_onnx(net, tmp / "net.onnx")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def bench_networks(quick: bool, reps: int, batches: list[int], threads: int,
                   names: list[str], use_ort: bool = True) -> list[dict]:
    import numpy as np
    import torch
    import torch.nn.functional as TF

    import convnet as cn
    from torch_twin import nchw, to_torch

    torch.set_num_threads(threads)
    rows = []
    specs = network_specs()
    for name in names:
        spec = specs[name]
        for batch in batches:
            rng = np.random.default_rng(0)
            net = cn.build(spec, seed=0)
            model = to_torch(net)
            x = rng.random((batch, *net.input_shape), dtype=np.float32)
            y = _labels(net, batch, rng)
            xt, yt = nchw(x), torch.from_numpy(y)
            # the twin must compute the same scores, or the comparison means nothing
            model.eval()                                  # BN: running statistics, as ours
            with torch.no_grad():
                ref = model(xt).numpy()
            ours = net.forward(x)
            if ours.ndim == 4:
                ref = ref.transpose(0, 2, 3, 1)
            err = float(np.max(np.abs(ours - ref)) / (np.max(np.abs(ref)) + 1e-12))
            opt = cn.SGD(lr=0.01, momentum=0.9)
            topt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

            def ours_train():
                _, d = cn.softmax_cross_entropy(net.forward(x, train=True), y)
                net.backward(d, need_dx=False)
                opt.step(net)

            def torch_train():
                model.train()
                topt.zero_grad()
                TF.cross_entropy(model(xt), yt).backward()
                topt.step()

            def ours_infer():
                net.forward(x)

            def torch_infer():
                model.eval()
                with torch.inference_mode():
                    model(xt)

            min_time = 0.02 if quick else MIN_TIME
            for step, fa, fb in (("train", ours_train, torch_train),
                                 ("infer", ours_infer, torch_infer)):
                ta, tb = time_pair(fa, fb, reps, min_time)
                row = {"network": name, "step": step, "batch": batch,
                       "ours": batch / ta, "torch": batch / tb, "ratio": tb / ta,
                       "twin_err": err}
                extra = ""
                if step == "infer" and use_ort and batch in ORT_BATCHES:
                    import tempfile

                    with tempfile.TemporaryDirectory() as tmp:
                        sess = ort_session(net, threads, Path(tmp))
                    iname = sess.get_inputs()[0].name
                    xn = xt.numpy()
                    ro = sess.run(None, {iname: xn})[0]
                    if ro.ndim == 4:
                        ro = ro.transpose(0, 2, 3, 1)
                    # against the network as exported: the training steps above changed it
                    now = net.forward(x)
                    row["ort_err"] = float(np.max(np.abs(now - ro)) /
                                           (np.max(np.abs(ro)) + 1e-12))

                    def ort_infer():
                        sess.run(None, {iname: xn})

                    ta2, tc = time_pair(ours_infer, ort_infer, reps, min_time)
                    row.update(ort=batch / tc, ort_ratio=tc / ta2)
                    extra = f"  onnxruntime {batch / tc:9.0f} img/s  {tc / ta2:5.2f}x"
                rows.append(row)
                print(f"  {name:16s} {step} batch {batch:4d}: convnet {batch / ta:9.0f} img/s  "
                      f"torch {batch / tb:9.0f} img/s  {tb / ta:5.2f}x{extra}", flush=True)
    return rows


# ------------------------------------------------------------------------------------ layers
def layer_cases(quick: bool) -> list[tuple[str, Any, tuple[int, ...], int]]:
    """(label, layer factory, input shape, batch) of the single-layer benchmarks."""
    import convnet as cn

    nb = 4 if quick else 16
    return [
        ("CONV 3x3, 56x56x64 -> 64", lambda: cn.Conv(64, 3, P=1), (56, 56, 64), nb),
        ("CONV 1x1, 56x56x64 -> 128", lambda: cn.Conv(128, 1), (56, 56, 64), nb),
        ("CONV 3x3 S=2, 56x56x64 -> 128", lambda: cn.Conv(128, 3, S=2, P=1, floor=True),
         (56, 56, 64), nb),
        ("CONV 5x5, 28x28x64 -> 64", lambda: cn.Conv(64, 5, P=2), (28, 28, 64), nb),
        ("DECONV 2x2 S=2, 28x28x64 -> 56x56x32", lambda: cn.ConvTranspose(32, 2, S=2),
         (28, 28, 64), nb),
        ("DECONV 4x4 S=2 P=1, 28x28x64 -> 56x56x32",
         lambda: cn.ConvTranspose(32, 4, S=2, P=1), (28, 28, 64), nb),
        ("MaxPool 2x2, 56x56x64", lambda: cn.MaxPool(2), (56, 56, 64), nb),
        ("MaxPool 3x3/S2 P=1, 56x56x64", lambda: cn.MaxPool(3, 2, P=1, floor=True),
         (56, 56, 64), nb),
        ("FC 4096 -> 4096", lambda: cn.FC(4096), (4096,), 32 if quick else 128),
        ("DWCONV 3x3, 56x56x96", lambda: cn.DepthwiseConv(3, P=1, bias=False), (56, 56, 96), nb),
        ("BN (train), 56x56x64", lambda: cn.BatchNorm(), (56, 56, 64), nb),
        ("RELU6, 56x56x96", lambda: cn.ReLU6(), (56, 56, 96), nb),
    ]


def bench_layers(quick: bool, reps: int, threads: int, gemm_gflops: float,
                 bandwidth_gbs: float) -> list[dict]:
    import numpy as np
    import torch

    import convnet as cn
    from convnet import arith
    from torch_twin import to_torch

    torch.set_num_threads(threads)
    rows = []
    for label, make, shape, batch in layer_cases(quick):
        rng = np.random.default_rng(0)
        net = cn.Sequential([make()], input_shape=shape, seed=0)
        layer = net.layers[0]
        model = to_torch(net)
        x = rng.standard_normal((batch, *shape), dtype=np.float32)
        dout = rng.standard_normal((batch, *layer.output_shape), dtype=np.float32)
        if len(shape) == 3:
            xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
            dt = torch.from_numpy(np.ascontiguousarray(dout.transpose(0, 3, 1, 2)))
        else:
            xt, dt = torch.from_numpy(x), torch.from_numpy(dout)
        xt.requires_grad_(True)

        def ours_fwd():
            layer.forward(x, train=True)

        def ours_fb():
            layer.forward(x, train=True)
            layer.backward(dout)

        def torch_fwd():
            model(xt)

        def torch_fb():
            xt.grad = None
            model.zero_grad(set_to_none=True)
            model(xt).backward(dt)

        min_time = 0.02 if quick else MIN_TIME
        f_a, f_b = time_pair(ours_fwd, torch_fwd, reps, min_time)
        fb_a, fb_b = time_pair(ours_fb, torch_fb, reps, min_time)
        flops = 2 * arith.layer_macs(layer) * batch                 # forward FLOPs
        row = {"layer": label, "batch": batch, "fwd_ours_ms": 1e3 * f_a, "fwd_torch_ms": 1e3 * f_b,
               "fb_ours_ms": 1e3 * fb_a, "fb_torch_ms": 1e3 * fb_b, "flops": flops}
        if flops:
            # backward = input gradient + weight gradient: two more GEMMs of the forward's size
            row.update(fwd_gflops=flops / f_a / 1e9, fb_gflops=3 * flops / fb_a / 1e9,
                       torch_fwd_gflops=flops / f_b / 1e9, torch_fb_gflops=3 * flops / fb_b / 1e9)
            row["fwd_pct_gemm"] = 100 * row["fwd_gflops"] / gemm_gflops
        # the forward's compulsory traffic: read the input, write the output, once each
        nbytes = x.itemsize * batch * (int(np.prod(shape)) + int(np.prod(layer.output_shape)))
        row["fwd_pct_bw"] = 100 * nbytes / f_a / 1e9 / bandwidth_gbs
        rows.append(row)
        print(f"  {label:42s} fwd {1e3 * f_a:7.2f} / {1e3 * f_b:7.2f} ms  "
              f"fwd+bwd {1e3 * fb_a:7.2f} / {1e3 * fb_b:7.2f} ms (convnet / torch)", flush=True)
    return rows


# ------------------------------------------------------------------------------------ memory
def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(system: str, name: str, batch: int, threads: int) -> None:
    """Peak memory of training steps, measured inside this fresh process; prints JSON.

    Method (the same for both systems): import the library, build the network and optimiser,
    make the batch, and run one training step at batch 1 so that lazily initialised library
    state (thread pools, kernels, allocator arenas) exists before the measurement, as it does
    in any real run. Then reset the kernel's peak-RSS counter (``/proc/self/clear_refs``),
    note the resident set, run 3 training steps at the benchmark batch, and report the peak
    resident set minus that baseline: every byte the steps touched, whoever allocated it
    (NumPy, BLAS or PyTorch's allocator). For convnet, ``tracemalloc`` (which sees NumPy's
    array allocations) gives the peak of live arrays as a cross-check.
    """
    import numpy as np

    rng = np.random.default_rng(0)
    import convnet as cn

    net = cn.build(network_specs()[name], seed=0)
    xs = {b: rng.random((b, *net.input_shape), dtype=np.float32) for b in (1, batch)}
    ys = {b: _labels(net, b, rng) for b in (1, batch)}
    if system == "torch":
        import torch
        import torch.nn.functional as TF

        from torch_twin import nchw, to_torch

        torch.set_num_threads(threads)
        model = to_torch(net)
        del net
        topt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        data = {b: (nchw(xs[b]), torch.from_numpy(ys[b])) for b in xs}
        del xs

        def step(b: int) -> None:
            xt, yt = data[b]
            topt.zero_grad()
            TF.cross_entropy(model(xt), yt).backward()
            topt.step()
    else:
        opt = cn.SGD(lr=0.01, momentum=0.9)

        def step(b: int) -> None:
            _, d = cn.softmax_cross_entropy(net.forward(xs[b], train=True), ys[b])
            net.backward(d, need_dx=False)
            opt.step(net)

    step(1)
    Path("/proc/self/clear_refs").write_text("5")         # reset VmHWM to the current RSS
    base = _status_kb("VmRSS")
    for _ in range(3):
        step(batch)
    result = {"rss_peak_delta_mb": (_status_kb("VmHWM") - base) / 1024}
    if system == "convnet":
        import tracemalloc

        tracemalloc.start()
        step(batch)
        tracemalloc.reset_peak()
        cur0 = tracemalloc.get_traced_memory()[0]
        step(batch)
        result["tracemalloc_peak_mb"] = (tracemalloc.get_traced_memory()[1] - cur0) / 2**20
    print(json.dumps(result))


def bench_memory(names: list[str], batch: int, threads: int) -> list[dict]:
    rows = []
    for name in names:
        row: dict[str, Any] = {"network": name, "batch": batch}
        for system in ("convnet", "torch"):
            out = subprocess.run(
                [sys.executable, __file__, "--memory-child", system, name, str(batch),
                 "--threads", str(threads)],
                capture_output=True, text=True, check=True, env=os.environ.copy(),
            )
            row[system] = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"  {name:16s} batch {batch}: convnet {row['convnet']['rss_peak_delta_mb']:.1f} MB"
              f" (tracemalloc {row['convnet']['tracemalloc_peak_mb']:.1f} MB), "
              f"torch {row['torch']['rss_peak_delta_mb']:.1f} MB", flush=True)
    return rows


# ----------------------------------------------------------------------------------- report
def markdown(info: dict, fl: dict | None, nets: list[dict], layers: list[dict],
             mem: list[dict]) -> str:
    out = ["# convnet vs PyTorch CPU: benchmark results", ""]
    out.append(f"Command: `{info['command']}`  ")
    out.append(f"Date: {info['date']}; threads: {info['threads']} for both systems; "
               f"median of {info['reps']} interleaved repetitions; "
               f"{'wall-clock' if info['clock'] == 'wall' else 'process CPU'} time; "
               f"allocator: {info.get('malloc', 'glibc defaults')} (`--malloc`).  ")
    m = info["machine"]
    out.append(f"Machine: {m['cpu']}; {m['os']}; Python {m['python']}, NumPy {m['numpy']} "
               f"({m['blas']}), PyTorch {m['torch']}.  ")
    out.append(f"Load average (1, 5, 15 min) before: {info['load_before']}; after: "
               f"{info['load_after']} (the machine is shared: above ~{os.cpu_count()} the "
               "numbers are noisy).")
    out.append("")
    if fl:
        out += ["## Floors", "",
                f"- NumPy float32 GEMM ({fl['gemm_size']}^3): best {fl['gemm_gflops']:.0f} GFLOP/s "
                f"(median {fl['gemm_gflops_median']:.0f}): the arithmetic ceiling of CONV/FC.",
                f"- Memory bandwidth (64 MiB copy, read + write): {fl['bandwidth_gbs']:.1f} GB/s: "
                "the ceiling of pooling, activations and the im2col gather.", ""]
    if nets:
        out += ["## Networks", "",
                "Training step = forward + loss + backward + SGD (momentum 0.9); inference = "
                "forward. Images/s, higher is better; ratio = convnet / PyTorch.", "",
                "onnxruntime runs the graph that `convnet.export_onnx` writes for the same "
                "network (NCHW input, all graph optimisations, the same thread count, "
                "sequential execution); its ratio = convnet / onnxruntime, timed interleaved "
                "with a second convnet measurement.", "",
                "| network | step | batch | convnet img/s | PyTorch img/s | ratio | "
                "onnxruntime img/s | vs onnxruntime |",
                "|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in nets:
            o = (f"{r['ort']:,.0f} | **{r['ort_ratio']:.2f}x**" if "ort" in r else "- | -")
            out.append(f"| {r['network']} | {r['step']} | {r['batch']} | {r['ours']:,.0f} | "
                       f"{r['torch']:,.0f} | **{r['ratio']:.2f}x** | {o} |")
        worst = max(r["twin_err"] for r in nets)
        ow = [r["ort_err"] for r in nets if "ort_err" in r]
        out += ["", f"(The PyTorch twins compute the same scores: largest relative difference "
                f"{worst:.1e}" + (f"; onnxruntime {max(ow):.1e}" if ow else "") + ".)", ""]
    if layers:
        out += ["## Single layers", "",
                "Milliseconds per call (median), forward and forward + backward (input and weight "
                "gradients). GFLOP/s count 2 x MACs for the forward and 3x that for forward + "
                "backward; % GEMM is the forward rate over the NumPy GEMM rate above; % BW is "
                "the forward's compulsory traffic (input read + output written once) per second "
                "over the copy bandwidth above (the floor of the rows without a GEMM).", "",
                "| layer | batch | fwd convnet | fwd PyTorch | fwd ratio | fwd+bwd convnet | "
                "fwd+bwd PyTorch | fwd+bwd ratio | convnet GFLOP/s fwd / fwd+bwd | "
                "PyTorch GFLOP/s fwd / fwd+bwd | % GEMM | % BW |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in layers:
            g = (f"{r['fwd_gflops']:.0f} / {r['fb_gflops']:.0f}" if r["flops"] else "-")
            gt = (f"{r['torch_fwd_gflops']:.0f} / {r['torch_fb_gflops']:.0f}" if r["flops"]
                  else "-")
            pct = f"{r['fwd_pct_gemm']:.0f}%" if r["flops"] else "-"
            out.append(
                f"| {r['layer']} | {r['batch']} | {r['fwd_ours_ms']:.2f} | "
                f"{r['fwd_torch_ms']:.2f} | {r['fwd_torch_ms'] / r['fwd_ours_ms']:.2f}x | "
                f"{r['fb_ours_ms']:.2f} | {r['fb_torch_ms']:.2f} | "
                f"{r['fb_torch_ms'] / r['fb_ours_ms']:.2f}x | {g} | {gt} | {pct} | "
                f"{r['fwd_pct_bw']:.0f}% |")
        out.append("")
    if mem:
        out += ["## Peak training memory", "",
                "One fresh process per system and network; peak resident set during 3 training "
                "steps minus the resident set just before them (after a batch-1 warm-up step, "
                "with the kernel's peak counter reset), so library code and start-up allocations "
                "are excluded for both. tracemalloc (NumPy arrays only) is shown for convnet as "
                "a cross-check.", "",
                "| network | batch | convnet RSS peak (MB) | convnet tracemalloc peak (MB) | "
                "PyTorch RSS peak (MB) | convnet / PyTorch |",
                "|---|---:|---:|---:|---:|---:|"]
        for r in mem:
            a, b = r["convnet"]["rss_peak_delta_mb"], r["torch"]["rss_peak_delta_mb"]
            out.append(f"| {r['network']} | {r['batch']} | {a:.1f} | "
                       f"{r['convnet']['tracemalloc_peak_mb']:.1f} | {b:.1f} | "
                       f"{a / b:.2f} |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, smaller batches")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 9, quick 3)")
    ap.add_argument("--only", default="floors,networks,layers,memory")
    ap.add_argument("--networks", default=None, help="comma list (default all six)")
    ap.add_argument("--no-ort", action="store_true", help="skip the onnxruntime column")
    ap.add_argument("--batches", default="1,32,128")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall-clock time (default) or process CPU time")
    ap.add_argument("--malloc", choices=("keep", "system"), default="keep",
                    help="keep: glibc keeps freed memory for both systems (default, see "
                         "keep_freed_memory); system: glibc's defaults")
    ap.add_argument("--out", default=str(HERE / "results" / "RESULTS.md"))
    ap.add_argument("--memory-child", nargs=3, metavar=("SYSTEM", "NETWORK", "BATCH"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    set_threads(args.threads)
    sys.path.insert(0, str(HERE))
    if args.memory_child:
        system, name, batch = args.memory_child
        memory_child(system, name, int(batch), args.threads)
        return

    kept = args.malloc == "keep" and keep_freed_memory()   # timings only: not the memory runs
    global CLOCK
    if args.clock == "cpu":
        CLOCK = time.process_time
    reps = args.reps or (3 if args.quick else 9)
    parts = set(args.only.split(","))
    info = {"command": " ".join(["python bench/run.py", *sys.argv[1:]]),
            "date": time.strftime("%Y-%m-%d %H:%M"), "threads": args.threads, "reps": reps,
            "clock": args.clock, "malloc": "glibc keeps freed memory" if kept else
            "glibc defaults",
            "machine": machine(), "load_before": load()}
    print(f"# {info['machine']['cpu']}, threads={args.threads}, load {info['load_before']}")
    fl = None
    if "floors" in parts or "layers" in parts:
        print("floors", flush=True)
        fl = floors(args.quick)
        print(f"  GEMM {fl['gemm_gflops']:.0f} GFLOP/s, bandwidth {fl['bandwidth_gbs']:.1f} GB/s")
    nets_all = network_specs()
    names = args.networks.split(",") if args.networks else list(nets_all)
    nets: list[dict] = []
    if "networks" in parts:
        print("networks", flush=True)
        nets = bench_networks(args.quick, reps, [int(b) for b in args.batches.split(",")],
                              args.threads, names, use_ort=not args.no_ort)
    layers: list[dict] = []
    if "layers" in parts:
        print("layers", flush=True)
        layers = bench_layers(args.quick, reps, args.threads, fl["gemm_gflops"],
                              fl["bandwidth_gbs"])
    mem: list[dict] = []
    if "memory" in parts:
        print("memory", flush=True)
        mem = bench_memory(["reference", "cifar10"] if args.quick else names, 128, args.threads)
    info["load_after"] = load()
    text = markdown(info, fl, nets, layers, mem)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(f"\nwrote {out} (load after: {info['load_after']})")


if __name__ == "__main__":
    main()
