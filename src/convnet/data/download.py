"""Downloading data set files from a list of mirrors into a cache, each verified by its MD5.

The MNIST host often refuses connections, so every data set has a list of mirrors tried in
order. A file is written to a temporary name in the cache directory and renamed into place only
after its size and its published MD5 check out: a truncated or corrupt download is deleted and
reported, never used, and an interrupted download never leaves a half file under the real name.
A download is cut off at the ``data_bytes`` cap (:mod:`convnet.safety`), whatever a mirror sends.

The cache directory is the ``cache_dir`` argument, else ``$CONVNET_DATA``, else
``$XDG_CACHE_HOME/convnet``, else ``~/.cache/convnet``.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from convnet.errors import DataError
from convnet.safety import CAPS, cap, create_temp, open_regular

#: Published MD5s of the distributed (gzip) files.
#: MNIST: as listed by torchvision and the ossci mirror. Fashion-MNIST: the table of its README
#: (zalandoresearch/fashion-mnist, also shipped in Debian's dataset-fashion-mnist docs).
MD5: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    "cifar10": {
        "cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a",
    },
}

#: MD5s of the *uncompressed* IDX content. Debian's dataset-fashion-mnist package recompresses
#: the .gz files (different gzip header, so different .gz MD5s) while the content is unchanged;
#: these let such copies be verified too. Computed from the Debian files; their sizes match the
#: headers (47040016, 60008, 7840016, 10008 bytes).
CONTENT_MD5: dict[str, dict[str, str]] = {
    "fashion-mnist": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}

#: Mirrors, tried in order. A file's URL is the mirror plus its name.
MIRRORS: dict[str, list[str]] = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ],
    "fashion-mnist": [
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ],
    "cifar10": [
        "https://www.cs.toronto.edu/~kriz/",
    ],
}

_CHUNK = 1 << 20
# Some hosts answer Python's default agent with 403 Forbidden.
_USER_AGENT = "convnet-data/0.1 (+https://pypi.org/project/convnet)"


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """The data cache directory: ``override``, ``$CONVNET_DATA``, or ``~/.cache/convnet``."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get("CONVNET_DATA")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "convnet"


def md5_file(path: str | os.PathLike) -> str:
    """Hex MD5 of a file, read in 1 MiB chunks (MD5 because that is what the data sets publish:
    this checks integrity, not authenticity). The file must be a regular file (a FIFO in the
    cache would hang the read) no larger than the ``data_bytes`` cap."""
    digest = hashlib.md5(usedforsecurity=False)
    with open_regular(path, what="data file", cap_name="data_bytes") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _TooLarge(Exception):
    """A download that goes past the ``data_bytes`` cap (or announces it will)."""


def _fetch(url: str, tmp, timeout: float) -> str:
    """Stream ``url`` into the open file ``tmp``; return its MD5. Raises on a short body, and
    stops (``_TooLarge``) as soon as the body passes the ``data_bytes`` cap: a mirror that
    streams without end cannot fill the disk."""
    digest = hashlib.md5(usedforsecurity=False)
    limit = cap("data_bytes")
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        try:
            expected = int(length) if length is not None else None
        except ValueError:
            expected = None
        if expected is not None and expected > limit:
            raise _TooLarge(f"announces {expected:,} bytes")
        got = 0
        while True:
            chunk = response.read(_CHUNK)
            if not chunk:
                break
            got += len(chunk)
            if got > limit:
                raise _TooLarge(f"sent more than {limit:,} bytes")
            tmp.write(chunk)
            digest.update(chunk)
        if expected is not None and got != expected:
            raise http.client.IncompleteRead(b"", expected - got)
    return digest.hexdigest()


def download_file(
    filename: str,
    md5: str,
    mirrors: Sequence[str],
    directory: str | os.PathLike,
    *,
    timeout: float = 30.0,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Fetch ``filename`` into ``directory`` from the first mirror that serves it intact.

    A file already in ``directory`` with the right MD5 is used as is (one whose MD5 is wrong is
    deleted and fetched again). Each attempt streams into a temporary file beside the target,
    checks the byte count against ``Content-Length`` and the MD5 against ``md5``, and only then
    renames it into place (atomic on POSIX). Anything else deletes the temporary file and moves on
    to the next mirror.

    Returns the path of the verified file. Raises :class:`DataError` naming the file and every
    mirror tried with what went wrong there.
    """
    directory = Path(directory)
    target = directory / filename
    if target.exists():
        found = md5_file(target)
        if found == md5:
            return target
        if progress:
            progress(f"{target}: MD5 {found} is not the published {md5}; fetching it again")
        target.unlink()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the data cache directory {directory}: {exc}") from exc

    failures: list[str] = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + filename
        if progress:
            progress(f"downloading {url}")
        fd, tmp_name = create_temp(directory, filename)  # umask permissions, not mkstemp's 0600
        tmp_path = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as tmp:
                found = _fetch(url, tmp, timeout)
                tmp.flush()
                os.fsync(tmp.fileno())
            if found != md5:
                failures.append(
                    f"{url}: MD5 {found} does not match the published {md5} "
                    "(corrupt file, deleted)"
                )
                continue
            os.replace(tmp_path, target)
            return target
        except _TooLarge as exc:
            c = CAPS["data_bytes"]
            failures.append(f"{url}: {exc}, over the {cap('data_bytes'):,}-byte limit for one "
                            f"data file (deleted; {c.flag} or {c.env} raise it)")
        except urllib.error.HTTPError as exc:
            failures.append(f"{url}: HTTP {exc.code} {exc.reason}")
        except http.client.IncompleteRead as exc:
            failures.append(
                f"{url}: truncated download, {exc.expected} byte(s) missing (deleted)"
            )
        except urllib.error.URLError as exc:
            failures.append(f"{url}: {exc.reason}")
        except (OSError, http.client.HTTPException) as exc:
            failures.append(f"{url}: {type(exc).__name__}: {exc}")
        finally:
            # Never leave a partial or rejected file behind.
            tmp_path.unlink(missing_ok=True)
    raise DataError(
        f"could not download {filename} into {directory}: tried {len(failures)} mirror(s):\n  "
        + "\n  ".join(failures or ["(no mirrors given)"])
    )


def download_dataset(
    name: str,
    directory: str | os.PathLike,
    *,
    mirrors: Sequence[str] | None = None,
    timeout: float = 30.0,
    progress: Callable[[str], None] | None = None,
) -> list[Path]:
    """Download every file of the named data set (keys of :data:`MD5`) into ``directory``."""
    if name not in MD5:
        raise DataError(f"no download is known for {name!r}; known: {', '.join(MD5)}")
    mirrors = list(mirrors) if mirrors is not None else MIRRORS[name]
    return [
        download_file(fname, md5, mirrors, directory, timeout=timeout, progress=progress)
        for fname, md5 in MD5[name].items()
    ]
