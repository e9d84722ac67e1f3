"""The trainer contract and Keras' own checks (tests/keras_contract.py) for Keras on the JAX engine,
in a process that runs no other Keras engine."""

import pytest

from tests.keras_contract import *  # noqa: F403 - the contract and every Keras engine's checks

FRAMEWORK = "keras_jax"


def test_keras_own_onnx_route_on_jax_still_writes_a_graph_onnx_runtime_refuses(tmp_path):
    """Why keras_jax has no ONNX row (stages/backends/keras/, docs/onnx.md): once a jax2onnx that
    installs beside Flax converts this model correctly, this test fails, and export can use it."""
    import numpy as np
    import onnxruntime

    from stages import backends
    from stages.backends.base import NoExportRoute
    from stages.common.architecture import build_spec
    from tests.trainer_contract import make_params

    backend = backends.load(FRAMEWORK)
    spec = build_spec(make_params().model, (28, 28, 1), 10)
    model = backend.build_model(spec, 0)
    with pytest.raises(NoExportRoute, match="Unsupported pooling size"):
        backend.export(model, spec, tmp_path / "model.onnx")
    backend.keras_export(model, spec, tmp_path / "model.onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match="Unsupported pooling size"):
        session.run(None, {session.get_inputs()[0].name: np.zeros((2, 28, 28, 1), np.float32)})
