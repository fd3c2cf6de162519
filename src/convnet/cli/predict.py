"""``convnet predict MODEL PATH...``: the top-k classes of any number of images.

PATH is an image file, a folder (searched recursively for image files) or a glob pattern
("photos/**/*.jpg"), as many as you like. Images are read and classified a batch at a time, so
memory stays flat however many there are. Without --out each image's classes are printed; with
--out FILE they are written as CSV (or JSON lines for .jsonl, Parquet for .parquet with the
[parquet] extra, pyarrow): path, class_1, prob_1, ..., class_k, prob_k, warning, error; with a
progress bar (images/s and ETA) on stderr. An image that cannot be read gets its reason in the
error column (and the exit status is 1) instead of stopping the run; --resume continues a run
whose output file exists, skipping the images already in it.

Fitting: each image is fitted to the model's input keeping its proportions (--fit pad, the
default: the whole image scaled in, the rest filled with its own background, as the training
items show a whole object in proportion; --fit crop cuts the centre out instead; --fit squash
resizes regardless). It is converted to grayscale or RGB as the model needs, and the model's
saved normalisation is applied. An image whose polarity or brightness is far from the training
images' (e.g. a dark shoe on white for a model trained on Fashion-MNIST's light clothes on
black) gets a warning naming the fix: --invert. --save-input DIR writes what the network saw.

--workers N runs the batches on a Dask cluster of N local processes, --scheduler ADDRESS on a
running one (pip install 'convnet[dask]'; workers read the images and the model from the same
paths, so a remote cluster needs them on a shared file system): the same results (top-k
classes; probabilities within 1e-5) in the same order.

For a model that labels every pixel (its output is a map of class scores of the input's size,
e.g. one trained with --data fashion-seg) the predicted mask of each image is written as a
colour PNG (IMAGE.mask.png next to the image, or in --out DIR), with legend.png beside it
showing which colour is which class; the command prints where and the share of each class.

MODEL is a checkpoint (.npz) or a run directory.

exit status: 0 when every image was classified, 1 when some could not be read (each is listed
with its reason), 2 for an error that stops the command (a missing path, a bad model).

examples:
  convnet predict runs/fashion shoe.jpg --top-k 3
  convnet predict runs/fashion shoe.jpg --invert --save-input seen/
  convnet predict runs/photos photos/ "more/**/*.jpg" --out preds.csv
  convnet predict runs/photos photos/ --out preds.csv --resume
  convnet predict runs/photos photos/ --out preds.jsonl --workers 4
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import itertools
import json
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from convnet.cli.args import positive_int

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}
_MIN_BAR = 20  # images from which a run without --out shows a progress bar


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from convnet.data.fitting import DEFAULT_FIT, FITS

    parser.add_argument("model", metavar="MODEL", help="a checkpoint (.npz) or a run directory")
    parser.add_argument("images", metavar="PATH", nargs="+",
                        help="image files, folders (recursive) or glob patterns")
    parser.add_argument("--top-k", type=positive_int, default=3,
                        help="how many classes to give per image (default 3)")
    parser.add_argument("--out", metavar="FILE|DIR", default=None,
                        help="write the predictions to FILE (.csv, .jsonl or .parquet); for a "
                             "model that labels every pixel: the directory for the masks "
                             "(default: next to each image, as IMAGE.mask.png)")
    parser.add_argument("--resume", action="store_true",
                        help="--out exists: skip the images already in it and append the rest")
    parser.add_argument("--fit", choices=FITS, default=DEFAULT_FIT,
                        help="how an image of other proportions becomes the model's input: "
                             "pad (default: keep it whole, fill with its background), crop "
                             "(the centre), squash (resize out of proportion)")
    parser.add_argument("--invert", action="store_true",
                        help="use 1 - x (a dark object on white for a model trained on light "
                             "objects on black, or the reverse)")
    parser.add_argument("--save-input", metavar="DIR", default=None,
                        help="write each image as the network saw it (fitted, converted, "
                             "inverted; before normalisation) as DIR/NAME.input.png")
    parser.add_argument("--batch-size", type=positive_int, default=64, metavar="N",
                        help="images per forward pass and per task (default 64)")
    parser.add_argument("--workers", type=positive_int, default=None, metavar="N",
                        help="run on a local Dask cluster of N processes")
    parser.add_argument("--scheduler", metavar="ADDRESS", default=None,
                        help="run on the Dask cluster at ADDRESS (e.g. tcp://host:8786)")


# ---------------------------------------------------------------------------- the predictor
class Predictor:
    """A model loaded once: image paths in, one row per image out.

    A row is ``{"path", "classes" (top-k names), "probs" (their probabilities), "notes"
    (conversions made), "warning" (input check, or ""), "error" (why the image could not be
    read, or "")}``. Used in this process and, through :func:`predict_task`, in Dask workers.
    """

    def __init__(self, model: str | os.PathLike) -> None:
        from convnet.errors import ConfigError
        from convnet.train.checkpoint import load_checkpoint

        self.ckpt = load_checkpoint(model)
        net = self.ckpt.net
        if len(net.input_shape) != 3:
            raise ConfigError(f"{self.ckpt.path}: the model takes vectors {net.input_shape}, "
                              "not images")
        self.net = net
        C = net.output_shape[-1]
        self.classes = list(self.ckpt.classes or [str(i) for i in range(C)])
        self.norm = self.ckpt.normalizer

    @property
    def per_pixel(self) -> bool:
        out = tuple(self.net.output_shape)
        return len(out) == 3 and out[:2] == tuple(self.net.input_shape[:2])

    def load(self, items: Sequence[tuple[str, str | None]], fit: str, invert: bool
             ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Read and fit the images: ``(x (n_ok, H, W, D), rows without classes yet)``; an
        unreadable image gets its ``error`` and no place in ``x``. ``items`` are
        ``(path, name of its --save-input PNG or None)``."""
        from convnet.data.fitting import input_check, load_photo, save_input_png
        from convnet.errors import DataError

        shape = self.net.input_shape
        images, rows = [], []
        # one decode per file: each is its own file format to parse
        for path, save_as in items:
            row: dict[str, Any] = {"path": path, "classes": [], "probs": [], "notes": [],
                                   "warning": "", "error": ""}
            try:
                img, row["notes"] = load_photo(path, shape, fit=fit, invert=invert)
            except (DataError, OSError, ValueError) as exc:
                text = str(exc)
                row["error"] = text[len(path) + 2:] if text.startswith(f"{path}: ") else text
            else:
                images.append(img)
                if self.norm is not None:
                    row["warning"] = input_check(img, self.norm["mean"], self.norm["std"]) or ""
                if save_as is not None:
                    save_input_png(img, save_as)
            rows.append(row)
        x = np.stack(images) if images else np.zeros((0, *shape), np.float32)
        return x, rows

    def scores(self, x: np.ndarray) -> np.ndarray:
        if self.norm is not None:
            x = (x - self.norm["mean"]) / self.norm["std"]
        return self.net.predict(x.astype(self.net.dtype, copy=False))

    def classify(self, x: np.ndarray, rows: list[dict[str, Any]], top_k: int
                 ) -> list[dict[str, Any]]:
        """Fill in the top-k classes and probabilities of the rows :meth:`load` made."""
        from convnet.errors import ConfigError
        from convnet.ops.loss import softmax
        from convnet.safety import check_finite_scores

        if not len(x):
            return rows
        with np.errstate(over="ignore", invalid="ignore"):  # reported below, naming the model
            scores = check_finite_scores(self.scores(x), str(self.ckpt.path))
        C = self.net.output_shape[-1]
        if scores.ndim > 2 and all(d == 1 for d in scores.shape[1:-1]):
            # a network without FC ending in a 1x1xK volume: its K scores are the class scores
            scores = scores.reshape(len(scores), C)
        if scores.ndim != 2:
            raise ConfigError(
                f"{self.ckpt.path}: the model outputs score maps {self.net.output_shape}, "
                "neither one score per class nor a map of the input's size; predict classifies "
                "whole images or labels every pixel (use `convnet scan` for score maps)"
            )
        probs = softmax(scores.astype(np.float64))
        k = min(top_k, C)
        top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        good = iter(zip(top, probs, strict=True))
        for row in rows:
            if not row["error"]:
                order, p = next(good)
                row["classes"] = [self.classes[j] for j in order]
                # 7 significant digits: float32's precision, short in CSV and JSON
                row["probs"] = [float(f"{p[j]:.7g}") for j in order]
        return rows

    def rows(self, items: Sequence[tuple[str, str | None]], fit: str, invert: bool,
             top_k: int) -> list[dict[str, Any]]:
        x, rows = self.load(items, fit, invert)
        return self.classify(x, rows, top_k)


