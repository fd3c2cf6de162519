"""Bigger data: pack a folder of PNG photos, train from the shards and from memory, predict.

On a generated folder of ``--images`` PNG images (default 50,000, 96x96x3, ten classes of shapes
on textured backgrounds, in class folders), measures:

1. ``convnet pack`` (decoding by ``--workers`` processes): wall time, images/s, bytes;
2. training the same network with the same seed for ``--steps`` steps from the shards (out of
   core, prefetch 2) and from the same images held in memory as float32, each in a fresh
   process: images/s, start-up (opening or loading, the normaliser), peak resident memory
   (VmHWM), and whether the weights after those steps are bit for bit the same;
3. ``convnet predict`` over the whole folder to CSV: one process, then a Dask LocalCluster of 1
   and 2 workers: images/s (and the cluster's start-up).

Writes ``bench/results/data.md``. The folder and the pack are kept in ``--work`` and reused
when they are already complete (``--fresh`` makes them again).

    nice python bench/bench_data.py                        # the issue's 50,000 images
    python bench/bench_data.py --images 4000 --steps 40    # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ARCH = ("INPUT(96x96x3) -> CONV(16,F=4,S=2,P=1) -> RELU -> POOL -> CONV(32,F=3,P=1) -> RELU "
        "-> POOL -> FC(10)")
CLASSES = ["disk", "square", "triangle", "ring", "bar", "cross", "diamond", "dots", "stripes",
           "frame"]


# ------------------------------------------------------------------------------ the folder
def _draw(args: tuple[str, int, int, int]) -> int:
    """Worker: write images ``start..stop`` of class ``c`` into ``folder`` (PNG)."""
    from PIL import Image, ImageDraw

    folder, c, start, stop = args
    out = Path(folder) / CLASSES[c]
    out.mkdir(parents=True, exist_ok=True)
    for i in range(start, stop):
        rng = np.random.default_rng(1000 * c + i)
        base = rng.integers(40, 200, 3)
        ramp = np.linspace(-30, 30, 96)[:, None, None] * rng.choice([-1, 1])
        noise = rng.normal(0, 6, (96, 96, 3))
        img = Image.fromarray(np.clip(base + ramp + noise, 0, 255).astype(np.uint8))
        d = ImageDraw.Draw(img)
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        x, y, r = (int(v) for v in (rng.integers(25, 71), rng.integers(25, 71),
                                    rng.integers(12, 24)))
        box = (x - r, y - r, x + r, y + r)
        shape = CLASSES[c]
        if shape == "disk":
            d.ellipse(box, fill=colour)
        elif shape == "square":
            d.rectangle(box, fill=colour)
        elif shape == "triangle":
            d.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=colour)
        elif shape == "ring":
            d.ellipse(box, outline=colour, width=5)
        elif shape == "bar":
            d.rectangle((x - r, y - 4, x + r, y + 4), fill=colour)
        elif shape == "cross":
            d.rectangle((x - r, y - 3, x + r, y + 3), fill=colour)
            d.rectangle((x - 3, y - r, x + 3, y + r), fill=colour)
        elif shape == "diamond":
            d.polygon([(x, y - r), (x - r, y), (x, y + r), (x + r, y)], fill=colour)
        elif shape == "dots":
            for dx in (-r, 0, r):
                d.ellipse((x + dx - 4, y - 4, x + dx + 4, y + 4), fill=colour)
        elif shape == "stripes":
            for dy in range(-r, r + 1, 8):
                d.line((x - r, y + dy, x + r, y + dy), fill=colour, width=3)
        else:
            d.rectangle(box, outline=colour, width=4)
        img.save(out / f"{i:05d}.png", compress_level=1)
    return stop - start


def make_folder(folder: Path, n: int, workers: int) -> float:
    """The generated folder (kept when complete); returns the seconds spent making it."""
    per = n // len(CLASSES)
    if folder.is_dir() and sum(1 for _ in folder.rglob("*.png")) == per * len(CLASSES):
        return 0.0
    shutil.rmtree(folder, ignore_errors=True)
    from concurrent.futures import ProcessPoolExecutor

    t0 = time.perf_counter()
    jobs = [(str(folder), c, s, min(s + 500, per)) for c in range(len(CLASSES))
            for s in range(0, per, 500)]
    with ProcessPoolExecutor(workers) as pool:
        done = 0
        for k in pool.map(_draw, jobs):
            done += k
            print(f"\r  generating {done:,}/{per * len(CLASSES):,} PNG images", end="",
                  file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return time.perf_counter() - t0


# ------------------------------------------------------------------------------- training
_TRAIN = textwrap.dedent("""
    import hashlib, json, sys, time
    import numpy as np
    import convnet as cn
    from convnet.data import Normalizer, load_dataset
    from convnet.train import Callback, Trainer

    packed, where, steps, batch, model = sys.argv[1], sys.argv[2], int(sys.argv[3]), \\
        int(sys.argv[4]), sys.argv[5]

    def hwm():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM"):
                return int(line.split()[1]) * 1024

    t0 = time.perf_counter()
    train, _ = load_dataset(packed)
    if where == "memory":
        train = train.to_memory(max_bytes=float("inf"))
    t_open = time.perf_counter() - t0
    norm = Normalizer.fit(train)
    t_norm = time.perf_counter() - t0 - t_open

    class Stop(Callback):
        def on_batch_end(self, batch_index, logs):
            if self.trainer.step == 5:
                self.t5 = time.perf_counter()
            if self.trainer.step == steps:
                self.rate = (steps - 5) * batch / (time.perf_counter() - self.t5)
                self.trainer.request_stop()

    net = cn.build(sys.argv[6], seed=0)
    stop = Stop()
    trainer = Trainer(net, train, epochs=10**6, batch_size=batch, optimizer="adam", lr=1e-3,
                      seed=0, normalizer=norm, callbacks=[stop], classes=train.classes)
    trainer.run()
    digest = hashlib.sha256(b"".join(v.tobytes() for v in net.state_dict().values()))
    if model != "-":
        trainer.save(model)
    print(json.dumps({"open_s": t_open, "normalizer_s": t_norm, "images_per_s": stop.rate,
                      "peak_rss": hwm(), "weights_sha256": digest.hexdigest()}))
