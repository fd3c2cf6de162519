"""``load_dataset``: one entry point from a name or a path to ``(train, test)``.

Names:
    - ``digits``: the UCI 8x8 handwritten digits bundled with scikit-learn (1,797 images, no
      network), split 80/20, stratified, by a fixed seed.
    - ``mnist``, ``fashion-mnist`` (alias ``fashion``): IDX files looked up in ``data_dir``, then
      ``<cache>/<name>/``, then (Fashion-MNIST) Debian's ``/usr/share/datasets/fashion-mnist``;
      with ``download=True`` fetched from the mirrors into the cache, MD5-verified.
    - ``cifar10`` (alias ``cifar-10``): python batches in ``data_dir`` or
      ``<cache>/cifar10/cifar-10-batches-py``; with ``download=True`` the archive is fetched,
      verified and unpacked.

Paths: a directory holding IDX files, CIFAR-10 batches, one sub-folder per class of images, or
packed shards (``convnet pack``; opened as :class:`~convnet.data.shards.ShardedDataset`, read
from disk batch by batch).
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from convnet.errors import DataError
from convnet.safety import cap, excerpt, open_regular, too_big

from . import cifar
from . import download as _dl
from .dataset import Dataset, DataSplits, stratified_split
from .idx import IMAGES_MAGIC, load_idx_pair, read_idx_header
from .images import convert_images, load_image_folder

DIGIT_CLASSES = [str(i) for i in range(10)]
FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
#: Where Debian's dataset-fashion-mnist package installs the files.
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
ALIASES = {
    "digits": "digits", "mnist": "mnist", "fashion-mnist": "fashion-mnist",
    "fashion": "fashion-mnist", "fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist",
    "cifar10": "cifar10", "cifar-10": "cifar10", "cifar": "cifar10",
    "fashion-seg": "fashion-seg", "fashion-segmentation": "fashion-seg",
    "fashion_seg": "fashion-seg",
}
#: Entries of a downloaded archive looked at before it is refused (CIFAR-10's has 8).
_MAX_TAR_MEMBERS = 1_000
#: Share of the digits held out as the test set, and the seed of that split.
DIGITS_TEST_FRACTION = 0.2

Progress = Callable[[str], None] | None


def dataset_names() -> list[str]:
    """The canonical built-in names."""
    return sorted(set(ALIASES.values()))


def load_digits(test_fraction: float = DIGITS_TEST_FRACTION, seed: int = 0) -> DataSplits:
    """The UCI handwritten digits from scikit-learn, as 8x8x1 images in ``[0, 1]``.

    Pixels are counts 0..16 (ink in 4x4 blocks of the 32x32 scans), divided by 16. The split is
    stratified and fixed by ``seed``: 1,438 train and 359 test images for the defaults
    (each class rounds its own 20%).

    Shape:
        - train.x ``(1438, 8, 8, 1)``, test.x ``(359, 8, 8, 1)`` float32
    """
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = (np.asarray(bunch.images, dtype=np.float32) / np.float32(16.0))[..., None]
    y = np.asarray(bunch.target, dtype=np.int64)
    full = Dataset(x, y, DIGIT_CLASSES, name="digits", hflip=False, source="scikit-learn")
    rest, test = stratified_split(y, test_fraction, seed, 10)
    return DataSplits(full.subset(rest), full.subset(test))


def _find_idx(directory: Path) -> dict[str, Path] | None:
    """The four MNIST-layout files in ``directory`` (plain or .gz), or None if any is missing."""
    found = {}
    for key, stem in IDX_FILES.items():
        for candidate in (directory / stem, directory / f"{stem}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            return None
    return found


def load_idx_dataset(
    directory: str | os.PathLike, name: str = "idx", classes: Sequence[str] | None = None,
    hflip: bool = False,
) -> DataSplits:
    """Load MNIST-layout IDX files (``train-images-idx3-ubyte[.gz]`` etc.) from a directory.

    Shape:
        - train.x ``(N, rows, cols, 1)`` float32 in ``[0, 1]`` (pixels / 255)

    Raises :class:`DataError` naming the missing or invalid file.
    """
    directory = Path(directory)
    files = _find_idx(directory)
    if files is None:
        wanted = ", ".join(f"{s}[.gz]" for s in IDX_FILES.values())
        raise DataError(f"{directory}: missing IDX files; expected {wanted}")
    # The splits are validated together from their headers, before any payload is read: a test
    # file of another image size must not surface only after training.
    sizes = {part: read_idx_header(files[f"{part}_images"], IMAGES_MAGIC).dims[1:]
             for part in ("train", "test")}
    if sizes["train"] != sizes["test"]:
        (th, tw), (eh, ew) = sizes["train"], sizes["test"]
        raise DataError(
            f"{directory}: the training images are {th}x{tw} ({files['train_images'].name}) "
            f"but the test images are {eh}x{ew} ({files['test_images'].name}); both splits of "
            "a data set must have one image size (files of two different data sets?)"
        )
    splits = []
    for part in ("train", "test"):
        images, labels = load_idx_pair(files[f"{part}_images"], files[f"{part}_labels"])
        x = images.astype(np.float32)[..., None]
        x /= 255.0
        names = list(classes) if classes is not None else [
            str(i) for i in range(int(labels.max(initial=0)) + 1)
        ]
        if labels.size and labels.max() >= len(names):
            raise DataError(
                f"{files[f'{part}_labels']}: label {labels.max()} but {name} has "
                f"{len(names)} classes (0..{len(names) - 1})"
            )
        splits.append(Dataset(x, labels.astype(np.int64), names, name=name, hflip=hflip,
                              source=str(directory)))
    train, test = splits
    check_splits(train, test, directory)
    if classes is None and train.num_classes != test.num_classes:
        # Class lists inferred from each file's labels must agree.
        k = max(train.num_classes, test.num_classes)
        names = [str(i) for i in range(k)]
        train.classes = test.classes = names
    return DataSplits(train, test)


def check_splits(train: Dataset, test: Dataset, source: Any) -> None:
    """Raise :class:`DataError` unless ``train`` and ``test`` can feed one network: the same
    image shape ``(H, W, D)`` and the same kind of labels (one per image, or one per pixel of
    the same map size)."""
    if train.x.shape[1:] != test.x.shape[1:]:
        raise DataError(
            f"{source}: the training images are {'x'.join(map(str, train.x.shape[1:]))} but "
            f"the test images are {'x'.join(map(str, test.x.shape[1:]))}; both splits must "
            "have one shape (files of two different data sets?)"
        )
    if train.y.shape[1:] != test.y.shape[1:]:
        raise DataError(
            f"{source}: the training labels have shape {train.y.shape[1:]} per image but the "
            f"test labels {test.y.shape[1:]}; both splits must label images the same way"
        )


def _idx_named(
    name: str, data_dir: Path | None, cache: Path, do_download: bool, progress: Progress
) -> DataSplits:
    classes = FASHION_CLASSES if name == "fashion-mnist" else DIGIT_CLASSES
    hflip = name == "fashion-mnist"
    # An explicit data_dir is the only place looked at: silently loading another copy from
    # elsewhere would hide a wrong path.
    places = [data_dir] if data_dir else [cache / name]
    if name == "fashion-mnist" and not data_dir:
        places.append(DEBIAN_FASHION_DIR)
    for place in places:
        if _find_idx(place) is not None:
            return load_idx_dataset(place, name, classes, hflip)
    if data_dir is not None and not do_download:
        raise DataError(f"{data_dir}: no {name} IDX files here "
                        f"(expected {', '.join(s + '[.gz]' for s in IDX_FILES.values())})")
    if not do_download:
        raise DataError(
            f"{name} not found (looked in {', '.join(map(str, places))}). To download it "
            f"from its mirrors (MD5-checked): convnet train --download, or in Python "
            f"download=True. To use a copy you have: --data-dir DIR (convnet train, eval), or in "
            f"Python data_dir=DIR, where DIR "
            f"holds {', '.join(s + '[.gz]' for s in IDX_FILES.values())}"
        )
    target = data_dir or cache / name
    _dl.download_dataset(name, target, progress=progress)
    return load_idx_dataset(target, name, classes, hflip)


def _cifar_named(
    data_dir: Path | None, cache: Path, do_download: bool, progress: Progress
) -> DataSplits:
    places = [data_dir] if data_dir else [cache / "cifar10"]
    for place in places:
        if cifar.find_batch_dir(place) is not None:
            return cifar.load_cifar10(place)
    if not do_download:
        raise DataError(
            f"cifar10 not found (looked in {', '.join(map(str, places))}). To download it "
            f"(MD5-checked): convnet train --download, or in Python download=True. To use a "
            f"copy you have: --data-dir DIR (convnet train, eval), or in Python data_dir=DIR, "
            f"where DIR holds the "
            f"{cifar.BATCH_DIR} folder (or its files)"
        )
    target = data_dir or cache / "cifar10"
    (archive,) = _dl.download_dataset("cifar10", target, progress=progress)
    extract_cifar_archive(archive, target)
    return cifar.load_cifar10(target)


def extract_cifar_archive(archive: str | os.PathLike, directory: str | os.PathLike) -> Path:
    """Unpack the CIFAR-10 batch files (and only them) from ``cifar-10-python.tar.gz`` into
    ``directory/cifar-10-batches-py``, atomically: they are unpacked into a temporary folder
    beside it, which is renamed into place only once every file is there. An interrupted or
    failed unpack leaves no half folder (which would be found and fail to load every time),
    and a process unpacking the same archive at the same time finds the whole folder or
    none."""
    archive, directory = Path(archive), Path(directory)
    final = directory / cifar.BATCH_DIR
    directory.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{cifar.BATCH_DIR}.", suffix=".tmp", dir=directory))
    try:
        _extract_cifar(archive, tmp)
        if final.is_dir() and not final.is_symlink() and \
                not all((final / n).is_file() for n in _CIFAR_FILES):
            shutil.rmtree(final)  # a half folder an old convnet left: replaced by the whole one
        try:
            os.replace(tmp / cifar.BATCH_DIR, final)
        except OSError:
            if not all((final / n).is_file() for n in _CIFAR_FILES):
                raise  # not another process's complete unpack: a real failure
    except OSError as exc:
        raise DataError(f"{archive}: cannot unpack into {directory}: "
                        f"{excerpt(str(exc), 120)[1:-1]}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


_CIFAR_FILES = (*cifar.TRAIN_BATCHES, cifar.TEST_BATCH, cifar.META)


def _extract_cifar(archive: Path, directory: Path) -> None:
    wanted = {f"{cifar.BATCH_DIR}/{n}" for n in
              (*cifar.TRAIN_BATCHES, cifar.TEST_BATCH, cifar.META)}
    limit = cap("data_bytes")
    try:
        with open_regular(archive, what="archive", cap_name="data_bytes") as f, \
                tarfile.open(fileobj=f, mode="r:gz") as tar:
            members = []
            # Headers are read one by one and at most _MAX_TAR_MEMBERS of them (a hostile
            # archive of a million entries is not listed whole); sizes come from the headers.
            for i, m in enumerate(tar):
                if i >= _MAX_TAR_MEMBERS:
                    raise DataError(f"{archive}: more than {_MAX_TAR_MEMBERS} entries; the "
                                    "CIFAR-10 archive has 8")
                if m.name in wanted and m.isfile():
                    if m.size > limit:
                        raise too_big(f"{archive}: {m.name}", "the member", m.size, "data_bytes")
                    members.append(m)
            if len(members) != len(wanted):
                raise DataError(f"{archive}: archive lacks some of {sorted(wanted)}")
            # The "data" filter refuses links, absolute paths and '..' (no path traversal).
            tar.extractall(directory, members=members, filter="data")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{archive}: cannot unpack: {excerpt(str(exc), 120)[1:-1]}") from None


def load_dataset(
    name_or_path: str | os.PathLike = "digits",
    *,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    download: bool = False,
    image_size: int | Sequence[int] | None = None,
    grayscale: bool | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    progress: Progress = None,
    **options: Any,
) -> DataSplits:
    """Load a data set by name or path as ``(train, test)``, images float32 in ``[0, 1]``.

    Args:
        name_or_path: ``digits`` (default), ``mnist``, ``fashion-mnist``/``fashion``,
            ``cifar10``, or a directory (IDX files, CIFAR-10 batches, class folders of images
            (up to 2 GiB as float32), or packed shards).
        data_dir: where a named data set's files are (searched first; downloads go there).
        cache_dir: the download cache; default ``$CONVNET_DATA`` or ``~/.cache/convnet``.
        download: fetch missing files from the mirrors (MD5-verified).
        image_size: ``H`` or ``(H, W)`` to resize every image to (default: native size; for an
            image folder, the most common size).
        grayscale: True for one channel, False for three (default: native; for an image folder,
            what most images are).
        test_fraction: test share for data with no test split (digits keep their fixed 0.2
            unless this is changed; image folders without train/ and test/).
        seed: seed of those splits. Keep it fixed (it is not the training seed): the test set
            must be the same from run to run.
        progress: called with a line of text before each download.
        **options: settings of a generated data set: ``fashion-seg`` (two Fashion-MNIST items on
            a 32x64 canvas by default, one label per pixel; see
            :mod:`convnet.data.segmentation`) takes ``n_train``, ``n_test``, ``canvas``,
            ``items``, ``threshold``; its canvases are drawn from ``seed``.

    Returns:
        :class:`DataSplits` ``(train, test)``; each :class:`Dataset` has ``classes`` and
        ``hflip`` (whether flipping is a valid augmentation).

    Shape:
        - train.x ``(N, H, W, D)`` float32, train.y ``(N,)`` int64

    Raises :class:`DataError` for an unknown name, missing files, or any invalid file.
    """
    key = str(name_or_path).lower()
    if options and ALIASES.get(key) != "fashion-seg":
        raise DataError(f"{name_or_path}: unexpected options {sorted(options)} (only generated "
                        "data sets such as fashion-seg take options)")
    cache = _dl.cache_dir(cache_dir)
    ddir = Path(data_dir).expanduser() if data_dir is not None else None
    canonical = ALIASES.get(key)
    if canonical == "digits":
        splits = load_digits(test_fraction, seed)
    elif canonical in ("mnist", "fashion-mnist"):
        splits = _idx_named(canonical, ddir, cache, download, progress)
    elif canonical == "cifar10":
        splits = _cifar_named(ddir, cache, download, progress)
    elif canonical == "fashion-seg":
        from .segmentation import load_fashion_segmentation

        return load_fashion_segmentation(data_dir=data_dir, seed=seed, **options)
    else:
        path = Path(name_or_path).expanduser()
        if not path.exists():
            raise DataError(
                f"unknown data set {str(name_or_path)!r}: not one of "
                f"{', '.join(dataset_names())} and no such file or directory"
            )
        if not path.is_dir():
            raise DataError(f"{path}: a data set path must be a directory")
        from .shards import is_packed, open_packed

        if is_packed(path):
            splits = open_packed(path)
            _check_packed_options(path, splits, image_size, grayscale)
            return splits
        if _find_idx(path) is not None:
            splits = load_idx_dataset(path, name=path.name or str(path))
        elif cifar.find_batch_dir(path) is not None:
            splits = cifar.load_cifar10(path)
        else:
            # Image folders are converted while loading, so no second pass is needed.
            return load_image_folder(path, image_size=image_size, grayscale=grayscale,
                                     test_fraction=test_fraction, seed=seed)
    check_splits(splits.train, splits.test, name_or_path)
    return _adapt(splits, image_size, grayscale)


def _check_packed_options(path: Path, splits: DataSplits, image_size: Any,
                          grayscale: bool | None) -> None:
    """A packed set is read as packed: a size or mode other than its own is an error."""
    h, w, d = splits.train.input_shape
    want = None if image_size is None else (
        (image_size, image_size) if isinstance(image_size, int) else tuple(image_size))
    if (want is not None and tuple(want) != (h, w)) or \
            (grayscale is not None and (1 if grayscale else 3) != d):
        raise DataError(f"{path}: packed at {h}x{w}x{d}; shards are not resized when read: "
                        "pack the source again with the size (--size) and mode wanted")


def _adapt(
    splits: DataSplits, image_size: int | Sequence[int] | None, grayscale: bool | None
) -> DataSplits:
    """Resize / change channels of a loaded data set when asked to."""
    channels = None if grayscale is None else (1 if grayscale else 3)
    if image_size is None and channels is None:
        return splits
    out = []
    for ds in splits:
        x = convert_images(ds.x, image_size, channels)
        out.append(Dataset(x, ds.y, ds.classes, name=ds.name, hflip=ds.hflip, source=ds.source))
    return DataSplits(*out)
