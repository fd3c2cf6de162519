"""convnet.safety (the shared rules) and SECURITY.md (the promises and caps) agree with the code."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import convnet as cn
from convnet.cli.main import LIMITS, make_parser
from convnet.errors import ConfigError, DataError, InputError, SpecError
from convnet.safety import (
    CAPS,
    cap,
    caps,
    check_finite_scores,
    dumps_finite_json,
    excerpt,
    open_regular,
    parse_size,
    read_capped,
    read_regular,
)

SECURITY = Path(__file__).resolve().parents[1] / "SECURITY.md"


def test_security_md_lists_every_cap_with_its_default_flag_and_variable():
    text = SECURITY.read_text(encoding="utf-8")
    for c in CAPS.values():
        row = next((line for line in text.splitlines() if line.startswith(f"| `{c.name}`")), "")
        assert row, f"SECURITY.md has no row for {c.name}"
        assert f"{c.default:,}" in row and c.env in row
        assert (c.flag or "(none)") in row


def test_every_cap_flag_is_on_the_verbs_that_read_such_files():
    parser = make_parser()
    verbs = parser._subparsers._group_actions[0].choices  # noqa: SLF001 - argparse's own table
    for verb, names in LIMITS.items():
        help_text = verbs[verb].format_help()
        for name in names:
            assert CAPS[name].flag in help_text and CAPS[name].env in help_text


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=300) | st.binary(max_size=300), limit=st.integers(1, 80))
def test_excerpts_are_short_escaped_and_printable(text, limit):
    out = excerpt(text, limit)
    assert out.isascii() and out.isprintable()
    assert len(out) <= 10 * limit + 40  # \U0001f600: the longest escape of one character
    if len(text) > limit:
        assert f"({len(text):,} " in out
    bare = excerpt(text, limit, quotes=False)
    assert bare.isascii() and bare.isprintable()


@pytest.mark.parametrize("text, value", [("100", 100), ("2_000", 2000), ("4GiB", 4 * 2**30),
                                         ("500M", 500_000_000), ("1e9", 10**9), ("8KiB", 8192),
                                         (" 3k ", 3000), ("1.5k", 1500), ("2gb", 2 * 10**9)])
def test_parse_size(text, value):
    assert parse_size(text, "--x") == value


@pytest.mark.parametrize("text", ["0", "-1", "1.5", "lots", "", "1e400", "nan", "5 TB extra",
                                  "9" * 30])
def test_parse_size_refuses(text):
    with pytest.raises(ConfigError, match="--x"):
        parse_size(text, "--x")


def test_caps_nest_and_restore(monkeypatch):
    monkeypatch.delenv("CONVNET_MAX_DATA_BYTES", raising=False)
    default = CAPS["data_bytes"].default
    with caps(data_bytes=10):
        with caps(data_bytes=20, image_pixels=None):
            assert cap("data_bytes") == 20
        assert cap("data_bytes") == 10
        with pytest.raises(ConfigError):
            with caps(nope=1):
                pass
        with pytest.raises(ConfigError):
            with caps(data_bytes=0):
                pass
    assert cap("data_bytes") == default
    monkeypatch.setenv("CONVNET_MAX_DATA_BYTES", "123")
    assert cap("data_bytes") == 123


def test_open_regular_refuses_every_kind_of_special_file(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dev").symlink_to("/dev/null")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    cases = {"fifo": "FIFO", "dir": "directory", "dev": "character device",
             "dangling": "file not found", "missing": "file not found"}
    for name, kind in cases.items():
        with pytest.raises(DataError, match=kind):
            open_regular(tmp_path / name)
    (tmp_path / "ok").write_bytes(b"12345")
    (tmp_path / "link").symlink_to(tmp_path / "ok")  # a link to a regular file is fine
    with open_regular(tmp_path / "link") as f:
        assert f.read() == b"12345"
    with pytest.raises(DataError, match="5 bytes; at most 4"):
        open_regular(tmp_path / "ok", max_bytes=4)
    with pytest.raises(SpecError):  # the error class is the caller's
        read_regular(tmp_path / "fifo", error=SpecError)


def test_read_capped_never_reads_past_the_cap():
    class Endless:
        asked = 0

        def read(self, n):
            self.asked = n
            return b"x" * n

    stream = Endless()
    with pytest.raises(DataError, match="over 1,000 bytes"):
        read_capped(stream, 1000, "here", "the stream")
    assert stream.asked == 1001


def test_spec_files_are_regular_files_under_a_size_cap(tmp_path):
    (tmp_path / "zero.txt").symlink_to("/dev/zero")
    with pytest.raises(SpecError, match="character device"):
        cn.build(str(tmp_path / "zero.txt"))
    os.mkfifo(tmp_path / "pipe.spec")
    with pytest.raises(SpecError, match="FIFO"):
        cn.build(str(tmp_path / "pipe.spec"))
    big = tmp_path / "big.txt"
    big.write_text("INPUT(8x8x1) -> " + " " * 1_000_001 + "FC(2)")
    with pytest.raises(SpecError, match="at most 1,000,000"):
        cn.build(str(big))
    (tmp_path / "ok.txt").write_text("INPUT(8x8x1) -> FC(2)")
    assert cn.build(str(tmp_path / "ok.txt")).output_shape == (2,)
    with pytest.raises(SpecError):  # literal text is never a file name
        cn.build(str(tmp_path / "ok.txt"), literal=True)


def test_check_finite_scores():
    ok = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    assert check_finite_scores(ok, "x") is not None
    bad = ok.copy()
    bad[1, 0] = np.nan
    with pytest.raises(InputError, match=r"here: .*1 NaN or Inf values in 1 of 2 input\(s\)"):
        check_finite_scores(bad, "here")


def test_dumps_finite_json_names_the_field():
    with pytest.raises(InputError, match=r"page: samples\[1\]\.probs\[2\] is nan"):
        dumps_finite_json({"samples": [{"probs": [0.5]}, {"probs": [0.1, 0.2, float("nan")]}]},
                          "page")
    assert dumps_finite_json({"a": [1.0, 2]}, "page") == '{"a": [1.0, 2]}'
    deep: list = []
    for _ in range(10_000):  # no recursion: any nesting is walked
        deep = [deep]
    with pytest.raises(InputError, match="inf"):
        dumps_finite_json({"x": [deep, float("inf")]}, "page")


def test_security_md_names_the_fuzz_harness():
    text = SECURITY.read_text(encoding="utf-8")
    assert "python fuzz/run.py --minutes 10" in text
    assert (SECURITY.parent / "fuzz" / "run.py").is_file()
    assert re.search(r"Ctrl-C exits with status 130", text)
