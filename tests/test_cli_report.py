"""``convnet summary`` and ``convnet explain``: output, exit status, one-line errors."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest

from convnet.cli.main import main

SEED = "INPUT(32x32x3) -> CONV(10,F=5,S=1,P=2)"


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_summary_vgg16_table(capsys):
    code, out, err = run(capsys, "summary", "vgg16")
    assert code == 0 and err == ""
    assert "Parameters: 138,357,544" in out and "FLOPs = 2 x MACs" in out


@pytest.mark.parametrize("fmt", ["table", "markdown", "csv", "json"])
def test_summary_formats(capsys, fmt):
    code, out, _ = run(capsys, "summary", SEED, "--format", fmt, "--batch", "2")
    assert code == 0
    if fmt == "json":
        doc = json.loads(out)
        assert doc["batch"] == 2 and doc["totals"]["params"] == 760
    elif fmt == "csv":
        rows = list(csv.reader(io.StringIO(out)))
        assert rows[0][0] == "index" and rows[2][4] == "760"
    else:
        assert "760" in out and "32x32x10" in out


def test_summary_input_override_and_file(capsys, tmp_path):
    code, out, _ = run(capsys, "summary", "fcn", "--input", "56x56x1", "--format", "json")
    assert code == 0 and json.loads(out)["input_shape"] == [56, 56, 1]
    path = tmp_path / "net.txt"
    path.write_text(SEED)
    code, out, _ = run(capsys, "summary", str(path), "--format", "json")
    assert code == 0 and json.loads(out)["totals"]["params"] == 760


@pytest.mark.parametrize(("argv", "expected"), [
    (["summary", "vgg17"], "Did you mean 'vgg16'?"),
    (["summary", "INPUT(7x7x1) -> CONV(1,F=3,S=3)"], "stride 3 does not fit"),
    (["summary", SEED, "--input", "32x32"], "must read HxWxD"),
    (["summary", SEED, "--batch", "0"], "expected a whole number >= 1"),
    (["summary", SEED, "--format", "xml"], "invalid choice"),
    (["summary", "missing/model.npz"], "missing/model.npz"),
    (["explain", "INPUT(7x7x1) -> CONV(1,F=3"], "error:"),
])
def test_errors_are_one_line_exit_2(capsys, argv, expected):
    # our errors return 2 from main(); argparse's exit with 2 (SystemExit)
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    _, err = capsys.readouterr()
    assert code == 2
    assert "Traceback" not in err
    # one line naming the verb (a spec error adds the spec line and a caret under the column)
    assert f"convnet {argv[0]}: error: " in err and expected in err


def test_explain_prints_derivation(capsys):
    code, out, err = run(capsys, "explain", "alexnet")
    assert code == 0 and err == ""
    flat = " ".join(out.split())
    assert "(227 - 11 + 2*0)/4 + 1 = 55" in flat and "34,944" in flat and "105,705,600" in flat


def test_explain_failure_prints_explanation_and_exits_2(capsys):
    code, out, err = run(capsys, "explain", "INPUT(7x7x1) -> CONV(1,F=3,S=2) -> CONV(1,F=2,S=2)")
    assert code == 2
    assert "conv1: CONV(1,F=3,S=2)   7x7x1 -> 3x3x1" in out
    assert "conv2: CONV(1,F=2,S=2)   3x3x1 -> does not fit" in out
    assert "(3 - 2 + 2*0)/2 + 1 = 1.50 is not a whole number" in " ".join(out.split())
    code, out, err = run(capsys, "explain", "INPUT(7x7x1) -> CONV(1,F=3,S=3)")
    assert code == 2
    assert "stride 3 does not fit" in out
    assert len(err.strip().splitlines()) == 1 and err.startswith("convnet explain: error: conv1")


def test_console_script_runs():
    proc = subprocess.run([sys.executable, "-m", "convnet.cli.main", "summary", "lenet5",
                           "--format", "json"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["totals"]["params"] == 61_706
