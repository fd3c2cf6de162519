"""The command line: every hostile case ends as `convnet VERB: error: ...` on one line with exit
status 2 (130 for Ctrl-C, quietly), never a traceback; arguments are validated before anything
runs. Most cases run main() in-process; a representative few run `python -m convnet.cli.main`."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import convnet as cn
from convnet import errors
from convnet.cli import main as cli_main
from convnet.cli.main import main
from convnet.data import write_idx


def _one_line(err: str, verb: str) -> str:
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"convnet {verb}: error: "), err
    return lines[0]


# ------------------------------------------------------------------------------------ Ctrl-C
def test_ctrl_c_during_start_up_is_exit_130_and_quiet(monkeypatch, capsys):
    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_main, "make_parser", interrupted)
    assert main(["summary", "lenet5"]) == 130
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_ctrl_c_inside_a_verb_is_exit_130_and_quiet(monkeypatch, capsys):
    import convnet.cli.summary as summary

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(summary, "run", interrupted)
    assert main(["summary", "lenet5"]) == 130
    assert capsys.readouterr().err == ""


_SIGINT_AT_START = r"""
import os, signal, sys
import convnet.cli.main as m
make_parser = m.make_parser
def with_a_signal():
    os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, while the verbs are being loaded
    return make_parser()
m.make_parser = with_a_signal
sys.exit(m.main(["summary", "lenet5"]))
"""


def test_a_real_sigint_at_start_up_in_a_subprocess():
    proc = subprocess.run([sys.executable, "-c", _SIGINT_AT_START], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 130 and proc.stderr == "" and proc.stdout == ""


# ----------------------------------------------------------------- every ConvnetError: 1 line
@pytest.mark.parametrize("cls", [getattr(errors, n) for n in errors.__all__])
def test_every_convnet_error_is_one_line_and_exit_2(monkeypatch, capsys, cls):
    import convnet.cli.summary as summary

    def fails(args):
        raise cls("something is wrong: what, where, why")

    monkeypatch.setattr(summary, "run", fails)
    assert main(["summary", "lenet5"]) == 2
    line = _one_line(capsys.readouterr().err, "summary")
    assert line.endswith("something is wrong: what, where, why")


@pytest.mark.parametrize("argv", [
    ["visualize", "digits", "--samples", "-1"],
    ["visualize", "digits", "--max-maps", "0"],
    ["visualize", "digits", "--seed", "-3"],
    ["plot", "digits", "--max-maps", "0"],
    ["plot", "digits", "--seed", "x"],
    ["scan", "m.npz", "x.png", "-o", "d", "--top", "0"],
    ["predict", "m.npz", "x.png", "--max-image-pixels", "0"],
    ["train", "--max-data-bytes", "lots"],
    ["eval", "m.npz", "--max-checkpoint-bytes", "-5"],
])
def test_bad_arguments_are_refused_before_anything_runs(capsys, argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"convnet {argv[0]}: error: argument ")


def _idx_dir(d):
    d.mkdir()
    for part, n in (("train", 6), ("t10k", 4)):
        write_idx(d / f"{part}-images-idx3-ubyte", np.zeros((n, 8, 8), np.uint8))
        write_idx(d / f"{part}-labels-idx1-ubyte", np.arange(n, dtype=np.uint8) % 2)
    return d


def test_cap_flags_and_variables_reach_the_readers(tmp_path, capsys, monkeypatch):
    data = _idx_dir(tmp_path / "idx")
    argv = ["train", "--data", str(data), "--arch", "INPUT(8x8x1) -> FC(2)", "--epochs", "1",
            "--out", str(tmp_path / "run")]
    assert main([*argv, "--max-data-bytes", "100"]) == 2
    line = _one_line(capsys.readouterr().err, "train")
    assert "over the limit of 100 bytes" in line and "--max-data-bytes" in line
    monkeypatch.setenv("CONVNET_MAX_DATA_BYTES", "100")
    assert main(argv) == 2
    assert "over the limit of 100 bytes" in _one_line(capsys.readouterr().err, "train")
    monkeypatch.setenv("CONVNET_MAX_DATA_BYTES", "a lot")
    assert main(argv) == 2
    assert "CONVNET_MAX_DATA_BYTES" in _one_line(capsys.readouterr().err, "train")
    monkeypatch.delenv("CONVNET_MAX_DATA_BYTES")
    assert main([*argv, "--max-data-bytes", "1MiB"]) == 0  # a flag raises it again


def test_plot_confusion_refuses_a_data_set_of_other_classes(tmp_path, capsys):
    net = cn.build("INPUT(8x8x1) -> FC(10)", seed=0)
    model = cn.save(net, tmp_path / "m.npz", classes=[str(i) for i in range(10)])
    folder = tmp_path / "two"
    for cls in ("a", "b"):
        (folder / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(folder / cls / f"{i}.png")
    code = main(["plot", str(model), "--what", "confusion", "--data", str(folder), "-o",
                 str(tmp_path / "c.png")])
    line = _one_line(capsys.readouterr().err, "plot")
    assert code == 2 and "10 outputs" in line and "2 classes" in line
    assert not (tmp_path / "c.png").exists()


def test_fit_seed_must_be_a_whole_number():
    net = cn.build("INPUT(4x4x1) -> FC(2)", seed=0)
    x, y = np.zeros((4, 4, 4, 1), np.float32), np.array([0, 1, 0, 1])
    for seed in (-1, 1.5, "0", True):
        with pytest.raises(cn.ConfigError, match="seed"):
            cn.fit(net, (x, y), epochs=1, seed=seed)


# ------------------------------------------------------------- representative subprocesses
def _run(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "convnet.cli.main", *argv],
                          capture_output=True, text=True, timeout=timeout)


def test_a_fifo_named_like_a_checkpoint_does_not_hang_the_command(tmp_path):
    fifo = tmp_path / "x.npz"
    os.mkfifo(fifo)
    img = tmp_path / "i.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(img)
    proc = _run("predict", str(fifo), str(img), timeout=60)
    assert proc.returncode == 2
    assert "is a FIFO" in _one_line(proc.stderr, "predict")


def test_a_spec_file_linked_to_dev_zero_is_refused_from_the_command_line(tmp_path):
    (tmp_path / "arch.txt").symlink_to("/dev/zero")
    proc = _run("summary", str(tmp_path / "arch.txt"), timeout=60)
    assert proc.returncode == 2
    assert "character device" in _one_line(proc.stderr, "summary")


_SIGINT_DURING_IMPORT = r"""
import builtins, os, signal, sys
real_import = builtins.__import__
def importing(name, *args, **kwargs):
    if name == "numpy":                      # a real Ctrl-C while convnet is being imported
        builtins.__import__ = real_import
        os.kill(os.getpid(), signal.SIGINT)
    return real_import(name, *args, **kwargs)
builtins.__import__ = importing
import convnet_launch
sys.exit(convnet_launch.main())
"""


def test_a_real_sigint_while_convnet_is_imported_by_the_console_command():
    """The `convnet` command's entry point (convnet_launch) catches Ctrl-C before the package is
    imported (importing it takes most of a second)."""
    proc = subprocess.run([sys.executable, "-c", _SIGINT_DURING_IMPORT, "summary", "lenet5"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 130 and proc.stderr == "" and proc.stdout == ""
