"""MNIST as tensors, read from the four standard IDX files, with helpers for training protocols.

:func:`mnist` loads one split (``"train"``: 60,000 images, ``"test"``: 10,000)
from a directory that contains, each either plain or gzip-compressed (``.gz``)::

    train-images-idx3-ubyte   train-labels-idx1-ubyte
    t10k-images-idx3-ubyte    t10k-labels-idx1-ubyte

It searches, in order, the ``root`` argument, the directory named by the
environment variable ``EBMGRAPH_DATA`` and ``~/.cache/ebmgraph/mnist``, and
uses the first that contains both files of the split. When none does and
``download=True``, it fetches the missing files from :data:`MIRRORS` into the
first of those directories. A download is checked against the md5 of the
uncompressed original file before it is written. Importing this module does no
network or file access.

The helpers :func:`random_subset`, :func:`split_validation`, :func:`binarize`
and :func:`one_hot` take randomness only from an explicit
:class:`torch.Generator`, never from the global random state.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.client
import logging
import math
import numbers
import os
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ebmgraph._io import write_atomic
import torch.nn.functional as F

__all__ = [
    "MIRRORS",
    "MNIST",
    "binarize",
    "mnist",
    "one_hot",
    "random_subset",
    "split_validation",
]

logger = logging.getLogger(__name__)

#: Base URLs tried in order, each expected to serve the four files with a ``.gz`` suffix.
# NOTE: the tests exercise downloads only against a fake urlopen, so these URLs are unverified.
MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

ENV_VAR = "EBMGRAPH_DATA"
DEFAULT_ROOT = Path("~/.cache/ebmgraph/mnist")

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# md5 of the uncompressed files of the original MNIST distribution.
_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

# An IDX magic number is 0x0000TTDD: TT is the element type (0x08 = uint8) and DD the number of dimensions.
_IMAGES_MAGIC = 0x0803  # 2051: uint8, 3 dimensions (count, rows, columns)
_LABELS_MAGIC = 0x0801  # 2049: uint8, 1 dimension (count)
_IMAGE_SHAPE = (28, 28)
_N_CLASSES = 10
_DOWNLOAD_TIMEOUT_S = 60.0
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True, eq=False)
class MNIST:
    """One split of MNIST, or a subset of one.

    Attributes
    ----------
    images : Tensor, shape ``(n, 784)``, floating point
        Pixel intensities in ``[0, 1]`` (the stored byte divided by 255), each
        28 x 28 image flattened row by row.
    labels : Tensor, shape ``(n,)``, int64
        Digit classes in ``0..9``.
    split : str
        ``"train"`` or ``"test"``, the split the examples came from.
    files : tuple of Path
        The images file and the labels file that were read.
    """

    images: torch.Tensor
    labels: torch.Tensor
    split: str
    files: tuple[Path, ...]

    def __post_init__(self):
        if self.images.shape[0] != self.labels.shape[0]:
            raise ValueError(
                f"MNIST has {self.images.shape[0]} images but {self.labels.shape[0]} labels. The counts must match."
            )

    def __len__(self) -> int:
        return self.labels.shape[0]


def mnist(
    root: str | os.PathLike | None = None,
    *,
    split: str = "train",
    download: bool = True,
    verify: bool = False,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> MNIST:
    """Load one split of MNIST, downloading the files first if they are missing.

    Parameters
    ----------
    root : str or path-like, optional
        The directory to read (and download into). Without it, ``$EBMGRAPH_DATA``
        (when set and non-empty) and then ``~/.cache/ebmgraph/mnist`` are searched.
    split : {"train", "test"}
        The 60,000 training examples or the 10,000 test examples.
    download : bool
        Whether to fetch missing files into the first directory searched.
    verify : bool
        Whether to check the md5 of local files too. Downloads are always
        checked. The check hashes 47 MB for the training images, so it is off
        by default.
    dtype : torch.dtype
        Floating-point dtype of ``images``. ``labels`` are always int64.
    device : torch.device or str, optional
        Device of both tensors, the CPU by default.

    Returns
    -------
    MNIST
        ``images`` of shape ``(n, 784)`` and ``labels`` of shape ``(n,)``.

    Raises
    ------
    FileNotFoundError
        If the files are in no searched directory and ``download`` is False.
    OSError
        If a download fails from every mirror.
    ValueError
        If a file is malformed (wrong magic number, image size, byte length or
        label), the image and label counts differ, an md5 check fails, or an
        argument is invalid.
    """
    if split not in _FILES:
        raise ValueError(f"split must be one of {sorted(_FILES)}, got {split!r}")
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point dtype for images in [0, 1], got {dtype}")

    paths = _locate(split, _search_dirs(root), download=download)
    data = [_read(path) for path in paths]
    if verify:
        for path, content in zip(paths, data):
            remedy = "Replace it with the original file, or delete it and load with download=True."
            _check_md5(content, _base_name(path), source=str(path), remedy=remedy)

    images_path, labels_path = paths
    pixels = _parse_idx(data[0], images_path, magic=_IMAGES_MAGIC, item_shape=_IMAGE_SHAPE)
    labels = _parse_idx(data[1], labels_path, magic=_LABELS_MAGIC, item_shape=())
    _check_labels(labels, labels_path)
    if pixels.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{images_path} has {pixels.shape[0]} images but {labels_path} has {labels.shape[0]} labels. "
            "The counts must match."
        )

    # np.frombuffer views immutable bytes, and torch.from_numpy needs a writable array, hence the copies.
    images = torch.from_numpy(pixels.reshape(len(pixels), -1).copy()).to(device).to(dtype).div_(255)
    label_tensor = torch.from_numpy(labels.astype(np.int64)).to(device)
    return MNIST(images=images, labels=label_tensor, split=split, files=(images_path, labels_path))


# Locating and downloading files


def _search_dirs(root: str | os.PathLike | None) -> list[tuple[Path, str]]:
    """Return the directories to search, in order, each with a note on where it came from."""
    if root is not None:
        # An explicit folder is the only place looked in, so a typo cannot load other files silently.
        return [(Path(root).expanduser(), "root argument")]
    candidates = []
    env_value = os.environ.get(ENV_VAR, "")
    if env_value:
        candidates.append((Path(env_value).expanduser(), f"${ENV_VAR}"))
    candidates.append((DEFAULT_ROOT.expanduser(), "default cache"))

    unique, seen = [], set()
    for directory, origin in candidates:
        if directory not in seen:
            seen.add(directory)
            unique.append((directory, origin))
    return unique


def _find(directory: Path, name: str) -> Path | None:
    """Return the plain or the gzip-compressed file ``name`` in ``directory``, preferring the plain one."""
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _locate(split: str, search_dirs: list[tuple[Path, str]], *, download: bool) -> tuple[Path, Path]:
    """Return the images and labels files of ``split``, downloading missing ones if allowed."""
    names = _FILES[split]
    for directory, _ in search_dirs:
        found = [_find(directory, name) for name in names]
        if all(path is not None for path in found):
            return found[0], found[1]

    target = search_dirs[0][0]
    if not download:
        looked = "; ".join(f"{directory} ({origin})" for directory, origin in search_dirs)
        raise FileNotFoundError(
            f"MNIST {split} files {names[0]}[.gz] and {names[1]}[.gz] were not found together in any of: {looked}. "
            f"Pass root= (the command line's --data) a directory that contains them, set ${ENV_VAR} to one, "
            f"or pass download=True (on the command line, leave out --no-download) to fetch them into {target}."
        )

    paths = [_find(target, name) or _download(name, target) for name in names]
    return paths[0], paths[1]


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
        return response.read()


def _download(name: str, directory: Path) -> Path:
    """Fetch ``name`` from the first mirror that serves it with the right md5, and write it into ``directory``."""
    failures = []
    for mirror in MIRRORS:
        url = f"{mirror}{name}.gz"
        logger.info("downloading %s", url)
        try:
            payload = _fetch(url)
            is_gzip = payload[:2] == _GZIP_MAGIC
            content = _decompress(payload, url) if is_gzip else payload
            _check_md5(content, name, source=url, remedy="The mirror served a different file.")
        except (OSError, ValueError, EOFError, http.client.HTTPException) as error:
            logger.warning("download of %s failed: %s", url, error)
            failures.append(f"{url}: {error}")
            continue

        path = directory / (f"{name}.gz" if is_gzip else name)
        directory.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, payload)
        logger.info("saved %s (%d bytes)", path, len(payload))
        return path

    raise OSError(
        f"failed to download {name} from every mirror ({'; '.join(failures)}). "
        f"Check the network connection, or put {name} or {name}.gz into {directory} yourself."
    )


def _write_atomic(path: Path, payload: bytes) -> None:
    """Write ``payload`` so that ``path`` is never partial (see :func:`ebmgraph._io.write_atomic`)."""
    write_atomic(path, lambda handle: handle.write(payload))


# Reading and checking file contents


def _base_name(path: Path) -> str:
    return path.name.removesuffix(".gz")


def _read(path: Path) -> bytes:
    """Return the uncompressed content of ``path``, decompressing it when its name ends in ``.gz``."""
    content = path.read_bytes()
    if path.suffix == ".gz":
        return _decompress(content, str(path))
    return content


def _decompress(content: bytes, source: str) -> bytes:
    try:
        return gzip.decompress(content)
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise ValueError(f"{source}: not a valid gzip file ({error})") from error


def _check_md5(content: bytes, name: str, *, source: str, remedy: str) -> None:
    actual = hashlib.md5(content).hexdigest()
    expected = _MD5[name]
    if actual != expected:
        raise ValueError(
            f"{source}: md5 of the uncompressed content is {actual}, expected {expected} for {name}, "
            f"so it is corrupt or not the original MNIST file. {remedy}"
        )


def _parse_idx(content: bytes, path: Path, *, magic: int, item_shape: tuple[int, ...]) -> np.ndarray:
    """Parse an IDX file of uint8 values into an array of shape ``(count, *item_shape)``.

    The header is the magic number followed by one big-endian uint32 size per dimension.
    """
    n_dims = 1 + len(item_shape)
    header_bytes = 4 * (1 + n_dims)
    if len(content) < header_bytes:
        raise ValueError(f"{path}: file has {len(content)} bytes, fewer than the {header_bytes}-byte IDX header")

    header = np.frombuffer(content, dtype=">u4", count=1 + n_dims)
    if int(header[0]) != magic:
        raise ValueError(f"{path}: IDX magic number is {int(header[0])}, expected {magic}")

    shape = tuple(int(size) for size in header[1:])
    if shape[1:] != item_shape:
        raise ValueError(f"{path}: header gives item size {shape[1:]}, expected {item_shape}")

    expected_bytes = header_bytes + math.prod(shape)
    if len(content) != expected_bytes:
        raise ValueError(
            f"{path}: expected {expected_bytes} bytes for {shape[0]} items, got {len(content)} bytes "
            "(the file is truncated or has trailing data)"
        )
    return np.frombuffer(content, dtype=np.uint8, offset=header_bytes).reshape(shape)


def _check_labels(labels: np.ndarray, path: Path) -> None:
    invalid = np.flatnonzero(labels >= _N_CLASSES)
    if invalid.size:
        first = int(invalid[0])
        raise ValueError(
            f"{path}: label {int(labels[first])} at index {first} is outside 0..{_N_CLASSES - 1} "
            f"({invalid.size} invalid labels in all)"
        )


# Subsets, binarization and one-hot encoding


def random_subset(dataset: MNIST, n: int, *, generator: torch.Generator) -> MNIST:
    """Draw ``n`` examples of ``dataset`` uniformly at random without replacement.

    Parameters
    ----------
    dataset : MNIST
        The examples to draw from.
    n : int
        Subset size, ``0 <= n <= len(dataset)``.
    generator : torch.Generator
        The only source of randomness, so the same seed gives the same subset.

    Returns
    -------
    MNIST
        ``images`` of shape ``(n, 784)`` and ``labels`` of shape ``(n,)``, in
        random order, with the split and files of ``dataset``.
    """
    _check_count(n, "n", len(dataset))
    indices = _permutation(len(dataset), generator)[:n]
    return _take(dataset, indices)


def split_validation(dataset: MNIST, n_validation: int, *, generator: torch.Generator) -> tuple[MNIST, MNIST]:
    """Split ``dataset`` at random into disjoint training and validation parts.

    Parameters
    ----------
    dataset : MNIST
        The examples to split, usually the training split.
    n_validation : int
        Size of the validation part, ``0 <= n_validation <= len(dataset)``.
    generator : torch.Generator
        The only source of randomness, so the same seed gives the same split.

    Returns
    -------
    train, validation : MNIST
        ``len(dataset) - n_validation`` and ``n_validation`` examples, both in
        random order. Every example of ``dataset`` is in exactly one of them.
    """
    _check_count(n_validation, "n_validation", len(dataset))
    indices = _permutation(len(dataset), generator)
    return _take(dataset, indices[n_validation:]), _take(dataset, indices[:n_validation])


def binarize(
    images: torch.Tensor,
    *,
    threshold: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Turn intensities into 0/1 values, by a fixed threshold or by sampling.

    Pass exactly one of ``threshold`` and ``generator``. There is no default
    mode, because the stochastic one would otherwise draw from the global
    random state.

    Parameters
    ----------
    images : Tensor, any shape, floating point
        Intensities, in ``[0, 1]`` for stochastic binarization.
    threshold : float, optional
        Each value becomes 1 where it is strictly greater than ``threshold``,
        else 0.
    generator : torch.Generator, optional
        Each value ``p`` becomes 1 with probability ``p``, drawn independently
        with this generator, which must be on the device of ``images``.

    Returns
    -------
    Tensor, shape and dtype of ``images``
        Values in ``{0, 1}``.
    """
    if not images.is_floating_point():
        raise ValueError(f"images must be a floating-point tensor, got dtype {images.dtype}")
    if (threshold is None) == (generator is None):
        raise ValueError(
            "binarize needs exactly one of threshold= (a fixed cut) and generator= (Bernoulli sampling), "
            f"got threshold={threshold!r} and generator={generator!r}"
        )

    if threshold is not None:
        return (images > threshold).to(images.dtype)

    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise ValueError(
            "stochastic binarization needs images in [0, 1], "
            f"got values from {images.min().item()} to {images.max().item()}"
        )
    return torch.bernoulli(images, generator=generator)


