"""A JAX function as an ONNX file, by ``jax2onnx`` (the converter Keras itself uses on its JAX
engine): the route of the JAX engines (JAX/Flax, Keras on JAX).

On these pins the newest ``jax2onnx`` that installs next to Flax is 0.12.5 (later releases need
an older Orbax than Flax's), and Keras' own ``Model.export(format="onnx")`` on JAX calls an API
of later releases; ``jax2tf`` with ``tf2onnx`` is no route either, since jax2tf now writes only
``XlaCallModule`` ops, which tf2onnx cannot convert (docs/onnx.md).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def export(function: Callable, input_shape: tuple[int, ...], path: Path) -> None:
    """Write ``function`` (NHWC float32 images -> logits, its weights closed over) to ``path``,
    with a free batch dimension."""
    from jax2onnx import to_onnx

    to_onnx(function, [("B", *input_shape)], input_names=["images"], output_names=["logits"],
            return_mode="file", output_path=str(path))