_MODELS: dict[tuple[str, int, int], Predictor] = {}
_MODELS_LOCK = threading.Lock()


def _stamp(model: str | os.PathLike) -> tuple[str, int, int]:
    from convnet.train.checkpoint import resolve_checkpoint_path

    path = resolve_checkpoint_path(model).resolve()
    st = path.stat()
    return str(path), st.st_mtime_ns, st.st_size


def predict_task(stamp: tuple[str, int, int], items: list[tuple[str, str | None]], fit: str,
                 invert: bool, top_k: int, limits: dict[str, int] | None = None
                 ) -> list[dict[str, Any]]:
    """A Dask task: the rows of ``items``, with the model loaded once per worker process
    (cached by path, modification time and size; a model file changed since the run began is
    an error, not a silent mix of two models). ``limits``: the caps the client runs under
    (its --max-* flags, :func:`convnet.safety.overrides`), applied here as there."""
    from convnet.safety import caps

    with caps(**(limits or {})):
        with _MODELS_LOCK:
            predictor = _MODELS.get(stamp)
            if predictor is None:
                from convnet.errors import CheckpointError

                if _stamp(stamp[0]) != stamp:
                    raise CheckpointError(f"{stamp[0]}: the model file changed during the run")
                predictor = _MODELS[stamp] = Predictor(stamp[0])
        return predictor.rows(items, fit, invert, top_k)


