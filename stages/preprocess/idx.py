"""Read and write the IDX format that MNIST-style datasets ship in.

IDX layout: two zero bytes, a data-type byte (0x08 = unsigned byte), a byte giving the number of
dimensions, then one big-endian uint32 size per dimension, then the data. Only unsigned-byte
data is accepted (every MNIST-style dataset uses it). ``parse_idx`` validates everything and
raises ``IdxError`` naming the file; it never interprets the bytes as anything but numbers.
"""

from __future__ import annotations

import math

import numpy as np

from stages.common.errors import StageError

UNSIGNED_BYTE = 0x08


class IdxError(StageError):
    """A malformed IDX file."""


def parse_idx(data: bytes, name: str, expected_ndim: int) -> np.ndarray:
    """Parse IDX bytes into a read-only uint8 array of ``expected_ndim`` dimensions."""
    if len(data) < 4:
        raise IdxError(f"{name}: too short for an IDX header ({len(data)} bytes)")
    if data[0] != 0 or data[1] != 0:
        raise IdxError(f"{name}: bad magic number 0x{data[:4].hex()}; expected 0x0000 then type and ndim "
                       "(is it still gzip-compressed, or not an IDX file?)")
    if data[2] != UNSIGNED_BYTE:
        raise IdxError(f"{name}: data type 0x{data[2]:02x} not supported; expected 0x08 (unsigned byte)")
    ndim = data[3]
    if ndim != expected_ndim:
        raise IdxError(f"{name}: {ndim} dimensions; expected {expected_ndim}")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise IdxError(f"{name}: header truncated ({len(data)} bytes; expected at least {header_size})")
    shape = tuple(int(size) for size in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected_size = header_size + math.prod(shape)  # exact: an int64 product of three uint32 sizes can wrap
    if len(data) < expected_size:
        raise IdxError(f"{name}: truncated: {len(data)} bytes for shape {shape}; expected {expected_size}")
    if len(data) > expected_size:
        raise IdxError(f"{name}: {len(data) - expected_size} unexpected trailing bytes after shape {shape}; "
                       f"expected {expected_size} bytes")
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape)


def parse_images_and_labels(images_bytes: bytes, labels_bytes: bytes, images_name: str, labels_name: str,
                            num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Parse and cross-check an image file (N, rows, cols) and its label file (N,)."""
    images = parse_idx(images_bytes, images_name, expected_ndim=3)
    labels = parse_idx(labels_bytes, labels_name, expected_ndim=1)
    if images.shape[0] != labels.shape[0]:
        raise IdxError(f"{images_name} has {images.shape[0]} images but {labels_name} has {labels.shape[0]} labels")
    if images.shape[0] == 0:
        raise IdxError(f"{images_name}: holds no images")
    if min(images.shape[1:]) == 0:
        raise IdxError(f"{images_name}: empty image size {images.shape[1:]}")
    if labels.size and int(labels.max()) >= num_classes:
        bad = int(np.argmax(labels >= num_classes))
        raise IdxError(f"{labels_name}: label {int(labels[bad])} at index {bad} is outside the "
                       f"{num_classes} classes (expected 0..{num_classes - 1})")
    return images, labels


def encode_idx(array: np.ndarray) -> bytes:
    """IDX bytes for a uint8 array (used by tests and benchmarks to make datasets)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, UNSIGNED_BYTE, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + array.tobytes()
