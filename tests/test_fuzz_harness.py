"""fuzz/run.py through its real entry: a few seconds of atheris on the spec reader find nothing,
and a missing atheris is one error line (exit 2), not a finding (issue 20)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

RUN = Path(__file__).resolve().parents[1] / "fuzz" / "run.py"


def test_a_short_fuzz_run_tries_inputs_and_finds_nothing(tmp_path):
    proc = subprocess.run([sys.executable, str(RUN), "--minutes", "0.1", "--readers", "spec",
                           "--dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=180)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    m = re.search(r"spec: ([\d,]+) inputs, (\d+) finding\(s\), coverage (\d+) edges", out)
    assert m, out
    runs, findings, cov = int(m[1].replace(",", "")), int(m[2]), int(m[3])
    assert runs > 0 and findings == 0 and cov > 0, out   # how many: the machine's speed
    assert re.search(r"total: [\d,]+ inputs in 0.1 minutes, 0 finding\(s\)", out), out
    assert any((tmp_path / "corpus" / "spec").iterdir())  # the seeds went to --dir, not fuzz/
    assert not (tmp_path / "crashes" / "spec").exists() or \
        not any((tmp_path / "crashes" / "spec").iterdir())


def test_without_atheris_one_error_line_and_exit_2(monkeypatch, capsys, tmp_path):
    spec = importlib.util.spec_from_file_location("fuzz_run", RUN)
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    monkeypatch.setitem(sys.modules, "atheris", None)  # as where atheris is not installed
    assert run.main(["--minutes", "0.1", "--readers", "spec", "--dir", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == ["fuzz/run.py: error: atheris is not installed: pip install "
                                "'convnet[fuzz]' (atheris==2.3.0)"]
    assert not (tmp_path / "corpus").exists()  # nothing was started


def test_fuzz_outputs_are_ignored_by_git():
    text = (RUN.parents[1] / ".gitignore").read_text().split()
    assert "fuzz/corpus/" in text and "fuzz/crashes/" in text