# ------------------------------------------------------------------------------- engines
def _local(predictor: Predictor, chunks: list[list[tuple[str, str | None]]], fit: str,
           invert: bool, top_k: int) -> Iterator[list[dict[str, Any]]]:
    """Rows chunk by chunk in this process; the next chunk's images are read by a thread while
    the network classifies this one (Pillow decodes without the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="convnet-decode") as pool:
        ahead = pool.submit(predictor.load, chunks[0], fit, invert) if chunks else None
        for i in range(len(chunks)):
            x, rows = ahead.result()  # type: ignore[union-attr]
            if i + 1 < len(chunks):
                ahead = pool.submit(predictor.load, chunks[i + 1], fit, invert)
            yield predictor.classify(x, rows, top_k)


class _Dask:
    """A Dask client (a local cluster of ``workers`` processes, or a running scheduler):
    ``with _Dask(args) as dask: dask.rows(stamp, chunks)`` gives the rows chunk by chunk, in
    input order, with a few tasks per worker in flight (paths go out, rows come back)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.cluster: Any = None
        self.client: Any = None
        self.started_s = 0.0

    def __enter__(self) -> _Dask:
        from convnet.errors import ConfigError

        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise ConfigError("--workers and --scheduler run on Dask, which is not installed: "
                              "pip install 'convnet[dask]'") from None
        import logging

        t0 = time.perf_counter()
        if self.args.scheduler:
            from convnet.safety import excerpt

            where = f"--scheduler {excerpt(self.args.scheduler, 80)}"
            try:
                self.client = Client(self.args.scheduler, timeout="20s")
            except OSError as exc:
                raise ConfigError(f"{where}: cannot reach a Dask scheduler there "
                                  f"({excerpt(str(exc), 200, quotes=False)})") from None
            except (ValueError, TypeError) as exc:  # distributed's address parser
                raise ConfigError(f"{where}: not a Dask scheduler address "
                                  f"({excerpt(str(exc), 200, quotes=False)}); give one as "
                                  "tcp://HOST:PORT, e.g. tcp://10.0.0.5:8786") from None
        else:
            self.cluster = LocalCluster(n_workers=self.args.workers, processes=True,
                                        threads_per_worker=1, dashboard_address=None,
                                        silence_logs=logging.ERROR)
            self.client = Client(self.cluster)
        self.started_s = time.perf_counter() - t0
        return self

    @property
    def workers(self) -> int:
        return max(1, len(self.client.scheduler_info().get("workers", {})))

    def rows(self, stamp: tuple[str, int, int], chunks: list[list[tuple[str, str | None]]],
             fit: str, invert: bool, top_k: int) -> Iterator[list[dict[str, Any]]]:
        from convnet.safety import overrides

        limits = overrides()  # the --max-* flags: each worker reads under them too
        window: deque[Any] = deque()
        inflight = 4 * self.workers
        for chunk in chunks:
            window.append(self.client.submit(predict_task, stamp, chunk, fit, invert, top_k,
                                             limits, pure=False))
            if len(window) >= inflight:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()

    def __exit__(self, *exc: Any) -> None:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()


