"""`convnet predict` on real-looking photos (issue 19: fit, polarity, --save-input) and over many
images (issue 17: folders, globs, CSV / JSON lines, broken images, --resume)."""

from __future__ import annotations

import csv
import json
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw

import convnet as cn
from convnet.cli import predict as predict_cli
from convnet.cli.main import main
from convnet.data import FASHION_CLASSES, load_dataset
from convnet.data.fitting import fit_array, input_check, load_photo

# Fashion-MNIST's statistics: light clothes on a black background
FASHION_NORM = {"mean": np.array([0.2860], np.float32), "std": np.array([0.3530], np.float32)}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    net = cn.build("INPUT(28x28x1) -> CONV(4,F=3,P=1) -> RELU -> POOL -> FC(10)", seed=0)
    path = tmp_path_factory.mktemp("model") / "fashion.npz"
    cn.save(net, path, classes=FASHION_CLASSES, normalizer=FASHION_NORM)
    return path


def _shoe(path, h=200, w=300):
    """A photo as a user takes it: a dark shoe, side on, on a white background, 200x300."""
    img = Image.new("RGB", (w, h), (250, 250, 248))
    d = ImageDraw.Draw(img)
    d.polygon([(30, 150), (40, 80), (110, 70), (150, 110), (270, 125), (270, 165), (30, 165)],
              fill=(35, 28, 30))
    d.rectangle((30, 165, 270, 172), fill=(60, 60, 60))  # the sole
    img.save(path)
    return path


def _dark_box(a):
    """(rows, cols) of the bounding box of the dark pixels of an (H, W, 1) image."""
    r, c = np.nonzero(a[..., 0] < 0.5)
    return r.max() - r.min() + 1, c.max() - c.min() + 1


def _error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)
    return err[-1]


# --------------------------------------------------------------------- real photos (issue 19)
def test_a_photo_is_fitted_whole_and_its_polarity_flagged(model, tmp_path, capsys):
    shoe = _shoe(tmp_path / "shoe.jpg")
    seen = tmp_path / "seen"
    assert main(["predict", str(model), str(shoe), "--save-input", str(seen)]) == 0
    out, err = capsys.readouterr()
    head = out.splitlines()[0]
    assert head.startswith(str(shoe)) and "converted RGB -> grayscale" in head
    assert "fitted 200x300 -> 28x28 (HxW) keeping its proportions: padded to 300x300" in head
    assert len(out.splitlines()) == 4  # the head and three classes, as before
    # the photo is light-on-dark's opposite: said once, with the fix
    assert "looks inverted for this model" in err and "try --invert" in err
    # what the network saw: the shoe whole and in proportion, padded with the photo's white
    png = np.asarray(Image.open(seen / "shoe.input.png"), np.float64)
    k = png.shape[0] // 28
    assert png.shape == (28 * k, 28 * k) and k >= 4
    x = png[::k, ::k, None] / 255
    fitted, _ = load_photo(shoe, (28, 28, 1))
    np.testing.assert_array_equal(png[::k, ::k], np.rint(fitted[..., 0] * 255))
    assert np.all(x[:5] > 0.95) and np.all(x[-5:] > 0.95)  # the padding above and below
    rows, cols = _dark_box(x)
    assert cols >= 21 and abs(cols / rows - 240 / 102) < 0.5  # the shoe's own 240:102
    squashed, notes = load_photo(shoe, (28, 28, 1), fit="squash")
    rows_s, cols_s = _dark_box(squashed)
    assert cols_s / rows_s < 0.75 * (cols / rows) and "squashed out of proportion" in notes[-1]
    cropped, notes = load_photo(shoe, (28, 28, 1), fit="crop")
    assert "cropped the centre 200x200" in notes[-1]
    assert _dark_box(cropped)[1] == 28  # toe and heel cut off at both sides

    # with --invert the warning is gone and the network sees a light shoe on black
    assert main(["predict", str(model), str(shoe), "--invert", "--save-input",
                 str(tmp_path / "inv")]) == 0
    out, err = capsys.readouterr()
    assert "inverted (1 - x)" in out.splitlines()[0] and "warning" not in err
    inv = np.asarray(Image.open(tmp_path / "inv" / "shoe.input.png"), np.float64)
    assert np.abs(inv + png - 255).max() <= 1


def test_input_check_quiet_on_the_training_images_and_loud_on_their_inverse():
    from convnet.data.registry import DEBIAN_FASHION_DIR

    if not DEBIAN_FASHION_DIR.is_dir():
        pytest.skip("Fashion-MNIST (Debian's dataset-fashion-mnist) is not installed")
    _, test = load_dataset("fashion")
    x = test.x[:300]
    m, s = FASHION_NORM["mean"], FASHION_NORM["std"]
    assert sum(input_check(a, m, s) is not None for a in x) == 0
    flagged = [input_check(1 - a, m, s) for a in x]
    assert sum(f is not None and "--invert" in f for f in flagged) >= 0.9 * len(x)
    # training images without a dominant level (mean 0.5): no polarity to speak of, but an
    # image far brighter than them gets a brightness warning
    grey = np.full((28, 28, 3), 0.5, np.float32)
    assert input_check(grey, [0.5] * 3, [0.1] * 3) is None
    assert "much brighter" in input_check(grey + 0.4, [0.5] * 3, [0.1] * 3)


