"""The IDX reader: a valid round trip, and one distinct error (naming the file) per malformed case."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from stages.common.errors import StageError
from stages.preprocess.idx import IdxError, encode_idx, parse_idx, parse_images_and_labels

IMAGES = "data/raw/train-images-idx3-ubyte"
LABELS = "data/raw/train-labels-idx1-ubyte"


def header(dtype: int, *shape: int) -> bytes:
    return bytes([0, 0, dtype, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(5, 4, 3), dtype=np.uint8)


@pytest.fixture
def labels() -> np.ndarray:
    return np.array([0, 9, 3, 3, 7], dtype=np.uint8)


def test_round_trip(images, labels):
    encoded = encode_idx(images)
    assert encoded[:16] == header(0x08, 5, 4, 3)  # big-endian sizes, as in the MNIST files
    assert len(encoded) == 16 + images.size

    parsed_images, parsed_labels = parse_images_and_labels(encoded, encode_idx(labels), IMAGES, LABELS, 10)

    assert parsed_images.dtype == np.uint8 and parsed_images.shape == (5, 4, 3)
    np.testing.assert_array_equal(parsed_images, images)
    np.testing.assert_array_equal(parsed_labels, labels)
    assert parsed_labels.shape == (5,)


def test_parsed_array_is_read_only(labels):
    parsed = parse_idx(encode_idx(labels), LABELS, expected_ndim=1)

    with pytest.raises(ValueError):
        parsed[0] = 1


def test_errors_are_stage_errors():
    assert issubclass(IdxError, StageError)


def test_bad_magic(images):
    compressed = gzip.compress(encode_idx(images))

    with pytest.raises(IdxError) as caught:
        parse_idx(compressed, IMAGES, expected_ndim=3)

    message = str(caught.value)
    assert message.startswith(f"{IMAGES}: bad magic number 0x1f8b")
    assert "gzip" in message


def test_wrong_data_type_byte(images):
    data = bytearray(encode_idx(images))
    data[2] = 0x0D  # float32 in the IDX spec

    with pytest.raises(IdxError, match=rf"^{IMAGES}: data type 0x0d not supported; expected 0x08"):
        parse_idx(bytes(data), IMAGES, expected_ndim=3)


def test_wrong_number_of_dimensions(labels):
    with pytest.raises(IdxError, match=rf"^{LABELS}: 1 dimensions; expected 3"):
        parse_idx(encode_idx(labels), LABELS, expected_ndim=3)


def test_shorter_than_the_fixed_header():
    with pytest.raises(IdxError, match=rf"^{LABELS}: too short for an IDX header \(3 bytes\)"):
        parse_idx(b"\x00\x00\x08", LABELS, expected_ndim=1)


def test_header_truncated():
    data = header(0x08, 60000, 28, 28)[:10]  # the dimension sizes are cut off

    with pytest.raises(IdxError, match=rf"^{IMAGES}: header truncated \(10 bytes; expected at least 16\)"):
        parse_idx(data, IMAGES, expected_ndim=3)


def test_data_too_short(images):
    data = encode_idx(images)[:-1]

    with pytest.raises(IdxError, match=rf"^{IMAGES}: truncated: 75 bytes for shape \(5, 4, 3\); expected 76"):
        parse_idx(data, IMAGES, expected_ndim=3)


def test_data_too_long(images):
    data = encode_idx(images) + b"\x00\x00"

    with pytest.raises(IdxError, match=rf"^{IMAGES}: 2 unexpected trailing bytes after shape \(5, 4, 3\)"):
        parse_idx(data, IMAGES, expected_ndim=3)


def test_huge_declared_size_is_truncation_not_a_crash():
    data = header(0x08, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF) + b"\x00" * 8

    with pytest.raises(IdxError, match=rf"^{IMAGES}: truncated"):
        parse_idx(data, IMAGES, expected_ndim=3)


def test_declared_size_that_overflows_int64_is_truncation_not_a_crash():
    # 2**22 * 2**22 * 2**20 = 2**64: wraps to 0 in int64 arithmetic, which would "match" a bare header.
    data = header(0x08, 1 << 22, 1 << 22, 1 << 20)

    with pytest.raises(IdxError, match=rf"^{IMAGES}: truncated: 16 bytes for shape \(4194304, 4194304, 1048576\)"):
        parse_idx(data, IMAGES, expected_ndim=3)


def test_image_and_label_counts_differ(images, labels):
    with pytest.raises(IdxError) as caught:
        parse_images_and_labels(encode_idx(images), encode_idx(labels[:4]), IMAGES, LABELS, 10)

    assert str(caught.value) == f"{IMAGES} has 5 images but {LABELS} has 4 labels"


def test_label_outside_the_classes(images, labels):
    with pytest.raises(IdxError) as caught:
        parse_images_and_labels(encode_idx(images), encode_idx(labels), IMAGES, LABELS, num_classes=8)

    # The first offending label (9 at index 1), not the largest.
    assert str(caught.value) == f"{LABELS}: label 9 at index 1 is outside the 8 classes (expected 0..7)"


def test_largest_label_is_accepted(images, labels):
    _, parsed = parse_images_and_labels(encode_idx(images), encode_idx(labels), IMAGES, LABELS, num_classes=10)

    assert int(parsed.max()) == 9


def test_no_images():
    empty = np.zeros((0, 28, 28), dtype=np.uint8)

    with pytest.raises(IdxError, match=rf"^{IMAGES}: holds no images"):
        parse_images_and_labels(encode_idx(empty), encode_idx(np.zeros(0, np.uint8)), IMAGES, LABELS, 10)


def test_empty_image_size(labels):
    flat = np.zeros((5, 0, 28), dtype=np.uint8)

    with pytest.raises(IdxError, match=rf"^{IMAGES}: empty image size \(0, 28\)"):
        parse_images_and_labels(encode_idx(flat), encode_idx(labels), IMAGES, LABELS, 10)


def test_the_label_file_is_named_when_it_is_the_broken_one(images, labels):
    data = encode_idx(labels) + b"\x01"

    with pytest.raises(IdxError, match=rf"^{LABELS}: 1 unexpected trailing bytes"):
        parse_images_and_labels(encode_idx(images), data, IMAGES, LABELS, 10)
