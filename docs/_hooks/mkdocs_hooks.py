"""MkDocs hooks: the pages made from the code at build time, so they cannot fall behind it.

- ``index.md``: the README (set-up, the tour, measured numbers, conventions).
- ``cli.md``: every ``convnet`` verb's ``--help``, from the argparse parsers themselves.
- ``guide/layers.md``: the architecture language's layer table, from ``convnet.spec.LAYERS``,
  and the zoo's architectures with their descriptions.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
HELP_WIDTH = "100"
# the pages describe this checkout's code, whichever copy of convnet is installed
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))


def _readme() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    # the README speaks of docs/ARCHITECTURE.md; on the site it is a page
    return text.replace("`docs/ARCHITECTURE.md`", "[the architecture](ARCHITECTURE.md)")


def _help(parser: Any) -> str:
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_WIDTH  # argparse wraps to the terminal: a fixed width here
    try:
        return parser.format_help()
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def _fence(text: str) -> str:
    return "```text\n" + text.rstrip() + "\n```\n"


def cli_markdown() -> str:
    """Every verb's help, as ``convnet VERB --help`` prints it."""
    from convnet.cli.main import VERBS, make_parser

    parser = make_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    parts = [
        "# Command line\n",
        "`convnet VERB ...`: one verb per job. An error is one line, `convnet VERB: error: ...`,",
        "and exit status 2, never a traceback. This page is generated from the command's own",
        "argument parsers when the documentation is built.\n",
        _fence(_help(parser)),
    ]
    for verb, _module, summary in VERBS:
        if verb not in sub.choices:
            continue
        parts += [f"## convnet {verb}\n", f"{summary[0].upper()}{summary[1:]}.\n",
                  _fence(_help(sub.choices[verb]))]
    return "\n".join(parts)


def _plain(text: str) -> str:
    """Text for a Markdown table cell: ``H*W*D`` stays a product, not emphasis."""
    return re.sub(r"([*_|])", r"\\\1", " ".join(text.split()))


def layers_markdown() -> str:
    """The language's layers (name, arguments in order with defaults, aliases, purpose) and
    the zoo."""
    from convnet.spec import parser as spec
    from convnet.spec.zoo import ZOO, describe

    aliases: dict[str, list[str]] = {}
    for alias, name in spec._ALIASES.items():
        aliases.setdefault(name, []).append(alias)
    rows = ["| layer | arguments (positional first, with defaults) | also written | what it is |",
            "|---|---|---|---|",
            "| `INPUT` | `INPUT(HxWxD)` or `INPUT(n)` | | the input volume (or vector) |"]
    for name, d in spec.LAYERS.items():
        sig = d.signature.replace(" (takes no arguments)", "")
        positional = f" (positional: {', '.join(d.positional)})" if d.positional else ""
        also = ", ".join(f"`{a}`" for a in sorted(aliases.get(name, [])))
        rows.append(f"| `{name}` | `{sig}`{positional} | {also} | {_plain(d.purpose)} |")
    rows += [
        "| `RES` | `RES[main]` or `RES[main \\| shortcut]` | | residual block: the main branch's "
        "output plus the block's input (projected by a 1x1 CONV, and a BN when the branch has "
        "BN, where the shapes differ), or plus the shortcut's output |",
        "| `CAT` | `CAT[branch \\| branch \\| ...]` | `CONCAT` | branches from one input, "
        "their outputs stacked along depth |",
    ]
    zoo = ["| name | architecture | |", "|---|---|---|"]
    for name, text in ZOO.items():
        zoo.append(f"| `{name}` | `{' '.join(text.split())}` | {_plain(describe(name))} |")
    return "\n".join([
        "# Layers and the zoo\n",
        "The layers of the [architecture language](language.md), generated from the parser's",
        "own table (`convnet.spec.parser.LAYERS`) when the documentation is built. Names are",
        "case-insensitive; pairs are written `3x5` or `(3,5)`; a single number means a square.\n",
        *rows, "",
        "## The zoo\n",
        "Named architectures: give the name wherever a spec is expected",
        "(`convnet summary vgg16`, `cn.build(\"lenet5\")`).\n",
        *zoo, "",
    ])


def on_files(files: Files, config: Any) -> Files:
    """Add the generated pages."""
    for uri, make in (("index.md", _readme), ("cli.md", cli_markdown),
                      ("guide/layers.md", layers_markdown)):
        if files.get_file_from_path(uri) is None:
            files.append(File.generated(config, uri, content=make()))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    """README links into the repository (``bench/README.md``) have no page on the site: show
    them as code instead of broken links."""
    if page.file.src_uri != "index.md":
        return markdown
    return re.sub(r"\[([^\]]+)\]\((?!https?:|#|ARCHITECTURE\.md)([^)]+)\)", r"`\1`", markdown)


__all__ = ["cli_markdown", "layers_markdown", "on_files", "on_page_markdown"]