def one_hot(labels: torch.Tensor, n_classes: int = _N_CLASSES, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Encode class indices as one-hot rows.

    Parameters
    ----------
    labels : Tensor, shape ``(n,)``, integer
        Class indices in ``0..n_classes - 1``.
    n_classes : int
        Number of classes, the width of the result.
    dtype : torch.dtype
        Dtype of the result.

    Returns
    -------
    Tensor, shape ``(n, n_classes)``
        Row ``i`` is 1 at column ``labels[i]`` and 0 elsewhere.
    """
    if isinstance(n_classes, bool) or not isinstance(n_classes, numbers.Integral) or n_classes < 1:
        raise ValueError(f"n_classes must be a positive int, got {n_classes!r}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
        raise ValueError(f"labels must be an integer tensor, got dtype {labels.dtype}")
    if labels.dim() != 1:
        raise ValueError(f"labels must have shape (n,), got shape {tuple(labels.shape)}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(
            f"labels must lie in 0..{n_classes - 1}, got values from {int(labels.min())} to {int(labels.max())}"
        )
    return F.one_hot(labels.long(), n_classes).to(dtype)


def _check_count(value: int, name: str, upper: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if not 0 <= value <= upper:
        raise ValueError(f"{name} must lie in 0..{upper} (the dataset size), got {value}")


def _permutation(n: int, generator: torch.Generator) -> torch.Tensor:
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator (the global random state is never used), got {generator!r}"
        )
    return torch.randperm(n, generator=generator, device=generator.device)


def _take(dataset: MNIST, indices: torch.Tensor) -> MNIST:
    images_index = indices.to(dataset.images.device)
    labels_index = indices.to(dataset.labels.device)
    return dataclasses.replace(dataset, images=dataset.images[images_index], labels=dataset.labels[labels_index])
