import gzip
import io
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from ebmgraph import datasets
from ebmgraph.datasets import MNIST, binarize, mnist, one_hot, random_subset, split_validation

# The four MNIST .gz files, kept outside the repository beside the project root.
REAL_DIR = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"
needs_real = pytest.mark.skipif(not REAL_DIR.is_dir(), reason=f"real MNIST files not found at {REAL_DIR}")

TEST_NAMES = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
TEST_HISTOGRAM = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
TRAIN_HISTOGRAM = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@pytest.fixture(autouse=True)
def offline_and_isolated(monkeypatch, tmp_path):
    """Make any network access fail, and keep $EBMGRAPH_DATA and the home cache out of every test."""

    def reject_network(url, *args, **kwargs):
        raise AssertionError(f"test tried to open {url}")

    monkeypatch.setattr(urllib.request, "urlopen", reject_network)
    monkeypatch.delenv(datasets.ENV_VAR, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def real_train():
    if not REAL_DIR.is_dir():
        pytest.skip(f"real MNIST files not found at {REAL_DIR}")
    return mnist(REAL_DIR, split="train", download=False)


@pytest.fixture(scope="module")
def real_test():
    if not REAL_DIR.is_dir():
        pytest.skip(f"real MNIST files not found at {REAL_DIR}")
    return mnist(REAL_DIR, split="test", download=False)


def idx_bytes(magic, shape, values):
    """Encode an IDX file: big-endian uint32 magic and sizes, then the uint8 values."""
    header = np.array([magic, *shape], dtype=">u4").tobytes()
    return header + np.asarray(values, dtype=np.uint8).tobytes()


def toy_images(n=5, rows=28, columns=28, magic=2051, n_values=None):
    n_values = n * rows * columns if n_values is None else n_values
    return idx_bytes(magic, (n, rows, columns), np.arange(n_values) % 256)


def toy_labels(labels=(0, 1, 2, 3, 4), magic=2049):
    return idx_bytes(magic, (len(labels),), labels)


def write_toy_split(directory, images=None, labels=None):
    """Write plain t10k files into ``directory``, valid unless ``images`` or ``labels`` override them."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / TEST_NAMES[0]).write_bytes(toy_images() if images is None else images)
    (directory / TEST_NAMES[1]).write_bytes(toy_labels() if labels is None else labels)
    return directory


def real_bytes(name):
    return gzip.decompress((REAL_DIR / f"{name}.gz").read_bytes())


def serve(monkeypatch, files):
    """Replace urlopen with a fake that returns ``files[url]`` and fails for any other URL."""
    requested = []

    def fake_urlopen(url, timeout=None):
        requested.append(url)
        if url not in files:
            raise urllib.error.URLError(f"{url} is not served in this test")
        return io.BytesIO(files[url])

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    return requested


def real_test_urls(mirror, labels=None):
    """Map the URLs of the test files on ``mirror`` to their .gz content, optionally with other label bytes."""
    labels = real_bytes(TEST_NAMES[1]) if labels is None else labels
    return {
        f"{mirror}{TEST_NAMES[0]}.gz": (REAL_DIR / f"{TEST_NAMES[0]}.gz").read_bytes(),
        f"{mirror}{TEST_NAMES[1]}.gz": gzip.compress(labels),
    }


def toy_dataset(n=100):
    """A dataset whose row ``i`` has ``images[i, 0] == i / n`` and label ``i % 10``."""
    ids = torch.arange(n)
    images = torch.zeros(n, 784)
    images[:, 0] = ids / n
    return MNIST(images=images, labels=ids % 10, split="train", files=())


def row_ids(dataset, n=100):
    return (dataset.images[:, 0] * n).round().long()


# Real files


def test_train_split_shapes(real_train):
    assert real_train.images.shape == (60000, 784)
    assert real_train.labels.shape == (60000,)
    assert real_train.images.dtype == torch.float32
    assert real_train.labels.dtype == torch.int64
    assert len(real_train) == 60000


def test_train_split_value_range(real_train):
    assert real_train.images.min().item() == 0.0
    assert real_train.images.max().item() == 1.0


def test_train_pixels_are_bytes_over_255(real_train):
    scaled = real_train.images[:1000] * 255
    torch.testing.assert_close(scaled, scaled.round(), rtol=0, atol=1e-4)


def test_train_label_histogram(real_train):
    assert torch.bincount(real_train.labels, minlength=10).tolist() == TRAIN_HISTOGRAM


def test_train_first_labels(real_train):
    assert real_train.labels[:5].tolist() == [5, 0, 4, 1, 9]


def test_test_split_shapes(real_test):
    assert real_test.images.shape == (10000, 784)
    assert real_test.labels.shape == (10000,)
    assert real_test.split == "test"


def test_test_split_value_range(real_test):
    assert real_test.images.min().item() == 0.0
    assert real_test.images.max().item() == 1.0


def test_test_label_histogram(real_test):
    assert torch.bincount(real_test.labels, minlength=10).tolist() == TEST_HISTOGRAM


def test_test_first_labels(real_test):
    assert real_test.labels[:5].tolist() == [7, 2, 1, 0, 4]


def test_files_are_reported(real_test):
    assert real_test.files == (REAL_DIR / f"{TEST_NAMES[0]}.gz", REAL_DIR / f"{TEST_NAMES[1]}.gz")


@needs_real
@pytest.mark.parametrize("split", ["train", "test"])
def test_verify_accepts_real_files(split):
    dataset = mnist(REAL_DIR, split=split, download=False, verify=True)
    assert len(dataset) == {"train": 60000, "test": 10000}[split]


@needs_real
def test_plain_and_gzip_load_identically(tmp_path, real_test):
    for name in TEST_NAMES:
        (tmp_path / name).write_bytes(real_bytes(name))

    plain = mnist(tmp_path, split="test", download=False, verify=True)

    assert plain.files == (tmp_path / TEST_NAMES[0], tmp_path / TEST_NAMES[1])
    assert torch.equal(plain.images, real_test.images)
    assert torch.equal(plain.labels, real_test.labels)


@needs_real
def test_dtype_float64(real_test):
    dataset = mnist(REAL_DIR, split="test", download=False, dtype=torch.float64)
    assert dataset.images.dtype == torch.float64
    torch.testing.assert_close(dataset.images.float(), real_test.images, rtol=0, atol=0)


def test_integer_dtype_rejected(tmp_path):
    write_toy_split(tmp_path)
    with pytest.raises(ValueError, match="floating-point"):
        mnist(tmp_path, split="test", download=False, dtype=torch.uint8)


def test_unknown_split_rejected(tmp_path):
    with pytest.raises(ValueError, match="'validation'"):
        mnist(tmp_path, split="validation", download=False)


# Malformed files


def test_toy_files_load(tmp_path):
    dataset = mnist(write_toy_split(tmp_path), split="test", download=False)
    assert dataset.images.shape == (5, 784)
    assert dataset.labels.tolist() == [0, 1, 2, 3, 4]
    assert dataset.images[0, 255].item() == 1.0


def test_truncated_images_rejected(tmp_path):
    write_toy_split(tmp_path, images=toy_images(n=5, n_values=4 * 784))
    with pytest.raises(ValueError, match=TEST_NAMES[0]) as error:
        mnist(tmp_path, split="test", download=False)
    assert f"expected {16 + 5 * 784} bytes" in str(error.value)
    assert f"got {16 + 4 * 784} bytes" in str(error.value)


def test_trailing_bytes_rejected(tmp_path):
    write_toy_split(tmp_path, labels=toy_labels() + b"\x00")
    with pytest.raises(ValueError, match=f"{TEST_NAMES[1]}: expected 13 bytes for 5 items, got 14"):
        mnist(tmp_path, split="test", download=False)


def test_short_header_rejected(tmp_path):
    write_toy_split(tmp_path, labels=b"\x00\x00\x08")
    with pytest.raises(ValueError, match=f"{TEST_NAMES[1]}: file has 3 bytes"):
        mnist(tmp_path, split="test", download=False)


def test_wrong_magic_rejected(tmp_path):
    write_toy_split(tmp_path, images=toy_images(magic=2049))
    with pytest.raises(ValueError, match=f"{TEST_NAMES[0]}: IDX magic number is 2049, expected 2051"):
        mnist(tmp_path, split="test", download=False)


def test_labels_magic_rejected(tmp_path):
    write_toy_split(tmp_path, labels=toy_labels(magic=2051))
    with pytest.raises(ValueError, match=f"{TEST_NAMES[1]}: IDX magic number is 2051, expected 2049"):
        mnist(tmp_path, split="test", download=False)


def test_wrong_image_size_rejected(tmp_path):
    write_toy_split(tmp_path, images=toy_images(columns=27))
    with pytest.raises(ValueError, match=rf"{TEST_NAMES[0]}: header gives item size \(28, 27\), expected \(28, 28\)"):
        mnist(tmp_path, split="test", download=False)


def test_count_mismatch_rejected(tmp_path):
    write_toy_split(tmp_path, labels=toy_labels(labels=(0, 1, 2, 3)))
    with pytest.raises(ValueError, match="has 5 images but") as error:
        mnist(tmp_path, split="test", download=False)
    assert TEST_NAMES[0] in str(error.value)
    assert f"{TEST_NAMES[1]} has 4 labels" in str(error.value)


def test_label_11_rejected(tmp_path):
    write_toy_split(tmp_path, labels=toy_labels(labels=(0, 1, 11, 3, 4)))
    with pytest.raises(ValueError, match=f"{TEST_NAMES[1]}: label 11 at index 2 is outside 0..9"):
        mnist(tmp_path, split="test", download=False)


@needs_real
def test_truncated_gzip_rejected(tmp_path):
    write_toy_split(tmp_path)
    compressed = (REAL_DIR / f"{TEST_NAMES[1]}.gz").read_bytes()
    (tmp_path / TEST_NAMES[1]).unlink()
    (tmp_path / f"{TEST_NAMES[1]}.gz").write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(ValueError, match=f"{TEST_NAMES[1]}.gz: not a valid gzip file"):
        mnist(tmp_path, split="test", download=False)


def test_wrong_md5_rejected_with_verify(tmp_path):
    write_toy_split(tmp_path)
    with pytest.raises(ValueError, match=f"{TEST_NAMES[0]}: md5 of the uncompressed content is"):
        mnist(tmp_path, split="test", download=False, verify=True)


@needs_real
def test_altered_label_rejected_with_verify(tmp_path):
    labels = bytearray(real_bytes(TEST_NAMES[1]))
    labels[8] = 3  # the first test label, a valid class either way
    (tmp_path / f"{TEST_NAMES[0]}.gz").symlink_to(REAL_DIR / f"{TEST_NAMES[0]}.gz")
    (tmp_path / TEST_NAMES[1]).write_bytes(bytes(labels))

    assert mnist(tmp_path, split="test", download=False).labels[0].item() == 3
    with pytest.raises(ValueError, match=f"{TEST_NAMES[1]}: md5 .* expected 27ae3e4e09519cfbb04c329615203637"):
        mnist(tmp_path, split="test", download=False, verify=True)


# Where files are looked for


def test_missing_files_name_every_directory(tmp_path, monkeypatch):
    env_dir = tmp_path / "env"
    monkeypatch.setenv(datasets.ENV_VAR, str(env_dir))
    with pytest.raises(FileNotFoundError) as error:
        mnist(split="test", download=False)
    message = str(error.value)
    assert str(env_dir) in message
    assert str(tmp_path / "home" / ".cache" / "ebmgraph" / "mnist") in message
    assert "root=" in message
    assert datasets.ENV_VAR in message
    assert "download=True" in message


def test_missing_files_under_root_name_only_root(tmp_path, monkeypatch):
    root = tmp_path / "root"
    monkeypatch.setenv(datasets.ENV_VAR, str(REAL_DIR))
    with pytest.raises(FileNotFoundError) as error:
        mnist(root, split="test", download=False)
    assert str(root) in str(error.value)
    assert str(REAL_DIR) not in str(error.value)


def test_half_present_split_not_found(tmp_path):
    write_toy_split(tmp_path)
    (tmp_path / TEST_NAMES[1]).unlink()
    with pytest.raises(FileNotFoundError, match=TEST_NAMES[1]):
        mnist(tmp_path, split="test", download=False)


@needs_real
def test_env_var_honoured(monkeypatch):
    monkeypatch.setenv(datasets.ENV_VAR, str(REAL_DIR))
    dataset = mnist(split="test", download=False)
    assert dataset.files[0].parent == REAL_DIR
    assert len(dataset) == 10000


@needs_real
def test_root_searched_before_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv(datasets.ENV_VAR, str(REAL_DIR))
    dataset = mnist(write_toy_split(tmp_path / "root"), split="test", download=False)
    assert len(dataset) == 5


@needs_real
def test_default_cache_honoured(tmp_path):
    cache = write_toy_split(tmp_path / "home" / ".cache" / "ebmgraph" / "mnist")
    dataset = mnist(split="test", download=False)
    assert dataset.files[0].parent == cache


def test_plain_file_preferred_over_gzip(tmp_path):
    write_toy_split(tmp_path)
    (tmp_path / f"{TEST_NAMES[0]}.gz").write_bytes(b"not gzip")
    assert mnist(tmp_path, split="test", download=False).files[0] == tmp_path / TEST_NAMES[0]


# Downloading, always against a fake urlopen


@needs_real
def test_download_writes_verified_files(tmp_path, monkeypatch, real_test):
    requested = serve(monkeypatch, real_test_urls(datasets.MIRRORS[0]))
    target = tmp_path / "new"

    dataset = mnist(target, split="test")

    assert sorted(os.listdir(target)) == [f"{TEST_NAMES[0]}.gz", f"{TEST_NAMES[1]}.gz"]
    assert len(requested) == 2
    assert torch.equal(dataset.images, real_test.images)
    assert torch.equal(dataset.labels, real_test.labels)


@needs_real
def test_download_falls_back_to_next_mirror(tmp_path, monkeypatch):
    requested = serve(monkeypatch, real_test_urls(datasets.MIRRORS[1]))
    dataset = mnist(tmp_path, split="test")
    assert len(dataset) == 10000
    assert requested[0].startswith(datasets.MIRRORS[0])
    assert requested[1].startswith(datasets.MIRRORS[1])


@needs_real
def test_download_goes_to_root(tmp_path, monkeypatch):
    serve(monkeypatch, real_test_urls(datasets.MIRRORS[0]))
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path / "env"))
    mnist(tmp_path / "root", split="test")
    assert not (tmp_path / "env").exists()
    assert (tmp_path / "root" / f"{TEST_NAMES[0]}.gz").is_file()


@needs_real
def test_corrupt_download_rejected(tmp_path, monkeypatch):
    labels = bytearray(real_bytes(TEST_NAMES[1]))
    labels[8] = 3
    files = {}
    for mirror in datasets.MIRRORS:
        files.update(real_test_urls(mirror, labels=bytes(labels)))
    serve(monkeypatch, files)

    with pytest.raises(OSError, match=f"failed to download {TEST_NAMES[1]} from every mirror") as error:
        mnist(tmp_path, split="test")

    assert str(error.value).count("md5") == len(datasets.MIRRORS)
    assert os.listdir(tmp_path) == [f"{TEST_NAMES[0]}.gz"]


def test_unreachable_mirrors_raise_oserror(tmp_path, monkeypatch):
    serve(monkeypatch, {})
    with pytest.raises(OSError, match="is not served in this test"):
        mnist(tmp_path / "new", split="test")
    assert not (tmp_path / "new").exists()


@needs_real
def test_interrupted_write_leaves_no_file(tmp_path, monkeypatch):
    serve(monkeypatch, real_test_urls(datasets.MIRRORS[0]))

    def fail_replace(source, destination):
        raise OSError("simulated failure while renaming")

    monkeypatch.setattr(os, "replace", fail_replace)
    with pytest.raises(OSError, match="simulated failure"):
        mnist(tmp_path, split="test")
    assert os.listdir(tmp_path) == []


@needs_real
def test_present_files_not_downloaded():
    # The autouse fixture makes urlopen raise, so any download attempt fails this test.
    assert len(mnist(REAL_DIR, split="test", download=True)) == 10000


# Subsets and validation splits


def test_random_subset_size():
    subset = random_subset(toy_dataset(), 30, generator=torch.Generator().manual_seed(0))
    assert subset.images.shape == (30, 784)
    assert subset.labels.shape == (30,)


def test_random_subset_no_duplicates():
    subset = random_subset(toy_dataset(), 60, generator=torch.Generator().manual_seed(0))
    assert row_ids(subset).unique().numel() == 60


def test_random_subset_keeps_pairs():
    subset = random_subset(toy_dataset(), 60, generator=torch.Generator().manual_seed(0))
    assert torch.equal(subset.labels, row_ids(subset) % 10)


def test_random_subset_reproducible():
    first = random_subset(toy_dataset(), 30, generator=torch.Generator().manual_seed(7))
    second = random_subset(toy_dataset(), 30, generator=torch.Generator().manual_seed(7))
    assert torch.equal(row_ids(first), row_ids(second))


def test_random_subset_depends_on_seed():
    first = random_subset(toy_dataset(), 30, generator=torch.Generator().manual_seed(7))
    second = random_subset(toy_dataset(), 30, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(row_ids(first), row_ids(second))


def test_random_subset_full_size():
    subset = random_subset(toy_dataset(), 100, generator=torch.Generator().manual_seed(0))
    assert sorted(row_ids(subset).tolist()) == list(range(100))


@pytest.mark.parametrize("n", [101, -1])
def test_random_subset_size_out_of_range(n):
    with pytest.raises(ValueError, match=f"n must lie in 0..100 .*, got {n}"):
        random_subset(toy_dataset(), n, generator=torch.Generator())


def test_random_subset_needs_generator():
    with pytest.raises(TypeError, match="torch.Generator"):
        random_subset(toy_dataset(), 5, generator=None)


def test_random_subset_keeps_split(real_test):
    subset = random_subset(real_test, 10, generator=torch.Generator().manual_seed(0))
    assert subset.split == "test"
    assert subset.files == real_test.files


def test_split_validation_sizes():
    train, validation = split_validation(toy_dataset(), 20, generator=torch.Generator().manual_seed(0))
    assert len(train) == 80
    assert len(validation) == 20


def test_split_validation_disjoint_and_complete():
    train, validation = split_validation(toy_dataset(), 20, generator=torch.Generator().manual_seed(0))
    train_ids, validation_ids = set(row_ids(train).tolist()), set(row_ids(validation).tolist())
    assert train_ids.isdisjoint(validation_ids)
    assert train_ids | validation_ids == set(range(100))


def test_split_validation_reproducible():
    first = split_validation(toy_dataset(), 20, generator=torch.Generator().manual_seed(3))
    second = split_validation(toy_dataset(), 20, generator=torch.Generator().manual_seed(3))
    assert torch.equal(row_ids(first[1]), row_ids(second[1]))
    assert torch.equal(row_ids(first[0]), row_ids(second[0]))


def test_split_validation_too_large():
    with pytest.raises(ValueError, match="n_validation must lie in 0..100"):
        split_validation(toy_dataset(), 101, generator=torch.Generator())


def test_split_validation_real_train(real_train):
    train, validation = split_validation(real_train, 10000, generator=torch.Generator().manual_seed(0))
    assert train.images.shape == (50000, 784)
    assert validation.images.shape == (10000, 784)
    assert torch.bincount(torch.cat([train.labels, validation.labels]), minlength=10).tolist() == TRAIN_HISTOGRAM


# Binarization and one-hot labels


def test_binarize_threshold():
    images = torch.tensor([[0.0, 0.5, 0.51, 1.0]])
    assert binarize(images, threshold=0.5).tolist() == [[0.0, 0.0, 1.0, 1.0]]


def test_binarize_keeps_dtype():
    images = torch.rand(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert binarize(images, threshold=0.5).dtype == torch.float64
    assert binarize(images, generator=torch.Generator().manual_seed(1)).dtype == torch.float64


def test_binarize_stochastic_values():
    images = torch.rand(100, 784, generator=torch.Generator().manual_seed(0))
    samples = binarize(images, generator=torch.Generator().manual_seed(1))
    assert set(samples.unique().tolist()) == {0.0, 1.0}


def test_binarize_stochastic_mean():
    images = torch.rand(1000, 1000, generator=torch.Generator().manual_seed(0))
    samples = binarize(images, generator=torch.Generator().manual_seed(1))
    # A mean of 1e6 independent 0/1 draws has a standard deviation of at most 0.0005, so 0.003 is 6 of them.
    assert abs(samples.mean().item() - images.mean().item()) < 0.003


def test_binarize_stochastic_extremes():
    images = torch.tensor([0.0, 1.0]).repeat(1000)
    assert torch.equal(binarize(images, generator=torch.Generator().manual_seed(0)), images)


def test_binarize_reproducible():
    images = torch.rand(50, 784, generator=torch.Generator().manual_seed(0))
    first = binarize(images, generator=torch.Generator().manual_seed(5))
    second = binarize(images, generator=torch.Generator().manual_seed(5))
    assert torch.equal(first, second)


@pytest.mark.parametrize("kwargs", [{}, {"threshold": 0.5, "generator": torch.Generator()}])
def test_binarize_needs_one_mode(kwargs):
    with pytest.raises(ValueError, match="exactly one of threshold= .* and generator="):
        binarize(torch.rand(2, 3, generator=torch.Generator().manual_seed(0)), **kwargs)


def test_binarize_stochastic_out_of_range():
    with pytest.raises(ValueError, match=r"needs images in \[0, 1\], got values from 0.0 to 2.0"):
        binarize(torch.tensor([0.0, 2.0]), generator=torch.Generator())


def test_binarize_integer_rejected():
    with pytest.raises(ValueError, match="floating-point"):
        binarize(torch.tensor([0, 1]), threshold=0.5)


def test_one_hot_values():
    encoded = one_hot(torch.tensor([3, 0, 9]))
    assert encoded.shape == (3, 10)
    assert encoded.dtype == torch.float32
    assert encoded.sum(dim=1).tolist() == [1.0, 1.0, 1.0]
    assert encoded.argmax(dim=1).tolist() == [3, 0, 9]


def test_one_hot_dtype_and_width():
    encoded = one_hot(torch.tensor([1, 2]), n_classes=3, dtype=torch.float64)
    assert encoded.tolist() == [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    assert encoded.dtype == torch.float64


@pytest.mark.parametrize("labels", [[0, 10], [-1, 2]])
def test_one_hot_out_of_range(labels):
    with pytest.raises(ValueError, match="labels must lie in 0..9"):
        one_hot(torch.tensor(labels))


def test_one_hot_float_labels_rejected():
    with pytest.raises(ValueError, match="integer tensor"):
        one_hot(torch.tensor([1.0, 2.0]))


def test_one_hot_real_labels(real_test):
    encoded = one_hot(real_test.labels)
    assert encoded.sum(dim=0).tolist() == [float(count) for count in TEST_HISTOGRAM]
