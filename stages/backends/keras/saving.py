"""The Keras backend's files: ``.keras`` archives normalised so identical weights give identical
bytes, loaded only with Keras' ``safe_mode``, and the ONNX export through Keras' own route."""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from pathlib import Path

from stages.backends.base import Model, NoExportRoute
from stages.backends.keras.engine import keras
from stages.backends.keras.network import count_parameters
from stages.common import atomic
from stages.common.architecture import ArchitectureSpec
from stages.common.errors import StageError

MODEL_FILE = "model.keras"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


# Keras' ONNX route on JAX is jax2onnx; 0.12.5 is the newest that installs beside Flax's Orbax, and
# the graph it writes for this model is one ONNX Runtime refuses (tests/keras_jax checks it still is).
NO_ONNX_ROUTE_ON_JAX = ("Keras' Model.export(format=\"onnx\") on JAX converts with jax2onnx, and 0.12.5, the newest "
                        "that installs beside Flax's Orbax, writes a MaxPool node that ONNX Runtime refuses "
                        "(\"Unsupported pooling size\")")


def export(model: Model, spec: ArchitectureSpec, path: Path) -> None:
    """The ONNX graph of ``model``'s ``call()``, by Keras' own ``Model.export(format="onnx")`` (its
    engine's route: tf2onnx on TensorFlow, ``torch.onnx.export`` on PyTorch); the batch stays free.
    On JAX, ``NoExportRoute`` (``NO_ONNX_ROUTE_ON_JAX``)."""
    if keras.backend.backend() == "jax":
        raise NoExportRoute(NO_ONNX_ROUTE_ON_JAX)
    keras_export(model, spec, path)


def keras_export(model: Model, spec: ArchitectureSpec, path: Path) -> None:
    """Keras' ``Model.export(format="onnx")``, on whichever engine, with a free batch dimension."""
    signature = keras.InputSpec(shape=(None, *spec.input_shape), dtype="float32", name="images")
    model.export(str(path), format="onnx", verbose=False, input_signature=[signature])


def save_model(model: Model, path: Path) -> None:
    """Save as ``.keras``, normalised so identical weights give identical bytes (see below)."""
    with tempfile.TemporaryDirectory() as scratch:
        saved = Path(scratch) / MODEL_FILE
        model.save(saved)
        atomic.write_bytes(path, _normalised_keras_archive(saved.read_bytes()))


def _normalised_keras_archive(data: bytes) -> bytes:
    """Rewrite a .keras zip with fixed timestamps and no save date.

    Keras stamps the save time into metadata.json and the zip entries, and writes Python object
    ids (``shared_object_id``) into config.json, so two saves of the same weights in two
    processes differ byte for byte; DVC would then see a new output on every identical rerun.
    """
    source = zipfile.ZipFile(io.BytesIO(data))
    output = io.BytesIO()
    with zipfile.ZipFile(output, "w", compression=zipfile.ZIP_DEFLATED) as target:
        for name in sorted(source.namelist()):
            content = source.read(name)
            if name == "metadata.json":
                metadata = json.loads(content)
                metadata["date_saved"] = "1980-01-01@00:00:00"
                content = json.dumps(metadata, sort_keys=True).encode()
            elif name == "config.json":
                content = json.dumps(_renumber_shared_objects(json.loads(content), {})).encode()
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            target.writestr(info, content)
    return output.getvalue()


def _renumber_shared_objects(node, numbers: dict):
    """Replace process-specific object ids by 1, 2, ... in order of appearance (same id, same number)."""
    if isinstance(node, dict):
        return {key: (numbers.setdefault(value, len(numbers) + 1) if key == "shared_object_id"
                      else _renumber_shared_objects(value, numbers)) for key, value in node.items()}
    if isinstance(node, list):
        return [_renumber_shared_objects(item, numbers) for item in node]
    return node


def load_model(path: Path, spec: ArchitectureSpec) -> Model:
    """Load a ``.keras`` file with Keras' safe mode (no arbitrary code from the file)."""
    if not path.is_file():
        raise StageError(f"{path}: missing; run the training stage first (dvc repro train)")
    # Keras reports any file that is not a zip as "File not found": say what the file is instead.
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as handle:
            start = handle.read(8)
        found = ("it is empty" if not start else "it is an HDF5 file, Keras 2's .h5 format" if start == HDF5_MAGIC
                 else "it is a zip archive cut short" if start.startswith(b"PK\x03\x04")
                 else f"it starts with {start!r}")
        raise StageError(f"{path}: not a Keras archive ({found}; a .keras file is a zip archive); rerun the "
                         "training stage (dvc repro train)")
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # noqa: BLE001 - Keras raises many types for a corrupt file
        raise StageError(f"{path}: not a loadable Keras model ({type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''})") from None
    if count_parameters(model) != spec.parameters:
        raise StageError(f"{path}: has {count_parameters(model)} parameters; its architecture.json says "
                         f"{spec.parameters}")
    return model
