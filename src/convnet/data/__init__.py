"""Data sets: images as ``(N, H, W, D)`` float32 in ``[0, 1]`` with int64 labels and class names.

- :func:`load_dataset` resolves ``digits`` (built in, no network), ``mnist``, ``fashion-mnist``,
  ``cifar10`` or a directory, and returns ``(train, test)``; :func:`train_val_split` holds out a
  reproducible validation set.
- :mod:`~convnet.data.idx` (IDX files), :mod:`~convnet.data.cifar` (python batches through a
  restricted unpickler), :mod:`~convnet.data.images` (image files and class folders),
  :mod:`~convnet.data.download` (mirrors, MD5s, cache).
- :class:`Normalizer` (per-channel statistics of the training set) and :func:`augment_batch`
  (random crop with padding, horizontal flip; vectorised and seeded).
- :class:`DataSource`: the one interface training reads through (``take(indices)``), implemented
  by :class:`Dataset` (arrays in memory) and :class:`~convnet.data.shards.ShardedDataset` (uint8
  shards on disk made by :func:`pack` (:mod:`~convnet.data.packing`), opened by
  :func:`open_packed` or :func:`load_dataset` (:mod:`~convnet.data.shards`).
- :mod:`~convnet.data.fitting`: a photo fitted to a network's input (``pad``, ``crop``,
  ``squash``) and checked against the training set's statistics.
"""

from .cifar import RestrictedUnpickler, load_cifar10, safe_unpickle
from .dataset import (
    Dataset,
    DataSource,
    DataSplits,
    is_source,
    random_split,
    stratified_split,
    train_val_split,
)
from .download import (
    CONTENT_MD5,
    MD5,
    MIRRORS,
    cache_dir,
    download_dataset,
    download_file,
    md5_file,
)
from .idx import load_idx_pair, read_idx, write_idx
from .images import IN_MEMORY_LIMIT, convert_images, load_image, load_image_folder
from .packing import PackResult, pack, pack_arrays
from .registry import (
    DEBIAN_FASHION_DIR,
    DIGIT_CLASSES,
    FASHION_CLASSES,
    dataset_names,
    load_dataset,
    load_digits,
    load_idx_dataset,
)
from .shards import ShardedDataset, is_packed, open_packed
from .transforms import Augmentation, Normalizer, augment_batch, default_augmentation

__all__ = [
    "CONTENT_MD5",
    "DEBIAN_FASHION_DIR",
    "DIGIT_CLASSES",
    "FASHION_CLASSES",
    "IN_MEMORY_LIMIT",
    "MD5",
    "MIRRORS",
    "PackResult",
    "Augmentation",
    "DataSource",
    "DataSplits",
    "Dataset",
    "Normalizer",
    "RestrictedUnpickler",
    "ShardedDataset",
    "augment_batch",
    "cache_dir",
    "convert_images",
    "dataset_names",
    "default_augmentation",
    "download_dataset",
    "download_file",
    "is_packed",
    "is_source",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "load_idx_dataset",
    "load_idx_pair",
    "load_image",
    "load_image_folder",
    "md5_file",
    "open_packed",
    "pack",
    "pack_arrays",
    "random_split",
    "read_idx",
    "safe_unpickle",
    "stratified_split",
    "train_val_split",
    "write_idx",
]