# ------------------------------------------------------------------------------- writers
def _columns(k: int) -> list[str]:
    return ["path", *(f"{kind}_{i}" for i in range(1, k + 1) for kind in ("class", "prob")),
            "warning", "error"]


def _flat(row: dict[str, Any], k: int) -> dict[str, Any]:
    out: dict[str, Any] = {"path": row["path"]}
    for i in range(k):
        has = i < len(row["classes"])
        out[f"class_{i + 1}"] = row["classes"][i] if has else None
        out[f"prob_{i + 1}"] = row["probs"][i] if has else None
    out["warning"], out["error"] = row["warning"], row["error"]
    return out


def _complete_lines(path: Path, block: int = 1 << 16) -> None:
    """Cut a last line that an interrupted run left half written. Reads backwards from the end
    in ``block``-byte steps only as far as the last newline (not the whole file: a resumed
    run's output may be gigabytes)."""
    with open(path, "rb+") as f:
        end = f.seek(0, os.SEEK_END)
        if end == 0:
            return
        f.seek(end - 1)
        if f.read(1) == b"\n":
            return
        pos = end
        while pos > 0:
            start = max(0, pos - block)
            f.seek(start)
            chunk = f.read(pos - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                f.truncate(start + cut + 1)
                return
            pos = start
        f.truncate(0)


class _Writer:
    """Rows to a CSV, JSON lines or Parquet file, flushed per chunk (so an interrupted run
    keeps every row written and --resume continues it)."""

    def __init__(self, path: Path, fmt: str, k: int, append: bool) -> None:
        self.path, self.fmt, self.k = path, fmt, k
        self.columns = _columns(k)
        self._pq: Any = None
        if fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            fields = [pa.field(c, pa.float64() if c.startswith("prob_") else pa.string())
                      for c in self.columns]
            self._schema = pa.schema(fields)
            self._pa = pa
            self._old = pq.read_table(path) if append else None
            self._tmp = path.with_name(f".{path.name}.partial")
            self._pq = pq.ParquetWriter(self._tmp, self._schema)
            if self._old is not None:
                self._pq.write_table(self._old.select(self.columns).cast(self._schema))
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(path, "a" if append else "w", encoding="utf-8", newline="")
        if fmt == "csv":
            self._csv = csv.DictWriter(self._f, self.columns)
            if not append:
                self._csv.writeheader()

    def write(self, rows: list[dict[str, Any]]) -> None:
        flat = [_flat(r, self.k) for r in rows]
        if self.fmt == "parquet":
            self._pq.write_table(self._pa.Table.from_pylist(flat, schema=self._schema))
            return
        if self.fmt == "csv":
            self._csv.writerows(flat)
        else:
            self._f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in flat)
        self._f.flush()

    def close(self, complete: bool = True) -> None:
        if self._pq is not None:
            self._pq.close()
            if complete:
                os.replace(self._tmp, self.path)
            return
        self._f.close()


def _done_paths(path: Path, fmt: str, k: int) -> set[str]:
    """Paths already in the output of an earlier run (--resume)."""
    from convnet.errors import ConfigError

    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path, columns=["path"])
        except Exception as exc:  # pyarrow raises its own errors for a damaged file
            raise ConfigError(f"{path}: cannot read it to resume ({exc}); a Parquet file is "
                              "complete only when its run finishes: use .csv or .jsonl to "
                              "resume interrupted runs") from None
        return set(table.column("path").to_pylist())
    _complete_lines(path)
    done: set[str] = set()
    with open(path, encoding="utf-8", newline="") as f:
        if fmt == "csv":
            reader = csv.reader(f)
            header = next(reader, None)
            if header is not None and header != _columns(k):
                raise ConfigError(
                    f"{path}: its columns are {', '.join(header)}, not those of --top-k {k} "
                    f"({', '.join(_columns(k))}): resume with the --top-k of the first run"
                )
            done.update(r[0] for r in reader if r)
        else:
            for n, line in enumerate(f, 1):
                try:
                    done.add(json.loads(line)["path"])
                except (ValueError, KeyError, TypeError):
                    raise ConfigError(f"{path}:{n}: not a row of predictions; is this the "
                                      "right file?") from None
    return done


