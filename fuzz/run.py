"""Coverage-guided fuzzing of convnet's readers of untrusted files (not part of the test suite).

    python fuzz/run.py --minutes 10                  # all four readers, 10 minutes in total
    python fuzz/run.py --minutes 2 --readers cifar   # one reader
    nice -n 10 python fuzz/run.py --minutes 10       # leave the machine usable

Readers: ``checkpoint`` (convnet.train.checkpoint.load_checkpoint on the bytes as a file, or on
the bytes as the arrays of a zip made with valid CRCs, so mutations reach the schema),
``idx`` (convnet.data.idx.read_idx, plain and gzip), ``cifar`` (the restricted unpickler and
read_batch) and ``spec`` (the architecture language: parse, then build without weights, as text
only). Each runs under atheris (libFuzzer) in its own process for its share of the time, from a
corpus of valid files made here (``fuzz/corpus/<reader>/``, grown by the fuzzer; ``--dir DIR``
puts corpus/ and crashes/ under DIR instead). An input that makes a reader raise anything but a
``ConvnetError``, crash, run past 30 s or use more than 2 GB is a finding: it is saved under
``fuzz/crashes/<reader>/`` and the reader restarts, until its time is used. The caps are lowered
to 64 MiB in the workers so that a file just under a cap cannot pass for a memory blow-up.

The report gives, per reader, the inputs tried, the findings and the coverage reached. It needs
atheris (``pip install 'convnet[fuzz]'``); without it the script exits with status 2.
"""

from __future__ import annotations

import argparse
import io
import os
import pickle
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
READERS = ("checkpoint", "idx", "cifar", "spec")
MAX_LEN = {"checkpoint": 65536, "idx": 8192, "cifar": 16384, "spec": 4096}


# ------------------------------------------------------------------------------ the corpora
def _seed_corpus(reader: str, directory: Path) -> None:
    """Valid files of each kind, so the fuzzer starts past the magic numbers."""
    import numpy as np

    import convnet as cn

    directory.mkdir(parents=True, exist_ok=True)
    seeds: dict[str, bytes] = {}
    if reader == "checkpoint":
        from convnet.optim import Adam

        with tempfile.TemporaryDirectory() as tmp:
            specs = ("INPUT(4x4x1) -> FC(2)",
                     "INPUT(6x6x1) -> CONV(2,F=3,P=1) -> BN -> RELU -> POOL -> FC(3)")
            for i, spec in enumerate(specs):
                net = cn.build(spec, seed=0)
                opt = Adam(lr=0.01)
                x = np.random.default_rng(0).random((4, *net.input_shape), dtype=np.float32)
                _, d = cn.softmax_cross_entropy(net.forward(x, train=True), np.array([0, 1, 1, 0]))
                net.backward(d)
                opt.step(net)
                p = cn.save(net, Path(tmp) / f"m{i}.npz", optimizer=opt, classes=None,
                            normalizer={"mean": [0.5], "std": [0.2]}, epoch=1,
                            config={"cli": {"arch": spec, "lr": 0.01}},
                            loop={"order": np.arange(4), "batch": np.array(1),
                                  "sums": np.zeros(4), "time": np.array(0.5)})
                seeds[f"seed{i}.npz"] = p.read_bytes()
                with zipfile.ZipFile(p) as z:  # the members form (see _members_zip)
                    seeds[f"members{i}"] = _SEP.join(
                        z.read(n) for n in sorted(z.namelist(), key=_member_order))
    elif reader == "idx":
        from convnet.data.idx import write_idx

        with tempfile.TemporaryDirectory() as tmp:
            for name, a in (("images", np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)),
                            ("labels", np.arange(5, dtype=np.uint8)),
                            ("floats", np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3)),
                            ("ints", np.arange(-3, 3, dtype=np.int16))):
                for sfx in ("", ".gz"):
                    seeds[f"{name}{sfx}"] = write_idx(Path(tmp) / f"{name}{sfx}", a).read_bytes()
    elif reader == "cifar":
        batch = {b"data": np.arange(3072 * 2, dtype=np.uint8).reshape(2, 3072),
                 b"labels": [3, 1], b"filenames": [b"a.png", b"b.png"], b"batch_label": b"b"}
        for protocol in (2, 4, 5):
            seeds[f"batch{protocol}"] = pickle.dumps(batch, protocol=protocol)
        seeds["meta"] = pickle.dumps({b"label_names": [b"cat", b"dog"]}, protocol=4)
    else:
        from convnet.spec import ZOO

        for name, text in ZOO.items():
            seeds[name] = text.encode()
        seeds["groups"] = b"INPUT(32x32x3) -> [[CONV(16,F=3,P=1) -> RELU]*2 -> POOL]*3 -> FC(10)"
        seeds["args"] = b"INPUT(9x9x3) -> CONV(4,F=3x2,S=2,P=1,floor=true) -> DECONV(3,F=3,S=2)"
    for name, data in seeds.items():
        (directory / name).write_bytes(data)


