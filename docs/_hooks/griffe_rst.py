"""A griffe extension: the reStructuredText habits of convnet's docstrings, as Markdown.

The docstrings are written to read well in ``help()`` and to run as doctests: Sphinx roles
(:func:`~convnet.x.y`), ``::`` literal blocks, ``>>>`` examples and simple tables. mkdocstrings
renders docstrings as Markdown, where a ``>>>`` line is a triple block quote and a table of
``=====`` rules is a paragraph. This extension rewrites each docstring's text before it is
parsed, so the API pages show code as code and tables as tables; the source stays as it is.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|class|mod|meth|attr|data|exc|obj|const):`(~?)([^`<]+?)`")
_RULE = re.compile(r"^ *=+( +=+)+ *$")


def _role(m: re.Match[str]) -> str:
    tilde, target = m.group(1), m.group(2).strip()
    shown = target.rsplit(".", 1)[-1] if tilde else target
    return f"`{shown}`"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _table(lines: list[str]) -> list[str]:
    """An rST simple table (rules of ``=``; the first rule's runs mark the columns) as a
    Markdown table; a row whose first cell is empty continues the previous row."""
    rule = lines[0]
    cols = [(m.start(), m.end()) for m in re.finditer(r"=+", rule)]
    body = [ln for ln in lines[1:] if not _RULE.match(ln)]
    rows: list[list[str]] = []
    for ln in body:
        if not ln.strip():
            continue
        cells = []
        for i, (a, _b) in enumerate(cols):
            end = cols[i + 1][0] if i + 1 < len(cols) else len(ln)
            cells.append(ln[a:end].strip())
        if rows and not cells[0]:
            rows[-1] = [f"{p} {c}".strip() for p, c in zip(rows[-1], cells, strict=True)]
        else:
            rows.append(cells)
    rules = sum(1 for ln in lines if _RULE.match(ln))
    head = rows[0] if rules == 3 else [""] * len(cols)
    data = rows[1:] if rules == 3 else rows
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in data]
    return out


_SECTION = re.compile(r"^( *)(Args|Arguments|Parameters|Attributes|Keyword Args):\s*$")
_GROUPED = re.compile(r"^( +)(\w+(?:, *\w+)+)( *\([^)]*\))?: (.*)$")


def split_grouped_entries(text: str) -> str:
    """``a, b: what they are`` in an Args/Attributes section, which the Google style reads as
    one parameter named "a, b", becomes one entry per name, each with the description."""
    lines = text.splitlines()
    out: list[str] = []
    section_indent: int | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        m = _SECTION.match(line)
        if m:
            section_indent = len(m.group(1))
            out.append(line)
            i += 1
            continue
        if section_indent is not None and line.strip() and _indent(line) <= section_indent:
            section_indent = None
        g = _GROUPED.match(line) if section_indent is not None else None
        if g and len(g.group(1)) > section_indent:
            pad, names, kind, desc = g.group(1), g.group(2), g.group(3) or "", g.group(4)
            j = i + 1
            while j < len(lines) and lines[j].strip() and _indent(lines[j]) > len(pad):
                j += 1
            for name in (n.strip() for n in names.split(",")):
                out.append(f"{pad}{name}{kind}: {desc}")
                out += lines[i + 1:j]
            i = j
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


def rst_to_markdown(text: str) -> str:
    """Roles to code spans, doctests and ``::`` blocks to fenced code, simple tables to
    Markdown tables."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if _RULE.match(line):  # a simple table runs to its closing rule and a blank line
            j, rules = i + 1, 1
            while j < len(lines):
                if _RULE.match(lines[j]):
                    rules += 1
                    if rules >= 2 and (j + 1 >= len(lines) or not lines[j + 1].strip()):
                        # 2 rules: no header; 3 rules: a header row between the first two
                        if rules == 3 or not any(_RULE.match(x) for x in lines[j + 1:j + 4]):
                            break
                j += 1
            block = lines[i:j + 1]
            if rules >= 2:
                pad = " " * _indent(line)
                out += [pad + row for row in _table([ln[len(pad):] for ln in block])]
                i = j + 1
                continue
        if stripped.startswith(">>>"):  # a doctest: until the next blank line
            pad = " " * _indent(line)
            block = []
            while i < len(lines) and lines[i].strip():
                block.append(lines[i][len(pad):] if lines[i].startswith(pad) else lines[i])
                i += 1
            out += [pad + "```pycon", *(pad + b for b in block), pad + "```"]
            continue
        if stripped.endswith("::") and not stripped.startswith(".."):
            # "text::" then an indented block: "text:" and the block fenced
            base = _indent(line)
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            if j < len(lines) and _indent(lines[j]) > base:
                inner = _indent(lines[j])
                block_end = j
                while block_end < len(lines) and (not lines[block_end].strip()
                                                  or _indent(lines[block_end]) >= inner):
                    block_end += 1
                while block_end > j and not lines[block_end - 1].strip():
                    block_end -= 1
                head = line.rstrip()[:-2].rstrip()
                if head.strip():
                    out.append(_ROLE.sub(_role, head) + ":")
                    out.append("")
                pad = " " * base
                out.append(pad + "```text")
                out += [pad + ln[inner:] if ln.strip() else "" for ln in lines[j:block_end]]
                out.append(pad + "```")
                i = block_end
                continue
        out.append(_ROLE.sub(_role, line))
        i += 1
    return "\n".join(out)


class RstToMarkdown(griffe.Extension):
    """Rewrites every docstring with :func:`rst_to_markdown` as griffe loads it."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:  # noqa: D102
        if obj.docstring is not None:
            obj.docstring.value = rst_to_markdown(split_grouped_entries(obj.docstring.value))