# ---------------------------------------------------------------------------------- run
def _save_names(paths: list[str], save_dir: str | None) -> list[str | None]:
    """``DIR/<stem>.input.png`` per image; a stem met twice gets its position in the list."""
    if save_dir is None:
        return [None] * len(paths)
    stems = [Path(p).stem for p in paths]
    count: dict[str, int] = {}
    for s in stems:
        count[s] = count.get(s, 0) + 1
    return [str(Path(save_dir) / (f"{s}.input.png" if count[s] == 1 else f"{s}-{i}.input.png"))
            for i, s in enumerate(stems)]


def run(args: argparse.Namespace) -> int:
    from convnet.data.files import expand_image_paths
    from convnet.errors import ConfigError

    if args.workers and args.scheduler:
        raise ConfigError("give --workers N (a local cluster) or --scheduler ADDRESS (a running "
                          "one), not both")
    predictor = Predictor(args.model)
    paths = [str(p) for p in expand_image_paths(args.images)]
    if predictor.per_pixel:
        if args.resume or args.workers or args.scheduler:
            raise ConfigError("--resume, --workers and --scheduler are for classifiers; this "
                              "model labels every pixel and writes one mask per image")
        return _write_masks(predictor, args, paths)
    fmt = None
    out = Path(args.out) if args.out else None
    if out is not None:
        fmt = FORMATS.get(out.suffix.lower())
        if fmt is None:
            raise ConfigError(f"--out {out}: give a file ending in .csv, .jsonl or .parquet "
                              "for the predictions")
        if fmt == "parquet":
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise ConfigError(f"--out {out}: writing Parquet needs pyarrow, which is not "
                                  "installed (pip install 'convnet[parquet]'), or use .csv or "
                                  ".jsonl") from None
        if out.exists() and not args.resume:
            raise ConfigError(f"{out} exists: add --resume to continue that run (skipping the "
                              "images already in it), or choose another --out")
    elif args.resume:
        raise ConfigError("--resume continues an --out file; give --out FILE")
    k = min(args.top_k, predictor.net.output_shape[-1])
    done = _done_paths(out, fmt, k) if out is not None and fmt and out.exists() else set()
    todo = [p for p in paths if p not in done]
    names = _save_names(paths, args.save_input)
    name_of = dict(zip(paths, names, strict=True))
    items = [(p, name_of[p]) for p in todo]
    chunks = [items[s:s + args.batch_size] for s in range(0, len(items), args.batch_size)]
    if done:
        print(f"convnet predict: resuming {out}: {len(done):,} of {len(paths):,} images done, "
              f"{len(todo):,} to go", file=sys.stderr)
    with contextlib.ExitStack() as stack:
        if args.workers or args.scheduler:
            dask = stack.enter_context(_Dask(args))
            print(f"convnet predict: Dask with {dask.workers} worker(s) ready in "
                  f"{dask.started_s:.1f} s", file=sys.stderr)
            results = dask.rows(_stamp(args.model), chunks, args.fit, args.invert, k)
        else:
            results = _local(predictor, chunks, args.fit, args.invert, k)
        return _run_rows(predictor, results, out, fmt, k, len(todo))