# The checkpoint reader is fuzzed in two forms. Raw zips: most mutations break a CRC, so they
# test the zip layer. Members: the input is the .npy members (in _MEMBERS' order) joined by
# _SEP, zipped here with valid CRCs, so mutations reach the .npy headers, the JSON, the schema.
_SEP = b"\n--member--\n"
_MEMBERS = ("format", "version", "spec", "dtype", "meta", "rng", "param/conv1.W",
            "param/conv1.b", "param/bn1.gamma", "param/bn1.beta", "param/bn1.running_mean",
            "param/bn1.running_var", "param/fc1.W", "param/fc1.b", "norm/mean", "norm/std",
            "optim/optimizer", "optim/step", "optim/fc1.W.exp_avg", "loop/order", "loop/batch",
            "loop/sums", "loop/time")


def _member_order(name: str) -> int:
    key = name[:-4]
    return _MEMBERS.index(key) if key in _MEMBERS else len(_MEMBERS)


def _members_zip(data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i, chunk in enumerate(data.split(_SEP)):
            name = _MEMBERS[i] if i < len(_MEMBERS) else f"extra{i}"
            z.writestr(f"{name}.npy", chunk)
    return buf.getvalue()


# ------------------------------------------------------------------------------ the targets
def _target(reader: str):
    """``f(data: bytes)``: run the reader; a ConvnetError is a correct answer, anything else
    propagates (a finding)."""
    from convnet.errors import ConvnetError

    tmp = Path(tempfile.mkdtemp(prefix=f"convnet-fuzz-{reader}-", dir=_scratch()))
    path = tmp / ("x.npz" if reader == "checkpoint" else "x")

    if reader == "checkpoint":
        from convnet.train.checkpoint import load_checkpoint

        def run(data: bytes) -> None:
            path.write_bytes(data if data[:2] == b"PK" else _members_zip(data))
            load_checkpoint(path)
    elif reader == "idx":
        from convnet.data.idx import read_idx

        def run(data: bytes) -> None:
            path.write_bytes(data)
            read_idx(path)
    elif reader == "cifar":
        from convnet.data.cifar import RestrictedUnpickler, read_batch

        def run(data: bytes) -> None:
            try:
                RestrictedUnpickler(io.BytesIO(data), source="fuzz", encoding="bytes").load()
            except ConvnetError:
                pass
            except Exception as exc:  # noqa: BLE001 - garbage: safe_unpickle turns it into DataError
                if isinstance(exc, RecursionError | MemoryError | SystemError):
                    raise
            path.write_bytes(data)
            read_batch(path)
    else:
        from convnet.spec import build, parse

        def run(data: bytes) -> None:
            text = data.decode("utf-8", "replace")
            parse(text)
            build(text, weights=False, literal=True)

    def target(data: bytes) -> None:
        try:
            run(data)
        except ConvnetError:
            pass

    return target


def _scratch() -> str | None:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def _worker(reader: str, seconds: int, corpus: Path, crashes: Path) -> None:
    import atheris

    with atheris.instrument_imports(include=["convnet", "pickle", "zipfile", "gzip", "json"]):
        import convnet.data.cifar  # noqa: F401
        import convnet.data.idx  # noqa: F401
        import convnet.spec  # noqa: F401
        import convnet.train.checkpoint  # noqa: F401
    from convnet.safety import caps

    crashes.mkdir(parents=True, exist_ok=True)
    target = _target(reader)
    with caps(data_bytes=64 * 2**20, checkpoint_bytes=64 * 2**20, image_pixels=10**7,
              pickle_objects=10**6):
        atheris.Setup([sys.argv[0], str(corpus), f"-max_total_time={seconds}",
                       f"-max_len={MAX_LEN[reader]}", "-timeout=30", "-rss_limit_mb=2048",
                       f"-artifact_prefix={crashes}/", "-print_final_stats=1"], target)
        atheris.Fuzz()


# ------------------------------------------------------------------------------ the driver
def _fuzz(reader: str, seconds: float, base: Path = HERE) -> dict:
    corpus = base / "corpus" / reader
    crashes = base / "crashes" / reader
    if not corpus.is_dir() or not any(corpus.iterdir()):
        _seed_corpus(reader, corpus)
    stats = {"runs": 0, "findings": [], "cov": 0, "ft": 0, "corpus": 0, "restarts": 0}
    deadline = time.monotonic() + seconds
    while (left := int(deadline - time.monotonic())) >= 5:
        before = set(crashes.glob("*")) if crashes.is_dir() else set()
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", reader, "--seconds", str(left),
             "--dir", str(base)],
            capture_output=True, text=True, errors="replace")
        out = proc.stdout + proc.stderr
        runs = re.findall(r"stat::number_of_executed_units: (\d+)", out) or \
            re.findall(r"Done (\d+) runs", out) or re.findall(r"#(\d+)\s", out)[-1:]
        stats["runs"] += int(runs[-1]) if runs else 0
        for key, pattern in (("cov", r"cov: (\d+)"), ("ft", r"ft: (\d+)"),
                             ("corpus", r"corp: (\d+)")):
            found = re.findall(pattern, out)
            if found:
                stats[key] = max(stats[key], int(found[-1]))
        new = sorted(set(crashes.glob("*")) - before) if crashes.is_dir() else []
        if proc.returncode != 0:
            tail = "\n".join(out.strip().splitlines()[-25:])
            stats["findings"].append({"files": [str(p) for p in new], "exit": proc.returncode,
                                      "tail": tail})
            stats["restarts"] += 1
            if not new:  # a failure that left no input to replay: stop, do not loop on it
                break
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0,
                        help="total fuzzing time, shared equally by the readers (default 10)")
    parser.add_argument("--readers", nargs="+", choices=READERS, default=list(READERS))
    parser.add_argument("--worker", choices=READERS, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=int, default=60, help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, default=HERE,
                        help="where the corpus/ and crashes/ folders go (default: fuzz/)")
    args, _ = parser.parse_known_args(argv)
    try:
        import atheris  # noqa: F401
    except ImportError:  # a missing fuzzer is a setup error, not a finding
        print("fuzz/run.py: error: atheris is not installed: pip install 'convnet[fuzz]' "
              "(atheris==2.3.0)", file=sys.stderr)
        return 2
    if args.worker:
        _worker(args.worker, args.seconds, args.dir / "corpus" / args.worker,
                args.dir / "crashes" / args.worker)
        return 0
    share = args.minutes * 60 / len(args.readers)
    results = {}
    for reader in args.readers:
        print(f"fuzzing {reader} for {share:.0f} s ...", flush=True)
        results[reader] = r = _fuzz(reader, share, args.dir)
        print(f"  {reader}: {r['runs']:,} inputs, {len(r['findings'])} finding(s), coverage "
              f"{r['cov']} edges / {r['ft']} features, corpus {r['corpus']}", flush=True)
        for f in r["findings"]:
            print(f"  finding (exit {f['exit']}): {', '.join(f['files']) or 'no input saved'}")
            print("    " + f["tail"].replace("\n", "\n    "))
    total = sum(r["runs"] for r in results.values())
    findings = sum(len(r["findings"]) for r in results.values())
    print(f"total: {total:,} inputs in {args.minutes:g} minutes, {findings} finding(s)")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
