"""Image files named on a command line: files, folders (recursively) and glob patterns.

``expand_image_paths(["shoe.jpg", "photos/", "scans/**/*.png"])`` gives every file in the order
given (a folder's files and a pattern's matches sorted by name), each once. A file named
explicitly is taken whatever its suffix (Pillow decides whether it can read it); inside a folder
only files with an image suffix Pillow knows are taken (a folder of photos also holds
.txt notes and .DS_Store files nobody meant to classify). A name that is neither an existing
file or folder nor a pattern matching something is a :class:`DataError`, before any image is
read.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path

from convnet.errors import DataError

_MAGIC = set("*?[")


def image_suffixes() -> frozenset[str]:
    """Lower-case suffixes of the formats Pillow can open here (``.png``, ``.jpg``, ...)."""
    from PIL import Image

    return frozenset(ext for ext, fmt in Image.registered_extensions().items()
                     if fmt in Image.OPEN)


def _folder(root: Path, suffixes: frozenset[str]) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in suffixes:
                out.append(Path(dirpath) / name)
    return out


def expand_image_paths(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Every image file the arguments name, in order, without duplicates (see the module)."""
    suffixes = image_suffixes()
    out: list[Path] = []
    seen: set[str] = set()
    missing: list[str] = []
    for arg in paths:
        text = os.fspath(arg)
        p = Path(text).expanduser()
        if p.is_file():
            found = [p]
        elif p.is_dir():
            found = _folder(p, suffixes)
            if not found:
                raise DataError(f"{p}: a folder with no image files (looked for "
                                f"{', '.join(sorted(suffixes)[:6])}, ... in it and below)")
        elif _MAGIC & set(text):
            found = []
            for match in sorted(glob.glob(os.path.expanduser(text), recursive=True)):
                m = Path(match)
                found += _folder(m, suffixes) if m.is_dir() else [m] if m.is_file() else []
            if not found:
                missing.append(f"{text} (a pattern matching no file)")
                continue
        else:
            missing.append(text)
            continue
        for f in found:
            key = os.path.normpath(str(f))
            if key not in seen:
                seen.add(key)
                out.append(f)
    if missing:
        raise DataError(f"no such file or folder: {', '.join(missing)}")
    return out


__all__ = ["expand_image_paths", "image_suffixes"]