def test_fit_array_geometry():
    a = np.zeros((20, 40, 3), np.float32)
    a[0, 0] = 1.0  # one bright corner; the border median stays 0
    padded, notes = fit_array(a, (10, 10), "pad")
    assert padded.shape == (10, 10, 3) and "padded to 40x40" in notes[0]
    tall, notes = fit_array(np.zeros((40, 10, 1), np.float32), (8, 8), "crop")
    assert tall.shape == (8, 8, 1) and "cropped the centre 10x10" in notes[0]
    same, notes = fit_array(np.zeros((8, 8, 1), np.float32), (8, 8), "pad")
    assert notes == [] and same.shape == (8, 8, 1)
    with pytest.raises(ValueError, match="fit 'stretch' is not one of pad, crop, squash"):
        fit_array(a, (10, 10), "stretch")


# --------------------------------------------------------------------- many images (issue 17)
@pytest.fixture()
def folder(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    for sub in ("a", "b/c"):
        (root / sub).mkdir(parents=True)
    names = []
    for i in range(14):
        p = root / ("a" if i % 2 else "b/c") / f"img{i:02d}.png"
        Image.fromarray(rng.integers(0, 120, (28 + i, 28, 3), dtype=np.uint8)).save(p)
        names.append(p)
    bad = root / "a" / "img99.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (root / "a" / "readme.txt").write_text("not an image")  # not picked up from a folder
    return root, sorted(names + [bad])


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_predict_a_folder_to_csv_with_a_broken_image(model, folder, tmp_path, capsys):
    root, files = folder
    out = tmp_path / "preds.csv"
    assert main(["predict", str(model), str(root), "--out", str(out), "--top-k", "2",
                 "--batch-size", "4"]) == 1  # one image could not be read
    err = capsys.readouterr().err
    assert "predicted 14 images" in err and "1 could not be read" in err
    rows = _rows(out)
    assert list(rows[0]) == ["path", "class_1", "prob_1", "class_2", "prob_2", "warning",
                             "error"]
    expected = sorted(str(f) for f in files if f.parent.name == "a") + \
        sorted(str(f) for f in files if f.parent.name == "c")
    assert [r["path"] for r in rows] == expected  # folder order: a/ then b/c/
    broken = [r for r in rows if r["error"]]
    assert [r["path"] for r in broken] == [str(root / "a" / "img99.png")]
    assert "not an image Pillow can read" in broken[0]["error"] and broken[0]["class_1"] == ""
    good = [r for r in rows if not r["error"]]
    assert all(r["class_1"] in FASHION_CLASSES for r in good)
    assert all(1 >= float(r["prob_1"]) >= float(r["prob_2"]) > 0 for r in good)
    # the same as one image at a time
    one = good[3]["path"]
    assert main(["predict", str(model), one, "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[1] == good[3]["class_1"]
    assert float(lines[1].split()[-1].rstrip("%")) == pytest.approx(
        100 * float(good[3]["prob_1"]), abs=0.006)
    # without --resume an existing output is not overwritten
    assert main(["predict", str(model), str(root), "--out", str(out)]) == 2
    assert "exists: add --resume" in _error_line(capsys)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_resume_after_an_interrupted_run(model, folder, tmp_path, capsys, suffix):
    root, files = folder
    full = tmp_path / f"full{suffix}"
    main(["predict", str(model), str(root), "--out", str(full)])
    text = full.read_text()
    lines = text.splitlines(keepends=True)
    # interrupted after 6 rows, in the middle of writing the 7th
    part = tmp_path / f"part{suffix}"
    head = 1 if suffix == ".csv" else 0
    part.write_text("".join(lines[:head + 6]) + lines[head + 6][:15])
    capsys.readouterr()
    assert main(["predict", str(model), str(root), "--out", str(part), "--resume"]) == 1
    assert "6 of 15 images done, 9 to go" in capsys.readouterr().err
    assert part.read_text() == text
    if suffix == ".jsonl":
        rows = [json.loads(line) for line in text.splitlines()]
        assert len(rows) == 15 and set(rows[0]) == {"path", "class_1", "prob_1", "class_2",
                                                    "prob_2", "class_3", "prob_3", "warning",
                                                    "error"}
    # a different --top-k cannot continue a CSV
    if suffix == ".csv":
        assert main(["predict", str(model), str(root), "--out", str(part), "--resume",
                     "--top-k", "2"]) == 2
        assert "resume with the --top-k of the first run" in _error_line(capsys)


def test_paths_globs_and_errors(model, folder, tmp_path, capsys, monkeypatch):
    root, files = folder
    out = tmp_path / "g.jsonl"
    # a glob, a folder and a file that the folder holds too: each image once
    assert main(["predict", str(model), str(root / "b" / "**" / "*.png"), str(root / "a"),
                 str(files[0]), "--out", str(out)]) == 1
    paths = [json.loads(line)["path"] for line in out.read_text().splitlines()]
    assert len(paths) == len(set(paths)) == 15
    assert paths[0].endswith("img00.png") and "/c/" in paths[0]
    assert main(["predict", str(model), str(tmp_path / "nothing*.png"),
                 str(tmp_path / "missing.png")]) == 2
    line = _error_line(capsys)
    assert "no such file or folder" in line and "missing.png" in line and \
        "nothing*.png (a pattern matching no file)" in line
    assert main(["predict", str(model), str(root), "--out", str(tmp_path / "p.txt")]) == 2
    assert "give a file ending in .csv, .jsonl or .parquet" in _error_line(capsys)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as where pyarrow is not installed
    assert main(["predict", str(model), str(root), "--out", str(tmp_path / "p.parquet")]) == 2
    assert "writing Parquet needs pyarrow" in _error_line(capsys)
    assert main(["predict", str(model), str(root), "--workers", "2", "--scheduler",
                 "tcp://localhost:8786"]) == 2
    assert "not both" in _error_line(capsys)


def test_parquet_round_trip_equals_the_csv(model, folder, tmp_path, capsys):
    import pyarrow.parquet as pq

    root, _ = folder
    csv_out, pq_out = tmp_path / "p.csv", tmp_path / "p.parquet"
    assert main(["predict", str(model), str(root), "--out", str(csv_out), "--top-k", "2"]) == 1
    assert main(["predict", str(model), str(root), "--out", str(pq_out), "--top-k", "2"]) == 1
    assert "predicted 14 images into" in capsys.readouterr().err
    assert not (tmp_path / ".p.parquet.partial").exists()  # renamed into place when complete
    table = pq.read_table(pq_out)
    assert table.column_names == ["path", "class_1", "prob_1", "class_2", "prob_2", "warning",
                                  "error"]
    assert str(table.schema.field("prob_1").type) == "double"
    rows = _rows(csv_out)
    got = table.to_pylist()
    assert len(got) == len(rows) == 15
    for want, row in zip(rows, got, strict=True):
        for c, v in want.items():
            if c.startswith("prob_") and v != "":
                assert row[c] == pytest.approx(float(v), rel=1e-9, abs=1e-12), (c, row)
            else:  # CSV writes a missing value (None) as ""
                assert (row[c] if row[c] is not None else "") == v, (c, row)
    # --resume of a complete Parquet file adds nothing and keeps every row
    assert main(["predict", str(model), str(root), "--out", str(pq_out), "--top-k", "2",
                 "--resume"]) == 0
    assert pq.read_table(pq_out).to_pylist() == got


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet", None])
def test_non_finite_scores_name_the_model_and_leave_no_output(tmp_path, capsys, suffix):
    """issue 20: weights of 3e38 overflow float32; the error names the model, prints no
    progress line, and leaves no header-only file that a re-run would have to --resume."""
    net = cn.build("INPUT(8x8x1) -> FC(3)", seed=0)
    net.layers[0].params["W"][...] = 3e38
    model = cn.save(net, tmp_path / "huge.npz")
    img = tmp_path / "img.png"
    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(img)
    out = ["--out", str(tmp_path / f"h{suffix}")] if suffix else []
    for _ in range(2):  # the same error again: nothing was left behind
        assert main(["predict", str(model), str(img), *out]) == 2
        out_text, err = capsys.readouterr()
        assert out_text == "" and err.count("\n") == 1, err
        assert err.startswith(f"convnet predict: error: {model}: the network's scores are not "
                              "finite")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["huge.npz", "img.png"]


@pytest.mark.parametrize("text, kept", [
    (b"", b""), (b"a\n", b"a\n"), (b"half", b""), (b"a\nb\nhal", b"a\nb\n"),
    (b"x" * 700 + b"\n" + b"y" * 2000, b"x" * 700 + b"\n"),   # the newline blocks back
    (b"z" * 3000, b""),
], ids=["empty", "whole", "half", "half-after-two", "blocks-back", "no-newline"])
def test_complete_lines_cuts_only_a_half_last_line_reading_from_the_end(tmp_path, monkeypatch,
                                                                        text, kept):
    import builtins

    f = tmp_path / "out.csv"
    f.write_bytes(text)
    read = []
    real_open = builtins.open

    class Counting:
        def __init__(self, fh):
            self.fh = fh

        def read(self, n=-1):
            data = self.fh.read(n)
            read.append(len(data) if n is not None and n >= 0 else -1)
            return data

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    monkeypatch.setattr(builtins, "open", lambda *a, **k: Counting(real_open(*a, **k)))
    predict_cli._complete_lines(f, block=256)
    monkeypatch.undo()
    assert f.read_bytes() == kept
    assert -1 not in read and all(n <= 256 for n in read)  # never the whole file at once
