"""The documentation builds with warnings as errors (`mkdocs build --strict`), from this checkout's
docstrings and parsers, and needs nothing from the network; the docstring conversions it relies
on do what they say."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / "_hooks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                           str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "WARNING" not in proc.stderr, proc.stderr[-4000:]
    return out


def test_docs_build_strictly_with_every_verb_and_api_page(site):
    from convnet.cli.main import VERBS
    from convnet.spec import layer_names

    cli = (site / "cli.html").read_text(encoding="utf-8")
    for verb, *_ in VERBS:
        assert f"usage: convnet {verb} [-h]" in cli, verb
    assert "--progress-every" in cli and "--per-class-maps" in cli  # this checkout's parsers
    layers = (site / "guide" / "layers.html").read_text(encoding="utf-8")
    assert all(f"<code>{name}</code>" in layers for name in layer_names())
    # the API reference holds the docstrings (rendered, not as reStructuredText)
    viz = (site / "api" / "viz.html").read_text(encoding="utf-8")
    assert 'id="convnet.viz.common.nice_ticks"' in viz
    assert "&gt;&gt;&gt;" in viz and "<blockquote>" not in viz  # doctests are code blocks
    guide = (site / "guide" / "checkpoints.html").read_text(encoding="utf-8")
    assert "<table>" in guide and "optim/&lt;key&gt;" in guide and ":func:" not in guide
    assert (site / "ARCHITECTURE.html").exists() and (site / "index.html").exists()


def test_the_site_loads_nothing_from_the_network(site):
    external = re.compile(r'<(?:script|link|img)[^>]+(?:src|href)="(?:https?:)?//', re.I)
    for page in site.rglob("*.html"):
        assert not external.search(page.read_text(encoding="utf-8")), page
    for css in site.rglob("*.css"):
        assert "@import url(http" not in css.read_text(encoding="utf-8", errors="replace"), css


def test_rst_habits_become_markdown():
    rst = _load("griffe_rst")
    text = """Intro :func:`~convnet.train.fit` and :class:`convnet.Sequential`.

Grammar::

    spec := chain
      # indented more

After.

>>> 1 + 1
2

====  =======
key   meaning
====  =======
a     first
b     second,
      continued
====  ======="""
    md = rst.rst_to_markdown(text)
    assert "Intro `fit` and `convnet.Sequential`." in md
    assert "Grammar:\n\n```text\nspec := chain\n  # indented more\n```\n\nAfter." in md
    assert "```pycon\n>>> 1 + 1\n2\n```" in md
    assert "| key | meaning |\n|---|---|\n| a | first |\n| b | second, continued |" in md


def test_grouped_arguments_become_one_entry_each():
    rst = _load("griffe_rst")
    text = """Do it.

Args:
    x, y: the two inputs,
        same shape.
    z: alone.

Returns:
    a, b: not an argument list, left alone."""
    out = rst.split_grouped_entries(text)
    assert "    x: the two inputs,\n        same shape.\n    y: the two inputs,\n" in out
    assert "    z: alone." in out and "    a, b: not an argument list" in out