""")


def train_run(packed: Path, where: str, steps: int, batch: int, model: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _TRAIN, str(packed), where, str(steps),
                          str(batch), model, ARCH], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"training from {where} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -------------------------------------------------------------------------------- predict
def predict_run(model: Path, folder: Path, out: Path, extra: list[str]) -> dict:
    out.unlink(missing_ok=True)
    cmd = ["convnet", "predict", str(model), str(folder), "--out", str(out), *extra]
    t0 = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if run.returncode not in (0, 1):
        raise SystemExit(f"{shlex.join(cmd)} failed:\n{run.stderr}")
    said = re.search(r"predicted ([\d,]+) images into .* in ([\d.]+) s", run.stderr)
    started = re.search(r"ready in ([\d.]+) s", run.stderr)
    n, seconds = int(said.group(1).replace(",", "")), float(said.group(2))
    return {"command": shlex.join(["convnet", "predict", "MODEL", "FOLDER", "--out",
                                   out.name, *extra]),
            "images": n, "seconds": seconds, "images_per_s": n / seconds, "wall_s": wall,
            "cluster_s": float(started.group(1)) if started else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=50_000)
    p.add_argument("--work", type=Path, default=Path("/tmp/convnet-bench-data"))
    p.add_argument("--workers", type=int, default=2, help="processes generating and packing")
    p.add_argument("--steps", type=int, default=150, help="training steps timed per run")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--fresh", action="store_true", help="generate and pack again")
    p.add_argument("--out", type=Path, default=HERE / "results" / "data.md")
    args = p.parse_args(argv)
    command = "python bench/bench_data.py " + " ".join(map(shlex.quote, argv if argv is not None
                                                                     else sys.argv[1:]))
    folder, packed = args.work / "photos", args.work / "packed"
    if args.fresh:
        shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True, exist_ok=True)
    load = [os.getloadavg()[0]]

    gen_s = make_folder(folder, args.images, args.workers)
    n = sum(1 for _ in folder.rglob("*.png"))
    folder_mb = sum(f.stat().st_size for f in folder.rglob("*.png")) / 1e6
    print(f"folder: {n:,} PNG images, {folder_mb:,.0f} MB"
          + (f" (generated in {gen_s:.0f} s)" if gen_s else " (kept)"), flush=True)

    if args.fresh or not (packed / "manifest.json").exists():
        shutil.rmtree(packed, ignore_errors=True)
    t0 = time.perf_counter()
    run = subprocess.run(["convnet", "pack", str(folder), "-o", str(packed), "--workers",
                          str(args.workers)], capture_output=True, text=True)
    pack_s = time.perf_counter() - t0
    if run.returncode:
        raise SystemExit(f"convnet pack failed:\n{run.stderr}")
    made = re.search(r"made (\d+) shard", run.stdout)
    kept = "kept" in run.stdout and (made is None or made.group(1) == "0")
    packed_mb = sum(f.stat().st_size for f in packed.glob("*.npy")) / 1e6
    print(run.stdout.strip().splitlines()[0], flush=True)

    model = args.work / "model.npz"
    rows = {}
    for where in ("shards", "memory"):
        rows[where] = train_run(packed, where, args.steps, args.batch_size,
                                str(model) if where == "shards" else "-")
        r = rows[where]
        print(f"train from {where}: {r['images_per_s']:,.0f} images/s, open {r['open_s']:.1f} s, "
              f"normaliser {r['normalizer_s']:.1f} s, peak RSS {r['peak_rss'] / 2**20:,.0f} MiB",
              flush=True)
    same = rows["shards"]["weights_sha256"] == rows["memory"]["weights_sha256"]
    print(f"weights after {args.steps} steps bit for bit the same: {same}", flush=True)

    preds = []
    for extra in ([], ["--workers", "1"], ["--workers", "2"]):
        r = predict_run(model, folder, args.work / "preds.csv", extra)
        preds.append(r)
        print(f"{r['command']}: {r['images_per_s']:,.0f} images/s ({r['images']:,} images in "
              f"{r['seconds']:.1f} s" + (f"; cluster ready in {r['cluster_s']:.1f} s"
                                         if r["cluster_s"] is not None else "") + ")",
              flush=True)
    load.append(os.getloadavg()[0])

    f32 = n * 96 * 96 * 3 * 4 / 1e6
    lines = [
        "# Bigger data: pack, train out of core, predict on Dask",
        "",
        f"`{command}` on {os.cpu_count()} cores shared with other jobs (load average "
        f"{load[0]:.1f} before, {load[1]:.1f} after); {time.strftime('%Y-%m-%d %H:%M')}.",
        "",
        f"Folder: {n:,} PNG images 96x96x3 in 10 class folders, {folder_mb:,.0f} MB "
        f"({f32:,.0f} MB as float32).",
        "",
        "| step | result |",
        "|---|---|",
        f"| `convnet pack FOLDER -o PACKED --workers {args.workers}` | "
        + ("(kept from an earlier run) " if kept else "")
        + f"{pack_s:.0f} s, {n / pack_s:,.0f} images/s; {packed_mb:,.0f} MB of uint8 shards |",
    ]
    what = {"shards": "the shards (out of core, prefetch 2)", "memory": "memory (float32 arrays)"}
    for where in ("shards", "memory"):
        r = rows[where]
        lines.append(
            f"| train from {what[where]} "
            f"| {r['images_per_s']:,.0f} images/s; opening {r['open_s']:.1f} s, normaliser "
            f"{r['normalizer_s']:.1f} s; peak RSS {r['peak_rss'] / 2**20:,.0f} MiB |")
    lines.append(f"| same weights after {args.steps} steps of batch {args.batch_size} | "
                 f"{'yes, bit for bit' if same else 'NO'} |")
    for r in preds:
        lines.append(f"| `{r['command']}` | {r['images_per_s']:,.0f} images/s "
                     f"({r['seconds']:.1f} s" + (f"; cluster ready in {r['cluster_s']:.1f} s"
                                                 if r["cluster_s"] is not None else "")
                     + f"; {r['wall_s']:.1f} s for the whole command) |")
    lines += ["", f"Network: `{ARCH}`.", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":  # the decoding and Dask worker processes import this file: guarded
    sys.exit(main())