def _run_rows(predictor: Predictor, results: Iterator[list[dict[str, Any]]], out: Path | None,
              fmt: str | None, k: int, count: int) -> int:
    """Write (or print) the rows as they come; the summary; the exit status."""
    from convnet.data.progress import Progress

    t0 = time.perf_counter()
    # The first batch is classified before the output file is made or the bar drawn: a model
    # that cannot classify (non-finite scores, score maps) fails with its one error line and
    # leaves no header-only file behind that a re-run would have to --resume.
    results = iter(results)
    first = next(results, None)
    writer = None
    if out is not None and fmt:
        writer = _Writer(out, fmt, k, append=out.exists() and out.stat().st_size > 0)
    width = max(len(c) for c in predictor.classes)
    failed, warned, examples = 0, 0, []  # a few warnings to show, the rest counted
    complete = False
    bar = Progress(count, "predict", enabled=writer is not None or count >= _MIN_BAR)
    try:
        for rows in itertools.chain([first] if first is not None else [], results):
            failed += sum(1 for r in rows if r["error"])
            for r in rows:
                if r["warning"]:
                    warned += 1
                    if len(examples) < 5:
                        examples.append(r)
            if writer is not None:
                writer.write(rows)
            else:
                _print_rows(rows, predictor.net.input_shape, width)
            bar.update(len(rows))
        complete = True
    finally:
        bar.close()
        if writer is not None:
            writer.close(complete)
    seconds = time.perf_counter() - t0
    shown = examples[:1] if writer is not None else examples
    for r in shown:
        print(f"convnet predict: warning: {r['path']} {r['warning']}", file=sys.stderr)
    if warned > len(shown):
        print(f"convnet predict: warning: {warned - len(shown)} more of the images look "
              "unlike the training images" + (" (the warning column says which)"
                                              if writer is not None else ""), file=sys.stderr)
    if writer is not None:
        rate = count / seconds if seconds > 0 else 0.0
        print(f"predicted {count - failed:,} images into {out} in {seconds:.1f} s "
              f"({rate:,.0f} images/s)" + (f"; {failed:,} could not be read (their error column "
                                           "says why)" if failed else ""), file=sys.stderr)
    elif failed:
        print(f"convnet predict: {failed} of {count} images could not be read",
              file=sys.stderr)
    return 1 if failed else 0


def _print_rows(rows: list[dict[str, Any]], shape: Sequence[int], width: int) -> None:
    lines = []
    for row in rows:
        head = row["path"]
        if row["notes"]:
            head += f" (converted to the model's {'x'.join(map(str, shape))} input: " \
                    + "; ".join(row["notes"]) + ")"
        lines.append(head)
        if row["error"]:
            lines.append(f"  error: {row['error']}")
        for rank, (c, p) in enumerate(zip(row["classes"], row["probs"], strict=True), 1):
            lines.append(f"  {rank}. {c:<{width}} {100 * p:6.2f}%")
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


def _write_masks(predictor: Predictor, args: argparse.Namespace, paths: list[str]) -> int:
    """Segmentation: the class of every pixel, written as a colour PNG per image."""
    from convnet.fcn.segment import colorize_mask, save_legend_png, save_mask_png

    classes = predictor.classes
    out_dir = Path(args.out) if args.out else None
    names = _save_names(paths, args.save_input)
    written: list[Path] = []
    failed = 0
    for s in range(0, len(paths), args.batch_size):
        batch = list(zip(paths[s:s + args.batch_size], names[s:s + args.batch_size],
                         strict=True))
        x, rows = predictor.load(batch, args.fit, args.invert)
        masks = iter(predictor.scores(x).argmax(axis=-1)) if len(x) else iter(())
        lines = []
        for row in rows:
            path = Path(row["path"])
            if row["error"]:
                failed += 1
                lines.append(f"{path}: error: {row['error']}")
                continue
            mask = next(masks)
            target = (out_dir / f"{path.stem}.mask.png") if out_dir else \
                path.with_name(f"{path.stem}.mask.png")
            if target in written:  # two images of the same name into one folder
                target = target.with_name(f"{path.stem}-{len(written)}.mask.png")
            save_mask_png(mask, target)
            written.append(target)
            head = f"{path}: mask {mask.shape[0]}x{mask.shape[1]} written to {target}"
            if row["notes"]:
                head += f" (image converted to the model's input: {'; '.join(row['notes'])})"
            lines.append(head)
            if row["warning"]:
                print(f"convnet predict: warning: {path} {row['warning']}", file=sys.stderr)
            counts = np.bincount(mask.ravel(), minlength=len(classes))
            for j in np.argsort(-counts, kind="stable"):
                if counts[j]:
                    lines.append(f"  {classes[j]:<12} {100 * counts[j] / mask.size:6.2f}% of "
                                 "pixels")
        sys.stdout.write("\n".join(lines) + "\n")
    if written:
        legend_dir = out_dir or written[0].parent
        legend = save_legend_png(classes, legend_dir / "legend.png")
        colours = colorize_mask(np.arange(len(classes)))
        sys.stdout.write(f"legend ({legend}): " + ", ".join(
            f"{i} {c} #{''.join(f'{int(v):02x}' for v in colours[i])}"
            for i, c in enumerate(classes)) + "\n")
    return 1 if failed else 0
